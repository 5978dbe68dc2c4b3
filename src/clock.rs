//! The crate's one clock: tokio's, so that paused test time applies to every
//! decision core, read as a std `Instant` that the cores take as an argument.
//!
//! Durations on the call path are turned into whole nanoseconds with
//! [`nanos`] (plain `u64` arithmetic) rather than `Duration::as_nanos`,
//! whose `u128` result costs a library call to convert to `f64`.

use std::time::{Duration, Instant};

/// The time now on tokio's clock (virtual when the clock is paused).
#[inline]
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// About 30 years: what [`later`] gives for a length too long for `Instant`.
pub(crate) const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `start + length` for a limit or a due time, saturating: a length too
/// long for `Instant` (settings accept up to `Duration::MAX`) gives an
/// instant about 30 years on, which never comes, instead of a panic.
pub(crate) fn later(start: Instant, length: Duration) -> Instant {
    start
        .checked_add(length)
        .unwrap_or_else(|| start.checked_add(FAR).unwrap_or(start))
}

/// `d` in whole nanoseconds, saturating at `u64::MAX` (584 years).
#[inline]
pub(crate) fn nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

/// Nanoseconds from `epoch` to `now`; zero when `now` is earlier.
#[inline]
pub(crate) fn nanos_since(now: Instant, epoch: Instant) -> u64 {
    nanos(now.saturating_duration_since(epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanos_matches_as_nanos_and_saturates() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(1500),
            Duration::from_secs(u64::MAX / 2_000_000_000),
        ] {
            assert_eq!(u128::from(nanos(d)), d.as_nanos());
        }
        assert_eq!(nanos(Duration::MAX), u64::MAX);
        let t = Instant::now();
        assert_eq!(nanos_since(t, t + Duration::from_secs(1)), 0);
        assert_eq!(nanos_since(t + Duration::from_micros(3), t), 3_000);
    }
}
