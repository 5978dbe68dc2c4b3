//! Per-endpoint load: requests in flight, a latency estimate that sees
//! what callers see, and a failure estimate; the peak-EWMA cost function is
//! documented on [`Load`].

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Decay;
use crate::clock::{nanos, nanos_since};

/// Per-endpoint load: requests in flight, a latency estimate that sees
/// what callers see, and a failure estimate.
///
/// A [`Load`] lives on each endpoint slot and is updated with atomics only, so
/// any number of tasks can record attempts while others pick. It keeps:
///
/// - **pending**: attempts started and not yet ended (with the count of
///   ended ones packed into the same atomic, so that ending an attempt is
///   one atomic add on the endpoint's hot cache line);
/// - **the answered latency**: a peak-EWMA over the latencies of answers.
///   A slower answer is taken at once (the "peak"); otherwise the estimate
///   moves toward the answer with the weight `1 − exp(−Δt / decay)`, `Δt`
///   the time since the estimate last changed;
/// - **the latency estimate** that costs use: the answered latency, raised
///   by *censored* samples. An attempt that ends without an answer (cut by
///   a timeout, dropped by its caller, or lost to a hedge) says only that
///   the endpoint takes at least that long: the estimate is raised to its
///   elapsed time if that is higher, and the next answer replaces the
///   raise with the answered latency. A stalled endpoint so looks slow as
///   soon as its first attempt is given up on, and a recovered one looks
///   like itself again at its first answer instead of after several decay
///   constants;
/// - **the failure estimate** `f` in `[0, 1]`: each ended attempt moves it
///   by [`FAILURE_GAIN`](Load::FAILURE_GAIN) (1/8) toward 1 when the attempt
///   *failed* and toward 0 when it succeeded; attempts that end otherwise
///   leave it alone. Which ends count as failures is the balancer's choice
///   ([`P2c`](super::P2c) counts failed answers, timeouts, and caller
///   cancellations after longer than the answered latency; not the attempts
///   that lose a hedge race);
/// - **avoid-until**: an endpoint that answered "overloaded, retry after
///   `d`" gets the largest penalty until `d` has passed.
///
/// Every estimate decays over idle time: read `t` after its last change, it
/// is multiplied by `exp(−t / decay)` (toward zero), the failure estimate
/// four times as fast (`exp(−4t / decay)`: an endpoint avoided for its
/// failures gets no answers that could clear them), so an endpoint that was
/// slow or failing long ago gets tried again.
///
/// # The peak-EWMA cost
///
/// ```text
/// cost = rtt × (pending + 1) / (weight × health)
/// health = 1/1000 + (1 − 1/1000) × (1 − f)²
/// ```
///
/// with `rtt` and `f` decayed over idle time, and `health` at its floor
/// (1/1000) while the endpoint is avoided after a retry-after. So a failure
/// estimate of 1% costs about 2% more, 10% about 23% more, 50% four times
/// as much, 90% about 90 times, and an endpoint failing everything about a
/// thousand times: it is avoided, without a circuit breaker, until its
/// estimate has decayed enough for a probe.
///
/// An endpoint never measured has no latency yet: with nothing in flight
/// it costs 0 (so it gets tried, one attempt at a time, even next to
/// endpoints far faster than the balancer's default RTT), and with attempts
/// in flight its latency is the balancer's default.
///
/// The exponentials are computed by [`Decay::weight`] (no call to `exp`).
/// Times are whole nanoseconds in `u64`, never `u128`.
///
/// ```
/// use std::time::{Duration, Instant};
/// use towline::balance::{Decay, Load};
///
/// let (now, decay) = (Instant::now(), Decay::new(Duration::from_secs(10)));
/// let (ms, default) = (Duration::from_millis(1), Duration::from_millis(30));
/// let (steady, flaky) = (Load::new(1, now), Load::new(1, now));
/// steady.observe(20 * ms, now, &decay);
/// flaky.observe(20 * ms, now, &decay);
/// // Two fast errors: as fast to answer, but 1.7 times the cost.
/// flaky.observe_failure(ms, default, now, &decay);
/// flaky.observe_failure(ms, default, now, &decay);
/// let cost = |l: &Load| l.ewma_cost(now, &decay, default);
/// assert!(cost(&flaky) > 1.6 * cost(&steady));
/// // Given up on after 1 s: at least that slow, until its next answer.
/// steady.observe_unanswered(1000 * ms, true, default, now, &decay);
/// assert_eq!(steady.rtt(now, &decay), Some(1000 * ms));
/// steady.observe(20 * ms, now, &decay);
/// assert_eq!(steady.rtt(now, &decay), Some(20 * ms));
/// ```
#[derive(Debug)]
// The fields every call writes come first, in this order (`HOT_BYTES`),
// so that with the channel's reference count on the endpoint before them
// they fit one cache line (`channel::slot_ref`): a call writes `calls`
// twice and the estimates once, and picks on the other core read them, so
// under two cores a call moves one line rather than two or three. The
// epoch after them is never written.
#[repr(C)]
pub struct Load {
    /// In flight (low [`PENDING_BITS`] bits) and finished (the rest).
    calls: AtomicU64,
    /// The latency estimate costs use, in ns as `f64` bits (the answered
    /// latency or a censored sample above it); `UNSET` before any sample.
    rtt_ns: AtomicU64,
    /// When the estimates last changed, in ns since `epoch` (each is kept
    /// as of that time).
    stamp_ns: AtomicU64,
    /// The failure estimate in `[0, 1]`, as `f64` bits.
    failure: AtomicU64,
    /// The answered latency, in ns as `f64` bits; `UNSET` before an answer.
    answered_ns: AtomicU64,
    weight: AtomicU32,
    epoch: Instant,
    // Read only while an endpoint ramps up or is avoided.
    /// When the endpoint's slow-start ramp ends, in ns since `epoch`; 0
    /// for none (see [`Ramps`](super::Ramps)).
    ramp_end: AtomicU64,
    /// Until when the endpoint asked to be avoided, in ns since `epoch`.
    avoid_until_ns: AtomicU64,
}

