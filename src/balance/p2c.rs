use std::time::{Duration, Instant};

use super::{Balancer, Load, LoadSet, sample_eligible};
use crate::rng::Rng;

/// The load measure a [`P2c`] balancer compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum P2cLoad {
    /// Requests in flight, divided by weight.
    Pending,
    /// Peak-EWMA round-trip time × (in flight + 1), divided by weight.
    PeakEwma {
        /// The RTT assumed before an endpoint's first response (default 30 ms).
        default_rtt: Duration,
        /// The EWMA time constant (default 10 s).
        decay: Duration,
    },
}

/// Power of two choices: sample two distinct eligible endpoints at random and
/// take the less loaded.
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
        }
    }

    /// P2C over in-flight requests.
    pub fn pending() -> Self {
        P2c {
            load: P2cLoad::Pending,
        }
    }

    /// Sets the RTT assumed before an endpoint's first response (peak-EWMA
    /// only).
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
        }
        self
    }

    /// The load measure in use.
    pub fn load(&self) -> P2cLoad {
        self.load
    }

    /// The cost of one endpoint now: lower is better.
    pub fn cost(&self, load: &Load, now: Instant) -> f64 {
        match self.load {
            P2cLoad::Pending => load.pending_cost(),
            P2cLoad::PeakEwma { default_rtt, decay } => load.ewma_cost(now, decay, default_rtt),
        }
    }

    /// The two random candidates of one pick: two distinct eligible indices,
    /// one when only one is eligible, `None` when none is.
    pub fn sample_pair(
        &self,
        n: usize,
        eligible: &dyn Fn(usize) -> bool,
        rng: &mut Rng,
    ) -> Option<(usize, Option<usize>)> {
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
        set: &dyn LoadSet,
        eligible: &dyn Fn(usize) -> bool,
        now: Instant,
        rng: &mut Rng,
    ) -> Option<usize> {
        match self.sample_pair(set.len(), eligible, rng)? {
            (a, None) => Some(a),
            (a, Some(b)) => {
                if self.cost(set.load(b), now) < self.cost(set.load(a), now) {
                    Some(b)
                } else {
                    Some(a)
                }
            }
        }
    }

    fn observe(&self, load: &Load, rtt: Duration, now: Instant) {
        if let P2cLoad::PeakEwma { decay, .. } = self.load {
            load.observe(rtt, now, decay);
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
                b.observe(l, Duration::from_millis(1 + i as u64), now);
            }
            for seed in 0..2_000 {
                let mut sampler = Rng::seeded(seed);
                let (x, y) = b.sample_pair(set.len(), &all, &mut sampler).unwrap();
                let y = y.unwrap();
                assert_ne!(x, y, "seed {seed}: same index twice");
                let mut picker = Rng::seeded(seed);
                let got = b.pick(&set, &all, now, &mut picker).unwrap();
                assert_eq!(got, x.min(y), "seed {seed}: not the lower-loaded");
            }
        }
    }

    #[test]
    fn single_eligible_is_returned() {
        crate::rng::seed_thread_rng(402);
        let now = Instant::now();
        let mut rng = Rng::seeded(1);
        let set = loads(4);
        assert_eq!(
            P2c::pending().pick(&set, &|i| i == 2, now, &mut rng),
            Some(2)
        );
        assert_eq!(P2c::pending().pick(&loads(1), &all, now, &mut rng), Some(0));
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

    #[test]
    fn exclusions() {
        crate::rng::seed_thread_rng(404);
        check_exclusions(&P2c::pending());
        check_exclusions(&P2c::peak_ewma());
    }
}
