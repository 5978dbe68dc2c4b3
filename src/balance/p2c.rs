use std::time::{Duration, Instant};

use super::{AttemptEnd, Balancer, Decay, End, Load, LoadSet, PickContext, sample_eligible};
use crate::classify::Outcome;
use crate::rng::Rng;

/// The load measure a [`P2c`] balancer compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum P2cLoad {
    /// Requests in flight, divided by weight.
    Pending,
    /// Peak-EWMA latency × (in flight + 1), divided by weight and by the
    /// endpoint's health (its failure penalty): see [`Load`]'s module docs
    /// for the cost function and its defaults.
    PeakEwma {
        /// The latency assumed for an endpoint never measured while it has
        /// attempts in flight (default 30 ms); with none in flight it is
        /// tried first.
        default_rtt: Duration,
        /// The EWMA time constant (default 10 s).
        decay: Duration,
    },
}

/// Power of two choices: sample two distinct eligible endpoints at random and
/// take the less loaded.
///
/// Peak-EWMA learns from every attempt that ends ([`Balancer::observe`]),
/// as the [cost function](super::Load#the-peak-ewma-cost) describes:
///
/// | how the attempt ended | latency | failure estimate |
/// |---|---|---|
/// | answered, success | a sample (peak-EWMA) | toward 0 |
/// | answered, failure or overloaded | a sample only if slower than the estimate | toward 1 |
/// | overloaded with a retry-after | as above | and the largest penalty until then |
/// | cut by a timeout or deadline | a lower bound until the next answer | toward 1 |
/// | given up on by the caller | a lower bound until the next answer | toward 1 if it ran longer than the answered latency |
/// | lost a hedge race, or its call was over ([`End::Superseded`]) | a lower bound until the next answer | unchanged |
///
/// So an endpoint that stalls looks slow and failing as soon as its first
/// attempts are given up on, one that fails fast is avoided without a
/// breaker (and probed again as its penalty decays), one with a 1% error
/// rate keeps nearly its share, and a recovered one looks like itself again
/// at its first answer. An endpoint never measured is tried one attempt at
/// a time. Measured in the simulator's scenarios (`scenarios/`, see the
/// README's "Decision quality").
///
/// This avoids the herd behaviour of "least loaded" across many clients while
/// steering clearly away from slow or busy endpoints, at O(1) per pick
/// whatever the set size. With a single eligible endpoint it is returned.
///
/// ```
/// use std::time::Duration;
/// use towline::balance::{P2c, P2cLoad};
///
/// let b = P2c::peak_ewma()
///     .default_rtt(Duration::from_millis(5))
///     .decay(Duration::from_secs(5));
/// assert!(matches!(b.load(), P2cLoad::PeakEwma { .. }));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct P2c {
    load: P2cLoad,
    /// The decay of `load`, precomputed (unused for `Pending`).
    decay: Decay,
}

impl P2c {
    /// The default RTT before the first response: 30 ms.
    pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
    /// The default EWMA time constant: 10 s.
    pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

    /// P2C over peak-EWMA latency (defaults: RTT 30 ms, decay 10 s).
    pub fn peak_ewma() -> Self {
        P2c {
            load: P2cLoad::PeakEwma {
                default_rtt: Self::DEFAULT_RTT,
                decay: Self::DEFAULT_DECAY,
            },
            decay: Decay::new(Self::DEFAULT_DECAY),
        }
    }

    /// P2C over in-flight requests.
    pub fn pending() -> Self {
        P2c {
            load: P2cLoad::Pending,
            decay: Decay::new(Self::DEFAULT_DECAY),
        }
    }

    /// Sets the latency assumed for an endpoint never measured while it
    /// has attempts in flight (peak-EWMA only).
    pub fn default_rtt(mut self, rtt: Duration) -> Self {
        if let P2cLoad::PeakEwma { default_rtt, .. } = &mut self.load {
            *default_rtt = rtt;
        }
        self
    }

    /// Sets the EWMA time constant (peak-EWMA only).
    pub fn decay(mut self, tau: Duration) -> Self {
        if let P2cLoad::PeakEwma { decay, .. } = &mut self.load {
            *decay = tau;
            self.decay = Decay::new(tau);
        }
        self
    }

    /// The load measure in use.
    pub fn load(&self) -> P2cLoad {
        self.load
    }

