//! The channel's policy settings: [`ChannelPolicy`], whose doc explains
//! ejection, panic mode and runtime tuning.

use std::time::Duration;

use crate::balance::SlowStartSettings;
use crate::error::BuildError;
use crate::policy::breaker::BreakerSettings;
use crate::policy::hedge::HedgeSettings;
use crate::policy::limit::LimitSettings;
use crate::policy::retry::RetrySettings;
use crate::policy::throttle::ThrottleSettings;
use crate::policy::timeout::positive;

/// The policy settings of a channel. Every policy is off by default; the
/// ejection limits default to 50% and 50%.
///
/// Per call: an overall deadline; retry rounds (each on an endpoint the call
/// has not tried, while one is left); within a round, hedges (extra attempts
/// on other untried endpoints); on every attempt adaptive throttling, the
/// attempt timeout and the endpoint's own circuit breaker.
///
/// Ejection: an endpoint whose breaker is not closed is ejected from picks
/// and gets only probes, and returns when its breaker closes. At most
/// `max_ejected_share` of the endpoints (rounded down) are ejected at once;
/// further failing endpoints stay in rotation. When fewer than
/// `panic_threshold` of the endpoints have a closed breaker the channel is in
/// panic mode: it spreads calls over all endpoints and bypasses their
/// breakers, rather than crush a healthy minority (and asks discovery, through
/// the refresh hint, to look again). The `towline_ejected_endpoints` gauge
/// (label `channel`) tracks the ejected count.
///
/// Slow start (off by default): an endpoint added to a set that had
/// endpoints, or back from ejection, gets a share of traffic that ramps up
/// over a window (see [`crate::balance::slow_start`]), with round-robin,
/// weighted and P2C balancers. Turning it off ends every ramp at once.
///
/// Concurrency limits ([`crate::policy::limit`]): a limit on the channel's
/// calls in flight, and optionally one per endpoint. A call over the
/// channel's limit fails at once with [`Error::Overloaded`](crate::Error::Overloaded)
/// (or waits in the limit's bounded queue); an attempt finds an endpoint
/// whose limit has room, and a call fails the same way when none has.
///
/// Runtime tuning: [`PolicyHandle::set`](super::PolicyHandle::set) swaps the settings atomically; new
/// calls use them, breakers keep their state (their thresholds are updated),
/// the budgets and the latency window keep their history, and concurrency
/// limits keep their limit and baseline. Turning breakers, per-endpoint
/// limits, retries or hedging on at runtime needs them (or, for retries and
/// hedging, a replay function) to have been set up at build; the channel's
/// own limit can be turned on at any time.
///
/// ```
/// use std::time::Duration;
/// use towline::channel::ChannelPolicy;
/// use towline::policy::retry::RetrySettings;
///
/// let policy = ChannelPolicy::default()
///     .with_deadline(Some(Duration::from_secs(2)))
///     .with_retry(Some(RetrySettings::default()));
/// assert!(policy.validate().is_ok());
/// assert!(policy.clone().with_max_ejected_share(2.0).validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelPolicy {
    timeout: Option<Duration>,
    deadline: Option<Duration>,
    retry: Option<RetrySettings>,
    hedge: Option<HedgeSettings>,
    breaker: Option<BreakerSettings>,
    throttle: Option<ThrottleSettings>,
    max_ejected_share: f64,
    panic_threshold: f64,
    slow_start: Option<SlowStartSettings>,
    concurrency_limit: Option<LimitSettings>,
    endpoint_concurrency_limit: Option<LimitSettings>,
}

impl Default for ChannelPolicy {
    fn default() -> Self {
        ChannelPolicy {
            timeout: None,
            deadline: None,
            retry: None,
            hedge: None,
            breaker: None,
            throttle: None,
            max_ejected_share: 0.5,
            panic_threshold: 0.5,
            slow_start: None,
            concurrency_limit: None,
            endpoint_concurrency_limit: None,
        }
    }
}

