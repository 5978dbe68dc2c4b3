//! Circuit-breaker transitions checked against a small reference model.
//!
//! [`run_breaker`] drives a [`BreakerCore`](towline::policy::breaker::BreakerCore) with acquires, results (failed
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
//! - [`BreakerCore::would_admit`](towline::policy::breaker::BreakerCore::would_admit) tells exactly whether an acquire would be
//!   admitted;
//! - invalid settings are refused by [`BreakerSettings::validate`] (and by
//!   [`CircuitBreaker::new`]), never a panic.

use std::time::Duration;

use arbitrary::Arbitrary;

mod model;

use model::Check;

use super::{Violation, ensure};
use towline::policy::breaker::{BreakerSettings, CircuitBreaker, Window};

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
