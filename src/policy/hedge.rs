//! Hedging: sending a backup copy of a slow request to another instance.
//!
//! Most slow calls are slow because of the instance (a GC pause, a noisy
//! neighbour), not the request. Sending a copy after the call has taken
//! longer than nearly all calls do (say the p95) cuts the tail at the cost
//! of a few percent extra load. The first success wins and the other
//! attempts are dropped, which cancels them.
//!
//! - Delay ([`HedgeDelay`]): fixed, or a percentile of recent latency from a
//!   [`LatencyHistogram`] (µs resolution, rotating window, minimum sample
//!   count; no hedge is sent until the window has enough samples). Extra
//!   attempt `k` is sent `k × delay` after the call started.
//! - Up to `max_extra` extra attempts (default 1, at most 16).
//! - A hedge budget ([`Budget`], default 10% of calls, no floor) caps the
//!   extra load; a refused hedge ends hedging for that call.
//! - A retryable failure of one attempt does not end the call while another
//!   is pending; a non-retryable failure or a success ends it.
//!
//! Defaults ([`HedgeSettings::default`]): p95 delay, 1 extra attempt,
//! [`BudgetSettings::hedge_default`], [`LatencySettings::default`].
//!
//! [`HedgeState`] is the per-call decision core; [`HedgeLayer`](super::HedgeLayer)
//! the standalone layer (hedges go to clones of the inner service); the
//! channel sends each hedge to an endpoint the call has not tried.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use towline::policy::budget::Budget;
//! use towline::policy::hedge::{HedgeDelay, HedgeSettings, HedgeState, HedgeStep};
//!
//! let settings = HedgeSettings::default().with_delay(HedgeDelay::Fixed(Duration::from_millis(20)));
//! let start = Instant::now();
//! let budget = Budget::new(settings.budget(), start);
//! for _ in 0..10 { budget.deposit(start); } // 10 calls × 10% = one hedge
//! let mut call = HedgeState::new(Some(Duration::from_millis(20)));
//! assert_eq!(call.next_at(&settings, start), Some(start + Duration::from_millis(20)));
//! assert_eq!(call.on_due(&settings, start, &budget), HedgeStep::Send);
//! assert_eq!(call.next_at(&settings, start), None); // one extra attempt by default
//! ```

use std::time::{Duration, Instant};

use super::budget::{Budget, BudgetSettings};
use super::latency::{LatencyHistogram, LatencySettings};
use crate::error::BuildError;

/// The most extra attempts a call may be allowed.
pub const MAX_EXTRA_LIMIT: u32 = 16;

/// When the first extra attempt is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeDelay {
    /// After this fixed time (must be positive).
    Fixed(Duration),
    /// After this quantile (0 < q < 1, e.g. 0.95) of recent latency.
    Percentile(f64),
}

/// Hedging settings; checked by [`HedgeSettings::validate`] when given to
/// a layer, a builder or a tuning handle.
#[derive(Debug, Clone, PartialEq)]
pub struct HedgeSettings {
    delay: HedgeDelay,
    max_extra: u32,
    budget: BudgetSettings,
    latency: LatencySettings,
}

impl Default for HedgeSettings {
    fn default() -> Self {
        HedgeSettings {
            delay: HedgeDelay::Percentile(0.95),
            max_extra: 1,
            budget: BudgetSettings::hedge_default(),
            latency: LatencySettings::default(),
        }
    }
}

impl HedgeSettings {
    /// When to send the first extra attempt (default p95).
    pub fn with_delay(mut self, delay: HedgeDelay) -> Self {
        self.delay = delay;
        self
    }

    /// Extra attempts per call (default 1; 1 to 16).
    pub fn with_max_extra(mut self, n: u32) -> Self {
        self.max_extra = n;
        self
    }

    /// The hedge budget (default 10%, no floor, 10 s).
    pub fn with_budget(mut self, budget: BudgetSettings) -> Self {
        self.budget = budget;
        self
    }

    /// The latency window used by a percentile delay (default
    /// [`LatencySettings::default`]). Fixed when the policy is built: a
    /// tuning handle cannot change it.
    pub fn with_latency(mut self, latency: LatencySettings) -> Self {
        self.latency = latency;
        self
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), BuildError> {
        match self.delay {
            HedgeDelay::Fixed(d) if d.is_zero() => {
                return Err(BuildError::new(
                    "hedge.delay",
                    "a fixed hedge delay must be greater than zero (zero would send every request twice at once)",
                ));
            }
            HedgeDelay::Percentile(q) if !(q > 0.0 && q < 1.0) => {
                return Err(BuildError::new(
                    "hedge.delay",
                    format!("a percentile must be strictly between 0 and 1 (e.g. 0.95), got {q}"),
                ));
            }
            _ => {}
        }
        if self.max_extra == 0 || self.max_extra > MAX_EXTRA_LIMIT {
            return Err(BuildError::new(
                "hedge.max_extra",
                format!(
                    "must be between 1 and {MAX_EXTRA_LIMIT} (leave hedging off to send none), got {}",
                    self.max_extra
                ),
            ));
        }
        self.budget.validate()?;
        self.latency.validate()
    }

