//! S9 (deterministic aperture) and S10 (overload): issue 12.

use std::time::Duration;

use towline::sim::Run;

use super::*;

// ---- S9: deterministic aperture (issue 12) --------------------------------

const S9: &str = "s9-aperture.toml";
/// Clients, servers, aperture; the server that leaves and when.
const K7: usize = 100;
const N7: usize = 300;
const D7: usize = 12;
const LEAVING: usize = 150;
const LEAVES: Duration = Duration::from_secs(18);
/// The windows measured before and after it leaves.
const BEFORE: (Duration, Duration) = (Duration::from_secs(3), LEAVES);
const AFTER: (Duration, Duration) = (Duration::from_secs(19), Duration::from_secs(36));

/// S9 is the costliest scenario (100 channels, 4.5 million requests): run
/// once, shared by its tests.
fn s7() -> &'static Report {
    static REPORT: std::sync::OnceLock<Report> = std::sync::OnceLock::new();
    REPORT.get_or_init(|| {
        let s = scenario(S9);
        let report = s.run().unwrap();
        eprintln!("{}", report.table());
        report
    })
}

/// Coefficient of variation (population standard deviation over mean).
fn cov(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    var.sqrt() / mean
}

/// The per-server load in a window: attempts on each server listed then
/// (the one that left is out of the window after it left), its CoV, and
/// the CoV that sampling alone gives with that many attempts per server
/// (Poisson counts: 1 / √mean).
fn load(run: &Run, (from, to): (Duration, Duration)) -> (Vec<f64>, f64, f64) {
    let attempts = run.attempts_between(from, to);
    let listed: Vec<f64> = attempts
        .iter()
        .enumerate()
        .filter(|&(i, _)| !(i == LEAVING && from >= LEAVES))
        .map(|(_, &a)| a as f64)
        .collect();
    let mean = listed.iter().sum::<f64>() / listed.len() as f64;
    let c = cov(&listed);
    (listed, c, 1.0 / mean.sqrt())
}

/// Clients per server and servers per client at `t`.
fn connections(run: &Run, t: Duration) -> (Vec<usize>, Vec<usize>) {
    let sets = run.subsets_at(t);
    let mut clients = vec![0; N7];
    for b in sets.iter().flatten() {
        clients[*b] += 1;
    }
    if t >= LEAVES {
        clients.remove(LEAVING);
    }
    (clients, sets.iter().map(|s| s.len()).collect())
}

#[test]
fn s9_aperture_spreads_load_evenly_and_random_subsets_do_not() {
    let r = s7();
    for (config, window) in [
        ("aperture, p2c pending", BEFORE),
        ("aperture, p2c pending", AFTER),
        ("aperture, weighted random", BEFORE),
        ("full mesh, p2c pending", BEFORE),
        ("random subsets, p2c pending", BEFORE),
    ] {
        let (_, c, noise) = load(get(r, config), window);
        eprintln!("{config}, {window:?}: load CoV {c:.4} (sampling alone: {noise:.4})");
        if config.starts_with("random") {
            // Clients per server are Binomial(K, d/N): a few servers get
            // none, some ten; load-aware picks narrow it, not away.
            assert!(c > 5.0 * noise, "{config}: {c}");
        } else {
            assert!(c <= 0.05, "{config}, {window:?}: {c}");
        }
    }
}

#[test]
fn s9_every_server_has_its_share_of_clients_and_each_client_few_connections() {
    let r = s7();
    let run = get(r, "aperture, p2c pending");
    for (t, n) in [(LEAVES - S, N7), (AFTER.1 - S, N7 - 1)] {
        let (clients, conns) = connections(run, t);
        let (lo, hi) = (K7 * D7 / n, (K7 * D7).div_ceil(n) + 1);
        let (min, max) = (clients.iter().min(), clients.iter().max());
        eprintln!(
            "aperture at {t:?}: {min:?}..{max:?} clients per server (bounds {lo}..{hi}), \
             at most {:?} connections per client",
            conns.iter().max()
        );
        assert!(clients.iter().all(|c| (lo..=hi).contains(c)), "{clients:?}");
        assert!(conns.iter().all(|&c| c <= D7 + 2), "{conns:?}");
    }
    let (clients, conns) = connections(get(r, "random subsets, p2c pending"), LEAVES - S);
    eprintln!(
        "random subsets: {:?}..{:?} clients per server, {:?} connections per client",
        clients.iter().min(),
        clients.iter().max(),
        conns.iter().max()
    );
    assert!(
        clients.contains(&0),
        "random subsets leave some server idle"
    );
    let (clients, conns) = connections(get(r, "full mesh, p2c pending"), LEAVES - S);
    assert!(clients.iter().all(|&c| c == K7) && conns.iter().all(|&c| c == N7));
}

