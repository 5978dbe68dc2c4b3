use super::*;

#[test]
fn pending_never_underflows() {
    let load = Load::new(1, Instant::now());
    load.start();
    load.end();
    load.end();
    assert_eq!(load.pending(), 0);
    assert_eq!(load.finished(), 1);
    for _ in 0..3 {
        load.start();
    }
    load.end();
    assert_eq!((load.pending(), load.finished()), (2, 2));
}

#[test]
fn peak_is_taken_at_once_and_decays_toward_new_samples() {
    let t0 = Instant::now();
    let tau = Duration::from_secs(10);
    let decay = Decay::new(tau);
    let load = Load::new(1, t0);
    assert_eq!(load.rtt(t0, &decay), None);
    load.observe(Duration::from_millis(10), t0, &decay);
    load.observe(Duration::from_millis(100), t0, &decay);
    assert_eq!(load.rtt(t0, &decay), Some(Duration::from_millis(100)));
    // A fast sample 10 s (one decay constant) later moves the estimate
    // about 63% of the way down.
    let t1 = t0 + tau;
    load.observe(Duration::from_millis(10), t1, &decay);
    let ms = load.rtt(t1, &decay).unwrap().as_secs_f64() * 1000.0;
    let expected = 100.0 * (-1f64).exp() + 10.0 * (1.0 - (-1f64).exp());
    assert!((ms - expected).abs() < 0.01, "{ms} vs {expected}");
}

const MS: Duration = Duration::from_millis(1);
const DEFAULT: Duration = Duration::from_millis(30);

fn decay() -> Decay {
    Decay::new(Duration::from_secs(10))
}

#[test]
fn a_censored_sample_raises_the_estimate_until_the_next_answer() {
    let (t0, d) = (Instant::now(), decay());
    let load = Load::new(1, t0);
    load.observe(10 * MS, t0, &d);
    // Given up on after 1 s: the endpoint takes at least that long.
    load.observe_unanswered(1000 * MS, true, DEFAULT, t0, &d);
    assert_eq!(load.rtt(t0, &d), Some(1000 * MS));
    // A shorter unanswered attempt says nothing new.
    load.observe_unanswered(200 * MS, false, DEFAULT, t0, &d);
    assert_eq!(load.rtt_estimate(), Some(1000 * MS));
    // The next answer replaces the bound with the answered latency, at
    // once rather than over the decay's tens of seconds.
    load.observe(12 * MS, t0, &d);
    assert_eq!(load.rtt(t0, &d), Some(12 * MS));
    // An endpoint never answered: the bound, or the default if higher.
    let fresh = Load::new(1, t0);
    fresh.observe_unanswered(5 * MS, false, DEFAULT, t0, &d);
    assert_eq!(fresh.rtt_estimate(), Some(DEFAULT));
    fresh.observe_unanswered(900 * MS, false, DEFAULT, t0, &d);
    assert_eq!(fresh.rtt_estimate(), Some(900 * MS));
}

#[test]
fn a_failed_answer_is_a_latency_only_when_slower() {
    let (t0, d) = (Instant::now(), decay());
    let load = Load::new(1, t0);
    load.observe(20 * MS, t0, &d);
    load.observe_unanswered(500 * MS, true, DEFAULT, t0, &d);
    // A fast error: the endpoint answers (the bound is over), but its
    // answers are no faster than before.
    load.observe_failure(MS, DEFAULT, t0, &d);
    assert_eq!(load.rtt(t0, &d), Some(20 * MS));
    // A slow error is a peak like a slow success.
    load.observe_failure(300 * MS, DEFAULT, t0, &d);
    assert_eq!(load.rtt(t0, &d), Some(300 * MS));
}

#[test]
fn the_failure_estimate_moves_by_its_gain_and_decays_when_idle() {
    let (t0, d) = (Instant::now(), decay());
    let load = Load::new(1, t0);
    let g = Load::FAILURE_GAIN;
    load.observe_failure(MS, DEFAULT, t0, &d);
    assert!((load.failure_rate(t0, &d) - g).abs() < 1e-12);
    load.observe_unanswered(MS, true, DEFAULT, t0, &d);
    let two = g + g * (1.0 - g);
    assert!((load.failure_rate(t0, &d) - two).abs() < 1e-12);
    // Unanswered without failure (a lost hedge race): unchanged.
    load.observe_unanswered(MS, false, DEFAULT, t0, &d);
    assert!((load.failure_rate(t0, &d) - two).abs() < 1e-12);
    load.observe(MS, t0, &d);
    let after = two * (1.0 - g);
    assert!((load.failure_rate(t0, &d) - after).abs() < 1e-12);
    // Idle for a quarter of the decay constant: exp(-1) of it is left (the
    // failure estimate decays four times as fast as the latency).
    let later = t0 + Duration::from_millis(2_500);
    let left = load.failure_rate(later, &d);
    assert!((left - after * (-1f64).exp()).abs() < 1e-6, "{left}");
    // Successes bring it to exactly 0 once it is negligible, so that a
    // pick skips the penalty.
    for _ in 0..60 {
        load.observe(MS, t0, &d);
    }
    assert_eq!(load.failure_rate(t0, &d), 0.0);
}

