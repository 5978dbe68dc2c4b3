//! Circuit-breaker transitions checked against a small reference model.
//!
//! [`run_breaker`] drives a [`BreakerCore`] with acquires, results (failed
//! or not, fast or slow), abandoned calls, forcing, retuning and time, and
//! replays each step on a reference model written from the documented
//! behaviour (see [`towline::policy::breaker`]). After every step the two must
//! agree on the state, and:
//!
//! - only legal transitions happen, each at the step that allows it:
//!   closed → open only when a result trips a trigger (consecutive failures,
//!   or the failure or slow-call rate over the window once it holds
//!   `min_calls`), open → half-open only on an acquire once the open time
//!   has passed, half-open → closed only after `probes` successful probes,
//!   half-open → open only on a failed or slow probe, forced states only by
//!   hand; results of calls admitted before the last change are ignored;
//! - half-open admits at most `probes` probes (a probe abandoned before
//!   its answer frees its slot), and admits one whenever fewer are out;
//! - each open time lies in `[c × (1 − jitter), c]` where `c` is
//!   `min(cap, base × multiplier^k)` for the `k`-th open since the breaker
//!   last closed, and the breaker admits nothing until it has passed;
//! - [`BreakerCore::would_admit`] tells exactly whether an acquire would be
//!   admitted;
//! - invalid settings are refused by [`BreakerSettings::validate`] (and by
//!   [`CircuitBreaker::new`]), never a panic.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;

use super::{Violation, ensure};
use towline::policy::breaker::{
    Admission, BreakerCore, BreakerSettings, BreakerState, CircuitBreaker, Transition, Window,
};
use towline::rng::Rng;

/// Slices of a time window (as documented by [`Window::Time`]).
const TIME_SLICES: u64 = 10;

/// Breaker settings in fuzzable form. Values are folded into (mostly)
/// valid ranges so that most inputs test a working breaker; the few that
/// stay out of range make invalid settings, which must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub struct BreakerConfig {
    /// Consecutive-failure trigger (0 is invalid).
    pub consecutive_failures: Option<u8>,
    /// Failure-rate trigger in percent, modulo 101 (0 is invalid).
    pub failure_rate_percent: Option<u8>,
    /// Slow-call trigger: the slow time in milliseconds (0 is invalid) and
    /// the rate in percent, modulo 101 (0 is invalid).
    pub slow_call: Option<(u16, u8)>,
    /// The rate window.
    pub window: WindowConfig,
    /// Calls the window must hold before a rate trigger may open, modulo
    /// 64 (0, or more than a count window holds, is invalid).
    pub min_calls: u8,
    /// Open time base in milliseconds.
    pub open_base_ms: u16,
    /// Open time growth per re-open, in tenths (below 10 is invalid).
    pub open_multiplier_tenths: u8,
    /// How far the open time cap lies above the base, in milliseconds.
    pub open_cap_above_base_ms: u32,
    /// Open time jitter in percent, modulo 101 (100 is invalid).
    pub open_jitter_percent: u8,
    /// Half-open probes, modulo 12 (0 is invalid).
    pub probes: u8,
}

/// [`Window`] in fuzzable form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum WindowConfig {
    /// The last `n % 2000` calls (0 is invalid).
    Count(u16),
    /// The calls of the last `ms` milliseconds, modulo one hour + 100 ms
    /// (below 100 ms is invalid).
    TimeMs(u32),
}

impl BreakerConfig {
    /// The settings these values make (possibly invalid).
    pub fn settings(self) -> BreakerSettings {
        let base = Duration::from_millis(self.open_base_ms.into());
        BreakerSettings::default()
            .with_consecutive_failures(self.consecutive_failures.map(u32::from))
            .with_failure_rate(self.failure_rate_percent.map(percent))
            .with_slow_calls(
                self.slow_call
                    .map(|(ms, p)| (Duration::from_millis(ms.into()), percent(p))),
            )
            .with_window(match self.window {
                WindowConfig::Count(n) => Window::Count((n % 2000).into()),
                WindowConfig::TimeMs(ms) => {
                    Window::Time(Duration::from_millis((ms % 3_600_100).into()))
                }
            })
            .with_min_calls((self.min_calls % 64).into())
            .with_open_time(
                base,
                f64::from(self.open_multiplier_tenths) / 10.0,
                base + Duration::from_millis(self.open_cap_above_base_ms.into()),
            )
            .with_open_jitter(percent(self.open_jitter_percent))
            .with_probes((self.probes % 12).into())
    }
}

