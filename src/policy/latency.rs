//! A lock-free latency histogram over a rotating window.
//!
//! Hedging after "the p95 of recent latency" needs that percentile cheaply,
//! from many tasks at once. [`LatencyHistogram`] records microseconds into
//! log-linear buckets: exact below 32 µs, then 32 buckets per power of two,
//! so any value is known within 1/32 (about 3%), up to 2^41 µs (25 days;
//! longer values count as that). Recording is one atomic add.
//!
//! The window rotates: time is cut into half-windows and the histogram keeps
//! two generations, the current half and the previous one, so a query sees
//! between half a window and a whole window of history. A generation is
//! cleared by the first recorder that enters a new half-window (a sample
//! recorded during that instant may be lost; this is an estimate).
//!
//! A percentile is `None` until the window holds `min_samples`. Computing it
//! scans the buckets, so [`LatencyHistogram::percentile_cached`] recomputes
//! at most once per `refresh` and otherwise returns the stored value.
//!
//! Defaults ([`LatencySettings::default`]): window 10 s, 100 samples minimum,
//! refresh every 100 ms.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use towline::policy::latency::{LatencyHistogram, LatencySettings};
//!
//! let now = Instant::now();
//! let h = LatencyHistogram::new(&LatencySettings::default(), now);
//! for ms in 1..=100 {
//!     h.record(Duration::from_millis(ms), now);
//! }
//! let p95 = h.percentile(0.95, now).unwrap();
//! assert!(p95 >= Duration::from_millis(95) && p95 <= Duration::from_millis(98));
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::BuildError;

/// log2 of the buckets per power of two.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Largest recordable value, in µs.
const MAX_US: u64 = (1 << 41) - 1;
/// Bucket count: the linear range plus 32 per power of two up to `MAX_US`.
const BUCKETS: usize = ((41 - SUB_BITS as usize) + 1) * SUB as usize;

/// Settings of a latency window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySettings {
    window: Duration,
    min_samples: u64,
    refresh: Duration,
}

impl Default for LatencySettings {
    fn default() -> Self {
        LatencySettings {
            window: Duration::from_secs(10),
            min_samples: 100,
            refresh: Duration::from_millis(100),
        }
    }
}

impl LatencySettings {
    /// A window of `window` (at least 10 ms), answering once it holds
    /// `min_samples` (at least 1), recomputing cached percentiles at most
    /// once per `refresh` (at most the window).
    pub fn new(window: Duration, min_samples: u64, refresh: Duration) -> Result<Self, BuildError> {
        let s = LatencySettings {
            window,
            min_samples,
            refresh,
        };
        s.validate()?;
        Ok(s)
    }

