//! Per-call cost of `towline::http` on top of a bare channel, in the same
//! run, over an always-ready in-memory `http` service (no I/O).
//!
//! - `bare`: `Channel<http::Request<_>, InMemory>` with the default
//!   classifier, the service called with the request as it is.
//! - `http`: the same channel built with `towline::http::connect(InMemory)`
//!   (`Connector::new(InMemory).into_fn()`) and `StatusClassify`: each request is pointed at its endpoint (URI
//!   rewritten), the response gets the endpoint's address in its extensions,
//!   and the status is classified.
//! - `http_no_addr`: `http` with the address extension turned off
//!   (`Connector::endpoint_addr(false)`).
//! - `http_replayable` (for information): `http` plus a replayable body
//!   (`towline::http::replayable`) on each request, as a channel with
//!   retries of streaming bodies would use.
//!
//! Two in-memory services: `empty` answers 200 with no header, extension
//! or body, to requests for `/`; `realistic` answers as an HTTP client's
//! response looks (three headers, a two-byte body, and a connection-info
//! extension like the `HttpInfo` that hyper-util's connector adds to every
//! response), so the response already has an extension map when
//! `towline::http` adds the endpoint's address, to requests with a path and
//! a query; its error type is a real one (`std::io::Error`), as every HTTP
//! client's is.
//!
//! One task sends calls one after another over 3 endpoints (P2C
//! peak-EWMA). The ratio `http / bare` is the layer's overhead.
//!
//! `cargo bench --bench http` runs criterion; the same binary with
//! `count CONFIG CALLS` makes a fixed number of calls, for instruction
//! counts under callgrind (see [`count`]), and with `ratio ROUNDS` prints
//! each configuration's ratio to `bare` from interleaved batches timed by
//! CPU time, for a machine too busy for criterion (see [`ratio`]).

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, DATE};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::{Empty, Full};
use tower::{Service, ServiceExt};
use towline::discover::Static;
use towline::http::{Connector, ReplayBody, StatusClassify, replayable};
use towline::{Channel, Endpoint};

/// An always-ready HTTP service that answers 200 with an empty body.
#[derive(Debug, Clone, Copy)]
struct InMemory;

impl<B> Service<Request<B>> for InMemory {
    type Response = Response<Empty<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        drop(black_box(req));
        std::future::ready(Ok(Response::new(Empty::new())))
    }
}

/// An always-ready HTTP service whose responses look like a client's: a few
/// headers, a small body, connection info in the extensions; it could fail
/// (it never does).
#[derive(Debug, Clone, Copy)]
struct Realistic;

/// Stands in for hyper-util's `HttpInfo`.
#[derive(Debug, Clone)]
#[allow(dead_code)]
struct ConnectionInfo {
    remote: SocketAddr,
    local: SocketAddr,
}

impl<B> Service<Request<B>> for Realistic {
    type Response = Response<Full<Bytes>>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, std::io::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        drop(black_box(req));
        let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("2"));
        headers.insert(
            DATE,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], 80));
        response.extensions_mut().insert(ConnectionInfo {
            remote: addr,
            local: addr,
        });
        std::future::ready(Ok(response))
    }
}

fn addrs() -> Vec<SocketAddr> {
    (1..=3)
        .map(|i| SocketAddr::from(([127, 0, 0, i], 80)))
        .collect()
}

/// Waits until the channel's discovery task has published every endpoint.
async fn ready<Req, Resp>(channel: Channel<Req, Resp>) -> Channel<Req, Resp> {
    while channel.endpoints().len() < 3 {
        tokio::task::yield_now().await;
    }
    channel
}

/// Runs `iters` calls, each with a request made by `make`, one after another.
async fn sequential<Req, S, B>(svc: &mut S, iters: u64, make: impl Fn() -> Req) -> Duration
where
    S: Service<Req, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for _ in 0..iters {
        let response = svc.ready().await.unwrap().call(make()).await.unwrap();
        black_box(response.status());
    }
    start.elapsed()
}

