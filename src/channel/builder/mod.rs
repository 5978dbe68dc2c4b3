//! The channel builder.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use tower::Service;

use super::engine::Engine;
use super::info::AttemptInfo;
use super::inner::{Handle, HashKey, Hook, Inner};
use super::keyed::{Built, Keyed};
use super::service::Channel;
use super::settings::ChannelPolicy;
use super::shared::SetShared;
use super::state::{ChannelState, Classifier, Endpoints};
use super::table::Table;
use super::writer::{Connect, TableWriter};
use crate::balance::{Balancer, ConsistentHash, P2c};
use crate::classify::{Classify, Outcome};
use crate::discover::{Discover, DiscoverError, RefreshHint, Update};
use crate::policy::replay::Replay;
use crate::subset::{Aperture, ApertureSettings, Coordinates};
use crate::{BoxError, BuildError, Endpoint};

mod policy;

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
/// Defaults: balancer [`P2c::peak_ewma`], no keyed balancer, name
/// `"default"`, initial wait 5 s, classifier
/// [`DefaultClassify`](crate::classify::DefaultClassify), no refresh hint,
/// no policy (no slow start), no replay, no attempt hook. A discovery
/// source is required.
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
    /// The classifier set, if any (none: [`DefaultClassify`](crate::classify::DefaultClassify)).
    classify: Option<Box<dyn Classify<S::Response, S::Error>>>,
    refresh: Option<RefreshHint>,
    policy: ChannelPolicy,
    replay: Option<Box<dyn Replay<Req>>>,
    on_attempt: Option<Hook<Req>>,
    keyed: Option<(ConsistentHash, HashKey<Req>)>,
    aperture: Option<(ApertureSettings, Coordinates)>,
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
            classify: None,
            refresh: None,
            policy: ChannelPolicy::default(),
            replay: None,
            on_attempt: None,
            keyed: None,
            aperture: None,
        }
    }

    /// The discovery source (required): [`Static`](crate::discover::Static),
    /// [`Manual`](crate::discover::Manual)'s stream, DNS, etcd, or any stream
    /// of updates.
    pub fn discover(mut self, source: impl Discover) -> Self {
        self.discover = Some(Box::pin(source));
        self
    }

    /// Narrows the discovery source to this client's deterministic
    /// aperture (default: every endpoint): see [`crate::subset`]. The
    /// channel then connects to about `settings.size()` endpoints, a share
    /// of the ring fixed by its coordinate among its peers, each weighted
    /// by how much of it the share covers; [`P2c`] (the default balancer)
    /// and [`Weighted`](crate::balance::Weighted) honour those weights.
    /// `coordinates` is a fixed [`Coordinate`](crate::subset::Coordinate)
    /// or a receiver that follows it, such as `discover::Peers::watch`
    /// (feature `etcd`). Same as passing
    /// [`Aperture::new`](crate::subset::Aperture::new)`(source, settings,
    /// coordinates)` to [`discover`](Self::discover); nothing is added to a
    /// pick.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use tower::Service;
    /// use towline::discover::Static;
    /// use towline::subset::{ApertureSettings, Coordinate};
    /// use towline::{Channel, Endpoint};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let servers: Vec<std::net::SocketAddr> =
    ///     (1..=30).map(|p| std::net::SocketAddr::from(([10, 0, 0, 1], p))).collect();
    /// let connect = |_: &Endpoint| tower::service_fn(|x: u32| async move { Ok::<_, Infallible>(x) });
    /// // Client 4 of 10, 6 servers each: the middle of its tenth of the
    /// // ring is server 13.5, so half of server 13, all of 14 to 18, half
    /// // of 19 (ports are one above the index).
    /// let mut channel: Channel<u32, u32> = Channel::builder(connect)
    ///     .discover(Static::new(servers))
    ///     .aperture(ApertureSettings::new(6), Coordinate::new(4, 10)?)
    ///     .build()?;
    /// channel.call(1).await?;
    /// let held: Vec<(u16, u32)> = channel
    ///     .endpoints()
    ///     .iter()
    ///     .map(|e| (e.endpoint.addr.port(), e.endpoint.weight))
    ///     .collect();
    /// assert_eq!(
    ///     held,
    ///     [(14, 500), (15, 1000), (16, 1000), (17, 1000), (18, 1000), (19, 1000), (20, 500)]
    /// );
    /// # Ok(())
    /// # }
    /// ```
    pub fn aperture(
        mut self,
        settings: ApertureSettings,
        coordinates: impl Into<Coordinates>,
    ) -> Self {
        self.aperture = Some((settings, coordinates.into()));
        self
    }

    /// The load balancer (default [`P2c::peak_ewma`]).
    pub fn balancer(mut self, balancer: impl Balancer) -> Self {
        self.balancer = Box::new(balancer);
        self
    }

    /// Request-keyed picking (default: none): `key` extracts a 64-bit hash
    /// key from each request, and a request with a key goes to the endpoint
    /// `hash` gives it ([`ConsistentHash::ring`] or
    /// [`ConsistentHash::maglev`], with [bounded
    /// loads](ConsistentHash::bounded_load) if set): the same endpoint for
    /// the same key while the set does not change, and for a retry or a
    /// hedge the next distinct endpoint in the table's order. A request
    /// whose key is `None` goes to the ordinary [`balancer`](Self::balancer).
    ///
    /// The table is rebuilt when the set changes, off the discovery task
    /// (a Maglev build takes milliseconds); until it is ready, the old table
    /// is used for the endpoints it knows. With bounded loads the channel
    /// keeps its in-flight total, so a pick does not sum it.
    ///
    /// The key's type is known, so a closure needs no annotation:
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// use towline::balance::ConsistentHash;
    /// use towline::discover::Static;
    /// use towline::{Channel, Endpoint};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let connect = |ep: &Endpoint| {
    /// #     let port = ep.addr.port();
    /// #     tower::service_fn(move |_: (u64, &'static str)| async move { Ok::<_, Infallible>(port) })
    /// # };
    /// # let addrs: Vec<std::net::SocketAddr> =
    /// #     (1..=5).map(|i| format!("127.0.0.1:{i}").parse().unwrap()).collect();
    /// // Requests are (user id, body): all of a user's requests go to one
    /// // endpoint, and no endpoint takes more than 1.25 × the average load.
    /// let mut channel: Channel<(u64, &'static str), u16> = Channel::builder(connect)
    ///     .discover(Static::new(addrs))
    ///     .keyed(ConsistentHash::maglev().bounded_load(1.25)?, |req| Some(req.0))
    ///     .build()?;
    /// use tower::{Service, ServiceExt};
    /// let first = channel.ready().await?.call((42, "GET /cart")).await?;
    /// let again = channel.ready().await?.call((42, "GET /cart")).await?;
    /// assert_eq!(first, again);
    /// # Ok(())
    /// # }
    /// ```
    pub fn keyed<F>(mut self, hash: ConsistentHash, key: F) -> Self
    where
        F: Fn(&Req) -> Option<u64> + Send + Sync + 'static,
    {
        self.keyed = Some((hash, Box::new(key)));
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

    /// Classifies results with a function (default [`DefaultClassify`](crate::classify::DefaultClassify):
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
        self.classify = Some(Box::new(classify));
        self
    }

    /// A hint the channel pulls when it finds no usable endpoint, so that a
    /// source such as DNS looks again at once (default: none).
    pub fn refresh_hint(mut self, hint: RefreshHint) -> Self {
        self.refresh = Some(hint);
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
        if let Some((settings, coordinates)) = self.aperture {
            updates = Box::pin(Aperture::new(updates, settings, coordinates)?);
        }
        if self.name.is_empty() {
            return Err(BuildError::new("name", "must not be empty"));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            BuildError::new("runtime", "build() must be called within a tokio runtime")
        })?;
        ChannelState::check(
            &self.policy,
            self.policy.breaker().is_some(),
            self.policy.endpoint_concurrency_limit().is_some(),
            self.replay.is_some(),
        )?;
        let balancer: Arc<dyn Balancer> = Arc::from(self.balancer);
        let (hash, hash_key) = match self.keyed {
            Some((hash, key)) => (Some(hash), Some(key)),
            None => (None, None),
        };
        let bounded = hash.as_ref().is_some_and(|h| h.bounded_factor().is_some());
        let shared = Arc::new(SetShared::new(crate::clock::now(), bounded));
        let table = Arc::new(Table::<S>::new(&*balancer, shared.clone()));
        let weak = Arc::downgrade(&table);
        let mut state = ChannelState::new(
            &self.name,
            self.policy,
            self.replay.is_some(),
            self.refresh,
            balancer,
            shared,
            weak as std::sync::Weak<dyn Endpoints>,
        );
        if let Some(classify) = self.classify {
            state.classifier = Classifier::new(classify);
        }
        let state = Arc::new(state);
        let (built_tx, mut built_rx) = tokio::sync::mpsc::unbounded_channel::<Built>();
        let keyed = hash.map(|h| Keyed::new(h, built_tx));
        let mut writer = TableWriter::new(table.clone(), self.connect, state.clone(), keyed);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let name = state.name.clone();
        runtime.spawn(async move {
            use futures_util::{FutureExt, StreamExt};
            tokio::pin!(stopped);
            loop {
                let item = tokio::select! {
                    _ = &mut stopped => break,
                    // A keyed table built off this task (never, without one).
                    Some(built) = built_rx.recv() => {
                        writer.keyed_built(built);
                        continue;
                    }
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
            hash_key,
            initial_wait: self.initial_wait,
            _stop: stop,
        });
        let engine: Arc<dyn Engine<Req, S::Response>> = Arc::new(Handle::new(inner));
        Ok(Channel::from_engine(engine))
    }
}
