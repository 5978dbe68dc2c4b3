//! The breaker's decision core: a plain state machine given the time.

use std::time::{Duration, Instant};

use super::settings::BreakerSettings;
use super::window::OutcomeWindow;
use crate::policy::later;
use crate::rng::Rng;

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls pass; outcomes are counted.
    Closed,
    /// Calls are rejected until the open time has passed.
    Open,
    /// A fixed number of probe calls pass; the rest are rejected.
    HalfOpen,
    /// Held open by hand until reset.
    ForcedOpen,
    /// Held closed by hand until reset: calls pass and nothing trips.
    ForcedClosed,
}

impl BreakerState {
    /// A short lower-case name, as used in metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::ForcedOpen => "forced_open",
            BreakerState::ForcedClosed => "forced_closed",
        }
    }

    /// The value of the `towline_breaker_state` gauge: 0 closed, 1
    /// half-open, 2 open. A forced state counts as the state it forces
    /// (forced closed 0, forced open 2), so the gauge reads as "how shut".
    pub fn gauge_value(&self) -> f64 {
        match self {
            BreakerState::Closed | BreakerState::ForcedClosed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open | BreakerState::ForcedOpen => 2.0,
        }
    }

    /// True for the states that let calls through without limit.
    pub fn admits_all(&self) -> bool {
        matches!(self, BreakerState::Closed | BreakerState::ForcedClosed)
    }

    pub(super) fn code(self) -> u8 {
        self as u8
    }

    pub(super) fn from_code(code: u8) -> Self {
        match code {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            3 => BreakerState::ForcedOpen,
            _ => BreakerState::ForcedClosed,
        }
    }
}

/// Permission for one call, to be given back with its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub(super) generation: u64,
    pub(super) probe: bool,
}

impl Admission {
    /// True when the call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The admission as plain values, to carry where breaker types are not
    /// known (a deferred outcome report).
    pub(crate) fn into_raw(self) -> (u64, bool) {
        (self.generation, self.probe)
    }

    /// An admission from [`into_raw`](Self::into_raw)'s values.
    pub(crate) fn from_raw((generation, probe): (u64, bool)) -> Self {
        Admission { generation, probe }
    }
}

/// A change of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
    /// How long the breaker stays open, when `to` is `Open`.
    pub open_for: Option<Duration>,
}

/// The breaker state machine (see [the module docs](super)).
///
/// Each call asks [`try_acquire`](Self::try_acquire) and, if admitted,
/// reports back with [`record`](Self::record) or, if it was abandoned,
/// [`release`](Self::release). Results of calls admitted before the last
/// state change are ignored (their admission carries an old generation).
#[derive(Debug, Clone)]
pub struct BreakerCore {
    settings: BreakerSettings,
    state: BreakerState,
    generation: u64,
    open_until: Option<Instant>,
    /// Opens since the breaker last closed.
    opens: u32,
    probes_out: u32,
    probes_ok: u32,
    consecutive: u32,
    window: OutcomeWindow,
}

impl BreakerCore {
    /// A closed breaker. The settings must be valid
    /// ([`BreakerSettings::validate`]).
    pub fn new(settings: BreakerSettings) -> Self {
        BreakerCore {
            window: OutcomeWindow::new(settings.window),
            settings,
            state: BreakerState::Closed,
            generation: 0,
            open_until: None,
            opens: 0,
            probes_out: 0,
            probes_ok: 0,
            consecutive: 0,
        }
    }

    /// The current state (an expired open time shows as `Open` until the
    /// next [`try_acquire`](Self::try_acquire)).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Bumped on every state change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When an `Open` breaker turns half-open.
    pub fn open_until(&self) -> Option<Instant> {
        self.open_until
    }

    /// The settings in use.
    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    /// Replaces the settings (they must be valid), keeping the state; the
    /// window's counts are kept unless its shape changed.
    pub fn set_settings(&mut self, settings: BreakerSettings) {
        if !self.window.matches(settings.window) {
            self.window = OutcomeWindow::new(settings.window);
        }
        self.settings = settings;
    }

    fn enter(&mut self, to: BreakerState, open_for: Option<Duration>) -> Option<Transition> {
        let from = self.state;
        self.state = to;
        self.generation += 1;
        self.probes_out = 0;
        self.probes_ok = 0;
        self.consecutive = 0;
        self.window.clear();
        Some(Transition { from, to, open_for })
    }

    /// True when recording a success of the current generation that was
    /// not slow would change nothing: closed with a full window of such
    /// successes (so no failure in a row either), or held closed (which
    /// counts nothing). [`CircuitBreaker`](super::CircuitBreaker) then
    /// skips its lock for such a success.
    pub fn success_changes_nothing(&self) -> bool {
        match self.state {
            BreakerState::Closed => self.consecutive == 0 && self.window.full_of_successes(),
            BreakerState::ForcedClosed => true,
            _ => false,
        }
    }