const UNSET: u64 = u64::MAX;

/// Bits of the packed counter that hold the in-flight count (up to 16.7
/// million requests in flight on one endpoint).
const PENDING_BITS: u32 = 24;
const PENDING_MASK: u64 = (1 << PENDING_BITS) - 1;
/// Added on `end`: one more finished, one fewer in flight.
const FINISH: u64 = (1 << PENDING_BITS) - 1;

/// What one ended attempt says about the latency.
#[derive(Clone, Copy)]
enum Latency {
    /// A failed answer after this many ns: a latency only if slower than
    /// the estimate (a fast error says nothing about how long an answer
    /// takes). The second `f64` is as for `Censored`.
    FailedAnswer(f64, f64),
    /// No answer after this many ns: a lower bound. The `f64` is the
    /// default latency of an endpoint never measured.
    Censored(f64, f64),
}

impl Load {
    /// How far one ended attempt moves the failure estimate toward 0 or 1:
    /// 1/8, so that a run of failures is avoided within a few attempts and
    /// one failure in a hundred keeps the estimate near 1%.
    pub const FAILURE_GAIN: f64 = 0.125;
    /// The floor of an endpoint's health (see the [cost function](Load#the-peak-ewma-cost)): the
    /// largest penalty is a thousand-fold cost.
    pub const HEALTH_FLOOR: f64 = 1e-3;
    /// The least an answer faster than the answered latency moves it
    /// toward itself: 1/256. The time constant alone would keep a busy
    /// endpoint that was slow for a few seconds (an added delay, a capped
    /// link) looking slow for tens of seconds after it recovered, however
    /// many fast answers it gives; with this floor a few hundred fast
    /// answers are enough, while at low rates the time constant rules.
    pub const MIN_ANSWER_GAIN: f64 = 1.0 / 256.0;
    /// A failure estimate below this (about 0.1%) is taken as 0.
    const NEGLIGIBLE: f64 = 1.0 / 1024.0;
    /// How many bytes from its start hold what every call writes (the
    /// in-flight count and the estimates) and every pick reads.
    #[cfg(test)]
    pub(crate) const HOT_BYTES: usize = std::mem::offset_of!(Load, weight) + 4;

    /// Zero load, no RTT observed, with this weight. `epoch` is the time
    /// origin for the decay clock (any instant not after the first `now`).
    pub fn new(weight: u32, epoch: Instant) -> Self {
        Load {
            calls: AtomicU64::new(0),
            weight: AtomicU32::new(weight),
            rtt_ns: AtomicU64::new(UNSET),
            answered_ns: AtomicU64::new(UNSET),
            failure: AtomicU64::new(0f64.to_bits()),
            stamp_ns: AtomicU64::new(0),
            avoid_until_ns: AtomicU64::new(0),
            epoch,
            ramp_end: AtomicU64::new(0),
        }
    }

