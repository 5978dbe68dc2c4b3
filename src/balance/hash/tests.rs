//! Distribution, remapping, walk and bounded-load tests of both tables.

use std::net::{Ipv4Addr, SocketAddr};

use super::super::test_util::{all, loads};
use super::*;
use crate::balance::Load;
use crate::rng::Rng;

fn addrs(n: usize) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| {
            let ip = Ipv4Addr::new(10, (i / 250) as u8, (i % 250) as u8, 1);
            SocketAddr::from((ip, 8_000 + (i % 7) as u16))
        })
        .collect()
}

fn equal(addrs: &[SocketAddr]) -> impl Iterator<Item = (SocketAddr, u32)> + '_ {
    addrs.iter().map(|&a| (a, 1))
}

const KEYS: usize = 1_000_000;

fn keys(seed: u64) -> impl Iterator<Item = u64> {
    let mut rng = Rng::seeded(seed);
    (0..KEYS).map(move |_| rng.next_u64())
}

/// The address each key's home is, for a table built over `addrs`.
fn homes(hash: &ConsistentHash, addrs: &[SocketAddr], seed: u64) -> Vec<SocketAddr> {
    keys(seed).map(|k| addrs[hash.home(k).unwrap()]).collect()
}

/// `z` standard deviations of a binomial count: the bound of every sampled
/// share test here. With z = 5 and at most a few hundred tests of a fixed
/// seed, a correct table fails with odds below 10⁻⁴.
fn binomial_slack(trials: usize, p: f64) -> f64 {
    5.0 * (trials as f64 * p * (1.0 - p)).sqrt()
}

fn sampled_counts(hash: &ConsistentHash, seed: u64) -> Vec<f64> {
    let mut counts = vec![0.0; hash.len()];
    for k in keys(seed) {
        counts[hash.home(k).unwrap()] += 1.0;
    }
    counts
}

/// Removing endpoint `gone` moves exactly its keys plus `moved_others` of
/// the rest; adding it back (in another input order) restores every key.
/// Returns (share of keys that were on `gone`, share of the others moved).
fn remove_and_restore(proto: &ConsistentHash, n: usize, gone: usize) -> (f64, f64) {
    let full = addrs(n);
    let before = homes(&proto.rebuild(equal(&full)), &full, 5);
    let mut fewer = full.clone();
    fewer.remove(gone);
    let after = homes(&proto.rebuild(equal(&fewer)), &fewer, 5);
    let (mut own, mut others_moved) = (0usize, 0usize);
    for (b, a) in before.iter().zip(&after) {
        if *b == full[gone] {
            own += 1;
        } else if a != b {
            others_moved += 1;
        }
    }
    let mut reversed = full.clone();
    reversed.reverse();
    let back = homes(&proto.rebuild(equal(&reversed)), &reversed, 5);
    assert_eq!(
        back, before,
        "adding the endpoint back did not restore keys"
    );
    (
        own as f64 / KEYS as f64,
        others_moved as f64 / (KEYS - own) as f64,
    )
}

#[test]
fn maglev_equal_weights_share_within_two_percent() {
    let hash = ConsistentHash::maglev().rebuild(equal(&addrs(100)));
    let shares = hash.shares();
    let mean = 1.0 / 100.0;
    for (i, s) in shares.iter().enumerate() {
        assert!((0.98..=1.02).contains(&(s / mean)), "{i}: {}", s / mean);
    }
    // Keys follow the table: each count within 5σ of its exact share.
    for (i, c) in sampled_counts(&hash, 1).iter().enumerate() {
        let expected = KEYS as f64 * shares[i];
        assert!(
            (c - expected).abs() <= binomial_slack(KEYS, shares[i]),
            "{i}"
        );
    }
}

