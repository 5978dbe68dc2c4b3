//! The bare call path: no policy, one attempt on one picked endpoint.
//!
//! The endpoint is picked when the call is made ([`start`]), under a
//! short-lived guard of the current snapshot, and the call's future holds
//! only that endpoint's slot: no reference on the snapshot (which every
//! core would contend on) and none on the channel. The clock is read twice:
//! when the call is made and when the answer comes.
//!
//! While the endpoint set is empty the call waits for discovery instead
//! ([`wait_then_call`]), holding the channel until an endpoint is known.
//!
//! Under the channel's concurrency limit, a call admitted at once takes the
//! same path with its place ([`Held`]) in its future, settled when the
//! answer comes; a call that must queue waits for its place first
//! ([`queued`]), then picks.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pin_project::{pin_project, pinned_drop};
use tower::Service;
use tracing::Span;

use super::attempt::{Attempt, outcome_name};
use super::boxed::{Boxed, CallFuture, Plain, boxed, boxed_in_place};
use super::inner::Inner;
use super::limits::{Entry, Held, InChannel};
use super::slot::Slot;
use super::slot_ref::SlotRef;
use super::state::ChannelState;
use super::table::Snapshot;
use crate::balance::{AttemptEnd, End, PickContext};
use crate::classify::Outcome;
use crate::policy::call::{AttemptKind, Ended};
use crate::policy::drive::Place;
use crate::policy::limit::Limiter;
use crate::rng::with_thread_rng;
use crate::{BoxError, Error};

/// The picked endpoint's slot (skipping ejected ones), or `None` when no
/// endpoint is eligible. A request with a hash `key` goes to the keyed
/// balancer, when the channel has one.
fn pick<S>(
    snapshot: &Snapshot<S>,
    at: Instant,
    key: Option<u64>,
    state: &ChannelState,
) -> Option<SlotRef<Slot<S>>> {
    let balancer = snapshot.balancer_for(key);
    let at = PickContext::new(at)
        .with_key(key)
        .with_ramps(&snapshot.shared.ramps);
    let picked = if state.ejected() == 0 {
        // Nothing ejected: no endpoint needs a look before it is picked.
        with_thread_rng(|rng| balancer.pick(&at, snapshot, &|_| true, rng))
    } else {
        let eligible = |i: usize| !snapshot.slot(i).ejected.load(Ordering::Relaxed);
        with_thread_rng(|rng| balancer.pick(&at, snapshot, &eligible, rng))
    };
    picked.map(|i| snapshot.slot(i).clone())
}

/// A call with no policy, made now in `span` (the call span) holding
/// `place` (`()` without a limit, or its place under the channel's limit):
/// picks its endpoint and sends its attempt now, or waits for discovery
/// while the set is empty.
pub(crate) fn start<Req, S, P>(
    inner: &Arc<Inner<Req, S>>,
    req: Req,
    span: Span,
    place: P,
) -> Boxed<S::Response>
where
    Req: Send + 'static,
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    S::Future: Send + 'static,
    P: CallEnd + Send + 'static,
{
    let start = crate::clock::now();
    let key = inner.key(&req);
    let picked = {
        let current = inner.table.current();
        (!current.is_empty()).then(|| pick(&current, start, key, &inner.state))
    };
    match picked {
        Some(Some(slot)) => {
            let make = |at: *mut Bare<Req, S, P>, span: &Span| {
                // SAFETY: `at` is the box's place for the call.
                unsafe { Bare::init(at, inner, slot, req, start, place, span) }
            };
            // SAFETY: `make` writes the call.
            unsafe { boxed_in_place(span, make) }
        }
        Some(None) => {
            // The place, if any, is given back here, without a sample.
            let mut place = place;
            place.abandon(&inner.state);
            let error = inner.no_endpoint();
            boxed(span, Plain(async move { Err(error) }))
        }
        None => {
            let place = place.owned(&inner.state);
            let wait = wait_then_call(inner.clone(), req, start, span.clone(), place);
            boxed(span, Plain(wait))
        }
    }
}

/// A call with no policy that waits in the channel's queue (`entry` is
/// [`Entry::Queued`] under `limiter`) for its place, then picks and sends;
/// [`Error::Overloaded`] when the wait fails. The call's duration runs
/// from when it has its place.
pub(crate) async fn queued<Req, S>(
    inner: Arc<Inner<Req, S>>,
    limiter: Arc<Limiter>,
    entry: Entry,
    req: Req,
    span: Span,
) -> Result<S::Response, Error>
where
    Req: Send,
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Response: 'static,
    S::Error: Into<BoxError> + 'static,
    S::Future: Send,
{
    let place = entry.enter(Some(limiter)).await?;
    wait_then_call(inner, req, crate::clock::now(), span, place).await
}

