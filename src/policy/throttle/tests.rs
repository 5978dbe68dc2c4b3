use super::*;
use crate::rng::Rng;

const S: Duration = Duration::from_secs(1);

/// The book's throttle (no cap) over 60 s.
fn throttle(k: f64) -> (Throttle, Instant) {
    let now = Instant::now();
    let settings = ThrottleSettings::new(k, 60 * S)
        .unwrap()
        .with_max_reject(1.0);
    (Throttle::new(&settings, now), now)
}

#[test]
fn nothing_is_refused_while_every_call_is_accepted() {
    let (mut t, now) = throttle(2.0);
    for i in 0..1_000u64 {
        let at = now + Duration::from_millis(i * 50);
        // The lowest draw is refused whenever the probability is above 0.
        assert_eq!(t.admit(at, 0.0), Decision::Admit, "call {i}");
        t.record(at, true);
    }
    assert_eq!(t.reject_probability(now + 50 * S), 0.0);
}

#[test]
fn calls_in_flight_do_not_count_as_refused() {
    // A client that has just started sends its first calls before any
    // answer came back: none of them may be refused.
    let (mut t, now) = throttle(2.0);
    for _ in 0..50 {
        assert_eq!(t.admit(now, 0.0), Decision::Admit);
    }
    assert_eq!(t.counts(now), (0, 0));
}

#[test]
fn probability_follows_the_formula() {
    for k in [1.0, 1.5, 2.0, 3.0] {
        let (mut t, now) = throttle(k);
        for i in 0..100 {
            t.record(now, i < 30);
        }
        assert_eq!(t.counts(now), (100, 30));
        let want = ((100.0 - k * 30.0) / 101.0_f64).max(0.0);
        assert!((t.reject_probability(now) - want).abs() < 1e-12, "k {k}");
    }
}

#[test]
fn no_accepts_refuses_nearly_everything_but_not_everything() {
    let (mut t, now) = throttle(2.0);
    for _ in 0..99 {
        t.record(now, false);
    }
    assert!((t.reject_probability(now) - 0.99).abs() < 1e-12);
    // A draw above the probability is still admitted (and not counted
    // until its outcome is known): the client keeps probing.
    assert_eq!(t.admit(now, 0.995), Decision::Admit);
    assert_eq!(t.counts(now), (99, 0));
    // A refused call counts at once.
    assert_eq!(t.admit(now, 0.5), Decision::Reject);
    assert_eq!(t.counts(now), (100, 0));
}

#[test]
fn a_saturated_backend_gets_about_k_times_what_it_accepts() {
    // 100 requests/s against a backend that accepts at most 20/s: once
    // the window is full, a client with K = 2 should send about 40/s.
    let (mut t, start) = throttle(2.0);
    let mut rng = Rng::seeded(17);
    let (mut sent_late, mut accepted_this_second) = (0u64, 0u32);
    for i in 0..12_000u64 {
        let at = start + Duration::from_millis(10 * i);
        if i % 100 == 0 {
            accepted_this_second = 0;
        }
        if t.admit(at, rng.unit()) == Decision::Admit {
            sent_late += u64::from(i >= 6_000);
            let accepted = accepted_this_second < 20;
            accepted_this_second += u32::from(accepted);
            t.record(at, accepted);
        }
    }
    // Over the second minute, 6,000 requests each sent with probability
    // about 0.4: five binomial standard deviations are under 190.
    let expected = 6_000.0 * 0.4;
    let sd = (6_000.0 * 0.4 * 0.6_f64).sqrt();
    assert!(
        (sent_late as f64 - expected).abs() < 5.0 * sd,
        "sent {sent_late} in the second minute, expected about {expected}"
    );
}

#[test]
fn counts_leave_the_window() {
    let (mut t, now) = throttle(2.0);
    for _ in 0..100 {
        t.record(now, false);
    }
    // Slots are 3 s long: counts made in the first slot are still in the
    // window 57 s later and gone at 60 s.
    assert_eq!(t.counts(now + 59 * S), (100, 0));
    assert_eq!(t.counts(now + 60 * S), (0, 0));
    assert_eq!(t.reject_probability(now + 60 * S), 0.0);
    // A new request lands in a fresh slot, not on the old counts.
    t.record(now + 61 * S, false);
    assert_eq!(t.counts(now + 61 * S), (1, 0));
}

#[test]
fn a_late_clock_reading_does_not_wipe_newer_counts() {
    let (mut t, now) = throttle(2.0);
    t.record(now + 10 * S, true);
    // An outcome reported with an older time lands in the newest slot.
    t.record(now, true);
    assert_eq!(t.counts(now + 10 * S), (2, 2));
    assert_eq!(t.counts(now), (2, 2));
}

