//! The decision-quality targets of issue 9, asserted on the simulator's
//! scenarios (`scenarios/*.toml`): the real channel on tokio's paused
//! clock, tower's balancers as baselines, every generator seeded, so each
//! run is deterministic and no wall-clock time is involved.
//!
//! Each test prints the figures it measured (run with `--nocapture`).
//!
//! Statistical bounds are computed from the number of requests measured.

use std::time::Duration;

use towline::sim::{Report, Run, Scenario};

mod keyed;
mod limits;

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

/// The harness reproduces the published figures that do not depend on
/// towline's load signal: tower's `PeakEwma` (Linkerd published 99.9%; the
/// issue measured 99.8%) and round-robin (95.4%).
#[test]
fn s1_reproduces_the_published_baselines() {
    let r = run(S1, &["towline round-robin", "tower PeakEwma"]);
    for (config, published) in [("towline round-robin", 0.954), ("tower PeakEwma", 0.998)] {
        let run = get(&r, config);
        let bound = share_bound(published, run.requests()) + 0.0005; // published to 0.1%
        assert!(
            (run.success_rate() - published).abs() <= bound,
            "{config}: {} vs the issue's {published} (± {bound})",
            run.success_rate()
        );
    }
}

/// The default balancer alone answers 99.9% within the callers' 1 s: the
/// stalled server's first unanswered attempts mark it slow and failing.
/// (Before the load signal saw unanswered attempts: 95.5%; tower: 99.8%.)
#[test]
fn s1_default_p2c_answers_999_within_budget() {
    let r = run(S1, &["towline p2c peak-ewma", "tower PeakEwma"]);
    let rate = get(&r, "towline p2c peak-ewma").success_rate();
    let tower = get(&r, "tower PeakEwma").success_rate();
    eprintln!("success within 1 s: {rate:.5} (tower PeakEwma {tower:.5})");
    assert!(rate >= 0.999, "{rate}");
}

#[test]
fn s1_retry_breaker_and_attempt_timeout_answer_9995_within_budget() {
    let config = "towline p2c + retry, breaker, 500ms timeout";
    let r = run(S1, &[config]);
    let rate = get(&r, config).success_rate();
    assert!(rate >= 0.9995, "{rate}");
}

/// From 1 s after the stall starts (15 s) to its end (45 s), the stalled
/// server gets under 1% of the new attempts, and already under 1% in the
/// first second of that span. (Before: 9.1%, growing as its unobserved
/// estimate decayed.)
#[test]
fn s1_slow_server_share_drops_below_1_percent_within_1s() {
    let r = run(S1, &["towline p2c peak-ewma"]);
    let run = get(&r, "towline p2c peak-ewma");
    let share = run.share_between(10, 16 * S, 45 * S);
    let first = run.share_between(10, 16 * S, 17 * S);
    eprintln!(
        "slow backend's share of attempts: {share:.4} from 16 s to 45 s, {first:.4} in 16-17 s"
    );
    assert!(share < 0.01, "{share}");
    assert!(first < 0.01, "{first}");
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
fn s3_hedging_at_p95_costs_at_most_6_percent_extra_attempts() {
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

/// The measurements, in the 20 s after capacity comes back: no
/// goodput at all with the default retry policy (1.2 × 800 attempts/s leave
/// the backlog of abandoned work no room to drain) or with naive retries.
/// (Both configurations answer exactly the same requests: every one that
/// arrived before the overload, when nothing needed a retry, and none
/// after.)
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

/// The channel's adaptive throttling (defaults: K = 2, 10 s, refusing at
/// most 80%) over the default retry policy: goodput back to 95% within
/// 20 s of capacity returning, the abandoned work still served. The SRE
/// book's settings (60 s, no cap) do not get there within the run.
#[test]
fn s5_adaptive_throttling_restores_goodput_within_20s() {
    let (config, book) = (
        "towline default retry + throttle",
        "towline default retry + book throttle",
    );
    let r = run(S5, &[config, book]);
    let at = get(&r, config).recovered_at(HALVED.1, 0.95);
    let book_at = get(&r, book).recovered_at(HALVED.1, 0.95);
    eprintln!("goodput back to 95% at {at:?} (the book's throttle: {book_at:?})");
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
/// (Before the failure penalty: the failing server got 19.5% of the
/// attempts, its 1 ms errors looking fastest.)
#[test]
fn s6_without_breakers_the_failing_server_is_avoided_and_healthy_ones_keep_their_share() {
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