    /// The delay rule.
    pub fn delay(&self) -> HedgeDelay {
        self.delay
    }

    /// Extra attempts per call.
    pub fn max_extra(&self) -> u32 {
        self.max_extra
    }

    /// The hedge budget settings.
    pub fn budget(&self) -> &BudgetSettings {
        &self.budget
    }

    /// The latency window settings.
    pub fn latency(&self) -> &LatencySettings {
        &self.latency
    }

    /// The hedge delay for a call starting at `now`, or `None` when a
    /// percentile delay has too few samples yet (no hedging).
    pub fn delay_now(&self, latency: &LatencyHistogram, now: Instant) -> Option<Duration> {
        match self.delay {
            HedgeDelay::Fixed(d) => Some(d),
            HedgeDelay::Percentile(q) => latency.percentile_cached(q, now),
        }
    }
}

/// What to do when a hedge is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeStep {
    /// Send an extra attempt now (a budget token was taken).
    Send,
    /// The budget refused: no more hedges for this call.
    BudgetExhausted,
    /// All extra attempts were sent already.
    Done,
}

/// The hedging state of one call.
#[derive(Debug, Clone)]
pub struct HedgeState {
    delay: Option<Duration>,
    sent: u32,
    stopped: bool,
}

impl HedgeState {
    /// A call hedged after `delay` (`None`: not hedged).
    pub fn new(delay: Option<Duration>) -> Self {
        HedgeState {
            delay,
            sent: 0,
            stopped: false,
        }
    }

    /// Extra attempts sent so far.
    pub fn sent(&self) -> u32 {
        self.sent
    }

    /// When the next extra attempt is due for a call started at `started`,
    /// or `None` when no more will be sent.
    pub fn next_at(&self, settings: &HedgeSettings, started: Instant) -> Option<Instant> {
        self.next_after(settings)
            .map(|after| super::later(started, after))
    }

    /// How long after the call (or round) started the next extra attempt
    /// is due, or `None` when no more will be sent.
    #[inline]
    pub fn next_after(&self, settings: &HedgeSettings) -> Option<Duration> {
        let delay = self.delay?;
        if self.stopped || self.sent >= settings.max_extra {
            return None;
        }
        Some(delay.saturating_mul(self.sent + 1))
    }

    /// Decides at `now`, when a hedge is due, whether to send it.
    pub fn on_due(&mut self, settings: &HedgeSettings, now: Instant, budget: &Budget) -> HedgeStep {
        if self.stopped || self.delay.is_none() || self.sent >= settings.max_extra {
            return HedgeStep::Done;
        }
        if !budget.try_withdraw(now) {
            self.stopped = true;
            return HedgeStep::BudgetExhausted;
        }
        self.sent += 1;
        HedgeStep::Send
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn extra_attempts_are_spaced_by_the_delay_up_to_the_limit() {
        let s = HedgeSettings::default().with_max_extra(4);
        let t0 = Instant::now();
        let budget = Budget::new(
            &BudgetSettings::new(1.0, 0, Duration::from_secs(1)).unwrap(),
            t0,
        );
        for _ in 0..10 {
            budget.deposit(t0);
        }
        let mut call = HedgeState::new(Some(10 * MS));
        let mut due = Vec::new();
        while let Some(at) = call.next_at(&s, t0) {
            due.push(at - t0);
            assert_eq!(call.on_due(&s, at, &budget), HedgeStep::Send);
        }
        assert_eq!(due, [10 * MS, 20 * MS, 30 * MS, 40 * MS]);
        assert_eq!(call.on_due(&s, t0, &budget), HedgeStep::Done);
        assert_eq!(call.sent(), 4);
    }

    #[test]
    fn budget_refusal_ends_hedging_for_the_call() {
        let s = HedgeSettings::default().with_max_extra(2);
        let t0 = Instant::now();
        let budget = Budget::new(s.budget(), t0);
        let mut call = HedgeState::new(Some(MS));
        assert_eq!(call.on_due(&s, t0, &budget), HedgeStep::BudgetExhausted);
        assert_eq!(call.next_at(&s, t0), None);
        assert_eq!(HedgeState::new(None).next_at(&s, t0), None);
    }

    #[test]
    fn invalid_settings_are_refused() {
        let d = HedgeSettings::default();
        let e = d
            .clone()
            .with_delay(HedgeDelay::Fixed(Duration::ZERO))
            .validate()
            .unwrap_err();
        assert_eq!(e.setting(), "hedge.delay");
        assert!(e.reason().contains("greater than zero"));
        for q in [0.0, 1.0, -1.0, f64::NAN] {
            let e = d
                .clone()
                .with_delay(HedgeDelay::Percentile(q))
                .validate()
                .unwrap_err();
            assert_eq!(e.setting(), "hedge.delay");
        }
        assert_eq!(
            d.clone()
                .with_max_extra(0)
                .validate()
                .unwrap_err()
                .setting(),
            "hedge.max_extra"
        );
        assert_eq!(
            d.clone()
                .with_max_extra(17)
                .validate()
                .unwrap_err()
                .setting(),
            "hedge.max_extra"
        );
        assert!(d.clone().with_max_extra(4).validate().is_ok());
    }
}
