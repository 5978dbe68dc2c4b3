//! One attempt on one endpoint: the hook, readiness, the call, its time
//! limit, classification, and the record of how it ended.
//!
//! Every attempt reports its end on its endpoint exactly once: an answer
//! with the classifier's outcome (or later, for a classifier that defers),
//! a cut by its time limit, or — when the attempt is dropped before either,
//! because the caller gave up or another attempt won — a cancellation.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use pin_project::{pin_project, pinned_drop};
use tower::Service;
use tracing::Span;

use super::info::AttemptInfo;
use super::inner::Hook;
use super::slot::{LateOutcome, Slot};
use super::slot_ref::SlotRef;
use crate::BoxError;
use crate::balance::{AttemptEnd, End};
use crate::classify::{Answered, OutcomeReport};
use crate::policy::breaker::Admission;
use crate::policy::call::{AttemptKind, Ended};
use crate::policy::drive::{self, Finished, Step};
use crate::policy::into_error;

/// One attempt in flight (see the [module docs](self)).
///
/// It holds a reference on its endpoint's slot and nothing else of the
/// channel: the classifier is reached through the slot's shared state, so
/// a bare call touches no reference count but the slot's.
#[pin_project(PinnedDrop)]
pub(crate) struct Attempt<Req, S: Service<Req>> {
    slot: SlotRef<Slot<S>>,
    number: u32,
    #[pin]
    step: Step<S, Req>,
    started: Instant,
    admission: Option<Admission>,
    /// Dropped because the call was over, not because the caller gave up.
    superseded: bool,
    /// Holds a place under the endpoint's concurrency limit.
    placed: bool,
    span: Span,
}

impl<Req, S> Attempt<Req, S>
where
    S: Service<Req> + Clone,
{
    /// Starts attempt `number` of `kind` on `slot` at `started` (runs the
    /// hook, marks the attempt in flight, opens its span under `call`), and
    /// writes it at `this`, field by field: built as a value and moved into
    /// its future, its small fields would be copied back in wide loads that
    /// wait for the narrow stores (see [`Place`](crate::policy::drive::Place)).
    /// `placed`: it holds a place under the endpoint's concurrency limit,
    /// given back when it ends.
    ///
    /// # Safety
    ///
    /// `this` must be valid for writes and aligned; on return the attempt
    /// there is fully initialized (and not yet pinned).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) unsafe fn init(
        this: *mut Self,
        hook: Option<&Hook<Req>>,
        slot: SlotRef<Slot<S>>,
        mut req: Req,
        number: u32,
        kind: AttemptKind,
        started: Instant,
        cut: Option<Instant>,
        admission: Option<Admission>,
        placed: bool,
        call: &Span,
    ) {
        use std::ptr::addr_of_mut;
        if let Some(hook) = hook {
            let info = AttemptInfo::new(slot.endpoint.addr, number, kind, started, cut);
            hook(&mut req, &info);
        }
        slot.begin();
        // SAFETY: the caller gives a writable, aligned place; every field
        // is written once. The step comes first: the service's clone is
        // the one step that runs user code, and if it panics nothing has
        // been written that would leak. The span is written in each
        // branch, not chosen into a temporary first: copied from one, it
        // is read back in wide loads from narrow stores.
        unsafe {
            addr_of_mut!((*this).step).write(Step::new(slot.service.clone(), req));
            let span = addr_of_mut!((*this).span);
            if call.is_disabled() {
                span.write(Span::none());
            } else {
                span.write(tracing::debug_span!(
                    target: "towline",
                    parent: call,
                    "attempt",
                    endpoint = %slot.endpoint.addr,
                    attempt = number,
                    kind = kind.name(),
                    outcome = tracing::field::Empty,
                ));
            }
            addr_of_mut!((*this).slot).write(slot);
            addr_of_mut!((*this).number).write(number);
            addr_of_mut!((*this).started).write(started);
            addr_of_mut!((*this).admission).write(admission);
            addr_of_mut!((*this).superseded).write(false);
            addr_of_mut!((*this).placed).write(placed);
        }
    }
}