    /// The cost of one endpoint now: lower is better.
    #[inline]
    pub fn cost(&self, load: &Load, now: Instant) -> f64 {
        match self.load {
            P2cLoad::Pending => load.pending_cost(),
            P2cLoad::PeakEwma { default_rtt, .. } => load.ewma_cost(now, &self.decay, default_rtt),
        }
    }

    /// The cheaper of `a` and `b` at `now` (`a` on a tie), reading the time
    /// since the loads' epoch once when they share it.
    #[inline]
    fn cheaper(&self, a: &Load, b: &Load, now: Instant) -> bool {
        match self.load {
            P2cLoad::Pending => b.pending_cost() < a.pending_cost(),
            P2cLoad::PeakEwma { default_rtt, .. } => {
                let ta = a.since_epoch(now);
                let tb = if b.epoch() == a.epoch() {
                    ta
                } else {
                    b.since_epoch(now)
                };
                let (la, wa) = a.ewma_parts(ta, &self.decay, default_rtt);
                let (lb, wb) = b.ewma_parts(tb, &self.decay, default_rtt);
                // lb / wb < la / wa, multiplied out (see `ewma_parts`).
                lb * wa < la * wb
            }
        }
    }

    /// The two random candidates of one pick: two distinct eligible indices,
    /// one when only one is eligible, `None` when none is. Every ordered
    /// pair of distinct eligible indices is equally likely.
    pub fn sample_pair(
        &self,
        n: usize,
        eligible: &dyn Fn(usize) -> bool,
        rng: &mut Rng,
    ) -> Option<(usize, Option<usize>)> {
        if n >= 2 {
            // The usual case, every endpoint eligible: one draw of a pair.
            let a = rng.below(n);
            let mut b = rng.below(n - 1);
            if b >= a {
                b += 1;
            }
            if eligible(a) && eligible(b) {
                return Some((a, Some(b)));
            }
        }
        let a = sample_eligible(n, eligible, None, rng)?;
        Some((a, sample_eligible(n, eligible, Some(a), rng)))
    }
}

