//! The standalone layer: [`AdaptiveLimitLayer`], its service and future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use pin_project::pin_project;
use tower::{Layer, Service};

use super::LimitSettings;
use super::limiter::{Admission, LimitHandle, Limiter, Permit, teaches};
use crate::balance::End;
use crate::classify::{Classify, DefaultClassify};
use crate::error::{BoxError, BuildError, Error};
use crate::policy::{into_error, now};

/// A tower layer that caps calls in flight with an adaptive limit (see the
/// [module docs](super)). Calls over the limit fail with
/// [`Error::Overloaded`] without reaching the inner service, at once or
/// after a bounded wait. All services made by one layer share one limit;
/// results are judged by `C` (default [`DefaultClassify`]: only successes
/// are latency samples, so use a classifier that says
/// [`Outcome::Overloaded`](crate::classify::Outcome::Overloaded) for your
/// protocol's overload answers).
///
/// A place is taken in `poll_ready` (waiting there when queueing), held
/// until the call's future ends or is dropped. A service that was made
/// ready and is dropped without a call gives its place back. A refusal is
/// decided in `poll_ready` too (which then reports ready, as tower's
/// `LoadShed` does) and holds for the next call.
#[derive(Clone)]
pub struct AdaptiveLimitLayer<C = DefaultClassify> {
    limiter: Arc<Limiter>,
    classify: Arc<C>,
}

impl AdaptiveLimitLayer {
    /// A layer with a new limiter; invalid settings are refused.
    pub fn new(settings: LimitSettings) -> Result<Self, BuildError> {
        Ok(AdaptiveLimitLayer {
            limiter: Arc::new(Limiter::new(&settings)?),
            classify: Arc::new(DefaultClassify),
        })
    }
}

impl<C> AdaptiveLimitLayer<C> {
    /// The same layer with another classifier.
    pub fn with_classify<C2>(self, classify: C2) -> AdaptiveLimitLayer<C2> {
        AdaptiveLimitLayer {
            limiter: self.limiter,
            classify: Arc::new(classify),
        }
    }

    /// A view of the limiter's state.
    pub fn handle(&self) -> LimitHandle {
        LimitHandle {
            limiter: self.limiter.clone(),
        }
    }
}

impl<C> fmt::Debug for AdaptiveLimitLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimitLayer")
            .field("state", &self.handle())
            .finish()
    }
}

impl<S, C> Layer<S> for AdaptiveLimitLayer<C> {
    type Service = AdaptiveLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveLimit {
            inner,
            limiter: self.limiter.clone(),
            classify: self.classify.clone(),
            state: Ready::Idle,
        }
    }
}

/// The service made by [`AdaptiveLimitLayer`].
pub struct AdaptiveLimit<S, C = DefaultClassify> {
    inner: S,
    limiter: Arc<Limiter>,
    classify: Arc<C>,
    state: Ready,
}

type Waiting = Pin<Box<dyn Future<Output = Option<Permit<Arc<Limiter>>>> + Send>>;

/// Where this service stands with the limiter before its next call.
enum Ready {
    Idle,
    Waiting(Waiting),
    Admitted(Permit<Arc<Limiter>>),
    Refused,
}

impl<S: Clone, C> Clone for AdaptiveLimit<S, C> {
    /// A clone shares the limit but not the place this one may hold.
    fn clone(&self) -> Self {
        AdaptiveLimit {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            classify: self.classify.clone(),
            state: Ready::Idle,
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for AdaptiveLimit<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, Req, C> Service<Req> for AdaptiveLimit<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = AdaptiveLimitFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            self.state = match &mut self.state {
                Ready::Idle => match Limiter::admit(&self.limiter) {
                    Admission::Now(permit) => Ready::Admitted(permit),
                    Admission::Wait => Ready::Waiting(Box::pin(self.limiter.clone().wait())),
                    Admission::Refused => Ready::Refused,
                },
                Ready::Waiting(wait) => match wait.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(permit)) => Ready::Admitted(permit),
                    Poll::Ready(None) => Ready::Refused,
                },
                // The call will fail without the inner service.
                Ready::Refused => return Poll::Ready(Ok(())),
                Ready::Admitted(_) => return self.inner.poll_ready(cx).map_err(into_error),
            };
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let permit = match std::mem::replace(&mut self.state, Ready::Idle) {
            Ready::Admitted(permit) => Some(permit),
            Ready::Refused => None,
            // Called without `poll_ready`: admit now or refuse, never wait.
            Ready::Idle | Ready::Waiting(_) => match Limiter::admit(&self.limiter) {
                Admission::Now(permit) => Some(permit),
                // No waiting here: a queued admission is a refusal, counted.
                Admission::Wait => {
                    self.limiter.refuse();
                    None
                }
                Admission::Refused => None,
            },
        };
        let state = match permit {
            Some(permit) => State::Running {
                fut: self.inner.call(req),
                permit: Some(permit),
                // A fixed limit learns nothing: no clock to read.
                start: self.limiter.learns().then(now),
                classify: self.classify.clone(),
            },
            None => State::Refused,
        };
        AdaptiveLimitFuture { state }
    }
}

/// The future of an [`AdaptiveLimit`] call.
#[pin_project]
pub struct AdaptiveLimitFuture<F, C> {
    #[pin]
    state: State<F, C>,
}

#[pin_project(project = StateProj)]
enum State<F, C> {
    Refused,
    Running {
        #[pin]
        fut: F,
        permit: Option<Permit<Arc<Limiter>>>,
        start: Option<Instant>,
        classify: Arc<C>,
    },
}

impl<F, C> fmt::Debug for AdaptiveLimitFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let refused = matches!(self.state, State::Refused);
        f.debug_struct("AdaptiveLimitFuture")
            .field("refused", &refused)
            .finish()
    }
}

impl<F, C, T, E> Future for AdaptiveLimitFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Refused => Poll::Ready(Err(Error::Overloaded)),
            StateProj::Running {
                fut,
                permit,
                start,
                classify,
            } => {
                let result = std::task::ready!(fut.poll(cx));
                let outcome = classify.classify(&result);
                let result = result.map_err(into_error);
                if let Some(permit) = permit.take() {
                    let end = match &result {
                        Err(e) if e.is_timeout() => End::TimedOut,
                        _ => End::Response(outcome),
                    };
                    match (teaches(end), *start) {
                        (Some(dropped), Some(start)) => {
                            let t = now();
                            permit.finish(dropped, t.saturating_duration_since(start), t);
                        }
                        _ => drop(permit),
                    }
                }
                Poll::Ready(result)
            }
        }
    }
}
