use super::*;

const MS: Duration = Duration::from_millis(1);

fn sample(rtt: Duration, in_flight: usize) -> Sample {
    Sample {
        rtt,
        in_flight,
        dropped: false,
    }
}

/// A core whose probe has finished at `t0` with a baseline of 10 ms.
fn probed(settings: GradientSettings) -> (Gradient, Instant) {
    let t0 = Instant::now();
    let mut g = Gradient::new(settings, t0, Rng::seeded(1));
    let mut now = t0;
    while g.is_probing() {
        now += 10 * MS;
        g.on_sample(sample(10 * MS, 3), now);
    }
    (g, now)
}

/// Feeds one full window of samples (one every 10 ms, the last at its end)
/// and returns the time after it.
fn window(g: &mut Gradient, mut now: Instant, rtt: Duration, in_flight: usize) -> Instant {
    for _ in 0..=10 {
        now += 10 * MS;
        g.on_sample(sample(rtt, in_flight), now);
    }
    now
}

#[test]
fn starts_with_a_probe_that_sets_the_baseline() {
    let t0 = Instant::now();
    let mut g = Gradient::new(GradientSettings::default(), t0, Rng::seeded(1));
    assert!(g.is_probing());
    assert_eq!(g.limit(), 3);
    assert_eq!(g.min_rtt(), None);
    // A call that began before the probe does not count.
    g.on_sample(sample(50 * MS, 3), t0 + 10 * MS);
    for i in 1..=19 {
        g.on_sample(sample(8 * MS + i % 2 * 4 * MS, 3), t0 + i * 20 * MS);
    }
    assert!(g.is_probing(), "19 counted samples are not enough");
    let end = t0 + 400 * MS;
    g.on_sample(sample(8 * MS, 3), end);
    assert!(!g.is_probing());
    // 10 samples of 8 ms, 10 of 12 ms.
    assert_eq!(g.min_rtt(), Some(10 * MS));
    assert_eq!(g.limit(), 20, "back to the initial limit");
    let next = g.next_probe();
    assert!(next >= end + Duration::from_secs(30) && next <= end + Duration::from_millis(34_500));
}

#[test]
fn limit_grows_at_baseline_latency_and_shrinks_above_it() {
    let (mut g, now) = probed(GradientSettings::default());
    // Mean at the baseline: gradient 1.25, target 20 × 1.25 + √20.
    let now = window(&mut g, now, 10 * MS, 20);
    let expected = 0.8 * 20.0 + 0.2 * (25.0 + 20f64.sqrt());
    assert_eq!(g.limit(), expected.round() as usize);
    assert!((g.limit - expected).abs() < 1e-9);
    // Twice the baseline: gradient 0.625.
    let before = g.limit;
    window(&mut g, now, 20 * MS, 30);
    let expected = 0.8 * before + 0.2 * (before * 0.625 + before.sqrt());
    assert!((g.limit - expected).abs() < 1e-9);
    assert!(g.limit < before);
}

#[test]
fn an_app_limited_window_does_not_grow_the_limit() {
    let (mut g, now) = probed(GradientSettings::default());
    window(&mut g, now, 10 * MS, 9);
    assert_eq!(g.limit, 20.0);
}

#[test]
fn a_dropped_call_halves_the_target() {
    let (mut g, mut now) = probed(GradientSettings::default());
    for _ in 0..10 {
        now += 10 * MS;
        g.on_sample(sample(10 * MS, 20), now);
    }
    now += 10 * MS;
    let dropped = Sample {
        dropped: true,
        ..sample(MS, 20)
    };
    g.on_sample(dropped, now);
    let expected = 0.8 * 20.0 + 0.2 * (10.0 + 20f64.sqrt());
    assert!((g.limit - expected).abs() < 1e-9, "{}", g.limit);
}

#[test]
fn a_quiet_window_waits_for_enough_samples() {
    let (mut g, now) = probed(GradientSettings::default());
    // Five samples spread over a second: the window stays open.
    for i in 1..=5 {
        g.on_sample(sample(10 * MS, 20), now + i * 200 * MS);
    }
    assert_eq!(g.limit, 20.0);
}

