//! The reference model of a breaker and the checks made after each step.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{BreakerOp, TIME_SLICES};
use crate::{Violation, ensure};
use towline::policy::breaker::{
    Admission, BreakerCore, BreakerSettings, BreakerState, Transition, Window,
};
use towline::rng::Rng;

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

pub(super) struct Check {
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
    pub(super) step: usize,
}

impl Check {
    pub(super) fn new(settings: BreakerSettings) -> Self {
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

    pub(super) fn apply(&mut self, op: &BreakerOp) -> Result<(), Violation> {
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

    pub(super) fn compare(&self) -> Result<(), Violation> {
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
