//! The channel's concurrency limit on the call path: the place a call
//! takes before anything else, and what its end teaches the limiter.
//!
//! A call asks the channel's limiter first, before it waits for endpoints
//! or picks one ([`Entry`]): admitted, it holds a place for its whole life
//! (retries and hedges included: the limit counts what callers wait on);
//! refused, it fails with [`Error::Overloaded`] without being started (no
//! allocation, no attempt, no retry); with a queue configured, it waits
//! there first. When it ends, [`Held::settle`] feeds the limiter the time
//! the answering attempt took, from the attempt's own timestamps: a
//! success is a latency sample, an overloaded answer or a timeout a drop,
//! any other failure nothing. A call dropped by its caller gives its place
//! back without a sample.
//!
//! A bare call's place holds no reference to the limiter
//! ([`InChannel`]): the call's future keeps its endpoint's slot, whose
//! channel state keeps the channel's limiter (made once, never replaced),
//! and reaches it there when the call ends or is dropped. An admitted call
//! then costs the limiter's two atomic updates (take, give back) and
//! nothing more. A place that must outlive every such path (a call waiting
//! for its place or for discovery, or a call with a policy) owns a
//! reference to the limiter instead ([`Held`]).

use std::sync::Arc;

use super::state::ChannelState;
use crate::balance::AttemptEnd;
use crate::error::Error;
use crate::policy::limit::Limiter;

/// Where a new call stands with the channel's limiter when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// No limit.
    Free,
    /// Admitted: it holds a place.
    Admitted,
    /// Over the limit, with a queue to wait in.
    Queued,
}

impl Entry {
    /// Asks `limiter` for a place; `None` when the call is refused (the
    /// refusal is counted).
    #[inline]
    pub(crate) fn ask(limiter: Option<&Limiter>) -> Option<Entry> {
        let Some(limiter) = limiter else {
            return Some(Entry::Free);
        };
        let queue = limiter.queue_length();
        // With a queue, a new call does not pass calls already waiting.
        if (queue == 0 || !limiter.has_waiters()) && limiter.try_enter() {
            return Some(Entry::Admitted);
        }
        if queue > 0 {
            return Some(Entry::Queued);
        }
        limiter.refuse();
        None
    }

    /// The call's place under `limiter` (the one it asked) when it has one
    /// at once; `None` when it must wait in the queue first
    /// ([`enter`](Self::enter)).
    #[inline]
    pub(crate) fn at_once(self, limiter: Option<&Arc<Limiter>>) -> Option<Held> {
        match (self, limiter) {
            (Entry::Admitted, Some(l)) => Some(Held(Some(l.clone()))),
            (Entry::Queued, Some(_)) => None,
            _ => Some(Held::none()),
        }
    }

    /// The call's place under `limiter` (the one it asked), once it has
    /// one: at once, or after waiting in the queue; [`Error::Overloaded`]
    /// when the wait fails.
    pub(crate) async fn enter(self, limiter: Option<Arc<Limiter>>) -> Result<Held, Error> {
        match (self, limiter) {
            (Entry::Admitted, Some(l)) => Ok(Held(Some(l))),
            (Entry::Queued, Some(l)) if l.wait_for_room().await => Ok(Held(Some(l))),
            (Entry::Queued, Some(_)) => Err(Error::Overloaded),
            _ => Ok(Held::none()),
        }
    }
}

/// A call's place under the channel's limit (or none, without a limit):
/// given back when dropped.
pub(crate) struct Held(Option<Arc<Limiter>>);

impl Held {
    /// No place (a call under no limit, or one whose place is settled).
    #[inline]
    pub(crate) const fn none() -> Held {
        Held(None)
    }

    /// Whether the call holds a place.
    #[inline]
    pub(crate) fn is_held(&self) -> bool {
        self.0.is_some()
    }

    /// Ends the place with the end of the attempt that ended the call (a
    /// timeout of the attempt or of the deadline is [`End::TimedOut`](crate::balance::End::TimedOut)).
    #[inline]
    pub(crate) fn settle(mut self, end: &AttemptEnd) {
        if let Some(limiter) = self.0.take() {
            limiter.leave_for(end);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(limiter) = self.0.take() {
            limiter.leave();
        }
    }
}

/// A bare call's place under the channel's limiter, which it reaches
/// through the channel's state (its slot's): its holder must
/// [`settle`](Self::settle) or [`give_back`](Self::give_back) it with that
/// state. Dropped with its place, it would keep the place for good.
pub(crate) struct InChannel {
    held: bool,
}

impl InChannel {
    /// A place just taken under the channel's limiter.
    #[inline]
    pub(crate) const fn taken() -> InChannel {
        InChannel { held: true }
    }

    /// Ends the place, as [`Held::settle`] does (`state` is the channel's).
    #[inline]
    pub(crate) fn settle(&mut self, state: &ChannelState, end: &AttemptEnd) {
        if std::mem::take(&mut self.held)
            && let Some(limiter) = state.any_limiter()
        {
            limiter.leave_for(end);
        }
    }

    /// Gives the place back without a sample (`state` is the channel's).
    #[inline]
    pub(crate) fn give_back(&mut self, state: &ChannelState) {
        if std::mem::take(&mut self.held)
            && let Some(limiter) = state.any_limiter()
        {
            limiter.leave();
        }
    }

    /// The same place, owning a reference to the limiter: for a holder
    /// that cannot reach the state when it ends.
    pub(crate) fn owned(mut self, state: &ChannelState) -> Held {
        let held = std::mem::take(&mut self.held);
        Held(state.any_limiter().filter(|_| held).cloned())
    }
}

impl Drop for InChannel {
    fn drop(&mut self) {
        // A bug that would cost a place under the limit for good.
        debug_assert!(
            !self.held || std::thread::panicking(),
            "a place dropped unreturned"
        );
    }
}
