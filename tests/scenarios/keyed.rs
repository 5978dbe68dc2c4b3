//! S7 (cold start) and S8 (hot keys): issue 11.

use std::time::Duration;

use towline::sim::Run;

use super::*;

// ---- S7: cold start (issue 11) ------------------------------------------

const S7: &str = "s7-cold-start.toml";
/// The newcomer joins at 20 s and is warm at 50 s; the steady states are
/// before it joins (after the 5 s warm-up) and after it is warm.
const JOIN: Duration = Duration::from_secs(20);
const WARM: Duration = Duration::from_secs(50);
const END: Duration = Duration::from_secs(80);

/// The 99.9% confidence interval of a run's `q`-quantile over the requests
/// arriving from `from` to `to`: the quantiles at ranks q ± 3.3 binomial
/// standard deviations, give or take the 1 ms tick.
fn quantile_interval(run: &Run, q: f64, from: Duration, to: Duration) -> (Duration, Duration) {
    let n = run.requests_between(from, to) as f64;
    let d = 3.3 * (q * (1.0 - q) / n).sqrt();
    let ms = Duration::from_millis(1);
    let low = run.latency_between(q - d, from, to).unwrap();
    let high = run.latency_between(q + d, from, to).unwrap();
    (low.saturating_sub(ms), high + ms)
}

fn warm_up_p(run: &Run, q: f64) -> Duration {
    run.latency_between(q, JOIN, WARM).unwrap()
}

/// With slow start, the steady states cost nothing: before the newcomer
/// joins nothing ramps, so every request is served exactly as without it;
/// once it is warm, p50, p99 and p99.9 lie within the 99.9% interval of
/// the same quantile before it joined.
fn assert_no_steady_state_cost(without: &Run, with: &Run) {
    let from = S * 5;
    let before = |r: &Run, q| r.latency_between(q, from, JOIN);
    for q in [0.5, 0.99, 0.999] {
        assert_eq!(before(with, q), before(without, q), "q {q} before");
        let (low, high) = quantile_interval(with, q, from, JOIN);
        let after = with.latency_between(q, WARM, END).unwrap();
        eprintln!(
            "{}: q {q} before {:?}, after {after:?} (interval {low:?} to {high:?})",
            with.config(),
            before(with, q)
        );
        assert!(low <= after && after <= high, "q {q}: {after:?}");
    }
}

#[test]
fn s7_slow_start_cuts_round_robin_p99_over_the_warm_up_threefold() {
    let (plain, tuned, default) = (
        "towline round-robin",
        "towline round-robin + slow start a=0.25",
        "towline round-robin + slow start",
    );
    let r = run(S7, &[plain, tuned, default]);
    let p99 = |c| warm_up_p(get(&r, c), 0.99);
    eprintln!(
        "p99 over the warm-up: {:?} without, {:?} with slow start (a = 0.25), {:?} with the defaults",
        p99(plain),
        p99(tuned),
        p99(default)
    );
    assert!(p99(tuned) * 3 <= p99(plain));
    assert!(p99(default) * 3 <= p99(plain));
    // Without slow start the newcomer's backlog outlasts its warm-up, so
    // only the runs with slow start have a steady state to compare.
    assert_no_steady_state_cost(get(&r, plain), get(&r, tuned));
}

/// The target for P2C, p99 over the warm-up 3× lower with slow
/// start, cannot be met here: peak-EWMA learns the newcomer's latency from
/// its first answers, so without slow start the p99 over the warm-up is
/// already within 4% of the steady state's (127 ms against 122 ms).
#[test]
#[ignore = "p99 over the warm-up without slow start is 1.04x the steady state's: no room for 3x"]
fn s7_slow_start_cuts_p2c_p99_over_the_warm_up_threefold() {
    // Measured: 127 ms without slow start, 122 ms with it (a = 0.25),
    // 125 ms with the defaults; p99.9: 3,196 ms, 203 ms, 254 ms.
    let (plain, tuned) = (
        "towline p2c peak-ewma",
        "towline p2c peak-ewma + slow start a=0.25",
    );
    let r = run(S7, &[plain, tuned]);
    let p99 = |c| warm_up_p(get(&r, c), 0.99);
    assert!(
        p99(tuned) * 3 <= p99(plain),
        "{:?} vs {:?}",
        p99(tuned),
        p99(plain)
    );
}

