//! Adaptive concurrency limit: cap in-flight calls where latency says the
//! service is saturated, and refuse the excess at once instead of queueing
//! it.
//!
//! When more work is offered than a service can do, queues grow, latency
//! passes every deadline and goodput collapses. A limit on calls in flight
//! stops that, but the right limit moves with the service's capacity. The
//! limiter learns it from the latency of finished calls:
//!
//! - [`Gradient`] (the default): compares each window's mean RTT with a
//!   no-load baseline measured by a periodic, jittered low-concurrency
//!   probe, and moves the limit by that gradient plus √limit of headroom,
//!   smoothed (after Netflix's concurrency-limits Gradient2 and Envoy's
//!   adaptive concurrency filter). Against a service that serves `k` calls
//!   at a time it settles near `1.25 k + √limit`.
//!
//!   The baseline is the *mean* RTT of the probe's calls, not their
//!   minimum. Where service times vary (exponential ones, say), the
//!   minimum of 20 calls is a small fraction of the typical latency, every
//!   window then looks overloaded, and the limit sinks to its floor: in the
//!   simulator's overload scenario (`scenarios/s10-overload.toml`) a
//!   minimum baseline kept goodput at 36% of capacity at twice the
//!   capacity offered, and refused most calls even at half of it; the mean
//!   keeps it at 101%.
//! - [`Aimd`]: additive increase, multiplicative decrease on dropped or
//!   too-slow calls. Simpler; keeps queues as long as its threshold allows.
//! - a fixed limit, for comparison (tower's `ConcurrencyLimit`, failing
//!   fast).
//!
//! A call over the limit fails at once with [`Error::Overloaded`], or, with
//! a queue configured, waits up to `max_wait` in a bounded first-come queue
//! for a place, then fails the same way. Both are counted. Calls that fail
//! without a response judged overload do not teach the limiter anything:
//! a success is a latency sample, an [`Outcome::Overloaded`] result or a
//! timeout ([`Error::is_timeout`]) is a *drop* (a sign of overload), any
//! other failure and any cancelled call is ignored.
//!
//! | setting | default |
//! |---|---|
//! | algorithm | [`Gradient`]: limits 3 ≤ 20 (initial) ≤ 1000, tolerance 0.25, smoothing 0.2, window 100 ms / 10 samples, probe every 30 s (+ up to 15%) at limit 3 over 20 calls |
//! | [`Aimd`] | limits 3 ≤ 20 ≤ 1000, backoff 0.9, RTT threshold 1 s |
//! | queue | none: refuse at once; [`LimitSettings::with_queue`] sets its length and longest wait |
//!
//! The decision logic is in the sans-IO cores ([`Gradient`], [`Aimd`]),
//! which take the time as an argument; [`AdaptiveLimitLayer`] wires them to
//! tokio's clock and to calls. All services made by one layer share one
//! limit. [`LimitHandle`] shows its state.
//!
//! ```
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use towline::policy::limit::{AdaptiveLimitLayer, LimitSettings};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let layer = AdaptiveLimitLayer::new(LimitSettings::default()).unwrap();
//! let handle = layer.handle();
//! let mut svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(tower::service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x + 1) }));
//! assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 2);
//! assert_eq!(handle.limit(), 3, "probing for the baseline first");
//! # });
//! ```
//!
//! # Metrics
//!
//! The standalone layer's label `limiter` is the settings' name (default
//! `"default"`); a channel's limits are labelled `channel` (and `endpoint`
//! for per-endpoint ones).
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `towline_concurrency_limit` | gauge | the limit in force |
//! | `towline_concurrency_min_rtt_seconds` | gauge | the gradient's baseline RTT |
//! | `towline_concurrency_rejected_total` | counter | calls refused (at once, queue full, or waited too long) |
//! | `towline_concurrency_queued_total` | counter | calls that waited in the queue |
//!
//! # In the channel
//!
//! The channel builder's `concurrency_limit` and
//! `endpoint_concurrency_limit` (or [`ChannelPolicy`]'s fields) put the
//! same limiter in the channel:
//!
//! - **Per channel**: a call takes a place first, before it waits for
//!   endpoints or picks one. Refused, it fails with [`Error::Overloaded`]
//!   without being started: no allocation, no attempt, no retry; with a
//!   queue, its future waits for a place. The place lives for the whole
//!   call (retries and hedges included: the limit counts what callers wait
//!   on), and the sample is the duration of the attempt that answered, from
//!   the attempt's own clock readings (backoff pauses are not latency),
//!   with its outcome as the channel's classifier says. An admitted call
//!   costs the limiter two atomic updates; when it ends, AIMD takes a short
//!   lock to learn from it, the gradient only for a sample of the calls of
//!   a busy window (see [`Gradient`]'s sampling).
//! - **Per endpoint**: each endpoint gets its own limiter when it is
//!   inserted, as it gets its breaker. A pick only considers endpoints
//!   with room (two atomic loads each), so the balancer sends the call
//!   where there is room; with none anywhere the call fails with
//!   [`Error::Overloaded`] (counted in `towline_concurrency_rejected_total`
//!   with the channel's label). Each attempt holds its endpoint's place
//!   and reports its RTT there, next to the balancer's load.
//! - **Runtime tuning** (`PolicyHandle::set`): new settings apply to new
//!   calls while the limit and the baseline stay (another algorithm starts
//!   from the limit in force). The channel's limit can be turned on and
//!   off at any time and keeps its state meanwhile; per-endpoint limits,
//!   like breakers, must exist at build to be retuned. The state shows in
//!   `PolicyHandle::concurrency_limit` and
//!   `PolicyHandle::endpoint_concurrency_limits` ([`LimitHandle`]), and as
//!   the metrics above.
//!
//! [`ChannelPolicy`]: crate::channel::ChannelPolicy
//! [`Error::Overloaded`]: crate::Error::Overloaded
//! [`Error::is_timeout`]: crate::Error::is_timeout
//! [`Outcome::Overloaded`]: crate::classify::Outcome::Overloaded

