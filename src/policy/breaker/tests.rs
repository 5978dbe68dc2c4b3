//! Tests of the breaker core, the shared breaker and the layer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tower::{Layer, Service, ServiceExt};

use super::*;
use crate::error::{BoxError, Error};
use crate::rng::Rng;

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

/// All triggers off: each test turns on the one it checks.
fn base() -> BreakerSettings {
    BreakerSettings::default()
        .with_consecutive_failures(None)
        .with_failure_rate(None)
}

/// Runs one admitted call through the core.
fn call(
    core: &mut BreakerCore,
    failed: bool,
    took: Duration,
    now: Instant,
    rng: &mut Rng,
) -> Option<Transition> {
    let (admission, _) = core.try_acquire(now);
    core.record(admission.expect("admitted"), failed, took, now, rng)
}

fn opened(t: Option<Transition>) -> bool {
    t.is_some_and(|t| t.to == BreakerState::Open)
}

#[test]
fn consecutive_failures_open_exactly_at_the_threshold() {
    let mut rng = Rng::seeded(1);
    let now = Instant::now();
    let mut core = BreakerCore::new(base().with_consecutive_failures(Some(5)));
    // A success in between restarts the count.
    for _ in 0..4 {
        assert!(!opened(call(&mut core, true, MS, now, &mut rng)));
    }
    call(&mut core, false, MS, now, &mut rng);
    for _ in 0..4 {
        assert!(!opened(call(&mut core, true, MS, now, &mut rng)));
    }
    assert_eq!(core.state(), BreakerState::Closed);
    assert!(opened(call(&mut core, true, MS, now, &mut rng)));
    assert_eq!(core.state(), BreakerState::Open);
}

#[test]
fn failure_rate_opens_exactly_at_the_threshold_once_min_calls_are_seen() {
    let mut rng = Rng::seeded(2);
    let now = Instant::now();
    let settings = base()
        .with_failure_rate(Some(0.5))
        .with_window(Window::Count(10))
        .with_min_calls(10);
    let mut core = BreakerCore::new(settings.clone());
    // 5 failures in the first 5 calls: 100%, but fewer than 10 calls.
    for _ in 0..5 {
        assert!(!opened(call(&mut core, true, MS, now, &mut rng)));
    }
    for _ in 0..4 {
        assert!(!opened(call(&mut core, false, MS, now, &mut rng)));
    }
    // The 10th call makes 5 failures of 10 = 50%.
    assert!(opened(call(&mut core, false, MS, now, &mut rng)));

    // 4 of 10 stays closed; sliding the window keeps it at 4 of 10 until a
    // fifth failure enters.
    let mut core = BreakerCore::new(settings);
    let pattern = [
        true, false, true, false, true, false, true, false, false, false,
    ];
    for failed in pattern {
        assert!(!opened(call(&mut core, failed, MS, now, &mut rng)));
    }
    // Slide: the first entry (a failure) leaves as a failure enters.
    assert!(!opened(call(&mut core, true, MS, now, &mut rng)));
    // The second entry (a success) leaves as a failure enters: 5 of 10.
    assert!(opened(call(&mut core, true, MS, now, &mut rng)));
}

#[test]
fn time_window_forgets_old_calls() {
    let mut rng = Rng::seeded(3);
    let t0 = Instant::now();
    let settings = base()
        .with_failure_rate(Some(0.5))
        .with_window(Window::Time(10 * S))
        .with_min_calls(4);
    let mut core = BreakerCore::new(settings);
    for _ in 0..3 {
        call(&mut core, true, MS, t0, &mut rng);
    }
    // Eleven seconds later the three failures are gone: 1 failure of 4.
    let t1 = t0 + 11 * S;
    for _ in 0..3 {
        assert!(!opened(call(&mut core, false, MS, t1, &mut rng)));
    }
    assert!(!opened(call(&mut core, true, MS, t1, &mut rng)));
    // Within the window: 2 of 5 stays closed, 3 of 6 reaches 50%.
    assert!(!opened(call(&mut core, true, MS, t1 + S, &mut rng)));
    assert!(opened(call(&mut core, true, MS, t1 + S, &mut rng)));
}

#[test]
fn slow_call_rate_opens_exactly_at_the_threshold() {
    let mut rng = Rng::seeded(4);
    let now = Instant::now();
    let settings = base()
        .with_slow_calls(Some((100 * MS, 0.5)))
        .with_window(Window::Count(4))
        .with_min_calls(4);
    let mut core = BreakerCore::new(settings);
    assert!(!opened(call(&mut core, false, 100 * MS, now, &mut rng)));
    assert!(!opened(call(&mut core, false, 99 * MS, now, &mut rng)));
    assert!(!opened(call(&mut core, false, 10 * MS, now, &mut rng)));
    // Fourth call, second slow one: 2 of 4 = 50%.
    assert!(opened(call(&mut core, false, S, now, &mut rng)));
}