/// What slow start does for P2C: the newcomer gets a fraction of the
/// burst its default RTT earns it without slow start, so the tail of the
/// warm-up (p99.9) is cut at least threefold, with or without tuning.
#[test]
fn s7_slow_start_cuts_p2c_tail_over_the_warm_up_threefold() {
    let (plain, tuned, default) = (
        "towline p2c peak-ewma",
        "towline p2c peak-ewma + slow start a=0.25",
        "towline p2c peak-ewma + slow start",
    );
    let r = run(S7, &[plain, tuned, default]);
    let newcomer = 10;
    for c in [plain, tuned, default] {
        let run = get(&r, c);
        eprintln!(
            "{c}: over the warm-up p99 {:?}, p99.9 {:?}; newcomer's share of attempts in its first 10 s {:.4}",
            warm_up_p(run, 0.99),
            warm_up_p(run, 0.999),
            run.share_between(newcomer, JOIN, JOIN + S * 10)
        );
    }
    let p999 = |c| warm_up_p(get(&r, c), 0.999);
    assert!(p999(tuned) * 3 <= p999(plain));
    assert!(p999(default) * 3 <= p999(plain));
    assert_no_steady_state_cost(get(&r, plain), get(&r, tuned));
    assert_no_steady_state_cost(get(&r, plain), get(&r, default));
}

// ---- S8: hot keys (issue 11) ----------------------------------------------

const S8: &str = "s8-hot-keys.toml";
const MAGLEV: &str = "towline maglev";
const BOUNDED: &str = "towline maglev + bounded loads 1.25";

#[test]
fn s8_bounded_loads_never_exceed_the_bound_and_cut_p99_twofold() {
    let r = run(S8, &[MAGLEV, BOUNDED]);
    let servers = 10;
    for c in [MAGLEV, BOUNDED] {
        let run = get(&r, c);
        let peaks: Vec<u32> = (0..servers).map(|b| run.peak_in_flight(b)).collect();
        eprintln!(
            "{c}: peak in flight per server {peaks:?}; most over ⌈1.25 × average⌉ at an arrival: {}; p99 {:?}; home share {:.4}",
            run.in_flight_over_bound(1.25, servers),
            run.latency(0.99),
            run.home_share().unwrap()
        );
    }
    let bounded = get(&r, BOUNDED);
    assert!(bounded.in_flight_over_bound(1.25, servers) <= 0);
    // The check can fail: plain Maglev's hottest server goes far over it.
    assert!(get(&r, MAGLEV).in_flight_over_bound(1.25, servers) > 0);
    let p99 = |c| get(&r, c).latency(0.99).unwrap();
    assert!(p99(BOUNDED) * 2 <= p99(MAGLEV));
    assert_eq!(get(&r, MAGLEV).home_share(), Some(1.0));
}

/// The share of requests that reach their key's home depends on where the
/// hottest keys land, which the seed decides: over eight seeds (eight key
/// layouts), it is at least 80% on average, and above 75% for each.
#[test]
fn s8_most_requests_reach_their_keys_home() {
    let s = scenario(S8).retain_configs(|c| c == BOUNDED);
    let shares: Vec<f64> = (1..=8)
        .map(|seed| {
            let r = s.clone().with_seed(seed).run().unwrap();
            get(&r, BOUNDED).home_share().unwrap()
        })
        .collect();
    let mean = shares.iter().sum::<f64>() / shares.len() as f64;
    eprintln!("home share by seed: {shares:.4?}, mean {mean:.4}");
    assert!(mean >= 0.80, "{mean}");
    assert!(shares.iter().all(|&s| s >= 0.75), "{shares:?}");
}
