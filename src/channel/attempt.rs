//! One attempt on one endpoint: the hook, readiness, the call, its time
//! limit, classification, and the record of how it ended.
//!
//! Every attempt reports its end on its endpoint exactly once: an answer
//! with the classifier's outcome (or later, for a classifier that defers),
//! a cut by its time limit, or — when the attempt is dropped before either,
//! because the caller gave up or another attempt won — a cancellation.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use pin_project::{pin_project, pinned_drop};
use tokio::time::Sleep;
use tower::Service;
use tracing::Span;

use super::info::AttemptInfo;
use super::inner::Inner;
use super::slot::Slot;
use crate::BoxError;
use crate::balance::{AttemptEnd, End};
use crate::classify::{Answered, OutcomeReport, OutcomeSink};
use crate::policy::breaker::Admission;
use crate::policy::call::{AttemptKind, Ended};
use crate::policy::drive::Finished;
use crate::policy::into_error;

/// When an attempt is cut: [`NoCut`] for the bare path (no timer in its
/// future at all), [`Cut`] under a time limit.
pub(crate) trait Cutoff {
    /// The instant, if any.
    fn at(&self) -> Option<Instant>;
    /// Ready with the instant once it has passed (arming a timer lazily).
    fn poll_cut(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Instant>;
}

/// No limit.
pub(crate) struct NoCut;

impl Cutoff for NoCut {
    fn at(&self) -> Option<Instant> {
        None
    }
    fn poll_cut(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Instant> {
        Poll::Pending
    }
}

/// A limit at an instant; its timer is only made when the attempt is first
/// found pending, so an answer that is ready at once never touches it.
#[pin_project]
pub(crate) struct Cut {
    at: Option<Instant>,
    #[pin]
    sleep: Option<Sleep>,
}

impl Cut {
    pub(crate) fn new(at: Option<Instant>) -> Self {
        Cut { at, sleep: None }
    }
}

impl Cutoff for Cut {
    fn at(&self) -> Option<Instant> {
        self.at
    }
    fn poll_cut(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Instant> {
        let mut this = self.project();
        let Some(at) = *this.at else {
            return Poll::Pending;
        };
        if this.sleep.is_none() {
            this.sleep.set(Some(tokio::time::sleep_until(at.into())));
        }
        match this.sleep.as_pin_mut() {
            Some(sleep) => sleep.poll(cx).map(|()| at),
            None => Poll::Pending,
        }
    }
}

#[pin_project(project = StepProj)]
enum Step<S: Service<Req>, Req> {
    Waiting {
        svc: S,
        req: Option<Req>,
    },
    Calling {
        #[pin]
        fut: S::Future,
    },
    Done,
}

/// One attempt in flight (see the [module docs](self)).
#[pin_project(PinnedDrop)]
pub(crate) struct Attempt<'a, Req, S: Service<Req>, C> {
    inner: &'a Inner<Req, S>,
    slot: Arc<Slot<S>>,
    number: u32,
    #[pin]
    step: Step<S, Req>,
    #[pin]
    cut: C,
    started: Instant,
    admission: Option<Admission>,
    span: Span,
}

impl<'a, Req, S, C> Attempt<'a, Req, S, C>
where
    S: Service<Req> + Clone,
    C: Cutoff,
{
    /// Starts attempt `number` of `kind` on `slot` at `started` (runs the
    /// hook, marks the attempt in flight, opens its span under `call`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        inner: &'a Inner<Req, S>,
        slot: Arc<Slot<S>>,
        mut req: Req,
        number: u32,
        kind: AttemptKind,
        started: Instant,
        cut: C,
        admission: Option<Admission>,
        call: &Span,
    ) -> Self {
        if let Some(hook) = &inner.on_attempt {
            let info = AttemptInfo::new(slot.endpoint.addr, number, kind, started, cut.at());
            hook(&mut req, &info);
        }
        let span = if call.is_disabled() {
            Span::none()
        } else {
            tracing::debug_span!(
                target: "towline",
                parent: call,
                "attempt",
                endpoint = %slot.endpoint.addr,
                attempt = number,
                kind = kind.name(),
                outcome = tracing::field::Empty,
            )
        };
        slot.begin();
        Attempt {
            inner,
            step: Step::Waiting {
                svc: slot.service.clone(),
                req: Some(req),
            },
            slot,
            number,
            cut,
            started,
            admission,
            span,
        }
    }
}

impl<Req, S, C> Future for Attempt<'_, Req, S, C>
where
    S: Service<Req> + Send + Sync + 'static,
    S::Response: 'static,
    S::Error: Into<BoxError> + 'static,
    C: Cutoff,
{
    type Output = Finished<S::Response>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let answer = {
            let _entered = this.span.enter();
            loop {
                match this.step.as_mut().project() {
                    StepProj::Waiting { svc, req } => match svc.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {
                            let Some(req) = req.take() else {
                                return Poll::Pending;
                            };
                            let fut = svc.call(req);
                            this.step.set(Step::Calling { fut });
                        }
                        Poll::Ready(Err(e)) => break Some(Err(e)),
                        Poll::Pending => break None,
                    },
                    StepProj::Calling { fut } => match fut.poll(cx) {
                        Poll::Ready(r) => break Some(r),
                        Poll::Pending => break None,
                    },
                    StepProj::Done => return Poll::Pending,
                }
            }
        };
        let slot = &**this.slot;
        if let Some(mut result) = answer {
            this.step.set(Step::Done);
            let at = crate::clock::now();
            let elapsed = at.saturating_duration_since(*this.started);
            let outcome = this.inner.classify.classify(&result);
            slot.leave();
            let admission = this.admission.take();
            match &mut result {
                Ok(response) if this.inner.defers => {
                    let answered = Answered {
                        elapsed,
                        at,
                        admission: admission.map(Admission::into_raw),
                    };
                    let sink: Arc<dyn OutcomeSink> = this.slot.clone();
                    let report = OutcomeReport::new(sink, answered, outcome);
                    this.inner.classify.defer(response, report);
                }
                _ => slot.record(
                    &AttemptEnd::new(End::Response(outcome), elapsed, at),
                    admission,
                ),
            }
            this.inner.note_service_error(slot, result.is_err());
            this.span.record("outcome", outcome_name(outcome));
            return Poll::Ready(Finished {
                number: *this.number,
                at,
                elapsed,
                ended: Ended::Answered(outcome),
                result: Some(result.map_err(into_error)),
            });
        }
        let Poll::Ready(at) = this.cut.poll_cut(cx) else {
            return Poll::Pending;
        };
        this.step.set(Step::Done);
        slot.leave();
        let elapsed = at.saturating_duration_since(*this.started);
        slot.record(
            &AttemptEnd::new(End::TimedOut, elapsed, at),
            this.admission.take(),
        );
        this.span.record("outcome", "timeout");
        Poll::Ready(Finished {
            number: *this.number,
            at,
            elapsed,
            ended: Ended::TimedOut,
            result: None,
        })
    }
}

#[pinned_drop]
impl<Req, S: Service<Req>, C> PinnedDrop for Attempt<'_, Req, S, C> {
    fn drop(self: Pin<&mut Self>) {
        let this = self.project();
        if matches!(*this.step, Step::Done) {
            return;
        }
        // Dropped before it ended: the caller gave up, or another attempt
        // answered the call. The time it ran is still a latency sample.
        let at = crate::clock::now();
        this.slot.leave();
        this.slot.record(
            &AttemptEnd::new(
                End::Cancelled,
                at.saturating_duration_since(*this.started),
                at,
            ),
            this.admission.take(),
        );
        this.span.record("outcome", "cancelled");
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
