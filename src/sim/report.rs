//! Results: one [`Run`] per configuration and load, gathered in a
//! [`Report`] that prints as a table.

mod keys;
mod measures;

use std::fmt::Write as _;
use std::time::Duration;

use super::Scenario;
use super::config::{ConfigSpec, Stack};
use super::record::{Ejection, FAILED, Recorder};

/// The results of one configuration at one load.
///
/// Whole-run figures (success, latency, attempts) count the requests that
/// arrived after the warm-up; time series cover the whole run, in buckets
/// of the scenario's `bucket` length, by arrival time for requests and by
/// send time for attempts.
///
/// Latency is the time to a successful answer: the `q`-quantile is the
/// shortest time within which a share `q` of all measured requests had
/// succeeded, so a failure never makes latency look better; it is `None`
/// when fewer than that share succeeded within their budget.
#[derive(Debug, Clone)]
pub struct Run {
    config: String,
    baseline: bool,
    load: f64,
    bucket: Duration,
    warmup: Duration,
    record: Recorder,
    backends: Vec<String>,
    /// Whether each backend is in discovery when arrivals stop.
    listed: Vec<bool>,
    /// The configuration narrows each client to a subset.
    subsetted: bool,
    /// When arrivals stop.
    duration: Duration,
    simulated_in: Duration,
}

impl Run {
    pub(crate) fn new(
        scenario: &Scenario,
        config: &ConfigSpec,
        load: f64,
        mut record: Recorder,
        backends: Vec<String>,
        simulated_in: Duration,
    ) -> Self {
        record.latencies_us.sort_unstable();
        let listed = super::subset::Listing::new(&scenario.backends).listed_at(scenario.duration);
        Run {
            listed,
            subsetted: matches!(
                config.stack,
                Stack::Towline {
                    subset: Some(_),
                    ..
                }
            ),
            duration: scenario.duration,
            config: config.name.clone(),
            baseline: matches!(config.stack, Stack::Tower(_)),
            load,
            bucket: scenario.bucket,
            warmup: scenario.warmup,
            record,
            backends,
            simulated_in,
        }
    }

    /// The configuration's name.
    pub fn config(&self) -> &str {
        &self.config
    }

    /// True for the tower baselines.
    pub fn is_tower(&self) -> bool {
        self.baseline
    }

    /// The load factor the clients' rates were multiplied by.
    pub fn load(&self) -> f64 {
        self.load
    }

    /// Requests that arrived after the warm-up.
    pub fn requests(&self) -> u64 {
        self.record.measured_requests
    }

    /// Of those, the ones that succeeded within their budget.
    pub fn successes(&self) -> u64 {
        self.record.latencies_us.len() as u64
    }

    /// The share of requests that succeeded within their budget.
    pub fn success_rate(&self) -> f64 {
        ratio(self.successes(), self.requests())
    }

