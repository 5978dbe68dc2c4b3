//! The channel builder.

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use tower::Service;

use super::table::{Table, TableWriter};
use super::{Channel, Shared};
use crate::balance::{Balancer, P2c};
use crate::classify::{Classify, DefaultClassify};
use crate::discover::{Discover, DiscoverError, RefreshHint, Update};
use crate::metrics::ChannelMetrics;
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
    _req: PhantomData<fn(Req)>,
}

impl<Req, S> Builder<Req, S>
where
    S: Service<Req> + Clone + Send + Sync + 'static,
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

    /// Builds the channel and starts its discovery task on the current tokio
    /// runtime.
    ///
    /// Errors: no discovery source, an empty name, or no tokio runtime.
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
        let metrics = ChannelMetrics::new(&self.name);
        let table = Arc::new(Table::new(&*self.balancer));
        let mut writer =
            TableWriter::new(table.clone(), self.connect, self.balancer, metrics.clone());
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
        Ok(Channel {
            shared: Arc::new(Shared {
                table,
                classify: self.classify,
                initial_wait: self.initial_wait,
                metrics,
                refresh: self.refresh,
                name: self.name,
                _stop: stop,
                _req: PhantomData,
            }),
        })
    }
}
