//! The harness's own behaviour: backends, clients, results and the format,
//! each checked on small scenarios.

use std::time::Duration;

use super::{Report, Run, Scenario};

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// A scenario with one configuration (`[[configs]] name = "c"`, default
/// balancer unless `config` says otherwise) around `body`.
fn run(body: &str, config: &str) -> Report {
    let text = format!("{body}\n[[configs]]\nname = \"c\"\n{config}\n");
    Scenario::from_toml(&text)
        .unwrap_or_else(|e| panic!("{e}"))
        .run()
        .unwrap()
}

fn only(report: &Report) -> &Run {
    report.run("c").unwrap()
}

/// Three and a half binomial standard deviations for `n` trials.
fn bound(p: f64, n: u64) -> f64 {
    3.5 * (p * (1.0 - p) / n as f64).sqrt()
}

#[test]
fn a_single_server_queue_serves_in_turn() {
    // Three closed-loop callers on one server of 10 ms: each call waits
    // for the two others, so it takes 30 ms, and 100 calls end per second.
    let r = run(
        r#"
        duration = "2s"
        [[backends]]
        name = "one"
        concurrency = 1
        latency = { constant = "10ms" }
        [[clients]]
        arrivals = "closed"
        concurrency = 3
        "#,
        "",
    );
    let c = only(&r);
    assert!((198..=203).contains(&c.requests()), "{}", c.requests());
    assert_eq!(c.latency(0.5), Some(30 * MS));
    assert_eq!(c.latency(1.0), Some(30 * MS));
}

#[test]
fn a_closed_loop_against_instant_failures_still_lets_time_pass() {
    let r = run(
        r#"
        duration = "1s"
        [[backends]]
        name = "down"
        latency = { constant = "5ms" }
        phases = [{ from = "0s", down = true }]
        [[clients]]
        arrivals = "closed"
        concurrency = 2
        "#,
        "",
    );
    // Each caller fails once per 1 ms tick.
    assert_eq!(only(&r).requests(), 2_000);
    assert_eq!(only(&r).successes(), 0);
}

#[test]
fn fixed_arrivals_come_at_their_rate_and_pure_delay_needs_no_queue() {
    let r = run(
        r#"
        duration = "10s"
        [[backends]]
        name = "delay"
        latency = { constant = "250ms" }
        [[clients]]
        arrivals = "fixed"
        rate = 100.0
        "#,
        "",
    );
    let c = only(&r);
    // Arrivals at 10 ms, 20 ms, … 9,990 ms.
    assert_eq!(c.requests(), 999);
    assert_eq!(c.success_rate(), 1.0);
    assert_eq!(
        (c.latency(0.0), c.latency(1.0)),
        (Some(250 * MS), Some(250 * MS))
    );
    assert_eq!(c.attempts_per_request(), 1.0);
}

/// One and a half times the server's capacity, callers giving up after
/// 250 ms: kept abandoned work leaves every later request queued behind
/// dead ones; dropping it lets some through (FIFO serves the oldest live
/// calls first, which are the likeliest to miss their budget: about a
/// fifth of the offered calls succeed).
#[test]
fn abandoned_work_is_served_unless_dropped() {
    let body = |drop: bool| {
        format!(
            r#"
            duration = "20s"
            warmup = "5s"
            [[backends]]
            name = "one"
            concurrency = 1
            latency = {{ constant = "100ms" }}
            drop_abandoned = {drop}
            [[clients]]
            arrivals = "poisson"
            rate = 15.0
            budget = "250ms"
            "#
        )
    };
    let kept = run(&body(false), "");
    assert_eq!(only(&kept).successes(), 0, "{}", kept.table());
    let dropped = run(&body(true), "");
    let rate = only(&dropped).success_rate();
    // At most the server's 10 calls a second out of 15 can succeed.
    assert!((0.1..=2.0 / 3.0).contains(&rate), "{rate}");
}