fn trip(core: &mut BreakerCore, now: Instant, rng: &mut Rng) -> Duration {
    let t = call(core, true, MS, now, rng).expect("opens");
    t.open_for.expect("open time")
}

#[test]
fn half_open_admits_exactly_n_probes_and_closes_when_all_succeed() {
    let mut rng = Rng::seeded(5);
    let t0 = Instant::now();
    let settings = base().with_consecutive_failures(Some(1)).with_probes(3);
    let mut core = BreakerCore::new(settings);
    let open_for = trip(&mut core, t0, &mut rng);
    // Still open just before the open time ends.
    assert_eq!(core.try_acquire(t0 + open_for - MS).0, None);
    let t1 = t0 + open_for;
    let (first, transition) = core.try_acquire(t1);
    assert_eq!(transition.map(|t| t.to), Some(BreakerState::HalfOpen));
    let mut probes = vec![first.unwrap()];
    probes.push(core.try_acquire(t1).0.unwrap());
    probes.push(core.try_acquire(t1).0.unwrap());
    assert!(probes.iter().all(|p| p.is_probe()));
    assert_eq!(core.try_acquire(t1).0, None, "a fourth probe was admitted");
    // An abandoned probe frees its slot.
    core.release(probes.pop().unwrap());
    probes.push(core.try_acquire(t1).0.unwrap());
    assert_eq!(core.try_acquire(t1).0, None);
    let mut last = None;
    for p in probes {
        assert_eq!(core.state(), BreakerState::HalfOpen);
        last = core.record(p, false, MS, t1, &mut rng);
    }
    assert_eq!(last.map(|t| t.to), Some(BreakerState::Closed));
}

#[test]
fn each_reopen_lengthens_the_open_time_up_to_the_cap() {
    let mut rng = Rng::seeded(6);
    let settings = base()
        .with_consecutive_failures(Some(1))
        .with_open_time(S, 2.0, 10 * S)
        .with_open_jitter(0.2)
        .with_probes(1);
    let mut core = BreakerCore::new(settings);
    let mut now = Instant::now();
    let mut times = vec![trip(&mut core, now, &mut rng)];
    for _ in 0..6 {
        now = core.open_until().unwrap();
        let (probe, _) = core.try_acquire(now);
        let t = core
            .record(probe.unwrap(), true, MS, now, &mut rng)
            .unwrap();
        assert_eq!((t.from, t.to), (BreakerState::HalfOpen, BreakerState::Open));
        times.push(t.open_for.unwrap());
    }
    let ceilings = [1, 2, 4, 8, 10, 10, 10].map(|s| s * S);
    for (t, c) in times.iter().zip(ceilings) {
        assert!(*t <= c && *t >= c.mul_f64(0.8), "{times:?}");
    }
    // Strictly longer while the ceiling doubles (2 × 0.8 > 1).
    assert!(times[..4].windows(2).all(|w| w[1] > w[0]), "{times:?}");
    // A successful probe closes the breaker and the growth starts over.
    now = core.open_until().unwrap();
    let (probe, _) = core.try_acquire(now);
    core.record(probe.unwrap(), false, MS, now, &mut rng);
    assert_eq!(core.state(), BreakerState::Closed);
    assert!(trip(&mut core, now, &mut rng) <= S);
}

#[test]
fn results_from_before_a_state_change_are_ignored() {
    let mut rng = Rng::seeded(7);
    let now = Instant::now();
    let mut core = BreakerCore::new(base().with_consecutive_failures(Some(2)));
    let (old, _) = core.try_acquire(now);
    core.force_open();
    core.reset();
    assert!(core.record(old.unwrap(), true, MS, now, &mut rng).is_none());
    call(&mut core, true, MS, now, &mut rng);
    // Only one failure counted since the reset.
    assert_eq!(core.state(), BreakerState::Closed);
}