#[test]
fn maglev_removal_moves_little_and_adding_back_restores() {
    let (own, others) = remove_and_restore(&ConsistentHash::maglev(), 100, 37);
    // Its own keys: its exact share of the table, sampled.
    let share = ConsistentHash::maglev()
        .rebuild(equal(&addrs(100)))
        .shares()[37];
    let slack = binomial_slack(KEYS, share) / KEYS as f64;
    assert!((own - share).abs() <= slack, "own {own} vs {share}");
    assert!(
        others <= 0.005,
        "moved {:.3}% of the other keys",
        others * 100.0
    );
}

#[test]
fn ring_default_balance_and_minimal_remapping() {
    let hash = ConsistentHash::ring().rebuild(equal(&addrs(100)));
    let shares = hash.shares();
    let max = shares.iter().cloned().fold(0.0, f64::max);
    assert!(max / 0.01 <= 1.25, "max/mean {}", max / 0.01);
    for (i, c) in sampled_counts(&hash, 2).iter().enumerate() {
        let expected = KEYS as f64 * shares[i];
        assert!(
            (c - expected).abs() <= binomial_slack(KEYS, shares[i]),
            "{i}"
        );
    }
    // On a ring no other key moves at all: the removed points' arcs go to
    // their successors and every other arc stays.
    let (own, others) = remove_and_restore(&ConsistentHash::ring(), 100, 37);
    let slack = binomial_slack(KEYS, shares[37]) / KEYS as f64;
    assert!((own - shares[37]).abs() <= slack, "own {own}");
    assert_eq!(others, 0.0);
}

fn weighted(n: usize) -> Vec<(SocketAddr, u32)> {
    addrs(n)
        .into_iter()
        .enumerate()
        .map(|(i, a)| (a, 1 + (i % 10) as u32))
        .collect()
}

#[test]
fn maglev_weighted_shares_within_two_entries() {
    let eps = weighted(50);
    let size = ConsistentHash::DEFAULT_TABLE_SIZE as f64;
    let hash = ConsistentHash::maglev().rebuild(eps.iter().copied());
    let total: u32 = eps.iter().map(|e| e.1).sum();
    for (i, s) in hash.shares().iter().enumerate() {
        let exact = size * f64::from(eps[i].1) / f64::from(total);
        // Turns by earliest deadline (Sainte-Laguë) keep each count within
        // about one entry of its quota.
        assert!(
            (s * size - exact).abs() <= 2.0,
            "{i}: {} vs {exact}",
            s * size
        );
    }
}

#[test]
fn ring_weighted_shares_within_the_spread_of_their_points() {
    // Under the cap (k points per unit of weight) and over it (shares of
    // the cap).
    let capped = ConsistentHash::ring_with_points(512, 20_000).unwrap();
    for (proto, n) in [(ConsistentHash::ring(), 20), (capped, 50)] {
        let eps = weighted(n);
        let hash = proto.rebuild(eps.iter().copied());
        let total: u32 = eps.iter().map(|e| e.1).sum();
        let mut points = vec![0.0f64; n];
        (0..hash.table_len()).for_each(|s| points[hash.built.table.owner(s)] += 1.0);
        let table = hash.table_len() as f64;
        for (i, s) in hash.shares().iter().enumerate() {
            let w = f64::from(eps[i].1);
            let expected = w / f64::from(total);
            // v points own v/R of the ring on average, with a relative
            // spread of 1/√v: allow 5 spreads, plus the rounding of v.
            let v = points[i];
            let rounding = (v / table / expected - 1.0).abs();
            let tolerance = 5.0 / v.sqrt() + rounding;
            assert!(
                (s / expected - 1.0).abs() <= tolerance,
                "{n}/{i}: {s} vs {expected}"
            );
        }
    }
}

