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
//!
//! The exponential is computed by [`Decay::weight`], a polynomial
//! approximation with a relative error below 2 × 10⁻⁷ (a unit test checks
//! the bound against `f64::exp`), so that a pick costs no call to `exp`.
//! Times are kept as whole nanoseconds in `u64`, never `u128`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::clock::{nanos, nanos_since};

/// An EWMA time constant, kept in the form the estimate uses.
///
/// ```
/// use std::time::Duration;
/// use towline::balance::Decay;
///
/// let d = Decay::new(Duration::from_secs(10));
/// assert_eq!(d.weight(0), 1.0);
/// // One time constant later the old value keeps exp(-1) ≈ 36.8%.
/// assert!((d.weight(10_000_000_000) - (-1f64).exp()).abs() < 1e-6);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decay {
    /// log2(e) / tau in ns⁻¹, so that `2^-(elapsed × rate)` is the weight;
    /// infinite for a zero time constant (no memory).
    rate: f64,
}

impl Decay {
    /// A decay with time constant `tau` (zero: no memory at all).
    pub fn new(tau: Duration) -> Self {
        let tau = nanos(tau) as f64;
        Decay {
            rate: if tau > 0.0 {
                std::f64::consts::LOG2_E / tau
            } else {
                f64::INFINITY
            },
        }
    }

    /// The weight `exp(-elapsed / tau)` the old estimate keeps after
    /// `elapsed_ns`, within a relative error of 2 × 10⁻⁷.
    #[inline]
    pub fn weight(&self, elapsed_ns: u64) -> f64 {
        if elapsed_ns == 0 {
            return 1.0;
        }
        exp2_neg(elapsed_ns as f64 * self.rate)
    }
}

