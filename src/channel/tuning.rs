//! Changing a channel's policy settings at runtime: [`PolicyHandle`].

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::settings::ChannelPolicy;
use super::state::{ChannelState, Endpoints};
use crate::error::BuildError;
use crate::policy::breaker::{BreakerState, CircuitBreaker};
use crate::policy::latency::LatencyHistogram;
use crate::policy::limit::LimitHandle;

/// Changes a channel's policy settings at runtime (see [`ChannelPolicy`]).
/// Made by [`Channel::policy_handle`](super::Channel::policy_handle).
///
/// Every change recomputes which endpoints are ejected: turning breakers
/// off returns every ejected endpoint to rotation at once.
#[derive(Clone)]
pub struct PolicyHandle {
    pub(crate) state: Arc<ChannelState>,
    pub(crate) table: Arc<dyn Endpoints>,
}

impl PolicyHandle {
    /// The settings new calls use.
    pub fn settings(&self) -> Arc<ChannelPolicy> {
        self.state.settings.load_full()
    }

    /// Replaces the settings for new calls. Invalid settings, and turning
    /// on what the channel was not built for, are refused and the old
    /// settings stay.
    pub fn set(&self, policy: ChannelPolicy) -> Result<(), BuildError> {
        let state = &self.state;
        state.check_runtime(&policy)?;
        if let Some(r) = policy.retry() {
            state.retry_budget.retune(r.budget());
        }
        if let Some(h) = policy.hedge() {
            state.hedge_budget.retune(h.budget());
        }
        if let Some(t) = policy.throttle() {
            state.throttle.retune(t, crate::clock::now());
        }
        state
            .throttling
            .store(policy.throttle().is_some(), Ordering::Relaxed);
        let breaker = policy.breaker().cloned();
        // Before the settings are stored, so that a handle that sees a
        // limit in them finds its limiter.
        state.retune_limits(&policy, &*self.table);
        state.store(policy);
        if let Some(settings) = &breaker {
            self.table.each_breaker(&mut |_, b| {
                // Already validated: cannot fail.
                let _ = b.set_settings(settings.clone());
            });
        }
        state.refresh_ejections_of(&*self.table);
        Ok(())
    }

    /// Changes the settings with `f`, then [`set`](Self::set)s them.
    pub fn update(&self, f: impl FnOnce(ChannelPolicy) -> ChannelPolicy) -> Result<(), BuildError> {
        self.set(f((*self.settings()).clone()))
    }

    /// True while the channel is in panic mode (spreading calls over all
    /// endpoints because too few are healthy).
    pub fn in_panic_mode(&self) -> bool {
        self.state.panicking()
    }

    /// The state of each current endpoint's breaker, by address (empty when
    /// the channel was built without breakers).
    pub fn breaker_states(&self) -> Vec<(SocketAddr, BreakerState)> {
        let mut states = Vec::new();
        self.table
            .each_breaker(&mut |addr, b| states.push((addr, b.state())));
        states
    }

    /// Runs `f` on the breaker of the endpoint at `addr` (to force it open
    /// or closed, reset it, or subscribe to it); `None` when there is no
    /// such endpoint or the channel has no breakers.
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
        self.state.refresh_ejections_of(&*self.table);
        out
    }

    /// The state of the channel's concurrency limit (limit, baseline RTT,
    /// calls in flight, refusals), once a limit was set, at build or since;
    /// it keeps its state while the limit is turned off.
    pub fn concurrency_limit(&self) -> Option<LimitHandle> {
        self.state.any_limiter().map(|l| l.handle())
    }

    /// The state of each current endpoint's concurrency limit, by address
    /// (empty when the channel was built without per-endpoint limits).
    pub fn endpoint_concurrency_limits(&self) -> Vec<(SocketAddr, LimitHandle)> {
        let mut limits = Vec::new();
        self.table
            .each_limiter(&mut |addr, l| limits.push((addr, l.handle())));
        limits.sort_by_key(|(addr, _)| *addr);
        limits
    }

    /// Calls refused because no endpoint had room under its concurrency
    /// limit (also counted in `towline_concurrency_rejected_total` with
    /// the channel's label).
    pub fn refused_for_endpoint_limits(&self) -> u64 {
        self.state
            .endpoints_full
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The latency window a percentile hedge delay is read from (fed while
    /// hedging uses a percentile; see [`crate::policy::call`]).
    pub fn latency(&self) -> &LatencyHistogram {
        &self.state.latency
    }
}

impl fmt::Debug for PolicyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyHandle")
            .field("settings", &*self.settings())
            .finish_non_exhaustive()
    }
}
