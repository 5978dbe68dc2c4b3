//! The channel: a shareable, discovery-aware, load-balancing `tower::Service`.
//!
//! A [`Channel`] learns endpoints from a discovery source, makes one service
//! per endpoint with your connector (`Fn(&Endpoint) -> S`), and sends each
//! call to the endpoint its balancer picks. It is `Clone + Send + Sync`:
//! clones share everything, and a call picks from an immutable snapshot of the
//! endpoint table with `&self` — no worker task, no queue, no lock — so
//! thousands of tasks can share one channel (unlike a `tower::buffer::Buffer`
//! around a `p2c::Balance`, which funnels every call through one task).
//!
//! `poll_ready` is always ready: readiness is awaited per endpoint, inside the
//! call, on the endpoint that was picked. While the endpoint set is empty a
//! call waits up to the initial wait (default 5 s), then fails with
//! [`Error::NoEndpoints`] — or [`Error::Discovery`] if discovery failed before
//! any endpoint was ever known. The discovery task ends when the last clone of
//! the channel is dropped.
//!
//! Give each task its own clone: cloning allocates a small handle once, and
//! a call then only touches reference counts that its own task owns.
//!
//! The per-endpoint service must be `Clone + Send + Sync`; a boxed service can
//! be `tower::util::BoxCloneSyncService`.
//!
//! ```
//! use std::convert::Infallible;
//! use tower::{Service, service_fn};
//! use towline::{Channel, Endpoint};
//! use towline::balance::RoundRobin;
//! use towline::discover::Static;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A connector: one service per endpoint. Here it just answers with the
//! // endpoint's port; a real one would open an HTTP/gRPC client.
//! let connect = |ep: &Endpoint| {
//!     let port = ep.addr.port();
//!     service_fn(move |req: u32| async move { Ok::<_, Infallible>(req + u32::from(port)) })
//! };
//! let mut channel = Channel::builder(connect)
//!     .discover(Static::new(["127.0.0.1:1000".parse::<std::net::SocketAddr>()?, "127.0.0.1:2000".parse()?]))
//!     .balancer(RoundRobin::new())
//!     .name("example")
//!     .build()?;
//! let a = channel.call(1).await?;
//! let b = channel.call(1).await?;
//! assert_eq!(a + b, 1001 + 2001);
//! assert_eq!(channel.endpoints().len(), 2);
//! # Ok(())
//! # }
//! ```

mod builder;
pub(crate) mod call;
mod policy;
mod resilient;
pub(crate) mod table;

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::Service;

pub use builder::Builder;
pub use policy::{ChannelPolicy, EJECTED_ENDPOINTS, PolicyHandle};

use crate::classify::Classify;
use crate::metrics::ChannelMetrics;
use crate::policy::replay::Replay;
use crate::{BoxError, Endpoint, Error};
use policy::Policies;
use table::Table;

pub(crate) use crate::clock::now;

/// A discovery-aware, load-balancing client channel. See the
/// [module docs](self).
pub struct Channel<Req, S: Service<Req>> {
    handle: Arc<Handle<Req, S>>,
}

/// One clone's own reference to the shared state. A call clones the handle
/// of the channel it was made on; when each task owns its clone, that
/// reference count is touched by one core only, instead of every core
/// contending on the shared state's count.
pub(crate) struct Handle<Req, S: Service<Req>> {
    shared: Arc<Shared<Req, S>>,
}

impl<Req, S: Service<Req>> std::ops::Deref for Handle<Req, S> {
    type Target = Shared<Req, S>;

    fn deref(&self) -> &Shared<Req, S> {
        &self.shared
    }
}

/// State shared by all clones of a channel.
pub(crate) struct Shared<Req, S: Service<Req>> {
    pub(crate) table: Arc<Table<S>>,
    pub(crate) classify: Box<dyn Classify<S::Response, S::Error>>,
    pub(crate) initial_wait: Duration,
    pub(crate) metrics: ChannelMetrics,
    pub(crate) name: String,
    /// Resilience policies: settings, budgets, latency window.
    pub(crate) policies: Arc<Policies>,
    /// The balancer as configured: each snapshot's is rebuilt from it, and
    /// it records attempt latencies on endpoint loads.
    pub(crate) balancer: Arc<dyn crate::balance::Balancer>,
    /// Copies requests for retries and hedges, when set.
    pub(crate) replay: Option<Box<dyn Replay<Req>>>,
    /// Dropped with the last clone, which stops the discovery task.
    _stop: tokio::sync::oneshot::Sender<()>,
    _req: PhantomData<fn(Req)>,
}