#[test]
fn failures_and_stalls_take_their_share() {
    let r = run(
        r#"
        duration = "20s"
        [[backends]]
        name = "flaky"
        latency = { constant = "5ms" }
        failure_rate = 0.2
        failure_latency = { constant = "1ms" }
        stall_rate = 0.1
        [[clients]]
        arrivals = "poisson"
        rate = 500.0
        budget = "1s"
        "#,
        "",
    );
    let c = only(&r);
    let n = c.requests();
    assert!(
        (c.success_rate() - 0.7).abs() <= bound(0.7, n),
        "{}",
        c.success_rate()
    );
    // Only successes have a latency; the failures took 1 ms, the stalls
    // the whole budget.
    assert_eq!(c.latency(0.7 - bound(0.7, n)), Some(5 * MS));
}

#[test]
fn phases_change_a_backend_for_their_time_only() {
    let r = run(
        r#"
        duration = "9s"
        bucket = "1s"
        [[backends]]
        name = "one"
        latency = { constant = "5ms" }
        phases = [
            { from = "3s", to = "6s", latency = { constant = "50ms" } },
            { from = "6s", to = "7s", down = true },
        ]
        [[clients]]
        arrivals = "fixed"
        rate = 100.0
        budget = "20ms"
        "#,
        "",
    );
    let c = only(&r);
    let shares: Vec<f64> = c.success_over_time().into_iter().map(|(_, s)| s).collect();
    assert_eq!(shares, [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]);
}

#[test]
fn a_phase_that_adds_servers_starts_queued_work_at_once() {
    // One server busy for 10 s with the first call; the second call waits
    // in the queue until a second server comes at 1 s.
    let r = run(
        r#"
        duration = "250ms"
        [[backends]]
        name = "one"
        concurrency = 1
        latency = { constant = "10s" }
        phases = [{ from = "1s", concurrency = 2 }]
        [[clients]]
        arrivals = "fixed"
        rate = 10.0
        budget = "30s"
        "#,
        "",
    );
    let c = only(&r);
    assert_eq!(c.latencies_us(), [10_000_000, 10_800_000]);
}

#[test]
fn drift_redraws_the_mean() {
    let r = run(
        r#"
        duration = "30s"
        [[backends]]
        name = "drifting"
        latency = { exponential = { mean = "4ms" } }
        drift = { every = { constant = "100ms" }, mean = { uniform = { low = "10ms", high = "30ms" } } }
        [[clients]]
        arrivals = "poisson"
        rate = 500.0
        "#,
        "",
    );
    let (mean, error) = only(&r).mean_latency_with_error(10).unwrap();
    let ms = mean.as_secs_f64() * 1e3;
    assert!(
        (ms - 20.0).abs() <= 4.0 * error.as_secs_f64() * 1e3 + 0.5,
        "{ms} ± {error:?}"
    );
}

#[test]
fn weights_reach_a_weighted_balancer_and_shares_are_reported() {
    let r = run(
        r#"
        duration = "10s"
        [[backends]]
        name = "light"
        latency = { constant = "5ms" }
        [[backends]]
        name = "heavy"
        weight = 3
        latency = { constant = "5ms" }
        [[clients]]
        arrivals = "poisson"
        rate = 400.0
        "#,
        "balancer = \"weighted_round_robin\"",
    );
    let c = only(&r);
    let heavy = c.share_between(1, Duration::ZERO, 10 * S);
    assert!((heavy - 0.75).abs() < 0.01, "{heavy}");
    assert_eq!(c.backends(), ["light", "heavy"]);
}

/// A backend that is always down, 100 calls/s for 20 s.
const DOWN: &str = r#"
    duration = "20s"
    [[backends]]
    name = "down"
    latency = { constant = "5ms" }
    phases = [{ from = "0s", down = true }]
    [[clients]]
    arrivals = "fixed"
    rate = 100.0
    budget = "1s"
    "#;

/// Refusals expected of a throttle at its cap (0.8) over `n` calls: the
/// binomial mean, give or take 3.5 standard deviations, less the few first
/// calls sent before the probability reached the cap.
fn at_cap(n: u64) -> std::ops::RangeInclusive<f64> {
    let (n, p) = (n as f64, 0.8);
    let sd = (n * p * (1.0 - p)).sqrt();
    (n * p - 3.5 * sd - 5.0)..=(n * p + 3.5 * sd)
}

