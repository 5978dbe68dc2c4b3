//! One attempt as the driver sees it: how it steps from readiness to its
//! answer, and how it reports its end.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use pin_project::pin_project;
use tower::Service;

use crate::error::Error;
use crate::policy::call::Ended;

/// How one attempt ended, as an attempt future reports it.
pub(crate) struct Finished<T> {
    /// The attempt's number in the call.
    pub(crate) number: u32,
    /// When it ended.
    pub(crate) at: Instant,
    /// How long it ran.
    pub(crate) elapsed: std::time::Duration,
    /// How: answered (with the classifier's outcome) or timed out.
    pub(crate) ended: Ended,
    /// The answer; `None` when it timed out.
    pub(crate) result: Option<Result<T, Error>>,
}

/// Where one attempt is: waiting for its service to be ready, called, or
/// over. Both kinds of attempt (on a channel's endpoint, on a layer's inner
/// service) step through it the same way.
#[pin_project(project = StepProj)]
pub(crate) enum Step<S: Service<Req>, Req> {
    /// Waiting for the service to be ready.
    Waiting { svc: S, req: Option<Req> },
    /// Called.
    Calling {
        #[pin]
        fut: S::Future,
    },
    /// Answered, cut or dropped.
    Done,
}

impl<S: Service<Req>, Req> Step<S, Req> {
    /// A step waiting for `svc` to take `req`.
    pub(crate) fn new(svc: S, req: Req) -> Self {
        Step::Waiting {
            svc,
            req: Some(req),
        }
    }

    /// Advances the attempt: the service's answer once it has one (the step
    /// is then [`Step::Done`]); pending while waiting or after it is done.
    pub(crate) fn poll_answer(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<S::Response, S::Error>> {
        loop {
            match self.as_mut().project() {
                StepProj::Waiting { svc, req } => match svc.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        let Some(req) = req.take() else {
                            return Poll::Pending;
                        };
                        let fut = svc.call(req);
                        self.set(Step::Calling { fut });
                    }
                    Poll::Ready(Err(e)) => {
                        self.set(Step::Done);
                        return Poll::Ready(Err(e));
                    }
                    Poll::Pending => return Poll::Pending,
                },
                StepProj::Calling { fut } => {
                    let answer = std::task::ready!(fut.poll(cx));
                    self.set(Step::Done);
                    return Poll::Ready(answer);
                }
                StepProj::Done => return Poll::Pending,
            }
        }
    }

    /// True once the attempt was answered, cut or dropped.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Step::Done)
    }
}

/// One attempt in flight, as the driver holds it.
pub(crate) trait Attempt: Future<Output = Finished<Self::Response>> {
    /// The answer type.
    type Response;

    /// The attempt's number in its call.
    fn number(&self) -> u32;

    /// The attempt reached its cut at `at`: record that it timed out (it is
    /// dropped next).
    fn cut(self: Pin<&mut Self>, at: Instant);

    /// The call is over without this attempt's answer (another attempt
    /// answered it): it is dropped next, and must not count as given up on
    /// by the caller. Default: nothing to record.
    fn supersede(self: Pin<&mut Self>) {}
}