impl<Req, S: Service<Req>> Attempt<Req, S> {
    /// The endpoint's slot.
    pub(crate) fn slot(&self) -> &SlotRef<Slot<S>> {
        &self.slot
    }
}

impl<Req, S> drive::Attempt for Attempt<Req, S>
where
    S: Service<Req> + Send + Sync + 'static,
    S::Response: 'static,
    S::Error: Into<BoxError> + 'static,
{
    type Response = S::Response;

    fn number(&self) -> u32 {
        self.number
    }

    /// Records that the attempt was cut at `at` by its time limit: on the
    /// load it is a latency sample, on the breaker a failure.
    fn cut(self: Pin<&mut Self>, at: Instant) {
        let mut this = self.project();
        if this.step.is_done() {
            return;
        }
        this.step.set(Step::Done);
        this.slot.leave();
        let elapsed = at.saturating_duration_since(*this.started);
        let end = AttemptEnd::new(End::TimedOut, elapsed, at);
        if std::mem::take(this.placed) {
            this.slot.leave_limit(&end);
        }
        this.slot.record(&end, this.admission.take());
        this.span.record("outcome", "timeout");
    }

    fn supersede(self: Pin<&mut Self>) {
        *self.project().superseded = true;
    }
}

impl<Req, S> Future for Attempt<Req, S>
where
    S: Service<Req> + Send + Sync + 'static,
    S::Response: 'static,
    S::Error: Into<BoxError> + 'static,
{
    type Output = Finished<S::Response>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let answer = {
            let _entered = this.span.enter();
            this.step.as_mut().poll_answer(cx)
        };
        let slot = &**this.slot;
        let Poll::Ready(mut result) = answer else {
            return Poll::Pending;
        };
        let at = crate::clock::now();
        let elapsed = at.saturating_duration_since(*this.started);
        let classifier = &slot.state.classifier;
        let outcome = classifier.classify(&result);
        slot.leave();
        let admission = this.admission.take();
        let end = AttemptEnd::new(End::Response(outcome), elapsed, at);
        if std::mem::take(this.placed) {
            slot.leave_limit(&end);
        }
        match &mut result {
            Ok(response) if classifier.defers() => {
                let answered = Answered {
                    elapsed,
                    at,
                    admission: admission.map(Admission::into_raw),
                };
                let sink = LateOutcome(this.slot.clone());
                let report = OutcomeReport::new(sink, answered, outcome);
                classifier
                    .get::<S::Response, S::Error>()
                    .defer(response, report);
            }
            _ => slot.record(&end, admission),
        }
        slot.note_service_error(result.is_err());
        this.span.record("outcome", outcome_name(outcome));
        Poll::Ready(Finished {
            number: *this.number,
            at,
            elapsed,
            ended: Ended::Answered(outcome),
            result: Some(result.map_err(into_error)),
        })
    }
}

#[pinned_drop]
impl<Req, S: Service<Req>> PinnedDrop for Attempt<Req, S> {
    fn drop(self: Pin<&mut Self>) {
        let this = self.project();
        if this.step.is_done() {
            return;
        }
        // Dropped before it ended: the caller gave up, or another attempt
        // answered the call. The time it ran is still a latency sample.
        let at = crate::clock::now();
        this.slot.leave();
        let end = if *this.superseded {
            End::Superseded
        } else {
            End::Cancelled
        };
        let end = AttemptEnd::new(end, at.saturating_duration_since(*this.started), at);
        if std::mem::take(this.placed) {
            this.slot.leave_limit(&end);
        }
        this.slot.record(&end, this.admission.take());
        this.span.record(
            "outcome",
            if *this.superseded {
                "superseded"
            } else {
                "cancelled"
            },
        );
    }
}

/// The outcome's name in spans.
pub(crate) fn outcome_name(outcome: crate::classify::Outcome) -> &'static str {
    use crate::classify::Outcome;
    match outcome {
        Outcome::Success => "success",
        Outcome::Failure { .. } => "failure",
        Outcome::Overloaded { .. } => "overloaded",
    }
}
