//! The channel's resilience policies: settings ([`ChannelPolicy`], whose
//! doc explains ejection, panic mode and runtime tuning), the state shared by
//! a channel's calls, the tuning handle, and per-endpoint ejection.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use metrics::Gauge;
use parking_lot::Mutex;

use super::table::{Slot, Table};
use crate::discover::RefreshHint;
use crate::error::BuildError;
use crate::policy::breaker::{BreakerSettings, BreakerState, CircuitBreaker};
use crate::policy::budget::Budget;
use crate::policy::hedge::HedgeSettings;
use crate::policy::latency::LatencyHistogram;
use crate::policy::metrics::{HedgeMetrics, RetryMetrics};
use crate::policy::retry::RetrySettings;
use crate::policy::timeout::positive;

/// `towline_ejected_endpoints`: endpoints ejected from picks now.
pub const EJECTED_ENDPOINTS: &str = "towline_ejected_endpoints";

/// The policy settings of a channel. Every policy is off by default; the
/// ejection limits default to 50% and 50%.
///
/// Per call: an overall deadline; retry rounds (each on an endpoint the call
/// has not tried, while one is left); within a round, hedges (extra attempts
/// on other untried endpoints); on every attempt the attempt timeout and the
/// endpoint's own circuit breaker.
///
/// Ejection: an endpoint whose breaker is not closed is ejected from picks
/// and gets only probes, and returns when its breaker closes. At most
/// `max_ejected_share` of the endpoints (rounded down) are ejected at once;
/// further failing endpoints stay in rotation. When fewer than
/// `panic_threshold` of the endpoints have a closed breaker the channel is in
/// panic mode: it spreads calls over all endpoints and bypasses their
/// breakers, rather than crush a healthy minority (and asks discovery, through
/// the refresh hint, to look again). The `towline_ejected_endpoints` gauge
/// (label `channel`) tracks the ejected count.
///
/// Runtime tuning: [`PolicyHandle::set`] swaps the settings atomically; new
/// calls use them, breakers keep their state (their thresholds are updated),
/// and the budgets and the latency window keep their history. Turning
/// breakers, retries or hedging on at runtime needs them (or, for retries and
/// hedging, a replay function) to have been set up at build.
///
/// ```
/// use std::time::Duration;
/// use towline::channel::ChannelPolicy;
/// use towline::policy::retry::RetrySettings;
///
/// let policy = ChannelPolicy::default()
///     .with_deadline(Some(Duration::from_secs(2)))
///     .with_retry(Some(RetrySettings::default()));
/// assert!(policy.validate().is_ok());
/// assert!(policy.clone().with_max_ejected_share(2.0).validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelPolicy {
    timeout: Option<Duration>,
    deadline: Option<Duration>,
    retry: Option<RetrySettings>,
    hedge: Option<HedgeSettings>,
    breaker: Option<BreakerSettings>,
    max_ejected_share: f64,
    panic_threshold: f64,
}

impl Default for ChannelPolicy {
    fn default() -> Self {
        ChannelPolicy {
            timeout: None,
            deadline: None,
            retry: None,
            hedge: None,
            breaker: None,
            max_ejected_share: 0.5,
            panic_threshold: 0.5,
        }
    }
}

