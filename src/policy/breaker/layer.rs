//! The standalone circuit-breaker layer.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pin_project::pin_project;
use tower::{Layer, Service};

use super::{Admission, BreakerSettings, CircuitBreaker, Transition};
use crate::classify::{Classify, DefaultClassify, Outcome};
use crate::error::{BoxError, BuildError, Error};
use crate::policy::{into_error, now};

/// A tower layer that fails fast with [`Error::CircuitOpen`] while its
/// breaker rejects calls, without calling the inner service (see
/// [`super`]). All services made by one layer share one breaker; results
/// are judged by `C` (default [`DefaultClassify`]).
///
/// ```
/// use towline::policy::{CircuitBreakerLayer, breaker::{BreakerSettings, BreakerState}};
/// let layer = CircuitBreakerLayer::new(BreakerSettings::default()).unwrap();
/// let breaker = layer.breaker();
/// breaker.force_open();
/// assert_eq!(breaker.state(), BreakerState::ForcedOpen);
/// ```
#[derive(Clone)]
pub struct CircuitBreakerLayer<C = DefaultClassify> {
    breaker: Arc<CircuitBreaker>,
    classify: Arc<C>,
}

impl CircuitBreakerLayer {
    /// A layer with a new breaker; invalid settings are refused.
    pub fn new(settings: BreakerSettings) -> Result<Self, BuildError> {
        Ok(Self::with_breaker(Arc::new(CircuitBreaker::new(settings)?)))
    }

    /// A layer around an existing breaker.
    pub fn with_breaker(breaker: Arc<CircuitBreaker>) -> Self {
        CircuitBreakerLayer {
            breaker,
            classify: Arc::new(DefaultClassify),
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// The same layer with another classifier.
    pub fn with_classify<C2>(self, classify: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classify: Arc::new(classify),
        }
    }

    /// The breaker: to subscribe to it, force it or retune it.
    pub fn breaker(&self) -> Arc<CircuitBreaker> {
        self.breaker.clone()
    }
}

impl<C> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breaker", &self.breaker)
            .finish()
    }
}

impl<S, C> Layer<S> for CircuitBreakerLayer<C> {
    type Service = Breaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Breaker {
            inner,
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
        }
    }
}

/// The service made by [`CircuitBreakerLayer`].
pub struct Breaker<S, C = DefaultClassify> {
    inner: S,
    breaker: Arc<CircuitBreaker>,
    classify: Arc<C>,
}

impl<S: Clone, C> Clone for Breaker<S, C> {
    fn clone(&self) -> Self {
        Breaker {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Breaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .finish()
    }
}

impl<S, Req, C> Service<Req> for Breaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = BreakerFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(into_error)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let start = now();
        match self.breaker.try_acquire(start) {
            None => BreakerFuture {
                state: State::Rejected,
            },
            Some(admission) => BreakerFuture {
                state: State::Running {
                    fut: self.inner.call(req),
                    permit: Some(Permit::new(self.breaker.clone(), admission)),
                    start,
                    classify: self.classify.clone(),
                },
            },
        }
    }
}

/// An admission that is given back if its call is abandoned; `B` is how
/// the breaker is held (an `Arc` in the layer, a reference in the channel).
pub(crate) struct Permit<B: Deref<Target = CircuitBreaker>> {
    breaker: B,
    admission: Option<Admission>,
}

impl<B: Deref<Target = CircuitBreaker>> Permit<B> {
    pub(crate) fn new(breaker: B, admission: Admission) -> Self {
        Permit {
            breaker,
            admission: Some(admission),
        }
    }

    /// Reports the call's result; returns the state change it caused.
    pub(crate) fn finish(
        mut self,
        outcome: Outcome,
        elapsed: Duration,
        now: Instant,
    ) -> Option<Transition> {
        let admission = self.admission.take()?;
        self.breaker.record(admission, outcome, elapsed, now)
    }
}

impl<B: Deref<Target = CircuitBreaker>> Drop for Permit<B> {
    fn drop(&mut self) {
        if let Some(a) = self.admission.take() {
            self.breaker.release(a);
        }
    }
}

/// The future of a [`Breaker`] call.
#[pin_project]
pub struct BreakerFuture<F, C> {
    #[pin]
    state: State<F, C>,
}

#[pin_project(project = StateProj)]
enum State<F, C> {
    /// The breaker rejected the call.
    Rejected,
    /// The call is in flight.
    Running {
        #[pin]
        fut: F,
        permit: Option<Permit<Arc<CircuitBreaker>>>,
        start: Instant,
        classify: Arc<C>,
    },
}

impl<F, C> fmt::Debug for BreakerFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rejected = matches!(self.state, State::Rejected);
        f.debug_struct("BreakerFuture")
            .field("rejected", &rejected)
            .finish()
    }
}

impl<F, C, T, E> Future for BreakerFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Rejected => Poll::Ready(Err(Error::CircuitOpen)),
            StateProj::Running {
                fut,
                permit,
                start,
                classify,
            } => {
                let r = std::task::ready!(fut.poll(cx));
                if let Some(permit) = permit.take() {
                    let t = now();
                    permit.finish(
                        classify.classify(&r),
                        t.saturating_duration_since(*start),
                        t,
                    );
                }
                Poll::Ready(r.map_err(into_error))
            }
        }
    }
}