#[test]
fn same_key_and_set_give_the_same_endpoint_whatever_the_order() {
    for proto in [ConsistentHash::ring(), ConsistentHash::maglev()] {
        let eps = weighted(30);
        let a = proto.rebuild(eps.iter().copied());
        let mut shuffled = eps.clone();
        let mut rng = Rng::seeded(3);
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, rng.below(i + 1));
        }
        let b = proto.rebuild(shuffled.iter().copied());
        let set = loads(eps.len());
        for key in keys(4).take(20_000) {
            let x = eps[a.pick(key, &set, &all).unwrap()].0;
            let y = shuffled[b.pick(key, &set, &all).unwrap()].0;
            assert_eq!(x, y, "{} key {key}", proto.name());
        }
    }
}

/// The reference walk: every entry from the key's home on, then the whole
/// set by rendezvous score, first occurrences only; and how many of them
/// the walk itself reached.
fn reference_order(hash: &ConsistentHash, key: u64) -> (Vec<usize>, usize) {
    fn push(order: &mut Vec<usize>, i: usize) {
        if !order.contains(&i) {
            order.push(i);
        }
    }
    let p = mix::key_position(key);
    let mut order = Vec::new();
    if let Some(s) = hash.start(p) {
        let len = hash.table_len();
        for k in 0..len.min(ConsistentHash::WALK_LIMIT) {
            push(&mut order, hash.built.table.owner((s + k) % len));
        }
    }
    let walked = order.len();
    let mut rest: Vec<usize> = (0..hash.len()).collect();
    rest.sort_by_key(|&i| std::cmp::Reverse(mix::rendezvous(p, hash.built.ids[i])));
    rest.into_iter().for_each(|i| push(&mut order, i));
    (order, walked)
}

#[test]
fn retries_walk_to_the_next_distinct_endpoint_in_order() {
    for proto in [ConsistentHash::ring(), ConsistentHash::maglev()] {
        let n = 20;
        let hash = proto.rebuild(equal(&addrs(n)));
        let set = loads(n);
        for key in keys(6).take(200) {
            let mut tried: Vec<usize> = Vec::new();
            for _ in 0..n {
                let next = hash.pick(key, &set, &|i| !tried.contains(&i)).unwrap();
                tried.push(next);
            }
            assert_eq!(tried, reference_order(&hash, key).0, "{}", proto.name());
            assert_eq!(hash.pick(key, &set, &|i| !tried.contains(&i)), None);
        }
    }
}

#[test]
fn bounded_pick_never_exceeds_the_bound_while_one_is_under_it() {
    let mut rng = Rng::seeded(8);
    let now = std::time::Instant::now();
    // How often each path was taken: the walk, the fallback past it, and
    // no eligible endpoint under its bound.
    let (mut walk, mut past, mut over) = (0, 0, 0);
    for case in 0..400 {
        // Up to 120 endpoints, so that 64 entries do not always reach them
        // all.
        let n = 1 + rng.below(120);
        let eps: Vec<(SocketAddr, u32)> = addrs(n)
            .into_iter()
            .map(|a| (a, rng.below(4) as u32))
            .collect();
        let c = 1.0 + (1 + rng.below(1_000)) as f64 / 1_000.0;
        let proto = if case % 2 == 0 {
            ConsistentHash::ring_with_points(1 + rng.below(20) as u32, 1 + rng.below(2_000))
                .unwrap()
        } else {
            ConsistentHash::maglev_with_table_size(1_021).unwrap()
        };
        let hash = proto.bounded_load(c).unwrap().rebuild(eps.iter().copied());
        let set: Vec<Load> = eps.iter().map(|&(_, w)| Load::new(w, now)).collect();
        for l in &set {
            (0..rng.below(12)).for_each(|_| l.start());
        }
        let in_flight: u64 = set.iter().map(|l| u64::from(l.pending())).sum();
        // Light to heavy exclusion: 75%, 10% or 2% eligible.
        let percent = [75, 10, 2][case % 3];
        let mask: Vec<bool> = (0..n).map(|_| rng.below(100) < percent).collect();
        let eligible = |i: usize| mask[i];
        let under = |i: usize| {
            let limit = hash.load_limit(i, in_flight).unwrap();
            // One more request fits: pending + 1 ≤ limit.
            u64::from(set[i].pending()) < limit
        };
        for _ in 0..20 {
            let key = rng.next_u64();
            let got = hash.pick(key, &set, &eligible);
            let (order, walked) = reference_order(&hash, key);
            let expected = order
                .iter()
                .copied()
                .find(|&i| eligible(i) && under(i))
                .or_else(|| order.iter().copied().find(|&i| eligible(i)));
            assert_eq!(got, expected, "case {case}, key {key}");
            if let Some(i) = got {
                assert!(eligible(i));
                let any_under = (0..n).any(|j| eligible(j) && under(j));
                assert!(under(i) || !any_under, "case {case}: {i} over its bound");
                let at = order.iter().position(|&j| j == i).unwrap();
                match (under(i), at < walked) {
                    (false, _) => over += 1,
                    (true, true) => walk += 1,
                    (true, false) => past += 1,
                }
            }
            assert_eq!(
                hash.pick_with_in_flight(key, &set, &eligible, in_flight),
                got
            );
        }
    }
    assert!(walk > 0 && past > 0 && over > 0, "{walk} {past} {over}");
}