    /// True when a call at `now` would be admitted, without taking a
    /// permit (used to filter endpoints before picking one).
    pub fn would_admit(&self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed | BreakerState::ForcedClosed => true,
            BreakerState::ForcedOpen => false,
            BreakerState::Open => self.open_until.is_some_and(|t| now >= t),
            BreakerState::HalfOpen => self.probes_out < self.settings.probes,
        }
    }

    /// Asks to make a call at `now`. An open breaker whose time has passed
    /// turns half-open here (the transition is returned).
    pub fn try_acquire(&mut self, now: Instant) -> (Option<Admission>, Option<Transition>) {
        let mut transition = None;
        if self.state == BreakerState::Open && self.open_until.is_some_and(|t| now >= t) {
            transition = self.enter(BreakerState::HalfOpen, None);
            self.open_until = None;
        }
        let admission = match self.state {
            BreakerState::Closed | BreakerState::ForcedClosed => Some(false),
            BreakerState::HalfOpen if self.probes_out < self.settings.probes => {
                self.probes_out += 1;
                Some(true)
            }
            _ => None,
        };
        let generation = self.generation;
        (
            admission.map(|probe| Admission { generation, probe }),
            transition,
        )
    }

    /// Gives back an admission whose call was abandoned before it finished
    /// (a probe slot becomes free again).
    pub fn release(&mut self, admission: Admission) {
        if admission.probe
            && admission.generation == self.generation
            && self.state == BreakerState::HalfOpen
        {
            self.probes_out = self.probes_out.saturating_sub(1);
        }
    }

    /// Reports a finished call: whether it failed and how long it took.
    pub fn record(
        &mut self,
        admission: Admission,
        failed: bool,
        elapsed: Duration,
        now: Instant,
        rng: &mut Rng,
    ) -> Option<Transition> {
        self.record_drawing(admission, failed, elapsed, now, &mut || rng.unit())
    }

    /// [`record`](Self::record), drawing the open-time jitter (a uniform
    /// number in `[0, 1)`) from `unit` only when the breaker opens.
    pub(crate) fn record_drawing(
        &mut self,
        admission: Admission,
        failed: bool,
        elapsed: Duration,
        now: Instant,
        unit: &mut dyn FnMut() -> f64,
    ) -> Option<Transition> {
        if admission.generation != self.generation {
            return None;
        }
        let slow = self
            .settings
            .slow_call
            .is_some_and(|(limit, _)| elapsed >= limit);
        match self.state {
            BreakerState::Closed => {
                self.consecutive = if failed { self.consecutive + 1 } else { 0 };
                self.window.push(failed, slow, now);
                if self.tripped(now) {
                    return self.open(now, unit());
                }
                None
            }
            BreakerState::HalfOpen if admission.probe => {
                if failed || slow {
                    return self.open(now, unit());
                }
                self.probes_ok += 1;
                if self.probes_ok >= self.settings.probes {
                    self.opens = 0;
                    return self.enter(BreakerState::Closed, None);
                }
                None
            }
            _ => None,
        }
    }

    fn tripped(&self, now: Instant) -> bool {
        let s = &self.settings;
        if s.consecutive_failures
            .is_some_and(|n| self.consecutive >= n)
        {
            return true;
        }
        let t = self.window.totals(now);
        if t.calls < s.min_calls || t.calls == 0 {
            return false;
        }
        let calls = f64::from(t.calls);
        s.failure_rate
            .is_some_and(|r| f64::from(t.failures) >= r * calls)
            || s.slow_call
                .is_some_and(|(_, r)| f64::from(t.slow) >= r * calls)
    }

    /// The open time of the next open: grown per open since the last close,
    /// shortened by jitter, never above the cap.
    pub fn next_open_time(&self, rng: &mut Rng) -> Duration {
        self.open_time(rng.unit())
    }

    /// The open time for a jitter draw `unit` in `[0, 1)`.
    fn open_time(&self, unit: f64) -> Duration {
        let ceiling = self.settings.open.ceiling(self.opens);
        ceiling.mul_f64(1.0 - self.settings.open_jitter * unit)
    }

    fn open(&mut self, now: Instant, unit: f64) -> Option<Transition> {
        let open_for = self.open_time(unit);
        self.opens = self.opens.saturating_add(1);
        let t = self.enter(BreakerState::Open, Some(open_for));
        self.open_until = Some(later(now, open_for));
        t
    }

    /// Holds the breaker open until [`reset`](Self::reset).
    pub fn force_open(&mut self) -> Option<Transition> {
        self.open_until = None;
        self.enter(BreakerState::ForcedOpen, None)
    }

    /// Holds the breaker closed until [`reset`](Self::reset).
    pub fn force_close(&mut self) -> Option<Transition> {
        self.open_until = None;
        self.enter(BreakerState::ForcedClosed, None)
    }

    /// Back to closed with no history: counts, re-open growth and forcing
    /// are cleared.
    pub fn reset(&mut self) -> Option<Transition> {
        self.open_until = None;
        self.opens = 0;
        self.enter(BreakerState::Closed, None)
    }
}