/// When server 150 leaves, each client's subset changes by at most 2
/// servers, the removed one counted; the load stays even after.
#[test]
fn s9_a_server_leaving_changes_each_subset_by_at_most_two() {
    let r = s7();
    let run = get(r, "aperture, p2c pending");
    let changes = run.subset_changes();
    assert!(!changes.is_empty(), "no client saw the server leave");
    let mut by_client = std::collections::BTreeMap::new();
    for c in changes {
        assert!(
            c.at >= LEAVES && c.at <= LEAVES + S,
            "a change at {:?}: {c:?}",
            c.at
        );
        let e = by_client.entry(c.client).or_insert((false, 0, 0));
        e.0 |= c.dropped.contains(&LEAVING);
        e.1 += c.added.len();
        e.2 += c.dropped.iter().filter(|&&b| b != LEAVING).count();
    }
    let holders = by_client.values().filter(|c| c.0).count();
    let worst = by_client
        .values()
        .map(|&(lost, added, dropped)| usize::from(lost) + added + dropped)
        .max()
        .unwrap();
    let apart: Vec<(usize, usize)> = by_client.values().map(|c| (c.1, c.2)).collect();
    eprintln!(
        "{} clients changed ({holders} held the server that left); at most {worst} servers \
         changed in a subset, the removed one counted; (added, dropped) apart from it: {apart:?}",
        by_client.len()
    );
    assert!(worst <= 2, "{by_client:?}");
    let (_, c, noise) = load(run, AFTER);
    eprintln!("load CoV after it left: {c:.4} (sampling alone: {noise:.4})");
    assert!(c <= 0.05, "{c}");
}

/// The weights of partly covered servers are honoured: the servers that
/// two clients cover by halves (index 1 mod 3 here) get the load of those
/// that four clients cover wholly. Weighted random draws exactly by weight:
/// within 4 standard deviations of the sampling noise. P2C draws its
/// candidates by weight, then its load comparison shifts a few percent
/// toward the servers a client has fewer calls on: within 5%.
#[test]
fn s9_partly_covered_servers_get_their_share() {
    let r = s7();
    for config in [
        "aperture, weighted random",
        "aperture, p2c pending",
        "aperture, p2c peak-ewma",
    ] {
        let (load, ..) = load(get(r, config), BEFORE);
        let sum = |class: usize| (class..N7).step_by(3).map(|i| load[i]).sum::<f64>();
        let (halves, others) = (sum(1), sum(0) + sum(2));
        let ratio = halves / (others / 2.0);
        let sigma = (1.0 / halves + 1.0 / others).sqrt();
        let bound = if config.ends_with("weighted random") {
            4.0 * sigma
        } else {
            0.05
        };
        eprintln!(
            "{config}: the half-covered servers' load over the others' {ratio:.4} (bound 1 ± {bound:.4})"
        );
        assert!((ratio - 1.0).abs() <= bound, "{config}: {ratio}");
    }
}

/// The default balancer's own unevenness, for the record: P2C peak-EWMA
/// spreads load less evenly than over pending requests (each client holds
/// a slow answer's peak for seconds), with or without subsetting.
#[test]
fn s9_peak_ewma_unevenness_is_the_balancers_own() {
    let r = s7();
    let (_, aperture, noise) = load(get(r, "aperture, p2c peak-ewma"), BEFORE);
    let (_, mesh, _) = load(get(r, "full mesh, p2c peak-ewma"), BEFORE);
    let (_, pending, _) = load(get(r, "full mesh, p2c pending"), BEFORE);
    eprintln!(
        "p2c peak-ewma load CoV: aperture {aperture:.4}, full mesh {mesh:.4}; \
         full mesh over pending {pending:.4}; sampling alone {noise:.4}"
    );
    assert!(mesh > pending, "peak-EWMA is the less even balancer");
}

