//! `towline::http` with a hyper client against real hyper servers on
//! 127.0.0.1: Retry-After, retries of streaming bodies, bodies too large to
//! replay, refused connections, and the answering endpoint's address.
#![cfg(feature = "http")]

#[path = "support/http.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower::{Service, ServiceExt};
use towline::balance::RoundRobin;
use towline::discover::Static;
use towline::http::{
    BodyReplay, EndpointAddr, ReplayBody, StatusClassify, UNREPLAYABLE_BODIES, connect, replayable,
};
use towline::policy::backoff::Backoff;
use towline::policy::budget::BudgetSettings;
use towline::policy::replay::CloneReplay;
use towline::policy::retry::RetrySettings;
use towline::rng::Rng;
use towline::{BoxError, Channel};

use support::{Backend, Behavior, RetryAfter, connector, get};

type Body = UnsyncBoxBody<Bytes, BoxError>;
type ReplayChannel = Channel<Request<ReplayBody<Body>>, http::Response<hyper::body::Incoming>>;

/// Up to `attempts` attempts, 1 ms backoff, and a budget that never runs
/// out (these tests count attempts, not budget refusals).
fn retry(attempts: u32) -> RetrySettings {
    RetrySettings::default()
        .with_max_attempts(attempts)
        .with_backoff(
            Backoff::new(Duration::from_millis(1), 1.0, Duration::from_millis(1)).unwrap(),
        )
        .with_budget(BudgetSettings::new(1.0, 10_000, Duration::from_secs(10)).unwrap())
}

/// A round-robin channel over `addrs` whose requests carry replayable
/// (possibly streaming) bodies.
fn replay_channel(addrs: &[SocketAddr], attempts: u32) -> ReplayChannel {
    let client = Client::builder(TokioExecutor::new()).build_http();
    Channel::builder(connect(client))
        .discover(Static::new(addrs.to_vec()))
        .balancer(RoundRobin::new())
        .classifier(StatusClassify::new())
        .replayer(BodyReplay)
        .retry(retry(attempts))
        .build()
        .unwrap()
}

