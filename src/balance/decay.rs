//! An EWMA time constant in the form the latency and failure estimates use.
//!
//! [`Decay::weight`] is `exp(-elapsed / tau)`, computed by a polynomial
//! approximation with a relative error below 2 × 10⁻⁷ (a unit test checks
//! the bound against `f64::exp`), so that a pick costs no call to `exp`;
//! for an elapsed time under 0.65% of `tau` (the usual case for an endpoint
//! in use) by three terms of the series, within 1.5 × 10⁻⁸.
//! Times are whole nanoseconds in `u64`, never `u128`.

use std::time::Duration;

use crate::clock::nanos;

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
        let y = elapsed_ns as f64 * self.rate;
        if y < SHORT {
            // The usual case on a busy endpoint: a few µs or ms since the
            // estimate last changed, far below the time constant. Three
            // terms of the series of exp(-x), x = y ln 2, are within x³/6
            // (below 1.5 × 10⁻⁸) of it, and take a third of the dependent
            // steps of the general case, which every pick and every
            // observation waits on.
            let x = y * std::f64::consts::LN_2;
            return 1.0 - x * (1.0 - 0.5 * x);
        }
        exp2_neg(y)
    }
}

/// Below this `y` (elapsed time in units of `tau / log2(e)`: under 0.65% of
/// the time constant, 65 ms for 10 s), [`Decay::weight`] takes the short
/// series: its error `x³/6` with `x = y ln 2 < 0.0044` is below 1.5 × 10⁻⁸
/// of the weight (which is above 0.99 there).
const SHORT: f64 = 1.0 / 156.0;

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

#[cfg(test)]
mod tests {
    use super::*;

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
        // Densely across the switch to the short series, where busy
        // endpoints live: below it, within the series' own 1.5e-8.
        let decay = Decay::new(Duration::from_secs(10));
        let tau_ns = 1e10;
        let switch = (SHORT / decay.rate) as u64;
        for step in (1..=4_000u64).map(|i| i * switch / 2_000) {
            let exact = (-(step as f64) / tau_ns).exp();
            let got = decay.weight(step);
            let bound = if step < switch { 1.5e-8 } else { 2e-7 };
            assert!(
                (got - exact).abs() <= bound * exact,
                "elapsed {step} ns: {got} vs {exact}"
            );
        }
        assert_eq!(Decay::new(Duration::ZERO).weight(1), 0.0);
        assert_eq!(Decay::new(Duration::ZERO).weight(0), 1.0);
    }
}
