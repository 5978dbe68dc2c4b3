//! What a chaos run records while traffic runs, and the figures computed
//! from it afterwards.
//!
//! Recording only touches atomics in tables allocated before the run, so
//! that the run itself leaves the test's heap as it found it (the memory
//! check compares the heap before and after).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Width of one time bucket.
pub const BUCKET: Duration = Duration::from_millis(100);
/// Endpoint slots tracked: five backends and a spare for restarts.
pub const SLOTS: usize = 6;
/// The latency histogram covers 0 ..= this many milliseconds.
const LATENCY_MS: usize = 3000;

/// Why a call failed, as counted.
pub const ERROR_KINDS: [&str; 10] = [
    "no endpoints",
    "discovery",
    "attempt timeout",
    "deadline",
    "circuit open",
    "retries exhausted",
    "budget exhausted",
    "inner",
    "other",
    "HTTP status not 200",
];

/// The kind of an answer that was not HTTP 200.
pub const HTTP_STATUS: usize = 9;

/// Index into [`ERROR_KINDS`].
pub fn error_kind(e: &towline::Error) -> usize {
    use towline::Error as E;
    match e {
        E::NoEndpoints { .. } => 0,
        E::Discovery(_) => 1,
        E::AttemptTimeout(_) => 2,
        E::DeadlineExceeded { .. } => 3,
        E::CircuitOpen => 4,
        E::RetriesExhausted { .. } => 5,
        E::BudgetExhausted { .. } => 6,
        E::Inner(_) => 7,
        _ => 8,
    }
}

/// Counters of one run.
pub struct Record {
    /// Time zero of the run.
    pub origin: Instant,
    buckets: usize,
    /// Attempts started, per bucket and slot.
    attempts: Vec<AtomicU32>,
    /// Calls ended per bucket: [ok, failed] × [replayable, not].
    calls: Vec<AtomicU32>,
    /// Call latency, per millisecond.
    latency: Vec<AtomicU32>,
    errors: [AtomicU32; ERROR_KINDS.len()],
    /// Calls that returned later than their deadline plus the margin.
    pub late: AtomicU32,
    /// The largest time past its deadline any call returned, in µs.
    pub max_over_deadline_us: AtomicU64,
}

fn zeros(n: usize) -> Vec<AtomicU32> {
    (0..n).map(|_| AtomicU32::new(0)).collect()
}

impl Record {
    /// Tables for a run of up to `length` (later events count in the last
    /// bucket).
    pub fn new(length: Duration) -> Record {
        let buckets = (length.as_millis() / BUCKET.as_millis()) as usize + 1;
        Record {
            origin: Instant::now(),
            buckets,
            attempts: zeros(buckets * SLOTS),
            calls: zeros(buckets * 4),
            latency: zeros(LATENCY_MS + 1),
            errors: Default::default(),
            late: AtomicU32::new(0),
            max_over_deadline_us: AtomicU64::new(0),
        }
    }