/// `len` seeded random bytes.
fn payload(len: usize, seed: u64) -> Bytes {
    let mut rng = Rng::seeded(seed);
    (0..len)
        .map(|_| rng.next_u64() as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// `payload` as a stream of `chunk`-byte frames with no size hint, each
/// after a yield, so the body is still being produced while it is sent.
fn streaming(payload: Bytes, chunk: usize) -> Body {
    let frames = futures_util::stream::unfold(0, move |at| {
        let payload = payload.clone();
        async move {
            if at >= payload.len() {
                return None;
            }
            tokio::task::yield_now().await;
            let end = (at + chunk).min(payload.len());
            let frame = http_body::Frame::data(payload.slice(at..end));
            Some((Ok::<_, BoxError>(frame), end))
        }
    });
    BodyExt::boxed_unsync(StreamBody::new(frames))
}

async fn post(channel: &mut ReplayChannel, body: Body) -> http::Response<hyper::body::Incoming> {
    let request = replayable(Request::post("/upload").body(body).unwrap());
    channel.ready().await.unwrap().call(request).await.unwrap()
}

/// One backend that answers its first request with `status` and
/// `retry_after`, then 200: returns the gap between the two arrivals.
async fn retried_after(status: StatusCode, retry_after: RetryAfter) -> Duration {
    let backend = Backend::start(
        Behavior {
            fail_first: 1,
            fail_status: status,
            retry_after: Some(retry_after),
            ..Behavior::default()
        },
        1,
    )
    .await;
    let mut channel = Channel::builder(connector())
        .discover(Static::new([backend.addr]))
        .classifier(StatusClassify::new())
        .replayer(CloneReplay)
        .retry(retry(2))
        .build()
        .unwrap();
    let reply = get(&mut channel).await.unwrap();
    assert_eq!(reply.status, 200);
    let arrivals = backend.arrivals();
    assert_eq!(arrivals.len(), 2);
    arrivals[1] - arrivals[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_with_retry_after_in_seconds_is_honoured() {
    let gap = retried_after(StatusCode::SERVICE_UNAVAILABLE, RetryAfter::Seconds(1)).await;
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_as_an_http_date_is_honoured() {
    // The date is "now + 2 s" cut to whole seconds: more than 1 s after the
    // first request arrived.
    let gap = retried_after(
        StatusCode::TOO_MANY_REQUESTS,
        RetryAfter::DateIn(Duration::from_secs(2)),
    )
    .await;
    assert!(gap > Duration::from_secs(1), "retried after {gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_refused_connections_are_retried_elsewhere() {
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let failing = Backend::start(Behavior::failing(StatusCode::BAD_GATEWAY), 1).await;
    let healthy = Backend::start(Behavior::default(), 2).await;
    let mut channel = Channel::builder(connector())
        .discover(Static::new([refused, failing.addr, healthy.addr]))
        .balancer(RoundRobin::new())
        .classifier(StatusClassify::new())
        .replayer(CloneReplay)
        .retry(retry(3))
        .build()
        .unwrap();
    for _ in 0..30 {
        let reply = get(&mut channel).await.unwrap();
        assert_eq!((reply.status, reply.from), (200, healthy.addr));
    }
    assert_eq!(healthy.hits(), 30);
    // Round-robin put a third of the first attempts on each of the others.
    assert!(failing.hits() >= 5, "{}", failing.hits());
    let refused_failures = channel
        .endpoints()
        .into_iter()
        .find(|e| e.endpoint.addr == refused)
        .unwrap()
        .failures;
    assert!(refused_failures >= 5, "{refused_failures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_body_is_retried_on_another_endpoint_intact() {
    // The 503 server answers without reading the body, so the retry starts
    // while the first copy may still be sending.
    let busy = Backend::start(
        Behavior {
            read_body: false,
            ..Behavior::failing(StatusCode::SERVICE_UNAVAILABLE)
        },
        1,
    )
    .await;
    let healthy = Backend::start(Behavior::default(), 2).await;
    let mut channel = replay_channel(&[busy.addr, healthy.addr], 2);
    let payloads: Vec<Bytes> = (0..6).map(|i| payload(16 * 1024, 100 + i)).collect();
    for p in &payloads {
        let response = post(&mut channel, streaming(p.clone(), 1024)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let from = response.extensions().get::<EndpointAddr>().unwrap().0;
        assert_eq!(from, healthy.addr);
    }
    // Round-robin sends about every other first attempt to the busy server.
    assert!(busy.hits() >= 2, "{}", busy.hits());
    assert_eq!(
        healthy.bodies(),
        payloads,
        "every body arrives whole and in order"
    );
}

/// How many bodies outgrew their buffer since the last look (the debugging
/// recorder's snapshots take the counts).
fn unreplayable_since(recorder: &metrics_util::debugging::Snapshotter) -> u64 {
    recorder
        .snapshot()
        .into_vec()
        .into_iter()
        .find(|(k, ..)| k.key().name() == UNREPLAYABLE_BODIES)
        .map_or(0, |(.., v)| match v {
            DebugValue::Counter(n) => n,
            other => panic!("{other:?}"),
        })
}

/// Current-thread, so that the body (polled by hyper's connection task on
/// this thread) counts into the thread's local recorder.
#[tokio::test(flavor = "current_thread")]
async fn a_body_too_large_to_replay_is_sent_once_and_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let busy = Backend::start(Behavior::failing(StatusCode::SERVICE_UNAVAILABLE), 1).await;
    let mut channel = replay_channel(&[busy.addr], 3);
    let big = payload(1024 * 1024, 7);

    // A stream of unknown length: it outgrows the 64 KiB buffer as it goes.
    let response = post(&mut channel, streaming(big.clone(), 16 * 1024)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.hits(), 1, "not retried");
    assert_eq!(
        busy.bodies(),
        std::slice::from_ref(&big),
        "sent whole, once"
    );
    assert_eq!(unreplayable_since(&snapshotter), 1);

    // A body whose size is known is never buffered at all.
    let full = BodyExt::boxed_unsync(Full::new(big.clone()).map_err(|e| match e {}));
    let response = post(&mut channel, full).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.hits(), 2);
    assert_eq!(busy.bodies()[1], big);
    assert_eq!(unreplayable_since(&snapshotter), 1);

    // A small body to the same server is retried: three attempts.
    let response = post(&mut channel, streaming(payload(1000, 8), 100)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.hits(), 5);
    assert_eq!(unreplayable_since(&snapshotter), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answering_endpoint_is_in_the_response_extensions() {
    let backends = support::start_many(3, Behavior::default()).await;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let mut channel = Channel::builder(connector())
        .discover(Static::new(addrs.clone()))
        .balancer(RoundRobin::new())
        .build()
        .unwrap();
    for _ in 0..30 {
        let request = Request::get("/").body(Full::new(Bytes::new())).unwrap();
        let response = channel.ready().await.unwrap().call(request).await.unwrap();
        let EndpointAddr(from) = *response.extensions().get::<EndpointAddr>().unwrap();
        // The server names itself; the extension must agree.
        assert_eq!(response.headers()["x-backend"], from.to_string());
        assert!(addrs.contains(&from));
    }
    for b in &backends {
        assert_eq!(b.hits(), 10);
    }
}
