//! The channel's concurrency limit on the call path: the place a call
//! takes before anything else, and what its end teaches the limiter.
//!
//! A call asks the channel's limiter first, before it waits for endpoints
//! or picks one ([`Entry`]): admitted, it holds a place for its whole life
//! (retries and hedges included: the limit counts what callers wait on);
//! refused, it fails with [`Error::Overloaded`] without being started (no
//! allocation, no attempt, no retry); with a queue configured, it waits
//! there first. When it ends, [`settle`] feeds the limiter the time the
//! answering attempt took, from the attempt's own timestamps: a success is
//! a latency sample, an overloaded answer or a timeout a drop, any other
//! failure nothing. A call dropped by its caller gives its place back
//! without a sample.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::classify::Outcome;
use crate::error::Error;
use crate::policy::limit::{Admission, Limiter, Permit};

/// A call's place under the channel's limit.
pub(crate) type Place = Option<Permit<Arc<Limiter>>>;

/// Where a new call stands with the channel's limiter when it starts.
pub(crate) enum Entry {
    /// No limit.
    Free,
    /// Admitted: it holds a place.
    Admitted(Permit<Arc<Limiter>>),
    /// Over the limit, with a queue to wait in.
    Queued(Arc<Limiter>),
}

impl Entry {
    /// Asks `limiter` for a place; `None` when the call is refused (the
    /// refusal is counted).
    #[inline]
    pub(crate) fn ask(limiter: Option<&Arc<Limiter>>) -> Option<Entry> {
        let Some(limiter) = limiter else {
            return Some(Entry::Free);
        };
        match Limiter::admit(limiter) {
            Admission::Now(permit) => Some(Entry::Admitted(permit)),
            Admission::Wait => Some(Entry::Queued(limiter.clone())),
            Admission::Refused => None,
        }
    }

    /// The call's place, once it has one: at once, or after waiting in
    /// the queue; [`Error::Overloaded`] when the wait fails.
    #[inline]
    pub(crate) async fn enter(self) -> Result<Place, Error> {
        match self {
            Entry::Free => Ok(None),
            Entry::Admitted(permit) => Ok(Some(permit)),
            Entry::Queued(limiter) => match limiter.wait().await {
                Some(permit) => Ok(Some(permit)),
                None => Err(Error::Overloaded),
            },
        }
    }
}

/// Ends a call's place: `outcome` is the classifier's for the attempt that
/// ended the call, `timed_out` whether the call ended in a timeout (the
/// attempt's or the deadline), `rtt` how long the answering attempt ran
/// and `now` when it ended.
#[inline]
pub(crate) fn settle(place: Place, outcome: Outcome, timed_out: bool, rtt: Duration, now: Instant) {
    let Some(permit) = place else {
        return;
    };
    if timed_out || outcome.is_overloaded() {
        permit.finish(true, rtt, now);
    } else if outcome.is_success() {
        permit.finish(false, rtt, now);
    }
    // Any other failure says nothing about overload: the permit is
    // dropped, which gives the place back.
}