fn empty() -> Request<Empty<Bytes>> {
    Request::new(Empty::new())
}

/// A request as an application sends one: a path and a query (which the
/// rewrite must keep).
fn get() -> Request<Empty<Bytes>> {
    let mut request = Request::new(Empty::new());
    *request.uri_mut() = Uri::from_static("/users/42?fields=name");
    request
}

fn bare<S>(service: S) -> Channel<Request<Empty<Bytes>>, S::Response>
where
    S: Service<Request<Empty<Bytes>>> + Clone + Send + Sync + 'static,
    S::Error: Into<towline::BoxError> + Send + 'static,
    S::Response: Send + 'static,
    S::Future: Send + 'static,
{
    Channel::builder(move |_: &Endpoint| service.clone())
        .discover(Static::new(addrs()))
        .build()
        .unwrap()
}

/// A channel of `towline::http` services over `service`; `mark`: responses
/// carry the endpoint's address.
fn with_http<B, RB, S>(service: S, mark: bool) -> Channel<Request<B>, Response<RB>>
where
    B: Send + 'static,
    RB: Send + 'static,
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<towline::BoxError> + Send + Sync + 'static,
    S: Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    Channel::builder(Connector::new(service).endpoint_addr(mark).into_fn())
        .discover(Static::new(addrs()))
        .classifier(StatusClassify::new())
        .build()
        .unwrap()
}

fn overhead(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("http_call_1_task/empty");
    let mut channel = rt.block_on(async { ready(bare(InMemory)).await });
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| rt.block_on(sequential(&mut channel, iters, empty)));
    });
    let mut channel =
        rt.block_on(async { ready(with_http::<Empty<Bytes>, _, _>(InMemory, true)).await });
    group.bench_function("http", |b| {
        b.iter_custom(|iters| rt.block_on(sequential(&mut channel, iters, empty)));
    });
    let mut channel =
        rt.block_on(async { ready(with_http::<Empty<Bytes>, _, _>(InMemory, false)).await });
    group.bench_function("http_no_addr", |b| {
        b.iter_custom(|iters| rt.block_on(sequential(&mut channel, iters, empty)));
    });
    let mut channel = rt.block_on(async {
        ready(with_http::<ReplayBody<Empty<Bytes>>, _, _>(InMemory, true)).await
    });
    group.bench_function("http_replayable", |b| {
        b.iter_custom(|iters| rt.block_on(sequential(&mut channel, iters, || replayable(empty()))));
    });
    group.finish();

    let mut group = c.benchmark_group("http_call_1_task/realistic");
    let mut channel = rt.block_on(async { ready(bare(Realistic)).await });
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| rt.block_on(sequential(&mut channel, iters, get)));
    });
    let mut channel =
        rt.block_on(async { ready(with_http::<Empty<Bytes>, _, _>(Realistic, true)).await });
    group.bench_function("http", |b| {
        b.iter_custom(|iters| rt.block_on(sequential(&mut channel, iters, get)));
    });
    let mut channel =
        rt.block_on(async { ready(with_http::<Empty<Bytes>, _, _>(Realistic, false)).await });
    group.bench_function("http_no_addr", |b| {
        b.iter_custom(|iters| rt.block_on(sequential(&mut channel, iters, get)));
    });
    group.finish();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `count CONFIG CALLS`: a fixed number of calls of one configuration