#[test]
fn the_caller_throttle_counts_its_refusals() {
    // After the first calls fail, the throttle refuses all it may (80%)
    // without sending them.
    let r = run(DOWN, "caller_throttle = {}");
    let c = only(&r);
    assert_eq!(c.successes(), 0);
    let refused = c.refused_by_throttle() as f64;
    assert!(at_cap(c.requests()).contains(&refused), "{refused}");
    let sent = c.attempts_per_request() * c.requests() as f64;
    assert!(
        (sent + refused - c.requests() as f64).abs() < 1.0,
        "{sent} + {refused}"
    );
}

#[test]
fn the_channel_throttle_refuses_attempts_before_they_are_sent() {
    let r = run(DOWN, "throttle = {}");
    let c = only(&r);
    assert_eq!(c.successes(), 0);
    // Refused by the channel, not the caller: they are simply not sent.
    assert_eq!(c.refused_by_throttle(), 0);
    let refused = c.requests() as f64 * (1.0 - c.attempts_per_request());
    assert!(at_cap(c.requests()).contains(&refused), "{refused}");
}

#[test]
fn the_table_lists_every_run() {
    let r = run(
        r#"
        duration = "1s"
        load = [0.5, 1.0]
        [[backends]]
        name = "b"
        latency = { constant = "5ms" }
        [[clients]]
        arrivals = "fixed"
        rate = 100.0
        "#,
        "",
    );
    let table = r.table();
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(table.contains("50%") && table.contains("100%"), "{table}");
    assert_eq!(r.run_at("c", 0.5).unwrap().requests(), 49);
}

#[test]
fn bad_files_say_where_the_problem_is() {
    let base = r#"
        duration = "1s"
        [[backends]]
        name = "b"
        latency = { constant = "5ms" }
        [[clients]]
        arrivals = "fixed"
        rate = 100.0
        [[configs]]
        name = "c"
    "#;
    assert!(Scenario::from_toml(base).is_ok());
    let cases = [
        (base.replace("\"1s\"", "\"1 parsec\""), "unknown unit"),
        (
            base.replace("constant = \"5ms\"", "normal = { mean = \"5ms\" }"),
            "stddev",
        ),
        (
            base.replace("rate = 100.0", "concurrency = 2"),
            "clients[0]",
        ),
        (
            base.replace("name = \"c\"", "name = \"c\"\nretry = { max_attempts = 0 }"),
            "configs[0] (c)",
        ),
        (
            base.replace(
                "name = \"c\"",
                "name = \"c\"\ntower = \"pending\"\ntimeout = \"1s\"",
            ),
            "tower baseline",
        ),
        (
            base.replace("name = \"c\"", "name = \"c\"\nbogus = 1"),
            "unknown field",
        ),
        (format!("{base}\n[[configs]]\nname = \"c\""), "used twice"),
        (
            base.replace("name = \"b\"", "name = \"b\"\nfailure_rate = 1.5"),
            "backends[0].failure_rate",
        ),
        (
            base.replace(
                "name = \"b\"",
                "name = \"b\"\nphases = [{ from = \"2s\", to = \"1s\" }]",
            ),
            "backends[0].phases[0]",
        ),
    ];
    for (text, expected) in cases {
        let e = Scenario::from_toml(&text).unwrap_err();
        assert!(
            e.message().contains(expected),
            "`{}` lacks `{expected}`",
            e.message()
        );
    }
    let missing = Scenario::load("/nonexistent/s.toml").unwrap_err();
    assert!(missing.message().contains("/nonexistent/s.toml"));
}

#[test]
fn plots_are_written() {
    let r = run(
        r#"
        name = "plots"
        duration = "2s"
        [[backends]]
        name = "b"
        count = 2
        latency = { uniform = { low = "1ms", high = "20ms" } }
        [[clients]]
        arrivals = "poisson"
        rate = 200.0
        "#,
        "",
    );
    let dir = std::env::temp_dir().join(format!("towline-sim-plots-{}", std::process::id()));
    let written = r.write_plots(&dir).unwrap();
    let names: Vec<_> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["cdf.svg", "success.svg", "share-c.svg"]);
    for p in &written {
        let svg = std::fs::read_to_string(p).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("polyline"),
            "{}",
            p.display()
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
