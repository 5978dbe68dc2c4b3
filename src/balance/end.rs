//! How an attempt ended, as a balancer learns it.

use std::time::{Duration, Instant};

use crate::classify::Outcome;

/// How one attempt on an endpoint ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum End {
    /// The endpoint answered; the classifier's verdict.
    Response(Outcome),
    /// The attempt was cut by its attempt timeout or by the call's deadline
    /// before the endpoint answered.
    TimedOut,
    /// The attempt was dropped before the endpoint answered because the
    /// caller gave up on the call.
    Cancelled,
    /// The attempt was dropped before the endpoint answered because its
    /// call was over: another attempt of the call (a hedge) answered it, or
    /// ended it with an answer not worth waiting past. The endpoint was not
    /// given up on, so this is no sign of failure.
    Superseded,
}

/// One ended attempt, reported to [`Balancer::observe`](super::Balancer::observe).
///
/// `elapsed` is the time from sending to the end, whatever the end: for a
/// timeout or a cancellation it is the time the endpoint had without
/// answering, a lower bound of its latency, which is what tells a
/// latency-aware balancer that an endpoint has stalled.
///
/// ```
/// use std::time::{Duration, Instant};
/// use towline::balance::{AttemptEnd, End};
///
/// let end = AttemptEnd::new(End::Cancelled, Duration::from_millis(900), Instant::now());
/// assert!(!end.answered());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptEnd {
    /// How it ended.
    pub end: End,
    /// How long it ran.
    pub elapsed: Duration,
    /// When it ended.
    pub at: Instant,
}

impl AttemptEnd {
    /// An attempt that ended `end`, after `elapsed`, at `at`.
    pub fn new(end: End, elapsed: Duration, at: Instant) -> Self {
        AttemptEnd { end, elapsed, at }
    }

    /// True when the endpoint answered (whatever the classifier said).
    pub fn answered(&self) -> bool {
        matches!(self.end, End::Response(_))
    }

    /// The classifier's outcome, when the endpoint answered.
    pub fn outcome(&self) -> Option<Outcome> {
        match self.end {
            End::Response(o) => Some(o),
            _ => None,
        }
    }
}