    /// The time within which a share `q` (0 to 1) of the requests had
    /// succeeded; `None` when fewer did.
    pub fn latency(&self, q: f64) -> Option<Duration> {
        let n = self.requests();
        if n == 0 {
            return None;
        }
        // Nearest rank over all requests, failures ranked last.
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n) - 1;
        let us = self.record.latencies_us.get(rank as usize)?;
        Some(Duration::from_micros(*us))
    }

    /// As [`latency`](Self::latency), over the requests that arrived from
    /// `from` to `to` (warm-up or not).
    pub fn latency_between(&self, q: f64, from: Duration, to: Duration) -> Option<Duration> {
        let (from, to) = (from.as_millis(), to.as_millis());
        let mut took: Vec<u32> = self
            .record
            .timed
            .iter()
            .filter(|(at, _)| (from..to).contains(&u128::from(*at)))
            .map(|&(_, us)| us)
            .collect();
        if took.is_empty() {
            return None;
        }
        took.sort_unstable();
        let n = took.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        let us = took[rank];
        (us != FAILED).then(|| Duration::from_micros(u64::from(us)))
    }

    /// The mean latency of the successful requests.
    pub fn mean_latency(&self) -> Option<Duration> {
        let l = &self.record.latencies_us;
        (!l.is_empty()).then(|| {
            Duration::from_secs_f64(l.iter().map(|&u| u as f64).sum::<f64>() / l.len() as f64 / 1e6)
        })
    }

    /// The mean latency of the successful requests after the warm-up, with
    /// its standard error estimated by batch means: the measured time is
    /// cut into `batches` equal batches (at least 2), whose means are taken
    /// as independent, which holds when a batch is much longer than the
    /// system's memory. `None` without successes in every batch.
    pub fn mean_latency_with_error(&self, batches: usize) -> Option<(Duration, Duration)> {
        let range = self.buckets(self.warmup, self.bucket * self.record.requests.len() as u32);
        let per = range.len() / batches.max(2);
        if per == 0 {
            return None;
        }
        let means: Vec<f64> = (0..batches.max(2))
            .map(|i| {
                let r = range.start + i * per..range.start + (i + 1) * per;
                let n: u64 = self.record.successes[r.clone()]
                    .iter()
                    .map(|&x| u64::from(x))
                    .sum();
                let sum: u64 = self.record.latency_sums_us[r].iter().sum();
                (n > 0).then(|| sum as f64 / n as f64)
            })
            .collect::<Option<_>>()?;
        let k = means.len() as f64;
        let mean = means.iter().sum::<f64>() / k;
        let var = means.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / (k - 1.0);
        let us = |v: f64| Duration::from_secs_f64(v / 1e6);
        Some((us(mean), us((var / k).sqrt())))
    }

    /// The latencies of the successful requests, sorted, in microseconds.
    pub fn latencies_us(&self) -> &[u64] {
        &self.record.latencies_us
    }

    /// Attempts that reached a backend per request (amplification).
    pub fn attempts_per_request(&self) -> f64 {
        ratio(self.record.measured_attempts, self.record.measured_requests)
    }

    /// The bucket length of the time series.
    pub fn bucket(&self) -> Duration {
        self.bucket
    }

    /// The backends' group names, by backend index.
    pub fn backends(&self) -> &[String] {
        &self.backends
    }

    fn buckets(&self, from: Duration, to: Duration) -> std::ops::Range<usize> {
        let b = self.bucket.as_nanos();
        let first = from.as_nanos().div_ceil(b) as usize;
        let last = (to.as_nanos() / b) as usize;
        first.min(self.record.requests.len())..last.min(self.record.requests.len())
    }

    fn attempts_in(&self, bucket: usize) -> impl Iterator<Item = u32> + '_ {
        let n = self.backends.len();
        self.record.attempts[bucket * n..(bucket + 1) * n]
            .iter()
            .copied()
    }

    /// Attempts per request over the buckets from `from` to `to`.
    pub fn attempts_per_request_between(&self, from: Duration, to: Duration) -> f64 {
        let range = self.buckets(from, to);
        let requests: u64 = self.record.requests[range.clone()]
            .iter()
            .map(|&r| u64::from(r))
            .sum();
        let attempts: u64 = range.flat_map(|b| self.attempts_in(b)).map(u64::from).sum();
        ratio(attempts, requests)
    }

    /// The share of requests arriving from `from` to `to` that succeeded.
    pub fn success_rate_between(&self, from: Duration, to: Duration) -> f64 {
        let range = self.buckets(from, to);
        let sum = |v: &[u32]| v[range.clone()].iter().map(|&x| u64::from(x)).sum::<u64>();
        ratio(sum(&self.record.successes), sum(&self.record.requests))
    }

    /// Success over time: `(bucket start, share of the requests arriving in
    /// that bucket that succeeded)`.
    pub fn success_over_time(&self) -> Vec<(Duration, f64)> {
        (0..self.record.requests.len())
            .map(|b| {
                let share = ratio(
                    u64::from(self.record.successes[b]),
                    u64::from(self.record.requests[b]),
                );
                (self.bucket * b as u32, share)
            })
            .collect()
    }

    /// Backend `backend`'s share of the attempts sent in each bucket.
    pub fn share_over_time(&self, backend: usize) -> Vec<(Duration, f64)> {
        (0..self.record.requests.len())
            .map(|b| {
                let all: u64 = self.attempts_in(b).map(u64::from).sum();
                let mine = self.attempts_in(b).nth(backend).unwrap_or(0);
                (self.bucket * b as u32, ratio(u64::from(mine), all))
            })
            .collect()
    }

    /// Requests and successes per bucket, by arrival time.
    pub(crate) fn counts_over_time(&self) -> (&[u32], &[u32]) {
        (&self.record.requests, &self.record.successes)
    }

    /// Per bucket: backend `backend`'s attempts, and all attempts.
    pub(crate) fn attempts_over_time(&self, backend: usize) -> Vec<(u32, u32)> {
        (0..self.record.requests.len())
            .map(|b| {
                let mine = self.attempts_in(b).nth(backend).unwrap_or(0);
                (mine, self.attempts_in(b).sum())
            })
            .collect()
    }

    /// Backend `backend`'s share of the attempts sent from `from` to `to`.
    pub fn share_between(&self, backend: usize, from: Duration, to: Duration) -> f64 {
        let range = self.buckets(from, to);
        let (mut mine, mut all) = (0u64, 0u64);
        for b in range {
            for (i, a) in self.attempts_in(b).enumerate() {
                all += u64::from(a);
                mine += if i == backend { u64::from(a) } else { 0 };
            }
        }
        ratio(mine, all)
    }

    /// Requests the caller's throttle refused without sending them.
    pub fn refused_by_throttle(&self) -> u64 {
        self.record.refused.iter().map(|&r| u64::from(r)).sum()
    }

    /// Each time an endpoint left a client's rotation (towline
    /// configurations with breakers; sampled once per bucket).
    pub fn ejections(&self) -> &[Ejection] {
        &self.record.ejections
    }

    /// The first bucket start at or after `after` from which the success
    /// share of every following bucket is at least `share`; `None` if the
    /// run never settles there.
    pub fn recovered_at(&self, after: Duration, share: f64) -> Option<Duration> {
        let series = self.success_over_time();
        let mut since = None;
        for (t, s) in series.into_iter().filter(|(t, _)| *t >= after) {
            match (s >= share, since) {
                (true, None) => since = Some(t),
                (false, _) => since = None,
                _ => {}
            }
        }
        since
    }

    /// The warm-up whose requests the whole-run figures leave out.
    pub fn warmup(&self) -> Duration {
        self.warmup
    }

    /// How long the run took to simulate (wall-clock time).
    pub fn simulated_in(&self) -> Duration {
        self.simulated_in
    }
}

