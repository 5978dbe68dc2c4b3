//! Per-endpoint load: in-flight requests and a peak-EWMA latency estimate.
//!
//! A [`Load`] lives on each endpoint slot and is updated with atomics only, so
//! any number of tasks can record calls while others pick. Two measures:
//!
//! - **pending**: requests started and not yet finished (with the count of
//!   finished ones packed into the same atomic, so that finishing a request
//!   is one atomic add on the endpoint's hot cache line);
//! - **peak-EWMA RTT**: an estimate that jumps up to any slower observation
//!   at once (the "peak") and otherwise moves toward new observations with
//!   an exponential weight that depends on the time since the last one
//!   (`exp(-elapsed / decay)`). At read time it also decays toward zero over
//!   idle time, so an endpoint that was slow long ago is tried again.
//!
//! The P2C cost of an endpoint is `rtt × (pending + 1) / weight`; before the
//! first observation the RTT is the balancer's default.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Load counters of one endpoint.
#[derive(Debug)]
pub struct Load {
    /// In flight (low [`PENDING_BITS`] bits) and finished (the rest).
    calls: AtomicU64,
    weight: AtomicU32,
    /// The RTT estimate in nanoseconds as `f64` bits; `u64::MAX` while unset.
    rtt_ns: AtomicU64,
    /// When the estimate was last updated, in ns since `epoch`.
    stamp_ns: AtomicU64,
    epoch: Instant,
}

const UNSET: u64 = u64::MAX;

/// Bits of the packed counter that hold the in-flight count (up to 16.7
/// million requests in flight on one endpoint).
const PENDING_BITS: u32 = 24;
const PENDING_MASK: u64 = (1 << PENDING_BITS) - 1;
/// Added on `end`: one more finished, one fewer in flight.
const FINISH: u64 = (1 << PENDING_BITS) - 1;

impl Load {
    /// Zero load, no RTT observed, with this weight. `epoch` is the time
    /// origin for the decay clock (any instant not after the first `now`).
    pub fn new(weight: u32, epoch: Instant) -> Self {
        Load {
            calls: AtomicU64::new(0),
            weight: AtomicU32::new(weight),
            rtt_ns: AtomicU64::new(UNSET),
            stamp_ns: AtomicU64::new(0),
            epoch,
        }
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

    fn since_epoch(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Feeds one observed round-trip time into the peak-EWMA estimate.
    pub fn observe(&self, rtt: Duration, now: Instant, decay: Duration) {
        let sample = rtt.as_nanos() as f64;
        let now_ns = self.since_epoch(now);
        let last = self.stamp_ns.load(Ordering::Relaxed);
        self.stamp_ns.store(now_ns, Ordering::Relaxed);
        let w = weight_of(now_ns.saturating_sub(last), decay);
        let bits = self.rtt_ns.load(Ordering::Relaxed);
        let next = if bits == UNSET {
            sample
        } else {
            let old = f64::from_bits(bits);
            if sample > old {
                sample
            } else {
                old * w + sample * (1.0 - w)
            }
        };
        // A plain store, not a compare-and-swap loop: two observers racing
        // on one endpoint may lose one sample, which an estimate can afford,
        // rather than retry under contention on every completion.
        self.rtt_ns.store(next.to_bits(), Ordering::Relaxed);
    }

    /// The current RTT estimate, decayed over idle time; `None` before the
    /// first observation.
    pub fn rtt(&self, now: Instant, decay: Duration) -> Option<Duration> {
        let bits = self.rtt_ns.load(Ordering::Relaxed);
        if bits == UNSET {
            return None;
        }
        let idle = self
            .since_epoch(now)
            .saturating_sub(self.stamp_ns.load(Ordering::Relaxed));
        let ns = f64::from_bits(bits) * weight_of(idle, decay);
        Some(Duration::from_nanos(ns as u64))
    }

    /// The last RTT estimate as recorded, without idle decay; `None` before
    /// the first observation.
    pub fn rtt_estimate(&self) -> Option<Duration> {
        let bits = self.rtt_ns.load(Ordering::Relaxed);
        (bits != UNSET).then(|| Duration::from_nanos(f64::from_bits(bits) as u64))
    }

    /// The peak-EWMA cost: `rtt × (pending + 1) / weight`, using
    /// `default_rtt` before the first observation. Weight 0 costs the most.
    pub fn ewma_cost(&self, now: Instant, decay: Duration, default_rtt: Duration) -> f64 {
        let rtt = self.rtt(now, decay).unwrap_or(default_rtt).as_nanos() as f64;
        let weight = self.weight();
        if weight == 0 {
            return f64::MAX;
        }
        // A decayed RTT near zero must not hide the pending count.
        (rtt.max(1.0) * f64::from(self.pending() + 1)) / f64::from(weight)
    }

    /// The pending-requests cost: `(pending + 1) / weight`.
    pub fn pending_cost(&self) -> f64 {
        let weight = self.weight();
        if weight == 0 {
            return f64::MAX;
        }
        f64::from(self.pending() + 1) / f64::from(weight)
    }
}

/// The EWMA weight given to the old estimate after `elapsed_ns`.
fn weight_of(elapsed_ns: u64, decay: Duration) -> f64 {
    let tau = decay.as_nanos() as f64;
    if tau <= 0.0 {
        return 0.0;
    }
    (-(elapsed_ns as f64) / tau).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_never_underflows() {
        let load = Load::new(1, Instant::now());
        load.start();
        load.end();
        load.end();
        assert_eq!(load.pending(), 0);
        assert_eq!(load.finished(), 1);
        for _ in 0..3 {
            load.start();
        }
        load.end();
        assert_eq!((load.pending(), load.finished()), (2, 2));
    }

    #[test]
    fn peak_is_taken_at_once_and_decays_toward_new_samples() {
        let t0 = Instant::now();
        let decay = Duration::from_secs(10);
        let load = Load::new(1, t0);
        assert_eq!(load.rtt(t0, decay), None);
        load.observe(Duration::from_millis(10), t0, decay);
        load.observe(Duration::from_millis(100), t0, decay);
        assert_eq!(load.rtt(t0, decay), Some(Duration::from_millis(100)));
        // A fast sample 10 s (one decay constant) later moves the estimate
        // about 63% of the way down.
        let t1 = t0 + decay;
        load.observe(Duration::from_millis(10), t1, decay);
        let ms = load.rtt(t1, decay).unwrap().as_secs_f64() * 1000.0;
        let expected = 100.0 * (-1f64).exp() + 10.0 * (1.0 - (-1f64).exp());
        assert!((ms - expected).abs() < 0.01, "{ms} vs {expected}");
    }

    #[test]
    fn cost_grows_with_pending_and_shrinks_with_weight() {
        let t0 = Instant::now();
        let d = Duration::from_secs(10);
        let rtt = Duration::from_millis(5);
        let light = Load::new(2, t0);
        let heavy = Load::new(1, t0);
        heavy.start();
        assert!(light.ewma_cost(t0, d, rtt) < heavy.ewma_cost(t0, d, rtt));
        assert!(light.pending_cost() < heavy.pending_cost());
        assert_eq!(Load::new(0, t0).pending_cost(), f64::MAX);
    }
}