#[tokio::test]
async fn transitions_are_published_gauged_and_forcing_holds() {
    use metrics_util::debugging::DebugValue;
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let gauge = || {
        let found: Vec<f64> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(k, ..)| k.key().name() == crate::policy::metrics::BREAKER_STATE)
            .map(|(k, _, _, v)| {
                assert!(
                    k.key()
                        .labels()
                        .any(|l| l.key() == "breaker" && l.value() == "b1")
                );
                match v {
                    DebugValue::Gauge(g) => g.into_inner(),
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(found.len(), 1, "one state gauge per breaker");
        found[0]
    };
    let breaker = metrics::with_local_recorder(&recorder, || {
        CircuitBreaker::named(base().with_consecutive_failures(Some(1)), "b1").unwrap()
    });
    assert_eq!(gauge(), 0.0, "a new breaker reports closed at once");
    let mut events = breaker.subscribe();
    let now = Instant::now();
    let failed = crate::classify::Outcome::Failure { retryable: true };
    let a = breaker.try_acquire(now).unwrap();
    breaker.record(a, failed, MS, now);
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(gauge(), 2.0);
    assert!(events.has_changed().unwrap());
    assert_eq!(*events.borrow_and_update(), BreakerState::Open);
    // Past the longest possible open time the next call is a probe.
    let later = now + 3600 * S;
    let probe = breaker.try_acquire(later).unwrap();
    assert!(probe.is_probe());
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert_eq!(gauge(), 1.0);
    breaker.release(probe);

    breaker.force_close();
    assert_eq!(gauge(), 0.0);
    for _ in 0..10 {
        let a = breaker.try_acquire(now).unwrap();
        breaker.record(a, failed, MS, now);
    }
    assert_eq!(breaker.state(), BreakerState::ForcedClosed);
    breaker.force_open();
    assert_eq!(gauge(), 2.0);
    assert!(breaker.try_acquire(now + 3600 * S).is_none());
    assert!(!breaker.would_admit(now + 3600 * S));
    breaker.reset();
    assert_eq!(*events.borrow_and_update(), BreakerState::Closed);
    assert_eq!(gauge(), 0.0);
}

#[test]
fn an_endpoint_breaker_is_gauged_by_channel_and_endpoint() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let endpoint: std::net::SocketAddr = "10.0.0.7:8080".parse().unwrap();
    let breaker = metrics::with_local_recorder(&recorder, || {
        CircuitBreaker::for_endpoint(base().with_consecutive_failures(Some(1)), "api", endpoint)
            .unwrap()
    });
    assert_eq!(breaker.name(), "api/10.0.0.7:8080");
    let labels: Vec<Vec<(String, String)>> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| k.key().name() == crate::policy::metrics::BREAKER_STATE)
        .map(|(k, ..)| {
            k.key()
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect()
        })
        .collect();
    let want = [
        ("channel".to_string(), "api".to_string()),
        ("endpoint".to_string(), "10.0.0.7:8080".to_string()),
    ];
    assert_eq!(labels, [want.to_vec()]);
}

#[test]
fn retuning_keeps_the_state() {
    let breaker = CircuitBreaker::new(base().with_consecutive_failures(Some(1))).unwrap();
    let now = Instant::now();
    let a = breaker.try_acquire(now).unwrap();
    breaker.record(
        a,
        crate::classify::Outcome::Failure { retryable: true },
        MS,
        now,
    );
    breaker
        .set_settings(base().with_consecutive_failures(Some(9)))
        .unwrap();
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(breaker.settings().consecutive_failures(), Some(9));
    assert!(breaker.set_settings(base()).is_err());
}

#[tokio::test(start_paused = true)]
async fn layer_fails_fast_without_calling_the_inner_service() {
    let calls = crate::policy::tests::Count::default();
    let c = calls.clone();
    let inner = tower::service_fn(move |_: u32| {
        c.bump();
        async { Err::<u32, BoxError>("down".into()) }
    });
    let layer = CircuitBreakerLayer::new(base().with_consecutive_failures(Some(3))).unwrap();
    let svc = layer.layer(inner);
    for _ in 0..3 {
        assert!(matches!(svc.clone().oneshot(1).await, Err(Error::Inner(_))));
    }
    assert_eq!(layer.breaker().state(), BreakerState::Open);
    for _ in 0..100 {
        assert!(matches!(
            svc.clone().oneshot(1).await,
            Err(Error::CircuitOpen)
        ));
    }
    assert_eq!(calls.get(), 3, "the inner service was called while open");
}

#[tokio::test(start_paused = true)]
async fn layer_gives_back_the_probe_of_a_dropped_call() {
    let hang = tower::service_fn(|_: u32| std::future::pending::<Result<u32, BoxError>>());
    let settings = base().with_consecutive_failures(Some(1)).with_probes(1);
    let breaker = Arc::new(CircuitBreaker::new(settings).unwrap());
    let layer = CircuitBreakerLayer::with_breaker(breaker.clone());
    let now = crate::policy::now();
    let a = breaker.try_acquire(now).unwrap();
    breaker.record(
        a,
        crate::classify::Outcome::Failure { retryable: true },
        MS,
        now,
    );
    tokio::time::advance(60 * S).await;
    let mut svc = layer.layer(hang);
    let fut = svc.call(1);
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert!(matches!(svc.call(2).await, Err(Error::CircuitOpen)));
    drop(fut);
    // The slot is free again.
    assert!(breaker.try_acquire(crate::policy::now()).is_some());
}

