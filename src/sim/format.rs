//! The scenario file format: TOML read with serde into these structures,
//! then checked and turned into the simulator's model ([`super::convert`]).
//! The format is documented in the [module docs](super) and in
//! `docs/sim/FORMAT.md`.

use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

/// A duration written as a number and a unit: `"167ms"`, `"1.5s"`,
/// `"250us"`, `"2m"`, `"1h"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Dur(pub(crate) Duration);

impl Dur {
    pub(crate) fn parse(text: &str) -> Result<Duration, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("`{text}` has no unit (write e.g. \"10ms\" or \"1.5s\")"))?;
        let (number, unit) = t.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("`{text}` does not start with a number"))?;
        let scale = match unit.trim() {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            other => {
                return Err(format!(
                    "`{text}`: unknown unit `{other}` (use ns, us, ms, s, m or h)"
                ));
            }
        };
        Duration::try_from_secs_f64(value * scale).map_err(|_| format!("`{text}` is out of range"))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Dur::parse(&text).map(Dur).map_err(de::Error::custom)
    }
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileScenario {
    pub(crate) name: Option<String>,
    pub(crate) description: Option<String>,
    #[serde(default = "one")]
    pub(crate) seed: u64,
    pub(crate) duration: Dur,
    pub(crate) warmup: Option<Dur>,
    pub(crate) bucket: Option<Dur>,
    pub(crate) load: Option<Vec<f64>>,
    pub(crate) backends: Vec<FileBackend>,
    pub(crate) clients: Vec<FileClient>,
    pub(crate) configs: Vec<FileConfig>,
}

fn one() -> u64 {
    1
}

/// A latency distribution.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum FileLatency {
    Constant(Dur),
    Uniform { low: Dur, high: Dur },
    Normal { mean: Dur, stddev: Dur },
    Lognormal { p50: Dur, p99: Dur },
    Exponential { mean: Dur },
    Mixture(Vec<FileComponent>),
    Percentiles(Vec<(f64, Dur)>),
}

/// One component of a mixture.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileComponent {
    pub(crate) weight: f64,
    pub(crate) latency: FileLatency,
}

/// A group of identical backends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileBackend {
    pub(crate) name: String,
    pub(crate) count: Option<u32>,
    pub(crate) weight: Option<u32>,
    pub(crate) latency: FileLatency,
    pub(crate) concurrency: Option<u32>,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) failure_latency: Option<FileLatency>,
    pub(crate) stall_rate: Option<f64>,
    pub(crate) drop_abandoned: Option<bool>,
    #[serde(default)]
    pub(crate) phases: Vec<FilePhase>,
    pub(crate) drift: Option<FileDrift>,
    pub(crate) join: Option<Dur>,
    pub(crate) cold: Option<FileCold>,
}

/// A cold start: latency `factor` times the normal one until `hold` after
/// the backend starts, back to normal linearly by `warm_by`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileCold {
    pub(crate) factor: f64,
    pub(crate) hold: Dur,
    pub(crate) warm_by: Dur,
}

/// A timed change to a backend group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePhase {
    pub(crate) from: Dur,
    pub(crate) to: Option<Dur>,
    pub(crate) latency: Option<FileLatency>,
    /// A number of servers, or `"unlimited"`.
    pub(crate) concurrency: Option<FileConcurrency>,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) failure_latency: Option<FileLatency>,
    pub(crate) stall_rate: Option<f64>,
    pub(crate) down: Option<bool>,
    /// The backend leaves discovery: clients stop using it.
    pub(crate) removed: Option<bool>,
}

/// A phase's concurrency: a number, or `"unlimited"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum FileConcurrency {
    Servers(u32),
    Word(String),
}

/// Random redraws of a backend's mean latency.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileDrift {
    pub(crate) every: FileLatency,
    pub(crate) mean: FileLatency,
}

/// How requests arrive.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FileArrivals {
    Poisson,
    Fixed,
    Closed,
}

/// A group of identical clients.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileClient {
    pub(crate) count: Option<u32>,
    pub(crate) arrivals: FileArrivals,
    pub(crate) rate: Option<f64>,
    pub(crate) concurrency: Option<u32>,
    pub(crate) budget: Option<Dur>,
    pub(crate) keys: Option<FileKeys>,
    /// Factors on the rate over time: `[["0s", 0.5], ["5s", 2.0], …]`,
    /// linear in between, the last one held.
    pub(crate) ramp: Option<Vec<(Dur, f64)>>,
}

/// Request keys: `count` keys with Zipf popularity of exponent `zipf`
/// (default 0: uniform).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileKeys {
    pub(crate) count: u32,
    pub(crate) zipf: Option<f64>,
}

/// A balancer name.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FileBalancer {
    P2cPeakEwma,
    P2cPending,
    RoundRobin,
    Random,
    WeightedRandom,
    WeightedRoundRobin,
}

/// A tower baseline.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FileTower {
    PeakEwma,
    Pending,
}

