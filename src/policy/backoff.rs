//! Exponential backoff with jitter: how long to wait before a retry.
//!
//! The ceiling of retry `n` (0 for the first retry) is
//! `min(cap, base × multiplier^n)`. Jitter spreads clients apart so that a
//! failure does not make them all retry in step:
//!
//! | [`Jitter`] | delay of retry `n` |
//! |---|---|
//! | `Full` (default) | uniform in `[0, ceiling]` |
//! | `Equal` | uniform in `[ceiling / 2, ceiling]` |
//! | `Decorrelated` | uniform in `[base, min(cap, previous × multiplier)]` |
//! | `None` | exactly `ceiling` |
//!
//! Defaults: base 25 ms, multiplier 2, cap 1 s, full jitter.
//!
//! ```
//! use std::time::Duration;
//! use towline::policy::backoff::{Backoff, Jitter};
//! use towline::rng::Rng;
//!
//! let b = Backoff::new(Duration::from_millis(10), 2.0, Duration::from_millis(100))
//!     .unwrap()
//!     .with_jitter(Jitter::Equal);
//! let mut rng = Rng::seeded(1);
//! let d = b.delay(2, Duration::ZERO, &mut rng); // ceiling 40 ms
//! assert!(d >= Duration::from_millis(20) && d <= Duration::from_millis(40));
//! ```

use std::time::Duration;

use crate::error::BuildError;
use crate::rng::Rng;

/// How a delay is randomised below its ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// No randomness: the delay is the ceiling.
    None,
    /// Uniform between zero and the ceiling (the default).
    #[default]
    Full,
    /// Uniform between half the ceiling and the ceiling.
    Equal,
    /// Uniform between the base and the previous delay times the multiplier,
    /// capped ("decorrelated jitter").
    Decorrelated,
}

/// Exponential backoff settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    multiplier: f64,
    cap: Duration,
    jitter: Jitter,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(25),
            multiplier: 2.0,
            cap: Duration::from_secs(1),
            jitter: Jitter::Full,
        }
    }
}

impl Backoff {
    /// Backoff from `base`, growing by `multiplier` per retry up to `cap`,
    /// with full jitter. Refuses a zero base, a multiplier below 1 (or not
    /// finite), and a cap below the base.
    pub fn new(base: Duration, multiplier: f64, cap: Duration) -> Result<Self, BuildError> {
        let b = Backoff::from_parts(base, multiplier, cap);
        b.validate()?;
        Ok(b)
    }

    /// Backoff from parts, unchecked (callers validate later).
    pub(crate) fn from_parts(base: Duration, multiplier: f64, cap: Duration) -> Self {
        Backoff {
            base,
            multiplier,
            cap,
            jitter: Jitter::Full,
        }
    }

