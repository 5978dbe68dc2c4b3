//! A tonic client whose transport is a towline channel, against three real
//! tonic servers on 127.0.0.1, one of which answers `UNAVAILABLE` to every
//! other call.
#![cfg(feature = "http")]

#[path = "support/grpc.rs"]
mod support;

use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use towline::Channel;
use towline::balance::RoundRobin;
use towline::discover::Static;
use towline::http::grpc::GrpcClassify;
use towline::http::{BodyReplay, ReplayBody, Replayable, connect};
use towline::policy::backoff::Backoff;
use towline::policy::breaker::{BreakerSettings, BreakerState, Window};
use towline::policy::budget::BudgetSettings;
use towline::policy::retry::RetrySettings;

use support::{GrpcServer, HelloRequest, codec, say_hello};

type GrpcClient = Client<HttpConnector, ReplayBody<tonic::body::Body>>;
type GrpcChannel =
    Channel<http::Request<ReplayBody<tonic::body::Body>>, http::Response<hyper::body::Incoming>>;

const CALLS: usize = 300;

fn channel(servers: &[GrpcServer]) -> GrpcChannel {
    // No Nagle delay: small HTTP/2 frames would wait for delayed ACKs.
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: GrpcClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector);
    Channel::builder(connect(client))
        .discover(Static::new(servers.iter().map(|s| s.addr)))
        .balancer(RoundRobin::new())
        .classifier(GrpcClassify::new())
        .replayer(BodyReplay)
        .retry(
            RetrySettings::default()
                .with_max_attempts(3)
                .with_backoff(
                    Backoff::new(Duration::from_millis(1), 1.0, Duration::from_millis(1)).unwrap(),
                )
                .with_budget(BudgetSettings::new(1.0, 10_000, Duration::from_secs(10)).unwrap()),
        )
        .circuit_breaker(
            BreakerSettings::default()
                .with_consecutive_failures(None)
                .with_failure_rate(Some(0.3))
                .with_window(Window::Count(20))
                .with_min_calls(10)
                // Long enough that the breaker stays open for the test.
                .with_open_time(Duration::from_secs(60), 2.0, Duration::from_secs(120)),
        )
        .name("grpc")
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_retries_and_breakers_every_call_succeeds_and_the_flaky_server_is_ejected() {
    let servers = [
        GrpcServer::start(true).await,
        GrpcServer::start(false).await,
        GrpcServer::start(false).await,
    ];
    let flaky = &servers[0];
    let channel = channel(&servers);
    let mut grpc = tonic::client::Grpc::new(Replayable::new(channel.clone()));
    let mut healthy_answers = 0;
    for i in 0..CALLS {
        grpc.ready().await.expect("the channel is always ready");
        let request = tonic::Request::new(HelloRequest {
            name: format!("caller {i}"),
        });
        let reply = grpc
            .unary(request, say_hello(), codec())
            .await
            .unwrap_or_else(|status| panic!("call {i} failed: {status:?}"))
            .into_inner();
        assert_eq!(reply.message, format!("hello caller {i}"));
        healthy_answers += usize::from(reply.server != flaky.addr.to_string());
    }
    assert!(
        flaky.unavailable() >= 5,
        "the flaky server answered UNAVAILABLE"
    );
    let states = channel.policy_handle().breaker_states();
    let state = |addr| states.iter().find(|(a, _)| *a == addr).unwrap().1;
    assert_eq!(state(flaky.addr), BreakerState::Open);
    for s in &servers[1..] {
        assert_eq!(state(s.addr), BreakerState::Closed);
    }
    let ejected: Vec<_> = channel
        .endpoints()
        .into_iter()
        .filter(|e| e.ejected)
        .map(|e| e.endpoint.addr)
        .collect();
    assert_eq!(ejected, [flaky.addr]);
    // Once ejected it gets nothing more: at most the window's worth of
    // calls (and the retries they caused) went its way.
    assert!(
        flaky.calls() <= 20,
        "{} calls reached the flaky server",
        flaky.calls()
    );
    assert!(healthy_answers >= CALLS - 10, "{healthy_answers}");
}
