//! Cost of the adaptive concurrency limit when it does not limit, in the
//! same run as the same services without it and as tower's fixed
//! `ConcurrencyLimit`.
//!
//! One task calls in a loop, so one call is in flight and nothing is ever
//! refused. Over the always-ready in-memory `Echo` service: `echo` alone,
//! `echo_gradient` (the default adaptive limit: an admission on atomics, a
//! clock read at each end of the call, a short lock to feed a sample of the
//! calls), `echo_fixed` (the same path with a fixed limit), `echo_tower`
//! (tower's `ConcurrencyLimit`: a semaphore permit per call). Over a bare
//! channel (8 endpoints, P2C peak-EWMA): `channel`, `channel_gradient` (the
//! channel's own limit, `LimitSettings::default()`; target at most 1.15 ×
//! `channel`), `channel_fixed` (a fixed limit of 1000) and `channel_layer`
//! (the standalone layer in front of the channel).

use std::fmt::Debug;
use std::net::SocketAddr;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use tower::{Layer, Service, ServiceExt};
use towline::balance::P2c;
use towline::discover::Static;
use towline::policy::limit::{AdaptiveLimitLayer, LimitAlgorithm, LimitSettings};
use towline::{Channel, Endpoint};

#[path = "support/echo.rs"]
mod echo;
use echo::Echo;

fn gradient() -> AdaptiveLimitLayer {
    AdaptiveLimitLayer::new(LimitSettings::default()).expect("valid settings")
}

fn fixed() -> AdaptiveLimitLayer {
    AdaptiveLimitLayer::new(LimitSettings::new(LimitAlgorithm::Fixed(1000))).expect("valid")
}

fn channel(limit: Option<LimitSettings>) -> Channel<u64, u64> {
    let addrs: Vec<SocketAddr> = (1..=8)
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect();
    let builder = Channel::builder(|_: &Endpoint| Echo)
        .discover(Static::new(addrs))
        .balancer(P2c::peak_ewma());
    match limit {
        Some(limit) => builder.concurrency_limit(limit),
        None => builder,
    }
    .build()
    .expect("valid channel")
}

/// The three channels, each populated: bare, with the adaptive limit, with
/// a fixed one.
fn channels(rt: &tokio::runtime::Runtime) -> [Channel<u64, u64>; 3] {
    rt.block_on(async {
        let made = [
            channel(None),
            channel(Some(LimitSettings::default())),
            channel(Some(LimitSettings::new(LimitAlgorithm::Fixed(1000)))),
        ];
        for ch in &made {
            while ch.endpoints().len() < 8 {
                tokio::task::yield_now().await;
            }
        }
        made
    })
}

/// Nanoseconds per call over `calls` calls on a clone of `svc`.
fn per_call<S>(rt: &tokio::runtime::Runtime, svc: &S, calls: u64) -> f64
where
    S: Service<u64, Response = u64> + Clone,
    S::Error: Debug,
{
    let mut svc = svc.clone();
    rt.block_on(async move {
        let start = Instant::now();
        for i in 0..calls {
            std::hint::black_box(svc.ready().await.unwrap().call(i).await.unwrap());
        }
        start.elapsed().as_nanos() as f64 / calls.max(1) as f64
    })
}

fn bench<S>(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, svc: &S)
where
    S: Service<u64, Response = u64> + Clone,
    S::Error: Debug,
{
    c.bench_function(&format!("limit/{name}"), |b| {
        b.iter_custom(|iters| {
            let ns = per_call(rt, svc, iters);
            std::time::Duration::from_nanos((ns * iters as f64) as u64)
        })
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn limit_overhead(c: &mut Criterion) {
    let rt = runtime();
    bench(c, &rt, "echo", &Echo);
    bench(c, &rt, "echo_gradient", &gradient().layer(Echo));
    bench(c, &rt, "echo_fixed", &fixed().layer(Echo));
    let tower_limit = tower::limit::ConcurrencyLimitLayer::new(1000);
    bench(c, &rt, "echo_tower", &tower_limit.layer(Echo));
    let [ch, gradient_ch, fixed_ch] = channels(&rt);
    bench(c, &rt, "channel", &ch);
    bench(c, &rt, "channel_gradient", &gradient_ch);
    bench(c, &rt, "channel_fixed", &fixed_ch);
    bench(c, &rt, "channel_layer", &gradient().layer(ch.clone()));
}

/// `variant` against `base` in 21 alternating slices of 20,000 calls: the
/// median ratio and added nanoseconds cancel the drift of a shared machine.
fn compare<A, B>(rt: &tokio::runtime::Runtime, name: &str, base: &A, variant: &B)
where
    A: Service<u64, Response = u64> + Clone,
    A::Error: Debug,
    B: Service<u64, Response = u64> + Clone,
    B::Error: Debug,
{
    let mut slices: Vec<(f64, f64)> = (0..21)
        .map(|_| {
            let b = per_call(rt, base, 20_000);
            let v = per_call(rt, variant, 20_000);
            (v / b, v - b)
        })
        .collect();
    slices.sort_by(|x, y| x.0.total_cmp(&y.0));
    let (ratio, added) = slices[10];
    println!(
        "limit/{name}: {ratio:.2}x ({added:+.0} ns per call; median of 21 interleaved slices, ratio range {:.2}-{:.2})",
        slices[0].0, slices[20].0
    );
}

fn interleaved_ratios(_c: &mut Criterion) {
    let rt = runtime();
    let [ch, gradient_ch, fixed_ch] = channels(&rt);
    compare(&rt, "channel_gradient vs channel", &ch, &gradient_ch);
    compare(&rt, "channel_fixed vs channel", &ch, &fixed_ch);
    compare(
        &rt,
        "channel_layer vs channel",
        &ch,
        &gradient().layer(ch.clone()),
    );
    compare(&rt, "echo_gradient vs echo", &Echo, &gradient().layer(Echo));
    compare(&rt, "echo_fixed vs echo", &Echo, &fixed().layer(Echo));
    let tower_limit = tower::limit::ConcurrencyLimitLayer::new(1000);
    compare(&rt, "echo_tower vs echo", &Echo, &tower_limit.layer(Echo));
}

criterion_group!(benches, limit_overhead, interleaved_ratios);
criterion_main!(benches);
