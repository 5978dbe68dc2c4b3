//! The standalone retry layer: [`RetryLayer`], its service and future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use pin_project::pin_project;
use tower::{Layer, Service};

use super::budget::Budget;
use super::call::{AttemptKind, Ending, Refused, Retrying, Rules};
use super::drive::Drive;
use super::metrics::RetryMetrics;
use super::replay::{CloneReplay, Replay};
use super::retry::RetrySettings;
use super::shell::{Layered, Parts, Tuned};
use super::{into_error, now};
use crate::classify::{Classify, DefaultClassify};
use crate::error::{BoxError, BuildError, Error};

/// What every service of one layer shares: settings, budget, metrics.
pub(crate) struct Tuning {
    settings: ArcSwap<RetrySettings>,
    budget: Budget,
    metrics: RetryMetrics,
}

impl Tuned for Tuning {
    type Settings = RetrySettings;

    fn rules<'a>(&'a self, settings: &'a RetrySettings) -> Rules<'a> {
        Rules {
            timeout: settings.attempt_timeout(),
            deadline: settings.deadline(),
            retry: Some(Retrying {
                settings,
                budget: &self.budget,
            }),
            hedge: None,
        }
    }

    fn on_sent(&self, kind: AttemptKind) {
        self.metrics.attempts.increment(1);
        if kind == AttemptKind::Retry {
            self.metrics.retries.increment(1);
        }
    }

    fn on_refused(&self, which: Refused) {
        if which == Refused::Retry {
            self.metrics.budget_exhausted.increment(1);
        }
    }

    fn on_finish(&self, _ending: &Ending) {}
}

/// A tower layer that retries failed calls (see [`super::retry`]).
///
/// Calls run the same machine as the channel's ([`super::call`]): the
/// attempt timeout and deadline of the settings, the retry budget, and the
/// error that says why retrying stopped.
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
        // The service that was made ready goes with this call.
        let fresh = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, fresh);
        let dispatch = Layered::new(svc, self.shared.clone(), settings);
        RetryFuture {
            drive: {
                let start = now();
                Drive::new(dispatch, req, start, start, false)
            },
        }
    }
}

/// The future of a [`Retry`] call.
#[pin_project]
pub struct RetryFuture<S, Req, C, R>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
    R: Replay<Req>,
{
    #[pin]
    drive: Drive<Layered<S, Tuning, C, R>, Req>,
}

impl<S, Req, C, R> fmt::Debug for RetryFuture<S, Req, C, R>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
    R: Replay<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryFuture")
            .field("attempts", &self.drive.attempts_sent())
            .finish_non_exhaustive()
    }
}

impl<S, Req, C, R> Future for RetryFuture<S, Req, C, R>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
    R: Replay<Req>,
{
    type Output = Result<S::Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().drive.poll(cx)
    }
}
