//! The policy sections of a scenario's configurations (retry, hedging,
//! breakers and their budgets), checked as the channel builder checks them.

use super::format::*;
use crate::policy::backoff::{Backoff, Jitter};
use crate::policy::breaker::{BreakerSettings, Window};
use crate::policy::budget::BudgetSettings;
use crate::policy::hedge::{HedgeDelay, HedgeSettings};
use crate::policy::retry::RetrySettings;

type Result<T> = std::result::Result<T, super::ScenarioError>;

/// An error naming where in the file it is.
pub(super) fn err<T>(at: &str, message: impl std::fmt::Display) -> Result<T> {
    Err(super::ScenarioError::new(format!("{at}: {message}")))
}

fn budget(b: &FileBudget, default: BudgetSettings, at: &str) -> Result<BudgetSettings> {
    BudgetSettings::new(
        b.ratio,
        b.floor_per_sec.unwrap_or(default.floor_per_sec()),
        b.window.map_or(default.window(), |w| w.0),
    )
    .or_else(|e| err(at, e))
}

pub(super) fn retry(r: &FileRetry, at: &str) -> Result<RetrySettings> {
    let mut s = RetrySettings::default();
    if let Some(n) = r.max_attempts {
        s = s.with_max_attempts(n);
    }
    if let Some(b) = &r.backoff {
        let d = Backoff::default();
        let jitter = match b.jitter {
            None => d.jitter(),
            Some(FileJitter::None) => Jitter::None,
            Some(FileJitter::Full) => Jitter::Full,
            Some(FileJitter::Equal) => Jitter::Equal,
            Some(FileJitter::Decorrelated) => Jitter::Decorrelated,
        };
        let backoff = Backoff::new(
            b.base.map_or(d.base(), |v| v.0),
            b.multiplier.unwrap_or(d.multiplier()),
            b.cap.map_or(d.cap(), |v| v.0),
        )
        .or_else(|e| err(at, e))?
        .with_jitter(jitter);
        s = s.with_backoff(backoff);
    }
    if let Some(b) = &r.budget {
        s = s.with_budget(budget(b, BudgetSettings::retry_default(), at)?);
    }
    if let Some(h) = r.honour_retry_after {
        s = s.with_honour_retry_after(h);
    }
    if let Some(m) = r.min_attempt_time {
        s = s.with_min_attempt_time(m.0);
    }
    Ok(s)
}

pub(super) fn hedge(h: &FileHedge, at: &str) -> Result<HedgeSettings> {
    let mut s = HedgeSettings::default();
    if let Some(text) = &h.delay {
        let delay = match text.strip_prefix('p') {
            Some(p) => match p.parse::<f64>() {
                Ok(p) => HedgeDelay::Percentile(p / 100.0),
                Err(_) => return err(at, format!("hedge delay `{text}`: write e.g. \"p95\"")),
            },
            None => HedgeDelay::Fixed(Dur::parse(text).or_else(|e| err(at, e))?),
        };
        s = s.with_delay(delay);
    }
    if let Some(n) = h.max_extra {
        s = s.with_max_extra(n);
    }
    if let Some(b) = &h.budget {
        s = s.with_budget(budget(b, BudgetSettings::hedge_default(), at)?);
    }
    Ok(s)
}

pub(super) fn breaker(b: &FileBreaker, at: &str) -> Result<BreakerSettings> {
    let off = |at: &str| err(at, "write a value, or false to turn it off");
    let mut s = BreakerSettings::default();
    match &b.consecutive_failures {
        None => {}
        Some(FileOrOff::Off(false)) => s = s.with_consecutive_failures(None),
        Some(FileOrOff::On(n)) => s = s.with_consecutive_failures(Some(*n)),
        Some(FileOrOff::Off(true)) => return off(&format!("{at}: breaker.consecutive_failures")),
    }
    match &b.failure_rate {
        None => {}
        Some(FileOrOff::Off(false)) => s = s.with_failure_rate(None),
        Some(FileOrOff::On(r)) => s = s.with_failure_rate(Some(*r)),
        Some(FileOrOff::Off(true)) => return off(&format!("{at}: breaker.failure_rate")),
    }
    match &b.window {
        None => {}
        Some(FileWindow::Calls(n)) => s = s.with_window(Window::Count(*n)),
        Some(FileWindow::Time(t)) => {
            s = s.with_window(Window::Time(Dur::parse(t).or_else(|e| err(at, e))?));
        }
    }
    if let Some(n) = b.min_calls {
        s = s.with_min_calls(n);
    }
    if b.open.is_some() || b.open_multiplier.is_some() || b.open_cap.is_some() {
        let d = *s.open_time();
        s = s.with_open_time(
            b.open.map_or(d.base(), |v| v.0),
            b.open_multiplier.unwrap_or(d.multiplier()),
            b.open_cap.map_or(d.cap(), |v| v.0),
        );
    }
    if let Some(j) = b.open_jitter {
        s = s.with_open_jitter(j);
    }
    if let Some(n) = b.probes {
        s = s.with_probes(n);
    }
    s.validate().or_else(|e| err(at, e))?;
    Ok(s)
}
