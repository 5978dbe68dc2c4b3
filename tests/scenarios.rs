//! The decision-quality targets of issue 9, asserted on the simulator's
//! scenarios (`scenarios/*.toml`): the real channel on tokio's paused
//! clock, tower's balancers as baselines, every generator seeded, so each
//! run is deterministic and no wall-clock time is involved.
//!
//! Targets that current main does not meet yet are `#[ignore]`d with the
//! measured value in a comment; they are expected to pass once the load
//! signal sees attempts that end without a response and failures (issue 9).
//!
//! Statistical bounds are computed from the number of requests measured.

use std::time::Duration;

use towline::sim::{Report, Run, Scenario};

fn scenario(file: &str) -> Scenario {
    let path = format!("{}/scenarios/{file}", env!("CARGO_MANIFEST_DIR"));
    Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs only the named configurations of a scenario file.
fn run(file: &str, configs: &[&str]) -> Report {
    let s = scenario(file).retain_configs(|c| configs.contains(&c));
    assert_eq!(
        s.configs().len(),
        configs.len(),
        "unknown configuration in {configs:?}"
    );
    let report = s.run().unwrap();
    eprintln!("{}", report.table());
    report
}

fn get<'a>(report: &'a Report, config: &str) -> &'a Run {
    report.run(config).unwrap()
}

const S: Duration = Duration::from_secs(1);

/// Three and a half binomial standard deviations of a success share
/// measured over `n` requests.
fn share_bound(p: f64, n: u64) -> f64 {
    3.5 * (p * (1.0 - p) / n as f64).sqrt()
}

// ---- S1: slow server ----------------------------------------------------

const S1: &str = "s1-slow-server.toml";

/// The harness reproduces the issue's measurements of current main.
#[test]
fn s1_reproduces_the_issue_baseline() {
    let r = run(
        S1,
        &[
            "towline p2c peak-ewma",
            "towline round-robin",
            "towline p2c + deadline 1s",
            "tower PeakEwma",
        ],
    );
    for (config, published) in [
        ("towline p2c peak-ewma", 0.955),
        ("towline round-robin", 0.954),
        ("towline p2c + deadline 1s", 0.955),
        ("tower PeakEwma", 0.998),
    ] {
        let run = get(&r, config);
        let bound = share_bound(published, run.requests()) + 0.0005; // published to 0.1%
        assert!(
            (run.success_rate() - published).abs() <= bound,
            "{config}: {} vs the issue's {published} (± {bound})",
            run.success_rate()
        );
    }
}

#[test]
#[ignore = "needs the load-signal change (issue 9)"]
fn s1_default_p2c_answers_999_within_budget() {
    // Current main: 95.533%.
    let r = run(S1, &["towline p2c peak-ewma"]);
    let rate = get(&r, "towline p2c peak-ewma").success_rate();
    assert!(rate >= 0.999, "{rate}");
}

#[test]
fn s1_retry_breaker_and_attempt_timeout_answer_9995_within_budget() {
    let config = "towline p2c + retry, breaker, 500ms timeout";
    let r = run(S1, &[config]);
    let rate = get(&r, config).success_rate();
    assert!(rate >= 0.9995, "{rate}");
}

#[test]
#[ignore = "needs the load-signal change (issue 9)"]
fn s1_slow_server_share_drops_below_1_percent_within_1s() {
    // Current main: 9.1% over 16 s to 45 s (its share grows as its
    // unobserved estimate decays).
    let r = run(S1, &["towline p2c peak-ewma"]);
    let share = get(&r, "towline p2c peak-ewma").share_between(10, 16 * S, 45 * S);
    eprintln!("slow backend's share of attempts from 16 s to 45 s: {share:.4}");
    assert!(share < 0.01, "{share}");
}

// ---- S2: power of two choices -------------------------------------------

/// The supermarket model's figures, a check of the harness itself: mean
/// time in system over mean service, within ±3% of 2.614 for P2C over
/// pending requests and of 10.0 for random.
#[test]
fn s2_matches_the_supermarket_model() {
    let r = run(
        "s2-power-of-two.toml",
        &["towline p2c pending", "towline random"],
    );
    let mean_service = 0.1;
    for (config, expected) in [("towline p2c pending", 2.614), ("towline random", 10.0)] {
        let (mean, error) = get(&r, config).mean_latency_with_error(20).unwrap();
        let ratio = mean.as_secs_f64() / mean_service;
        let stderr = error.as_secs_f64() / mean_service;
        eprintln!("{config}: {ratio:.3} ± {stderr:.3} (batch means) vs {expected}");
        // The run is long enough for ±3% to be at least two standard
        // errors; otherwise a pass would be luck.
        assert!(
            2.0 * stderr <= 0.03 * expected,
            "{config}: run too short ({stderr})"
        );
        assert!(
            (ratio / expected - 1.0).abs() <= 0.03,
            "{config}: {ratio} vs {expected}"
        );
    }
}

