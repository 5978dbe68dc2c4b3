//! towline: a discovery-aware, load-balancing, resilient client channel.
//!
//! A [`Channel`] learns the endpoints of a service from a discovery source
//! ([`discover`]), sends each call to the endpoint a [`balance`]r picks, and
//! reports through the [`metrics`] facade. It is a `tower::Service` that is
//! `Clone + Send + Sync`: calls pick from an immutable snapshot of the
//! endpoint table with `&self`, with no worker task, queue or lock, so any
//! number of tasks can share one channel.
//!
//! | piece | default |
//! |---|---|
//! | balancer | [`balance::P2c::peak_ewma`] (RTT 30 ms before the first response, decay 10 s) |
//! | classifier | [`classify::DefaultClassify`]: `Ok` succeeds, `Err` is a retryable failure |
//! | initial wait for endpoints | 5 s, then [`Error::NoEndpoints`] |
//! | discovery features | `dns` (on by default), `etcd` (off: its build needs `protoc`) |
//! | HTTP and gRPC | feature `http` (on by default): [`http`]'s connector, classifiers, replayable bodies |
//!
//! ```
//! use std::convert::Infallible;
//! use tower::{Service, ServiceExt, service_fn};
//! use towline::{Channel, Endpoint};
//! use towline::discover::Manual;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let manual = Manual::with_endpoints(["127.0.0.1:8080".parse::<std::net::SocketAddr>()?]);
//! let connect = |ep: &Endpoint| {
//!     let addr = ep.addr;
//!     service_fn(move |name: &'static str| async move {
//!         Ok::<_, Infallible>(format!("hello {name} from {addr}"))
//!     })
//! };
//! let mut channel = Channel::builder(connect).discover(manual.stream()).build()?;
//! let reply = channel.ready().await?.call("world").await?;
//! assert_eq!(reply, "hello world from 127.0.0.1:8080");
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod balance;
pub mod classify;
mod clock;
pub mod discover;
mod endpoint;
pub mod error;
#[cfg(feature = "http")]
pub mod http;
pub mod policy;
pub mod rng;
#[cfg(feature = "sim")]
pub mod sim;
pub mod subset;
#[cfg(test)]
mod test_bounds;

pub use endpoint::{DEFAULT_WEIGHT, Endpoint};
pub use error::{BoxError, BuildError, Error};
pub mod channel;
pub mod metrics;

pub use channel::{Channel, EndpointInfo};

/// The README's code, compiled as a doc test so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
