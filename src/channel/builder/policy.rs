//! The builder's policy settings, one method each: shortcuts for the
//! matching [`ChannelPolicy`] setters.

use std::time::Duration;

use tower::Service;

use super::Builder;
use crate::balance::SlowStartSettings;
use crate::channel::ChannelPolicy;
use crate::policy::breaker::BreakerSettings;
use crate::policy::hedge::HedgeSettings;
use crate::policy::limit::LimitSettings;
use crate::policy::retry::RetrySettings;
use crate::policy::throttle::ThrottleSettings;

impl<Req, S: Service<Req>> Builder<Req, S> {
    /// Slow start (default: off): see
    /// [`ChannelPolicy::with_slow_start`] and [`crate::balance::slow_start`].
    pub fn slow_start(mut self, slow_start: SlowStartSettings) -> Self {
        self.policy = self.policy.with_slow_start(Some(slow_start));
        self
    }

    /// A timeout on each attempt (default none): an attempt that takes
    /// longer fails with [`Error::AttemptTimeout`](crate::Error::AttemptTimeout),
    /// which is retryable.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.policy = self.policy.with_timeout(Some(timeout));
        self
    }

    /// An overall deadline per call, covering every attempt and pause
    /// (default none): [`Error::DeadlineExceeded`](crate::Error::DeadlineExceeded).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.policy = self.policy.with_deadline(Some(deadline));
        self
    }

    /// Retries (default none): see [`crate::policy::retry`]. Each retry
    /// goes to an endpoint the call has not tried, while one is left. Needs
    /// [`replay`](Self::replay).
    pub fn retry(mut self, retry: RetrySettings) -> Self {
        self.policy = self.policy.with_retry(Some(retry));
        self
    }

    /// Hedging (default none): see [`crate::policy::hedge`]. Each hedge goes
    /// to an endpoint the call has not tried. Needs [`replay`](Self::replay).
    pub fn hedge(mut self, hedge: HedgeSettings) -> Self {
        self.policy = self.policy.with_hedge(Some(hedge));
        self
    }

    /// A circuit breaker per endpoint (default none): an endpoint whose
    /// breaker opens is ejected from picks and gets only probes until it
    /// closes. See [`crate::policy::breaker`] and [`ChannelPolicy`].
    pub fn circuit_breaker(mut self, breaker: BreakerSettings) -> Self {
        self.policy = self.policy.with_breaker(Some(breaker));
        self
    }

    /// Adaptive throttling (default none): attempts are refused locally,
    /// without being sent, in proportion to how much the backends have been
    /// refusing or failing lately (Google SRE book; see
    /// [`crate::policy::throttle`] and [`ChannelPolicy::with_throttle`]).
    /// Sheds load at the client so that saturated backends can drain their
    /// queues.
    pub fn throttle(mut self, throttle: ThrottleSettings) -> Self {
        self.policy = self.policy.with_throttle(Some(throttle));
        self
    }

    /// A limit on the channel's calls in flight, learned from their latency
    /// (default none): see [`crate::policy::limit`] for the algorithms and
    /// their defaults. A call over the limit fails at once with
    /// [`Error::Overloaded`](crate::Error::Overloaded) (or waits in the
    /// limit's queue, when it has one). Its state is in
    /// [`PolicyHandle::concurrency_limit`](super::PolicyHandle::concurrency_limit).
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use tower::{Service, ServiceExt};
    /// use towline::policy::limit::{LimitAlgorithm, LimitSettings};
    /// use towline::{Channel, Endpoint, Error};
    /// use towline::discover::Static;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let slow = |_: &Endpoint| tower::service_fn(|x: u32| async move {
    ///     tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    ///     Ok::<_, Infallible>(x)
    /// });
    /// // A fixed limit of one call, for the example (the default
    /// // `LimitSettings::default()` learns its limit).
    /// let mut channel: Channel<u32, u32> = Channel::builder(slow)
    ///     .discover(Static::new(["127.0.0.1:80".parse::<std::net::SocketAddr>()?]))
    ///     .concurrency_limit(LimitSettings::new(LimitAlgorithm::Fixed(1)))
    ///     .build()?;
    /// let first = channel.call(1);
    /// // The second call is over the limit: refused at once.
    /// assert!(matches!(channel.call(2).await, Err(Error::Overloaded)));
    /// assert_eq!(first.await?, 1);
    /// let limit = channel.policy_handle().concurrency_limit().unwrap();
    /// assert_eq!((limit.limit(), limit.rejected()), (1, 1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn concurrency_limit(mut self, limit: LimitSettings) -> Self {
        self.policy = self.policy.with_concurrency_limit(Some(limit));
        self
    }

    /// A limit on each endpoint's attempts in flight, each endpoint
    /// learning its own (default none): picks go to endpoints with room,
    /// and a call finding none fails with
    /// [`Error::Overloaded`](crate::Error::Overloaded). States in
    /// [`PolicyHandle::endpoint_concurrency_limits`](super::PolicyHandle::endpoint_concurrency_limits).
    pub fn endpoint_concurrency_limit(mut self, limit: LimitSettings) -> Self {
        self.policy = self.policy.with_endpoint_concurrency_limit(Some(limit));
        self
    }

    /// The largest share of endpoints ejected at once (default 0.5).
    pub fn max_ejected_share(mut self, share: f64) -> Self {
        self.policy = self.policy.with_max_ejected_share(share);
        self
    }

    /// Panic mode (spread over all endpoints) engages when fewer than this
    /// share have a closed breaker (default 0.5).
    pub fn panic_threshold(mut self, share: f64) -> Self {
        self.policy = self.policy.with_panic_threshold(share);
        self
    }

    /// Every policy setting at once (replaces the ones set before).
    pub fn policy(mut self, policy: ChannelPolicy) -> Self {
        self.policy = policy;
        self
    }
}
