//! A decision-quality simulator: the real [`Channel`](crate::Channel) on
//! tokio's paused clock, against virtual backends and clients, side by side
//! with tower's balancers (feature `sim`).
//!
//! Speed is measured with benchmarks; *decisions* (which endpoint gets a
//! call, when to retry, hedge or eject) are measured here. A [`Scenario`]
//! describes backends (latency distributions, capacity, failures, stalls,
//! timed phases), clients (open-loop Poisson or fixed-rate arrivals, or a
//! closed loop; a budget per call, the caller's timeout) and the
//! configurations to compare: towline channels with a balancer and policy
//! settings, and tower's `Buffer<Balance<PeakEwma>>` or
//! `Buffer<Balance<PendingRequests>>` as baselines. Every configuration is
//! fed the same backends and the same arrivals.
//!
//! What is simulated, and what is real:
//!
//! - the channel, its balancer and its policies are the crate's own, driven
//!   through the public `tower::Service` API; the backends are a
//!   `tower::Service` made by the channel's connector;
//! - each run has its own current-thread tokio runtime whose clock is
//!   paused and jumps from timer to timer, so a minute of traffic takes
//!   well under a second of CPU in release builds;
//! - every generator is seeded from the scenario's `seed` (arrivals, each
//!   backend, tower's balancer, the channel's thread generator), so a run is
//!   the same, bit for bit, each time;
//! - the resolution is tokio's timer tick, 1 ms: latencies are drawn, then
//!   rounded to the nearest millisecond.
//!
//! Results ([`Report`], one [`Run`] per configuration and load): success
//! within the budget, latency quantiles (time to a successful answer),
//! attempts per request, each endpoint's share of attempts over time,
//! success over time, ejections. [`Report::table`] prints them;
//! [`Report::write_plots`] draws SVG plots.
//!
//! # Scenario files
//!
//! Scenarios are TOML; `scenarios/` holds the published ones. The full
//! reference is `docs/sim/FORMAT.md`; in short:
//!
//! ```toml
//! name = "slow-server"          # default: the file name
//! seed = 1                      # every random draw follows from it
//! duration = "60s"              # arrivals stop then; calls in flight finish
//! warmup = "0s"                 # requests before this are left out of the totals
//! bucket = "100ms"              # time-series resolution
//! load = [1.0]                  # factors on every client's rate, one run each
//!
//! [[backends]]                  # a group of identical backends
//! name = "healthy"
//! count = 10
//! latency = { normal = { mean = "167ms", stddev = "5ms" } }
//! # concurrency = 4             # k servers behind a FIFO queue (default: unlimited)
//! # failure_rate = 0.01         # fast failures, with failure_latency
//! # stall_rate = 0.0            # never answered
//! # drop_abandoned = false      # serve queued work whose caller gave up
//!
//! [[backends]]
//! name = "slow"
//! latency = { normal = { mean = "167ms", stddev = "5ms" } }
//! phases = [{ from = "15s", to = "45s", latency = { constant = "2s" } }]
//!
//! [[clients]]
//! arrivals = "poisson"          # or "fixed" (with rate), "closed" (with concurrency)
//! rate = 1000.0                 # requests per second, per client
//! budget = "1s"                 # the caller gives up (cancels) after this
//!
//! [[configs]]
//! name = "towline p2c"
//! balancer = "p2c_peak_ewma"    # the default
//! # timeout, deadline, retry = { … }, hedge = { … }, breaker = { … }
//!
//! [[configs]]
//! name = "tower PeakEwma"
//! tower = "peak_ewma"           # or "pending"
//! ```
//!
//! Latency distributions: `{ constant = "10ms" }`,
//! `{ uniform = { low, high } }`, `{ normal = { mean, stddev } }`,
//! `{ lognormal = { p50, p99 } }`, `{ exponential = { mean } }`,
//! `{ mixture = [{ weight, latency }, …] }`, and an empirical table
//! `{ percentiles = [[0, "1ms"], [50, "8ms"], [99, "52ms"], [100, "2s"]] }`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use towline::sim::Scenario;
//!
//! let scenario = Scenario::from_toml(r#"
//!     duration = "2s"
//!     [[backends]]
//!     name = "fast"
//!     count = 3
//!     latency = { constant = "5ms" }
//!     [[backends]]
//!     name = "slow"
//!     latency = { constant = "50ms" }
//!     [[clients]]
//!     arrivals = "poisson"
//!     rate = 200.0
//!     budget = "1s"
//!     [[configs]]
//!     name = "p2c"
//!     [[configs]]
//!     name = "tower"
//!     tower = "peak_ewma"
//! "#)?;
//! let report = scenario.run()?;
//! let p2c = report.run("p2c").unwrap();
//! assert_eq!(p2c.success_rate(), 1.0);
//! // The slow backend is avoided.
//! assert!(p2c.share_between(3, Duration::ZERO, Duration::from_secs(2)) < 0.1);
//! // Same seed, same result.
//! assert_eq!(scenario.run()?.run("p2c").unwrap().latencies_us(), p2c.latencies_us());
//! println!("{}", report.table());
//! # Ok::<(), towline::sim::ScenarioError>(())
//! ```