mod aimd;
mod gradient;
mod layer;
mod limiter;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

pub use aimd::{Aimd, AimdSettings};
pub use gradient::{Gradient, GradientSettings};
pub use layer::{AdaptiveLimit, AdaptiveLimitFuture, AdaptiveLimitLayer};
pub use limiter::LimitHandle;
pub(crate) use limiter::Limiter;

use crate::error::BuildError;
use crate::rng::{Rng, with_thread_rng};

/// `towline_concurrency_limit`: the limit in force (gauge).
pub const LIMIT_METRIC: &str = "towline_concurrency_limit";
/// `towline_concurrency_min_rtt_seconds`: the baseline RTT (gauge).
pub const MIN_RTT_METRIC: &str = "towline_concurrency_min_rtt_seconds";
/// `towline_concurrency_rejected_total`: calls refused (counter).
pub const REJECTED_METRIC: &str = "towline_concurrency_rejected_total";
/// `towline_concurrency_queued_total`: calls that waited (counter).
pub const QUEUED_METRIC: &str = "towline_concurrency_queued_total";

/// One finished call, as the limit algorithms see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// How long the call took.
    pub rtt: Duration,
    /// Calls in flight when it finished, itself included.
    pub in_flight: usize,
    /// Whether it ended in a sign of overload (an overloaded answer or a
    /// timeout) rather than a response.
    pub dropped: bool,
}

/// Which algorithm sets the limit.
#[derive(Debug, Clone, PartialEq)]
pub enum LimitAlgorithm {
    /// [`Gradient`], the default.
    Gradient(GradientSettings),
    /// [`Aimd`].
    Aimd(AimdSettings),
    /// A fixed limit (at least 1).
    Fixed(usize),
}

/// Settings of a concurrency limiter: the algorithm, the queue, the
/// metrics name (see the [module docs](self) for the defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct LimitSettings {
    pub(crate) algorithm: LimitAlgorithm,
    pub(crate) queue: usize,
    pub(crate) max_wait: Duration,
    pub(crate) name: String,
    pub(crate) seed: Option<u64>,
}

impl Default for LimitSettings {
    /// The gradient algorithm with its defaults, no queue.
    fn default() -> Self {
        LimitSettings::new(LimitAlgorithm::Gradient(GradientSettings::default()))
    }
}

impl LimitSettings {
    /// A limiter run by `algorithm`, with no queue.
    pub fn new(algorithm: LimitAlgorithm) -> Self {
        LimitSettings {
            algorithm,
            queue: 0,
            max_wait: Duration::ZERO,
            name: "default".to_owned(),
            seed: None,
        }
    }

    /// Lets up to `length` calls over the limit wait, each at most
    /// `max_wait`, for a place (default: no queue). With a `length` above
    /// zero, `max_wait` must be above zero.
    pub fn with_queue(mut self, length: usize, max_wait: Duration) -> Self {
        (self.queue, self.max_wait) = (length, max_wait);
        self
    }