    /// Time since the origin.
    pub fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }

    fn bucket(&self, at: Instant) -> usize {
        let i =
            (at.saturating_duration_since(self.origin).as_millis() / BUCKET.as_millis()) as usize;
        i.min(self.buckets - 1)
    }

    /// An attempt started on `slot` now.
    pub fn attempt(&self, slot: usize) {
        let b = self.bucket(Instant::now());
        self.attempts[b * SLOTS + slot.min(SLOTS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// A call ended now after `took`; `error` is its error kind, if any.
    pub fn call(
        &self,
        replayable: bool,
        error: Option<usize>,
        took: Duration,
        deadline: Duration,
        margin: Duration,
    ) {
        let b = self.bucket(Instant::now());
        let column = usize::from(error.is_some()) * 2 + usize::from(!replayable);
        self.calls[b * 4 + column].fetch_add(1, Ordering::Relaxed);
        let ms = (took.as_millis() as usize).min(LATENCY_MS);
        self.latency[ms].fetch_add(1, Ordering::Relaxed);
        if let Some(kind) = error {
            self.errors[kind].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(over) = took.checked_sub(deadline) {
            self.max_over_deadline_us
                .fetch_max(over.as_micros() as u64, Ordering::Relaxed);
            if over > margin {
                self.late.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn range(&self, from: Duration, to: Duration) -> std::ops::Range<usize> {
        let b = |t: Duration| ((t.as_millis() / BUCKET.as_millis()) as usize).min(self.buckets);
        b(from)..b(to)
    }

    /// Attempts on `slot` in `[from, to)` (bucket resolution).
    pub fn attempts(&self, slot: usize, from: Duration, to: Duration) -> u64 {
        self.range(from, to)
            .map(|b| u64::from(self.attempts[b * SLOTS + slot].load(Ordering::Relaxed)))
            .sum()
    }

    /// Calls ended in `[from, to)`: (ok, failed) for replayable calls when
    /// `replayable`, else for the others.
    pub fn calls(&self, replayable: bool, from: Duration, to: Duration) -> (u64, u64) {
        let c = usize::from(!replayable);
        self.range(from, to).fold((0, 0), |(ok, bad), b| {
            (
                ok + u64::from(self.calls[b * 4 + c].load(Ordering::Relaxed)),
                bad + u64::from(self.calls[b * 4 + 2 + c].load(Ordering::Relaxed)),
            )
        })
    }

    /// Calls ended over the whole run, every kind.
    pub fn total_calls(&self) -> u64 {
        self.calls
            .iter()
            .map(|c| u64::from(c.load(Ordering::Relaxed)))
            .sum()
    }

    /// Latency quantile `q` in milliseconds (histogram resolution).
    pub fn latency_ms(&self, q: f64) -> usize {
        let counts: Vec<u64> = self
            .latency
            .iter()
            .map(|c| u64::from(c.load(Ordering::Relaxed)))
            .collect();
        let total: u64 = counts.iter().sum();
        let target = (q * total as f64).ceil() as u64;
        let mut seen = 0;
        for (ms, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= target.max(1) {
                return ms;
            }
        }
        LATENCY_MS
    }

    /// Failed calls by kind (only kinds seen).
    pub fn errors(&self) -> Vec<(&'static str, u64)> {
        ERROR_KINDS
            .iter()
            .zip(&self.errors)
            .map(|(k, c)| (*k, u64::from(c.load(Ordering::Relaxed))))
            .filter(|(_, c)| *c > 0)
            .collect()
    }

    /// `slot`'s share of the attempts on `slots` in `[from, to)`, and the
    /// number of those attempts.
    pub fn share(&self, slot: usize, slots: &[usize], from: Duration, to: Duration) -> (f64, u64) {
        let total: u64 = slots.iter().map(|&s| self.attempts(s, from, to)).sum();
        let mine = self.attempts(slot, from, to);
        (mine as f64 / total.max(1) as f64, total)
    }

    /// Whether the attempts in the 1 s window from `from` are spread fairly
    /// over `live`: each of them gets between half and twice an equal share
    /// of all attempts (those on slots no longer announced included),
    /// widened by three standard errors of a share estimated from that many
    /// attempts. A window with fewer than 20 attempts per endpoint is not
    /// judged fair.
    pub fn fair(&self, live: &[usize], from: Duration) -> bool {
        let to = from + Duration::from_secs(1);
        let n: u64 = (0..SLOTS).map(|s| self.attempts(s, from, to)).sum();
        if n < 20 * live.len() as u64 {
            return false;
        }
        let p = 1.0 / live.len() as f64;
        let se = (p * (1.0 - p) / n as f64).sqrt();
        live.iter().all(|&s| {
            let share = self.attempts(s, from, to) as f64 / n as f64;
            share >= p / 2.0 - 3.0 * se && share <= 2.0 * p + 3.0 * se
        })
    }

    /// How long after `from` the first fair 1 s window (see
    /// [`fair`](Self::fair)) ends, looking at windows ending by `until`.
    pub fn time_to_fair(
        &self,
        live: &[usize],
        from: Duration,
        until: Duration,
    ) -> Option<Duration> {
        let mut start = from;
        while start + Duration::from_secs(1) <= until {
            if self.fair(live, start) {
                return Some(start + Duration::from_secs(1) - from);
            }
            start += BUCKET;
        }
        None
    }

    /// `slot`'s share of attempts in consecutive `step` windows over
    /// `[from, to)`, with each window's attempt count.
    pub fn share_series(
        &self,
        slot: usize,
        slots: &[usize],
        from: Duration,
        to: Duration,
        step: Duration,
    ) -> Vec<(Duration, f64, u64)> {
        let mut out = Vec::new();
        let mut t = from;
        while t + step <= to {
            let (share, n) = self.share(slot, slots, t, t + step);
            out.push((t, share, n));
            t += step;
        }
        out
    }
}
