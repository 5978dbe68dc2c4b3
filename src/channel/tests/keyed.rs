//! Request-keyed picking and slow start through the channel.

use std::time::Instant as StdInstant;

use super::*;
use crate::balance::{ConsistentHash, Load, SlowStartSettings};
use crate::discover::Manual;

/// Requests below 1,000 carry themselves as their key; others have none.
fn key(req: &u32) -> Option<u64> {
    (*req < 1_000).then(|| u64::from(*req))
}

async fn call(channel: &Channel<u32, u16>, req: u32) -> Result<u16, Error> {
    let mut ch = channel.clone();
    ch.ready().await?.call(req).await
}

/// A request's endpoint by address, as a table built over `ports` (in any
/// order) places it, with `excluded` ports ineligible.
fn table_pick(hash: &ConsistentHash, ports: &[u16], key: u64, excluded: &[u16]) -> u16 {
    let table = hash.rebuild(ports.iter().map(|&p| (addr(p), 1)));
    let loads: Vec<Load> = ports
        .iter()
        .map(|_| Load::new(1, StdInstant::now()))
        .collect();
    let i = table
        .pick(key, &loads, &|i| !excluded.contains(&ports[i]))
        .unwrap();
    ports[i]
}

#[tokio::test(start_paused = true)]
async fn a_key_goes_to_its_tables_endpoint_and_no_key_to_the_ordinary_balancer() {
    crate::rng::seed_thread_rng(1101);
    let ports: Vec<u16> = (1..=10).collect();
    let fleet = Fleet::new(ports.clone());
    for hash in [ConsistentHash::maglev(), ConsistentHash::ring()] {
        let channel = fleet
            .builder(ports.clone())
            .keyed(hash.clone(), key)
            .build()
            .unwrap();
        for k in 0..200u32 {
            let expected = table_pick(&hash, &ports, u64::from(k), &[]);
            assert_eq!(call(&channel, k).await.unwrap(), expected, "key {k}");
            assert_eq!(call(&channel, k).await.unwrap(), expected, "key {k}");
        }
        // Without a key: round-robin, one call each per ten.
        let mut seen = vec![0; 11];
        for _ in 0..30 {
            seen[usize::from(call(&channel, 5_000).await.unwrap())] += 1;
        }
        assert!(seen[1..].iter().all(|&c| c == 3), "{seen:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_walks_to_the_next_endpoint_in_the_tables_order() {
    crate::rng::seed_thread_rng(1102);
    let ports: Vec<u16> = (1..=8).collect();
    let fleet = Fleet::new(ports.clone());
    let hash = ConsistentHash::maglev();
    let channel = fleet
        .builder(ports.clone())
        .keyed(hash.clone(), key)
        .retry(quick_retry(3))
        .build()
        .unwrap();
    for k in [3u32, 77, 500] {
        let home = table_pick(&hash, &ports, u64::from(k), &[]);
        let second = table_pick(&hash, &ports, u64::from(k), &[home]);
        let third = table_pick(&hash, &ports, u64::from(k), &[home, second]);
        fleet.set(home, failing());
        fleet.set(second, failing());
        let before: Vec<usize> = ports.iter().map(|&p| fleet.hits(p)).collect();
        assert_eq!(call(&channel, k).await.unwrap(), third);
        let hit: Vec<u16> = ports
            .iter()
            .zip(&before)
            .filter(|&(&p, &b)| fleet.hits(p) > b)
            .map(|(&p, _)| p)
            .collect();
        let mut expected = vec![home, second, third];
        expected.sort();
        assert_eq!(hit, expected, "key {k}");
        fleet.set(home, Mode::default());
        fleet.set(second, Mode::default());
    }
}

/// Forty concurrent calls with one key over ten endpoints: none takes more
/// than ⌈1.25 × the average⌉, in two waves (the in-flight total the
/// channel keeps goes back to zero in between).
#[tokio::test(start_paused = true)]
async fn bounded_loads_cap_every_endpoint_through_the_channel() {
    crate::rng::seed_thread_rng(1103);
    let ports: Vec<u16> = (1..=10).collect();
    let fleet = Fleet::new(ports.clone());
    for &p in &ports {
        fleet.set(
            p,
            Mode {
                fail: false,
                latency: 100 * MS,
            },
        );
    }
    let channel = fleet
        .builder(ports.clone())
        .keyed(ConsistentHash::maglev().bounded_load(1.25).unwrap(), key)
        .build()
        .unwrap();
    for _wave in 0..2 {
        let calls: Vec<_> = (0..40)
            .map(|_| {
                let ch = channel.clone();
                tokio::spawn(async move { call(&ch, 7).await })
            })
            .collect();
        // Every call has started (the clock does not move until they wait).
        tokio::task::yield_now().await;
        while channel.endpoints().iter().map(|e| e.in_flight).sum::<u32>() < 40 {
            tokio::task::yield_now().await;
        }
        let peak = channel.endpoints().iter().map(|e| e.in_flight).max();
        assert_eq!(peak, Some(5), "⌈1.25 × 40 / 10⌉ = 5");
        for c in calls {
            c.await.unwrap().unwrap();
        }
    }
}

/// Round-robin with slow start: an endpoint added later gets its ramped
/// share (its factor is the minimum, 0.1, while the clock stands still);
/// turning slow start off gives it its full share at once.
#[tokio::test(start_paused = true)]
async fn a_new_endpoint_ramps_up_and_slow_start_can_be_turned_off() {
    crate::rng::seed_thread_rng(1104);
    let manual = Manual::with_endpoints((1..=4).map(addr));
    let fleet = Fleet::new(1..=5);
    let channel = Channel::builder(fleet.connector())
        .discover(manual.stream())
        .balancer(RoundRobin::new())
        .slow_start(SlowStartSettings::default())
        .build()
        .unwrap();
    call(&channel, 5_000).await.unwrap();
    manual.insert(addr(5));
    while channel.endpoints().len() < 5 {
        tokio::task::yield_now().await;
    }
    let picks = 2_000;
    for _ in 0..picks {
        call(&channel, 5_000).await.unwrap();
    }
    let f = 0.1;
    let share = f / (4.0 + f);
    let sigma = crate::test_bounds::binomial_sd(picks as f64, share);
    let got = fleet.hits(5) as f64;
    assert!(
        (got - picks as f64 * share).abs() <= 5.0 * sigma,
        "{got} vs {}",
        picks as f64 * share
    );
    channel
        .policy_handle()
        .update(|p| p.with_slow_start(None))
        .unwrap();
    let before = fleet.hits(5);
    for _ in 0..500 {
        call(&channel, 5_000).await.unwrap();
    }
    assert_eq!(fleet.hits(5) - before, 100);
}

/// An endpoint back from ejection ramps up again.
#[tokio::test(start_paused = true)]
async fn an_endpoint_back_from_ejection_ramps_up() {
    crate::rng::seed_thread_rng(1105);
    let fleet = Fleet::new([1, 2, 3]);
    let open = Duration::from_secs(1);
    let channel = fleet
        .builder([1, 2, 3])
        .retry(quick_retry(3))
        .circuit_breaker(breaker(3, open, 1))
        .slow_start(SlowStartSettings::default())
        .build()
        .unwrap();
    fleet.set(3, failing());
    while fleet.hits(3) < 3 {
        call(&channel, 5_000).await.unwrap();
    }
    fleet.set(3, Mode::default());
    tokio::time::sleep(open).await;
    // The probe closes the breaker; the endpoint returns and ramps.
    while channel.endpoints().iter().any(|e| e.ejected) {
        call(&channel, 5_000).await.unwrap();
    }
    let before = fleet.hits(3);
    let picks = 600;
    for _ in 0..picks {
        call(&channel, 5_000).await.unwrap();
    }
    // Factor 0.1 (the clock stands still): about 5% of the picks, where
    // round-robin alone gives a third.
    let got = (fleet.hits(3) - before) as f64;
    let share = 0.1 / 2.1;
    let sigma = crate::test_bounds::binomial_sd(picks as f64, share);
    assert!((got - picks as f64 * share).abs() <= 5.0 * sigma, "{got}");
}