pub(super) fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// The results of a scenario: one [`Run`] per configuration and load.
#[derive(Debug, Clone)]
pub struct Report {
    pub(crate) scenario: String,
    pub(crate) runs: Vec<Run>,
}

impl Report {
    /// The scenario's name.
    pub fn scenario(&self) -> &str {
        &self.scenario
    }

    /// Every run, configurations in file order within each load.
    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// The run of configuration `config` at the first load (the only one
    /// unless the scenario lists several).
    pub fn run(&self, config: &str) -> Option<&Run> {
        self.runs.iter().find(|r| r.config == config)
    }

    /// The run of configuration `config` at load factor `load`.
    pub fn run_at(&self, config: &str, load: f64) -> Option<&Run> {
        self.runs
            .iter()
            .find(|r| r.config == config && (r.load - load).abs() < 1e-9)
    }

    /// The results as a plain-text table, one row per run.
    pub fn table(&self) -> String {
        let loads = self.runs.iter().any(|r| (r.load - 1.0).abs() > 1e-9);
        let width = self
            .runs
            .iter()
            .map(|r| r.config.len())
            .max()
            .unwrap_or(6)
            .max(13);
        let mut out = String::new();
        let _ = write!(out, "{:<width$} ", "configuration");
        if loads {
            let _ = write!(out, "{:>5} ", "load");
        }
        let _ = writeln!(
            out,
            "{:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>8}",
            "success", "p50", "p90", "p99", "p99.9", "p99.99", "mean", "att/req", "eject", "sim"
        );
        for r in &self.runs {
            let ms = |d: Option<Duration>| match d {
                Some(d) => format_ms(d),
                None => "fail".into(),
            };
            let _ = write!(out, "{:<width$} ", r.config);
            if loads {
                let _ = write!(out, "{:>4.0}% ", r.load * 100.0);
            }
            let _ = writeln!(
                out,
                "{:>8.3}% {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8.3} {:>6} {:>7.1}s",
                100.0 * r.success_rate(),
                ms(r.latency(0.5)),
                ms(r.latency(0.9)),
                ms(r.latency(0.99)),
                ms(r.latency(0.999)),
                ms(r.latency(0.9999)),
                ms(r.mean_latency()),
                r.attempts_per_request(),
                r.ejections().len(),
                r.simulated_in.as_secs_f64(),
            );
        }
        self.extra_tables(&mut out, width);
        out
    }

    /// The subset and concurrency-limit blocks of the table, for the runs
    /// that have them.
    fn extra_tables(&self, out: &mut String, width: usize) {
        let subsets: Vec<_> = self
            .runs
            .iter()
            .filter_map(|r| r.subset_summary().map(|s| (r, s)))
            .collect();
        // Shown when a configuration narrows its clients (with full-mesh
        // configurations beside them, for contrast).
        if self.runs.iter().any(|r| r.subsetted) {
            let _ = writeln!(
                out,
                "\n{:<width$} {:>11} {:>14} {:>9}",
                "subsets", "conn/client", "clients/server", "load CoV"
            );
            for (r, (conn, lo, hi, cov)) in subsets {
                let _ = writeln!(
                    out,
                    "{:<width$} {conn:>11} {:>14} {:>8.1}%",
                    r.config,
                    format!("{lo}-{hi}"),
                    100.0 * cov
                );
            }
        }
        let limited: Vec<&Run> = self
            .runs
            .iter()
            .filter(|r| r.refused_by_limit() > 0)
            .collect();
        if !limited.is_empty() {
            let _ = writeln!(
                out,
                "\n{:<width$} {:>9} {:>8} {:>8}",
                "limits", "refused", "sent p50", "sent p99"
            );
            for r in limited {
                let all = |q| r.sent_latency_between(q, r.warmup, Duration::MAX);
                let ms = |d: Option<Duration>| d.map_or("-".into(), format_ms);
                let _ = writeln!(
                    out,
                    "{:<width$} {:>8.3}% {:>8} {:>8}",
                    r.config,
                    100.0 * ratio(r.refused_by_limit(), r.requests().max(1)),
                    ms(all(0.5)),
                    ms(all(0.99)),
                );
            }
        }
    }
}

/// A latency in milliseconds, with a decimal below 10 ms.
fn format_ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.0}ms")
    }
}