impl<Req, S: Service<Req>> Shared<Req, S> {
    /// Asks the discovery source, if it takes hints, to look again now.
    pub(crate) fn request_refresh(&self) {
        self.policies.request_refresh();
    }
}

impl<Req, S> Channel<Req, S>
where
    S: Service<Req> + Clone + Send + Sync + 'static,
    // For the default classifier, which inspects errors by type.
    S::Error: 'static,
{
    /// Starts building a channel whose per-endpoint services are made by
    /// `connect`.
    pub fn builder<F>(connect: F) -> Builder<Req, S>
    where
        F: Fn(&Endpoint) -> S + Send + Sync + 'static,
    {
        Builder::new(connect)
    }

    /// A handle to change the channel's policy settings at runtime; breaker
    /// state, budgets and the latency window are kept.
    pub fn policy_handle(&self) -> PolicyHandle {
        PolicyHandle {
            policies: self.handle.policies.clone(),
            table: self.handle.table.clone(),
        }
    }
}

impl<Req, S: Service<Req>> Channel<Req, S> {
    /// The channel's name (the `channel` metric label).
    pub fn name(&self) -> &str {
        &self.handle.name
    }

    /// A point-in-time view of every endpoint in the current set, ordered by
    /// address.
    pub fn endpoints(&self) -> Vec<EndpointInfo> {
        let snapshot = self.handle.table.snapshot();
        snapshot
            .slots
            .iter()
            .map(|s| EndpointInfo {
                endpoint: Endpoint {
                    weight: s.load.weight(),
                    ..s.endpoint.clone()
                },
                in_flight: s.load.pending(),
                rtt_estimate: s.load.rtt_estimate(),
                requests: s.load.finished(),
                failures: s.failures.load(Ordering::Relaxed),
                ejected: s.ejected.load(Ordering::Relaxed),
            })
            .collect()
    }
}

impl<Req, S: Service<Req>> Clone for Channel<Req, S> {
    fn clone(&self) -> Self {
        Channel {
            handle: Arc::new(Handle {
                shared: self.handle.shared.clone(),
            }),
        }
    }
}

impl<Req, S: Service<Req>> fmt::Debug for Channel<Req, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.handle.name)
            .field("endpoints", &self.handle.table.snapshot().slots.len())
            .finish()
    }
}

impl<Req, S> Service<Req> for Channel<Req, S>
where
    Req: Send + 'static,
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    S::Future: Send,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = self.handle.clone();
        let settings = shared.policies.settings.load();
        let inner: Pin<Box<dyn Future<Output = Result<S::Response, Error>> + Send>> =
            if settings.is_bare() {
                drop(settings);
                Box::pin(call::call(shared, req))
            } else {
                let settings = arc_swap::Guard::into_inner(settings);
                Box::pin(resilient::call(shared, settings, req))
            };
        ResponseFuture { inner }
    }
}

/// The future of a [`Channel`] call: the one heap allocation of a call.
pub struct ResponseFuture<Resp> {
    inner: Pin<Box<dyn Future<Output = Result<Resp, Error>> + Send>>,
}

impl<Resp> Future for ResponseFuture<Resp> {
    type Output = Result<Resp, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<Resp> fmt::Debug for ResponseFuture<Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

/// What [`Channel::endpoints`] reports about one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointInfo {
    /// The endpoint, with its current weight.
    pub endpoint: Endpoint,
    /// Attempts in flight now.
    pub in_flight: u32,
    /// The peak-EWMA round-trip estimate (recorded by P2C peak-EWMA only).
    pub rtt_estimate: Option<Duration>,
    /// Attempts finished on this endpoint, including ones cancelled or cut
    /// by a timeout.
    pub requests: u64,
    /// Of those, attempts that completed and that the classifier did not
    /// call a success.
    pub failures: u64,
    /// Whether the endpoint is ejected from picks now.
    pub ejected: bool,
}

#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod tests;
