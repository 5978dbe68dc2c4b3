//! The channel builder.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use tower::Service;

use super::engine::Engine;
use super::info::AttemptInfo;
use super::inner::{Handle, Hook, Inner};
use super::service::Channel;
use super::settings::ChannelPolicy;
use super::state::{ChannelState, Classifier, Endpoints};
use super::table::Table;
use super::writer::{Connect, TableWriter};
use crate::balance::{Balancer, P2c};
use crate::classify::{Classify, DefaultClassify, Outcome};
use crate::discover::{Discover, DiscoverError, RefreshHint, Update};
use crate::policy::breaker::BreakerSettings;
use crate::policy::hedge::HedgeSettings;
use crate::policy::replay::Replay;
use crate::policy::retry::RetrySettings;
use crate::{BoxError, BuildError, Endpoint};

type Updates = Pin<Box<dyn Stream<Item = Result<Update, DiscoverError>> + Send>>;

impl<Req, Resp> Channel<Req, Resp> {
    /// Starts building a channel whose per-endpoint services are made by
    /// `connect`.
    ///
    /// The connector is any `Fn(&Endpoint) -> S`: a closure, or a named
    /// function. A named function that returns `impl Service<..>` must say
    /// that the service does not borrow the endpoint, with `+ use<>`
    /// (otherwise, in edition 2024, the returned type captures the
    /// endpoint's lifetime and the function is not a connector for *every*
    /// endpoint):
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use tower::{Service, service_fn};
    /// use towline::{Channel, Endpoint};
    /// use towline::discover::Static;
    ///
    /// fn connect(
    ///     ep: &Endpoint,
    /// ) -> impl Service<u32, Response = u32, Error = Infallible, Future: Send> + Clone + Send + Sync + use<> {
    ///     let port = u32::from(ep.addr.port());
    ///     service_fn(move |x: u32| async move { Ok::<_, Infallible>(x + port) })
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut channel: Channel<u32, u32> = Channel::builder(connect)
    ///     .discover(Static::new(["127.0.0.1:7".parse::<std::net::SocketAddr>()?]))
    ///     .build()?;
    /// assert_eq!(channel.call(1).await?, 8);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Returning a named type (a struct, or
    /// `tower::util::BoxCloneSyncService`) works without it.
    pub fn builder<S, F>(connect: F) -> Builder<Req, S>
    where
        S: Service<Req, Response = Resp>,
        // For the default classifier, which inspects errors by type.
        S::Error: 'static,
        F: Fn(&Endpoint) -> S + Send + Sync + 'static,
    {
        Builder::new(connect)
    }
}

/// Builds a [`Channel`]. Made by [`Channel::builder`].
///
/// Defaults: balancer [`P2c::peak_ewma`], name `"default"`, initial wait 5 s,
/// classifier [`DefaultClassify`], no refresh hint, no policy, no replay,
/// no attempt hook. A discovery source is required.
///
/// Every bound the channel needs is checked by [`build`](Self::build): the
/// request and the service's response, error and future must be `Send` and
/// `'static`, and the service `Clone + Send + Sync`.
pub struct Builder<Req, S: Service<Req>> {
    connect: Connect<S>,
    discover: Option<Updates>,
    balancer: Box<dyn Balancer>,
    name: String,
    initial_wait: Duration,
    classify: Box<dyn Classify<S::Response, S::Error>>,
    refresh: Option<RefreshHint>,
    policy: ChannelPolicy,
    replay: Option<Box<dyn Replay<Req>>>,
    on_attempt: Option<Hook<Req>>,
}

impl<Req, S: Service<Req>> Builder<Req, S> {
    /// The default time calls wait for a first endpoint: 5 s.
    pub const DEFAULT_INITIAL_WAIT: Duration = Duration::from_secs(5);

    fn new<F>(connect: F) -> Self
    where
        S::Error: 'static,
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
            on_attempt: None,
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

    /// The channel's name, used as the `channel` metric label, in spans and
    /// in errors (default `"default"`).
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

