//! Task 1 of the user trial: three HTTP servers, one answering 503 to half
//! its requests; a P2C channel with retries and a circuit breaker per
//! endpoint sends them 2,000 `http::Request`s.
//!
//! The servers are the test support's hyper backends on 127.0.0.1. Everything
//! between the two marker comments is what a user writes against towline
//! (imports included): 37 lines.
//!
//! Run with `cargo run --example http`.

#[path = "../tests/support/http.rs"]
mod support;

use http::StatusCode;
use support::{Backend, Behavior};

// ---- towline-facing code: from here ----
use std::collections::BTreeMap;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tower::{Service, ServiceExt};
use towline::policy::{breaker::BreakerSettings, replay::CloneReplay, retry::RetrySettings};
use towline::{Channel, balance::P2c, discover::Static, http::*};

async fn task_one(servers: Vec<std::net::SocketAddr>) -> Result<(), towline::BoxError> {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let mut channel = Channel::builder(connect(client))
        .discover(Static::new(servers))
        .balancer(P2c::peak_ewma())
        .classifier(StatusClassify::new())
        .replayer(CloneReplay)
        .retry(RetrySettings::default().with_max_attempts(3))
        .circuit_breaker(BreakerSettings::default())
        .build()?;
    let mut answered_by = BTreeMap::new();
    let mut failed = 0;
    for _ in 0..2_000 {
        let request = Request::get("/").body(Full::<Bytes>::default())?;
        let response = channel.ready().await?.call(request).await?;
        if !response.status().is_success() {
            failed += 1;
        }
        let EndpointAddr(addr) = response.extensions().get().copied().ok_or("no address")?;
        *answered_by.entry(addr).or_insert(0) += 1;
    }
    println!("2000 requests, {failed} failed; answered by {answered_by:?}");
    for (addr, state) in channel.policy_handle().breaker_states() {
        println!("  breaker of {addr}: {state:?}");
    }
    Ok(())
}
// ---- towline-facing code: to here ----

#[tokio::main]
async fn main() -> Result<(), towline::BoxError> {
    let flaky = Behavior {
        fail_ratio: 0.5,
        fail_status: StatusCode::SERVICE_UNAVAILABLE,
        ..Behavior::default()
    };
    let servers = [
        Backend::start(flaky, 1).await,
        Backend::start(Behavior::default(), 2).await,
        Backend::start(Behavior::default(), 3).await,
    ];
    println!(
        "the server answering 503 half the time: {}",
        servers[0].addr
    );
    task_one(servers.iter().map(|s| s.addr).collect()).await
}