#[test]
fn random_call_sequences_keep_the_invariants() {
    // Seeded random admissions, results, abandons and clock steps: at no
    // point may an open breaker admit a call before its time, may more
    // than `probes` probes be outstanding, or may an open time pass the cap.
    let cap = 8 * S;
    let (mut opens, mut closes_from_half_open) = (0, 0);
    for seed in 0..50 {
        let mut rng = Rng::seeded(seed);
        let settings = base()
            .with_consecutive_failures(Some(3))
            .with_failure_rate(Some(0.5))
            .with_window(Window::Count(10))
            .with_min_calls(5)
            .with_open_time(S, 2.0, cap)
            .with_probes(2);
        let mut core = BreakerCore::new(settings);
        let mut now = Instant::now();
        let mut outstanding: Vec<Admission> = Vec::new();
        for _ in 0..2_000 {
            match rng.below(4) {
                0 => {
                    let (admitted, _) = core.try_acquire(now);
                    if let Some(a) = admitted {
                        assert!(
                            core.state() != BreakerState::Open,
                            "admitted while open (seed {seed})"
                        );
                        outstanding.push(a);
                    }
                }
                1 | 2 if !outstanding.is_empty() => {
                    let a = outstanding.swap_remove(rng.below(outstanding.len()));
                    let failed = rng.unit() < 0.6;
                    if let Some(t) = core.record(a, failed, MS, now, &mut rng) {
                        assert!(t.open_for.is_none_or(|d| d <= cap), "seed {seed}: {t:?}");
                        if t.to == BreakerState::Open {
                            assert!(core.open_until().unwrap() > now);
                            opens += 1;
                        }
                        if (t.from, t.to) == (BreakerState::HalfOpen, BreakerState::Closed) {
                            closes_from_half_open += 1;
                        }
                    }
                }
                3 if !outstanding.is_empty() && rng.below(4) == 0 => {
                    core.release(outstanding.swap_remove(rng.below(outstanding.len())));
                }
                _ => now += Duration::from_millis(rng.below(700) as u64),
            }
            if core.state() == BreakerState::HalfOpen {
                let generation = core.generation();
                let probes = outstanding
                    .iter()
                    .filter(|a| a.is_probe() && a.generation == generation)
                    .count();
                assert!(probes <= 2, "seed {seed}: {probes} probes outstanding");
            }
        }
    }
    // The walk went round the whole cycle many times.
    assert!(
        opens > 100 && closes_from_half_open > 10,
        "{opens} opens, {closes_from_half_open} closes"
    );
}

#[test]
fn successes_skipped_without_the_lock_are_exactly_those_the_core_would_not_notice() {
    let failed = Outcome::Failure { retryable: true };
    let windows = [
        (Window::Count(1), 1, None),
        (Window::Count(4), 2, None),
        (Window::Count(20), 5, Some((10 * MS, 0.5))),
        (Window::Time(S), 3, None),
    ];
    for (window, min_calls, slow) in windows {
        let settings = BreakerSettings::default()
            .with_consecutive_failures(Some(3))
            .with_failure_rate(Some(0.5))
            .with_slow_calls(slow)
            .with_window(window)
            .with_min_calls(min_calls)
            .with_open_time(S, 2.0, 8 * S)
            .with_open_jitter(0.0)
            .with_probes(2);
        // The shared breaker against its core alone, fed the same calls.
        let shared = CircuitBreaker::new(settings.clone()).unwrap();
        let mut core = BreakerCore::new(settings);
        let mut rng = Rng::seeded(11);
        let mut now = Instant::now();
        let mut skipped = 0;
        for step in 0..20_000 {
            now += MS * rng.below(300) as u32;
            let admission = shared.try_acquire(now);
            assert_eq!(admission, core.try_acquire(now).0, "{window:?} step {step}");
            let Some(admission) = admission else {
                continue;
            };
            let fails = rng.below(8) == 0;
            let took = if rng.below(16) == 0 { 30 * MS } else { MS };
            let outcome = if fails { failed } else { Outcome::Success };
            let slow_call = slow.is_some_and(|(after, _)| took >= after);
            if !fails && !slow_call && shared.quiet.load(Ordering::Relaxed) == admission.generation
            {
                // Skipped: the core must not notice this success.
                assert!(core.success_changes_nothing(), "{window:?} step {step}");
                skipped += 1;
            }
            let got = shared.record(admission, outcome, took, now);
            let want = core.record(admission, fails, took, now, &mut rng);
            assert_eq!(got, want, "{window:?} step {step}");
            assert_eq!(shared.state(), core.state(), "{window:?} step {step}");
        }
        match window {
            Window::Count(_) => assert!(skipped > 100, "{window:?}: {skipped} skipped"),
            Window::Time(_) => assert_eq!(skipped, 0),
        }
    }
}
