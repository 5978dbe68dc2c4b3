//! Per-call overhead of a towline channel against tower's P2C balancer, over
//! an always-ready in-memory service, in the same run.
//!
//! - `towline`: `Channel` with P2C peak-EWMA, shared by clones.
//! - `tower_balance`: `tower::balance::p2c::Balance<PeakEwma<_>>` used
//!   directly (`&mut`, one task only: it cannot be shared).
//! - `tower_buffer`: the same `Balance` behind `tower::buffer::Buffer`
//!   (capacity 1024), which is how tonic shares a balanced channel.
//! - `floor`: the in-memory service called directly by the same harness;
//!   subtract it from the others for each one's cost above the floor.
//!
//! "1 task" runs calls one after another; "64 tasks" splits the calls over 64
//! tasks on a 2-worker multi-thread runtime and reports elapsed / calls.
//!
//! `cargo bench --bench channel -- side-by-side N CALLS ROUNDS` instead
//! times two threads calling one channel of N endpoints at once (see
//! [`side_by_side`]): the two-core contention the 64-task figure meets in
//! only some runs.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group};
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwma};

use tower::{Service, ServiceExt};
use towline::balance::P2c;
use towline::discover::Static;
use towline::{Channel, Endpoint};

#[path = "support/echo.rs"]
mod echo;
use echo::Echo;

fn echo() -> Echo {
    Echo
}

fn addrs(n: usize) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| SocketAddr::from(([127, 0, (i / 250) as u8, (i % 250) as u8 + 1], 80)))
        .collect()
}

fn towline_channel(n: usize) -> Channel<u64, u64> {
    Channel::builder(|_: &Endpoint| echo())
        .discover(Static::new(addrs(n)))
        .balancer(P2c::peak_ewma())
        .build()
        .expect("valid channel")
}

type TowerBalance = Balance<ServiceList<Vec<PeakEwma<Echo>>>, u64>;

fn tower_balance(n: usize) -> TowerBalance {
    let services = (0..n)
        .map(|_| {
            PeakEwma::new(
                echo(),
                Duration::from_millis(30),
                Duration::from_secs(10).as_nanos() as f64,
                CompleteOnResponse::default(),
            )
        })
        .collect::<Vec<_>>();
    Balance::new(ServiceList::new(services))
}

const TASKS: u64 = 64;

/// Runs `iters` calls split over 64 tasks, each on its own clone.
async fn concurrent<S>(svc: S, iters: u64) -> Duration
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
{
    let per_task = iters.div_ceil(TASKS);
    let start = Instant::now();
    let handles: Vec<_> = (0..TASKS)
        .map(|_| {
            let mut svc = svc.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    black_box(svc.ready().await.unwrap().call(i).await.unwrap());
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    start
        .elapsed()
        .mul_f64(iters as f64 / (per_task * TASKS) as f64)
}

/// Runs `iters` calls one after another on one task.
async fn sequential<S>(svc: &mut S, iters: u64) -> Duration
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for i in 0..iters {
        black_box(svc.ready().await.unwrap().call(i).await.unwrap());
    }
    start.elapsed()
}

fn one_task(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("call_1_task");
    group.bench_function("floor", |b| {
        b.iter_custom(|iters| rt.block_on(sequential(&mut echo(), iters)));
    });
    for n in [10usize, 100, 1000] {
        let mut channel = rt.block_on(ready_channel(n));
        group.bench_with_input(BenchmarkId::new("towline", n), &n, |b, _| {
            b.iter_custom(|iters| rt.block_on(sequential(&mut channel, iters)));
        });
        let mut balance = tower_balance(n);
        group.bench_with_input(BenchmarkId::new("tower_balance", n), &n, |b, _| {
            b.iter_custom(|iters| rt.block_on(sequential(&mut balance, iters)));
        });
        let mut buffer = rt.block_on(async { Buffer::new(tower_balance(n), 1024) });
        group.bench_with_input(BenchmarkId::new("tower_buffer", n), &n, |b, _| {
            b.iter_custom(|iters| rt.block_on(sequential(&mut buffer, iters)));
        });
    }
    group.finish();
}

/// A channel whose discovery task has published all `n` endpoints.
async fn ready_channel(n: usize) -> Channel<u64, u64> {
    let ch = towline_channel(n);
    while ch.endpoints().len() < n {
        tokio::task::yield_now().await;
    }
    ch
}

fn many_tasks(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("call_64_tasks");
    group.bench_function("floor", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| concurrent(echo(), iters));
    });
    for n in [10usize, 100, 1000] {
        let channel = rt.block_on(ready_channel(n));
        group.bench_with_input(BenchmarkId::new("towline", n), &n, |b, _| {
            b.to_async(&rt)
                .iter_custom(|iters| concurrent(channel.clone(), iters));
        });
        let buffer = rt.block_on(async { Buffer::new(tower_balance(n), 1024) });
        group.bench_with_input(BenchmarkId::new("tower_buffer", n), &n, |b, _| {
            b.to_async(&rt)
                .iter_custom(|iters| concurrent(buffer.clone(), iters));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = one_task, many_tasks
}
/// Two OS threads, each with its own clone of one channel of `n`
/// endpoints and its own single-threaded runtime, make `calls` calls each
/// at the same time (started together): ns per call on each thread. Both
/// threads write the slots they pick, so this is where two cores contend
/// on the endpoints' cache lines; the 64-task benchmark's tasks reach that
/// regime only when its two workers happen to run at once.
fn side_by_side(n: usize, calls: u64) -> [f64; 2] {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let channel = rt.block_on(ready_channel(n));
    let start = Arc::new(Barrier::new(2));
    let threads = [0, 1].map(|_| {
        let (mut channel, start) = (channel.clone(), start.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            start.wait();
            rt.block_on(sequential(&mut channel, calls)).as_nanos() as f64 / calls as f64
        })
    });
    threads.map(|t| t.join().unwrap())
}

/// `channel side-by-side N CALLS ROUNDS`: [`side_by_side`] `ROUNDS` times,
/// printing each round's two figures and the median of all; otherwise the
/// criterion benchmarks.
fn main() {
    // `cargo bench` adds `--bench`.
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    if let [_, mode, n, calls, rounds] = args.as_slice()
        && mode == "side-by-side"
    {
        let usage = "usage: channel side-by-side N CALLS ROUNDS";
        let (n, calls, rounds): (usize, u64, usize) = (
            n.parse().expect(usage),
            calls.parse().expect(usage),
            rounds.parse().expect(usage),
        );
        let mut all = Vec::new();
        for _ in 0..rounds {
            let [a, b] = side_by_side(n, calls);
            println!("{n} endpoints: {a:.0} and {b:.0} ns per call");
            all.extend([a, b]);
        }
        all.sort_by(f64::total_cmp);
        println!(
            "{n} endpoints, median: {:.0} ns per call",
            all[all.len() / 2]
        );
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
