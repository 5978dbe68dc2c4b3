//! Cost of one pick for each balancer as the endpoint set grows from 10 to
//! 10,000, with every endpoint eligible and with a tenth of them excluded;
//! and for the consistent-hash tables, the cost of building one.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use towline::balance::{
    AttemptEnd, Balancer, ConsistentHash, End, Load, P2c, PickContext, Random, RoundRobin, Weighted,
};
use towline::classify::Outcome;
use towline::rng::Rng;

fn balancers() -> Vec<Box<dyn Balancer>> {
    vec![
        Box::new(RoundRobin::new()),
        Box::new(Random::new()),
        Box::new(Weighted::random()),
        Box::new(Weighted::round_robin()),
        Box::new(P2c::pending()),
        Box::new(P2c::peak_ewma()),
    ]
}

fn pick_cost(c: &mut Criterion) {
    let now = Instant::now();
    for proto in balancers() {
        let mut group = c.benchmark_group(format!("pick/{}", proto.name()));
        for n in [10usize, 100, 1_000, 10_000] {
            let weights: Vec<u32> = (0..n).map(|i| 1 + (i % 7) as u32).collect();
            let loads: Vec<Load> = weights.iter().map(|&w| Load::new(w, now)).collect();
            for (i, l) in loads.iter().enumerate() {
                for _ in 0..(i % 3) {
                    l.start();
                }
                let rtt = Duration::from_micros(100 + (i % 50) as u64);
                proto.observe(
                    l,
                    &AttemptEnd::new(End::Response(Outcome::Success), rtt, now),
                );
            }
            let b = proto.rebuild(&weights);
            let mut rng = Rng::seeded(42);
            let at = PickContext::new(now);
            group.bench_with_input(BenchmarkId::new("all_eligible", n), &n, |bench, _| {
                bench.iter(|| black_box(b.pick(&at, &loads, &|_| true, &mut rng)))
            });
            group.bench_with_input(BenchmarkId::new("tenth_excluded", n), &n, |bench, _| {
                bench.iter(|| black_box(b.pick(&at, &loads, &|i| i % 10 != 3, &mut rng)))
            });
        }
        group.finish();
    }
}

fn hash_endpoints(n: usize) -> Vec<(SocketAddr, u32)> {
    (0..n)
        .map(|i| {
            let ip = Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8);
            (SocketAddr::from((ip, 8080)), 1 + (i % 7) as u32)
        })
        .collect()
}

fn hash_tables() -> Vec<(&'static str, ConsistentHash)> {
    let bounded = ConsistentHash::maglev().bounded_load(1.25).unwrap();
    vec![
        ("maglev", ConsistentHash::maglev()),
        ("ring_hash", ConsistentHash::ring()),
        ("maglev_bounded", bounded),
    ]
}

/// A pick by a fresh random key each time (so the table is read at random,
/// as by real traffic), with the same loads as the balancers above. The
/// bounded variant is given the in-flight total, as a channel keeping one
/// would.
fn hash_pick_cost(c: &mut Criterion) {
    let now = Instant::now();
    for (name, proto) in hash_tables() {
        let mut group = c.benchmark_group(format!("pick/{name}"));
        for n in [10usize, 100, 1_000, 10_000] {
            let eps = hash_endpoints(n);
            let loads: Vec<Load> = eps.iter().map(|&(_, w)| Load::new(w, now)).collect();
            for (i, l) in loads.iter().enumerate() {
                (0..(i % 3)).for_each(|_| l.start());
            }
            let in_flight: u64 = loads.iter().map(|l| u64::from(l.pending())).sum();
            let table = proto.rebuild(eps.iter().copied());
            let mut rng = Rng::seeded(42);
            group.bench_with_input(BenchmarkId::new("all_eligible", n), &n, |bench, _| {
                bench.iter(|| {
                    let key = rng.next_u64();
                    black_box(table.pick_with_in_flight(key, &loads, &|_| true, in_flight))
                })
            });
            group.bench_with_input(BenchmarkId::new("tenth_excluded", n), &n, |bench, _| {
                bench.iter(|| {
                    let key = rng.next_u64();
                    let eligible = |i: usize| i % 10 != 3;
                    black_box(table.pick_with_in_flight(key, &loads, &eligible, in_flight))
                })
            });
        }
        group.finish();
    }
}

/// Building a table for a new endpoint set (off the pick path).
fn hash_build_cost(c: &mut Criterion) {
    for (name, proto) in hash_tables().into_iter().take(2) {
        let mut group = c.benchmark_group(format!("build/{name}"));
        for n in [100usize, 1_000, 10_000] {
            let eps = hash_endpoints(n);
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| {
                bench.iter(|| black_box(proto.rebuild(eps.iter().copied()).table_len()))
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = pick_cost, hash_pick_cost, hash_build_cost
}
criterion_main!(benches);
