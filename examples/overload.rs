//! An adaptive concurrency limit against a saturated service: twice the
//! load it can take, with and without the limit.
//!
//! ```sh
//! cargo run --example overload
//! ```
//!
//! Three in-memory endpoints, each serving 4 calls at a time for 20 ms
//! (600 calls per second in all), are offered 1,200 calls per second for
//! three seconds; every caller gives up after one second. Without a limit
//! the endpoints' queues grow until every call runs out of time. With
//! `Channel::builder(..).concurrency_limit(LimitSettings::default())` the
//! channel learns how many calls the endpoints take and refuses the rest
//! at once with `Error::Overloaded`: the admitted calls keep their latency.
//! (Real time: the run takes about 8 seconds.)

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tower::ServiceExt;
use towline::discover::Static;
use towline::policy::limit::LimitSettings;
use towline::{Channel, Endpoint, Error};

const RATE: u64 = 1_200;
const RUN: Duration = Duration::from_secs(3);
const BUDGET: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    for limit in [None, Some(LimitSettings::default())] {
        let limited = limit.is_some();
        let channel = channel(limit)?;
        let (ok, refused, late, mut latencies) = offer(&channel).await;
        latencies.sort();
        let p99 = latencies.get(latencies.len() * 99 / 100).copied();
        println!(
            "{}: {ok} answered in time ({:.0}/s of 600/s), {refused} refused at once, {late} out of time; \
             p99 of the calls sent {p99:?}",
            if limited {
                "adaptive limit"
            } else {
                "no limit"
            },
            ok as f64 / RUN.as_secs_f64(),
        );
        if let Some(state) = channel.policy_handle().concurrency_limit() {
            println!(
                "  the limit learned: {} calls, baseline RTT {:?}",
                state.limit(),
                state.min_rtt()
            );
        }
    }
    Ok(())
}

/// A channel over three endpoints that each serve 4 calls at a time.
fn channel(limit: Option<LimitSettings>) -> Result<Channel<u32, u32>, towline::BuildError> {
    let connect = |_: &Endpoint| {
        let servers = Arc::new(Semaphore::new(4));
        tower::service_fn(move |x: u32| {
            let servers = servers.clone();
            async move {
                let _server = servers.acquire_owned().await.expect("never closed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, Infallible>(x)
            }
        })
    };
    let addrs: Vec<SocketAddr> = (1..=3)
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect();
    let builder = Channel::builder(connect).discover(Static::new(addrs));
    match limit {
        Some(limit) => builder.concurrency_limit(limit),
        None => builder,
    }
    .build()
}

/// Offers `RATE` calls a second for `RUN`, each with `BUDGET`; returns the
/// calls answered in time, refused, out of time, and the time each call
/// that was sent took.
async fn offer(channel: &Channel<u32, u32>) -> (u64, u64, u64, Vec<Duration>) {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while start.elapsed() < RUN {
        tick.tick().await;
        for _ in 0..RATE / 100 {
            let channel = channel.clone();
            tasks.spawn(async move {
                let began = Instant::now();
                let result = tokio::time::timeout(BUDGET, channel.oneshot(1)).await;
                (result, began.elapsed())
            });
        }
    }
    let (mut ok, mut refused, mut late, mut latencies) = (0, 0, 0, Vec::new());
    while let Some(done) = tasks.join_next().await {
        let (result, took) = done.expect("no panic");
        match result {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(Error::Overloaded)) => {
                refused += 1;
                continue;
            }
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => late += 1,
        }
        latencies.push(took);
    }
    (ok, refused, late, latencies)
}