/// `p % 101` percent as a share.
fn percent(p: u8) -> f64 {
    f64::from(p % 101) / 100.0
}

/// One step on the breaker.
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
pub enum BreakerOp {
    /// Asks to make a call now.
    Acquire,
    /// Reports the result of an admitted call (one of those still open).
    Record {
        /// Which open call.
        call: u8,
        /// Whether it failed.
        failed: bool,
        /// How long it took, in milliseconds.
        elapsed_ms: u16,
    },
    /// Abandons an admitted call (its future dropped).
    Release {
        /// Which open call.
        call: u8,
    },
    /// Moves the clock forward.
    Advance {
        /// Milliseconds.
        ms: u32,
    },
    /// Holds the breaker open.
    ForceOpen,
    /// Holds the breaker closed.
    ForceClose,
    /// Back to closed with no history.
    Reset,
    /// New settings, keeping the state (invalid ones are refused).
    Retune(BreakerConfig),
}

/// A fuzz input: breaker settings and the steps to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerCase {
    /// The settings.
    pub config: BreakerConfig,
    /// The steps, in order.
    pub ops: Vec<BreakerOp>,
}

super::fuzz_case!(BreakerCase { config; ops });

impl BreakerCase {
    /// Runs [`run_breaker`] on this case.
    pub fn run(&self) -> Result<(), Violation> {
        run_breaker(self.config, &self.ops)
    }
}

/// Runs `ops` on a breaker with `config` and checks it against the model.
pub fn run_breaker(config: BreakerConfig, ops: &[BreakerOp]) -> Result<(), Violation> {
    let settings = config.settings();
    if let Err(e) = settings.validate() {
        ensure!(
            CircuitBreaker::new(settings).is_err(),
            0,
            "settings refused by validate ({e}) but accepted by CircuitBreaker::new"
        );
        return Ok(());
    }
    let mut check = Check::new(settings);
    for (step, op) in ops.iter().enumerate() {
        check.step = step;
        check.apply(op)?;
        check.compare()?;
    }
    Ok(())
}

/// The reference model's state.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Model {
    Closed,
    Open { until: Instant },
    HalfOpen { out: u32, ok: u32 },
    ForcedOpen,
    ForcedClosed,
}

impl Model {
    fn state(self) -> BreakerState {
        match self {
            Model::Closed => BreakerState::Closed,
            Model::Open { .. } => BreakerState::Open,
            Model::HalfOpen { .. } => BreakerState::HalfOpen,
            Model::ForcedOpen => BreakerState::ForcedOpen,
            Model::ForcedClosed => BreakerState::ForcedClosed,
        }
    }
}

/// An admitted call still open: the admission, and the model generation
/// and probe flag it was given under.
struct OpenCall {
    admission: Admission,
    generation: u64,
    probe: bool,
}

struct Check {
    core: BreakerCore,
    settings: BreakerSettings,
    model: Model,
    generation: u64,
    opens: u32,
    consecutive: u32,
    /// Results since the last transition: time, failed, slow.
    results: VecDeque<(Instant, bool, bool)>,
    calls: Vec<OpenCall>,
    now: Instant,
    rng: Rng,
    step: usize,
}

impl Check {
    fn new(settings: BreakerSettings) -> Self {
        Check {
            core: BreakerCore::new(settings.clone()),
            settings,
            model: Model::Closed,
            generation: 0,
            opens: 0,
            consecutive: 0,
            results: VecDeque::new(),
            calls: Vec::new(),
            now: Instant::now(),
            rng: Rng::seeded(0xb4ea),
            step: 0,
        }
    }

    /// The model enters `to`: every change clears the counts.
    fn enter(&mut self, to: Model) -> BreakerState {
        let from = self.model.state();
        self.model = to;
        self.generation += 1;
        self.consecutive = 0;
        self.results.clear();
        from
    }

    /// Checks a transition the breaker reported against the one the model
    /// made (`None`: no change allowed).
    fn expect(
        &self,
        got: Option<Transition>,
        want: Option<(BreakerState, BreakerState)>,
    ) -> Result<(), Violation> {
        let got_pair = got.map(|t| (t.from, t.to));
        ensure!(
            got_pair == want,
            self.step,
            "transition {got:?}, the model expects {want:?} (opens {}, consecutive {}, results {:?})",
            self.opens,
            self.consecutive,
            self.totals()
        );
        Ok(())
    }

