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
//! over the last 100 calls with at least 20; slow calls off; open 5 s × 1.5 up
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

/// The slow-call duration of `settings` in nanoseconds; `u64::MAX` with
/// the trigger off.
fn slow_ns(settings: &BreakerSettings) -> u64 {
    settings
        .slow_call
        .map_or(u64::MAX, |(after, _)| crate::clock::nanos(after))
}

/// A circuit breaker shared by many tasks (wrap it in an `Arc`).
///
/// While closed, [`try_acquire`](Self::try_acquire) reads two atomics and
/// takes no lock. Reporting a success that would change nothing (the
/// breaker is closed and its count window holds only successes, see
/// [`BreakerCore::success_changes_nothing`]) reads two atomics and takes no
/// lock either; every other report and state change takes a short lock
/// around the [`BreakerCore`]. Every trigger stays exact: a skipped success
/// is one that, recorded under the lock, would have left the core as it
/// was.
pub struct CircuitBreaker {
    core: Mutex<BreakerCore>,
    state: AtomicU8,
    generation: AtomicU64,
    /// The generation while a success of it changes nothing, else
    /// [`NOT_QUIET`]; written under the lock after every change of the
    /// core, so a success that reads it is ordered before or after each
    /// locked change as a whole.
    quiet: AtomicU64,
    /// The slow-call duration in nanoseconds (`u64::MAX` with the trigger
    /// off): a slow success is counted as slow, never skipped.
    slow_ns: AtomicU64,
    events: watch::Sender<BreakerState>,
    name: String,
    /// `towline_breaker_state`: the state's [`BreakerState::gauge_value`].
    gauge: Gauge,
}

/// No skipped successes (generations never reach this value).
const NOT_QUIET: u64 = u64::MAX;

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
            slow_ns: AtomicU64::new(slow_ns(&settings)),
            core: Mutex::new(BreakerCore::new(settings)),
            state: AtomicU8::new(BreakerState::Closed.code()),
            generation: AtomicU64::new(0),
            quiet: AtomicU64::new(NOT_QUIET),
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
        let mut core = self.core.lock();
        self.slow_ns.store(slow_ns(&settings), Ordering::Relaxed);
        core.set_settings(settings);
        self.publish(&core, None);
        Ok(())
    }

    /// Asks to make a call at `now`; `None` means rejected.
    pub fn try_acquire(&self, now: Instant) -> Option<Admission> {
        self.try_acquire_at(|| now)
    }

    /// [`try_acquire`](Self::try_acquire) reading the time only when the
    /// state needs it (not while the breaker admits every call).
    pub(crate) fn try_acquire_at(&self, now: impl FnOnce() -> Instant) -> Option<Admission> {
        let generation = self.generation.load(Ordering::Acquire);
        if self.state().admits_all() {
            return Some(Admission {
                generation,
                probe: false,
            });
        }
        let mut core = self.core.lock();
        let (admission, transition) = core.try_acquire(now());
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
        if outcome.is_success()
            && admission.generation == self.quiet.load(Ordering::Acquire)
            && crate::clock::nanos(elapsed) < self.slow_ns.load(Ordering::Relaxed)
        {
            // Recorded under the lock, it would change nothing.
            return None;
        }
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
            let mut core = self.core.lock();
            core.release(admission);
            self.publish(&core, None);
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

    /// Makes a change of the core visible: whether a success changes
    /// nothing now, and a transition's atomics, gauge, log and
    /// subscribers. Called with the core locked after every change, so
    /// changes publish in order.
    fn publish(&self, core: &BreakerCore, transition: Option<Transition>) {
        let quiet = if core.success_changes_nothing() {
            core.generation()
        } else {
            NOT_QUIET
        };
        if self.quiet.load(Ordering::Relaxed) != quiet {
            self.quiet.store(quiet, Ordering::Release);
        }
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
