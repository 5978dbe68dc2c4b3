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
//! not firing), `throttle` (`full` plus adaptive throttling, never
//! refusing); and `pick/BALANCER/N`, one pick (not a call) of a
//! balancer over N endpoints, as `benches/pick.rs` measures it: BALANCER is
//! `round_robin`, `random`, `weighted_random`, `weighted_round_robin`,
//! `p2c_pending`, `p2c_peak_ewma`, `maglev`, `ring` or `maglev_bounded`
//! (the keyed ones by a fresh random key each pick, with the in-flight total
//! kept by the set, as the channel keeps it);
//! `limit` and `limit_fixed` (8 endpoints, no policy but the
//! channel's concurrency limit, adaptive and fixed, never limiting), and
//! `pick/equal` and `pick/aperture` (one P2C peak-EWMA pick over 13
//! endpoints, all of weight 1000, or weighted as a deterministic aperture
//! weighs them: 11 whole and two halves, so P2C draws by weight), and
//! `aperture` (a call on a channel with that aperture: `towline/13`'s
//! counterpart); `timeout`, `deadline`, `retry`, `breaker`, `hedge` (each
//! policy alone, as in benches/policy.rs); `towline64/N` and `buffer64/N`
//! split the calls over 64 tasks on a 2-worker runtime (a channel clone per
//! task, and tower's `Buffer<Balance<PeakEwma>>`), for CPU time
//! (`scripts/cputime`; under callgrind the threads run one at a time).

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwma};
use tower::{Service, ServiceExt};
use towline::balance::{
    Balancer, ConsistentHash, EndpointSet, Load, LoadSet, P2c, PickContext, Random, RoundRobin,
    Weighted,
};
use towline::discover::Static;
use towline::policy::breaker::BreakerSettings;
use towline::policy::hedge::{HedgeDelay, HedgeSettings};
use towline::policy::limit::{LimitAlgorithm, LimitSettings};
use towline::policy::replay::CloneReplay;
use towline::policy::retry::RetrySettings;
use towline::policy::throttle::ThrottleSettings;
use towline::rng::Rng;
use towline::subset::{ApertureSettings, Coordinate};
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

/// Endpoints with loads, keeping their in-flight total as the channel does.
struct Loads(Vec<Load>, u64);

impl LoadSet for Loads {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn load(&self, index: usize) -> &Load {
        &self.0[index]
    }
    fn in_flight(&self) -> Option<u64> {
        Some(self.1)
    }
}

/// `picks` picks of `name` over `size` endpoints (weights 1 to 7, some in
/// flight, as in benches/pick.rs).
fn picks(name: &str, size: usize, picks: u64) {
    let proto: Box<dyn Balancer> = match name {
        "round_robin" => Box::new(RoundRobin::new()),
        "random" => Box::new(Random::new()),
        "weighted_random" => Box::new(Weighted::random()),
        "weighted_round_robin" => Box::new(Weighted::round_robin()),
        "p2c_pending" => Box::new(P2c::pending()),
        "p2c_peak_ewma" => Box::new(P2c::peak_ewma()),
        "maglev" => Box::new(ConsistentHash::maglev()),
        "ring" => Box::new(ConsistentHash::ring()),
        "maglev_bounded" => Box::new(ConsistentHash::maglev().bounded_load(1.25).unwrap()),
        other => panic!("unknown balancer {other}"),
    };
    let now = std::time::Instant::now();
    let addrs: Vec<SocketAddr> = (0..size)
        .map(|i| SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 8080)))
        .collect();
    let weights: Vec<u32> = (0..size).map(|i| 1 + (i % 7) as u32).collect();
    let loads: Vec<Load> = weights.iter().map(|&w| Load::new(w, now)).collect();
    for (i, l) in loads.iter().enumerate() {
        (0..i % 3).for_each(|_| l.start());
    }
    let total = loads.iter().map(|l| u64::from(l.pending())).sum();
    let set = Loads(loads, total);
    let b = proto.rebuild_set(&EndpointSet::new(&addrs, &weights));
    let keyed = matches!(name, "maglev" | "ring" | "maglev_bounded");
    let mut rng = Rng::seeded(42);
    for _ in 0..picks {
        let key = keyed.then(|| rng.next_u64());
        let at = PickContext::new(now).with_key(key);
        black_box(b.pick(&at, &set, &|_| true, &mut rng));
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
    if config == "pick/equal" || config == "pick/aperture" {
        return aperture_picks(&config, n);
    }
    if let Some(rest) = config.strip_prefix("pick/") {
        let (name, size) = rest.split_once('/').expect("pick/BALANCER/N");
        return picks(name, size.parse().expect("endpoint count"), n);
    }
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
            "aperture" => {
                // Client 4 of 10 over 30 endpoints with an aperture of 12:
                // 11 whole endpoints and two halves (see `subset`).
                let mut channel = Channel::builder(|_: &Endpoint| Echo)
                    .discover(Static::new(addrs(30)))
                    .aperture(ApertureSettings::new(12), Coordinate::new(4, 10).unwrap())
                    .build()
                    .expect("valid channel");
                while channel.endpoints().len() < 13 {
                    tokio::task::yield_now().await;
                }
                calls(&mut channel, n).await
            }
            "tower" => calls(&mut tower_balance(size), n).await,
            "buffer64" => spread(Buffer::new(tower_balance(size), 1024), n).await,
            "towline" | "towline64" | "bare" | "full" | "timeout" | "deadline" | "retry"
            | "breaker" | "hedge" | "throttle" | "limit" | "limit_fixed" => {
                let builder = Channel::builder(|_: &Endpoint| Echo)
                    .discover(Static::new(addrs(size)))
                    .balancer(P2c::peak_ewma())
                    .replayer(CloneReplay);
                let hedge = || {
                    HedgeSettings::default().with_delay(HedgeDelay::Fixed(Duration::from_secs(1)))
                };
                // As benches/policy.rs: each policy alone, and all of them
                // (`throttle`: all of them and adaptive throttling).
                let builder = match kind {
                    "full" | "throttle" => builder
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
                    "limit" => builder.concurrency_limit(LimitSettings::default()),
                    "limit_fixed" => {
                        builder.concurrency_limit(LimitSettings::new(LimitAlgorithm::Fixed(1000)))
                    }
                    _ => builder,
                };
                let builder = if kind == "throttle" {
                    builder.throttle(ThrottleSettings::default())
                } else {
                    builder
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

/// `n` P2C peak-EWMA picks over 13 endpoints: `pick/equal` (weights all
/// 1000) or `pick/aperture` (an aperture's weights: two halves).
fn aperture_picks(config: &str, n: u64) {
    let mut weights = vec![1000u32; 13];
    if config == "pick/aperture" {
        (weights[0], weights[12]) = (500, 500);
    } else {
        assert_eq!(config, "pick/equal", "unknown configuration {config}");
    }
    let now = std::time::Instant::now();
    let loads: Vec<Load> = weights.iter().map(|&w| Load::new(w, now)).collect();
    let balancer = P2c::peak_ewma().rebuild(&weights);
    let at = PickContext::new(now);
    let mut rng = Rng::seeded(1);
    for _ in 0..n {
        black_box(balancer.pick(&at, &loads, &|_| true, &mut rng));
    }
}
