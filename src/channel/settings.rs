//! The channel's policy settings: [`ChannelPolicy`], whose doc explains
//! ejection, panic mode and runtime tuning.

use std::time::Duration;

use crate::error::BuildError;
use crate::policy::breaker::BreakerSettings;
use crate::policy::hedge::HedgeSettings;
use crate::policy::retry::RetrySettings;
use crate::policy::timeout::positive;

/// The policy settings of a channel. Every policy is off by default; the
/// ejection limits default to 50% and 50%.
///
/// Per call: an overall deadline; retry rounds (each on an endpoint the call
/// has not tried, while one is left); within a round, hedges (extra attempts
/// on other untried endpoints); on every attempt the attempt timeout and the
/// endpoint's own circuit breaker.
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
/// Runtime tuning: [`PolicyHandle::set`](super::PolicyHandle::set) swaps the settings atomically; new
/// calls use them, breakers keep their state (their thresholds are updated),
/// and the budgets and the latency window keep their history. Turning
/// breakers, retries or hedging on at runtime needs them (or, for retries and
/// hedging, a replay function) to have been set up at build.
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
    max_ejected_share: f64,
    panic_threshold: f64,
}

impl Default for ChannelPolicy {
    fn default() -> Self {
        ChannelPolicy {
            timeout: None,
            deadline: None,
            retry: None,
            hedge: None,
            breaker: None,
            max_ejected_share: 0.5,
            panic_threshold: 0.5,
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

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), BuildError> {
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

    /// The ejection cap.
    pub fn max_ejected_share(&self) -> f64 {
        self.max_ejected_share
    }

    /// The panic threshold.
    pub fn panic_threshold(&self) -> f64 {
        self.panic_threshold
    }

    /// More than one attempt may be made per call.
    pub(crate) fn retries(&self) -> bool {
        self.retry.as_ref().is_some_and(|r| r.max_attempts() > 1)
    }

    /// No policy at all: the bare call path applies.
    pub(crate) fn is_bare(&self) -> bool {
        self.timeout().is_none()
            && self.deadline().is_none()
            && !self.retries()
            && self.hedge.is_none()
            && self.breaker.is_none()
    }
}
