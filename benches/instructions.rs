//! A fixed amount of work per configuration, for instruction counts under
//! `valgrind --tool=callgrind` (criterion's timings are noise on a shared
//! machine; instruction counts are not).
//!
//! ```sh
//! cargo bench --bench instructions --no-run   # prints the binary's path
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null BINARY CONFIG CALLS
//! ```
//!
//! Run each configuration twice with different `CALLS` and divide the
//! difference of the two totals by the difference of the call counts: set-up
//! cancels out and what is left is the cost of one call. `scripts/instructions`
//! does exactly that for every configuration.
//!
//! Configurations: `floor` (the in-memory service called directly),
//! `towline/N` and `tower/N` (one task calling a P2C peak-EWMA channel of N
//! endpoints, and tower's `Balance<PeakEwma>` over the same service),
//! `bare` and `full` (8 endpoints, no policy and every policy armed but
//! not firing), and `timeout`, `deadline`, `retry`, `breaker`, `hedge` (each
//! policy alone, as in benches/policy.rs); `towline64/N` and `buffer64/N` split the calls over 64
//! tasks on a 2-worker runtime (a channel clone per task, and tower's
//! `Buffer<Balance<PeakEwma>>`), for CPU time (`scripts/cputime`; under
//! callgrind the threads run one at a time).

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwma};
use tower::{Service, ServiceExt};
use towline::balance::P2c;
use towline::discover::Static;
use towline::policy::breaker::BreakerSettings;
use towline::policy::hedge::{HedgeDelay, HedgeSettings};
use towline::policy::replay::CloneReplay;
use towline::policy::retry::RetrySettings;
use towline::{Channel, Endpoint};

#[path = "support/echo.rs"]
mod echo;
use echo::Echo;

fn addrs(n: usize) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| SocketAddr::from(([127, 0, (i / 250) as u8, (i % 250) as u8 + 1], 80)))
        .collect()
}

async fn calls<S>(svc: &mut S, n: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    for i in 0..n {
        black_box(svc.ready().await.unwrap().call(i).await.unwrap());
    }
}

/// `n` calls split over 64 tasks, each with its own clone of `svc`.
async fn spread<S>(svc: S, n: u64)
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
{
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let mut svc = svc.clone();
            tokio::spawn(async move { calls(&mut svc, n.div_ceil(64)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

fn tower_balance(size: usize) -> Balance<ServiceList<Vec<PeakEwma<Echo>>>, u64> {
    let services = (0..size)
        .map(|_| {
            PeakEwma::new(
                Echo,
                Duration::from_millis(30),
                Duration::from_secs(10).as_nanos() as f64,
                CompleteOnResponse::default(),
            )
        })
        .collect::<Vec<_>>();
    Balance::new(ServiceList::new(services))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let config = args.next().expect("usage: instructions CONFIG CALLS");
    let n: u64 = args
        .next()
        .and_then(|c| c.parse().ok())
        .expect("usage: instructions CONFIG CALLS");
    let (kind, size) = match config.split_once('/') {
        Some((k, s)) => (k, s.parse::<usize>().expect("endpoint count")),
        None => (config.as_str(), 8),
    };
    let rt = if kind.ends_with("64") {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    rt.block_on(async move {
        match kind {
            "floor" => calls(&mut Echo, n).await,
            "tower" => calls(&mut tower_balance(size), n).await,
            "buffer64" => spread(Buffer::new(tower_balance(size), 1024), n).await,
            "towline" | "towline64" | "bare" | "full" | "timeout" | "deadline" | "retry"
            | "breaker" | "hedge" => {
                let builder = Channel::builder(|_: &Endpoint| Echo)
                    .discover(Static::new(addrs(size)))
                    .balancer(P2c::peak_ewma())
                    .replayer(CloneReplay);
                let hedge = || {
                    HedgeSettings::default().with_delay(HedgeDelay::Fixed(Duration::from_secs(1)))
                };
                // As benches/policy.rs: each policy alone, and all of them.
                let builder = match kind {
                    "full" => builder
                        .timeout(Duration::from_secs(1))
                        .deadline(Duration::from_secs(5))
                        .retry(RetrySettings::default())
                        .circuit_breaker(BreakerSettings::default())
                        .hedge(hedge()),
                    "timeout" => builder.timeout(Duration::from_secs(1)),
                    "deadline" => builder.deadline(Duration::from_secs(5)),
                    "retry" => builder.retry(RetrySettings::default()),
                    "breaker" => builder.circuit_breaker(BreakerSettings::default()),
                    "hedge" => builder.hedge(hedge()),
                    _ => builder,
                };
                let mut channel = builder.build().expect("valid channel");
                while channel.endpoints().len() < size {
                    tokio::task::yield_now().await;
                }
                if kind == "towline64" {
                    spread(channel, n).await
                } else {
                    calls(&mut channel, n).await
                }
            }
            other => panic!("unknown configuration {other}"),
        }
    });
}
