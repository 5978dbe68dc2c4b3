//! The harness's joining and cold backends, request keys, and the figures
//! of keyed configurations, each on a small scenario.

use std::time::Duration;

use super::{Report, Run, Scenario};

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn run(text: &str) -> Report {
    Scenario::from_toml(text)
        .unwrap_or_else(|e| panic!("{e}"))
        .run()
        .unwrap()
}

fn get<'a>(r: &'a Report, config: &str) -> &'a Run {
    r.run(config).unwrap()
}

#[test]
fn a_backend_joins_at_its_time_and_a_cold_one_warms_up() {
    let r = run(r#"
        duration = "6s"
        bucket = "500ms"
        [[backends]]
        name = "warm"
        latency = { constant = "10ms" }
        [[backends]]
        name = "new"
        join = "2s"
        latency = { constant = "10ms" }
        cold = { factor = 10.0, hold = "1s", warm_by = "3s" }
        [[clients]]
        arrivals = "fixed"
        rate = 100.0
        [[configs]]
        name = "rr"
        balancer = "round_robin"
        [[configs]]
        name = "tower"
        tower = "pending"
    "#);
    for config in ["rr", "tower"] {
        let run = get(&r, config);
        assert_eq!(run.share_between(1, Duration::ZERO, 2 * S), 0.0, "{config}");
        assert!(run.share_between(1, 2 * S, 6 * S) > 0.2, "{config}");
    }
    // Round-robin alternates: the new backend takes every other request,
    // 100 ms in its first second, 55 ms halfway through warming (4 s after
    // the start: 2 s after it joined), 10 ms once warm.
    let rr = get(&r, "rr");
    let at = |from: Duration| rr.latency_between(1.0, from, from + 20 * MS).unwrap();
    assert_eq!(at(2 * S + 100 * MS), 100 * MS);
    let halfway = at(4 * S);
    assert!((53 * MS..=55 * MS).contains(&halfway), "{halfway:?}");
    assert_eq!(at(5500 * MS), 10 * MS);
    assert_eq!(
        rr.latency_between(1.0, Duration::ZERO, 2 * S),
        Some(10 * MS)
    );
    // Fixed arrivals at k / rate, k from 1: 10 ms to 1.99 s.
    assert_eq!(rr.requests_between(Duration::ZERO, 2 * S), 199);
}

/// Zipf keys: the most popular key's share matches `1 / H(n, s)`; a plain
/// table sends every request home; bounded loads keep every backend under
/// its bound at each arrival.
#[test]
fn keys_follow_zipf_and_keyed_figures_are_recorded() {
    let text = |zipf: f64| {
        format!(
            r#"
            duration = "20s"
            [[backends]]
            name = "b"
            count = 8
            concurrency = 2
            latency = {{ exponential = {{ mean = "10ms" }} }}
            [[clients]]
            arrivals = "poisson"
            rate = 800.0
            budget = "2s"
            keys = {{ count = 1000, zipf = {zipf} }}
            [[configs]]
            name = "maglev"
            balancer = "round_robin"
            hash = {{ table = "maglev" }}
            [[configs]]
            name = "bounded"
            balancer = "round_robin"
            hash = {{ table = "maglev", bounded_load = 1.25 }}
            [[configs]]
            name = "rr"
            balancer = "round_robin"
        "#
        )
    };
    let r = run(&text(1.1));
    let plain = get(&r, "maglev");
    assert_eq!(plain.home_share(), Some(1.0));
    // The hottest key alone: 1 / Σ r^-1.1 over 1,000 keys = 16.0% of the
    // requests, on one backend: its share of attempts is at least that.
    let h: f64 = (1..=1000).map(|r| f64::from(r).powf(-1.1)).sum();
    let top = 1.0 / h;
    let hottest = (0..8)
        .map(|b| plain.share_between(b, Duration::ZERO, 20 * S))
        .fold(0.0, f64::max);
    let n = plain.requests() as f64;
    assert!(
        hottest >= top - 3.5 * (top * (1.0 - top) / n).sqrt(),
        "{hottest} vs {top}"
    );
    let bounded = get(&r, "bounded");
    assert!(bounded.in_flight_over_bound(1.25, 8) <= 0);
    assert!(
        plain.in_flight_over_bound(1.25, 8) > 0,
        "the hot backend exceeds it"
    );
    let home = bounded.home_share().unwrap();
    assert!(home < 1.0 && home > 0.5, "{home}");
    // No key table: no home figure.
    assert_eq!(get(&r, "rr").home_share(), None);
    // Uniform keys: every backend gets about an eighth. Its share varies
    // with how many of the 1,000 keys it owns and with which requests
    // draw them: both binomial.
    let r = run(&text(0.0));
    let plain = get(&r, "maglev");
    let n = plain.requests() as f64;
    let sd = (0.125 * 0.875 / 1000.0 + 0.125 * 0.875 / n).sqrt();
    for b in 0..8 {
        let share = plain.share_between(b, Duration::ZERO, 20 * S);
        assert!(
            (share - 0.125).abs() <= crate::test_bounds::Z * sd,
            "{b}: {share}"
        );
    }
}

#[test]
fn new_settings_are_checked() {
    let base = |backend: &str, client: &str, config: &str| {
        format!(
            "duration = \"1s\"\n[[backends]]\nname = \"b\"\nlatency = {{ constant = \"1ms\" }}\n{backend}\n\
             [[clients]]\narrivals = \"poisson\"\nrate = 10.0\n{client}\n[[configs]]\nname = \"c\"\n{config}\n"
        )
    };
    let error = |text: String| {
        Scenario::from_toml(&text)
            .unwrap_err()
            .message()
            .to_string()
    };
    let e = error(base(
        "cold = { factor = 0.0, hold = \"1s\", warm_by = \"2s\" }",
        "",
        "",
    ));
    assert!(e.contains("backends[0].cold"), "{e}");
    let e = error(base(
        "cold = { factor = 2.0, hold = \"3s\", warm_by = \"2s\" }",
        "",
        "",
    ));
    assert!(e.contains("warm_by"), "{e}");
    let e = error(base("", "keys = { count = 0 }", ""));
    assert!(e.contains("keys.count"), "{e}");
    let e = error(base("", "keys = { count = 10, zipf = -1.0 }", ""));
    assert!(e.contains("keys.zipf"), "{e}");
    let e = error(base(
        "",
        "",
        "hash = { table = \"maglev\", bounded_load = 0.9 }",
    ));
    assert!(e.contains("hash.bounded_load"), "{e}");
    let e = error(base("", "", "slow_start = { window = \"0s\" }"));
    assert!(e.contains("slow_start.window"), "{e}");
    let e = error(base("", "", "tower = \"pending\"\nslow_start = {}"));
    assert!(e.contains("tower baseline"), "{e}");
    // And the valid forms parse.
    let ok = base(
        "join = \"0.5s\"\ncold = { factor = 3.0, hold = \"0s\", warm_by = \"0s\" }",
        "keys = { count = 10 }",
        "hash = { table = \"ring\" }\nslow_start = { window = \"10s\", aggression = 2.0 }",
    );
    assert!(Scenario::from_toml(&ok).is_ok());
}
