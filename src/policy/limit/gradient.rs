//! The gradient algorithm: grow the limit while latency stays near its
//! no-load value, shrink it in proportion as latency rises above it.

use std::time::{Duration, Instant};

use super::{Sample, check_limits};
use crate::clock::later;
use crate::error::BuildError;
use crate::rng::Rng;

/// The gradient is kept within `[MIN_GRADIENT, MAX_GRADIENT]`: one window
/// can at most halve the target or double it.
const MIN_GRADIENT: f64 = 0.5;
const MAX_GRADIENT: f64 = 2.0;
/// Windows in a row at the lowest gradient that make the baseline suspect
/// (the service may have become slower for good): probe again at once.
const STALE_WINDOWS: u32 = 5;
/// A window that holds `n` calls needs one more call's sample in
/// `n / SAMPLED` ([`Gradient::sample_every`]): its mean is then about as
/// precise as one over `2 × SAMPLED` calls, however many it sees.
const SAMPLED: u32 = 64;

/// Settings of the [`Gradient`] algorithm. Defaults are given on each
/// setter; [`GradientSettings::default`] has them all.
#[derive(Debug, Clone, PartialEq)]
pub struct GradientSettings {
    pub(crate) initial_limit: usize,
    pub(crate) min_limit: usize,
    pub(crate) max_limit: usize,
    pub(crate) tolerance: f64,
    pub(crate) smoothing: f64,
    pub(crate) window: Duration,
    pub(crate) window_samples: u32,
    pub(crate) probe_interval: Duration,
    pub(crate) probe_jitter: f64,
    pub(crate) probe_limit: usize,
    pub(crate) probe_samples: u32,
}

impl Default for GradientSettings {
    fn default() -> Self {
        GradientSettings {
            initial_limit: 20,
            min_limit: 3,
            max_limit: 1000,
            tolerance: 0.25,
            smoothing: 0.2,
            window: Duration::from_millis(100),
            window_samples: 10,
            probe_interval: Duration::from_secs(30),
            probe_jitter: 0.15,
            probe_limit: 3,
            probe_samples: 20,
        }
    }
}

impl GradientSettings {
    /// The limit before the first adjustment (default 20), and its bounds
    /// (default 3 and 1000). `1 <= min <= initial <= max`.
    pub fn with_limits(mut self, min: usize, initial: usize, max: usize) -> Self {
        (self.min_limit, self.initial_limit, self.max_limit) = (min, initial, max);
        self
    }

    /// How far above the baseline the window's mean RTT may be before the
    /// limit shrinks, as a fraction (default 0.25: 25% of queueing is
    /// tolerated). Finite, at least 0.
    pub fn with_tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The share of each new target taken into the limit (default 0.2):
    /// 1 follows every window at once, lower values move more smoothly.
    /// In `(0, 1]`.
    pub fn with_smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing;
        self
    }

    /// The sampling window (default 100 ms) and the fewest samples that
    /// close it (default 10; a quiet window is extended until it has
    /// them). Both above zero.
    pub fn with_window(mut self, window: Duration, samples: u32) -> Self {
        (self.window, self.window_samples) = (window, samples);
        self
    }

    /// How often the baseline is measured again (default every 30 s, each
    /// wait lengthened by a random share of up to `jitter`, default 0.15,
    /// so that clients do not probe together). Interval above zero, jitter
    /// in `[0, 1]`.
    pub fn with_probe_interval(mut self, interval: Duration, jitter: f64) -> Self {
        (self.probe_interval, self.probe_jitter) = (interval, jitter);
        self
    }

    /// The limit while probing (default 3) and how many calls made during
    /// the probe measure the baseline (default 20). Both at least 1.
    pub fn with_probe(mut self, limit: usize, samples: u32) -> Self {
        (self.probe_limit, self.probe_samples) = (limit, samples);
        self
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), BuildError> {
        let bad = |setting, why: &str| Err(BuildError::new(setting, why));
        check_limits(self.min_limit, self.initial_limit, self.max_limit)?;
        if !self.tolerance.is_finite() || self.tolerance < 0.0 {
            return bad("tolerance", "must be finite and at least 0");
        }
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return bad("smoothing", "must be in (0, 1]");
        }
        if self.window.is_zero() || self.window_samples == 0 {
            return bad("window", "length and samples must be above zero");
        }
        if self.probe_interval.is_zero() || !(0.0..=1.0).contains(&self.probe_jitter) {
            return bad(
                "probe_interval",
                "needs an interval above zero, jitter in [0, 1]",
            );
        }
        if self.probe_limit == 0 || self.probe_samples == 0 {
            return bad("probe", "limit and samples must be at least 1");
        }
        Ok(())
    }
}