    /// When the endpoint's slow-start ramp ends, in nanoseconds since the
    /// epoch of its [`Ramps`](super::Ramps); 0 when it has none.
    #[inline]
    pub fn ramp_end(&self) -> u64 {
        self.ramp_end.load(Ordering::Relaxed)
    }

    /// Sets when the endpoint's slow-start ramp ends (0: none); see
    /// [`Ramps::start`](super::Ramps::start).
    pub fn set_ramp_end(&self, end: u64) {
        self.ramp_end.store(end, Ordering::Relaxed);
    }

    /// Requests in flight.
    #[inline]
    pub fn pending(&self) -> u32 {
        (self.calls.load(Ordering::Relaxed) & PENDING_MASK) as u32
    }

    /// Requests finished (ended) so far.
    #[inline]
    pub fn finished(&self) -> u64 {
        self.calls.load(Ordering::Relaxed) >> PENDING_BITS
    }

    /// The endpoint's weight.
    #[inline]
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Changes the weight in place (the endpoint keeps its other state).
    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
    }

    /// Records the start of a request.
    #[inline]
    pub fn start(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the end of a request started with [`start`](Load::start).
    /// Never goes below zero, even if called once too often.
    #[inline]
    pub fn end(&self) {
        // One atomic add moves a request from in flight to finished (the
        // in-flight field's borrow carries into the finished count); an
        // unpaired end, from zero in flight, is undone at once.
        let prev = self.calls.fetch_add(FINISH, Ordering::Relaxed);
        if prev & PENDING_MASK == 0 {
            self.calls.fetch_sub(FINISH, Ordering::Relaxed);
        }
    }

    /// Records a successful answer after `rtt`: the answered latency takes
    /// it (peak-EWMA), the latency estimate becomes the answered latency
    /// again (a censored raise is over), and the failure estimate moves
    /// toward 0.
    #[inline]
    pub fn observe(&self, rtt: Duration, now: Instant, decay: &Decay) {
        // The usual end, kept short: the general `update` does the same.
        let sample = nanos(rtt) as f64;
        let (now_ns, w) = self.restamp(now, decay);
        let bits = self.answered_ns.load(Ordering::Relaxed);
        let next = if bits == UNSET || sample > f64::from_bits(bits) {
            sample
        } else {
            let keep = w.min(1.0 - Self::MIN_ANSWER_GAIN);
            f64::from_bits(bits) * keep + sample * (1.0 - keep)
        };
        self.answered_ns.store(next.to_bits(), Ordering::Relaxed);
        self.rtt_ns.store(next.to_bits(), Ordering::Relaxed);
        let f = self.failure.load(Ordering::Relaxed);
        if f != 0 {
            self.store_failure(
                f64::from_bits(f) * failure_weight(w) * (1.0 - Self::FAILURE_GAIN),
                now_ns,
            );
        }
    }

    /// Records a failed answer after `elapsed`: a latency sample only if
    /// it is slower than the answered latency (or than `unmeasured`, the
    /// latency assumed before any answer); the failure estimate moves
    /// toward 1.
    pub fn observe_failure(
        &self,
        elapsed: Duration,
        unmeasured: Duration,
        now: Instant,
        decay: &Decay,
    ) {
        let latency = Latency::FailedAnswer(nanos(elapsed) as f64, nanos(unmeasured) as f64);
        self.update(latency, true, now, decay);
    }

    /// Records an attempt that ended without an answer after `elapsed`: a
    /// censored sample (the latency estimate is raised to `elapsed` if that
    /// is higher; `unmeasured` is the latency assumed for an endpoint never
    /// measured), and a failure when `failed` (otherwise the failure
    /// estimate is left alone).
    pub fn observe_unanswered(
        &self,
        elapsed: Duration,
        failed: bool,
        unmeasured: Duration,
        now: Instant,
        decay: &Decay,
    ) {
        let latency = Latency::Censored(nanos(elapsed) as f64, nanos(unmeasured) as f64);
        self.update(latency, failed, now, decay);
    }

    /// Gives the endpoint the largest penalty until `until` (an
    /// "overloaded, retry after" answer); a later time extends it.
    pub fn avoid_until(&self, until: Instant) {
        let until = self.since_epoch(until);
        self.avoid_until_ns.fetch_max(until, Ordering::Relaxed);
    }

    /// True when `elapsed` is longer than the answered latency (or than
    /// `unmeasured` before any answer): a caller that gave up after that
    /// long saw the endpoint fail to answer in its usual time.
    pub fn overdue(&self, elapsed: Duration, unmeasured: Duration) -> bool {
        let bits = self.answered_ns.load(Ordering::Relaxed);
        let usual = if bits == UNSET {
            nanos(unmeasured) as f64
        } else {
            f64::from_bits(bits)
        };
        nanos(elapsed) as f64 > usual
    }

    /// Moves the stamp to `now`; returns `now` in ns since the epoch and
    /// the decay weight of the time since the last stamp.
    #[inline]
    fn restamp(&self, now: Instant, decay: &Decay) -> (u64, f64) {
        let now_ns = self.since_epoch(now);
        let last = self.stamp_ns.load(Ordering::Relaxed);
        // A plain store, not a compare-and-swap loop: two observers racing
        // on one endpoint may lose one sample, which an estimate can
        // afford, rather than retry under contention on every end.
        self.stamp_ns.store(now_ns.max(last), Ordering::Relaxed);
        (now_ns, decay.weight(now_ns.saturating_sub(last)))
    }

    /// Stores the failure estimate, as 0 once it is negligible (so that a
    /// pick skips the penalty) unless a retry-after is still running.
    #[inline]
    fn store_failure(&self, f: f64, now_ns: u64) {
        let f = if f < Self::NEGLIGIBLE && now_ns >= self.avoid_until_ns.load(Ordering::Relaxed) {
            0.0
        } else {
            f
        };
        self.failure.store(f.to_bits(), Ordering::Relaxed);
    }

    /// Applies one ended attempt: its latency, and whether it `failed`
    /// (otherwise the failure estimate only decays: successes go through
    /// [`observe`](Self::observe)).
    fn update(&self, latency: Latency, failed: bool, now: Instant, decay: &Decay) {
        let (now_ns, w) = self.restamp(now, decay);
        let f = f64::from_bits(self.failure.load(Ordering::Relaxed)) * failure_weight(w);
        let f = if failed {
            f + Self::FAILURE_GAIN * (1.0 - f)
        } else {
            f
        };
        self.store_failure(f, now_ns);
        let read = |cell: &AtomicU64| {
            let bits = cell.load(Ordering::Relaxed);
            (bits != UNSET).then(|| f64::from_bits(bits))
        };
        let answered = read(&self.answered_ns);
        let (answered, rtt) = match latency {
            // Never answered before: like no answer at all.
            Latency::FailedAnswer(sample, unmeasured) | Latency::Censored(sample, unmeasured)
                if answered.is_none() =>
            {
                let held = read(&self.rtt_ns).map_or(unmeasured, |r| r * w);
                (None, held.max(sample))
            }
            // An answer: the endpoint responds, so a censored raise is over.
            Latency::FailedAnswer(sample, _) => {
                let next = answered.map_or(sample, |old| (old * w).max(sample));
                (Some(next), next)
            }
            Latency::Censored(elapsed, _) => {
                let held = read(&self.rtt_ns).map_or(0.0, |r| r * w);
                (answered.map(|a| a * w), held.max(elapsed))
            }
        };
        if let Some(a) = answered {
            self.answered_ns.store(a.to_bits(), Ordering::Relaxed);
        }
        self.rtt_ns.store(rtt.to_bits(), Ordering::Relaxed);
    }

    /// The time origin of this load's clock.
    #[inline]
    pub(crate) fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Nanoseconds from this load's epoch to `now`.
    #[inline]
    pub(crate) fn since_epoch(&self, now: Instant) -> u64 {
        nanos_since(now, self.epoch)
    }
}

/// The decay weight of the failure estimate for a latency decay weight
/// `w = exp(-t/τ)`: `exp(-4t/τ)`, a time constant a quarter of the
/// latency's (2.5 s by default). An endpoint avoided for its failures gets
/// no answers to clear its penalty, only time; after an outage of every
/// endpoint, the ones that answered first would otherwise keep the others
/// out for most of τ.
#[inline]
fn failure_weight(w: f64) -> f64 {
    let w2 = w * w;
    w2 * w2
}

mod cost;
#[cfg(test)]
mod tests;
