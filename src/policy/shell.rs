//! What the retry and hedging layers share: the parts every service of a
//! layer holds, and their [`Dispatch`]: attempts on clones of the inner
//! service, driven by the one call machine ([`super::drive::Drive`]).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use pin_project::pin_project;
use tower::Service;

use super::call::{AttemptKind, Ended, Ending, NotSent, Refused, Rules, SendAttempt, Tried};
use super::drive::{self, Dispatch, Finished, Place, Step};
use super::into_error;
use super::replay::Replay;
use crate::classify::Classify;
use crate::error::{BoxError, Error};

/// Tuning state `T` shared by every service of one layer (settings,
/// budget, metrics), with the layer's classifier and replay.
pub(crate) struct Parts<T, C, R> {
    pub(crate) tuning: Arc<T>,
    pub(crate) classify: C,
    pub(crate) replay: R,
}

impl<T, C, R> Parts<T, C, R> {
    pub(crate) fn new(tuning: T, classify: C, replay: R) -> Self {
        Parts {
            tuning: Arc::new(tuning),
            classify,
            replay,
        }
    }

    /// The same parts with another classifier.
    pub(crate) fn with_classify<C2>(self, classify: C2) -> Parts<T, C2, R> {
        Parts {
            tuning: self.tuning,
            classify,
            replay: self.replay,
        }
    }

    /// The same parts with another replay.
    pub(crate) fn with_replay<R2>(self, replay: R2) -> Parts<T, C, R2> {
        Parts {
            tuning: self.tuning,
            classify: self.classify,
            replay,
        }
    }
}

impl<T, C: Clone, R: Clone> Clone for Parts<T, C, R> {
    fn clone(&self) -> Self {
        Parts {
            tuning: self.tuning.clone(),
            classify: self.classify.clone(),
            replay: self.replay.clone(),
        }
    }
}

/// What a layer's tuning state tells a call.
pub(crate) trait Tuned: Send + Sync + 'static {
    /// The settings a call reads once, when it starts.
    type Settings: Send + Sync + 'static;

    /// The policies of a call under `settings`.
    fn rules<'a>(&'a self, settings: &'a Self::Settings) -> Rules<'a>;

    /// Notes a sent attempt.
    fn on_sent(&self, kind: AttemptKind);

    /// Notes a refusal by a budget.
    fn on_refused(&self, which: Refused);

    /// Notes a call's end.
    fn on_finish(&self, ending: &Ending);
}

/// A layer's dispatch: each attempt goes to a clone of the inner service
/// (the first to the one its caller made ready).
pub(crate) struct Layered<S, T: Tuned, C, R> {
    /// Taken by the attempt that may be the last; a cell, because sending
    /// happens while the policies are borrowed.
    svc: Cell<Option<S>>,
    parts: Arc<Parts<T, C, R>>,
    settings: Arc<T::Settings>,
}

impl<S, T: Tuned, C, R> Layered<S, T, C, R> {
    pub(crate) fn new(svc: S, parts: Arc<Parts<T, C, R>>, settings: Arc<T::Settings>) -> Self {
        Layered {
            svc: Cell::new(Some(svc)),
            parts,
            settings,
        }
    }
}

impl<S, Req, T, C, R> Dispatch<Req> for Layered<S, T, C, R>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    T: Tuned,
    C: Classify<S::Response, S::Error>,
    R: Replay<Req>,
{
    type Response = S::Response;
    type Attempt = Attempt<S, Req, Arc<Parts<T, C, R>>>;

    fn rules(&self) -> Rules<'_> {
        self.parts.tuning.rules(&self.settings)
    }

    fn send(
        &self,
        _tried: &Tried,
        send: &SendAttempt,
        req: Req,
        now: Instant,
        place: Pin<&mut Place<Self::Attempt>>,
    ) -> Result<Option<usize>, NotSent> {
        let svc = self.svc.take().ok_or(NotSent::NoEndpoint)?;
        if !send.last {
            // Keep a clone for the attempts that may follow.
            self.svc.set(Some(svc.clone()));
        }
        place.put(Attempt {
            number: send.number,
            started: now,
            step: Step::new(svc, req),
            classify: self.parts.clone(),
        });
        Ok(None)
    }

    fn replay(&self, req: &Req) -> Option<Req> {
        self.parts.replay.replay(req)
    }

    fn no_endpoint(&self) -> Error {
        // Unreachable: a layer always has its inner service to send to.
        Error::inner("no service to send the request to")
    }

    fn on_sent(&self, kind: AttemptKind) {
        self.parts.tuning.on_sent(kind);
    }

    fn on_refused(&self, which: Refused) {
        self.parts.tuning.on_refused(which);
    }

    fn on_finish(&self, ending: &Ending, _now: Instant, _took: Option<std::time::Duration>) {
        self.parts.tuning.on_finish(ending);
    }
}

/// Gives an attempt its classifier.
pub(crate) trait HasClassify<Resp, E> {
    fn outcome(&self, result: &Result<Resp, E>) -> crate::classify::Outcome;
}

impl<T, C: Classify<Resp, E>, R, Resp, E> HasClassify<Resp, E> for Arc<Parts<T, C, R>> {
    fn outcome(&self, result: &Result<Resp, E>) -> crate::classify::Outcome {
        self.classify.classify(result)
    }
}

/// One attempt of a layer's call: wait for the service, call it, classify
/// the result. The driver cuts it when its time is up.
#[pin_project]
pub(crate) struct Attempt<S: Service<Req>, Req, K> {
    number: u32,
    started: Instant,
    #[pin]
    step: Step<S, Req>,
    classify: K,
}

impl<S, Req, K> drive::Attempt for Attempt<S, Req, K>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: HasClassify<S::Response, S::Error>,
{
    type Response = S::Response;

    fn number(&self) -> u32 {
        self.number
    }

    fn cut(self: Pin<&mut Self>, _at: Instant) {}
}

impl<S, Req, K> Future for Attempt<S, Req, K>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: HasClassify<S::Response, S::Error>,
{
    type Output = Finished<S::Response>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.step.poll_answer(cx));
        let outcome = this.classify.outcome(&result);
        let at = crate::clock::now();
        Poll::Ready(Finished {
            number: *this.number,
            at,
            elapsed: at.saturating_duration_since(*this.started),
            ended: Ended::Answered(outcome),
            result: Some(result.map_err(into_error)),
        })
    }
}
