//! The state a channel's calls share beyond the endpoint table: settings,
//! budgets, the latency window, metric handles, the balancer that learns
//! from attempts, and ejection bookkeeping.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use arc_swap::ArcSwap;
use metrics::Gauge;
use parking_lot::Mutex;

use super::ejection::{Health, Plan, plan};
use super::settings::ChannelPolicy;
use super::shared::SetShared;
use crate::balance::Balancer;
use crate::classify::{Classify, DefaultClassify, Outcome};
use crate::discover::RefreshHint;
use crate::error::BuildError;
use crate::metrics::ChannelMetrics;
use crate::policy::breaker::CircuitBreaker;
use crate::policy::budget::Budget;
use crate::policy::latency::LatencyHistogram;
use crate::policy::limit::{LimitSettings, Limiter, REJECTED_METRIC};
use crate::policy::metrics::{HedgeMetrics, RetryMetrics, THROTTLED};
use crate::policy::throttle::SharedThrottle;

/// `towline_ejected_endpoints`: endpoints ejected from picks now.
pub const EJECTED_ENDPOINTS: &str = "towline_ejected_endpoints";

/// What ejection and tuning need from the endpoint table, whatever its
/// service type.
pub(crate) trait Endpoints: Send + Sync {
    /// Calls `f` with each current endpoint's breaker.
    fn each_breaker(&self, f: &mut dyn FnMut(SocketAddr, &CircuitBreaker));
    /// Calls `f` with each current endpoint's concurrency limiter.
    fn each_limiter(&self, f: &mut dyn FnMut(SocketAddr, &Arc<Limiter>));
    /// Each current endpoint's health as the plan sees it, breakers on or
    /// off as `breakers` says.
    fn health(&self, breakers: bool) -> Vec<Health>;
    /// Applies a plan computed from [`health`](Self::health) (the set does
    /// not change in between: both run under the ejection lock, as does
    /// publishing).
    fn apply(&self, plan: &Plan);
    /// True when every current endpoint's last attempt failed outright.
    fn all_erroring(&self) -> bool;
}

/// The channel's classifier, its types erased so that the shared state
/// (which names no request or response type) can own it. An attempt
/// reaches it through its endpoint's slot: a call in flight then holds a
/// reference on that slot only, not on the channel.
pub(crate) struct Classifier {
    /// A `Box<dyn Classify<Resp, E>>`; none for [`DefaultClassify`],
    /// which is then called directly rather than found and called
    /// through two virtual calls.
    any: Option<Box<dyn Any + Send + Sync>>,
    defers: bool,
}

impl Classifier {
    /// The channel's own classifier.
    pub(crate) fn new<Resp: 'static, E: 'static>(classify: Box<dyn Classify<Resp, E>>) -> Self {
        Classifier {
            defers: classify.defers(),
            any: Some(Box::new(classify)),
        }
    }

    /// [`DefaultClassify`], the classifier of a channel that sets none.
    pub(crate) fn default_one() -> Self {
        Classifier {
            any: None,
            defers: false,
        }
    }

    /// The classifier for results `Result<Resp, E>`: the channel's (a
    /// channel's attempts all have the types it was built with), else the
    /// default.
    #[inline]
    pub(crate) fn get<Resp: 'static, E: 'static>(&self) -> &dyn Classify<Resp, E> {
        match self
            .any
            .as_ref()
            .and_then(|any| any.downcast_ref::<Box<dyn Classify<Resp, E>>>())
        {
            Some(classify) => &**classify,
            None => &DefaultClassify,
        }
    }

    /// The outcome of `result` by [`get`](Self::get)'s classifier.
    #[inline]
    pub(crate) fn classify<Resp: 'static, E: 'static>(&self, result: &Result<Resp, E>) -> Outcome {
        match &self.any {
            None => DefaultClassify.classify(result),
            Some(_) => self.get::<Resp, E>().classify(result),
        }
    }

    /// The classifier defers outcomes (asked once, when it was set).
    #[inline]
    pub(crate) fn defers(&self) -> bool {
        self.defers
    }
}