impl ChannelPolicy {
    /// A timeout on each attempt (default none).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// An overall deadline on each call (default none).
    pub fn with_deadline(mut self, deadline: Option<Duration>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Retries (default none). A deadline or attempt timeout inside the
    /// retry settings applies when the channel's own is not set.
    pub fn with_retry(mut self, retry: Option<RetrySettings>) -> Self {
        self.retry = retry;
        self
    }

    /// Hedging (default none).
    pub fn with_hedge(mut self, hedge: Option<HedgeSettings>) -> Self {
        self.hedge = hedge;
        self
    }

    /// A circuit breaker per endpoint (default none).
    pub fn with_breaker(mut self, breaker: Option<BreakerSettings>) -> Self {
        self.breaker = breaker;
        self
    }

    /// The largest share of endpoints ejected at once (0 to 1; default 0.5).
    pub fn with_max_ejected_share(mut self, share: f64) -> Self {
        self.max_ejected_share = share;
        self
    }

    /// Panic mode engages when the share of endpoints with a closed breaker
    /// falls below this (0 to 1; default 0.5; 0 turns panic mode off).
    pub fn with_panic_threshold(mut self, share: f64) -> Self {
        self.panic_threshold = share;
        self
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), BuildError> {
        if let Some(t) = self.timeout {
            positive("timeout", t)?;
        }
        if let Some(d) = self.deadline {
            positive("deadline", d)?;
        }
        if let Some(r) = &self.retry {
            r.validate()?;
        }
        if let Some(h) = &self.hedge {
            h.validate()?;
        }
        if let Some(b) = &self.breaker {
            b.validate()?;
        }
        for (name, v) in [
            ("max_ejected_share", self.max_ejected_share),
            ("panic_threshold", self.panic_threshold),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(BuildError::new(
                    name,
                    format!("must be a share between 0 and 1, got {v}"),
                ));
            }
        }
        Ok(())
    }

    /// The per-attempt timeout: the channel's, else the retry settings'.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
            .or_else(|| self.retry.as_ref().and_then(|r| r.attempt_timeout()))
    }

    /// The call deadline: the channel's, else the retry settings'.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
            .or_else(|| self.retry.as_ref().and_then(|r| r.deadline()))
    }

    /// The retry settings, if retries are on.
    pub fn retry(&self) -> Option<&RetrySettings> {
        self.retry.as_ref()
    }

    /// The hedging settings, if hedging is on.
    pub fn hedge(&self) -> Option<&HedgeSettings> {
        self.hedge.as_ref()
    }

    /// The breaker settings, if breakers are on.
    pub fn breaker(&self) -> Option<&BreakerSettings> {
        self.breaker.as_ref()
    }

    /// The ejection cap.
    pub fn max_ejected_share(&self) -> f64 {
        self.max_ejected_share
    }

    /// The panic threshold.
    pub fn panic_threshold(&self) -> f64 {
        self.panic_threshold
    }

    /// More than one attempt may be made per call.
    pub(crate) fn retries(&self) -> bool {
        self.retry.as_ref().is_some_and(|r| r.max_attempts() > 1)
    }

    /// No policy at all: the bare call path applies.
    pub(crate) fn is_bare(&self) -> bool {
        self.timeout().is_none()
            && self.deadline().is_none()
            && !self.retries()
            && self.hedge.is_none()
            && self.breaker.is_none()
    }
}

/// Policy state shared by a channel's clones and its discovery task.
pub(crate) struct Policies {
    pub(crate) settings: ArcSwap<ChannelPolicy>,
    pub(crate) retry_budget: Budget,
    pub(crate) hedge_budget: Budget,
    pub(crate) latency: LatencyHistogram,
    pub(crate) retry_metrics: RetryMetrics,
    pub(crate) hedge_metrics: HedgeMetrics,
    /// Whether breakers exist (fixed at build).
    breakers: bool,
    /// Whether requests can be copied (fixed at build).
    replayable: bool,
    panic: AtomicBool,
    ejection: Mutex<()>,
    ejected_gauge: Gauge,
    channel: String,
    /// Pulled when panic mode engages: discovery may know better endpoints.
    refresh: Option<RefreshHint>,
}

