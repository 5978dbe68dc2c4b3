//! Concurrency limits and load ramps in scenario files: their conversion
//! from the file format, checked as the channel builder checks them.

use std::time::Duration;

use super::ScenarioError;
use super::format::{FileAimd, FileGradient, FileLimit};
use crate::policy::limit::{AimdSettings, GradientSettings, LimitAlgorithm, LimitSettings};

type Result<T> = std::result::Result<T, ScenarioError>;

fn err<T>(at: &str, message: impl std::fmt::Display) -> Result<T> {
    Err(ScenarioError::new(format!("{at}: {message}")))
}

/// A `concurrency_limit` (or `endpoint_concurrency_limit`) table: exactly
/// one of `gradient`, `aimd` and `fixed`, and optionally a queue.
pub(crate) fn limit(l: &FileLimit, at: &str) -> Result<LimitSettings> {
    let algorithm = match (&l.gradient, &l.aimd, l.fixed) {
        (Some(g), None, None) => LimitAlgorithm::Gradient(gradient(g)),
        (None, Some(a), None) => LimitAlgorithm::Aimd(aimd(a)),
        (None, None, Some(n)) => LimitAlgorithm::Fixed(n),
        _ => {
            return err(
                at,
                "a concurrency limit takes exactly one of gradient = {…}, aimd = {…}, fixed = N",
            );
        }
    };
    let mut settings = LimitSettings::new(algorithm);
    match (l.queue, l.max_wait) {
        (None, None) => {}
        (Some(length), Some(wait)) => settings = settings.with_queue(length, wait.0),
        _ => return err(at, "a queue takes both `queue` (its length) and `max_wait`"),
    }
    settings.validate().or_else(|e| err(at, e))?;
    Ok(settings)
}

fn gradient(g: &FileGradient) -> GradientSettings {
    let d = GradientSettings::default();
    let (min, initial, max) = g
        .limits
        .unwrap_or((d.min_limit, d.initial_limit, d.max_limit));
    GradientSettings::default()
        .with_limits(min, initial, max)
        .with_tolerance(g.tolerance.unwrap_or(d.tolerance))
        .with_smoothing(g.smoothing.unwrap_or(d.smoothing))
        .with_window(
            g.window.map_or(d.window, |w| w.0),
            g.window_samples.unwrap_or(d.window_samples),
        )
        .with_probe_interval(
            g.probe_interval.map_or(d.probe_interval, |w| w.0),
            g.probe_jitter.unwrap_or(d.probe_jitter),
        )
        .with_probe(
            g.probe_limit.unwrap_or(d.probe_limit),
            g.probe_samples.unwrap_or(d.probe_samples),
        )
}

fn aimd(a: &FileAimd) -> AimdSettings {
    let d = AimdSettings::default();
    let (min, initial, max) = a
        .limits
        .unwrap_or((d.min_limit, d.initial_limit, d.max_limit));
    AimdSettings::default()
        .with_limits(min, initial, max)
        .with_backoff(a.backoff.unwrap_or(d.backoff))
        .with_rtt_threshold(a.rtt_threshold.map_or(d.rtt_threshold, |t| t.0))
}

/// A client's `ramp`: factors on its rate at times, increasing times,
/// factors above zero.
pub(crate) fn ramp(points: Vec<(Duration, f64)>, at: &str) -> Result<Ramp> {
    if points.is_empty() {
        return err(at, "a ramp needs at least one [time, factor] point");
    }
    if points.windows(2).any(|p| p[1].0 <= p[0].0) {
        return err(at, "ramp times must increase");
    }
    if points.iter().any(|(_, f)| !(f.is_finite() && *f > 0.0)) {
        return err(at, "ramp factors must be above zero");
    }
    Ok(Ramp { points })
}

/// Factors on a client's rate over time: linear between points, the first
/// one before them and the last one after.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ramp {
    points: Vec<(Duration, f64)>,
}

impl Ramp {
    /// The factor at `t` seconds.
    pub(crate) fn at(&self, t: f64) -> f64 {
        let first = self.points[0];
        if t <= first.0.as_secs_f64() {
            return first.1;
        }
        for pair in self.points.windows(2) {
            let ((t0, f0), (t1, f1)) = (pair[0], pair[1]);
            let (t0, t1) = (t0.as_secs_f64(), t1.as_secs_f64());
            if t < t1 {
                return f0 + (f1 - f0) * (t - t0) / (t1 - t0);
            }
        }
        self.points[self.points.len() - 1].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps_are_linear_between_points_and_held_outside() {
        let s = Duration::from_secs;
        let r = ramp(vec![(s(5), 0.5), (s(8), 2.0), (s(20), 2.0)], "r").unwrap();
        assert_eq!(r.at(0.0), 0.5);
        assert_eq!(r.at(6.5), 1.25);
        assert_eq!(r.at(30.0), 2.0);
        assert!(ramp(vec![(s(2), 1.0), (s(1), 1.0)], "r").is_err());
        assert!(ramp(vec![(s(2), 0.0)], "r").is_err());
        assert!(ramp(vec![], "r").is_err());
    }
}
