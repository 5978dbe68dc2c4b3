//! Circuit-breaker settings.

use std::time::Duration;

use crate::error::BuildError;
use crate::policy::backoff::{Backoff, Jitter};

/// The window failure and slow-call rates are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last `n` calls (1 to 100,000).
    Count(u32),
    /// The calls of the last duration (100 ms to 1 hour), in 10 slices.
    Time(Duration),
}

/// Breaker settings. Every trigger can be turned off; at least one must be
/// on. Checked by [`BreakerSettings::validate`] when a breaker is built or
/// retuned.
///
/// Defaults: open after 5 consecutive failures, or a failure rate of 50%
/// over the last 100 calls once 20 calls were seen; slow-call trigger off;
/// open for 5 s, 1.5 times as long per re-open (7.5 s, 11.25 s, …) with up
/// to 20% jitter, capped at 60 s; 3 half-open probes. The growth is 1.5, not
/// 2, so that a probe failing at the very end of an outage does not keep a
/// recovered endpoint out for twice the base time (the chaos suite's 10 s
/// stall came back to fair share after up to 8.8 s with 2).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    pub(super) consecutive_failures: Option<u32>,
    pub(super) failure_rate: Option<f64>,
    pub(super) slow_call: Option<(Duration, f64)>,
    pub(super) window: Window,
    pub(super) min_calls: u32,
    pub(super) open: Backoff,
    pub(super) open_jitter: f64,
    pub(super) probes: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            consecutive_failures: Some(5),
            failure_rate: Some(0.5),
            slow_call: None,
            window: Window::Count(100),
            min_calls: 20,
            open: Backoff::from_parts(Duration::from_secs(5), 1.5, Duration::from_secs(60))
                .with_jitter(Jitter::None),
            open_jitter: 0.2,
            probes: 3,
        }
    }
}

impl BreakerSettings {
    /// Opens after `n` failures in a row (`None`: trigger off; default 5).
    pub fn with_consecutive_failures(mut self, n: Option<u32>) -> Self {
        self.consecutive_failures = n;
        self
    }

    /// Opens when the share of failed calls in the window reaches `rate`
    /// (0 < rate ≤ 1; `None`: trigger off; default 0.5).
    pub fn with_failure_rate(mut self, rate: Option<f64>) -> Self {
        self.failure_rate = rate;
        self
    }

    /// Opens when the share of calls taking at least `slow_after` reaches
    /// `rate` (`None`: trigger off, the default).
    pub fn with_slow_calls(mut self, slow: Option<(Duration, f64)>) -> Self {
        self.slow_call = slow;
        self
    }

    /// The window of the rate triggers (default the last 100 calls).
    pub fn with_window(mut self, window: Window) -> Self {
        self.window = window;
        self
    }

    /// Calls the window must hold before a rate trigger may open (default
    /// 20; at least 1).
    pub fn with_min_calls(mut self, n: u32) -> Self {
        self.min_calls = n;
        self
    }

    /// Open time: `base × multiplier^k` for the `k`-th re-open in a row,
    /// capped (default 5 s × 1.5 up to 60 s).
    pub fn with_open_time(mut self, base: Duration, multiplier: f64, cap: Duration) -> Self {
        self.open = Backoff::from_parts(base, multiplier, cap).with_jitter(Jitter::None);
        self
    }

    /// Each open time is shortened by a random share up to `jitter`
    /// (0 ≤ jitter < 1; default 0.2), so breakers opened together do not
    /// probe together. Open times grow strictly while
    /// `multiplier × (1 − jitter) > 1`.
    pub fn with_open_jitter(mut self, jitter: f64) -> Self {
        self.open_jitter = jitter;
        self
    }