    /// The same backoff with another jitter.
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Checks the settings (as [`Backoff::new`] does).
    pub fn validate(&self) -> Result<(), BuildError> {
        if self.base.is_zero() {
            return Err(BuildError::new("backoff.base", "must be greater than zero"));
        }
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Err(BuildError::new(
                "backoff.multiplier",
                format!(
                    "must be a finite number of at least 1, got {}",
                    self.multiplier
                ),
            ));
        }
        if self.cap < self.base {
            return Err(BuildError::new(
                "backoff.cap",
                format!(
                    "must be at least the base ({:?}), got {:?}",
                    self.base, self.cap
                ),
            ));
        }
        Ok(())
    }

    /// The first delay's ceiling.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The growth factor per retry.
    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// The largest delay.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The jitter.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// `min(cap, base × multiplier^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let exp = i32::try_from(retry).unwrap_or(i32::MAX);
        let secs = self.base.as_secs_f64() * self.multiplier.powi(exp);
        if secs >= self.cap.as_secs_f64() || !secs.is_finite() {
            self.cap
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The range `[low, high]` the delay of retry `retry` is drawn from;
    /// `previous` is the last delay (only decorrelated jitter uses it; pass
    /// zero before the first retry).
    pub fn bounds(&self, retry: u32, previous: Duration) -> (Duration, Duration) {
        let ceiling = self.ceiling(retry);
        match self.jitter {
            Jitter::None => (ceiling, ceiling),
            Jitter::Full => (Duration::ZERO, ceiling),
            Jitter::Equal => (ceiling / 2, ceiling),
            Jitter::Decorrelated => {
                let grown = previous.max(self.base).as_secs_f64() * self.multiplier;
                let high = if grown >= self.cap.as_secs_f64() {
                    self.cap
                } else {
                    Duration::from_secs_f64(grown)
                };
                (self.base, high.max(self.base))
            }
        }
    }

    /// The delay before retry `retry` (0 for the first retry), drawn from
    /// [`bounds`](Backoff::bounds).
    pub fn delay(&self, retry: u32, previous: Duration, rng: &mut Rng) -> Duration {
        let (low, high) = self.bounds(retry, previous);
        low + (high - low).mul_f64(rng.unit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceiling_grows_then_caps() {
        let b = Backoff::new(10 * MS, 2.0, 100 * MS).unwrap();
        let c: Vec<_> = (0..6).map(|n| b.ceiling(n)).collect();
        assert_eq!(c, [10 * MS, 20 * MS, 40 * MS, 80 * MS, 100 * MS, 100 * MS]);
        assert_eq!(b.ceiling(u32::MAX), 100 * MS);
    }

    #[test]
    fn delays_stay_within_their_jitter_bounds() {
        let mut rng = Rng::seeded(42);
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
        ] {
            let b = Backoff::new(10 * MS, 3.0, 500 * MS)
                .unwrap()
                .with_jitter(jitter);
            let mut prev = Duration::ZERO;
            let (mut lowest, mut highest) = (f64::MAX, 0f64);
            for round in 0..2_000u32 {
                let retry = round % 8;
                if retry == 0 {
                    prev = Duration::ZERO;
                }
                let (lo, hi) = b.bounds(retry, prev);
                let d = b.delay(retry, prev, &mut rng);
                assert!(
                    lo <= d && d <= hi,
                    "{jitter:?} retry {retry}: {d:?} not in [{lo:?}, {hi:?}]"
                );
                assert!(d <= b.cap());
                if retry == 0 {
                    // Position of the first delay inside its range.
                    let span = (hi - lo).as_secs_f64().max(f64::EPSILON);
                    let pos = (d - lo).as_secs_f64() / span;
                    lowest = lowest.min(pos);
                    highest = highest.max(pos);
                }
                prev = d;
            }
            if jitter != Jitter::None {
                // 250 uniform draws: the chance that all miss the outer 5%
                // of the range on one side is 0.95^250 < 3e-6.
                assert!(
                    lowest < 0.05 && highest > 0.95,
                    "{jitter:?}: {lowest}..{highest}"
                );
            }
        }
    }

    #[test]
    fn decorrelated_grows_from_the_previous_delay() {
        let b = Backoff::new(10 * MS, 3.0, 1000 * MS)
            .unwrap()
            .with_jitter(Jitter::Decorrelated);
        assert_eq!(b.bounds(0, Duration::ZERO), (10 * MS, 30 * MS));
        assert_eq!(b.bounds(5, 100 * MS), (10 * MS, 300 * MS));
        assert_eq!(b.bounds(5, 900 * MS), (10 * MS, 1000 * MS));
    }

    #[test]
    fn invalid_settings_are_refused() {
        let e = Backoff::new(Duration::ZERO, 2.0, MS).unwrap_err();
        assert_eq!(e.setting(), "backoff.base");
        let e = Backoff::new(MS, 0.5, MS).unwrap_err();
        assert_eq!(e.setting(), "backoff.multiplier");
        assert!(e.reason().contains("at least 1"));
        assert_eq!(
            Backoff::new(MS, f64::NAN, MS).unwrap_err().setting(),
            "backoff.multiplier"
        );
        let e = Backoff::new(10 * MS, 2.0, MS).unwrap_err();
        assert_eq!(e.setting(), "backoff.cap");
    }
}

#[cfg(test)]
mod overflow_tests {
    use super::*;

    #[test]
    fn the_longest_cap_never_panics_and_stays_within_bounds() {
        let mut rng = Rng::seeded(7);
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
        ] {
            let b = Backoff::new(Duration::from_secs(1), 2.0, Duration::MAX)
                .unwrap()
                .with_jitter(jitter);
            let mut prev = Duration::ZERO;
            for retry in 0..200u32 {
                let (lo, hi) = b.bounds(retry, prev);
                let d = b.delay(retry, prev, &mut rng);
                assert!(lo <= d && d <= hi, "{jitter:?} retry {retry}: {d:?}");
                prev = d;
            }
        }
    }
}