/// One configuration: a towline channel with its policies, or a tower
/// baseline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) name: String,
    pub(crate) tower: Option<FileTower>,
    pub(crate) balancer: Option<FileBalancer>,
    pub(crate) default_rtt: Option<Dur>,
    pub(crate) decay: Option<Dur>,
    pub(crate) timeout: Option<Dur>,
    pub(crate) deadline: Option<Dur>,
    pub(crate) retry: Option<FileRetry>,
    pub(crate) hedge: Option<FileHedge>,
    pub(crate) breaker: Option<FileBreaker>,
    pub(crate) max_ejected_share: Option<f64>,
    pub(crate) panic_threshold: Option<f64>,
    pub(crate) throttle: Option<FileThrottle>,
    pub(crate) caller_throttle: Option<FileThrottle>,
    pub(crate) slow_start: Option<FileSlowStart>,
    pub(crate) hash: Option<FileHash>,
    pub(crate) subset: Option<FileSubset>,
    pub(crate) concurrency_limit: Option<FileLimit>,
    pub(crate) endpoint_concurrency_limit: Option<FileLimit>,
}

/// Slow start; each field defaults to `SlowStartSettings::default()`'s.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSlowStart {
    pub(crate) window: Option<Dur>,
    pub(crate) aggression: Option<f64>,
    pub(crate) min_weight: Option<f64>,
}

/// Picking by the requests' keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileHash {
    pub(crate) table: FileHashTable,
    pub(crate) bounded_load: Option<f64>,
}

/// A consistent-hash table.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FileHashTable {
    Maglev,
    Ring,
}

/// Which backends each client uses: its deterministic aperture, or a
/// random subset; all of them when absent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSubset {
    pub(crate) aperture: Option<usize>,
    pub(crate) min_size: Option<usize>,
    pub(crate) random: Option<usize>,
}

/// A concurrency limit: one algorithm, and an optional queue.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileLimit {
    pub(crate) gradient: Option<FileGradient>,
    pub(crate) aimd: Option<FileAimd>,
    pub(crate) fixed: Option<usize>,
    pub(crate) queue: Option<usize>,
    pub(crate) max_wait: Option<Dur>,
}

/// Gradient settings; each defaults to `GradientSettings::default()`'s.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileGradient {
    /// `[min, initial, max]`.
    pub(crate) limits: Option<(usize, usize, usize)>,
    pub(crate) tolerance: Option<f64>,
    pub(crate) smoothing: Option<f64>,
    pub(crate) window: Option<Dur>,
    pub(crate) window_samples: Option<u32>,
    pub(crate) probe_interval: Option<Dur>,
    pub(crate) probe_jitter: Option<f64>,
    pub(crate) probe_limit: Option<usize>,
    pub(crate) probe_samples: Option<u32>,
}

/// AIMD settings; each defaults to `AimdSettings::default()`'s.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAimd {
    /// `[min, initial, max]`.
    pub(crate) limits: Option<(usize, usize, usize)>,
    pub(crate) backoff: Option<f64>,
    pub(crate) rtt_threshold: Option<Dur>,
}

/// Retry settings; each field defaults to `RetrySettings::default()`'s.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRetry {
    pub(crate) max_attempts: Option<u32>,
    pub(crate) backoff: Option<FileBackoff>,
    pub(crate) budget: Option<FileBudget>,
    pub(crate) honour_retry_after: Option<bool>,
    pub(crate) min_attempt_time: Option<Dur>,
}

/// Backoff settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileBackoff {
    pub(crate) base: Option<Dur>,
    pub(crate) multiplier: Option<f64>,
    pub(crate) cap: Option<Dur>,
    pub(crate) jitter: Option<FileJitter>,
}

/// Backoff jitter.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FileJitter {
    None,
    Full,
    Equal,
    Decorrelated,
}

/// A retry or hedge budget.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileBudget {
    pub(crate) ratio: f64,
    pub(crate) floor_per_sec: Option<u32>,
    pub(crate) window: Option<Dur>,
}

/// Hedging settings; each field defaults to `HedgeSettings::default()`'s.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileHedge {
    /// `"p95"` (a percentile of recent latency) or a fixed `"10ms"`.
    pub(crate) delay: Option<String>,
    pub(crate) max_extra: Option<u32>,
    pub(crate) budget: Option<FileBudget>,
}

/// Breaker settings; each field defaults to `BreakerSettings::default()`'s.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileBreaker {
    pub(crate) consecutive_failures: Option<FileOrOff<u32>>,
    pub(crate) failure_rate: Option<FileOrOff<f64>>,
    /// A number of calls, or a duration such as `"10s"`.
    pub(crate) window: Option<FileWindow>,
    pub(crate) min_calls: Option<u32>,
    pub(crate) open: Option<Dur>,
    pub(crate) open_multiplier: Option<f64>,
    pub(crate) open_cap: Option<Dur>,
    pub(crate) open_jitter: Option<f64>,
    pub(crate) probes: Option<u32>,
}

/// A value, or `false` to turn the setting off.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum FileOrOff<T> {
    Off(bool),
    On(T),
}

/// A breaker window: a count of calls or a duration.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum FileWindow {
    Calls(u32),
    Time(String),
}

/// Adaptive throttling: the channel's, or the simulated caller's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileThrottle {
    pub(crate) k: Option<f64>,
    pub(crate) window: Option<Dur>,
    pub(crate) max_reject: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        let ms = Duration::from_millis;
        assert_eq!(Dur::parse("167ms"), Ok(ms(167)));
        assert_eq!(Dur::parse("1.5s"), Ok(ms(1500)));
        assert_eq!(Dur::parse("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(Dur::parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(Dur::parse(" 1h "), Ok(Duration::from_secs(3600)));
        assert!(Dur::parse("10").unwrap_err().contains("no unit"));
        assert!(Dur::parse("ms").unwrap_err().contains("number"));
        assert!(
            Dur::parse("10 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(Dur::parse("1e999s").is_err());
    }
}
