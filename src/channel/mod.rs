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
//! [`Error::NoEndpoints`](crate::Error::NoEndpoints) — or
//! [`Error::Discovery`](crate::Error::Discovery) if discovery failed before
//! any endpoint was ever known. The discovery task ends when the last clone of
//! the channel is dropped.
//!
//! Give each task its own clone: cloning allocates a small handle once, and
//! a call then only touches reference counts that its own task owns.
//!
//! The per-endpoint service must be `Clone + Send + Sync`; a boxed service can
//! be `tower::util::BoxCloneSyncService`. The channel's type names only the
//! request and the response, `Channel<Req, Resp>`: the service type stays
//! inside, and the builder checks every bound when it builds.
//!
//! Each call is one span (`towline` target, DEBUG level, name `call`, fields
//! `channel` and `outcome`) with one child span per attempt (`attempt`:
//! `endpoint`, `attempt` number, `kind` first/retry/hedge, `outcome`).
//! Without a subscriber they cost a few instructions.
//!
//! Layout of this module: the public [`Channel`] (`service`) and its
//! [`Builder`]; the endpoint table (`table`, `writer`, `slot`); the call
//! paths (`bare`, `resilient` driving [`crate::policy::call`], `attempt`,
//! `choose`); the policy settings and state (`settings`, `state`,
//! `ejection`, `tuning`).
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
//! let mut channel: Channel<u32, u32> = Channel::builder(connect)
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

mod attempt;
mod bare;
mod boxed;
mod builder;
mod choose;
mod ejection;
mod engine;
mod hold;
mod info;
mod inner;
mod keyed;
mod limits;
mod resilient;
mod service;
mod settings;
mod shared;
mod slot;
mod slot_ref;
mod state;
mod table;
mod tuning;
mod writer;

pub use builder::Builder;
pub use engine::{EndpointInfo, ResponseFuture};
pub use info::AttemptInfo;
pub use service::Channel;
pub use settings::ChannelPolicy;
pub use state::EJECTED_ENDPOINTS;
pub use tuning::PolicyHandle;

pub use crate::policy::call::AttemptKind;

#[cfg(test)]
mod tests;