/// State shared by a channel's clones, its slots and its discovery task.
pub(crate) struct ChannelState {
    pub(crate) name: Arc<str>,
    pub(crate) settings: ArcSwap<ChannelPolicy>,
    /// Bumped on every change of `settings`, so that each channel clone
    /// can keep its own copy and check it with one load.
    pub(crate) version: AtomicU64,
    pub(crate) retry_budget: Budget,
    pub(crate) hedge_budget: Budget,
    pub(crate) latency: LatencyHistogram,
    /// Adaptive throttling's counts (made whether or not it is on, so that
    /// it can be turned on at runtime; its window is the build-time
    /// settings' or the default's).
    pub(crate) throttle: SharedThrottle,
    /// Whether throttling is on in the current settings: attempt ends are
    /// counted only then.
    pub(crate) throttling: AtomicBool,
    /// `towline_throttled_total`.
    pub(crate) throttled: metrics::Counter,
    pub(crate) retry_metrics: RetryMetrics,
    pub(crate) hedge_metrics: HedgeMetrics,
    pub(crate) metrics: ChannelMetrics,
    /// How attempts' results are classified (set by the builder).
    pub(crate) classifier: Classifier,
    /// The balancer as configured: it records attempt ends on loads (each
    /// snapshot has its own rebuilt copy for picks).
    pub(crate) balancer: Arc<dyn Balancer>,
    /// The slow-start ramps and in-flight total every snapshot shares.
    pub(crate) shared: Arc<SetShared>,
    /// Whether breakers exist (fixed at build).
    breakers: bool,
    /// Whether requests can be copied (fixed at build).
    replayable: bool,
    /// The channel's concurrency limiter, made when a limit is first set
    /// (at build or at runtime) and kept after, so that turning the limit
    /// off and on again keeps what it learned. Never replaced once set: a
    /// call's place can reach it through this state, without a reference
    /// count of its own ([`Held`](super::limits::Held)).
    limiter: OnceLock<Arc<Limiter>>,
    /// The per-endpoint limit settings new endpoints get: `Some` exactly
    /// when the channel was built with per-endpoint limits (the latest
    /// settings given).
    endpoint_limit: Mutex<Option<LimitSettings>>,
    /// Calls refused because no endpoint had room under its limit.
    pub(crate) endpoints_full: AtomicU64,
    endpoints_full_counter: Option<metrics::Counter>,
    panic: AtomicBool,
    /// Ejected endpoints at the last plan.
    ejected: AtomicUsize,
    /// Unhealthy endpoints at the last plan: while zero, a new endpoint set
    /// needs no plan (nothing can be ejected, panic mode cannot be on).
    unhealthy: AtomicUsize,
    ejection: Mutex<()>,
    ejected_gauge: Gauge,
    refresh: Option<RefreshHint>,
    table: Weak<dyn Endpoints>,
}

impl ChannelState {
    pub(crate) fn new(
        name: &str,
        policy: ChannelPolicy,
        replayable: bool,
        refresh: Option<RefreshHint>,
        balancer: Arc<dyn Balancer>,
        shared: Arc<SetShared>,
        table: Weak<dyn Endpoints>,
    ) -> Self {
        let start = crate::clock::now();
        shared.ramps.configure(policy.slow_start());
        let retry = policy.retry().cloned().unwrap_or_default();
        let hedge = policy.hedge().cloned().unwrap_or_default();
        let label = || [("channel", name.to_string())];
        let retry_budget = Budget::new(retry.budget(), start);
        // Every call counts in both budgets: one deposit serves both.
        let hedge_budget = Budget::sharing_deposits(hedge.budget(), &retry_budget)
            .unwrap_or_else(|| Budget::new(hedge.budget(), start));
        let limiter = policy.concurrency_limit().and_then(|l| {
            // Validated by `check` before the state is made.
            Limiter::labelled(l, &[("channel", name.to_string())])
                .ok()
                .map(Arc::new)
        });
        ChannelState {
            limiter: limiter.map_or_else(OnceLock::new, OnceLock::from),
            endpoint_limit: Mutex::new(policy.endpoint_concurrency_limit().cloned()),
            endpoints_full: AtomicU64::new(0),
            endpoints_full_counter: policy
                .endpoint_concurrency_limit()
                .map(|_| metrics::counter!(REJECTED_METRIC, &label())),
            name: name.into(),
            version: AtomicU64::new(0),
            retry_budget,
            hedge_budget,
            latency: LatencyHistogram::new(hedge.latency(), start),
            throttle: SharedThrottle::new(&policy.throttle().copied().unwrap_or_default(), start),
            throttling: AtomicBool::new(policy.throttle().is_some()),
            throttled: metrics::counter!(THROTTLED, &label()),
            retry_metrics: RetryMetrics::register(&label()),
            hedge_metrics: HedgeMetrics::register(&label()),
            metrics: ChannelMetrics::new(name),
            classifier: Classifier::default_one(),
            balancer,
            shared,
            breakers: policy.breaker().is_some(),
            replayable,
            panic: AtomicBool::new(false),
            ejected: AtomicUsize::new(0),
            unhealthy: AtomicUsize::new(0),
            ejection: Mutex::new(()),
            ejected_gauge: metrics::gauge!(EJECTED_ENDPOINTS, &label()),
            refresh,
            table,
            settings: ArcSwap::from_pointee(policy),
        }
    }