    /// Classifies results with a function (default [`DefaultClassify`]:
    /// `Ok` succeeds, `Err` is a retryable failure). Its argument's type is
    /// known, so a closure needs no annotation:
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use towline::{Channel, Endpoint};
    /// use towline::classify::Outcome;
    /// # let connect = |_: &Endpoint| tower::service_fn(|x: u16| async move { Ok::<_, Infallible>(x) });
    /// let builder = Channel::builder(connect).classify(|r| match r {
    ///     Ok(503) => Outcome::Overloaded { retry_after: None },
    ///     Ok(_) => Outcome::Success,
    ///     Err(_) => Outcome::Failure { retryable: true },
    /// });
    /// # let _ = builder;
    /// ```
    pub fn classify<F>(self, classify: F) -> Self
    where
        F: Fn(&Result<S::Response, S::Error>) -> Outcome + Send + Sync + 'static,
    {
        self.classifier(classify)
    }

    /// Classifies results with a [`Classify`] implementation, for example
    /// one that [defers](crate::classify#late-outcomes) its outcomes.
    pub fn classifier(mut self, classify: impl Classify<S::Response, S::Error>) -> Self {
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

    /// How to copy a request for a retry or hedge, as a function (default:
    /// none, and then retries and hedging are refused at build). A request
    /// it returns `None` for is sent once. A closure needs no annotation:
    /// `.replay(|r| Some(r.clone()))`.
    pub fn replay<F>(self, replay: F) -> Self
    where
        F: Fn(&Req) -> Option<Req> + Send + Sync + 'static,
    {
        self.replayer(replay)
    }

    /// How to copy a request for a retry or hedge, as a [`Replay`]
    /// implementation: [`CloneReplay`](crate::policy::replay::CloneReplay)
    /// for `Clone` requests.
    pub fn replayer(mut self, replay: impl Replay<Req>) -> Self {
        self.replay = Some(Box::new(replay));
        self
    }

    /// A hook run on each attempt's request just before it is sent (default
    /// none), with what the channel knows about the attempt: its endpoint,
    /// number, kind, start and cut ([`AttemptInfo`]); for example to
    /// propagate the time left to the server. A closure needs no annotation.
    pub fn on_attempt<F>(mut self, hook: F) -> Self
    where
        F: Fn(&mut Req, &AttemptInfo) + Send + Sync + 'static,
    {
        self.on_attempt = Some(Box::new(hook));
        self
    }

    /// Builds the channel and starts its discovery task on the current tokio
    /// runtime.
    ///
    /// Errors: no discovery source, an empty name, no tokio runtime, an
    /// invalid policy setting, or retries/hedging without a replay.
    pub fn build(self) -> Result<Channel<Req, S::Response>, BuildError>
    where
        Req: Send + 'static,
        S: Clone + Send + Sync + 'static,
        S::Response: Send + 'static,
        S::Error: Into<BoxError> + Send + 'static,
        S::Future: Send + 'static,
    {
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
        ChannelState::check(
            &self.policy,
            self.policy.breaker().is_some(),
            self.replay.is_some(),
        )?;
        let balancer: Arc<dyn Balancer> = Arc::from(self.balancer);
        let table = Arc::new(Table::<S>::new(&*balancer));
        let weak = Arc::downgrade(&table);
        let mut state = ChannelState::new(
            &self.name,
            self.policy,
            self.replay.is_some(),
            self.refresh,
            balancer,
            weak as std::sync::Weak<dyn Endpoints>,
        );
        state.classifier = Classifier::new(self.classify);
        let state = Arc::new(state);
        let mut writer = TableWriter::new(table.clone(), self.connect, state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let name = state.name.clone();
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
        let inner = Arc::new(Inner {
            state,
            table,
            replay: self.replay,
            on_attempt: self.on_attempt,
            initial_wait: self.initial_wait,
            _stop: stop,
        });
        let engine: Arc<dyn Engine<Req, S::Response>> = Arc::new(Handle::new(inner));
        Ok(Channel::from_engine(engine))
    }
}