#[test]
fn tables_are_shared_across_threads() {
    fn send_sync<T: Send + Sync + Clone + fmt::Debug>() {}
    send_sync::<ConsistentHash>();
    let debug = format!("{:?}", ConsistentHash::maglev().rebuild(equal(&addrs(3))));
    assert!(debug.contains("entries: 65537"), "{debug}");
}

#[test]
fn zero_weights_are_skipped_unless_only_they_are_eligible() {
    for proto in [ConsistentHash::ring(), ConsistentHash::maglev()] {
        let a = addrs(3);
        let hash = proto.rebuild([(a[0], 0), (a[1], 2), (a[2], 0)]);
        let set = loads(3);
        for key in keys(9).take(1_000) {
            assert_eq!(hash.pick(key, &set, &all), Some(1));
            let i = hash.pick(key, &set, &|i| i != 1).unwrap();
            assert!(i == 0 || i == 2);
        }
        // All zero: as if all were equal.
        let hash = proto.rebuild([(a[0], 0), (a[1], 0)]);
        let shares = hash.shares();
        assert!(
            shares.iter().all(|&s| (0.4..0.6).contains(&s)),
            "{shares:?}"
        );
    }
}

#[test]
fn empty_excluded_and_mismatched_sets() {
    for proto in [ConsistentHash::ring(), ConsistentHash::maglev()] {
        assert_eq!(proto.pick(1, &loads(0), &all), None);
        assert_eq!(proto.home(1), None);
        let empty = proto.rebuild([]);
        assert_eq!(empty.pick(1, &loads(0), &all), None);
        let hash = proto.rebuild(equal(&addrs(5)));
        assert_eq!(hash.pick(1, &loads(5), &|_| false), None);
        assert_eq!(hash.pick(1, &loads(5), &|i| i == 3), Some(3));
        // Built for 5, asked about 8: still an eligible index, no panic.
        for key in 0..100 {
            let i = hash.pick(key, &loads(8), &|i| i >= 5).unwrap();
            assert!((5..8).contains(&i));
        }
    }
}

