//! The standalone retry layer: [`RetryLayer`], its service and future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use arc_swap::ArcSwap;
use pin_project::pin_project;
use tokio::time::Sleep;
use tower::{Layer, Service};

use super::budget::Budget;
use super::metrics::RetryMetrics;
use super::replay::{CloneReplay, Replay};
use super::retry::{RetryDecision, RetrySettings, RetryState, Stop};
use super::shell::Parts;
use super::timeout::{Deadline, Limit, attempt_limit};
use super::{into_error, now};
use crate::classify::{Classify, DefaultClassify, Outcome};
use crate::error::{BoxError, BuildError, Error};
use crate::rng::with_thread_rng;

/// What every service of one layer shares: settings, budget, metrics.
struct Tuning {
    settings: ArcSwap<RetrySettings>,
    budget: Budget,
    metrics: RetryMetrics,
}

/// A tower layer that retries failed calls (see [`super::retry`]).
///
/// Services made by one layer share its settings and its retry budget.
/// `C` classifies results (default [`DefaultClassify`]: every `Err` is
/// retryable); `R` copies requests (default [`CloneReplay`]). A result that
/// is `Ok` is always returned as it is, even when the classifier called it a
/// failure and retries ran out: the classifier steers retries, it does not
/// rewrite answers.
///
/// ```
/// use towline::policy::{RetryLayer, retry::RetrySettings};
/// let layer = RetryLayer::new(RetrySettings::default()).unwrap();
/// let handle = layer.handle();
/// handle.set(RetrySettings::default().with_max_attempts(5)).unwrap();
/// assert_eq!(handle.settings().max_attempts(), 5);
/// ```
#[derive(Clone)]
pub struct RetryLayer<C = DefaultClassify, R = CloneReplay> {
    parts: Parts<Tuning, C, R>,
}

impl RetryLayer {
    /// A retry layer with these settings, the default classifier and
    /// replay by `Clone`. Invalid settings are refused.
    pub fn new(settings: RetrySettings) -> Result<Self, BuildError> {
        settings.validate()?;
        let budget = Budget::new(settings.budget(), now());
        let tuning = Tuning {
            settings: ArcSwap::from_pointee(settings),
            budget,
            metrics: RetryMetrics::register(&[]),
        };
        Ok(RetryLayer {
            parts: Parts::new(tuning, DefaultClassify, CloneReplay),
        })
    }
}

impl<C, R> RetryLayer<C, R> {
    /// The same layer with another classifier.
    pub fn with_classify<C2>(self, classify: C2) -> RetryLayer<C2, R> {
        RetryLayer {
            parts: self.parts.with_classify(classify),
        }
    }

    /// The same layer with another way to copy requests, for example a
    /// function `&Req -> Option<Req>` (see [`super::replay`]).
    pub fn with_replay<R2>(self, replay: R2) -> RetryLayer<C, R2> {
        RetryLayer {
            parts: self.parts.with_replay(replay),
        }
    }

    /// A handle to read and change the settings at runtime.
    pub fn handle(&self) -> RetryHandle {
        RetryHandle {
            tuning: self.parts.tuning.clone(),
        }
    }
}

impl<C, R> fmt::Debug for RetryLayer<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("settings", &*self.parts.tuning.settings.load())
            .finish_non_exhaustive()
    }
}

/// Changes a retry layer's settings at runtime. New calls use the new
/// settings; calls in flight finish with the ones they started with. The
/// budget keeps its balance (its window stays the one it was built with).
#[derive(Clone)]
pub struct RetryHandle {
    tuning: Arc<Tuning>,
}

impl RetryHandle {
    /// The settings new calls use.
    pub fn settings(&self) -> Arc<RetrySettings> {
        self.tuning.settings.load_full()
    }

    /// Replaces the settings; invalid settings are refused and the old ones
    /// stay.
    pub fn set(&self, settings: RetrySettings) -> Result<(), BuildError> {
        settings.validate()?;
        self.tuning.budget.retune(settings.budget());
        self.tuning.settings.store(Arc::new(settings));
        Ok(())
    }
}

impl fmt::Debug for RetryHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryHandle")
            .field("settings", &*self.tuning.settings.load())
            .finish()
    }
}

impl<S, C: Clone, R: Clone> Layer<S> for RetryLayer<C, R> {
    type Service = Retry<S, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            shared: Arc::new(self.parts.clone()),
        }
    }
}

/// The service made by [`RetryLayer`].
pub struct Retry<S, C = DefaultClassify, R = CloneReplay> {
    inner: S,
    shared: Arc<Parts<Tuning, C, R>>,
}

impl<S: Clone, C, R> Clone for Retry<S, C, R> {
    fn clone(&self) -> Self {
        Retry {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, C, R> fmt::Debug for Retry<S, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, Req, C, R> Service<Req> for Retry<S, C, R>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
    R: Replay<Req>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = RetryFuture<S, Req, C, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(into_error)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let settings = self.shared.tuning.settings.load_full();
        let start = now();
        self.shared.tuning.budget.deposit(start);
        let deadline = settings.deadline().map(|d| Deadline::new(start, d));
        // The service that was made ready goes with this call.
        let fresh = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, fresh);
        RetryFuture {
            state: State::Ready,
            timer: None,
            limit: None,
            svc,
            template: Some(req),
            replayable: true,
            retry: RetryState::new(),
            settings,
            deadline,
            last_error: None,
            shared: self.shared.clone(),
        }
    }
}

