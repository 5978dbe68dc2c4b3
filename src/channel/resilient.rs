//! A call under the channel's policies: the call machine
//! ([`crate::policy::call`]) driven by [`Drive`], with attempts on
//! endpoints of the table chosen by [`choose()`].
//!
//! Each attempt picks from the current endpoint set; the call remembers
//! the endpoints it tried by identity, so a retry avoids them even if the
//! set changed in between. Nothing here allocates unless a hedge is tried.

use std::cell::Cell;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tower::Service;
use tracing::Span;

use super::attempt::{Attempt, outcome_name};
use super::boxed::{Boxed, Plain, boxed, boxed_in_place};
use super::choose::{self, Candidates, choose};
use super::hold::Hold;
use super::inner::Handle;
use super::limits::{Entry, Held};
use super::slot_ref::SlotRef;
use super::table::Snapshot;
use crate::balance::{AttemptEnd, End, PickContext};
use crate::error::{BoxError, Error};
use crate::policy::breaker::CircuitBreaker;
use crate::policy::budget::Tallies;
use crate::policy::call::{AttemptKind, Ending, NotSent, Refused, Rules, SendAttempt, Tried};
use crate::policy::drive::{Dispatch, Drive, Place};
use crate::policy::limit::Limiter;
use crate::policy::throttle::Decision;
use crate::rng::with_thread_rng;

impl<S> Candidates for Snapshot<S> {
    #[inline]
    fn id(&self, i: usize) -> usize {
        SlotRef::as_ptr(self.slot(i)) as usize
    }

    #[inline]
    fn ejected(&self, i: usize) -> bool {
        self.slot(i).ejected.load(Ordering::Relaxed)
    }

    #[inline]
    fn breaker(&self, i: usize) -> Option<&CircuitBreaker> {
        self.slot(i).breaker.as_ref()
    }

    #[inline]
    fn limiter(&self, i: usize) -> Option<&Limiter> {
        self.slot(i).limiter.as_deref()
    }
}

/// Where a channel call's attempts go: the channel (through this clone's
/// handle, whose settings the call follows), and the call's start, span,
/// key and place.
struct Endpoints<Req, S: Service<Req>> {
    handle: Hold<Handle<Req, S>>,
    start: Instant,
    span: Span,
    /// Adaptive throttling refused an attempt of this call.
    throttled: Cell<bool>,
    /// The request's hash key: every attempt of the call picks by it.
    key: Option<u64>,
    /// The call's place under the channel's limit, settled with its result.
    place: Cell<Option<Held>>,
    /// The last attempt found endpoints but none with room under its
    /// limit.
    full: Cell<bool>,
}

impl<Req, S: Service<Req>> Endpoints<Req, S> {
    /// The endpoints of a call of `req` started at `start`, holding
    /// `place` under the channel's limit (if any).
    #[inline(always)]
    fn new(
        handle: Hold<Handle<Req, S>>,
        req: &Req,
        start: Instant,
        span: Span,
        place: Option<Held>,
    ) -> Self {
        Endpoints {
            key: handle.inner.key(req),
            handle,
            start,
            span,
            throttled: Cell::new(false),
            place: Cell::new(place.filter(Held::is_held)),
            full: Cell::new(false),
        }
    }
}