// ---- S10: overload and adaptive concurrency limits (issue 12) ---------------

const S10: &str = "s10-overload.toml";
/// The backends' capacity, requests per second.
const CAPACITY: f64 = 2000.0;
/// At 0.5× and at 2× the capacity; when load is back at 0.5×.
const UNLOADED: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(5));
const OVERLOADED: (Duration, Duration) = (Duration::from_secs(12), Duration::from_secs(20));
const FALLS: Duration = Duration::from_secs(21);

/// One configuration's figures: goodput at 2× (share of capacity), the p99
/// of the calls sent at 0.5× and at 2×, the calls refused at 2×, and how
/// long after the load fell the p99 of every 1 s window stays within
/// 1.5 × the unloaded p99 (`None`: not before the run ends).
fn overload(run: &Run) -> (f64, Duration, Duration, u64, Option<Duration>) {
    let p99 = |(from, to)| run.sent_latency_between(0.99, from, to).unwrap();
    let unloaded = p99(UNLOADED);
    let goodput = run.goodput_between(OVERLOADED.0, OVERLOADED.1) / CAPACITY;
    let refused = run.refused_by_limit_between(OVERLOADED.0, OVERLOADED.1);
    let settled = run
        .settled_at(FALLS, S, 0.99, unloaded * 3 / 2)
        .map(|t| t - FALLS);
    eprintln!(
        "{}: goodput {:.1}% of capacity at 2x, p99 {:?} (unloaded {unloaded:?}), {refused} of {} \
         refused at 2x, back within 1.5x the unloaded p99 {settled:?} after the load fell",
        run.config(),
        100.0 * goodput,
        p99(OVERLOADED),
        run.requests_between(OVERLOADED.0, OVERLOADED.1),
    );
    (goodput, unloaded, p99(OVERLOADED), refused, settled)
}

#[test]
fn s10_the_adaptive_limit_keeps_goodput_and_latency_through_overload() {
    let r = run(S10, &["adaptive limit"]);
    let (goodput, unloaded, loaded, refused, settled) = overload(get(&r, "adaptive limit"));
    assert!(goodput >= 0.9, "goodput {goodput}");
    assert!(loaded <= unloaded * 3, "p99 {loaded:?} vs {unloaded:?}");
    assert!(refused > 0, "the excess was refused");
    assert!(settled.is_some_and(|t| t <= 5 * S), "{settled:?}");
}

/// For contrast: without a limit the queues grow until every call runs out
/// of budget, and the backlog of abandoned work outlasts the run; tower's
/// balancer (no limit either) the same.
#[test]
fn s10_without_a_limit_goodput_collapses_and_does_not_recover() {
    let r = run(S10, &["no limit", "tower PeakEwma"]);
    for config in ["no limit", "tower PeakEwma"] {
        let (goodput, _, loaded, refused, settled) = overload(get(&r, config));
        assert!(goodput < 0.1, "{config}: {goodput}");
        assert_eq!(loaded, S, "{config}: calls ran out of their 1 s budget");
        assert_eq!((refused, settled), (0, None), "{config}");
    }
}

/// Fixed limits, for comparison: one near what the servers take holds up;
/// one four times looser keeps goodput but lets queues triple latency.
#[test]
fn s10_a_fixed_limit_works_only_where_it_was_tuned() {
    let r = run(
        S10,
        &["fixed limit 25", "fixed limit 100", "adaptive limit, aimd"],
    );
    let (goodput, unloaded, loaded, ..) = overload(get(&r, "fixed limit 25"));
    assert!(goodput >= 0.9 && loaded <= unloaded * 3);
    let (goodput, unloaded, loaded, ..) = overload(get(&r, "fixed limit 100"));
    assert!(goodput >= 0.9 && loaded > unloaded * 3, "{loaded:?}");
    // AIMD backs off on drops and 1 s calls only: it keeps queues as long
    // as its threshold allows.
    let (_, unloaded, loaded, ..) = overload(get(&r, "adaptive limit, aimd"));
    assert!(loaded > unloaded * 3, "{loaded:?}");
}
