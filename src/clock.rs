//! The crate's one clock: tokio's, so that paused test time applies to every
//! decision core, read as a std `Instant` that the cores take as an argument.

use std::time::{Duration, Instant};

/// The time now on tokio's clock (virtual when the clock is paused).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// `start + length` for a limit or a due time, saturating: a length too
/// long for `Instant` (settings accept up to `Duration::MAX`) gives an
/// instant about 30 years on, which never comes, instead of a panic.
pub(crate) fn later(start: Instant, length: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    start
        .checked_add(length)
        .unwrap_or_else(|| start.checked_add(FAR).unwrap_or(start))
}
