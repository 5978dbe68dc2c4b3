//! The standalone hedging layer: [`HedgeLayer`], its service and future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use arc_swap::ArcSwap;
use futures_util::stream::{FuturesUnordered, StreamExt};
use pin_project::pin_project;
use tokio::time::Sleep;
use tower::{Layer, Service};

use super::budget::Budget;
use super::hedge::{HedgeSettings, HedgeState, HedgeStep};
use super::latency::LatencyHistogram;
use super::metrics::HedgeMetrics;
use super::replay::{CloneReplay, Replay};
use super::shell::Parts;
use super::{into_error, now};
use crate::classify::{Classify, DefaultClassify};
use crate::error::{BoxError, BuildError, Error};

/// What every service of one layer shares.
struct Tuning {
    settings: ArcSwap<HedgeSettings>,
    budget: Budget,
    latency: LatencyHistogram,
    metrics: HedgeMetrics,
}

/// A tower layer that hedges slow calls (see [`super::hedge`]).
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
        let tuning = &self.shared.tuning;
        let settings = tuning.settings.load_full();
        let start = now();
        tuning.budget.deposit(start);
        let delay = settings.delay_now(&tuning.latency, start);
        // Keep the original only when a hedge may be sent and it can be
        // copied; otherwise send it as it is, unhedged.
        let (first, template, delay) = match delay.map(|_| self.shared.replay.replay(&req)) {
            Some(Some(copy)) => (copy, Some(req), delay),
            _ => (req, None, None),
        };
        let state = HedgeState::new(delay);
        let timer = state
            .next_at(&settings, start)
            .map(|at| tokio::time::sleep_until(at.into()));
        let spare = template.as_ref().map(|_| self.inner.clone());
        tuning.metrics.attempts.increment(1);
        let primary = self.inner.call(first);
        HedgeFuture {
            primary: Some(primary),
            extras: None,
            timer,
            spare,
            template,
            state,
            start,
            settings,
            last: None,
            shared: self.shared.clone(),
        }
    }
}

/// An extra attempt: waits for its service clone, then calls it.
#[pin_project(project = ExtraProj)]
enum Extra<S: Service<Req>, Req> {
    Waiting {
        svc: S,
        req: Option<Req>,
        start: Instant,
    },
    Calling {
        #[pin]
        fut: S::Future,
        start: Instant,
    },
}

impl<S: Service<Req>, Req> Future for Extra<S, Req> {
    type Output = (Result<S::Response, S::Error>, Instant);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                ExtraProj::Waiting { svc, req, start } => {
                    let start = *start;
                    if let Err(e) = ready!(svc.poll_ready(cx)) {
                        return Poll::Ready((Err(e), start));
                    }
                    let Some(req) = req.take() else {
                        return Poll::Pending;
                    };
                    let fut = svc.call(req);
                    self.set(Extra::Calling { fut, start });
                }
                ExtraProj::Calling { fut, start } => {
                    let start = *start;
                    return fut.poll(cx).map(|r| (r, start));
                }
            }
        }
    }
}

/// The future of a [`Hedge`] call.
#[pin_project]
pub struct HedgeFuture<S, Req, C, R>
where
    S: Service<Req>,
{
    #[pin]
    primary: Option<S::Future>,
    extras: Option<FuturesUnordered<Extra<S, Req>>>,
    #[pin]
    timer: Option<Sleep>,
    spare: Option<S>,
    template: Option<Req>,
    state: HedgeState,
    start: Instant,
    settings: Arc<HedgeSettings>,
    last: Option<Result<S::Response, S::Error>>,
    shared: Arc<Parts<Tuning, C, R>>,
}

impl<S, Req, C, R> fmt::Debug for HedgeFuture<S, Req, C, R>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeFuture")
            .field("hedges_sent", &self.state.sent())
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
        let mut this = self.project();
        let tuning = &this.shared.tuning;
        loop {
            if let Some(fut) = this.primary.as_mut().as_pin_mut()
                && let Poll::Ready(r) = fut.poll(cx)
            {
                this.primary.set(None);
                let outcome = this.shared.classify.classify(&r);
                if outcome.is_success() {
                    let t = now();
                    tuning.latency.record(t - *this.start, t);
                }
                if outcome.is_success() || !outcome.is_retryable() {
                    return Poll::Ready(r.map_err(into_error));
                }
                *this.last = Some(r);
            }
            if let Some(extras) = this.extras.as_mut() {
                while let Poll::Ready(Some((r, started))) = extras.poll_next_unpin(cx) {
                    let outcome = this.shared.classify.classify(&r);
                    if outcome.is_success() {
                        let t = now();
                        tuning.latency.record(t - started, t);
                        tuning.metrics.won.increment(1);
                        if this.primary.is_some() {
                            // The primary loses: it took at least this long.
                            tuning.latency.record(t - *this.start, t);
                        }
                    }
                    if outcome.is_success() || !outcome.is_retryable() {
                        return Poll::Ready(r.map_err(into_error));
                    }
                    *this.last = Some(r);
                }
            }
            if let Some(timer) = this.timer.as_mut().as_pin_mut()
                && timer.poll(cx).is_ready()
            {
                let t = now();
                match this.state.on_due(this.settings, t, &tuning.budget) {
                    HedgeStep::Send => {
                        let last = this.state.next_at(this.settings, *this.start).is_none();
                        let req = match this.template.take() {
                            Some(original) if !last => {
                                let copy = this.shared.replay.replay(&original);
                                *this.template = Some(original);
                                copy
                            }
                            other => other,
                        };
                        if let (Some(req), Some(svc)) = (req, this.spare.as_ref()) {
                            tuning.metrics.attempts.increment(1);
                            tuning.metrics.sent.increment(1);
                            this.extras.get_or_insert_with(FuturesUnordered::new).push(
                                Extra::Waiting {
                                    svc: svc.clone(),
                                    req: Some(req),
                                    start: t,
                                },
                            );
                        }
                    }
                    HedgeStep::BudgetExhausted => tuning.metrics.budget_exhausted.increment(1),
                    HedgeStep::Done => {}
                }
                let next = this.state.next_at(this.settings, *this.start);
                this.timer
                    .set(next.map(|at| tokio::time::sleep_until(at.into())));
                continue;
            }
            let extras_pending = this.extras.as_ref().is_some_and(|e| !e.is_empty());
            if this.primary.is_none() && !extras_pending {
                // Every attempt failed (retryably): answer with the last.
                return match this.last.take() {
                    Some(r) => Poll::Ready(r.map_err(into_error)),
                    None => Poll::Pending,
                };
            }
            return Poll::Pending;
        }
    }
}