/// The gradient algorithm's state (a sans-IO core: the time is an argument).
///
/// - **Baseline (minimum RTT).** A *probe* holds the limit at `probe_limit`
///   and averages the RTT of `probe_samples` calls: the latency of the
///   service when this client queues nothing on it. Counting starts once
///   in-flight calls have drained to `probe_limit` (a call that finishes
///   with no more in flight), and only calls that started after that
///   count, so none of them waited behind the backlog of the old limit.
///   The first probe starts at once; later ones every `probe_interval`
///   plus jitter, and early after 5 windows in a row at the lowest
///   gradient (latency at least `2 × (1 + tolerance)` times the baseline),
///   a sign that the baseline is stale.
/// - **Windows.** Between probes, samples are averaged over a window. At
///   its end the gradient is `baseline × (1 + tolerance) / mean`, within
///   `[0.5, 2]` (0.5 when any call in the window was dropped: overloaded
///   or timed out); the target is `limit × gradient + √limit` (the root is
///   headroom, so the limit keeps exploring); and the limit moves by
///   `smoothing` toward the target, within its bounds.
/// - **App-limited.** A window in which in-flight calls never reached half
///   the limit says nothing about a higher limit: the limit does not grow.
/// - **Sampling.** A window needs only so many samples: once it holds 128
///   calls, [`sample_every`](Self::sample_every) says how few need to be
///   reported (one in `calls so far / 64`), and a reported call stands for
///   that many ([`on_weighted_sample`](Self::on_weighted_sample)), so that
///   the window's mean stays unbiased and about as precise as one over 128
///   calls. A window of `n` calls then takes about `64 × ln(n / 64)`
///   samples (585 for 600,000). Drops, probe samples, a call that raises
///   the window's in-flight peak ([`window_peak`](Self::window_peak)) and
///   calls made once the window's time is up
///   ([`sample_all_from`](Self::sample_all_from)) are always reported.
///
/// Against a service that serves `k` calls at a time, the limit settles
/// near `(1 + tolerance) × k + √limit`: calls queue a little, so the
/// service stays busy, and latency stays near `1 + tolerance` times its
/// no-load value.
#[derive(Debug, Clone)]
pub struct Gradient {
    settings: GradientSettings,
    limit: f64,
    baseline: Option<Duration>,
    probe: Option<Probe>,
    window: Window,
    next_probe: Instant,
    stale_windows: u32,
    rng: Rng,
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    /// When counting started: `None` while the old backlog drains.
    since: Option<Instant>,
    samples: u32,
    total: Duration,
}

#[derive(Debug, Clone, Copy, Default)]
struct Window {
    end: Option<Instant>,
    samples: u32,
    total: Duration,
    max_in_flight: usize,
    dropped: bool,
}

impl Gradient {
    /// A new state that starts probing at `now`. `rng` draws the probe
    /// jitter. The settings must be valid ([`GradientSettings::validate`]).
    pub fn new(settings: GradientSettings, now: Instant, rng: Rng) -> Self {
        Gradient {
            limit: settings.initial_limit as f64,
            settings,
            baseline: None,
            // Nothing is in flight yet: count from the start.
            probe: Some(Probe {
                since: Some(now),
                ..Probe::draining()
            }),
            window: Window::default(),
            next_probe: now,
            stale_windows: 0,
            rng,
        }
    }

    /// The limit in force: `probe_limit` while probing.
    pub fn limit(&self) -> usize {
        if self.probe.is_some() {
            self.settings.probe_limit
        } else {
            self.limit.round() as usize
        }
    }