#[test]
fn the_penalty_is_the_documented_factor() {
    let (t0, d) = (Instant::now(), decay());
    let cost = |failures: usize, of: usize| {
        let load = Load::new(1, t0);
        load.observe(10 * MS, t0, &d);
        // The estimate after `of` ends, `failures` of them first.
        for i in 0..of {
            if i < failures {
                load.observe_failure(MS, DEFAULT, t0, &d);
            } else {
                load.observe(10 * MS, t0, &d);
            }
        }
        let f = load.failure_rate(t0, &d);
        (load.ewma_cost(t0, &d, DEFAULT) / 10e6, f)
    };
    for (failures, of) in [(0, 0), (1, 1), (6, 6), (60, 60)] {
        let (factor, f) = cost(failures, of);
        let health = Load::HEALTH_FLOOR + (1.0 - Load::HEALTH_FLOOR) * (1.0 - f) * (1.0 - f);
        let want = 1.0 / health;
        assert!((factor - want).abs() < 1e-9 * want, "{factor} vs {want}");
    }
    // The documented points: 1% costs about 2% more, 50% four times,
    // everything about a thousand times.
    let factor =
        |f: f64| 1.0 / (Load::HEALTH_FLOOR + (1.0 - Load::HEALTH_FLOOR) * (1.0 - f) * (1.0 - f));
    assert!((factor(0.01) - 1.02).abs() < 0.001);
    assert!((factor(0.5) - 3.98).abs() < 0.01);
    assert!((factor(1.0) - 1000.0).abs() < 1e-9);
    let (all, _) = cost(200, 200);
    assert!(all > 990.0, "{all}");
}

#[test]
fn an_endpoint_never_measured_costs_nothing_until_it_has_an_attempt() {
    let (t0, d) = (Instant::now(), decay());
    let fresh = Load::new(1, t0);
    assert_eq!(fresh.ewma_cost(t0, &d, DEFAULT), 0.0);
    fresh.start();
    assert_eq!(fresh.ewma_cost(t0, &d, DEFAULT), 2.0 * 30e6);
    // Weight 0 still costs the most.
    assert_eq!(Load::new(0, t0).ewma_cost(t0, &d, DEFAULT), f64::MAX);
}

#[test]
fn retry_after_gives_the_largest_penalty_until_it_passes() {
    let (t0, d) = (Instant::now(), decay());
    let load = Load::new(1, t0);
    load.observe(10 * MS, t0, &d);
    load.observe_failure(MS, DEFAULT, t0, &d);
    let penalised = load.ewma_cost(t0, &d, DEFAULT);
    load.avoid_until(t0 + Duration::from_secs(2));
    let avoided = load.ewma_cost(t0, &d, DEFAULT);
    assert!(
        (avoided - 10e6 / Load::HEALTH_FLOOR).abs() < 1.0,
        "{avoided}"
    );
    // Successes in the meantime do not lift it...
    for _ in 0..100 {
        load.observe(10 * MS, t0, &d);
    }
    let at = t0 + Duration::from_millis(1999);
    assert!(load.ewma_cost(at, &d, DEFAULT) > 100.0 * penalised);
    // ...and once the time has passed, only the failure estimate is left.
    let after = t0 + Duration::from_secs(2);
    assert!(load.ewma_cost(after, &d, DEFAULT) < penalised);
}

#[test]
fn overdue_compares_with_the_answered_latency() {
    let (t0, d) = (Instant::now(), decay());
    let load = Load::new(1, t0);
    assert!(!load.overdue(20 * MS, DEFAULT));
    assert!(load.overdue(31 * MS, DEFAULT));
    load.observe(167 * MS, t0, &d);
    load.observe_unanswered(1000 * MS, true, DEFAULT, t0, &d);
    // The bound does not move the bar: 1 s is still overdue.
    assert!(load.overdue(1000 * MS, DEFAULT));
    assert!(!load.overdue(100 * MS, DEFAULT));
}

#[test]
fn cost_grows_with_pending_and_shrinks_with_weight() {
    let t0 = Instant::now();
    let d = Decay::new(Duration::from_secs(10));
    let rtt = Duration::from_millis(5);
    let light = Load::new(2, t0);
    let heavy = Load::new(1, t0);
    heavy.start();
    assert!(light.ewma_cost(t0, &d, rtt) < heavy.ewma_cost(t0, &d, rtt));
    assert!(light.pending_cost() < heavy.pending_cost());
    assert_eq!(Load::new(0, t0).pending_cost(), f64::MAX);
}

#[test]
fn many_fast_answers_bring_a_raised_estimate_down_without_waiting_for_time() {
    // All at one instant: the time constant alone would keep 200 ms.
    let (t0, d) = (Instant::now(), decay());
    let load = Load::new(1, t0);
    load.observe(200 * MS, t0, &d);
    load.observe(20 * MS, t0, &d);
    let g = Load::MIN_ANSWER_GAIN;
    let one = 200e6 * (1.0 - g) + 20e6 * g;
    assert_eq!(load.rtt(t0, &d), Some(Duration::from_nanos(one as u64)));
    // 180 ms above the answers shrinks by (1 - g) per answer: below 20 ms
    // of excess after ln(9) / g answers (about 563).
    let n = (9f64.ln() / -(1.0 - g).ln()).ceil() as usize;
    for _ in 1..n {
        load.observe(20 * MS, t0, &d);
    }
    let rtt = load.rtt(t0, &d).unwrap();
    assert!(rtt <= 40 * MS && rtt > 39 * MS, "{rtt:?}");
}

#[test]
fn what_every_call_touches_comes_first() {
    use std::mem::offset_of;
    assert_eq!(Load::HOT_BYTES, 44);
    for field in [
        offset_of!(Load, calls),
        offset_of!(Load, rtt_ns),
        offset_of!(Load, stamp_ns),
        offset_of!(Load, failure),
        offset_of!(Load, answered_ns),
    ] {
        assert!(field + 8 <= Load::HOT_BYTES);
    }
}