#[test]
fn retune_keeps_the_history() {
    let (mut t, now) = throttle(2.0);
    for i in 0..100 {
        t.record(now, i < 40);
    }
    assert!((t.reject_probability(now) - 20.0 / 101.0).abs() < 1e-12);
    t.retune(&ThrottleSettings::new(1.0, 60 * S).unwrap());
    assert!((t.reject_probability(now) - 60.0 / 101.0).abs() < 1e-12);
}

#[test]
fn kept_totals_match_the_slots_through_any_sequence() {
    // Random outcomes, refusals and clock steps (some backwards, some
    // past the whole window): the totals the core keeps always equal a
    // count over the slots still in the window.
    let (mut t, start) = throttle(2.0);
    let mut rng = Rng::seeded(23);
    let mut now = start;
    for i in 0..20_000 {
        match rng.below(100) {
            0 => now += Duration::from_secs(61),
            1..=20 => now += Duration::from_millis(rng.below(5_000) as u64),
            21..=25 => t.record(now - Duration::from_secs(5), rng.unit() < 0.5),
            _ => {
                if t.admit(now, rng.unit()) == Decision::Admit {
                    t.record(now, rng.unit() < 0.3);
                }
            }
        }
        let tick = t.tick_of(now);
        let slow = t
            .slots
            .iter()
            .filter(|s| tick - s.tick < SLOTS as u64)
            .fold((0, 0), |(r, a), s| (r + s.requests, a + s.accepts));
        assert_eq!(t.counts(now), slow, "step {i}");
    }
}

#[test]
fn shared_throttle_decides_without_drawing_while_nothing_is_refused() {
    let now = Instant::now();
    let shared = SharedThrottle::new(&ThrottleSettings::default(), now);
    for _ in 0..100 {
        let decision = shared.admit(now, || panic!("no draw while p = 0"));
        assert_eq!(decision, Decision::Admit);
        shared.record(now, true);
    }
    for _ in 0..300 {
        shared.record(now, false);
    }
    let p = shared.reject_probability(now);
    assert!((p - 200.0 / 401.0).abs() < 1e-12, "{p}");
    assert_eq!(shared.admit(now, || p / 2.0), Decision::Reject);
    assert_eq!(shared.admit(now, || 0.999), Decision::Admit);
    assert_eq!(shared.counts(now), (401, 100));
    // Retuning publishes the new probability at once.
    shared.retune(&ThrottleSettings::new(5.0, 60 * S).unwrap(), now);
    assert_eq!(shared.reject_probability(now), 0.0);
    assert_eq!(shared.admit(now, || panic!("p = 0 again")), Decision::Admit);
}

#[test]
fn shared_throttle_counts_every_outcome_from_many_threads() {
    let now = Instant::now();
    let shared = SharedThrottle::new(&ThrottleSettings::default(), now);
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let shared = &shared;
            scope.spawn(move || {
                for i in 0..1_000 {
                    shared.record(now, (i + thread) % 2 == 0);
                }
            });
        }
    });
    assert_eq!(shared.counts(now), (4_000, 2_000));
}

#[test]
fn the_refusal_probability_is_capped_and_the_cap_retunes() {
    let now = Instant::now();
    let capped = ThrottleSettings::new(2.0, 60 * S).unwrap();
    let mut t = Throttle::new(&capped, now);
    for _ in 0..1_000 {
        t.record(now, false);
    }
    assert_eq!(t.reject_probability(now), 0.8);
    // A draw above the cap is always admitted.
    assert_eq!(t.admit(now, 0.8), Decision::Admit);
    t.retune(&capped.with_max_reject(0.5));
    assert_eq!(t.reject_probability(now), 0.5);
    t.retune(&capped.with_max_reject(1.0));
    assert!((t.reject_probability(now) - 1_000.0 / 1_001.0).abs() < 1e-12);
}

#[test]
fn invalid_settings_are_refused() {
    for k in [0.5, 0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = ThrottleSettings::new(k, 60 * S).unwrap_err();
        assert_eq!(e.setting(), "throttle.k", "k {k}");
    }
    for w in [Duration::ZERO, Duration::from_millis(999), 3601 * S] {
        let e = ThrottleSettings::new(2.0, w).unwrap_err();
        assert_eq!(e.setting(), "throttle.window", "window {w:?}");
    }
    for max in [0.0, -0.1, 1.01, f64::NAN] {
        let e = ThrottleSettings::default()
            .with_max_reject(max)
            .validate()
            .unwrap_err();
        assert_eq!(e.setting(), "throttle.max_reject", "max {max}");
    }
    let d = ThrottleSettings::default();
    assert_eq!((d.k(), d.window(), d.max_reject()), (2.0, 10 * S, 0.8));
    assert!(d.validate().is_ok());
}