// ---- S3: hedged requests ------------------------------------------------

const S3: &str = "s3-hedged-requests.toml";

/// The backends' latency mixture has the published percentiles: each lies
/// within the 99.9% confidence interval of the measured quantile (ranks
/// q ± 3.3 binomial standard deviations), give or take the 1 ms tick.
#[test]
fn s3_latency_fits_the_published_percentiles() {
    let r = run(S3, &["towline p2c, no hedge"]);
    let run = get(&r, "towline p2c, no hedge");
    let n = run.requests() as f64;
    for (q, ms) in [(0.95, 24.0), (0.99, 52.0), (0.999, 994.0)] {
        let d = 3.3 * (q * (1.0 - q) / n).sqrt();
        let low = run.latency(q - d).unwrap().as_secs_f64() * 1e3 - 1.0;
        let high = run.latency(q + d).unwrap().as_secs_f64() * 1e3 + 1.0;
        assert!(
            low <= ms && ms <= high,
            "p{}: {ms} ms outside [{low}, {high}]",
            q * 100.0
        );
    }
}

#[test]
fn s3_hedging_at_p95_cuts_p999_tenfold() {
    let r = run(S3, &["towline p2c, no hedge", "towline p2c + hedge p95"]);
    let p999 = |c| get(&r, c).latency(0.999).unwrap();
    let (before, after) = (
        p999("towline p2c, no hedge"),
        p999("towline p2c + hedge p95"),
    );
    assert!(after * 10 <= before, "{before:?} -> {after:?}");
}

#[test]
#[ignore = "needs the load-signal change (issue 9)"]
fn s3_hedging_at_p95_costs_at_most_6_percent_extra_attempts() {
    // Current main: 1.088 attempts per request. The p95 is taken over the
    // attempts that won, so the slow ones that lost to a hedge are missing
    // from it: the delay is too short and more calls are hedged.
    let r = run(S3, &["towline p2c + hedge p95"]);
    let amplification = get(&r, "towline p2c + hedge p95").attempts_per_request();
    eprintln!("attempts per request: {amplification:.4}");
    assert!(amplification <= 1.06, "{amplification}");
}

// ---- S4: heterogeneous, time-varying servers, many clients ---------------

#[test]
fn s4_default_balancer_p99_no_worse_than_tower_peak_ewma() {
    let r = run(
        "s4-heterogeneous.toml",
        &["towline p2c peak-ewma", "tower PeakEwma"],
    );
    for load in [0.7, 0.9] {
        let p = |c, q| r.run_at(c, load).unwrap().latency(q).unwrap();
        let (ours, tower) = (p("towline p2c peak-ewma", 0.99), p("tower PeakEwma", 0.99));
        eprintln!(
            "load {load}: p99 {ours:?} vs tower {tower:?}; p99.9 {:?} vs tower {:?}",
            p("towline p2c peak-ewma", 0.999),
            p("tower PeakEwma", 0.999)
        );
        assert!(
            ours <= tower,
            "load {load}: p99 {ours:?} vs tower {tower:?}"
        );
    }
}

// ---- S5: retry storm ------------------------------------------------------

const S5: &str = "s5-retry-storm.toml";
/// Capacity is halved from 10 s to 20 s.
const HALVED: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(20));

/// The issue's measurements of current main, in the 20 s after capacity
/// comes back: no goodput at all with the default retry policy (1.2 × 800
/// attempts/s leave the backlog of abandoned work no room to drain) or with
/// naive retries.
///
/// Without retries the issue measured 12.5%; this harness measures 16.2%
/// (the issue does not say how many backends or how their service time is
/// spread), and shows why it never fully recovers on current main: the
/// backends whose queues hold abandoned work answer nothing within the
/// 100 ms timeout, their latency estimates decay for want of samples, and
/// P2C sends them a growing share (from 20% to over 30% each by 60 s).
#[test]
fn s5_retries_keep_the_backends_saturated_after_capacity_returns() {
    let configs = ["towline default retry", "towline naive retries"];
    let r = run(S5, &configs);
    for config in configs {
        let goodput = get(&r, config).success_rate_between(HALVED.1, HALVED.1 + 20 * S);
        assert_eq!(goodput, 0.0, "{config}");
    }
}

