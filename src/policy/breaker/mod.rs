//! Circuit breaker: stop calling what is failing, then test it gently.
//!
//! One state machine ([`BreakerCore`]):
//!
//! ```text
//!  Closed ──trigger──▶ Open ──open time passed──▶ HalfOpen ──N probes succeed──▶ Closed
//!                       ▲                            │
//!                       └────── a probe fails ◀──────┘  (open time grows)
//! ```
//!
//! Triggers, checked after each call while closed (any one opens):
//! - **consecutive failures**: `n` failed calls in a row;
//! - **failure rate**: the share of failed calls in the window reaches the
//!   threshold, once the window holds `min_calls` calls;
//! - **slow-call rate**: the same for calls that took at least a set time.
//!
//! The window is the last `n` calls or the calls of the last duration
//! ([`Window`]). A call fails when its [`Outcome`]
//! is not a success (retryable or not, or overloaded).
//!
//! Open time: `base × multiplier^k` for the `k`-th open since the breaker
//! last closed, capped, and shortened by a random share up to the jitter so
//! that many breakers do not probe in step. Half-open admits exactly
//! `probes` calls; when all succeed the breaker closes, the first failure
//! (or slow probe, with the slow trigger on) re-opens it for longer. A probe
//! that is abandoned (its future dropped) frees its slot.
//!
//! By hand: [`CircuitBreaker::force_open`], [`CircuitBreaker::force_close`]
//! (hold the state until reset) and [`CircuitBreaker::reset`].
//!
//! Defaults in [`BreakerSettings`]: 5 consecutive failures, or 50% failures
//! over the last 100 calls with at least 20; slow calls off; open 5 s × 2 up
//! to 60 s, jitter 20%; 3 probes.
//!
//! The state is a gauge (`towline_breaker_state`, labelled `breaker` with
//! the breaker's name, or `channel` and `endpoint` for a channel's
//! endpoint: 0 closed, 1 half-open, 2 open; a forced state shows as the
//! state it forces), set
//! when the breaker is made and on every transition. Every transition is
//! also logged as a tracing event (target `towline::breaker`, level INFO)
//! and published to [`CircuitBreaker::subscribe`] receivers (a
//! `tokio::sync::watch`).
//!
//! [`CircuitBreakerLayer`] is the standalone layer: a rejected call fails at
//! once with [`Error::CircuitOpen`](crate::Error::CircuitOpen) and never
//! reaches the inner service. In the channel each endpoint has its own
//! breaker, and an endpoint whose breaker rejects is not picked.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use towline::classify::Outcome;
//! use towline::policy::breaker::{BreakerSettings, BreakerState, CircuitBreaker};
//!
//! let breaker = CircuitBreaker::new(
//!     BreakerSettings::default().with_consecutive_failures(Some(2)),
//! ).unwrap();
//! let now = Instant::now();
//! let failed = Outcome::Failure { retryable: true };
//! for _ in 0..2 {
//!     let permit = breaker.try_acquire(now).unwrap();
//!     breaker.record(permit, failed, Duration::from_millis(1), now);
//! }
//! assert_eq!(breaker.state(), BreakerState::Open);
//! assert!(breaker.try_acquire(now).is_none());
//! ```

mod core;
mod layer;
mod settings;
#[cfg(test)]
mod tests;
mod window;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::Gauge;
use parking_lot::Mutex;
use tokio::sync::watch;

pub use self::core::{Admission, BreakerCore, BreakerState, Transition};
pub use layer::{Breaker, BreakerFuture, CircuitBreakerLayer};
pub use settings::{BreakerSettings, Window};

use super::metrics::BREAKER_STATE;
use crate::classify::Outcome;
use crate::error::BuildError;
use crate::rng::with_thread_rng;

/// A circuit breaker shared by many tasks (wrap it in an `Arc`).
///
/// While closed, [`try_acquire`](Self::try_acquire) reads two atomics and
/// takes no lock; reporting a result and every other state take a short
/// lock around the [`BreakerCore`].
pub struct CircuitBreaker {
    core: Mutex<BreakerCore>,
    state: AtomicU8,
    generation: AtomicU64,
    events: watch::Sender<BreakerState>,
    name: String,
    /// `towline_breaker_state`: the state's [`BreakerState::gauge_value`].
    gauge: Gauge,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("state", &self.state())
            .finish()
    }
}

impl CircuitBreaker {
    /// A closed breaker named "default" in metrics and logs.
    pub fn new(settings: BreakerSettings) -> Result<Self, BuildError> {
        Self::named(settings, "default")
    }