#[pin_project(project = StateProj)]
enum State<F> {
    /// Waiting for the service to be ready, then sending an attempt.
    Ready,
    /// An attempt is in flight.
    Calling {
        #[pin]
        fut: F,
    },
    /// Pausing before the next attempt.
    Pausing,
}

/// The future of a [`Retry`] call.
#[pin_project]
pub struct RetryFuture<S, Req, C, R>
where
    S: Service<Req>,
{
    #[pin]
    state: State<S::Future>,
    /// The attempt limit while calling, the pause while pausing.
    #[pin]
    timer: Option<Sleep>,
    limit: Option<Limit>,
    svc: S,
    template: Option<Req>,
    replayable: bool,
    retry: RetryState,
    settings: Arc<RetrySettings>,
    deadline: Option<Deadline>,
    last_error: Option<Error>,
    shared: Arc<Parts<Tuning, C, R>>,
}

impl<S, Req, C, R> fmt::Debug for RetryFuture<S, Req, C, R>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryFuture")
            .field("attempts", &self.retry.attempts())
            .finish_non_exhaustive()
    }
}

impl<S, Req, C, R> Future for RetryFuture<S, Req, C, R>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
    R: Replay<Req>,
{
    type Output = Result<S::Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Ready => {
                    if let Err(e) = ready!(this.svc.poll_ready(cx)) {
                        return Poll::Ready(Err(into_error(e)));
                    }
                    let more = this.retry.attempts() + 1 < this.settings.max_attempts();
                    let req = match this.template.take() {
                        Some(original) if more => match this.shared.replay.replay(&original) {
                            Some(copy) => {
                                *this.template = Some(original);
                                copy
                            }
                            None => {
                                *this.replayable = false;
                                original
                            }
                        },
                        Some(original) => original,
                        // Unreachable: a call without a request left made
                        // its last attempt and never comes back here.
                        None => {
                            return Poll::Ready(Err(this
                                .last_error
                                .take()
                                .unwrap_or(Error::NoEndpoints)));
                        }
                    };
                    let limit = attempt_limit(
                        this.settings.attempt_timeout(),
                        this.deadline.as_ref(),
                        now(),
                    );
                    this.timer.set(limit.map(|(d, _)| tokio::time::sleep(d)));
                    *this.limit = limit.map(|(_, l)| l);
                    this.shared.tuning.metrics.attempts.increment(1);
                    let fut = this.svc.call(req);
                    this.state.set(State::Calling { fut });
                }
                StateProj::Calling { fut } => {
                    let (outcome, result) = match fut.poll(cx) {
                        Poll::Ready(r) => (this.shared.classify.classify(&r), Some(r)),
                        Poll::Pending => {
                            let fired = match this.timer.as_mut().as_pin_mut() {
                                Some(t) => t.poll(cx).is_ready(),
                                None => false,
                            };
                            if !fired {
                                return Poll::Pending;
                            }
                            match this.limit {
                                Some(Limit::Deadline(d)) => {
                                    return Poll::Ready(Err(d.error(this.last_error.take())));
                                }
                                // An attempt timeout is a retryable failure.
                                _ => (Outcome::Failure { retryable: true }, None),
                            }
                        }
                    };
                    let replayable = *this.replayable;
                    let tuning = &this.shared.tuning;
                    let decision = with_thread_rng(|rng| {
                        this.retry.next(
                            this.settings,
                            outcome,
                            replayable,
                            now(),
                            this.deadline.as_ref(),
                            &tuning.budget,
                            rng,
                        )
                    });
                    match decision {
                        RetryDecision::Retry { after } => {
                            tuning.metrics.retries.increment(1);
                            *this.last_error = match result {
                                Some(Err(e)) => Some(into_error(e)),
                                Some(Ok(_)) => None,
                                None => this.limit.map(|l| l.error()),
                            };
                            if after.is_zero() {
                                this.timer.set(None);
                                this.state.set(State::Ready);
                            } else {
                                this.timer.set(Some(tokio::time::sleep(after)));
                                this.state.set(State::Pausing);
                            }
                        }
                        RetryDecision::Stop(stop) => {
                            if stop == Stop::BudgetExhausted {
                                tuning.metrics.budget_exhausted.increment(1);
                            }
                            let last = match result {
                                Some(Ok(resp)) => return Poll::Ready(Ok(resp)),
                                Some(Err(e)) => into_error(e),
                                None => this.limit.map_or(Error::NoEndpoints, |l| l.error()),
                            };
                            return Poll::Ready(Err(final_error(
                                stop,
                                last,
                                this.retry.attempts(),
                                this.deadline.as_ref(),
                            )));
                        }
                    }
                }
                StateProj::Pausing => {
                    if let Some(t) = this.timer.as_mut().as_pin_mut() {
                        ready!(t.poll(cx));
                    }
                    this.state.set(State::Ready);
                }
            }
        }
    }
}

/// The error a call ends with when retrying stops after a failure.
pub(crate) fn final_error(
    stop: Stop,
    last: Error,
    attempts: u32,
    deadline: Option<&Deadline>,
) -> Error {
    match stop {
        Stop::AttemptsExhausted if attempts > 1 => Error::RetriesExhausted {
            attempts,
            last: Box::new(last),
        },
        Stop::BudgetExhausted => Error::BudgetExhausted {
            last: Box::new(last),
        },
        Stop::DeadlineTooClose => match deadline {
            Some(d) => d.error(Some(last)),
            None => last,
        },
        _ => last,
    }
}