#[test]
fn s5_default_retry_amplification_stays_within_the_budget_while_halved() {
    let r = run(S5, &["towline default retry", "towline naive retries"]);
    let ratio = |c| get(&r, c).attempts_per_request_between(HALVED.0, HALVED.1);
    // The default budget: 20% of calls plus 10 retries/s, at 800 calls/s.
    let (default, naive) = (
        ratio("towline default retry"),
        ratio("towline naive retries"),
    );
    eprintln!("attempts per request while halved: default {default:.3}, naive {naive:.3}");
    assert!(default <= 1.2 + 10.0 / 800.0, "{default}");
    // Naive retries, for contrast: every call makes all three attempts.
    assert!(naive > 2.5, "{naive}");
}

#[test]
#[ignore = "needs adaptive throttling as a channel option (issue 9)"]
fn s5_adaptive_throttling_restores_goodput_within_20s() {
    // Current main, with the SRE throttle (K = 2, 60 s) applied by the
    // simulated caller in front of a channel with the default retry policy:
    // goodput is still 77% at 60 s. Without retries it is back to 95% at
    // 41 s, 21 s after capacity: the minute-long window remembers the 10 s
    // of full service before the overload, so the throttle only starts to
    // refuse calls once capacity is back.
    let config = "towline default retry + throttle";
    let r = run(S5, &[config]);
    let run = get(&r, config);
    let at = run.recovered_at(HALVED.1, 0.95);
    eprintln!("{config}: goodput back to 95% at {at:?}");
    assert!(at.is_some_and(|t| t <= HALVED.1 + 20 * S), "{at:?}");
}

// ---- S6: a hard-failing server among ten --------------------------------

const S6: &str = "s6-failing-server.toml";
/// The failing backend's index, and when it starts failing.
const FAILING: usize = 9;
const FAILS_FROM: Duration = Duration::from_secs(10);

#[test]
fn s6_breakers_eject_the_failing_server_within_1s_and_no_healthy_one() {
    let config = "towline p2c + breaker";
    let r = run(S6, &[config]);
    let ejections = get(&r, config).ejections();
    assert!(
        ejections.iter().all(|e| e.backend == FAILING),
        "a healthy backend was ejected: {ejections:?}"
    );
    let first = ejections.iter().map(|e| e.at).min();
    eprintln!("ejections: {ejections:?}");
    assert!(
        first.is_some_and(|t| t >= FAILS_FROM && t <= FAILS_FROM + S),
        "{first:?}"
    );
}

#[test]
fn s6_retries_keep_client_errors_at_most_half_a_percent() {
    let config = "towline p2c + retry";
    let r = run(S6, &[config]);
    let errors = 1.0 - get(&r, config).success_rate();
    eprintln!("client-visible errors: {errors:.5}");
    assert!(errors <= 0.005, "{errors}");
}

/// From the time the server starts failing to the end: the failing server
/// gets at most 5% of the attempts, and each healthy one at least 80% of
/// its fair share (a ninth of the attempts).
#[test]
#[ignore = "needs the failure penalty in the load signal (issue 9)"]
fn s6_without_breakers_the_failing_server_is_avoided_and_healthy_ones_keep_their_share() {
    // Current main: the failing server gets 19.5% of the attempts (its
    // errors take 1 ms, so it looks the fastest), the healthy ones 8.5% to
    // 9.1% each against the 8.9% asked.
    let config = "towline p2c";
    let r = run(S6, &[config]);
    let run = get(&r, config);
    let end = Duration::from_secs(40);
    let shares: Vec<f64> = (0..=FAILING)
        .map(|b| run.share_between(b, FAILS_FROM, end))
        .collect();
    eprintln!("shares of attempts: {shares:.4?}");
    assert!(shares[FAILING] <= 0.05, "failing: {}", shares[FAILING]);
    for (healthy, share) in shares[..FAILING].iter().enumerate() {
        assert!(*share >= 0.8 / 9.0, "healthy backend {healthy}: {share}");
    }
}

// ---- the harness ----------------------------------------------------------

/// Same seed, same run, bit for bit; another seed, another run.
#[test]
fn runs_are_reproducible_from_their_seed() {
    let s = scenario(S6)
        .retain_configs(|c| c == "towline p2c + retry + breaker" || c == "tower PeakEwma")
        .with_duration(15 * S, Duration::ZERO)
        .unwrap();
    let fingerprint = |r: &Report| {
        r.runs()
            .iter()
            .map(|run| {
                let shares: Vec<_> = (0..10).map(|b| run.share_over_time(b)).collect();
                (
                    run.latencies_us().to_vec(),
                    run.success_over_time(),
                    shares,
                    run.ejections().to_vec(),
                )
            })
            .collect::<Vec<_>>()
    };
    let a = fingerprint(&s.run().unwrap());
    assert_eq!(a, fingerprint(&s.run().unwrap()));
    assert_ne!(a, fingerprint(&s.clone().with_seed(7).run().unwrap()));
}

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