/// `2^-y` for `y ≥ 0`: the nearest integer by the exponent bits, the rest
/// (in [-½, ½]) by a degree-5 polynomial (Chebyshev nodes, relative error
/// 1.02 × 10⁻⁷). No float-to-integer conversion: the rounding is the
/// `1.5 × 2^52` trick.
#[inline]
fn exp2_neg(y: f64) -> f64 {
    // Below 2^-1022 the value is zero for every purpose here (and NaN,
    // from 0 × ∞, counts as no memory too).
    if y.is_nan() || y >= 1022.0 {
        return 0.0;
    }
    const SHIFTER: f64 = 6_755_399_441_055_744.0;
    let t = y + SHIFTER;
    // The low mantissa bits of `t` hold `y` rounded to the nearest integer.
    let whole = u64::from(t.to_bits() as u32);
    let f = y - (t - SHIFTER);
    let p = 1.000_000_075_454_897
        + f * (-0.693_147_188_026_228_5
            + f * (0.240_221_074_853_083_8
                + f * (-0.055_503_571_142_194_57
                    + f * (0.009_676_031_918_320_116 + f * -0.001_339_086_336_456_482_4))));
    p * f64::from_bits((1023 - whole) << 52)
}

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
    /// When the endpoint's slow-start ramp ends, in ns since `epoch`; 0
    /// for none (see [`Ramps`](super::Ramps)).
    ramp_end: AtomicU64,
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

    /// Feeds one observed round-trip time into the peak-EWMA estimate.
    pub fn observe(&self, rtt: Duration, now: Instant, decay: &Decay) {
        let sample = nanos(rtt) as f64;
        let now_ns = nanos_since(now, self.epoch);
        let last = self.stamp_ns.load(Ordering::Relaxed);
        self.stamp_ns.store(now_ns, Ordering::Relaxed);
        let bits = self.rtt_ns.load(Ordering::Relaxed);
        let next = if bits == UNSET {
            sample
        } else {
            let old = f64::from_bits(bits);
            if sample > old {
                sample
            } else {
                let w = decay.weight(now_ns.saturating_sub(last));
                old * w + sample * (1.0 - w)
            }
        };
        // A plain store, not a compare-and-swap loop: two observers racing
        // on one endpoint may lose one sample, which an estimate can afford,
        // rather than retry under contention on every completion.
        self.rtt_ns.store(next.to_bits(), Ordering::Relaxed);
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

    /// The RTT estimate in ns at `now_ns` (since the epoch), decayed over
    /// idle time; `None` before the first observation.
    #[inline]
    fn rtt_ns(&self, now_ns: u64, decay: &Decay) -> Option<f64> {
        let bits = self.rtt_ns.load(Ordering::Relaxed);
        if bits == UNSET {
            return None;
        }
        let idle = now_ns.saturating_sub(self.stamp_ns.load(Ordering::Relaxed));
        Some(f64::from_bits(bits) * decay.weight(idle))
    }

    /// The current RTT estimate, decayed over idle time; `None` before the
    /// first observation.
    pub fn rtt(&self, now: Instant, decay: &Decay) -> Option<Duration> {
        self.rtt_ns(self.since_epoch(now), decay)
            .map(|ns| Duration::from_nanos(ns as u64))
    }

    /// The last RTT estimate as recorded, without idle decay; `None` before
    /// the first observation.
    pub fn rtt_estimate(&self) -> Option<Duration> {
        let bits = self.rtt_ns.load(Ordering::Relaxed);
        (bits != UNSET).then(|| Duration::from_nanos(f64::from_bits(bits) as u64))
    }

    /// The peak-EWMA cost: `rtt × (pending + 1) / weight`, using
    /// `default_rtt` before the first observation. Weight 0 costs the most.
    #[inline]
    pub fn ewma_cost(&self, now: Instant, decay: &Decay, default_rtt: Duration) -> f64 {
        self.ewma_cost_at(self.since_epoch(now), decay, default_rtt)
    }

    /// [`ewma_cost`](Self::ewma_cost) at `now_ns` since the epoch.
    #[inline]
    pub(crate) fn ewma_cost_at(&self, now_ns: u64, decay: &Decay, default_rtt: Duration) -> f64 {
        let (load, weight) = self.ewma_parts(now_ns, decay, default_rtt);
        if weight == 0 {
            return f64::MAX;
        }
        load / f64::from(weight)
    }

    /// The peak-EWMA cost as `(rtt × (pending + 1), weight)`, so that two
    /// costs compare without a division.
    #[inline]
    pub(crate) fn ewma_parts(
        &self,
        now_ns: u64,
        decay: &Decay,
        default_rtt: Duration,
    ) -> (f64, u32) {
        let rtt = match self.rtt_ns(now_ns, decay) {
            Some(ns) => ns,
            None => nanos(default_rtt) as f64,
        };
        // A decayed RTT near zero must not hide the pending count.
        (rtt.max(1.0) * f64::from(self.pending() + 1), self.weight())
    }

    /// The pending-requests cost: `(pending + 1) / weight`.
    #[inline]
    pub fn pending_cost(&self) -> f64 {
        let weight = self.weight();
        if weight == 0 {
            return f64::MAX;
        }
        f64::from(self.pending() + 1) / f64::from(weight)
    }
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
        let tau = Duration::from_secs(10);
        let decay = Decay::new(tau);
        let load = Load::new(1, t0);
        assert_eq!(load.rtt(t0, &decay), None);
        load.observe(Duration::from_millis(10), t0, &decay);
        load.observe(Duration::from_millis(100), t0, &decay);
        assert_eq!(load.rtt(t0, &decay), Some(Duration::from_millis(100)));
        // A fast sample 10 s (one decay constant) later moves the estimate
        // about 63% of the way down.
        let t1 = t0 + tau;
        load.observe(Duration::from_millis(10), t1, &decay);
        let ms = load.rtt(t1, &decay).unwrap().as_secs_f64() * 1000.0;
        let expected = 100.0 * (-1f64).exp() + 10.0 * (1.0 - (-1f64).exp());
        assert!((ms - expected).abs() < 0.01, "{ms} vs {expected}");
    }

    #[test]
    fn decay_weight_is_within_its_stated_error_of_exp() {
        // Elapsed times from 1 ns to far past the time constant, for short
        // and long constants, against f64::exp.
        for tau_ms in [1u64, 250, 10_000, 3_600_000] {
            let decay = Decay::new(Duration::from_millis(tau_ms));
            let tau_ns = (tau_ms * 1_000_000) as f64;
            let mut elapsed: u64 = 1;
            while elapsed < 1 << 62 {
                for step in [elapsed, elapsed + elapsed / 3] {
                    let exact = (-(step as f64) / tau_ns).exp();
                    let got = decay.weight(step);
                    let bound = 2e-7 * exact + 1e-300;
                    assert!(
                        (got - exact).abs() <= bound,
                        "tau {tau_ms} ms, elapsed {step} ns: {got} vs {exact}"
                    );
                }
                elapsed = elapsed * 2 + 1;
            }
        }
        assert_eq!(Decay::new(Duration::ZERO).weight(1), 0.0);
        assert_eq!(Decay::new(Duration::ZERO).weight(0), 1.0);
    }

    #[test]
    fn cost_grows_with_pending_and_shrinks_with_weight() {
        let t0 = Instant::now();
        let d = Decay::new(Duration::from_secs(10));
        let rtt = Duration::from_millis(5);
        let light = Load::new(2, t0);
        let heavy = Load::new(1, t0);
        heavy.start();
        assert!(light.ewma_cost(t0, &d, rtt) < heavy.ewma_cost(t0, &d, rtt));
        assert!(light.pending_cost() < heavy.pending_cost());
        assert_eq!(Load::new(0, t0).pending_cost(), f64::MAX);
    }
}