mod backend;
mod client;
mod config;
mod convert;
mod convert_policy;
mod format;
mod latency;
mod limits;
mod plot;
mod record;
mod report;
mod runner;
mod subset;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_keys;

use std::fmt;
use std::path::Path;
use std::time::Duration;

pub use record::{Ejection, SubsetChange};
pub use report::{Report, Run};

use backend::BackendSpec;
use client::ClientSpec;
use config::ConfigSpec;

/// A scenario: backends, clients, and the configurations to compare. Read
/// from TOML with [`Scenario::load`] or [`Scenario::from_toml`]; see the
/// [module docs](self) for the format.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    name: String,
    description: String,
    seed: u64,
    duration: Duration,
    warmup: Duration,
    bucket: Duration,
    loads: Vec<f64>,
    backends: Vec<BackendSpec>,
    clients: Vec<ClientSpec>,
    configs: Vec<ConfigSpec>,
}

impl Scenario {
    /// Reads a scenario file; its name defaults to the file's stem.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ScenarioError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError::new(format!("cannot read {}: {e}", path.display())))?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("scenario");
        Self::parse(&text, stem)
            .map_err(|e| ScenarioError::new(format!("{}: {}", path.display(), e.message)))
    }

    /// Parses a scenario from TOML text (its name defaults to `scenario`).
    pub fn from_toml(text: &str) -> Result<Self, ScenarioError> {
        Self::parse(text, "scenario")
    }

    fn parse(text: &str, default_name: &str) -> Result<Self, ScenarioError> {
        let file: format::FileScenario =
            toml::from_str(text).map_err(|e| ScenarioError::new(e.to_string()))?;
        convert::scenario(file, default_name)
    }

    /// The scenario's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The scenario's description (empty if it has none).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// How long clients send requests.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The configurations' names, in file order.
    pub fn configs(&self) -> Vec<&str> {
        self.configs.iter().map(|c| c.name.as_str()).collect()
    }

    /// The same scenario with another seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The same scenario with another duration and warm-up (a warm-up not
    /// shorter than the duration is refused).
    pub fn with_duration(
        mut self,
        duration: Duration,
        warmup: Duration,
    ) -> Result<Self, ScenarioError> {
        check_duration(duration, warmup).map_err(ScenarioError::new)?;
        self.duration = duration;
        self.warmup = warmup;
        Ok(self)
    }

    /// The same scenario with other load factors (each positive).
    pub fn with_loads(mut self, loads: Vec<f64>) -> Result<Self, ScenarioError> {
        check_loads(&loads).map_err(ScenarioError::new)?;
        self.loads = loads;
        Ok(self)
    }

    /// The same scenario with only the configurations `keep` accepts.
    pub fn retain_configs(mut self, mut keep: impl FnMut(&str) -> bool) -> Self {
        self.configs.retain(|c| keep(&c.name));
        self
    }

    /// Runs every configuration at every load, one after the other.
    pub fn run(&self) -> Result<Report, ScenarioError> {
        let mut runs = Vec::new();
        for &load in &self.loads {
            for config in &self.configs {
                runs.push(runner::run(self, config, load)?);
            }
        }
        Ok(Report {
            scenario: self.name.clone(),
            runs,
        })
    }
}

/// A run length and warm-up that make sense together.
fn check_duration(duration: Duration, warmup: Duration) -> Result<(), &'static str> {
    if duration.is_zero() || warmup >= duration {
        return Err("the duration must be above zero and longer than the warm-up");
    }
    Ok(())
}

/// Load factors: at least one, each positive.
fn check_loads(loads: &[f64]) -> Result<(), &'static str> {
    if loads.is_empty() || loads.iter().any(|l| !(l.is_finite() && *l > 0.0)) {
        return Err("load factors must be listed and positive, e.g. [0.7, 0.9]");
    }
    Ok(())
}

/// A scenario that could not be read or run: what, and where in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    message: String,
}

impl ScenarioError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        ScenarioError {
            message: message.into(),
        }
    }

    pub(crate) fn config(name: &str, e: crate::BuildError) -> Self {
        ScenarioError::new(format!("configuration `{name}`: {e}"))
    }

    /// The explanation.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ScenarioError {}

/// A seed for one random stream of a run, from the scenario's seed
/// (splitmix64 of the two).
pub(crate) fn mix(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