    fn apply(&mut self, op: &BreakerOp) -> Result<(), Violation> {
        match *op {
            BreakerOp::Acquire => self.acquire(),
            BreakerOp::Record {
                call,
                failed,
                elapsed_ms,
            } => {
                if self.calls.is_empty() {
                    return Ok(());
                }
                let call = self.calls.swap_remove(usize::from(call) % self.calls.len());
                self.record(call, failed, Duration::from_millis(elapsed_ms.into()))
            }
            BreakerOp::Release { call } => {
                if self.calls.is_empty() {
                    return Ok(());
                }
                let call = self.calls.swap_remove(usize::from(call) % self.calls.len());
                self.core.release(call.admission);
                if let Model::HalfOpen { out, .. } = &mut self.model
                    && call.probe
                    && call.generation == self.generation
                {
                    *out = out.saturating_sub(1);
                }
                Ok(())
            }
            BreakerOp::Advance { ms } => {
                self.now += Duration::from_millis(ms.into());
                Ok(())
            }
            BreakerOp::ForceOpen => {
                let t = self.core.force_open();
                let from = self.enter(Model::ForcedOpen);
                self.expect(t, Some((from, BreakerState::ForcedOpen)))
            }
            BreakerOp::ForceClose => {
                let t = self.core.force_close();
                let from = self.enter(Model::ForcedClosed);
                self.expect(t, Some((from, BreakerState::ForcedClosed)))
            }
            BreakerOp::Reset => {
                let t = self.core.reset();
                self.opens = 0;
                let from = self.enter(Model::Closed);
                self.expect(t, Some((from, BreakerState::Closed)))
            }
            BreakerOp::Retune(config) => {
                let settings = config.settings();
                if settings.validate().is_ok() {
                    if !same_window_shape(self.settings.window(), settings.window()) {
                        self.results.clear();
                    }
                    self.core.set_settings(settings.clone());
                    self.settings = settings;
                }
                Ok(())
            }
        }
    }

    fn acquire(&mut self) -> Result<(), Violation> {
        let would = self.core.would_admit(self.now);
        let (admission, t) = self.core.try_acquire(self.now);
        let mut want = None;
        if let Model::Open { until } = self.model
            && self.now >= until
        {
            let from = self.enter(Model::HalfOpen { out: 0, ok: 0 });
            want = Some((from, BreakerState::HalfOpen));
        }
        self.expect(t, want)?;
        let probes = self.settings.probes();
        if let Model::HalfOpen { out, .. } = self.model {
            ensure!(
                admission.is_none_or(|a| !a.is_probe() || out < probes),
                self.step,
                "a probe admitted with {out} of {probes} probes already out"
            );
        }
        let expected = match &mut self.model {
            Model::Closed | Model::ForcedClosed => Some(false),
            Model::HalfOpen { out, .. } if *out < probes => {
                *out += 1;
                Some(true)
            }
            _ => None,
        };
        let got = admission.map(|a| a.is_probe());
        ensure!(
            got == expected,
            self.step,
            "acquire in {:?} gave {admission:?}, the model expects probe = {expected:?} \
             ({probes} probes configured)",
            self.model
        );
        ensure!(
            would == got.is_some(),
            self.step,
            "would_admit said {would} but acquire gave {admission:?}"
        );
        if let (Some(admission), Some(probe)) = (admission, expected) {
            self.calls.push(OpenCall {
                admission,
                generation: self.generation,
                probe,
            });
        }
        Ok(())
    }

