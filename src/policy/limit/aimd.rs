//! Additive increase, multiplicative decrease: TCP's congestion avoidance
//! applied to in-flight calls.

use std::time::{Duration, Instant};

use super::{Sample, check_limits};
use crate::error::BuildError;

/// Settings of the [`Aimd`] algorithm. Defaults are given on each setter;
/// [`AimdSettings::default`] has them all.
#[derive(Debug, Clone, PartialEq)]
pub struct AimdSettings {
    pub(crate) initial_limit: usize,
    pub(crate) min_limit: usize,
    pub(crate) max_limit: usize,
    pub(crate) backoff: f64,
    pub(crate) rtt_threshold: Duration,
}

impl Default for AimdSettings {
    fn default() -> Self {
        AimdSettings {
            initial_limit: 20,
            min_limit: 3,
            max_limit: 1000,
            backoff: 0.9,
            rtt_threshold: Duration::from_secs(1),
        }
    }
}

impl AimdSettings {
    /// The starting limit (default 20) and its bounds (default 3 and 1000).
    /// `1 <= min <= initial <= max`.
    pub fn with_limits(mut self, min: usize, initial: usize, max: usize) -> Self {
        (self.min_limit, self.initial_limit, self.max_limit) = (min, initial, max);
        self
    }

    /// The factor applied to the limit on overload (default 0.9). In
    /// `(0, 1)`.
    pub fn with_backoff(mut self, backoff: f64) -> Self {
        self.backoff = backoff;
        self
    }

    /// A call slower than this counts as overload (default 1 s). Above
    /// zero.
    pub fn with_rtt_threshold(mut self, threshold: Duration) -> Self {
        self.rtt_threshold = threshold;
        self
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), BuildError> {
        check_limits(self.min_limit, self.initial_limit, self.max_limit)?;
        if !(self.backoff > 0.0 && self.backoff < 1.0) {
            return Err(BuildError::new("backoff", "must be in (0, 1)"));
        }
        if self.rtt_threshold.is_zero() {
            return Err(BuildError::new("rtt_threshold", "must be above zero"));
        }
        Ok(())
    }
}

/// The AIMD algorithm's state (a sans-IO core: the time is an argument).
///
/// - A call that was dropped (overloaded, timed out) or took longer than
///   `rtt_threshold` multiplies the limit by `backoff`, at most once per
///   round trip: a call that began before the last decrease was sent under
///   the old limit and says nothing about the new one.
/// - Any other call adds `1 / limit`, so the limit grows by about one per
///   round trip's worth of calls, unless fewer than half the limit were in
///   flight (the limit was not what held calls back).
///
/// Simpler than [`Gradient`](super::Gradient) and blind to latency below
/// the threshold: it keeps queues as long as the threshold allows.
#[derive(Debug, Clone)]
pub struct Aimd {
    settings: AimdSettings,
    limit: f64,
    last_decrease: Option<Instant>,
}

impl Aimd {
    /// A new state at the initial limit. The settings must be valid
    /// ([`AimdSettings::validate`]).
    pub fn new(settings: AimdSettings) -> Self {
        Aimd {
            limit: settings.initial_limit as f64,
            settings,
            last_decrease: None,
        }
    }

    /// The limit in force.
    pub fn limit(&self) -> usize {
        self.limit.round() as usize
    }

    /// Takes new settings, keeping the limit (within the new bounds). The
    /// settings must be valid.
    pub fn retune(&mut self, settings: AimdSettings) {
        self.limit = self
            .limit
            .clamp(settings.min_limit as f64, settings.max_limit as f64);
        self.settings = settings;
    }

    /// Sets the limit (within the bounds): for a limiter that switches to
    /// this algorithm.
    pub fn resume_at(&mut self, limit: usize) {
        let s = &self.settings;
        self.limit = (limit as f64).clamp(s.min_limit as f64, s.max_limit as f64);
    }

    /// Records one finished call at `now`. Returns whether the limit
    /// moved.
    pub fn on_sample(&mut self, sample: Sample, now: Instant) -> bool {
        let before = self.limit;
        let s = &self.settings;
        if sample.dropped || sample.rtt > s.rtt_threshold {
            let began = now.checked_sub(sample.rtt);
            let fresh = match (self.last_decrease, began) {
                (None, _) => true,
                (Some(last), Some(began)) => began >= last,
                (Some(_), None) => false,
            };
            if fresh {
                self.limit = (self.limit * s.backoff).max(s.min_limit as f64);
                self.last_decrease = Some(now);
            }
        } else if sample.in_flight as f64 * 2.0 >= self.limit {
            self.limit = (self.limit + 1.0 / self.limit).min(s.max_limit as f64);
        }
        self.limit != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ok(rtt: Duration, in_flight: usize) -> Sample {
        Sample {
            rtt,
            in_flight,
            dropped: false,
        }
    }

    #[test]
    fn grows_by_about_one_per_limit_samples() {
        let mut a = Aimd::new(AimdSettings::default());
        let now = Instant::now();
        for _ in 0..20 {
            a.on_sample(ok(10 * MS, 20), now);
        }
        assert_eq!(a.limit(), 21);
        // App-limited: no growth.
        let before = a.limit;
        a.on_sample(ok(10 * MS, 5), now);
        assert_eq!(a.limit, before);
    }

    #[test]
    fn decreases_once_per_round_trip() {
        let mut a = Aimd::new(AimdSettings::default());
        let t0 = Instant::now() + Duration::from_secs(10);
        let dropped = |rtt| Sample {
            dropped: true,
            ..ok(rtt, 20)
        };
        a.on_sample(dropped(10 * MS), t0);
        assert_eq!(a.limit, 18.0);
        // Calls sent before that decrease: ignored.
        a.on_sample(dropped(10 * MS), t0 + 5 * MS);
        a.on_sample(ok(2 * Duration::from_secs(1), 20), t0 + 9 * MS);
        assert_eq!(a.limit, 18.0);
        // A call sent after it: another decrease.
        a.on_sample(dropped(10 * MS), t0 + 10 * MS);
        assert!((a.limit - 16.2).abs() < 1e-9);
    }

    #[test]
    fn slow_calls_count_as_overload_and_the_floor_holds() {
        let settings = AimdSettings::default().with_rtt_threshold(50 * MS);
        let mut a = Aimd::new(settings);
        let mut now = Instant::now();
        for _ in 0..100 {
            now += 60 * MS;
            a.on_sample(ok(60 * MS, 20), now);
        }
        assert_eq!(a.limit(), 3);
    }

    #[test]
    fn invalid_settings_are_refused() {
        let d = AimdSettings::default;
        let cases = [
            (d().with_limits(0, 0, 1), "limits"),
            (d().with_limits(3, 2, 9), "limits"),
            (d().with_backoff(1.0), "backoff"),
            (d().with_backoff(0.0), "backoff"),
            (d().with_rtt_threshold(Duration::ZERO), "rtt_threshold"),
        ];
        for (settings, setting) in cases {
            assert_eq!(settings.validate().unwrap_err().setting(), setting);
        }
        assert!(d().validate().is_ok());
    }
}