    /// Checks the settings (as [`LatencySettings::new`] does).
    pub fn validate(&self) -> Result<(), BuildError> {
        if self.window < Duration::from_millis(10) {
            return Err(BuildError::new(
                "latency.window",
                format!("must be at least 10 ms, got {:?}", self.window),
            ));
        }
        if self.min_samples == 0 {
            return Err(BuildError::new("latency.min_samples", "must be at least 1"));
        }
        if self.refresh > self.window {
            return Err(BuildError::new(
                "latency.refresh",
                format!(
                    "must not be longer than the window ({:?}), got {:?}",
                    self.window, self.refresh
                ),
            ));
        }
        Ok(())
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Samples needed before a percentile is given.
    pub fn min_samples(&self) -> u64 {
        self.min_samples
    }

    /// How often a cached percentile is recomputed.
    pub fn refresh(&self) -> Duration {
        self.refresh
    }
}

struct Generation {
    /// The half-window this generation holds, plus one (0: never used).
    period: AtomicU64,
    buckets: Box<[AtomicU64]>,
}

impl Generation {
    fn new() -> Self {
        Generation {
            period: AtomicU64::new(0),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// A shared latency histogram (see the module docs).
pub struct LatencyHistogram {
    generations: [Generation; 2],
    half_ns: u64,
    min_samples: u64,
    refresh_ns: u64,
    epoch: Instant,
    /// Cached percentile: the quantile's bits, the value in µs, and when it
    /// was computed (ns since epoch + 1; 0 when never).
    cached_q: AtomicU64,
    cached_us: AtomicU64,
    cached_at: AtomicU64,
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("window", &Duration::from_nanos(self.half_ns * 2))
            .field("min_samples", &self.min_samples)
            .finish_non_exhaustive()
    }
}

/// The bucket of a value in µs.
fn bucket_of(us: u64) -> usize {
    let us = us.min(MAX_US);
    if us < SUB {
        return us as usize;
    }
    let shift = (63 - us.leading_zeros()) - SUB_BITS;
    ((shift as u64 + 1) * SUB + ((us >> shift) - SUB)) as usize
}

/// The largest value in µs that falls in `bucket`.
fn bucket_high(bucket: usize) -> u64 {
    let b = bucket as u64;
    if b < SUB {
        return b;
    }
    let shift = b / SUB - 1;
    ((SUB + b % SUB) << shift) + (1 << shift) - 1
}

impl LatencyHistogram {
    /// An empty histogram; `epoch` is any instant not after the first `now`.
    pub fn new(settings: &LatencySettings, epoch: Instant) -> Self {
        LatencyHistogram {
            generations: [Generation::new(), Generation::new()],
            half_ns: (settings.window.as_nanos() as u64 / 2).max(1),
            min_samples: settings.min_samples,
            refresh_ns: settings.refresh.as_nanos() as u64,
            epoch,
            cached_q: AtomicU64::new(0),
            cached_us: AtomicU64::new(0),
            cached_at: AtomicU64::new(0),
        }
    }

    fn since_epoch(&self, now: Instant) -> u64 {
        crate::clock::nanos_since(now, self.epoch)
    }

    /// Records one latency observed at `now`.
    pub fn record(&self, latency: Duration, now: Instant) {
        let period = self.since_epoch(now) / self.half_ns + 1;
        let generation = &self.generations[(period % 2) as usize];
        let seen = generation.period.load(Ordering::Acquire);
        if seen < period
            && generation
                .period
                .compare_exchange(seen, period, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            for b in generation.buckets.iter() {
                b.store(0, Ordering::Relaxed);
            }
        }
        let us = crate::clock::nanos(latency) / 1_000;
        generation.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// The `q` quantile (0 < q ≤ 1) of the latencies in the window at
    /// `now`, as the upper edge of its bucket; `None` with fewer than
    /// `min_samples` samples.
    pub fn percentile(&self, q: f64, now: Instant) -> Option<Duration> {
        let period = self.since_epoch(now) / self.half_ns + 1;
        let live: [bool; 2] = std::array::from_fn(|i| {
            let p = self.generations[i].period.load(Ordering::Acquire);
            p == period || p + 1 == period
        });
        let count = |b: usize| -> u64 {
            (0..2)
                .filter(|&i| live[i])
                .map(|i| self.generations[i].buckets[b].load(Ordering::Relaxed))
                .sum()
        };
        let total: u64 = (0..BUCKETS).map(count).sum();
        if total < self.min_samples || total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for b in 0..BUCKETS {
            seen += count(b);
            if seen >= rank {
                return Some(Duration::from_micros(bucket_high(b)));
            }
        }
        Some(Duration::from_micros(MAX_US))
    }

    /// Like [`percentile`](Self::percentile), but recomputed at most once
    /// per `refresh` (or when `q` changes); in between the stored answer is
    /// returned. "Not enough samples" is not stored, so the first answer
    /// comes as soon as the window holds `min_samples`.
    pub fn percentile_cached(&self, q: f64, now: Instant) -> Option<Duration> {
        let at = self.since_epoch(now) + 1;
        let last = self.cached_at.load(Ordering::Acquire);
        let same_q = self.cached_q.load(Ordering::Relaxed) == q.to_bits();
        if last != 0 && same_q && at.saturating_sub(last) < self.refresh_ns {
            return Some(Duration::from_micros(
                self.cached_us.load(Ordering::Relaxed),
            ));
        }
        // "Not enough samples" is not stored: keep looking while warming up.
        let value = self.percentile(q, now)?;
        self.cached_us
            .store(value.as_micros() as u64, Ordering::Relaxed);
        self.cached_q.store(q.to_bits(), Ordering::Relaxed);
        self.cached_at.store(at, Ordering::Release);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for us in (0..100_000u64).chain([MAX_US - 1, MAX_US, u64::MAX]) {
            let b = bucket_of(us);
            assert!(b >= last && b < BUCKETS);
            last = b;
            let high = bucket_high(b);
            assert!(
                high >= us.min(MAX_US),
                "{us} above its bucket's edge {high}"
            );
            // Relative width at most 1/32.
            assert!(
                (high - us.min(MAX_US)) as f64 <= us as f64 / 32.0 + 1e-9,
                "{us}: {high}"
            );
        }
        assert_eq!(bucket_of(MAX_US), BUCKETS - 1);
    }

    #[test]
    fn percentile_of_uniform_samples_is_within_bucket_precision() {
        let now = Instant::now();
        let h = LatencyHistogram::new(&LatencySettings::default(), now);
        let mut rng = Rng::seeded(9);
        let n = 100_000;
        for _ in 0..n {
            h.record(Duration::from_micros(5_000 + rng.below(10_001) as u64), now);
        }
        // Uniform 5..15 ms: true p95 = 14.5 ms. Sampling error of the
        // empirical quantile: sd ≈ sqrt(.95·.05/n)·10 ms ≈ 7 µs; bucket
        // precision adds at most 1/32.
        let p95 = h.percentile(0.95, now).unwrap().as_secs_f64() * 1e3;
        assert!(
            (14.45..=14.5 * (1.0 + 1.0 / 32.0) + 0.05).contains(&p95),
            "{p95}"
        );
    }

    #[test]
    fn needs_min_samples_and_forgets_old_windows() {
        let t0 = Instant::now();
        let s =
            LatencySettings::new(Duration::from_secs(10), 10, Duration::from_millis(100)).unwrap();
        let h = LatencyHistogram::new(&s, t0);
        for _ in 0..9 {
            h.record(Duration::from_millis(1), t0);
        }
        assert_eq!(h.percentile(0.5, t0), None);
        h.record(Duration::from_millis(1), t0);
        assert!(h.percentile(0.5, t0).is_some());
        // Still seen one half-window later, gone after two.
        assert!(h.percentile(0.5, t0 + Duration::from_secs(5)).is_some());
        assert_eq!(h.percentile(0.5, t0 + Duration::from_secs(10)), None);
        // A new half-window clears the generation it reuses.
        let t1 = t0 + Duration::from_secs(10);
        for _ in 0..10 {
            h.record(Duration::from_millis(200), t1);
        }
        let p = h.percentile(0.5, t1).unwrap();
        assert!(p >= Duration::from_millis(200) && p < Duration::from_millis(207));
    }

    #[test]
    fn cached_percentile_refreshes_on_schedule() {
        let t0 = Instant::now();
        let s =
            LatencySettings::new(Duration::from_secs(10), 1, Duration::from_millis(100)).unwrap();
        let h = LatencyHistogram::new(&s, t0);
        h.record(Duration::from_millis(10), t0);
        let first = h.percentile_cached(0.5, t0).unwrap();
        for _ in 0..100 {
            h.record(Duration::from_millis(50), t0);
        }
        assert_eq!(
            h.percentile_cached(0.5, t0 + Duration::from_millis(99)),
            Some(first)
        );
        let later = h
            .percentile_cached(0.5, t0 + Duration::from_millis(100))
            .unwrap();
        assert!(later >= Duration::from_millis(50));
    }

    #[test]
    fn invalid_settings_are_refused() {
        let s = Duration::from_secs(1);
        assert_eq!(
            LatencySettings::new(Duration::from_millis(1), 1, Duration::ZERO)
                .unwrap_err()
                .setting(),
            "latency.window"
        );
        assert_eq!(
            LatencySettings::new(s, 0, Duration::ZERO)
                .unwrap_err()
                .setting(),
            "latency.min_samples"
        );
        let e = LatencySettings::new(s, 1, 2 * s).unwrap_err();
        assert_eq!(e.setting(), "latency.refresh");
        assert!(e.reason().contains("longer than the window"));
    }
}