impl<Req: 'static, S> Dispatch<Req> for Endpoints<Req, S>
where
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Response: 'static,
    S::Error: Into<BoxError> + 'static,
{
    type Response = S::Response;
    type Attempt = Attempt<Req, S>;

    fn rules(&self) -> Rules<'_> {
        self.handle.rules()
    }

    #[inline(always)]
    fn send(
        &self,
        tried: &Tried,
        send: &SendAttempt,
        req: Req,
        now: Instant,
        place: Pin<&mut Place<Self::Attempt>>,
    ) -> Result<Option<usize>, NotSent> {
        let inner = &*self.handle.inner;
        let settings = &self.handle.settings;
        let state = &inner.state;
        if settings.throttle().is_some()
            && state
                .throttle
                .admit(now, || with_thread_rng(|rng| rng.unit()))
                == Decision::Reject
        {
            state.throttled.increment(1);
            self.throttled.set(true);
            self.full.set(false);
            return Err(NotSent::NoEndpoint);
        }
        let rules = choose::Rules {
            breakers: settings.breaker().is_some(),
            panic: state.panicking(),
            none_ejected: state.ejected() == 0,
            limits: settings.endpoint_concurrency_limit().is_some(),
        };
        // The current set, under a short-lived guard: the call holds only
        // the slots it sends to, and its tried set survives a new set.
        let snapshot = inner.table.current();
        let at = PickContext::new(now)
            .with_key(self.key)
            .with_ramps(&snapshot.shared.ramps);
        let picked = with_thread_rng(|rng| {
            choose(
                &**snapshot,
                snapshot.balancer_for(self.key),
                tried,
                rules,
                at,
                rng,
            )
        });
        let Some(chosen) = picked else {
            // Endpoints there, but none with room: overloaded, not absent.
            self.throttled.set(false);
            // With endpoint limits on, every slot has a limiter.
            self.full.set(rules.limits);
            return Err(NotSent::NoEndpoint);
        };
        let slot = snapshot.slot(chosen.index).clone();
        drop(snapshot);
        let id = SlotRef::as_ptr(&slot) as usize;
        let write = |at: *mut Self::Attempt| {
            // SAFETY: `fill` gives a writable, aligned, empty place.
            unsafe {
                Attempt::init(
                    at,
                    inner.on_attempt.as_ref(),
                    slot,
                    req,
                    send.number,
                    send.kind,
                    now,
                    send.cut,
                    chosen.admission,
                    chosen.placed,
                    &self.span,
                )
            }
        };
        // SAFETY: `write` initializes the attempt.
        unsafe { place.fill(write) };
        Ok(Some(id))
    }

    fn replay(&self, req: &Req) -> Option<Req> {
        self.handle.inner.replay.as_ref()?.replay(req)
    }

    fn no_endpoint(&self) -> Error {
        // Only a call whose last attempt was refused ends here after a
        // refusal: a refused retry ends with the last attempt's error.
        if self.throttled.get() {
            return Error::Throttled;
        }
        if self.full.get() {
            self.handle.inner.state.endpoints_full();
            return Error::Overloaded;
        }
        self.handle.inner.no_endpoint()
    }

    fn on_sent(&self, kind: AttemptKind) {
        let state = &self.handle.inner.state;
        state.retry_metrics.attempts.increment(1);
        match kind {
            AttemptKind::Retry => state.retry_metrics.retries.increment(1),
            AttemptKind::Hedge => state.hedge_metrics.sent.increment(1),
            AttemptKind::First => {}
        }
    }

    fn on_refused(&self, which: Refused) {
        let state = &self.handle.inner.state;
        match which {
            Refused::Retry => state.retry_metrics.budget_exhausted.increment(1),
            Refused::Hedge => state.hedge_metrics.budget_exhausted.increment(1),
        }
    }

    #[inline(always)]
    fn on_finish(&self, ending: &Ending, now: Instant, took: Option<Duration>) {
        let state = &self.handle.inner.state;
        if ending.answered_by == Some(AttemptKind::Hedge) {
            state.hedge_metrics.won.increment(1);
        }
        let outcome = ending.last_outcome;
        let took = took.unwrap_or_else(|| now.saturating_duration_since(self.start));
        state.metrics.record_call(outcome, took);
        self.span.record("outcome", outcome_name(outcome));
    }

    #[inline(always)]
    fn on_result(
        &self,
        ending: &Ending,
        now: Instant,
        answered_in: Option<Duration>,
        result: &Result<S::Response, Error>,
    ) {
        if let Some(place) = self.place.take() {
            let end = if result.as_ref().is_err_and(Error::is_timeout) {
                End::TimedOut
            } else {
                End::Response(ending.last_outcome)
            };
            let rtt = answered_in.unwrap_or_else(|| now.saturating_duration_since(self.start));
            place.settle(&AttemptEnd::new(end, rtt, now));
        }
    }
}

/// A call under the channel's policies, made now in `span` (the call
/// span), holding `place` under the channel's limit (if any), counted in
/// the budgets now through `tallies` (its channel clone's). The deadline runs
/// from now, also while the call waits for a first endpoint.
pub(crate) fn start<Req, S>(
    handle: Hold<Handle<Req, S>>,
    req: Req,
    span: Span,
    place: Option<Held>,
    tallies: &mut Tallies,
) -> Boxed<S::Response>
where
    Req: Send + 'static,
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    S::Future: Send + 'static,
{
    let start = crate::clock::now();
    handle.count(start, tallies);
    if !handle.inner.table.is_populated() {
        let wait = wait_then_call(handle, req, start, span.clone(), place, true);
        return boxed(span, Plain(wait));
    }
    let make = |at: *mut Plain<Drive<Endpoints<Req, S>, Req>>, span: &Span| {
        let endpoints = Endpoints::new(handle, &req, start, span.clone(), place);
        // SAFETY: `Drive::init` fully initializes the only field of the
        // `Plain` at `at`, the box's place for the call.
        unsafe {
            Drive::init(
                std::ptr::addr_of_mut!((*at).0),
                endpoints,
                req,
                start,
                start,
                true,
            )
        }
    };
    // SAFETY: `make` writes the call.
    unsafe { boxed_in_place(span, make) }
}

/// A call under the channel's policies that waits in the channel's queue
/// (`entry` is [`Entry::Queued`] under `limiter`) for its place first;
/// [`Error::Overloaded`] when the wait fails. The deadline runs from when
/// it has its place.
pub(crate) async fn queued<Req: 'static, S>(
    handle: Hold<Handle<Req, S>>,
    limiter: Arc<Limiter>,
    entry: Entry,
    req: Req,
    span: Span,
) -> Result<S::Response, Error>
where
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Response: 'static,
    S::Error: Into<BoxError> + 'static,
{
    let place = entry.enter(Some(limiter)).await?;
    wait_then_call(handle, req, crate::clock::now(), span, Some(place), false).await
}

/// A call made while the endpoint set was empty (or after a wait for its
/// place): waits for discovery if it must, then runs; counted in its
/// budgets as it runs unless it was `counted` as it started.
async fn wait_then_call<Req: 'static, S>(
    handle: Hold<Handle<Req, S>>,
    req: Req,
    start: Instant,
    span: Span,
    place: Option<Held>,
    counted: bool,
) -> Result<S::Response, Error>
where
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Response: 'static,
    S::Error: Into<BoxError> + 'static,
{
    let now = if handle.inner.table.is_populated() {
        start
    } else {
        handle.inner.populated().await?;
        crate::clock::now()
    };
    let endpoints = Endpoints::new(handle, &req, start, span, place);
    Drive::new(endpoints, req, start, now, counted).await
}
