//! Overhead of each channel policy when it does not fire, against the bare
//! channel, in the same run, over an always-ready in-memory service.
//!
//! Variants (8 endpoints, P2C peak-EWMA, one task calling in a loop):
//! `bare` (no policy), `timeout` (1 s per attempt), `deadline` (5 s),
//! `retry` (3 attempts, default budget), `breaker` (default settings),
//! `hedge` (fixed 1 s delay, armed on every call), and `full` (all of them).
//! The target for `full` is at most 1.3× the bare channel's time per call.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tower::{Service, ServiceExt};
use towline::balance::P2c;
use towline::channel::Builder;
use towline::discover::Static;
use towline::policy::breaker::BreakerSettings;
use towline::policy::hedge::{HedgeDelay, HedgeSettings};
use towline::policy::replay::CloneReplay;
use towline::policy::retry::RetrySettings;
use towline::{Channel, Endpoint};

#[path = "support/echo.rs"]
mod echo;
use echo::Echo;

fn base() -> Builder<u64, Echo> {
    let addrs: Vec<SocketAddr> = (1..=8)
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect();
    Channel::builder(|_: &Endpoint| Echo)
        .discover(Static::new(addrs))
        .balancer(P2c::peak_ewma())
        .replayer(CloneReplay)
}

/// Adds one variant's policies to a builder.
type Configure = fn(Builder<u64, Echo>) -> Builder<u64, Echo>;

fn variants() -> Vec<(&'static str, Configure)> {
    vec![
        ("bare", |b| b),
        ("timeout", |b| b.timeout(Duration::from_secs(1))),
        ("deadline", |b| b.deadline(Duration::from_secs(5))),
        ("retry", |b| b.retry(RetrySettings::default())),
        ("breaker", |b| b.circuit_breaker(BreakerSettings::default())),
        ("hedge", |b| {
            b.hedge(HedgeSettings::default().with_delay(HedgeDelay::Fixed(Duration::from_secs(1))))
        }),
        ("full", |b| {
            b.timeout(Duration::from_secs(1))
                .deadline(Duration::from_secs(5))
                .retry(RetrySettings::default())
                .circuit_breaker(BreakerSettings::default())
                .hedge(
                    HedgeSettings::default().with_delay(HedgeDelay::Fixed(Duration::from_secs(1))),
                )
        }),
    ]
}

fn policy_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("policy");
    for (name, configure) in variants() {
        let channel = rt.block_on(async { configure(base()).build().expect("valid channel") });
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut ch = channel.clone();
                rt.block_on(async move {
                    let start = Instant::now();
                    for i in 0..iters {
                        let out = ch.ready().await.unwrap().call(i).await.unwrap();
                        std::hint::black_box(out);
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

/// Time per call of `calls` calls on `channel`.
fn per_call(rt: &tokio::runtime::Runtime, channel: &Channel<u64, u64>, calls: u64) -> f64 {
    let mut ch = channel.clone();
    rt.block_on(async move {
        let start = Instant::now();
        for i in 0..calls {
            std::hint::black_box(ch.ready().await.unwrap().call(i).await.unwrap());
        }
        start.elapsed().as_nanos() as f64 / calls as f64
    })
}

/// The machine these run on is shared, so absolute times drift between
/// criterion's groups. This measures each variant against the bare channel
/// in 21 alternating slices of 20,000 calls and prints the median ratio, which
/// that drift cancels out of.
fn interleaved_ratios(_c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bare = rt.block_on(async { base().build().expect("valid channel") });
    for (name, configure) in variants().into_iter().skip(1) {
        let channel = rt.block_on(async { configure(base()).build().expect("valid channel") });
        let mut ratios: Vec<f64> = (0..21)
            .map(|_| {
                let b = per_call(&rt, &bare, 20_000);
                let v = per_call(&rt, &channel, 20_000);
                v / b
            })
            .collect();
        ratios.sort_by(f64::total_cmp);
        println!(
            "policy/{name}: {:.2}x the bare channel's time per call (median of 21 interleaved slices; range {:.2}-{:.2})",
            ratios[10], ratios[0], ratios[20]
        );
    }
}

criterion_group!(benches, policy_overhead, interleaved_ratios);
criterion_main!(benches);