impl Policies {
    pub(crate) fn new(
        policy: ChannelPolicy,
        replayable: bool,
        channel: &str,
        refresh: Option<RefreshHint>,
    ) -> Self {
        let start = super::now();
        let retry_budget = policy.retry.clone().unwrap_or_default();
        let hedge = policy.hedge.clone().unwrap_or_default();
        Policies {
            retry_budget: Budget::new(retry_budget.budget(), start),
            hedge_budget: Budget::new(hedge.budget(), start),
            latency: LatencyHistogram::new(hedge.latency(), start),
            retry_metrics: RetryMetrics::register(&[("channel", channel.to_string())]),
            hedge_metrics: HedgeMetrics::register(&[("channel", channel.to_string())]),
            breakers: policy.breaker.is_some(),
            replayable,
            panic: AtomicBool::new(false),
            ejection: Mutex::new(()),
            ejected_gauge: metrics::gauge!(EJECTED_ENDPOINTS, "channel" => channel.to_string()),
            channel: channel.to_string(),
            refresh,
            settings: ArcSwap::from_pointee(policy),
        }
    }

    /// Checks that `policy` can run on this channel (beyond its own
    /// validation): what was fixed at build.
    pub(crate) fn check(
        policy: &ChannelPolicy,
        breakers: bool,
        replayable: bool,
    ) -> Result<(), BuildError> {
        policy.validate()?;
        if (policy.retries() || policy.hedge.is_some()) && !replayable {
            return Err(BuildError::new(
                "replay",
                "retries and hedging send a request more than once: give the builder a way to copy \
                 requests with .replay(CloneReplay) (for Clone requests) or .replay(fn)",
            ));
        }
        if policy.breaker.is_some() && !breakers {
            return Err(BuildError::new(
                "circuit_breaker",
                "breakers can only be retuned, not added, after the channel was built",
            ));
        }
        Ok(())
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

    /// A breaker for a new endpoint, when breakers are on.
    pub(crate) fn make_breaker(&self, endpoint: SocketAddr) -> Option<CircuitBreaker> {
        let settings = self.settings.load().breaker.clone()?;
        CircuitBreaker::named(settings, format!("{}/{endpoint}", self.channel)).ok()
    }

    /// True in panic mode: pick among all endpoints, ignoring breakers.
    pub(crate) fn panicking(&self) -> bool {
        self.panic.load(Ordering::Relaxed)
    }

    /// Recomputes which endpoints of the current set are ejected, the
    /// ejected gauge and panic mode. Runs on every breaker transition that
    /// matters and on every new endpoint set; O(endpoints), under a lock
    /// that only these updates take.
    pub(crate) fn refresh_ejections<S>(&self, table: &Table<S>) {
        let _only_one = self.ejection.lock();
        let snapshot = table.snapshot();
        let n = snapshot.slots.len();
        let settings = self.settings.load();
        let cap = (settings.max_ejected_share * n as f64).floor() as usize;
        let unhealthy = |s: &Slot<S>| s.breaker.as_ref().is_some_and(|b| !b.state().admits_all());
        // Keep the endpoints already ejected first, so the set is stable.
        let mut ejected = 0;
        for slot in &snapshot.slots {
            let keep = slot.ejected.load(Ordering::Relaxed) && unhealthy(slot) && ejected < cap;
            ejected += usize::from(keep);
            slot.ejected.store(keep, Ordering::Relaxed);
        }
        let mut sick = 0;
        for slot in &snapshot.slots {
            if unhealthy(slot) {
                sick += 1;
                if !slot.ejected.load(Ordering::Relaxed) && ejected < cap {
                    slot.ejected.store(true, Ordering::Relaxed);
                    ejected += 1;
                }
            }
        }
        let healthy = n - sick;
        let panic = n > 0 && (healthy as f64) < settings.panic_threshold * n as f64;
        if panic != self.panic.swap(panic, Ordering::Relaxed) {
            tracing::warn!(channel = %self.channel, healthy, endpoints = n, panic, "panic mode changed");
            if panic {
                self.request_refresh();
            }
        }
        self.ejected_gauge.set(ejected as f64);
    }
}

/// What a tuning handle needs from the endpoint table, whatever its
/// service type.
pub(crate) trait EndpointBreakers: Send + Sync {
    /// Calls `f` with each current endpoint's breaker.
    fn each_breaker(&self, f: &mut dyn FnMut(SocketAddr, &CircuitBreaker));
    /// Recomputes ejections and panic mode.
    fn refresh(&self, policies: &Policies);
}

impl<S: Send + Sync + 'static> EndpointBreakers for Table<S> {
    fn each_breaker(&self, f: &mut dyn FnMut(SocketAddr, &CircuitBreaker)) {
        for slot in &self.snapshot().slots {
            if let Some(b) = &slot.breaker {
                f(slot.endpoint.addr, b);
            }
        }
    }

