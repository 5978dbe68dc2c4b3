//! Reconnect backoff: how long to wait before the next try after a failure.
//!
//! A counter of consecutive failures over the crate's
//! [`policy::backoff::Backoff`](crate::policy::backoff::Backoff) with equal
//! jitter: the delay doubles from `min` after each consecutive failure, up to
//! `max`, and each delay is drawn uniformly from its upper half (`[d/2, d]`),
//! so a fleet of clients that lost etcd together does not come back in lock
//! step. A success resets the sequence.

use std::time::Duration;

use crate::error::BuildError;
use crate::policy::backoff::{Backoff as Curve, Jitter};
use crate::rng::Rng;

/// Jittered exponential backoff between reconnect attempts.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    curve: Curve,
    failures: u32,
    rng: Rng,
}

impl Backoff {
    /// A backoff from `min` to `max`. `min` must be above zero and not above
    /// `max`; `setting` names the builder setting in the error.
    pub(crate) fn new(
        setting: &'static str,
        min: Duration,
        max: Duration,
        rng: Rng,
    ) -> Result<Self, BuildError> {
        let curve = Curve::new(min, 2.0, max)
            .map_err(|e| BuildError::new(setting, format!("{min:?}..{max:?}: {}", e.reason())))?
            .with_jitter(Jitter::Equal);
        Ok(Backoff {
            curve,
            failures: 0,
            rng,
        })
    }

    /// Records a failure and returns how long to wait before the next try.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let retry = self.failures;
        self.failures = self.failures.saturating_add(1);
        self.curve.delay(retry, Duration::ZERO, &mut self.rng)
    }

    /// Records a success: the next failure waits about `min` again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn grows_within_jitter_bounds_and_caps_at_max() {
        let mut b = Backoff::new("b", 100 * MS, 1000 * MS, Rng::seeded(3)).unwrap();
        let ceilings = [100, 200, 400, 800, 1000, 1000, 1000];
        for ceiling in ceilings {
            let d = b.next_delay();
            assert!(
                d >= ceiling * MS / 2 && d <= ceiling * MS,
                "{d:?} outside [{}, {ceiling}] ms",
                ceiling / 2
            );
        }
        for _ in 0..100 {
            assert!(b.next_delay() <= 1000 * MS);
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new("b", 10 * MS, 10_000 * MS, Rng::seeded(4)).unwrap();
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= 10 * MS);
    }

    #[test]
    fn jitter_spreads_delays() {
        // 200 draws from [50, 100] ms: all equal would mean no jitter.
        let mut b = Backoff::new("b", 100 * MS, 100 * MS, Rng::seeded(5)).unwrap();
        let draws: Vec<_> = (0..200).map(|_| b.next_delay()).collect();
        let lo = draws.iter().min().unwrap();
        let hi = draws.iter().max().unwrap();
        assert!(*hi - *lo > 25 * MS, "spread {lo:?}..{hi:?}");
    }

    #[test]
    fn invalid_bounds_are_build_errors() {
        let r = || Rng::seeded(1);
        assert_eq!(
            Backoff::new("x", Duration::ZERO, MS, r())
                .unwrap_err()
                .setting(),
            "x"
        );
        assert!(Backoff::new("x", 2 * MS, MS, r()).is_err());
        assert!(Backoff::new("x", Duration::MAX, Duration::MAX, r()).is_ok());
    }

    #[test]
    fn huge_bounds_do_not_overflow() {
        let mut b = Backoff::new("b", Duration::MAX / 2, Duration::MAX, Rng::seeded(6)).unwrap();
        for _ in 0..50 {
            assert!(b.next_delay() <= Duration::MAX);
        }
    }
}