impl Balancer for P2c {
    fn name(&self) -> &'static str {
        match self.load {
            P2cLoad::Pending => "p2c_pending",
            P2cLoad::PeakEwma { .. } => "p2c_peak_ewma",
        }
    }

    fn rebuild(&self, _weights: &[u32]) -> Box<dyn Balancer> {
        Box::new(*self)
    }

    fn pick(
        &self,
        at: &PickContext,
        set: &dyn LoadSet,
        eligible: &dyn Fn(usize) -> bool,
        rng: &mut Rng,
    ) -> Option<usize> {
        match self.sample_pair(set.len(), eligible, rng)? {
            (a, None) => Some(a),
            (a, Some(b)) => {
                // Slow start: a ramping endpoint's cost is divided by its
                // weight factor (one atomic load when nothing ramps).
                if let Some(ramping) = at.ramping() {
                    let (la, lb) = (set.load(a), set.load(b));
                    let cost = |l| self.cost(l, at.now) / ramping.factor(l);
                    return Some(if cost(lb) < cost(la) { b } else { a });
                }
                if self.cheaper(set.load(a), set.load(b), at.now) {
                    Some(b)
                } else {
                    Some(a)
                }
            }
        }
    }

    fn observe(&self, load: &Load, end: &AttemptEnd) {
        let P2cLoad::PeakEwma { default_rtt, .. } = self.load else {
            return;
        };
        let (elapsed, at, decay) = (end.elapsed, end.at, &self.decay);
        if end.end == End::Response(Outcome::Success) {
            // The usual end first, with the least work.
            return load.observe(elapsed, at, decay);
        }
        match end.end {
            End::Response(outcome) => {
                load.observe_failure(elapsed, default_rtt, at, decay);
                if let Outcome::Overloaded {
                    retry_after: Some(wait),
                } = outcome
                {
                    load.avoid_until(crate::clock::later(at, wait));
                }
            }
            End::TimedOut => load.observe_unanswered(elapsed, true, default_rtt, at, decay),
            End::Cancelled => {
                let overdue = load.overdue(elapsed, default_rtt);
                load.observe_unanswered(elapsed, overdue, default_rtt, at, decay);
            }
            // A hedge race lost, or a call ended by another attempt: a
            // latency bound, no failure. (`End` may grow: a new kind of end
            // is a bound too until it is given its own meaning.)
            _ => load.observe_unanswered(elapsed, false, default_rtt, at, decay),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    #[test]
    fn picks_the_lower_loaded_of_two_distinct_samples() {
        crate::rng::seed_thread_rng(401);
        let now = Instant::now();
        for b in [P2c::pending(), P2c::peak_ewma()] {
            let set = loads(6);
            // Distinct loads: endpoint i has i requests in flight and, for
            // peak-EWMA, an RTT growing with i.
            for (i, l) in set.iter().enumerate() {
                for _ in 0..i {
                    l.start();
                }
                b.observe(l, &answered(Duration::from_millis(1 + i as u64), now));
            }
            for seed in 0..2_000 {
                let mut sampler = Rng::seeded(seed);
                let (x, y) = b.sample_pair(set.len(), &all, &mut sampler).unwrap();
                let y = y.unwrap();
                assert_ne!(x, y, "seed {seed}: same index twice");
                let mut picker = Rng::seeded(seed);
                let got = b.pick(&at(), &set, &all, &mut picker).unwrap();
                assert_eq!(got, x.min(y), "seed {seed}: not the lower-loaded");
            }
        }
    }

    #[test]
    fn single_eligible_is_returned() {
        crate::rng::seed_thread_rng(402);
        let mut rng = Rng::seeded(1);
        let set = loads(4);
        assert_eq!(
            P2c::pending().pick(&at(), &set, &|i| i == 2, &mut rng),
            Some(2)
        );
        assert_eq!(
            P2c::pending().pick(&at(), &loads(1), &all, &mut rng),
            Some(0)
        );
    }

    #[test]
    fn weight_divides_cost() {
        crate::rng::seed_thread_rng(403);
        let now = Instant::now();
        let heavy = Load::new(4, now);
        let light = Load::new(1, now);
        for _ in 0..2 {
            heavy.start();
        }
        let b = P2c::pending();
        assert!(b.cost(&heavy, now) < b.cost(&light, now));
    }

    fn answered(rtt: Duration, at: Instant) -> AttemptEnd {
        AttemptEnd::new(End::Response(Outcome::Success), rtt, at)
    }

    #[test]
    fn every_kind_of_end_is_a_latency_sample() {
        let now = Instant::now();
        let b = P2c::peak_ewma();
        for end in [
            End::Response(Outcome::Success),
            End::Response(Outcome::Failure { retryable: true }),
            End::TimedOut,
            End::Cancelled,
            End::Superseded,
        ] {
            let load = Load::new(1, now);
            b.observe(&load, &AttemptEnd::new(end, Duration::from_secs(2), now));
            assert_eq!(load.rtt_estimate(), Some(Duration::from_secs(2)), "{end:?}");
        }
        // Pending ignores latency.
        let load = Load::new(1, now);
        P2c::pending().observe(&load, &answered(Duration::from_secs(2), now));
        assert_eq!(load.rtt_estimate(), None);
    }

    #[test]
    fn a_stalled_endpoint_loses_picks_once_its_cancelled_attempts_are_seen() {
        let now = Instant::now();
        let b = P2c::peak_ewma();
        let set = loads(2);
        for l in &set {
            b.observe(l, &answered(Duration::from_millis(10), now));
        }
        // Endpoint 1 stalls: its callers give up after 1 s.
        b.observe(
            &set[1],
            &AttemptEnd::new(End::Cancelled, Duration::from_secs(1), now),
        );
        let mut rng = Rng::seeded(7);
        for _ in 0..100 {
            assert_eq!(
                b.pick(&PickContext::new(now), &set, &all, &mut rng),
                Some(0)
            );
        }
    }

    const MS: Duration = Duration::from_millis(1);

    fn ended(end: End, elapsed: Duration, at: Instant) -> AttemptEnd {
        AttemptEnd::new(end, elapsed, at)
    }

    fn failed(at: Instant) -> AttemptEnd {
        ended(End::Response(Outcome::Failure { retryable: true }), MS, at)
    }

    /// Picks over `set` at `now` until `picks`, counting each index's.
    fn count_picks(b: &P2c, set: &dyn LoadSet, now: Instant, picks: usize) -> Vec<usize> {
        let mut rng = Rng::seeded(9);
        let mut seen = vec![0; set.len()];
        for _ in 0..picks {
            seen[b.pick(&PickContext::new(now), set, &all, &mut rng).unwrap()] += 1;
        }
        seen
    }

    #[test]
    fn a_fast_failing_endpoint_is_avoided_and_probed_again_later() {
        let now = Instant::now();
        let b = P2c::peak_ewma();
        let set = loads(3);
        for l in &set {
            b.observe(l, &answered(20 * MS, now));
        }
        // Endpoint 2 answers every call with an error in 1 ms: it looks
        // fastest, but a few failures make it the costliest.
        for _ in 0..8 {
            b.observe(&set[2], &failed(now));
        }
        assert_eq!(count_picks(&b, &set, now, 300)[2], 0);
        // Unheard from, its penalty decays: within a few decay constants it
        // is tried again (a probe), and not in the first second.
        let probe_after = (1..60)
            .map(|s| now + Duration::from_secs(s))
            .find(|&at| {
                for l in &set[..2] {
                    b.observe(l, &answered(20 * MS, at));
                }
                count_picks(&b, &set, at, 50)[2] > 0
            })
            .expect("the failing endpoint is probed again");
        let waited = probe_after - now;
        assert!(
            waited > Duration::from_secs(1) && waited < Duration::from_secs(30),
            "{waited:?}"
        );
    }

    #[test]
    fn a_lost_hedge_race_is_a_latency_bound_not_a_failure() {
        let now = Instant::now();
        let b = P2c::peak_ewma();
        let load = Load::new(1, now);
        b.observe(&load, &answered(10 * MS, now));
        b.observe(&load, &ended(End::Superseded, 80 * MS, now));
        assert_eq!(load.rtt_estimate(), Some(80 * MS));
        assert_eq!(load.failure_rate(now, &b.decay), 0.0);
    }

    #[test]
    fn a_caller_giving_up_is_a_failure_only_past_the_usual_latency() {
        let now = Instant::now();
        let b = P2c::peak_ewma();
        let load = Load::new(1, now);
        b.observe(&load, &answered(167 * MS, now));
        // The caller's own budget was shorter than the endpoint's latency.
        b.observe(&load, &ended(End::Cancelled, 100 * MS, now));
        assert_eq!(load.failure_rate(now, &b.decay), 0.0);
        // It waited 1 s for an endpoint that answers in 167 ms.
        b.observe(&load, &ended(End::Cancelled, 1000 * MS, now));
        assert_eq!(load.failure_rate(now, &b.decay), Load::FAILURE_GAIN);
        // A timeout always is.
        let cut = Load::new(1, now);
        b.observe(&cut, &ended(End::TimedOut, 100 * MS, now));
        assert_eq!(cut.failure_rate(now, &b.decay), Load::FAILURE_GAIN);
    }

    #[test]
    fn retry_after_keeps_picks_away_until_it_has_passed() {
        let now = Instant::now();
        let b = P2c::peak_ewma();
        let set = loads(2);
        for l in &set {
            b.observe(l, &answered(20 * MS, now));
        }
        // Endpoint 0 is the faster, but asks for 5 s of rest.
        b.observe(&set[0], &answered(MS, now));
        let overloaded = Outcome::Overloaded {
            retry_after: Some(Duration::from_secs(5)),
        };
        b.observe(&set[0], &ended(End::Response(overloaded), MS, now));
        for l in &set {
            l.start();
        }
        let at = now + Duration::from_millis(4_900);
        assert_eq!(count_picks(&b, &set, at, 100), [0, 100]);
        let after = now + Duration::from_secs(5);
        b.observe(&set[0], &answered(MS, after));
        b.observe(&set[1], &answered(20 * MS, after));
        assert_eq!(count_picks(&b, &set, after, 100), [100, 0]);
    }

    #[test]
    fn an_endpoint_never_measured_is_tried_one_attempt_at_a_time() {
        // Next to endpoints far faster than the 30 ms default, a new one is
        // still tried (a single attempt until it answers)...
        let now = Instant::now();
        let b = P2c::peak_ewma();
        let set = loads(3);
        for l in &set[..2] {
            b.observe(l, &answered(Duration::from_micros(200), now));
        }
        let mut rng = Rng::seeded(5);
        let mut tried = 0;
        for _ in 0..100 {
            let i = b
                .pick(&PickContext::new(now), &set, &all, &mut rng)
                .unwrap();
            if i == 2 {
                tried += 1;
                set[2].start();
            }
        }
        assert_eq!(tried, 1);
        // ...and once it has answered like the others, it is one of them.
        set[2].end();
        b.observe(&set[2], &answered(Duration::from_micros(200), now));
        assert!(count_picks(&b, &set, now, 300)[2] > 50);
    }

    #[test]
    fn exclusions() {
        crate::rng::seed_thread_rng(404);
        check_exclusions(&P2c::pending());
        check_exclusions(&P2c::peak_ewma());
    }
}