    /// The baseline RTT from the last probe, once one has finished.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.baseline
    }

    /// Whether a probe is under way.
    pub fn is_probing(&self) -> bool {
        self.probe.is_some()
    }

    /// When the next periodic probe is due (meaningless while probing).
    pub fn next_probe(&self) -> Instant {
        self.next_probe
    }

    /// Takes new settings, keeping the state: the limit (within the new
    /// bounds), the baseline, the window in progress and the next probe.
    /// The settings must be valid.
    pub fn retune(&mut self, settings: GradientSettings) {
        self.limit = self
            .limit
            .clamp(settings.min_limit as f64, settings.max_limit as f64);
        self.settings = settings;
    }

    /// Sets the limit to hold once the probe in progress ends (within the
    /// bounds): for a limiter that switches to this algorithm.
    pub fn resume_at(&mut self, limit: usize) {
        let s = &self.settings;
        self.limit = (limit as f64).clamp(s.min_limit as f64, s.max_limit as f64);
    }

    /// How many finished calls one reported sample may stand for now: 1
    /// (report every call) while probing, else the window's calls so far /
    /// 64 (1 until it holds 128). A caller that reports one call in `n` at
    /// random passes `n` as the sample's weight
    /// ([`on_weighted_sample`](Self::on_weighted_sample)).
    pub fn sample_every(&self) -> u32 {
        if self.probe.is_some() {
            1
        } else {
            (self.window.samples / SAMPLED).max(1)
        }
    }

    /// From when every call must be reported again, whatever
    /// [`sample_every`](Self::sample_every) says: the end of the window in
    /// progress (a reported call closes it) or the next probe, whichever
    /// comes first; `None` before the window's first sample.
    pub fn sample_all_from(&self) -> Option<Instant> {
        self.window.end.map(|end| end.min(self.next_probe))
    }

    /// The most calls in flight any sample of the window in progress saw:
    /// a call that sees more must be reported (weight 1), so that the
    /// window's peak is exact.
    pub fn window_peak(&self) -> usize {
        self.window.max_in_flight
    }

    /// Records one finished call at `now`. Returns whether the limit in
    /// force or the baseline may have changed (a probe began or ended, or a
    /// window closed); `false` when the sample was only accumulated.
    pub fn on_sample(&mut self, sample: Sample, now: Instant) -> bool {
        self.on_weighted_sample(sample, 1, now)
    }

    /// Records one finished call at `now` that stands for `weight` calls
    /// (one reported in `weight`, drawn at random; see
    /// [`sample_every`](Self::sample_every)): in the window it counts
    /// `weight` times. A probe counts it once. Returns what
    /// [`on_sample`](Self::on_sample) returns.
    pub fn on_weighted_sample(&mut self, sample: Sample, weight: u32, now: Instant) -> bool {
        if let Some(probe) = &mut self.probe {
            if probe.add(sample, now, self.settings.probe_limit) < self.settings.probe_samples {
                return false;
            }
            self.baseline = Some(probe.mean().max(Duration::from_nanos(1)));
            self.probe = None;
            self.window = Window::default();
            self.stale_windows = 0;
            let jitter = 1.0 + self.settings.probe_jitter * self.rng.unit();
            self.next_probe = later(now, self.settings.probe_interval.mul_f64(jitter));
            return true;
        }
        if now >= self.next_probe {
            self.probe = Some(Probe::draining());
            return true;
        }
        let w = &mut self.window;
        let end = *w
            .end
            .get_or_insert_with(|| later(now, self.settings.window));
        w.max_in_flight = w.max_in_flight.max(sample.in_flight);
        if sample.dropped {
            w.dropped = true;
        } else {
            let weight = weight.max(1);
            w.samples = w.samples.saturating_add(weight);
            w.total = w.total.saturating_add(sample.rtt.saturating_mul(weight));
        }
        if now < end || (w.samples < self.settings.window_samples && !w.dropped) {
            return false;
        }
        self.adjust();
        self.window = Window::default();
        if self.stale_windows >= STALE_WINDOWS {
            self.probe = Some(Probe::draining());
        }
        true
    }

    /// Moves the limit at the end of a window.
    fn adjust(&mut self) {
        let Some(baseline) = self.baseline else {
            return;
        };
        let s = &self.settings;
        let w = &self.window;
        let gradient = if w.dropped || w.samples == 0 {
            MIN_GRADIENT
        } else {
            let mean = w.total.as_secs_f64() / f64::from(w.samples);
            (baseline.as_secs_f64() * (1.0 + s.tolerance) / mean).clamp(MIN_GRADIENT, MAX_GRADIENT)
        };
        let limit = self.limit;
        let mut target = limit * gradient + limit.sqrt();
        if target > limit && (w.max_in_flight as f64) < limit / 2.0 {
            target = limit;
        }
        let next = limit * (1.0 - s.smoothing) + target * s.smoothing;
        self.limit = next.clamp(s.min_limit as f64, s.max_limit as f64);
        if gradient <= MIN_GRADIENT {
            self.stale_windows += 1;
        } else {
            self.stale_windows = 0;
        }
    }
}

impl Probe {
    fn draining() -> Self {
        Probe {
            since: None,
            samples: 0,
            total: Duration::ZERO,
        }
    }

    /// Counts the sample if its call started after the drain and was not
    /// dropped; returns the samples so far.
    fn add(&mut self, sample: Sample, now: Instant, probe_limit: usize) -> u32 {
        let Some(since) = self.since else {
            if sample.in_flight <= probe_limit {
                self.since = Some(now);
            }
            return 0;
        };
        let began = now.checked_sub(sample.rtt);
        if !sample.dropped && began.is_some_and(|b| b >= since) {
            self.samples += 1;
            self.total = self.total.saturating_add(sample.rtt);
        }
        self.samples
    }

    fn mean(&self) -> Duration {
        self.total / self.samples.max(1)
    }
}

#[cfg(test)]
#[path = "gradient_tests.rs"]
mod tests;
