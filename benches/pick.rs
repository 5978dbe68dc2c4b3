//! Cost of one pick for each balancer as the endpoint set grows from 10 to
//! 10,000, with every endpoint eligible and with a tenth of them excluded.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use towline::balance::{
    AttemptEnd, Balancer, End, Load, P2c, PickContext, Random, RoundRobin, Weighted,
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

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = pick_cost
}
criterion_main!(benches);
