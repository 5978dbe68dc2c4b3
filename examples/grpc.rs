//! A tonic client whose transport is a towline channel.
//!
//! Starts three tonic servers on 127.0.0.1 (hand-written prost messages, no
//! protoc); one answers `UNAVAILABLE` to every other call. The client is a
//! plain `tonic::client::Grpc` over a towline channel: round-robin over the
//! three, `GrpcClassify` for status codes (in the headers, or in the
//! trailers when the body ends), retries on endpoints not yet tried
//! (request bodies kept for replay by `Replayable`), a circuit breaker per
//! endpoint that ejects the flaky one, and deadlines: each attempt tells
//! its server the time it has left in `grpc-timeout`.
//!
//! Generated clients take the same transport: `GreeterClient::new(transport)`.
//!
//! Run with `cargo run --example grpc`.

#[path = "../tests/support/grpc.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use towline::balance::RoundRobin;
use towline::discover::Static;
use towline::http::grpc::{self, GrpcClassify};
use towline::http::{BodyReplay, Replayable};
use towline::policy::breaker::BreakerSettings;
use towline::policy::retry::RetrySettings;
use towline::{BoxError, Channel};

use support::{GrpcServer, HelloRequest, codec, say_hello};

const CALLS: usize = 1_000;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let servers = [
        GrpcServer::start(true).await,
        GrpcServer::start(false).await,
        GrpcServer::start(false).await,
    ];
    println!("the flaky server: {}", servers[0].addr);

    // gRPC is HTTP/2 without TLS here (h2c); no Nagle delay for small frames.
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(http);
    let channel = Channel::builder(grpc::connect(client))
        .discover(Static::new(servers.iter().map(|s| s.addr)))
        .balancer(RoundRobin::new())
        .classifier(GrpcClassify::new())
        .replayer(BodyReplay)
        .retry(RetrySettings::default().with_max_attempts(3))
        .circuit_breaker(BreakerSettings::default().with_failure_rate(Some(0.3)))
        .timeout(Duration::from_secs(1))
        .deadline(Duration::from_secs(3))
        // Each attempt carries the time it has left as `grpc-timeout`.
        .on_attempt(grpc::propagate_deadline)
        .name("greeter")
        .build()?;
    // tonic sends `http::Request<tonic::body::Body>`; `Replayable` makes each
    // body replayable so that a retry can send it again.
    let mut greeter = tonic::client::Grpc::new(Replayable::new(channel.clone()));

    let mut answered_by = BTreeMap::new();
    for i in 0..CALLS {
        greeter.ready().await?;
        let request = tonic::Request::new(HelloRequest {
            name: format!("caller {i}"),
        });
        let reply = greeter.unary(request, say_hello(), codec()).await?;
        *answered_by.entry(reply.into_inner().server).or_insert(0) += 1;
    }
    println!("{CALLS} calls, all answered: {answered_by:?}");
    for s in &servers {
        let longest = s.received().iter().filter_map(|r| r.timeout).max();
        println!(
            "  {}: {} calls received, {} answered UNAVAILABLE, longest grpc-timeout {longest:?}",
            s.addr,
            s.calls(),
            s.unavailable()
        );
    }
    for (addr, state) in channel.policy_handle().breaker_states() {
        println!("  breaker of {addr}: {state:?}");
    }
    Ok(())
}