    /// The `limiter` label of the metrics (default `"default"`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Seeds the probe jitter, for reproducible tests (default: a seed
    /// drawn from the thread's generator, which is seeded from the
    /// operating system unless [`seed_thread_rng`](crate::rng::seed_thread_rng)
    /// seeded it, as the simulator does).
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), BuildError> {
        match &self.algorithm {
            LimitAlgorithm::Gradient(g) => g.validate()?,
            LimitAlgorithm::Aimd(a) => a.validate()?,
            LimitAlgorithm::Fixed(0) => {
                return Err(BuildError::new("limit", "a fixed limit must be at least 1"));
            }
            LimitAlgorithm::Fixed(_) => {}
        }
        if self.queue > 0 && self.max_wait.is_zero() {
            return Err(BuildError::new(
                "queue",
                "a queue needs a longest wait above zero",
            ));
        }
        Ok(())
    }
}

/// The bounds every algorithm shares: `1 <= min <= initial <= max`.
fn check_limits(min: usize, initial: usize, max: usize) -> Result<(), BuildError> {
    if min == 0 || min > initial || initial > max {
        return Err(BuildError::new(
            "limits",
            format!("need 1 <= min <= initial <= max, got {min}, {initial}, {max}"),
        ));
    }
    Ok(())
}

/// The algorithm's state, whichever it is.
#[derive(Debug)]
pub(crate) enum Core {
    Gradient(Gradient),
    Aimd(Aimd),
    Fixed(usize),
}

impl Core {
    pub(crate) fn new(settings: &LimitSettings, now: Instant) -> Self {
        match &settings.algorithm {
            LimitAlgorithm::Gradient(g) => {
                // Unseeded: from the thread's generator, so that a run on a
                // seeded thread (the simulator) is reproducible.
                let seed = settings
                    .seed
                    .unwrap_or_else(|| with_thread_rng(Rng::next_u64));
                let rng = Rng::seeded(seed);
                Core::Gradient(Gradient::new(g.clone(), now, rng))
            }
            LimitAlgorithm::Aimd(a) => Core::Aimd(Aimd::new(a.clone())),
            LimitAlgorithm::Fixed(n) => Core::Fixed(*n),
        }
    }

    pub(crate) fn limit(&self) -> usize {
        match self {
            Core::Gradient(g) => g.limit(),
            Core::Aimd(a) => a.limit(),
            Core::Fixed(n) => *n,
        }
    }

    pub(crate) fn min_rtt(&self) -> Option<Duration> {
        match self {
            Core::Gradient(g) => g.min_rtt(),
            _ => None,
        }
    }

    /// Takes new settings, keeping the limit in force and the baseline
    /// where the algorithm allows (see `Limiter::retune`).
    pub(crate) fn retune(&mut self, settings: &LimitSettings, now: Instant) {
        match (&mut *self, &settings.algorithm) {
            (Core::Gradient(g), LimitAlgorithm::Gradient(s)) => g.retune(s.clone()),
            (Core::Aimd(a), LimitAlgorithm::Aimd(s)) => a.retune(s.clone()),
            (core, _) => {
                let limit = core.limit();
                *core = Core::new(settings, now);
                match core {
                    Core::Gradient(g) => g.resume_at(limit),
                    Core::Aimd(a) => a.resume_at(limit),
                    Core::Fixed(_) => {}
                }
            }
        }
    }

    /// Feeds a sample that stands for `weight` calls; returns whether the
    /// limit or baseline may have changed.
    pub(crate) fn on_sample(&mut self, sample: Sample, weight: u32, now: Instant) -> bool {
        match self {
            Core::Gradient(g) => g.on_weighted_sample(sample, weight, now),
            Core::Aimd(a) => a.on_sample(sample, now),
            Core::Fixed(_) => false,
        }
    }

    /// How the limiter may sample finished calls now: only the gradient
    /// samples (AIMD moves on every call).
    pub(crate) fn sampling(&self) -> Sampling {
        match self {
            Core::Gradient(g) => Sampling {
                every: g.sample_every(),
                peak: g.window_peak(),
                all_from: g.sample_all_from(),
            },
            _ => Sampling {
                every: 1,
                peak: 0,
                all_from: None,
            },
        }
    }
}

/// How the limiter may sample finished calls: one successful call in
/// `every` is reported, standing for `every` calls, except a call that
/// sees more than `peak` calls in flight or that ends at or after
/// `all_from`, which is reported standing for itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sampling {
    pub(crate) every: u32,
    pub(crate) peak: usize,
    pub(crate) all_from: Option<Instant>,
}