    fn record(&mut self, call: OpenCall, failed: bool, elapsed: Duration) -> Result<(), Violation> {
        let now = self.now;
        let t = self
            .core
            .record(call.admission, failed, elapsed, now, &mut self.rng);
        if call.generation != self.generation {
            return self.expect(t, None);
        }
        let slow = self
            .settings
            .slow_calls()
            .is_some_and(|(limit, _)| elapsed >= limit);
        match self.model {
            Model::Closed => {
                self.consecutive = if failed { self.consecutive + 1 } else { 0 };
                self.results.push_back((now, failed, slow));
                if self.tripped() {
                    self.check_open(t)
                } else {
                    self.expect(t, None)
                }
            }
            Model::HalfOpen { out, ok } if call.probe => {
                if failed || slow {
                    return self.check_open(t);
                }
                if ok + 1 >= self.settings.probes() {
                    self.opens = 0;
                    let from = self.enter(Model::Closed);
                    return self.expect(t, Some((from, BreakerState::Closed)));
                }
                self.model = Model::HalfOpen { out, ok: ok + 1 };
                self.expect(t, None)
            }
            _ => self.expect(t, None),
        }
    }

    /// The breaker must open now, for an open time within its bounds.
    fn check_open(&mut self, t: Option<Transition>) -> Result<(), Violation> {
        let from = self.model.state();
        self.expect(t, Some((from, BreakerState::Open)))?;
        let open_for = t.and_then(|t| t.open_for);
        let ceiling = open_ceiling(&self.settings, self.opens);
        let floor = ceiling.mul_f64(1.0 - self.settings.open_jitter());
        let slack = Duration::from_micros(1);
        ensure!(
            open_for.is_some_and(|d| d + slack >= floor && d <= ceiling + slack),
            self.step,
            "open #{} for {open_for:?}, outside [{floor:?}, {ceiling:?}]",
            self.opens + 1
        );
        let until = self.now + open_for.unwrap_or_default();
        self.opens += 1;
        self.enter(Model::Open { until });
        Ok(())
    }

    /// Calls, failures and slow calls in the window now.
    fn totals(&self) -> (u32, u32, u32) {
        let in_window: Vec<&(Instant, bool, bool)> = match self.settings.window() {
            Window::Count(n) => self.results.iter().rev().take(n as usize).collect(),
            Window::Time(d) => {
                let slice = (d.as_nanos() as u64 / TIME_SLICES).max(1);
                let Some(&(epoch, ..)) = self.results.front() else {
                    return (0, 0, 0);
                };
                let tick =
                    |at: Instant| at.saturating_duration_since(epoch).as_nanos() as u64 / slice;
                let oldest = tick(self.now).saturating_sub(TIME_SLICES - 1);
                self.results
                    .iter()
                    .filter(|r| tick(r.0) >= oldest)
                    .collect()
            }
        };
        let failures = in_window.iter().filter(|r| r.1).count() as u32;
        let slow = in_window.iter().filter(|r| r.2).count() as u32;
        (in_window.len() as u32, failures, slow)
    }

    fn tripped(&self) -> bool {
        let s = &self.settings;
        if s.consecutive_failures()
            .is_some_and(|n| self.consecutive >= n)
        {
            return true;
        }
        let (calls, failures, slow) = self.totals();
        if calls == 0 || calls < s.min_calls() {
            return false;
        }
        let calls = f64::from(calls);
        s.failure_rate()
            .is_some_and(|r| f64::from(failures) >= r * calls)
            || s.slow_calls()
                .is_some_and(|(_, r)| f64::from(slow) >= r * calls)
    }

    fn compare(&self) -> Result<(), Violation> {
        ensure!(
            self.core.state() == self.model.state(),
            self.step,
            "breaker is {:?}, the model is {:?}",
            self.core.state(),
            self.model
        );
        if let Model::Open { until } = self.model {
            ensure!(
                self.core.open_until() == Some(until),
                self.step,
                "open until {:?}, the model says {until:?}",
                self.core.open_until()
            );
        }
        Ok(())
    }
}

/// `min(cap, base × multiplier^k)`, computed independently.
fn open_ceiling(settings: &BreakerSettings, k: u32) -> Duration {
    let open = settings.open_time();
    let secs = open.base().as_secs_f64() * open.multiplier().powi(k.min(i32::MAX as u32) as i32);
    if !secs.is_finite() || secs >= open.cap().as_secs_f64() {
        open.cap()
    } else {
        Duration::from_secs_f64(secs)
    }
}

fn same_window_shape(a: Window, b: Window) -> bool {
    match (a, b) {
        (Window::Count(x), Window::Count(y)) => x == y,
        (Window::Time(x), Window::Time(y)) => {
            (x.as_nanos() as u64 / TIME_SLICES).max(1) == (y.as_nanos() as u64 / TIME_SLICES).max(1)
        }
        _ => false,
    }
}