#[test]
fn probes_again_after_the_jittered_interval() {
    let (mut g, now) = probed(GradientSettings::default());
    let due = g.next_probe();
    g.on_sample(sample(10 * MS, 5), due - MS);
    assert!(!g.is_probing());
    g.on_sample(sample(10 * MS, 5), due);
    assert!(g.is_probing());
    assert_eq!(g.limit(), 3);
    // Different seeds spread the probes over the jitter range.
    let dues: std::collections::BTreeSet<Instant> = (0..20)
        .map(|seed| {
            let mut g = Gradient::new(GradientSettings::default(), now, Rng::seeded(seed));
            for i in 1..=20 {
                g.on_sample(sample(MS, 1), now + i * MS);
            }
            g.next_probe()
        })
        .collect();
    assert!(dues.len() > 15, "{dues:?}");
}

#[test]
fn a_later_probe_counts_only_calls_made_after_the_backlog_drained() {
    let (mut g, _) = probed(GradientSettings::default());
    let due = g.next_probe();
    g.on_sample(sample(10 * MS, 30), due);
    assert!(g.is_probing());
    // Still 10 calls in flight from the old limit: draining.
    g.on_sample(sample(30 * MS, 10), due + 10 * MS);
    // Drained at +20 ms; this call began before, so it does not count.
    g.on_sample(sample(30 * MS, 3), due + 20 * MS);
    for i in 1..=20 {
        assert!(g.is_probing(), "finished after {i} samples");
        g.on_sample(sample(10 * MS, 3), due + 20 * MS + i * 10 * MS);
    }
    assert!(!g.is_probing());
    assert_eq!(g.min_rtt(), Some(10 * MS));
}

#[test]
fn a_stale_baseline_probes_early() {
    let (mut g, mut now) = probed(GradientSettings::default());
    let mut windows = 0;
    while !g.is_probing() {
        // The service became 10 times slower for good.
        now = window(&mut g, now, 100 * MS, 100);
        windows += 1;
        assert!(windows < 100, "never probed");
    }
    assert!(
        now < g.next_probe(),
        "probed before the periodic probe was due"
    );
    // The new probe measures the new latency.
    while g.is_probing() {
        now += 100 * MS;
        g.on_sample(sample(100 * MS, 3), now);
    }
    assert_eq!(g.min_rtt(), Some(100 * MS));
}

/// A closed loop against a service that serves `k` calls at a time, each in
/// `s`, with more demand than it can serve: in-flight calls fill the limit
/// and each takes `s × max(1, limit / k)` (a FIFO queue in front of `k`
/// servers). The limit settles near its fixed point `L = 1.25 k + √L`;
/// then demand falls to half the capacity and the limit stays put.
#[test]
fn converges_near_capacity_against_a_k_server_queue() {
    for k in [4usize, 20, 100] {
        let s = 10 * MS;
        let settings =
            GradientSettings::default().with_probe_interval(Duration::from_secs(600), 0.0);
        let (mut g, mut now) = probed(settings);
        let rtt_at = |limit: usize| s.mul_f64((limit as f64 / k as f64).max(1.0));
        let mut seen = Vec::new();
        for _ in 0..600 {
            let limit = g.limit();
            now = window(&mut g, now, rtt_at(limit), limit);
            seen.push(g.limit());
        }
        let fixed = {
            let mut l = k as f64;
            for _ in 0..100 {
                l = 1.25 * k as f64 + l.sqrt();
            }
            l
        };
        let settled = &seen[seen.len() - 100..];
        for &l in settled {
            assert!(
                (l as f64 - fixed).abs() <= fixed * 0.1 + 1.0,
                "k {k}: limit {l}, fixed point {fixed:.1}"
            );
        }
        let held = g.limit();
        for _ in 0..100 {
            now = window(&mut g, now, s, k / 2);
        }
        assert_eq!(g.limit(), held, "k {k}: the limit moved while app-limited");
    }
}

#[test]
fn invalid_settings_are_refused() {
    let d = GradientSettings::default;
    let cases = [
        (d().with_limits(0, 1, 2), "limits"),
        (d().with_limits(5, 4, 10), "limits"),
        (d().with_limits(1, 11, 10), "limits"),
        (d().with_tolerance(-0.1), "tolerance"),
        (d().with_tolerance(f64::NAN), "tolerance"),
        (d().with_smoothing(0.0), "smoothing"),
        (d().with_smoothing(1.5), "smoothing"),
        (d().with_window(Duration::ZERO, 1), "window"),
        (d().with_window(MS, 0), "window"),
        (
            d().with_probe_interval(Duration::ZERO, 0.1),
            "probe_interval",
        ),
        (d().with_probe_interval(MS, 1.5), "probe_interval"),
        (d().with_probe(0, 1), "probe"),
        (d().with_probe(1, 0), "probe"),
    ];
    for (settings, setting) in cases {
        assert_eq!(settings.validate().unwrap_err().setting(), setting);
    }
    assert!(d().validate().is_ok());
}