/// A call made while the endpoint set was empty (or after a wait for its
/// place): waits for discovery (up to the initial wait), then sends its
/// attempt. The call's duration runs from `start`; its attempt's, from
/// when it is sent.
async fn wait_then_call<Req, S, P>(
    inner: Arc<Inner<Req, S>>,
    req: Req,
    start: Instant,
    span: Span,
    place: P,
) -> Result<S::Response, Error>
where
    Req: Send,
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Response: 'static,
    S::Error: Into<BoxError> + 'static,
    S::Future: Send,
    P: CallEnd + Send,
{
    let key = inner.key(&req);
    let snapshot = inner.populated().await?;
    let now = crate::clock::now();
    let Some(slot) = pick(&snapshot, now, key, &inner.state) else {
        return Err(inner.no_endpoint());
    };
    drop(snapshot);
    let end = (start, place);
    let mut place = std::pin::pin!(Place::empty());
    // SAFETY: `fill` gives a writable, aligned, empty place; `init` writes
    // the call there.
    unsafe {
        let write = |at| Bare::init(at, &inner, slot, req, now, end, &span);
        place.as_mut().fill(write);
    }
    let mut bare = place.as_mut().as_pin_mut().expect("the call was written");
    std::future::poll_fn(|cx| bare.as_mut().poll_in(cx, &span)).await
}

/// What a bare call does when its attempt ends, besides returning: where
/// its duration starts, and the place it gives back. Each method gets the
/// channel's state (where an [`InChannel`] place finds its limiter).
pub(crate) trait CallEnd: Sized {
    /// What it becomes in a call that waits for discovery, holding no slot
    /// ([`owned`](Self::owned)).
    type Owned: CallEnd + Send + 'static;

    /// Ends the call whose attempt ended as `end` says; returns the call's
    /// duration.
    fn end(&mut self, state: &ChannelState, end: &AttemptEnd) -> Duration;

    /// Ends the call without an answer (dropped, or no endpoint to send
    /// to): gives its place back, if any, without a sample.
    #[inline]
    fn abandon(&mut self, _state: &ChannelState) {}

    /// The same, owning what it needs to end without the channel's state.
    fn owned(self, state: &ChannelState) -> Self::Owned;
}

/// The call started with its attempt and holds no place (the usual case:
/// nothing to keep).
impl CallEnd for () {
    type Owned = ();

    #[inline]
    fn end(&mut self, _: &ChannelState, end: &AttemptEnd) -> Duration {
        end.elapsed
    }

    fn owned(self, _: &ChannelState) {}
}

/// The call started at this instant, before its attempt: it waited for
/// discovery, or for its place.
impl CallEnd for Instant {
    type Owned = Instant;

    fn end(&mut self, _: &ChannelState, end: &AttemptEnd) -> Duration {
        end.at.saturating_duration_since(*self)
    }

    fn owned(self, _: &ChannelState) -> Instant {
        self
    }
}

/// The call's place under the channel's limit, owning its limiter, settled
/// with the attempt's outcome and time.
impl CallEnd for Held {
    type Owned = Held;

    fn end(&mut self, _: &ChannelState, end: &AttemptEnd) -> Duration {
        std::mem::replace(self, Held::none()).settle(end);
        end.elapsed
    }

    fn abandon(&mut self, _: &ChannelState) {
        // Given back as it drops.
        drop(std::mem::replace(self, Held::none()));
    }

    fn owned(self, _: &ChannelState) -> Held {
        self
    }
}

/// The call's place under the channel's limit, reached through the channel
/// state, settled with the attempt's outcome and time (the call started
/// with its attempt).
impl CallEnd for InChannel {
    type Owned = Held;

    #[inline]
    fn end(&mut self, state: &ChannelState, end: &AttemptEnd) -> Duration {
        self.settle(state, end);
        end.elapsed
    }

    #[inline]
    fn abandon(&mut self, state: &ChannelState) {
        self.give_back(state);
    }

    fn owned(self, state: &ChannelState) -> Held {
        InChannel::owned(self, state)
    }
}