impl ChannelPolicy {
    /// A timeout on each attempt (default none).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// An overall deadline on each call (default none).
    pub fn with_deadline(mut self, deadline: Option<Duration>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Retries (default none). A deadline or attempt timeout inside the
    /// retry settings applies when the channel's own is not set.
    pub fn with_retry(mut self, retry: Option<RetrySettings>) -> Self {
        self.retry = retry;
        self
    }

    /// Hedging (default none).
    pub fn with_hedge(mut self, hedge: Option<HedgeSettings>) -> Self {
        self.hedge = hedge;
        self
    }

    /// A circuit breaker per endpoint (default none).
    pub fn with_breaker(mut self, breaker: Option<BreakerSettings>) -> Self {
        self.breaker = breaker;
        self
    }

    /// Adaptive throttling (default none): each attempt may be refused
    /// locally, without being sent, while the backends accept less than
    /// `1/K` of what this channel sends them (see
    /// [`crate::policy::throttle`]). A refused first attempt fails the call
    /// with [`Error::Throttled`](crate::Error::Throttled); a refused retry
    /// ends it with the last attempt's error; a refused hedge is not sent.
    /// Each refusal counts in `towline_throttled_total`. Retuned at runtime,
    /// `K` and the cap change and the counts stay; the window keeps the
    /// length it had when the channel was built.
    pub fn with_throttle(mut self, throttle: Option<ThrottleSettings>) -> Self {
        self.throttle = throttle;
        self
    }

    /// The largest share of endpoints ejected at once (0 to 1; default 0.5).
    pub fn with_max_ejected_share(mut self, share: f64) -> Self {
        self.max_ejected_share = share;
        self
    }

    /// Panic mode engages when the share of endpoints with a closed breaker
    /// falls below this (0 to 1; default 0.5; 0 turns panic mode off).
    pub fn with_panic_threshold(mut self, share: f64) -> Self {
        self.panic_threshold = share;
        self
    }

    /// Slow start for new endpoints and endpoints back from ejection
    /// (default none; [`SlowStartSettings::default`] is a 30 s linear ramp
    /// from 10% of the weight).
    pub fn with_slow_start(mut self, slow_start: Option<SlowStartSettings>) -> Self {
        self.slow_start = slow_start;
        self
    }

    /// A limit on the channel's calls in flight (default none): see
    /// [`crate::policy::limit`]. A call takes its place before it waits
    /// for endpoints and keeps it until it ends, retries and hedges
    /// included.
    pub fn with_concurrency_limit(mut self, limit: Option<LimitSettings>) -> Self {
        self.concurrency_limit = limit;
        self
    }

    /// A limit on each endpoint's attempts in flight (default none), each
    /// endpoint learning its own: the balancer picks among endpoints with
    /// room.
    pub fn with_endpoint_concurrency_limit(mut self, limit: Option<LimitSettings>) -> Self {
        self.endpoint_concurrency_limit = limit;
        self
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), BuildError> {
        if let Some(s) = &self.slow_start {
            s.validate()?;
        }
        if let Some(t) = self.timeout {
            positive("timeout", t)?;
        }
        if let Some(d) = self.deadline {
            positive("deadline", d)?;
        }
        if let Some(r) = &self.retry {
            r.validate()?;
        }
        if let Some(h) = &self.hedge {
            h.validate()?;
        }
        if let Some(b) = &self.breaker {
            b.validate()?;
        }
        if let Some(t) = &self.throttle {
            t.validate()?;
        }
        for limit in [&self.concurrency_limit, &self.endpoint_concurrency_limit]
            .into_iter()
            .flatten()
        {
            limit.validate()?;
        }
        for (name, v) in [
            ("max_ejected_share", self.max_ejected_share),
            ("panic_threshold", self.panic_threshold),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(BuildError::new(
                    name,
                    format!("must be a share between 0 and 1, got {v}"),
                ));
            }
        }
        Ok(())
    }

    /// The per-attempt timeout: the channel's, else the retry settings'.
    #[inline]
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
            .or_else(|| self.retry.as_ref().and_then(|r| r.attempt_timeout()))
    }

    /// The call deadline: the channel's, else the retry settings'.
    #[inline]
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
            .or_else(|| self.retry.as_ref().and_then(|r| r.deadline()))
    }

    /// The retry settings, if retries are on.
    #[inline]
    pub fn retry(&self) -> Option<&RetrySettings> {
        self.retry.as_ref()
    }

    /// The hedging settings, if hedging is on.
    #[inline]
    pub fn hedge(&self) -> Option<&HedgeSettings> {
        self.hedge.as_ref()
    }

    /// The breaker settings, if breakers are on.
    #[inline]
    pub fn breaker(&self) -> Option<&BreakerSettings> {
        self.breaker.as_ref()
    }

    /// The adaptive-throttling settings, if throttling is on.
    pub fn throttle(&self) -> Option<&ThrottleSettings> {
        self.throttle.as_ref()
    }

    /// The channel's concurrency limit, if on.
    pub fn concurrency_limit(&self) -> Option<&LimitSettings> {
        self.concurrency_limit.as_ref()
    }

    /// The per-endpoint concurrency limit, if on.
    pub fn endpoint_concurrency_limit(&self) -> Option<&LimitSettings> {
        self.endpoint_concurrency_limit.as_ref()
    }

    /// The ejection cap.
    pub fn max_ejected_share(&self) -> f64 {
        self.max_ejected_share
    }

    /// The panic threshold.
    pub fn panic_threshold(&self) -> f64 {
        self.panic_threshold
    }

    /// The slow-start settings, if slow start is on.
    pub fn slow_start(&self) -> Option<&SlowStartSettings> {
        self.slow_start.as_ref()
    }

    /// More than one attempt may be made per call.
    pub(crate) fn retries(&self) -> bool {
        self.retry.as_ref().is_some_and(|r| r.max_attempts() > 1)
    }

    /// No policy that needs the call machine: the bare call path applies
    /// (it takes the channel's concurrency limit itself).
    pub(crate) fn is_bare(&self) -> bool {
        self.timeout().is_none()
            && self.deadline().is_none()
            && !self.retries()
            && self.hedge.is_none()
            && self.breaker.is_none()
            && self.throttle.is_none()
            && self.endpoint_concurrency_limit.is_none()
    }
}
