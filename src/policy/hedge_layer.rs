//! The standalone hedging layer: [`HedgeLayer`], its service and future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use pin_project::pin_project;
use tower::{Layer, Service};

use super::budget::Budget;
use super::call::{AttemptKind, Ending, Hedging, Refused, Rules};
use super::drive::Drive;
use super::hedge::HedgeSettings;
use super::latency::LatencyHistogram;
use super::metrics::HedgeMetrics;
use super::replay::{CloneReplay, Replay};
use super::shell::{Layered, Parts, Tuned};
use super::{into_error, now};
use crate::classify::{Classify, DefaultClassify};
use crate::error::{BoxError, BuildError, Error};

/// What every service of one layer shares.
pub(crate) struct Tuning {
    settings: ArcSwap<HedgeSettings>,
    budget: Budget,
    latency: LatencyHistogram,
    metrics: HedgeMetrics,
}

impl Tuned for Tuning {
    type Settings = HedgeSettings;

    fn rules<'a>(&'a self, settings: &'a HedgeSettings) -> Rules<'a> {
        Rules {
            hedge: Some(Hedging {
                settings,
                budget: &self.budget,
                latency: &self.latency,
            }),
            ..Rules::default()
        }
    }

    fn on_sent(&self, kind: AttemptKind) {
        self.metrics.attempts.increment(1);
        if kind == AttemptKind::Hedge {
            self.metrics.sent.increment(1);
        }
    }

    fn on_refused(&self, which: Refused) {
        if which == Refused::Hedge {
            self.metrics.budget_exhausted.increment(1);
        }
    }

    fn on_finish(&self, ending: &Ending) {
        if ending.answered_by == Some(AttemptKind::Hedge) {
            self.metrics.won.increment(1);
        }
    }
}

/// A tower layer that hedges slow calls (see [`super::hedge`]).
///
/// Calls run the same machine as the channel's ([`super::call`]), so the
/// delay and the latency samples that feed a percentile delay are the
/// channel's too.
///
/// Extra attempts go to clones of the inner service (put a balancer below
/// to spread them; the channel's own hedging picks endpoints not yet
/// tried). Services made by one layer share the settings, the hedge budget
/// and the latency window. `C` classifies results (default
/// [`DefaultClassify`]), `R` copies requests (default [`CloneReplay`]); a
/// request that cannot be copied is sent once, unhedged.
///
/// ```
/// use std::time::Duration;
/// use towline::policy::{HedgeLayer, hedge::{HedgeDelay, HedgeSettings}};
/// let layer = HedgeLayer::new(
///     HedgeSettings::default().with_delay(HedgeDelay::Fixed(Duration::from_millis(30))),
/// ).unwrap();
/// assert_eq!(layer.handle().settings().max_extra(), 1);
/// ```
#[derive(Clone)]
pub struct HedgeLayer<C = DefaultClassify, R = CloneReplay> {
    parts: Parts<Tuning, C, R>,
}

impl HedgeLayer {
    /// A hedging layer with these settings, the default classifier and
    /// replay by `Clone`. Invalid settings are refused.
    pub fn new(settings: HedgeSettings) -> Result<Self, BuildError> {
        settings.validate()?;
        let start = now();
        let tuning = Tuning {
            budget: Budget::new(settings.budget(), start),
            latency: LatencyHistogram::new(settings.latency(), start),
            settings: ArcSwap::from_pointee(settings),
            metrics: HedgeMetrics::register(&[]),
        };
        Ok(HedgeLayer {
            parts: Parts::new(tuning, DefaultClassify, CloneReplay),
        })
    }
}

impl<C, R> HedgeLayer<C, R> {
    /// The same layer with another classifier.
    pub fn with_classify<C2>(self, classify: C2) -> HedgeLayer<C2, R> {
        HedgeLayer {
            parts: self.parts.with_classify(classify),
        }
    }

    /// The same layer with another way to copy requests.
    pub fn with_replay<R2>(self, replay: R2) -> HedgeLayer<C, R2> {
        HedgeLayer {
            parts: self.parts.with_replay(replay),
        }
    }

    /// A handle to read and change the settings at runtime.
    pub fn handle(&self) -> HedgeHandle {
        HedgeHandle {
            tuning: self.parts.tuning.clone(),
        }
    }
}

impl<C, R> fmt::Debug for HedgeLayer<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayer")
            .field("settings", &*self.parts.tuning.settings.load())
            .finish_non_exhaustive()
    }
}

/// Changes a hedging layer's settings at runtime; the budget balance and
/// the latency window are kept (their window lengths stay as built).
#[derive(Clone)]
pub struct HedgeHandle {
    tuning: Arc<Tuning>,
}

impl HedgeHandle {
    /// The settings new calls use.
    pub fn settings(&self) -> Arc<HedgeSettings> {
        self.tuning.settings.load_full()
    }

    /// Replaces the settings; invalid settings are refused.
    pub fn set(&self, settings: HedgeSettings) -> Result<(), BuildError> {
        settings.validate()?;
        self.tuning.budget.retune(settings.budget());
        self.tuning.settings.store(Arc::new(settings));
        Ok(())
    }

    /// The latency window the percentile delay is read from.
    pub fn latency(&self) -> &LatencyHistogram {
        &self.tuning.latency
    }
}

impl fmt::Debug for HedgeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeHandle")
            .field("settings", &*self.tuning.settings.load())
            .finish()
    }
}

impl<S, C: Clone, R: Clone> Layer<S> for HedgeLayer<C, R> {
    type Service = Hedge<S, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Hedge {
            inner,
            shared: Arc::new(self.parts.clone()),
        }
    }
}

/// The service made by [`HedgeLayer`].
pub struct Hedge<S, C = DefaultClassify, R = CloneReplay> {
    inner: S,
    shared: Arc<Parts<Tuning, C, R>>,
}

impl<S: Clone, C, R> Clone for Hedge<S, C, R> {
    fn clone(&self) -> Self {
        Hedge {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, C, R> fmt::Debug for Hedge<S, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, Req, C, R> Service<Req> for Hedge<S, C, R>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
    R: Replay<Req>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = HedgeFuture<S, Req, C, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(into_error)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let settings = self.shared.tuning.settings.load_full();
        // The service that was made ready goes with this call.
        let fresh = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, fresh);
        let dispatch = Layered::new(svc, self.shared.clone(), settings);
        HedgeFuture {
            drive: {
                let start = now();
                Drive::new(dispatch, req, start, start, false)
            },
        }
    }
}

/// The future of a [`Hedge`] call.
#[pin_project]
pub struct HedgeFuture<S, Req, C, R>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
    R: Replay<Req>,
{
    #[pin]
    drive: Drive<Layered<S, Tuning, C, R>, Req>,
}

impl<S, Req, C, R> fmt::Debug for HedgeFuture<S, Req, C, R>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
    R: Replay<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeFuture")
            .field("attempts", &self.drive.attempts_sent())
            .finish_non_exhaustive()
    }
}

impl<S, Req, C, R> Future for HedgeFuture<S, Req, C, R>
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
