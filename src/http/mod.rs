//! HTTP and gRPC through a channel (feature `http`, on by default).
//!
//! A channel of `http::Request`s needs four things that every HTTP user
//! would otherwise write again:
//!
//! - **a connector** ([`connect`], [`Connector`]): one [`EndpointService`]
//!   per endpoint over any `Service<http::Request<B>>` — a hyper-util
//!   `Client`, whose connection pool all endpoints then share. It points
//!   each request at its endpoint (scheme and authority; the path, query and
//!   headers are kept) and puts the answering address in the response's
//!   extensions ([`EndpointAddr`]; on by default,
//!   [`Connector::endpoint_addr`] turns it off);
//! - **a classifier**: [`StatusClassify`] for HTTP (5xx are retryable
//!   failures, 429 and 503 are overloads and honour `Retry-After`, transport
//!   errors are retryable), [`grpc::GrpcClassify`] for gRPC status codes and
//!   `grpc-retry-pushback-ms` — with [`grpc::connect`] as the connector, a
//!   status in the trailers reaches the endpoint when the body ends;
//! - **replay** for bodies that are not `Clone` ([`ReplayBody`],
//!   [`BodyReplay`], [`Replayable`]): the body is kept as it is sent, up to a
//!   limit (64 KiB by default), so a retry or hedge can send it again; a
//!   larger body is sent once and counted
//!   (`towline_http_unreplayable_bodies_total`);
//! - **gRPC deadlines**: [`grpc::propagate_deadline`], an attempt hook,
//!   tells each attempt's server the time it has left in `grpc-timeout`.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use tower::{Service, ServiceExt, service_fn};
//! use towline::Channel;
//! use towline::discover::Static;
//! use towline::http::{EndpointAddr, StatusClassify, connect};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Any Service<http::Request<B>> is a client; this one answers in memory
//! // with the URI it was sent to. A real one is a hyper-util Client.
//! let client = service_fn(|req: Request<String>| async move {
//!     Ok::<_, Infallible>(Response::new(req.uri().to_string()))
//! });
//! let addr: std::net::SocketAddr = "127.0.0.1:8080".parse()?;
//! let mut channel = Channel::builder(connect(client))
//!     .discover(Static::new([addr]))
//!     .classifier(StatusClassify::new())
//!     .build()?;
//! let request = Request::get("/users?id=7").body(String::new())?;
//! let response = channel.ready().await?.call(request).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.body(), "http://127.0.0.1:8080/users?id=7");
//! assert_eq!(response.extensions().get::<EndpointAddr>(), Some(&EndpointAddr(addr)));
//! # Ok(())
//! # }
//! ```
//!
//! With retries, give the builder a way to copy requests: `CloneReplay` when
//! the body is `Clone` (`Full<Bytes>`, `String`), otherwise [`BodyReplay`]
//! over requests wrapped by [`replayable`] or the [`Replayable`] service
//! (which a tonic client can use as its transport).

mod connect;
pub mod grpc;
mod replay;
mod status;
mod target;

pub use connect::{Connector, EndpointAddr, EndpointService, ResponseFuture, connect};
pub use replay::{
    BodyReplay, DEFAULT_REPLAY_LIMIT, NotReplayable, ReplayBody, ReplayError, Replayable,
    ReplayableLayer, replayable, replayable_with_limit,
};
pub use status::{StatusClassify, retry_after};

/// `towline_http_unreplayable_bodies_total`: request bodies that outgrew
/// their replay buffer (those requests are sent once, never retried or
/// hedged).
pub const UNREPLAYABLE_BODIES: &str = "towline_http_unreplayable_bodies_total";

/// The outcome of a transport error (no response): retryable, unless the
/// request cannot be sent again ([`ReplayError`]) or a breaker below refused
/// it ([`crate::Error::CircuitOpen`]).
pub(crate) fn error_outcome<E: 'static>(error: &E) -> crate::classify::Outcome {
    let mut next = crate::classify::as_error(error);
    while let Some(e) = next {
        let refused = e.is::<ReplayError>()
            || e.downcast_ref::<crate::Error>()
                .is_some_and(|e| matches!(e, crate::Error::CircuitOpen));
        if refused {
            return crate::classify::Outcome::Failure { retryable: false };
        }
        next = e.source();
    }
    crate::classify::Outcome::Failure { retryable: true }
}

/// `outcome`, made final when the response says its request cannot be sent
/// again.
pub(crate) fn unless_unreplayable<B>(
    response: &http::Response<B>,
    outcome: crate::classify::Outcome,
) -> crate::classify::Outcome {
    if outcome.is_retryable() && response.extensions().get::<NotReplayable>().is_some() {
        crate::classify::Outcome::Failure { retryable: false }
    } else {
        outcome
    }
}
