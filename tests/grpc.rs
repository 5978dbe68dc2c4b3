//! A tonic client whose transport is a towline channel, against real tonic
//! servers on 127.0.0.1: retries and breakers over a flaky server, deadlines
//! propagated as `grpc-timeout` on each attempt, and statuses in the
//! trailers counted on the endpoint that sent them.
#![cfg(feature = "http")]

#[path = "support/grpc.rs"]
mod support;

use std::time::{Duration, Instant};

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use towline::Channel;
use towline::balance::RoundRobin;
use towline::discover::Static;
use towline::http::grpc::{self, GrpcClassify, GrpcStatusBody};
use towline::http::{BodyReplay, ReplayBody, Replayable};
use towline::policy::backoff::Backoff;
use towline::policy::breaker::{BreakerSettings, BreakerState, Window};
use towline::policy::budget::BudgetSettings;
use towline::policy::retry::RetrySettings;

use support::{
    Behaviour, GrpcServer, HelloRequest, STREAMED_REPLIES, codec, say_hello, say_hellos,
};

type GrpcClient = Client<HttpConnector, ReplayBody<tonic::body::Body>>;
type GrpcChannel = Channel<
    http::Request<ReplayBody<tonic::body::Body>>,
    http::Response<GrpcStatusBody<hyper::body::Incoming>>,
>;
type Builder = towline::channel::Builder<
    http::Request<ReplayBody<tonic::body::Body>>,
    grpc::GrpcEndpointService<GrpcClient>,
>;

const CALLS: usize = 300;

/// A gRPC channel over `servers` (round-robin, statuses classified, bodies
/// replayable), to finish building.
fn builder(servers: &[&GrpcServer]) -> Builder {
    // No Nagle delay: small HTTP/2 frames would wait for delayed ACKs.
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: GrpcClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector);
    Channel::builder(grpc::connect(client))
        .discover(Static::new(servers.iter().map(|s| s.addr)))
        .balancer(RoundRobin::new())
        .classifier(GrpcClassify::new())
        .replayer(BodyReplay)
}

fn retries(max_attempts: u32) -> RetrySettings {
    RetrySettings::default()
        .with_max_attempts(max_attempts)
        .with_backoff(
            Backoff::new(Duration::from_millis(1), 1.0, Duration::from_millis(1)).unwrap(),
        )
        .with_budget(BudgetSettings::new(1.0, 10_000, Duration::from_secs(10)).unwrap())
}

fn failures(channel: &GrpcChannel, server: &GrpcServer) -> u64 {
    let endpoints = channel.endpoints();
    endpoints
        .iter()
        .find(|e| e.endpoint.addr == server.addr)
        .unwrap()
        .failures
}

fn channel(servers: &[GrpcServer]) -> GrpcChannel {
    builder(&servers.iter().collect::<Vec<_>>())
        .retry(retries(3))
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

/// `grpc::propagate_deadline` on a channel with an attempt timeout of 2 s
/// and a deadline of 3 s: the first attempt tells the server it has (up to)
/// its attempt timeout; the server answers `UNAVAILABLE` after 1.5 s, and
/// the retry tells it what is left of the deadline, which is less than an
/// attempt timeout. The bounds below follow from the instants alone (the
/// call starts after `sent` and before the server receives the first
/// attempt; the retry starts after the first answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_carries_what_is_left_for_each_attempt() {
    const TIMEOUT: Duration = Duration::from_secs(2);
    const DEADLINE: Duration = Duration::from_secs(3);
    const SLOW: Duration = Duration::from_millis(1500);
    // The header rounds up to its unit (microseconds at these sizes).
    const UNIT: Duration = Duration::from_micros(1);
    let server = GrpcServer::start_with(Behaviour {
        slow_first_failure: Some(SLOW),
        ..Behaviour::default()
    })
    .await;
    let channel = builder(&[&server])
        .retry(retries(2))
        .timeout(TIMEOUT)
        .deadline(DEADLINE)
        .on_attempt(grpc::propagate_deadline)
        .build()
        .unwrap();
    let mut client = tonic::client::Grpc::new(Replayable::new(channel));
    client.ready().await.unwrap();
    let sent = Instant::now();
    let request = tonic::Request::new(HelloRequest {
        name: "deadline".into(),
    });
    let reply = client.unary(request, say_hello(), codec()).await;
    assert_eq!(
        reply.expect("the retry answers").into_inner().message,
        "hello deadline"
    );

    let received = server.received();
    assert_eq!(received.len(), 2, "{received:?}");
    let (first, retry) = (received[0], received[1]);
    let first_timeout = first
        .timeout
        .expect("the first attempt carries grpc-timeout");
    let retry_timeout = retry.timeout.expect("the retry carries grpc-timeout");
    println!("grpc-timeout: first attempt {first_timeout:?}, retry {retry_timeout:?}");
    // The first attempt is cut by its own timeout, 2 s after it started.
    assert!(first_timeout <= TIMEOUT, "{first_timeout:?}");
    assert!(
        first_timeout >= TIMEOUT.saturating_sub(first.at - sent),
        "{first_timeout:?} after {:?}",
        first.at - sent
    );
    // The retry is cut by the call's deadline, 1.5 s of which went to the
    // first attempt: at most 1.5 s left, under an attempt timeout.
    assert!(retry_timeout <= DEADLINE - SLOW + UNIT, "{retry_timeout:?}");
    assert!(
        retry_timeout >= (sent + DEADLINE).saturating_duration_since(retry.at),
        "{retry_timeout:?} at {:?}",
        retry.at - sent
    );
}