    /// Probe calls admitted while half-open; all must succeed to close
    /// (default 3; 1 to 1,000).
    pub fn with_probes(mut self, n: u32) -> Self {
        self.probes = n;
        self
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), BuildError> {
        if self.consecutive_failures.is_none()
            && self.failure_rate.is_none()
            && self.slow_call.is_none()
        {
            return Err(BuildError::new(
                "breaker.triggers",
                "at least one trigger (consecutive failures, failure rate, slow calls) must be on",
            ));
        }
        if self.consecutive_failures == Some(0) {
            return Err(BuildError::new(
                "breaker.consecutive_failures",
                "must be at least 1",
            ));
        }
        let rate_ok = |r: f64| r > 0.0 && r <= 1.0;
        if let Some(r) = self.failure_rate
            && !rate_ok(r)
        {
            return Err(BuildError::new(
                "breaker.failure_rate",
                format!("must be above 0 and at most 1, got {r}"),
            ));
        }
        if let Some((slow_after, r)) = self.slow_call {
            if slow_after.is_zero() {
                return Err(BuildError::new(
                    "breaker.slow_call_duration",
                    "must be greater than zero",
                ));
            }
            if !rate_ok(r) {
                return Err(BuildError::new(
                    "breaker.slow_call_rate",
                    format!("must be above 0 and at most 1, got {r}"),
                ));
            }
        }
        match self.window {
            Window::Count(n) if n == 0 || n > 100_000 => {
                return Err(BuildError::new(
                    "breaker.window",
                    format!("a count window must hold 1 to 100000 calls, got {n}"),
                ));
            }
            Window::Time(d) if d < Duration::from_millis(100) || d > Duration::from_secs(3600) => {
                return Err(BuildError::new(
                    "breaker.window",
                    format!("a time window must be between 100 ms and 1 hour, got {d:?}"),
                ));
            }
            _ => {}
        }
        if self.min_calls == 0 {
            return Err(BuildError::new("breaker.min_calls", "must be at least 1"));
        }
        if let Window::Count(n) = self.window
            && self.min_calls > n
        {
            return Err(BuildError::new(
                "breaker.min_calls",
                format!(
                    "must not exceed the count window ({n}), got {}",
                    self.min_calls
                ),
            ));
        }
        self.open.validate().map_err(|e| {
            BuildError::new(
                "breaker.open_time",
                format!("{}: {}", e.setting(), e.reason()),
            )
        })?;
        if !(0.0..1.0).contains(&self.open_jitter) {
            return Err(BuildError::new(
                "breaker.open_jitter",
                format!("must be at least 0 and below 1, got {}", self.open_jitter),
            ));
        }
        if self.probes == 0 || self.probes > 1_000 {
            return Err(BuildError::new(
                "breaker.probes",
                format!("must be between 1 and 1000, got {}", self.probes),
            ));
        }
        Ok(())
    }

    /// The consecutive-failure threshold, if on.
    pub fn consecutive_failures(&self) -> Option<u32> {
        self.consecutive_failures
    }

    /// The failure-rate threshold, if on.
    pub fn failure_rate(&self) -> Option<f64> {
        self.failure_rate
    }

    /// The slow-call duration and rate threshold, if on.
    pub fn slow_calls(&self) -> Option<(Duration, f64)> {
        self.slow_call
    }

    /// The rate window.
    pub fn window(&self) -> Window {
        self.window
    }

    /// Calls needed before a rate trigger may open.
    pub fn min_calls(&self) -> u32 {
        self.min_calls
    }

    /// The open-time growth (no jitter inside; see
    /// [`open_jitter`](Self::open_jitter)).
    pub fn open_time(&self) -> &Backoff {
        &self.open
    }

    /// The open-time jitter share.
    pub fn open_jitter(&self) -> f64 {
        self.open_jitter
    }

    /// Half-open probes.
    pub fn probes(&self) -> u32 {
        self.probes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_invalid_setting_is_refused_with_its_name() {
        let d = BreakerSettings::default;
        let s = Duration::from_secs(1);
        let cases: Vec<(BreakerSettings, &str)> = vec![
            (
                d().with_consecutive_failures(None).with_failure_rate(None),
                "breaker.triggers",
            ),
            (
                d().with_consecutive_failures(Some(0)),
                "breaker.consecutive_failures",
            ),
            (d().with_failure_rate(Some(0.0)), "breaker.failure_rate"),
            (d().with_failure_rate(Some(1.5)), "breaker.failure_rate"),
            (
                d().with_slow_calls(Some((Duration::ZERO, 0.5))),
                "breaker.slow_call_duration",
            ),
            (
                d().with_slow_calls(Some((s, 2.0))),
                "breaker.slow_call_rate",
            ),
            (d().with_window(Window::Count(0)), "breaker.window"),
            (
                d().with_window(Window::Time(Duration::from_millis(1))),
                "breaker.window",
            ),
            (d().with_min_calls(0), "breaker.min_calls"),
            (d().with_window(Window::Count(10)), "breaker.min_calls"),
            (
                d().with_open_time(Duration::ZERO, 2.0, s),
                "breaker.open_time",
            ),
            (d().with_open_time(s, 0.5, s), "breaker.open_time"),
            (
                d().with_open_time(s, 2.0, Duration::from_millis(1)),
                "breaker.open_time",
            ),
            (d().with_open_jitter(1.0), "breaker.open_jitter"),
            (d().with_probes(0), "breaker.probes"),
        ];
        for (settings, name) in cases {
            let e = settings.validate().unwrap_err();
            assert_eq!(e.setting(), name, "{e}");
            assert!(!e.reason().is_empty());
        }
        assert!(d().validate().is_ok());
    }
}
