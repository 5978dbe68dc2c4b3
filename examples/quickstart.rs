//! towline quickstart: no external service needed.
//!
//! Starts five HTTP servers on 127.0.0.1 — one ten times slower than the
//! others, one failing 30% of its requests with HTTP 500 — then sends 20,000
//! requests from 64 concurrent tasks through a P2C peak-EWMA channel and
//! through a round-robin channel, and prints how each spread the load. A third
//! run adds the resilience policies: up to 3 attempts per call (retries go to
//! endpoints not yet tried) and a circuit breaker per endpoint that ejects one
//! whose failure rate passes 20%.
//!
//! Run with `cargo run --release --example quickstart` (or without
//! `--release`; it takes a few seconds either way).

#[path = "../tests/support/http.rs"]
mod http;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{Backend, Behavior, Reply};
use tower::{Service, ServiceExt};
use towline::balance::{P2c, RoundRobin};
use towline::discover::Static;
use towline::policy::breaker::BreakerSettings;
use towline::policy::replay::CloneReplay;
use towline::policy::retry::RetrySettings;
use towline::{Channel, Error};

const REQUESTS: usize = 20_000;
const TASKS: usize = 64;
const BASE_DELAY: Duration = Duration::from_millis(2);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut backends = Vec::new();
    let mut labels = HashMap::new();
    for i in 0..5 {
        let (behavior, label) = match i {
            0 => (Behavior::delay(BASE_DELAY * 10), "10x slower"),
            1 => (
                Behavior {
                    delay: BASE_DELAY,
                    fail_ratio: 0.3,
                    hang: false,
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

    let p2c = Channel::builder(http::connector())
        .discover(Static::new(addrs.clone()))
        .balancer(P2c::peak_ewma())
        .classify(http::classify)
        .name("p2c")
        .build()?;
    run("P2C peak-EWMA", p2c, &backends, &labels).await?;

    let round_robin = Channel::builder(http::connector())
        .discover(Static::new(addrs.clone()))
        .balancer(RoundRobin::new())
        .classify(http::classify)
        .name("round_robin")
        .build()?;
    run("round-robin", round_robin, &backends, &labels).await?;

    let resilient = Channel::builder(http::connector())
        .discover(Static::new(addrs))
        .balancer(P2c::peak_ewma())
        .classify(http::classify)
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
    Ok(())
}

async fn run(
    title: &str,
    channel: Channel<String, http::Reply>,
    backends: &[Backend],
    labels: &HashMap<SocketAddr, &str>,
) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let mut channel = channel.clone();
            let count = REQUESTS / TASKS + usize::from(t < REQUESTS % TASKS);
            tokio::spawn(async move {
                let mut seen: Vec<(Result<Reply, Error>, Duration)> = Vec::with_capacity(count);
                for _ in 0..count {
                    let start = Instant::now();
                    let reply = match channel.ready().await {
                        Ok(ch) => ch.call("/".to_string()).await,
                        Err(e) => Err(e),
                    };
                    seen.push((reply, start.elapsed()));
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
                Ok(reply) => {
                    let entry = per_endpoint.entry(reply.from).or_default();
                    entry.0.push(latency);
                    entry.1 += u64::from(reply.status >= 500);
                }
                Err(_) => errors += 1,
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