/// A status in the trailers, after a streamed body, reaches the endpoint:
/// its failure count and its breaker, which opens. The call itself was
/// answered by the headers (the caller reads the replies, then the error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_in_the_trailers_counts_on_the_endpoint_that_sent_it() {
    const STREAMS: u64 = 3;
    let failing = GrpcServer::start_with(Behaviour {
        stream_status: Some(tonic::Code::Unavailable),
        ..Behaviour::default()
    })
    .await;
    let healthy = GrpcServer::start(false).await;
    let breaker = BreakerSettings::default()
        .with_consecutive_failures(Some(STREAMS as u32))
        .with_failure_rate(None)
        .with_open_time(Duration::from_secs(60), 2.0, Duration::from_secs(120));
    for (server, fails) in [(&failing, true), (&healthy, false)] {
        let channel = builder(&[server])
            .circuit_breaker(breaker.clone())
            .build()
            .unwrap();
        let mut client = tonic::client::Grpc::new(Replayable::new(channel.clone()));
        for i in 0..STREAMS {
            client.ready().await.unwrap();
            let request = tonic::Request::new(HelloRequest {
                name: format!("stream {i}"),
            });
            let mut stream = client
                .server_streaming(request, say_hellos(), codec())
                .await
                .expect("the headers say nothing is wrong")
                .into_inner();
            let before = if fails { i } else { 0 };
            assert_eq!(
                failures(&channel, server),
                before,
                "not known before the end"
            );
            let mut replies = 0;
            let end = loop {
                match stream.message().await {
                    Ok(Some(_)) => replies += 1,
                    Ok(None) => break None,
                    Err(status) => break Some(status.code()),
                }
            };
            assert_eq!(replies, STREAMED_REPLIES);
            if fails {
                assert_eq!(end, Some(tonic::Code::Unavailable));
                assert_eq!(failures(&channel, server), i + 1, "the trailers counted");
            } else {
                assert_eq!(end, None);
                assert_eq!(failures(&channel, server), 0);
            }
        }
        let states = channel.policy_handle().breaker_states();
        let want = if fails {
            BreakerState::Open
        } else {
            BreakerState::Closed
        };
        assert_eq!(states, [(server.addr, want)]);
    }
}

/// A Trailers-Only error (how tonic answers every unary error) is known
/// when the headers come: it is still retried on another endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trailers_only_error_is_retried() {
    const CALLS: u64 = 10;
    let down = GrpcServer::start_with(Behaviour {
        down: true,
        ..Behaviour::default()
    })
    .await;
    let up = GrpcServer::start(false).await;
    let channel = builder(&[&down, &up]).retry(retries(2)).build().unwrap();
    let mut client = tonic::client::Grpc::new(Replayable::new(channel.clone()));
    for i in 0..CALLS {
        client.ready().await.unwrap();
        let request = tonic::Request::new(HelloRequest {
            name: format!("caller {i}"),
        });
        let reply = client
            .unary(request, say_hello(), codec())
            .await
            .unwrap_or_else(|status| panic!("call {i} failed: {status:?}"))
            .into_inner();
        assert_eq!(reply.server, up.addr.to_string());
    }
    // Round-robin over two sends every other first attempt to the server
    // that is down (and every retry to the other).
    assert!(down.calls() >= CALLS / 2, "{}", down.calls());
    assert_eq!(down.unavailable(), down.calls());
    assert_eq!(failures(&channel, &down), down.calls());
    assert_eq!(up.calls(), CALLS);
    assert_eq!(failures(&channel, &up), 0);
}