/// (`empty/bare`, `empty/http`, `empty/http_no_addr`,
/// `empty/http_replayable`, `realistic/bare`, `realistic/http`,
/// `realistic/http_no_addr`), for instruction counts under callgrind; run it with
/// two call counts and divide the difference, as `scripts/instructions`
/// does, so that set-up cancels out.
fn count(config: &str, calls: u64) {
    let rt = runtime();
    rt.block_on(async move {
        match config {
            "empty/bare" => {
                let mut channel = ready(bare(InMemory)).await;
                sequential(&mut channel, calls, empty).await
            }
            "empty/http" => {
                let mut channel = ready(with_http::<Empty<Bytes>, _, _>(InMemory, true)).await;
                sequential(&mut channel, calls, empty).await
            }
            "empty/http_no_addr" => {
                let mut channel = ready(with_http::<Empty<Bytes>, _, _>(InMemory, false)).await;
                sequential(&mut channel, calls, empty).await
            }
            "empty/http_replayable" => {
                let mut channel =
                    ready(with_http::<ReplayBody<Empty<Bytes>>, _, _>(InMemory, true)).await;
                sequential(&mut channel, calls, || replayable(empty())).await
            }
            "realistic/bare" => {
                let mut channel = ready(bare(Realistic)).await;
                sequential(&mut channel, calls, get).await
            }
            "realistic/http" => {
                let mut channel = ready(with_http::<Empty<Bytes>, _, _>(Realistic, true)).await;
                sequential(&mut channel, calls, get).await
            }
            "realistic/http_no_addr" => {
                let mut channel = ready(with_http::<Empty<Bytes>, _, _>(Realistic, false)).await;
                sequential(&mut channel, calls, get).await
            }
            other => panic!("unknown configuration {other}"),
        }
    });
}

/// `ratio ROUNDS`: for each service, `ROUNDS` rounds of one batch of calls
/// per configuration, one after another, then the median over rounds of
/// each configuration's time per call and of its ratio to `bare` in the same
/// round, timed by the thread's CPU time. Neighbouring batches share
/// whatever else the machine is doing, and time spent waiting for a core is
/// not counted, so the ratios hold up on a busy machine better than
/// separate runs do.
fn ratio(rounds: usize) {
    let rt = runtime();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let report = |service: &str, times: [Vec<f64>; 3]| {
        for (name, t) in ["bare", "http", "http_no_addr"].iter().zip(&times) {
            let ratios = t.iter().zip(&times[0]).map(|(t, b)| t / b).collect();
            println!(
                "{service}/{name}: {:.1} ns/call, {:.3}x bare",
                median(t.clone()),
                median(ratios)
            );
        }
    };
    rt.block_on(async {
        let channels = [
            ready(bare(InMemory)).await,
            ready(with_http::<Empty<Bytes>, _, _>(InMemory, true)).await,
            ready(with_http::<Empty<Bytes>, _, _>(InMemory, false)).await,
        ];
        report("empty", interleaved(channels, rounds, empty).await);
        let channels = [
            ready(bare(Realistic)).await,
            ready(with_http::<Empty<Bytes>, _, _>(Realistic, true)).await,
            ready(with_http::<Empty<Bytes>, _, _>(Realistic, false)).await,
        ];
        report("realistic", interleaved(channels, rounds, get).await);
    });
}

/// This thread's CPU time, in nanoseconds: unlike the wall clock, it does
/// not run while the thread waits for a core.
fn thread_cpu_ns() -> i128 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(ok, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    i128::from(now.tv_sec) * 1_000_000_000 + i128::from(now.tv_nsec)
}

/// Per channel, its CPU time per call in each of `rounds` rounds of one batch
/// per channel.
async fn interleaved<RB>(
    mut channels: [Channel<Request<Empty<Bytes>>, Response<RB>>; 3],
    rounds: usize,
    make: fn() -> Request<Empty<Bytes>>,
) -> [Vec<f64>; 3] {
    const BATCH: u64 = 20_000;
    let mut times: [Vec<f64>; 3] = Default::default();
    for _ in 0..rounds {
        for (channel, times) in channels.iter_mut().zip(&mut times) {
            let start = thread_cpu_ns();
            sequential(channel, BATCH, make).await;
            times.push((thread_cpu_ns() - start) as f64 / BATCH as f64);
        }
    }
    times
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40);
    targets = overhead
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, config, calls] = args.as_slice()
        && mode == "count"
    {
        count(
            config,
            calls.parse().expect("usage: http count CONFIG CALLS"),
        );
        return;
    }
    if let [_, mode, rounds] = args.as_slice()
        && mode == "ratio"
    {
        ratio(rounds.parse().expect("usage: http ratio ROUNDS"));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