    fn refresh(&self, policies: &Policies) {
        policies.refresh_ejections(self);
    }
}

/// Changes a channel's policy settings at runtime (see the module docs).
/// Made by [`Channel::policy_handle`](super::Channel::policy_handle).
#[derive(Clone)]
pub struct PolicyHandle {
    pub(crate) policies: Arc<Policies>,
    pub(crate) table: Arc<dyn EndpointBreakers>,
}

impl PolicyHandle {
    /// The settings new calls use.
    pub fn settings(&self) -> Arc<ChannelPolicy> {
        self.policies.settings.load_full()
    }

    /// Replaces the settings for new calls. Invalid settings, and turning
    /// on what the channel was not built for, are refused and the old
    /// settings stay.
    pub fn set(&self, policy: ChannelPolicy) -> Result<(), BuildError> {
        let p = &self.policies;
        Policies::check(&policy, p.breakers, p.replayable)?;
        if let Some(r) = &policy.retry {
            p.retry_budget.retune(r.budget());
        }
        if let Some(h) = &policy.hedge {
            p.hedge_budget.retune(h.budget());
        }
        let breaker = policy.breaker.clone();
        p.settings.store(Arc::new(policy));
        if let Some(settings) = &breaker {
            self.table.each_breaker(&mut |_, b| {
                // Already validated: cannot fail.
                let _ = b.set_settings(settings.clone());
            });
        }
        self.table.refresh(p);
        Ok(())
    }

    /// Changes the settings with `f`, then [`set`](Self::set)s them.
    pub fn update(&self, f: impl FnOnce(ChannelPolicy) -> ChannelPolicy) -> Result<(), BuildError> {
        self.set(f((*self.settings()).clone()))
    }

    /// True while the channel is in panic mode (spreading calls over all
    /// endpoints because too few are healthy).
    pub fn in_panic_mode(&self) -> bool {
        self.policies.panicking()
    }

    /// The state of each current endpoint's breaker, by address (empty when
    /// breakers are off).
    pub fn breaker_states(&self) -> Vec<(SocketAddr, BreakerState)> {
        let mut states = Vec::new();
        self.table
            .each_breaker(&mut |addr, b| states.push((addr, b.state())));
        states
    }

    /// Runs `f` on the breaker of the endpoint at `addr` (to force it open
    /// or closed, reset it, or subscribe to it); `None` when there is no
    /// such endpoint or breakers are off.
    pub fn with_breaker<R>(
        &self,
        addr: SocketAddr,
        f: impl FnOnce(&CircuitBreaker) -> R,
    ) -> Option<R> {
        let mut f = Some(f);
        let mut out = None;
        self.table.each_breaker(&mut |a, b| {
            if a == addr
                && let Some(f) = f.take()
            {
                out = Some(f(b));
            }
        });
        self.table.refresh(&self.policies);
        out
    }
}

impl fmt::Debug for PolicyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyHandle")
            .field("settings", &*self.settings())
            .finish_non_exhaustive()
    }
}

/// Whether `slot` may get a regular pick at `now` outside panic mode: not
/// ejected, or ejected with its breaker ready to admit a probe.
pub(crate) fn admits<S>(slot: &Slot<S>, now: Instant) -> bool {
    !slot.ejected.load(Ordering::Relaxed)
        || slot.breaker.as_ref().is_some_and(|b| b.would_admit(now))
}
