//! towline quickstart: no external service needed.
//!
//! Starts five HTTP servers on 127.0.0.1 — one ten times slower than the
//! others, one failing 30% of its requests with HTTP 500 — then sends 20,000
//! `http::Request`s from 64 concurrent tasks through a P2C peak-EWMA channel
//! and through a round-robin channel (both over one hyper client, with
//! `towline::http`), and prints how each spread the load. A third run adds
//! the resilience policies: up to 3 attempts per call (retries go to
//! endpoints not yet tried) and a circuit breaker per endpoint that ejects
//! one whose failure rate passes 20%.
//!
//! Run with `cargo run --release --example quickstart` (or without
//! `--release`; it takes a few seconds either way). With
//! `-- --prometheus 127.0.0.1:9000` it also serves its metrics to Prometheus
//! at the printed URL, and keeps serving them after the runs until Ctrl-C.

#[path = "../tests/support/prometheus.rs"]
mod prometheus;
#[path = "../tests/support/http.rs"]
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::{Backend, Behavior};
use tower::{Service, ServiceExt};
use towline::balance::{P2c, RoundRobin};
use towline::discover::Static;
use towline::http::{EndpointAddr, StatusClassify, connect};
use towline::policy::breaker::BreakerSettings;
use towline::policy::replay::CloneReplay;
use towline::policy::retry::RetrySettings;
use towline::{BoxError, Channel};

const REQUESTS: usize = 20_000;
const TASKS: usize = 64;
const BASE_DELAY: Duration = Duration::from_millis(2);

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;
type HttpChannel = Channel<Request<Full<Bytes>>, hyper::Response<hyper::body::Incoming>>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let prometheus = prometheus_flag()?;
    if let Some(addr) = prometheus {
        let url = prometheus::serve(addr)?;
        println!("Prometheus metrics: {url}\n");
    }
    let mut backends = Vec::new();
    let mut labels = HashMap::new();
    for i in 0..5 {
        let (behavior, label) = match i {
            0 => (Behavior::delay(BASE_DELAY * 10), "10x slower"),
            1 => (
                Behavior {
                    fail_ratio: 0.3,
                    ..Behavior::delay(BASE_DELAY)
                },
                "fails 30%",
            ),
            _ => (Behavior::delay(BASE_DELAY), "healthy"),
        };
        let backend = Backend::start(behavior, i + 1).await;
        labels.insert(backend.addr, label);
        backends.push(backend);
    }
    println!("5 backends on 127.0.0.1, {REQUESTS} requests from {TASKS} tasks per run\n");
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    // One hyper client (one connection pool) under every channel.
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let p2c = Channel::builder(connect(client.clone()))
        .discover(Static::new(addrs.clone()))
        .balancer(P2c::peak_ewma())
        .classifier(StatusClassify::new())
        .name("p2c")
        .build()?;
    run("P2C peak-EWMA", p2c, &backends, &labels).await?;

    let round_robin = Channel::builder(connect(client.clone()))
        .discover(Static::new(addrs.clone()))
        .balancer(RoundRobin::new())
        .classifier(StatusClassify::new())
        .name("round_robin")
        .build()?;
    run("round-robin", round_robin, &backends, &labels).await?;

    let resilient = Channel::builder(connect(client))
        .discover(Static::new(addrs))
        .balancer(P2c::peak_ewma())
        .classifier(StatusClassify::new())
        .replayer(CloneReplay)
        .retry(RetrySettings::default().with_max_attempts(3))
        .circuit_breaker(BreakerSettings::default().with_failure_rate(Some(0.2)))
        .timeout(Duration::from_millis(500))
        .name("resilient")
        .build()?;
    run(
        "P2C peak-EWMA + retry + breaker",
        resilient,
        &backends,
        &labels,
    )
    .await?;
    if prometheus.is_some() {
        println!("serving metrics until Ctrl-C");
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}

/// `--prometheus ADDR`, if given.
fn prometheus_flag() -> Result<Option<SocketAddr>, BoxError> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, _) => Ok(None),
        (Some("--prometheus"), Some(addr)) => Ok(Some(addr.parse()?)),
        _ => Err("usage: quickstart [--prometheus ADDR]".into()),
    }
}

/// One call: the status, and the endpoint that answered.
async fn get(channel: &mut HttpChannel) -> Result<(StatusCode, SocketAddr), BoxError> {
    let request = Request::get("/").body(Full::default())?;
    let response = channel.ready().await?.call(request).await?;
    let from = response.extensions().get::<EndpointAddr>().map(|a| a.0);
    let status = response.status();
    response.into_body().collect().await?;
    Ok((status, from.ok_or("no endpoint address")?))
}

async fn run(
    title: &str,
    channel: HttpChannel,
    backends: &[Backend],
    labels: &HashMap<SocketAddr, &str>,
) -> Result<(), BoxError> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let mut channel = channel.clone();
            let count = REQUESTS / TASKS + usize::from(t < REQUESTS % TASKS);
            tokio::spawn(async move {
                let mut seen = Vec::with_capacity(count);
                for _ in 0..count {
                    let start = Instant::now();
                    let reply = get(&mut channel).await;
                    seen.push((reply.ok(), start.elapsed()));
                }
                seen
            })
        })
        .collect();
    let mut per_endpoint: HashMap<SocketAddr, (Vec<Duration>, u64)> = HashMap::new();
    let mut errors = 0;
    for task in tasks {
        for (reply, latency) in task.await? {
            match reply {
                Some((status, from)) => {
                    let entry = per_endpoint.entry(from).or_default();
                    entry.0.push(latency);
                    entry.1 += u64::from(status.is_server_error());
                }
                None => errors += 1,
            }
        }
    }
    let elapsed = started.elapsed();

    let failed_calls: u64 = per_endpoint.values().map(|(_, f)| f).sum::<u64>() + errors;
    println!(
        "== {title}: {REQUESTS} requests in {elapsed:.2?}; {failed_calls} reached the caller as failures"
    );
    println!(
        "{:<22} {:<11} {:>8} {:>7} {:>9} {:>9} {:>9}",
        "endpoint", "kind", "answers", "share", "p50", "p99", "failures"
    );
    let mut addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    addrs.sort();
    for addr in addrs {
        let (mut latencies, failures) = per_endpoint.remove(&addr).unwrap_or_default();
        latencies.sort();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .map(|d| format!("{:.1?}", d))
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{:<22} {:<11} {:>8} {:>6.1}% {:>9} {:>9} {:>9}",
            addr.to_string(),
            labels[&addr],
            latencies.len(),
            100.0 * latencies.len() as f64 / REQUESTS as f64,
            pct(0.50),
            pct(0.99),
            failures
        );
    }
    println!();
    Ok(())
}