#[test]
fn reports_when_the_limit_may_have_moved() {
    let (mut g, mut now) = probed(GradientSettings::default());
    let mut closed = Vec::new();
    for _ in 0..=10 {
        now += 10 * MS;
        closed.push(g.on_sample(sample(10 * MS, 20), now));
    }
    // Only the sample that closes the window reports a change.
    assert_eq!(closed.iter().filter(|&&c| c).count(), 1);
    assert_eq!(closed.last(), Some(&true));
    // Starting a probe is a change too.
    assert!(g.on_sample(sample(10 * MS, 20), g.next_probe()));
    assert!(g.is_probing());
}

/// Feeds `calls` calls of `rtt`, each standing for `weight`, spread over
/// less than a window from `now`; returns the time of the last.
fn busy(g: &mut Gradient, mut now: Instant, calls: u32, rtt: Duration, weight: u32) -> Instant {
    for _ in 0..calls {
        now += Duration::from_micros(50);
        g.on_weighted_sample(sample(rtt, 20), weight, now);
    }
    now
}

#[test]
fn a_busy_window_asks_for_fewer_samples_as_it_fills() {
    let (mut g, now) = probed(GradientSettings::default());
    // Every call until the window holds 128, then one in (calls / 64).
    let now = busy(&mut g, now, 127, 10 * MS, 1);
    assert_eq!(g.sample_every(), 1);
    let now = busy(&mut g, now, 1, 10 * MS, 1);
    assert_eq!(g.sample_every(), 2);
    let now = busy(&mut g, now, 10, 10 * MS, 100);
    assert_eq!(g.sample_every(), 1_128 / 64);
    assert_eq!(g.window_peak(), 20);
    // A new window starts over.
    assert!(g.on_sample(sample(10 * MS, 20), now + 100 * MS), "closed");
    assert_eq!((g.sample_every(), g.window_peak()), (1, 0));
    // A probe takes every sample.
    let now = busy(&mut g, now + 100 * MS, 1_000, 10 * MS, 1);
    g.on_sample(sample(10 * MS, 20), now + Duration::from_secs(40));
    assert!(g.is_probing());
    assert_eq!(g.sample_every(), 1);
}

/// A reported call that stands for `n` counts `n` times, so that a window
/// sampled one call in `n` after its first 64 gets the mean (and the
/// limit) that reporting every call gives; counted once each, the same
/// samples would lean toward the window's first calls.
#[test]
fn weighted_samples_keep_the_window_mean_of_every_call() {
    // Smoothing 1: the limit is the window's target.
    let settings = GradientSettings::default().with_smoothing(1.0);
    let (mut every, now) = probed(settings.clone());
    let (mut sampled, _) = probed(settings.clone());
    let (mut unweighted, _) = probed(settings);
    // 64 calls at the baseline, then 640 at twice it: every one, one in
    // ten weighted, one in ten not.
    let a = busy(&mut every, now, 64, 10 * MS, 1);
    let a = busy(&mut every, a, 640, 20 * MS, 1);
    let b = busy(&mut sampled, now, 64, 10 * MS, 1);
    let b = busy(&mut sampled, b, 64, 20 * MS, 10);
    let c = busy(&mut unweighted, now, 64, 10 * MS, 1);
    let c = busy(&mut unweighted, c, 64, 20 * MS, 1);
    let end = now + 200 * MS;
    for (g, last) in [(&mut every, a), (&mut sampled, b), (&mut unweighted, c)] {
        assert!(last < end);
        assert!(g.on_sample(sample(20 * MS, 20), end), "closed");
    }
    // Mean 19.1 ms: 20 × 12.5 / 19.1 + √20 = 17.6.
    assert_eq!((sampled.limit(), every.limit()), (18, 18));
    assert!(
        unweighted.limit() > every.limit(),
        "the early calls weigh more"
    );
}
