//! The channel builder.

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use tower::Service;

use super::policy::{ChannelPolicy, Policies};
use super::table::{Table, TableWriter};
use super::{Channel, Handle, Shared};
use crate::balance::{Balancer, P2c};
use crate::classify::{Classify, DefaultClassify};
use crate::discover::{Discover, DiscoverError, RefreshHint, Update};
use crate::metrics::ChannelMetrics;
use crate::policy::breaker::BreakerSettings;
use crate::policy::hedge::HedgeSettings;
use crate::policy::replay::Replay;
use crate::policy::retry::RetrySettings;
use crate::{BuildError, Endpoint};

type Updates = Pin<Box<dyn Stream<Item = Result<Update, DiscoverError>> + Send>>;

/// Builds a [`Channel`]. Made by [`Channel::builder`].
///
/// Defaults: balancer [`P2c::peak_ewma`], name `"default"`, initial wait 5 s,
/// classifier [`DefaultClassify`], no refresh hint. A discovery source is
/// required.
pub struct Builder<Req, S: Service<Req>> {
    connect: Box<dyn Fn(&Endpoint) -> S + Send + Sync>,
    discover: Option<Updates>,
    balancer: Box<dyn Balancer>,
    name: String,
    initial_wait: Duration,
    classify: Box<dyn Classify<S::Response, S::Error>>,
    refresh: Option<RefreshHint>,
    policy: ChannelPolicy,
    replay: Option<Box<dyn Replay<Req>>>,
    _req: PhantomData<fn(Req)>,
}

impl<Req, S> Builder<Req, S>
where
    S: Service<Req> + Clone + Send + Sync + 'static,
    // For the default classifier, which inspects errors by type.
    S::Error: 'static,
{
    /// The default time calls wait for a first endpoint: 5 s.
    pub const DEFAULT_INITIAL_WAIT: Duration = Duration::from_secs(5);

    pub(super) fn new<F>(connect: F) -> Self
    where
        F: Fn(&Endpoint) -> S + Send + Sync + 'static,
    {
        Builder {
            connect: Box::new(connect),
            discover: None,
            balancer: Box::new(P2c::peak_ewma()),
            name: "default".to_string(),
            initial_wait: Self::DEFAULT_INITIAL_WAIT,
            classify: Box::new(DefaultClassify),
            refresh: None,
            policy: ChannelPolicy::default(),
            replay: None,
            _req: PhantomData,
        }
    }

    /// The discovery source (required): [`Static`](crate::discover::Static),
    /// [`Manual`](crate::discover::Manual)'s stream, DNS, etcd, or any stream
    /// of updates.
    pub fn discover(mut self, source: impl Discover) -> Self {
        self.discover = Some(Box::pin(source));
        self
    }

    /// The load balancer (default [`P2c::peak_ewma`]).
    pub fn balancer(mut self, balancer: impl Balancer) -> Self {
        self.balancer = Box::new(balancer);
        self
    }

    /// The channel's name, used as the `channel` metric label and in logs
    /// (default `"default"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How long a call waits for the first endpoints (more generally: for a
    /// non-empty set) before failing with
    /// [`Error::NoEndpoints`](crate::Error::NoEndpoints) (default 5 s).
    pub fn initial_wait(mut self, wait: Duration) -> Self {
        self.initial_wait = wait;
        self
    }

    /// The result classifier (default [`DefaultClassify`]: `Ok` succeeds,
    /// `Err` is a retryable failure).
    pub fn classify(mut self, classify: impl Classify<S::Response, S::Error>) -> Self {
        self.classify = Box::new(classify);
        self
    }

    /// A hint the channel pulls when it finds no usable endpoint, so that a
    /// source such as DNS looks again at once (default: none).
    pub fn refresh_hint(mut self, hint: RefreshHint) -> Self {
        self.refresh = Some(hint);
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

    /// How to copy a request for a retry or hedge (default: none, and then
    /// retries and hedging are refused at build): [`CloneReplay`](crate::policy::replay::CloneReplay)
    /// for `Clone` requests, or a function `&Req -> Option<Req>` (a request
    /// it returns `None` for is sent once).
    pub fn replay(mut self, replay: impl Replay<Req>) -> Self {
        self.replay = Some(Box::new(replay));
        self
    }

    /// Builds the channel and starts its discovery task on the current tokio
    /// runtime.
    ///
    /// Errors: no discovery source, an empty name, no tokio runtime, an
    /// invalid policy setting, or retries/hedging without a replay.
    pub fn build(self) -> Result<Channel<Req, S>, BuildError> {
        let Some(mut updates) = self.discover else {
            return Err(BuildError::new(
                "discover",
                "a discovery source is required (e.g. Static or Manual)",
            ));
        };
        if self.name.is_empty() {
            return Err(BuildError::new("name", "must not be empty"));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            BuildError::new("runtime", "build() must be called within a tokio runtime")
        })?;
        Policies::check(
            &self.policy,
            self.policy.breaker().is_some(),
            self.replay.is_some(),
        )?;
        let metrics = ChannelMetrics::new(&self.name);
        let policies = Arc::new(Policies::new(
            self.policy,
            self.replay.is_some(),
            &self.name,
            self.refresh,
        ));
        let balancer: Arc<dyn Balancer> = Arc::from(self.balancer);
        let table = Arc::new(Table::new(&*balancer));
        let mut writer = TableWriter::new(
            table.clone(),
            self.connect,
            balancer.clone(),
            metrics.clone(),
            policies.clone(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let name = self.name.clone();
        runtime.spawn(async move {
            use futures_util::{FutureExt, StreamExt};
            tokio::pin!(stopped);
            loop {
                let item = tokio::select! {
                    _ = &mut stopped => break,
                    item = updates.next() => item,
                };
                let Some(mut item) = item else {
                    tracing::debug!(channel = %name, "discovery stream ended; keeping the last set");
                    break;
                };
                // Apply every update already waiting, then publish once.
                let mut changed = false;
                let mut ended = false;
                loop {
                    match item {
                        Ok(update) => {
                            writer.apply(update);
                            changed = true;
                        }
                        Err(error) => {
                            tracing::warn!(channel = %name, %error, "discovery error; keeping the last set");
                            writer.discovery_failed(error);
                        }
                    }
                    match updates.next().now_or_never() {
                        Some(Some(next)) => item = next,
                        Some(None) => {
                            ended = true;
                            break;
                        }
                        None => break,
                    }
                }
                if changed {
                    writer.publish();
                }
                if ended {
                    break;
                }
            }
        });
        let shared = Arc::new(Shared {
            table,
            classify: self.classify,
            initial_wait: self.initial_wait,
            metrics,
            name: self.name,
            policies,
            replay: self.replay,
            balancer,
            _stop: stop,
            _req: PhantomData,
        });
        Ok(Channel {
            handle: Arc::new(Handle { shared }),
        })
    }
}