    /// A closed breaker; `name` labels its metrics (`breaker`) and log
    /// events (an endpoint address, a service name). A channel makes its
    /// endpoints' breakers with [`for_endpoint`](Self::for_endpoint).
    pub fn named(settings: BreakerSettings, name: impl Into<String>) -> Result<Self, BuildError> {
        let name = name.into();
        let labels = [("breaker", name.clone())];
        Self::labelled(settings, name, &labels)
    }

    /// The breaker of one endpoint of a channel: named
    /// `channel/endpoint` in log events, its gauge labelled `channel` and
    /// `endpoint` (as the channel's per-endpoint series are).
    pub fn for_endpoint(
        settings: BreakerSettings,
        channel: &str,
        endpoint: SocketAddr,
    ) -> Result<Self, BuildError> {
        let labels = [
            ("channel", channel.to_string()),
            ("endpoint", endpoint.to_string()),
        ];
        Self::labelled(settings, format!("{channel}/{endpoint}"), &labels)
    }

    fn labelled(
        settings: BreakerSettings,
        name: String,
        labels: &[(&'static str, String)],
    ) -> Result<Self, BuildError> {
        settings.validate()?;
        crate::metrics::describe();
        let gauge = metrics::gauge!(BREAKER_STATE, labels);
        gauge.set(BreakerState::Closed.gauge_value());
        Ok(CircuitBreaker {
            core: Mutex::new(BreakerCore::new(settings)),
            state: AtomicU8::new(BreakerState::Closed.code()),
            generation: AtomicU64::new(0),
            events: watch::channel(BreakerState::Closed).0,
            name,
            gauge,
        })
    }

    /// The name given at construction.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        BreakerState::from_code(self.state.load(Ordering::Acquire))
    }

    /// A receiver that sees every state change.
    pub fn subscribe(&self) -> watch::Receiver<BreakerState> {
        self.events.subscribe()
    }

    /// The settings in use.
    pub fn settings(&self) -> BreakerSettings {
        self.core.lock().settings().clone()
    }

    /// Replaces the settings, keeping the state (and the window's counts
    /// when its shape is unchanged). Invalid settings are refused.
    pub fn set_settings(&self, settings: BreakerSettings) -> Result<(), BuildError> {
        settings.validate()?;
        self.core.lock().set_settings(settings);
        Ok(())
    }

    /// Asks to make a call at `now`; `None` means rejected.
    pub fn try_acquire(&self, now: Instant) -> Option<Admission> {
        let generation = self.generation.load(Ordering::Acquire);
        if self.state().admits_all() {
            return Some(Admission {
                generation,
                probe: false,
            });
        }
        let mut core = self.core.lock();
        let (admission, transition) = core.try_acquire(now);
        self.publish(&core, transition);
        admission
    }

    /// True when a call at `now` would be admitted; takes no permit.
    pub fn would_admit(&self, now: Instant) -> bool {
        self.state().admits_all() || self.core.lock().would_admit(now)
    }

    /// Reports the result of an admitted call that took `elapsed`; returns
    /// the state change it caused, if any.
    pub fn record(
        &self,
        admission: Admission,
        outcome: Outcome,
        elapsed: Duration,
        now: Instant,
    ) -> Option<Transition> {
        let mut core = self.core.lock();
        let transition =
            core.record_drawing(admission, !outcome.is_success(), elapsed, now, &mut || {
                with_thread_rng(|rng| rng.unit())
            });
        self.publish(&core, transition);
        transition
    }

    /// Gives back the admission of a call abandoned before it finished.
    pub fn release(&self, admission: Admission) {
        if admission.probe {
            self.core.lock().release(admission);
        }
    }

    /// Holds the breaker open until [`reset`](Self::reset).
    pub fn force_open(&self) {
        let mut core = self.core.lock();
        let t = core.force_open();
        self.publish(&core, t);
    }

    /// Holds the breaker closed until [`reset`](Self::reset).
    pub fn force_close(&self) {
        let mut core = self.core.lock();
        let t = core.force_close();
        self.publish(&core, t);
    }

    /// Back to closed with no history.
    pub fn reset(&self) {
        let mut core = self.core.lock();
        let t = core.reset();
        self.publish(&core, t);
    }

    /// Makes a transition visible: atomics, gauge, log, subscribers.
    /// Called with the core locked, so transitions publish in order.
    fn publish(&self, core: &BreakerCore, transition: Option<Transition>) {
        let Some(t) = transition else { return };
        self.generation.store(core.generation(), Ordering::Release);
        self.state.store(t.to.code(), Ordering::Release);
        self.gauge.set(t.to.gauge_value());
        tracing::info!(
            target: "towline::breaker",
            breaker = %self.name,
            from = t.from.name(),
            to = t.to.name(),
            open_for = ?t.open_for,
            "circuit breaker state change"
        );
        self.events.send_replace(t.to);
    }
}