/// Both: the first says where the call started.
impl<A: CallEnd, B: CallEnd> CallEnd for (A, B) {
    type Owned = (A::Owned, B::Owned);

    fn end(&mut self, state: &ChannelState, end: &AttemptEnd) -> Duration {
        self.1.end(state, end);
        self.0.end(state, end)
    }

    fn abandon(&mut self, state: &ChannelState) {
        self.1.abandon(state);
        self.0.abandon(state);
    }

    fn owned(self, state: &ChannelState) -> Self::Owned {
        (self.0.owned(state), self.1.owned(state))
    }
}

/// A bare call's one attempt. Dropped before its end, it abandons its
/// place (if any) through its slot's channel state.
#[pin_project(PinnedDrop)]
pub(crate) struct Bare<Req, S: Service<Req>, C: CallEnd> {
    #[pin]
    attempt: Attempt<Req, S>,
    end: C,
}

#[pinned_drop]
impl<Req, S: Service<Req>, C: CallEnd> PinnedDrop for Bare<Req, S, C> {
    fn drop(self: Pin<&mut Self>) {
        let this = self.project();
        this.end
            .abandon(&this.attempt.as_ref().get_ref().slot().state);
    }
}

impl<Req, S, C> Bare<Req, S, C>
where
    S: Service<Req> + Clone,
    C: CallEnd,
{
    /// Writes at `this`, field by field (see [`Attempt::init`]), the call's
    /// attempt on `slot`, sent at `sent`; `end` ends the call (see
    /// [`CallEnd`]).
    ///
    /// # Safety
    ///
    /// `this` must be valid for writes and aligned; on return the call
    /// there is fully initialized (and not yet pinned).
    #[inline(always)]
    unsafe fn init(
        this: *mut Self,
        inner: &Inner<Req, S>,
        slot: SlotRef<Slot<S>>,
        req: Req,
        sent: Instant,
        end: C,
        span: &Span,
    ) {
        use std::ptr::addr_of_mut;
        let _entered = (!span.is_disabled()).then(|| span.enter());
        // SAFETY: the caller gives a writable, aligned place; both fields
        // are written once.
        unsafe {
            Attempt::init(
                addr_of_mut!((*this).attempt),
                inner.on_attempt.as_ref(),
                slot,
                req,
                1,
                AttemptKind::First,
                sent,
                None,
                None,
                false,
                span,
            );
            addr_of_mut!((*this).end).write(end);
        }
        drop(_entered);
    }
}

impl<Req, S, C> CallFuture for Bare<Req, S, C>
where
    Req: Send,
    S: Service<Req> + Send + Sync + 'static,
    S::Response: 'static,
    S::Error: Into<BoxError> + 'static,
    S::Future: Send,
    C: CallEnd + Send,
{
    type Response = S::Response;

    fn poll_in(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        span: &Span,
    ) -> Poll<Result<S::Response, Error>> {
        let mut this = self.project();
        let finished = std::task::ready!(this.attempt.as_mut().poll(cx));
        let (outcome, end) = match finished.ended {
            Ended::Answered(outcome) => (outcome, End::Response(outcome)),
            Ended::TimedOut => (Outcome::Failure { retryable: true }, End::TimedOut),
        };
        // A response the classifier called a failure is still the caller's
        // answer when nothing else will be tried.
        let answer = finished
            .result
            .unwrap_or_else(|| Err(Error::inner("an attempt without a time limit timed out")));
        let state = &this.attempt.as_ref().get_ref().slot().state;
        let end = AttemptEnd::new(end, finished.elapsed, finished.at);
        let took = this.end.end(state, &end);
        state.metrics.record_call(outcome, took);
        if !span.is_disabled() {
            span.record("outcome", outcome_name(outcome));
        }
        Poll::Ready(answer)
    }
}

#[cfg(test)]
mod size {
    #[derive(Clone)]
    struct E;
    impl tower::Service<u64> for E {
        type Response = u64;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<u64, std::convert::Infallible>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, r: u64) -> Self::Future {
            std::future::ready(Ok(r))
        }
    }
    /// A bare call over a small service stays at most 128 bytes, the size
    /// below which its move into the box is copied inline rather than by
    /// a library `memcpy` (measured 112 bytes).
    #[test]
    fn a_bare_call_is_small_enough_to_box_inline() {
        let size = std::mem::size_of::<super::Bare<u64, E, ()>>();
        assert!(size <= 128, "a bare call takes {size} bytes");
    }
}
