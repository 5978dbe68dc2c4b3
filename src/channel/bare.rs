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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pin_project::pin_project;
use tower::Service;
use tracing::Span;

use super::attempt::{Attempt, outcome_name};
use super::engine::{Boxed, CallFuture, Plain, boxed, boxed_in_place};
use super::inner::Inner;
use super::slot::Slot;
use super::state::ChannelState;
use super::table::Snapshot;
use crate::balance::PickContext;
use crate::classify::Outcome;
use crate::policy::call::{AttemptKind, Ended};
use crate::rng::with_thread_rng;
use crate::{BoxError, Error};

/// The picked endpoint's slot (skipping ejected ones), or `None` when no
/// endpoint is eligible.
fn pick<S>(snapshot: &Snapshot<S>, at: Instant, state: &ChannelState) -> Option<Arc<Slot<S>>> {
    let at = PickContext::new(at);
    let picked = if state.ejected() == 0 {
        // Nothing ejected: no endpoint needs a look before it is picked.
        with_thread_rng(|rng| snapshot.balancer.pick(&at, snapshot, &|_| true, rng))
    } else {
        let eligible = |i: usize| !snapshot.slot(i).ejected.load(Ordering::Relaxed);
        with_thread_rng(|rng| snapshot.balancer.pick(&at, snapshot, &eligible, rng))
    };
    picked.map(|i| snapshot.slot(i).clone())
}

/// A call with no policy, made now in `span` (the call span): picks its
/// endpoint and sends its attempt now, or waits for discovery while the set
/// is empty.
pub(crate) fn start<Req, S>(inner: &Arc<Inner<Req, S>>, req: Req, span: Span) -> Boxed<S::Response>
where
    Req: Send + 'static,
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    S::Future: Send + 'static,
{
    let start = crate::clock::now();
    let picked = {
        let current = inner.table.current();
        (!current.is_empty()).then(|| pick(&current, start, &inner.state))
    };
    match picked {
        Some(Some(slot)) => {
            let make = |place: *mut Bare<Req, S, ()>, span: &Span| {
                let bare = Bare::new(inner, slot, req, start, (), span);
                // SAFETY: `place` is the box's place for the call.
                unsafe { place.write(bare) }
            };
            // SAFETY: `make` writes the call.
            unsafe { boxed_in_place(span, make) }
        }
        Some(None) => {
            let error = inner.no_endpoint();
            boxed(span, Plain(async move { Err(error) }))
        }
        None => {
            let wait = wait_then_call(inner.clone(), req, start, span.clone());
            boxed(span, Plain(wait))
        }
    }
}

/// A call made while the endpoint set was empty: waits for discovery (up
/// to the initial wait), then sends its attempt. The call's duration runs
/// from `start`; its attempt's, from when it is sent.
async fn wait_then_call<Req, S>(
    inner: Arc<Inner<Req, S>>,
    req: Req,
    start: Instant,
    span: Span,
) -> Result<S::Response, Error>
where
    Req: Send,
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Response: 'static,
    S::Error: Into<BoxError> + 'static,
    S::Future: Send,
{
    let snapshot = inner.populated().await?;
    let now = crate::clock::now();
    let Some(slot) = pick(&snapshot, now, &inner.state) else {
        return Err(inner.no_endpoint());
    };
    drop(snapshot);
    let mut bare = std::pin::pin!(Bare::new(&inner, slot, req, now, start, &span));
    std::future::poll_fn(|cx| bare.as_mut().poll_in(cx, &span)).await
}

/// Where a bare call's duration starts.
pub(crate) trait CallStart {
    /// The call's duration, for an attempt that ran `elapsed` until `at`.
    fn took(&self, elapsed: Duration, at: Instant) -> Duration;
}

/// The call started with its attempt (the usual case: nothing to keep).
impl CallStart for () {
    #[inline]
    fn took(&self, elapsed: Duration, _: Instant) -> Duration {
        elapsed
    }
}

/// The call started at this instant, before its attempt: it waited for
/// discovery.
impl CallStart for Instant {
    fn took(&self, _: Duration, at: Instant) -> Duration {
        at.saturating_duration_since(*self)
    }
}

/// A bare call's one attempt.
#[pin_project]
pub(crate) struct Bare<Req, S: Service<Req>, C> {
    #[pin]
    attempt: Attempt<Req, S>,
    start: C,
}

impl<Req, S, C> Bare<Req, S, C>
where
    S: Service<Req> + Clone,
{
    /// The call's attempt on `slot`, sent at `sent`; the call started at
    /// `start`.
    #[inline(always)]
    fn new(
        inner: &Inner<Req, S>,
        slot: Arc<Slot<S>>,
        req: Req,
        sent: Instant,
        start: C,
        span: &Span,
    ) -> Self {
        let _entered = (!span.is_disabled()).then(|| span.enter());
        let attempt = Attempt::new(
            inner.on_attempt.as_ref(),
            slot,
            req,
            1,
            AttemptKind::First,
            sent,
            None,
            None,
            span,
        );
        drop(_entered);
        Bare { attempt, start }
    }
}

impl<Req, S, C> CallFuture for Bare<Req, S, C>
where
    Req: Send,
    S: Service<Req> + Send + Sync + 'static,
    S::Response: 'static,
    S::Error: Into<BoxError> + 'static,
    S::Future: Send,
    C: CallStart + Send,
{
    type Response = S::Response;

    fn poll_in(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        span: &Span,
    ) -> Poll<Result<S::Response, Error>> {
        let mut this = self.project();
        let finished = std::task::ready!(this.attempt.as_mut().poll(cx));
        let outcome = match finished.ended {
            Ended::Answered(outcome) => outcome,
            Ended::TimedOut => Outcome::Failure { retryable: true },
        };
        let took = this.start.took(finished.elapsed, finished.at);
        let state = &this.attempt.as_ref().get_ref().slot().state;
        state.metrics.record_call(outcome, took);
        if !span.is_disabled() {
            span.record("outcome", outcome_name(outcome));
        }
        // A response the classifier called a failure is still the caller's
        // answer when nothing else will be tried.
        Poll::Ready(
            finished
                .result
                .unwrap_or_else(|| Err(Error::inner("an attempt without a time limit timed out"))),
        )
    }
}

#[cfg(test)]
mod size_probe {
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
    #[test]
    fn sizes() {
        use std::mem::size_of;
        eprintln!(
            "Bare {} Attempt {} Step {} Span {} Admission {} Finished {} Error {} Outcome {}",
            size_of::<super::Bare<u64, E, ()>>(),
            size_of::<super::Attempt<u64, E>>(),
            size_of::<crate::policy::drive::Step<E, u64>>(),
            size_of::<tracing::Span>(),
            size_of::<Option<crate::policy::breaker::Admission>>(),
            size_of::<crate::policy::drive::Finished<u64>>(),
            size_of::<crate::Error>(),
            size_of::<crate::classify::Outcome>(),
        );
    }
}
