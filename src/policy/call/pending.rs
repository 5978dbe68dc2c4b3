//! An attempt in flight, as the call machine keeps it, and the instant at
//! which it is cut.
//!
//! The cut is the attempt timeout capped by the call's deadline; for a
//! first attempt (sent as the call starts) the two lengths are compared
//! instead of two instants, which costs one `Instant` addition, not two.

use std::time::{Duration, Instant};

use super::AttemptKind;
use crate::clock::FAR;
use crate::policy::later;
use crate::policy::timeout::Deadline;

/// An attempt in flight.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pending {
    pub(super) number: u32,
    pub(super) kind: AttemptKind,
    pub(super) started: Instant,
    /// When it is cut, and by which limit (`None`: the deadline).
    pub(super) cut: Option<(Instant, Option<Duration>)>,
}

/// The cut of an attempt sent at `now`: the attempt timeout, capped by the
/// deadline when that is strictly earlier (as
/// [`attempt_limit`](crate::policy::timeout::attempt_limit) says), as an instant and
/// the timeout that set it (`None`: the deadline).
#[inline]
pub(super) fn cut(
    now: Instant,
    timeout: Option<Duration>,
    deadline: Option<&Deadline>,
) -> Option<(Instant, Option<Duration>)> {
    match (timeout, deadline) {
        (None, None) => None,
        (Some(t), None) => Some((later(now, t), Some(t))),
        (None, Some(d)) => Some((d.at(), None)),
        // From the deadline's start (a first attempt) the lengths compare
        // as the instants would: one addition.
        (Some(t), Some(d)) if d.start() == now && t.max(d.length()) <= FAR => {
            Some(if d.length() < t {
                (later(now, d.length()), None)
            } else {
                (later(now, t), Some(t))
            })
        }
        (Some(t), Some(d)) => {
            let (by_timeout, by_deadline) = (later(now, t), d.at());
            Some(if by_deadline < by_timeout {
                (by_deadline, None)
            } else {
                (by_timeout, Some(t))
            })
        }
    }
}
