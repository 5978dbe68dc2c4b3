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
/// The breaker is asked in `poll_ready`: while it rejects, the service is
/// ready at once (whether the inner one is or not: an open breaker in front
/// of a stuck connection pool fails calls fast instead of making them
/// wait) and the next call fails with [`Error::CircuitOpen`]; while it
/// admits, the admission is held for the next call (a half-open probe slot
/// included; given back if the service is dropped first) and readiness is
/// the inner service's.
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
            readied: Readied::Nothing,
        }
    }
}

/// The service made by [`CircuitBreakerLayer`].
pub struct Breaker<S, C = DefaultClassify> {
    inner: S,
    breaker: Arc<CircuitBreaker>,
    classify: Arc<C>,
    /// What `poll_ready` decided for the next call.
    readied: Readied,
}

/// The breaker's answer for the next call, taken in `poll_ready`.
enum Readied {
    /// Not asked yet.
    Nothing,
    /// Admitted: the call goes to the inner service once it is ready.
    Admitted(Permit<Arc<CircuitBreaker>>),
    /// Rejected: the call fails fast.
    Rejected,
}

impl<S: Clone, C> Clone for Breaker<S, C> {
    /// A clone of the service, not ready (as tower's services are): its
    /// own `poll_ready` asks the breaker again.
    fn clone(&self) -> Self {
        Breaker {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
            readied: Readied::Nothing,
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
        if let Readied::Nothing = self.readied {
            // No clock read while the breaker admits everything: the call
            // reads it once, as it starts.
            self.readied = match self.breaker.try_acquire_at(now) {
                None => Readied::Rejected,
                Some(a) => Readied::Admitted(Permit::new(self.breaker.clone(), a)),
            };
        }
        if let Readied::Rejected = self.readied {
            return Poll::Ready(Ok(()));
        }
        let ready = self.inner.poll_ready(cx).map_err(into_error);
        if let Poll::Ready(Err(_)) = ready {
            // No call follows a failed readiness: the admission goes back.
            self.readied = Readied::Nothing;
        }
        ready
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let start = now();
        let permit = match std::mem::replace(&mut self.readied, Readied::Nothing) {
            Readied::Admitted(permit) => Some(permit),
            Readied::Rejected => None,
            // Called without `poll_ready` (outside tower's contract): asked
            // now, as the call starts.
            Readied::Nothing => self
                .breaker
                .try_acquire(start)
                .map(|a| Permit::new(self.breaker.clone(), a)),
        };
        match permit {
            None => BreakerFuture {
                state: State::Rejected,
            },
            Some(permit) => BreakerFuture {
                state: State::Running {
                    fut: self.inner.call(req),
                    permit: Some(permit),
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use tower::ServiceExt;

    use super::*;
    use crate::classify::Outcome;
    use crate::policy::breaker::BreakerState;

    /// A service that is ready only while `open` (a connection pool with
    /// nothing free otherwise), or fails readiness while `broken`.
    #[derive(Clone, Default)]
    struct Gate {
        open: Arc<AtomicBool>,
        broken: Arc<AtomicBool>,
        polled: Arc<AtomicUsize>,
        called: Arc<AtomicUsize>,
    }

    impl Service<u32> for Gate {
        type Response = u32;
        type Error = BoxError;
        type Future = std::future::Ready<Result<u32, BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            self.polled.fetch_add(1, Ordering::Relaxed);
            if self.broken.load(Ordering::Relaxed) {
                Poll::Ready(Err("pool closed".into()))
            } else if self.open.load(Ordering::Relaxed) {
                Poll::Ready(Ok(()))
            } else {
                // Woken by nobody: the tests poll by hand.
                Poll::Pending
            }
        }

        fn call(&mut self, req: u32) -> Self::Future {
            self.called.fetch_add(1, Ordering::Relaxed);
            std::future::ready(Ok(req))
        }
    }

    fn poll_ready<S: Service<u32>>(svc: &mut S) -> Poll<Result<(), S::Error>> {
        svc.poll_ready(&mut Context::from_waker(std::task::Waker::noop()))
    }

    /// A breaker half open with one probe slot (on the paused clock).
    async fn half_open() -> Arc<CircuitBreaker> {
        let settings = BreakerSettings::default()
            .with_failure_rate(None)
            .with_consecutive_failures(Some(1))
            .with_probes(1);
        let breaker = Arc::new(CircuitBreaker::new(settings).unwrap());
        let t = now();
        let a = breaker.try_acquire(t).unwrap();
        let failed = Outcome::Failure { retryable: true };
        breaker.record(a, failed, Duration::from_millis(1), t);
        tokio::time::advance(Duration::from_secs(60)).await;
        breaker
    }

    #[tokio::test]
    async fn an_open_breaker_fails_fast_in_front_of_a_service_that_is_not_ready() {
        let gate = Gate::default();
        let layer = CircuitBreakerLayer::new(BreakerSettings::default()).unwrap();
        layer.breaker().force_open();
        let mut svc = layer.layer(gate.clone());
        // Ready at once although the inner service never is.
        assert!(matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))));
        assert!(matches!(svc.call(1).await, Err(Error::CircuitOpen)));
        assert_eq!(gate.polled.load(Ordering::Relaxed), 0);
        assert_eq!(gate.called.load(Ordering::Relaxed), 0);
        // Closed again: readiness is the inner service's.
        layer.breaker().force_close();
        assert!(poll_ready(&mut svc).is_pending());
        gate.open.store(true, Ordering::Relaxed);
        assert_eq!(svc.ready().await.unwrap().call(7).await.unwrap(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_held_for_a_waiting_call_is_given_back_when_it_is_dropped() {
        let breaker = half_open().await;
        let gate = Gate::default();
        let layer = CircuitBreakerLayer::with_breaker(breaker.clone());
        let mut waiting = layer.layer(gate.clone());
        // Holds the one probe while the inner service is not ready.
        assert!(poll_ready(&mut waiting).is_pending());
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        // Another service of the layer is refused at once meanwhile.
        let mut other = layer.layer(gate.clone());
        assert!(matches!(poll_ready(&mut other), Poll::Ready(Ok(()))));
        drop(other);
        drop(waiting);
        assert!(breaker.try_acquire(now()).is_some(), "probe given back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_readiness_gives_the_probe_back() {
        let breaker = half_open().await;
        let gate = Gate::default();
        gate.broken.store(true, Ordering::Relaxed);
        let mut svc = CircuitBreakerLayer::with_breaker(breaker.clone()).layer(gate.clone());
        assert!(matches!(poll_ready(&mut svc), Poll::Ready(Err(_))));
        assert!(breaker.try_acquire(now()).is_some(), "probe given back");
    }
}