#[test]
fn settings_are_validated() {
    let err = |r: Result<ConsistentHash, crate::BuildError>| r.unwrap_err().setting();
    assert_eq!(
        err(ConsistentHash::maglev_with_table_size(65_535)),
        "hash.table_size"
    );
    assert_eq!(
        err(ConsistentHash::maglev_with_table_size(1_019)),
        "hash.table_size"
    );
    assert_eq!(
        err(ConsistentHash::maglev_with_table_size(16_777_259)),
        "hash.table_size"
    );
    assert!(ConsistentHash::maglev_with_table_size(1_021).is_ok());
    assert_eq!(
        err(ConsistentHash::ring_with_points(0, 10)),
        "hash.points_per_weight"
    );
    assert_eq!(
        err(ConsistentHash::ring_with_points(70_000, 10)),
        "hash.points_per_weight"
    );
    assert_eq!(
        err(ConsistentHash::ring_with_points(8, 0)),
        "hash.max_ring_points"
    );
    assert_eq!(
        err(ConsistentHash::ring_with_points(8, 1 << 24)),
        "hash.max_ring_points"
    );
    assert_eq!(
        err(ConsistentHash::ring().bounded_load(1.0)),
        "hash.bounded_load"
    );
    let h = ConsistentHash::maglev().bounded_load(1.25).unwrap();
    assert_eq!(h.bounded_factor(), Some(1.25));
    assert_eq!(h.rebuild(equal(&addrs(2))).table_len(), 65_537);
}

/// A table seen through a remap while its successor is built: keys stay
/// on endpoints that stay; on a ring, a removed endpoint's keys go exactly
/// where the new table sends them; picks are always eligible, and new
/// endpoints are reached when nothing else is eligible.
#[test]
fn a_remapped_table_keeps_keys_and_picks_eligibly() {
    let n = 40;
    let full = addrs(n + 3);
    let mut current: Vec<SocketAddr> = full[..n].to_vec();
    let mut tracker = Tracker::new(n);
    // Remove three (swap-removal, as the channel does), insert two new.
    for i in [5, 17, 0] {
        current.swap_remove(i);
        tracker.removed(i);
    }
    for a in &full[n..n + 2] {
        current.push(*a);
        tracker.inserted();
    }
    let remap = Arc::new(tracker.remap());
    let set = loads(current.len());
    for proto in [ConsistentHash::ring(), ConsistentHash::maglev()] {
        let old = proto.rebuild(equal(&full[..n]));
        let stale = old.remapped(remap.clone());
        let fresh_without_new = proto.rebuild(equal(&current[..current.len() - 2]));
        for key in keys(11).take(20_000) {
            let got = current[stale.pick(key, &set, &all).unwrap()];
            let home = full[old.home(key).unwrap()];
            if current.contains(&home) {
                assert_eq!(got, home, "{} kept key {key}", proto.name());
            } else if proto.name() == "ring_hash" {
                let fresh = current[fresh_without_new.home(key).unwrap()];
                assert_eq!(got, fresh, "ring moved key {key}");
            }
            // Only the new endpoints are eligible: one of them.
            let new = |i: usize| i >= current.len() - 2;
            let i = stale.pick(key, &set, &new).unwrap();
            assert!(new(i));
            assert_eq!(stale.pick(key, &set, &|_| false), None);
        }
    }
}

#[test]
fn the_minimum_ring_size_applies_to_small_sets_only() {
    let a = addrs(3);
    assert_eq!(
        ConsistentHash::ring().rebuild(equal(&a[..1])).table_len(),
        1_024
    );
    assert_eq!(
        ConsistentHash::ring().rebuild(equal(&a[..2])).table_len(),
        1_024
    );
    assert_eq!(ConsistentHash::ring().rebuild(equal(&a)).table_len(), 1_536);
    let big = ConsistentHash::ring().min_ring_points(4_096).unwrap();
    let ring = big.rebuild(equal(&a));
    assert_eq!(ring.table_len(), 4_095);
    assert!(ring.shares().iter().all(|s| (s - 1.0 / 3.0).abs() < 0.05));
    for bad in [0, ConsistentHash::DEFAULT_MAX_RING_POINTS + 1] {
        let e = ConsistentHash::ring().min_ring_points(bad).unwrap_err();
        assert_eq!(e.setting(), "hash.min_ring_points");
    }
    assert!(ConsistentHash::maglev().min_ring_points(10).is_err());
}