    /// Checks that `policy` can run on a channel built with or without
    /// breakers, per-endpoint limits and a replay (beyond the policy's own
    /// validation).
    pub(crate) fn check(
        policy: &ChannelPolicy,
        breakers: bool,
        endpoint_limits: bool,
        replayable: bool,
    ) -> Result<(), BuildError> {
        policy.validate()?;
        if (policy.retries() || policy.hedge().is_some()) && !replayable {
            return Err(BuildError::new(
                "replay",
                "retries and hedging send a request more than once: give the builder a way to copy \
                 requests with .replay(|r| Some(r.clone())) or .replayer(CloneReplay) (for Clone \
                 requests)",
            ));
        }
        if policy.breaker().is_some() && !breakers {
            return Err(BuildError::new(
                "circuit_breaker",
                "breakers can only be retuned, not added, after the channel was built",
            ));
        }
        if policy.endpoint_concurrency_limit().is_some() && !endpoint_limits {
            return Err(BuildError::new(
                "endpoint_concurrency_limit",
                "per-endpoint limits can only be retuned, not added, after the channel was built",
            ));
        }
        Ok(())
    }

    /// Checks `policy` against what this channel was built with.
    pub(crate) fn check_runtime(&self, policy: &ChannelPolicy) -> Result<(), BuildError> {
        let endpoint_limits = self.endpoint_limit.lock().is_some();
        Self::check(policy, self.breakers, endpoint_limits, self.replayable)
    }

    /// The channel's limiter for calls under the current settings: `None`
    /// while they set no limit.
    pub(crate) fn limiter(&self, policy: &ChannelPolicy) -> Option<Arc<Limiter>> {
        policy.concurrency_limit()?;
        self.limiter.get().cloned()
    }

    /// The channel's limiter, whether or not the settings use it now.
    #[inline]
    pub(crate) fn any_limiter(&self) -> Option<&Arc<Limiter>> {
        self.limiter.get()
    }

    /// Applies the limit settings of `policy` (already checked) to the
    /// channel's limiter, making it when it is set for the first time, and
    /// to every endpoint's (`table`'s).
    pub(crate) fn retune_limits(&self, policy: &ChannelPolicy, table: &dyn Endpoints) {
        if let Some(settings) = policy.concurrency_limit() {
            // Already validated: neither can fail.
            match self.limiter.get() {
                Some(l) => drop(l.retune(settings)),
                None => {
                    let labels = [("channel", self.name.to_string())];
                    if let Ok(made) = Limiter::labelled(settings, &labels)
                        && let Err(made) = self.limiter.set(Arc::new(made))
                    {
                        // Another retune made it first: these settings are
                        // the later ones.
                        drop(made);
                        if let Some(l) = self.limiter.get() {
                            drop(l.retune(settings));
                        }
                    }
                }
            }
        }
        if let Some(settings) = policy.endpoint_concurrency_limit() {
            *self.endpoint_limit.lock() = Some(settings.clone());
            table.each_limiter(&mut |_, l| drop(l.retune(settings)));
        }
    }

