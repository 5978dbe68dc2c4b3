use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::{Count, flaky};
use crate::classify::Outcome;
use crate::error::{BoxError, Error};
use crate::policy::RetryLayer;
use crate::policy::backoff::{Backoff, Jitter};
use crate::policy::budget::BudgetSettings;
use crate::policy::retry::RetrySettings;
use crate::rng::seed_thread_rng;

const MS: Duration = Duration::from_millis(1);

fn quick() -> RetrySettings {
    RetrySettings::default().with_backoff(Backoff::new(MS, 2.0, 10 * MS).unwrap())
}

#[tokio::test(start_paused = true)]
async fn k_minus_one_failures_then_success_succeeds_on_attempt_k() {
    seed_thread_rng(1);
    for k in 1..=5u32 {
        let calls = Count::default();
        let layer = RetryLayer::new(quick().with_max_attempts(5)).unwrap();
        let out = layer.layer(flaky(k as usize - 1, &calls)).oneshot(7).await;
        assert_eq!(out.unwrap(), 7, "k={k}");
        assert_eq!(calls.get(), k as usize);
    }
    // One failure too many: all attempts are spent and the last error kept.
    let calls = Count::default();
    let layer = RetryLayer::new(quick()).unwrap();
    let err = layer.layer(flaky(3, &calls)).oneshot(7).await.unwrap_err();
    assert!(
        matches!(&err, Error::RetriesExhausted { attempts: 3, last } if matches!(**last, Error::Inner(_))),
        "{err:?}"
    );
    assert_eq!(calls.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn non_retryable_failure_is_not_retried() {
    let calls = Count::default();
    let fatal = |r: &Result<u32, BoxError>| match r {
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure { retryable: false },
    };
    let layer = RetryLayer::new(quick()).unwrap().with_classify(fatal);
    let err = layer.layer(flaky(10, &calls)).oneshot(1).await.unwrap_err();
    assert!(matches!(err, Error::Inner(_)), "{err:?}");
    assert_eq!(calls.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn request_that_cannot_be_replayed_is_sent_once() {
    let calls = Count::default();
    let layer = RetryLayer::new(quick())
        .unwrap()
        .with_replay(|_: &u32| None);
    let err = layer.layer(flaky(10, &calls)).oneshot(1).await.unwrap_err();
    assert!(matches!(err, Error::Inner(_)), "{err:?}");
    assert_eq!(calls.get(), 1);
}

/// A backend that fails every call after `latency`, noting when each
/// attempt started.
fn slow_failing(
    latency: Duration,
    starts: std::sync::Arc<parking_lot::Mutex<Vec<Instant>>>,
) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone {
    tower::service_fn(move |_: u32| {
        starts.lock().push(Instant::now());
        async move {
            tokio::time::sleep(latency).await;
            Err::<u32, BoxError>("down".into())
        }
    })
}

/// Runs one call under a 100 ms retry deadline against a backend failing
/// after `latency`, with unjittered backoff from `base`: how long the call
/// took, how many attempts started, and its error.
async fn under_100ms_deadline(base: Duration, latency: Duration) -> (Duration, usize, Error) {
    let starts = std::sync::Arc::default();
    let settings = RetrySettings::default()
        .with_max_attempts(10)
        .with_backoff(
            Backoff::new(base, 2.0, MS * 1000)
                .unwrap()
                .with_jitter(Jitter::None),
        )
        .with_deadline(100 * MS);
    let layer = RetryLayer::new(settings).unwrap();
    let t0 = Instant::now();
    let err = layer
        .layer(slow_failing(latency, std::sync::Arc::clone(&starts)))
        .oneshot(1)
        .await
        .unwrap_err();
    let attempts = starts.lock().len();
    (t0.elapsed(), attempts, err)
}

#[tokio::test(start_paused = true)]
async fn deadline_stops_retries_that_cannot_fit() {
    let (elapsed, attempts, err) = under_100ms_deadline(20 * MS, 30 * MS).await;
    // Attempt 1: 0–30 ms, pause 20 ms, attempt 2: 50–80 ms; a 40 ms pause
    // would end at 120 ms, past the deadline: stop at once, at 80 ms.
    assert_eq!(elapsed, 80 * MS);
    assert_eq!(attempts, 2);
    assert!(
        matches!(&err, Error::DeadlineExceeded { deadline, last: Some(last) } if *deadline == 100 * MS && matches!(**last, Error::Inner(_))),
        "{err:?}"
    );
    assert!(err.is_timeout());
}

#[tokio::test(start_paused = true)]
async fn deadline_cuts_an_attempt_in_flight_and_keeps_the_last_error() {
    let (elapsed, attempts, err) = under_100ms_deadline(10 * MS, 60 * MS).await;
    // Attempt 1 fails at 60 ms, attempt 2 starts at 70 ms and is cut at
    // exactly 100 ms.
    assert_eq!(elapsed, 100 * MS);
    assert_eq!(attempts, 2);
    assert!(
        matches!(&err, Error::DeadlineExceeded { last: Some(_), .. }),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_is_retried() {
    seed_thread_rng(2);
    let calls = Count::default();
    let c = calls.clone();
    // The first attempt hangs, the second answers.
    let svc = tower::service_fn(move |x: u32| {
        let n = c.bump();
        async move {
            if n == 0 {
                std::future::pending::<()>().await;
            }
            Ok::<_, BoxError>(x)
        }
    });
    let settings = quick().with_attempt_timeout(50 * MS);
    let t0 = Instant::now();
    let out = RetryLayer::new(settings)
        .unwrap()
        .layer(svc)
        .oneshot(3)
        .await;
    assert_eq!(out.unwrap(), 3);
    assert_eq!(calls.get(), 2);
    // 50 ms timeout plus a pause of at most the first backoff ceiling (1 ms).
    assert!(
        t0.elapsed() >= 50 * MS && t0.elapsed() <= 51 * MS,
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn measured_backoff_delays_stay_within_jitter_bounds() {
    seed_thread_rng(3);
    for jitter in [
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
        Jitter::None,
    ] {
        let backoff = Backoff::new(10 * MS, 2.0, 80 * MS)
            .unwrap()
            .with_jitter(jitter);
        let settings = RetrySettings::default()
            .with_max_attempts(6)
            .with_backoff(backoff)
            .with_budget(BudgetSettings::new(1.0, 1000, Duration::from_secs(10)).unwrap());
        let layer = RetryLayer::new(settings).unwrap();
        for _call in 0..50 {
            let starts = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
            let svc = layer.layer(slow_failing(Duration::ZERO, starts.clone()));
            assert!(svc.oneshot(1).await.is_err());
            let starts = starts.lock();
            assert_eq!(starts.len(), 6);
            let mut previous = Duration::ZERO;
            for (retry, pair) in starts.windows(2).enumerate() {
                let pause = pair[1] - pair[0];
                let (lo, hi) = backoff.bounds(retry as u32, previous);
                // The paused clock advances in whole milliseconds when
                // it sleeps: allow that rounding up.
                assert!(
                    pause >= lo && pause <= hi + MS,
                    "{jitter:?} retry {retry}: {pause:?} not in [{lo:?}, {hi:?}]"
                );
                previous = pause;
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn server_retry_after_is_honoured() {
    let calls = Count::default();
    let busy = |r: &Result<u32, BoxError>| match r {
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Overloaded {
            retry_after: Some(Duration::from_millis(300)),
        },
    };
    let layer = RetryLayer::new(quick()).unwrap().with_classify(busy);
    let t0 = Instant::now();
    let out = layer.layer(flaky(1, &calls)).oneshot(5).await;
    assert_eq!(out.unwrap(), 5);
    assert_eq!(t0.elapsed(), Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn budget_caps_attempts_against_an_always_failing_backend() {
    seed_thread_rng(4);
    let calls = Count::default();
    let layer = RetryLayer::new(quick()).unwrap();
    let mut svc = layer.layer(flaky(usize::MAX, &calls));
    let mut pending = Vec::new();
    for i in 0..1_000 {
        svc.ready().await.unwrap();
        pending.push(svc.call(i));
    }
    let results = futures_util::future::join_all(pending).await;
    let budget_refusals = results
        .iter()
        .filter(|r| matches!(r, Err(Error::BudgetExhausted { .. })))
        .count();
    let attempts = calls.get();
    // 1,000 calls × (1 + 20%) + 10/s × 10 s floor.
    let bound = BudgetSettings::retry_default().allowance(1_000) + 1_000.0;
    println!(
        "budget: 1000 requests made {attempts} attempts (bound {bound}), {budget_refusals} refused"
    );
    assert!(attempts as f64 <= bound, "{attempts} > {bound}");
    assert_eq!(attempts, 1_300, "the budget should be spent exactly");
    assert!(budget_refusals > 0);
}

#[tokio::test(start_paused = true)]
async fn runtime_change_of_max_attempts_applies_to_the_next_call() {
    let layer = RetryLayer::new(quick()).unwrap();
    let handle = layer.handle();
    let calls = Count::default();
    let svc = layer.layer(flaky(usize::MAX, &calls));
    assert!(svc.clone().oneshot(1).await.is_err());
    assert_eq!(calls.get(), 3);
    handle.set(quick().with_max_attempts(5)).unwrap();
    assert!(svc.clone().oneshot(1).await.is_err());
    assert_eq!(calls.get(), 8);
    // Invalid settings are refused and the old ones stay.
    assert_eq!(
        handle
            .set(quick().with_max_attempts(0))
            .unwrap_err()
            .setting(),
        "retry.max_attempts"
    );
    assert_eq!(handle.settings().max_attempts(), 5);
}

/// Retries without any timer (no timeout, deadline or hedging): the first
/// attempt is awaited without the call machine, which is built only when
/// it fails; the retry then follows its backoff as usual.
#[tokio::test(start_paused = true)]
async fn a_slow_first_failure_is_retried_after_its_backoff() {
    seed_thread_rng(3);
    let calls = Count::default();
    let counted = calls.clone();
    let slow = tower::service_fn(move |x: u32| {
        let n = counted.bump();
        async move {
            tokio::time::sleep(20 * MS).await;
            if n == 0 {
                Err::<u32, BoxError>("boom".into())
            } else {
                Ok(x)
            }
        }
    });
    let backoff = Backoff::new(5 * MS, 2.0, 10 * MS)
        .unwrap()
        .with_jitter(Jitter::None);
    let layer = RetryLayer::new(RetrySettings::default().with_backoff(backoff)).unwrap();
    let start = Instant::now();
    let out = layer.layer(slow).oneshot(9).await;
    assert_eq!(out.unwrap(), 9);
    assert_eq!(calls.get(), 2);
    // 20 ms for the failure, 5 ms of backoff, 20 ms for the success.
    assert_eq!(start.elapsed(), 45 * MS);
}