    /// A concurrency limiter for a new endpoint, when the channel has
    /// per-endpoint limits.
    pub(crate) fn make_limiter(&self, endpoint: SocketAddr) -> Option<Arc<Limiter>> {
        let settings = self.endpoint_limit.lock().clone()?;
        let labels = [
            ("channel", self.name.to_string()),
            ("endpoint", endpoint.to_string()),
        ];
        Limiter::labelled(&settings, &labels).ok().map(Arc::new)
    }

    /// Counts a call refused because no endpoint had room.
    pub(crate) fn endpoints_full(&self) {
        self.endpoints_full.fetch_add(1, Ordering::Relaxed);
        if let Some(counter) = &self.endpoints_full_counter {
            counter.increment(1);
        }
    }

    /// Makes `policy` the settings of new calls.
    pub(crate) fn store(&self, policy: ChannelPolicy) {
        self.shared.ramps.configure(policy.slow_start());
        self.settings.store(Arc::new(policy));
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Asks discovery, if it takes hints, to look again now.
    pub(crate) fn request_refresh(&self) {
        if let Some(hint) = &self.refresh {
            hint.request();
        }
    }

    /// Whether the channel was given a refresh hint.
    pub(crate) fn has_refresh_hint(&self) -> bool {
        self.refresh.is_some()
    }

    /// True when every current endpoint's last attempt failed outright.
    pub(crate) fn all_erroring(&self) -> bool {
        self.table.upgrade().is_some_and(|t| t.all_erroring())
    }

    /// A breaker for a new endpoint, when the channel has breakers.
    pub(crate) fn make_breaker(&self, endpoint: SocketAddr) -> Option<CircuitBreaker> {
        if !self.breakers {
            return None;
        }
        let settings = self.settings.load().breaker().cloned().unwrap_or_default();
        CircuitBreaker::for_endpoint(settings, &self.name, endpoint).ok()
    }

    /// How many endpoints are ejected (at the last plan; a plan is applied
    /// before this count is published, so zero means none is).
    #[inline]
    pub(crate) fn ejected(&self) -> usize {
        self.ejected.load(Ordering::Relaxed)
    }

    /// True in panic mode: pick among all endpoints, ignoring breakers.
    pub(crate) fn panicking(&self) -> bool {
        self.panic.load(Ordering::Relaxed)
    }

    /// Recomputes which endpoints are ejected and whether the channel is in
    /// panic mode, and applies it. Runs when a breaker changes state in a
    /// way that matters, when the settings change, and when a new endpoint
    /// set is published while some endpoint is unhealthy: O(endpoints),
    /// under a lock only these updates take.
    pub(crate) fn refresh_ejections(&self) {
        if let Some(table) = self.table.upgrade() {
            self.refresh_ejections_of(&*table);
        }
    }

    /// Publishes a new endpoint set with `publish`, then plans its
    /// ejections: skipped while no endpoint is unhealthy. Publishing under
    /// the ejection lock keeps a plan from being applied to a set other
    /// than the one it was computed for.
    pub(crate) fn publish(&self, table: &dyn Endpoints, publish: impl FnOnce()) {
        let only_one = self.ejection.lock();
        publish();
        if self.unhealthy.load(Ordering::Relaxed) > 0 {
            self.plan_locked(table);
        }
        drop(only_one);
    }

    pub(crate) fn refresh_ejections_of(&self, table: &dyn Endpoints) {
        let _only_one = self.ejection.lock();
        self.plan_locked(table);
    }

    fn plan_locked(&self, table: &dyn Endpoints) {
        let settings = self.settings.load();
        let health = table.health(settings.breaker().is_some());
        let n = health.len();
        let plan = plan(
            &health,
            settings.max_ejected_share(),
            settings.panic_threshold(),
        );
        table.apply(&plan);
        self.ejected.store(plan.count, Ordering::Relaxed);
        self.unhealthy.store(plan.unhealthy, Ordering::Relaxed);
        if plan.panic != self.panic.swap(plan.panic, Ordering::Relaxed) {
            let healthy = n - plan.unhealthy;
            tracing::warn!(channel = %self.name, healthy, endpoints = n, panic = plan.panic, "panic mode changed");
            if plan.panic {
                self.request_refresh();
            }
        }
        self.ejected_gauge.set(plan.count as f64);
    }
}
