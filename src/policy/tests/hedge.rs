use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::{CancelGuard, Count};
use crate::error::{BoxError, Error};
use crate::policy::HedgeLayer;
use crate::policy::budget::BudgetSettings;
use crate::policy::hedge::{HedgeDelay, HedgeSettings};
use crate::rng::{Rng, seed_thread_rng};

const MS: Duration = Duration::from_millis(1);

/// A backend whose latency for call `n` is `latency(n)` (`None`: never
/// answers) and which fails when `fails(n)`. Counts calls and cancelled
/// (dropped unfinished) calls.
fn backend(
    calls: &Count,
    cancelled: &Count,
    latency: impl Fn(usize) -> Option<Duration> + Clone + Send + 'static,
    fails: impl Fn(usize) -> bool + Clone + Send + 'static,
) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send {
    let (calls, cancelled) = (calls.clone(), cancelled.clone());
    tower::service_fn(move |x: u32| {
        let n = calls.bump();
        let guard = CancelGuard::new(&cancelled);
        let latency = latency(n);
        let failed = fails(n);
        async move {
            match latency {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
            guard.finish();
            if failed {
                Err::<u32, BoxError>("failed".into())
            } else {
                Ok(x)
            }
        }
    })
}

fn ample_budget() -> BudgetSettings {
    BudgetSettings::new(1.0, 100, Duration::from_secs(10)).unwrap()
}

#[tokio::test(start_paused = true)]
async fn p95_hedging_cuts_the_tail_within_budget_and_cancels_losers() {
    seed_thread_rng(5);
    let rng = Arc::new(Mutex::new(Rng::seeded(42)));
    let (calls, cancelled) = (Count::default(), Count::default());
    // 1% of calls take 1 s, the rest 5–15 ms (uniform).
    let latency = move |_| {
        let mut rng = rng.lock();
        Some(if rng.unit() < 0.01 {
            Duration::from_secs(1)
        } else {
            Duration::from_micros(5_000 + (rng.unit() * 10_000.0) as u64)
        })
    };
    let layer = HedgeLayer::new(HedgeSettings::default()).unwrap();
    let svc = layer.layer(backend(&calls, &cancelled, latency, |_| false));
    let n = 10_000;
    let mut latencies = Vec::with_capacity(n);
    for batch in 0..100u32 {
        let wave = (0..100u32).map(|i| {
            let mut svc = svc.clone();
            async move {
                let t0 = Instant::now();
                svc.ready().await.unwrap();
                svc.call(batch * 100 + i).await.unwrap();
                t0.elapsed()
            }
        });
        latencies.extend(futures_util::future::join_all(wave).await);
    }
    latencies.sort();
    let p999 = latencies[(n * 999).div_ceil(1000) - 1];
    let extra = calls.get() - n;
    println!(
        "hedge: p50 {:?} p99 {:?} p99.9 {p999:?} max {:?}; {extra} hedges ({:.2}% extra load), {} losers cancelled",
        latencies[n / 2 - 1],
        latencies[n * 99 / 100 - 1],
        latencies[n - 1],
        extra as f64 * 100.0 / n as f64,
        cancelled.get()
    );
    assert!(p999 < Duration::from_millis(35), "p99.9 = {p999:?}");
    // Within the 10% hedge budget (no floor by default).
    assert!(
        extra as f64 <= BudgetSettings::hedge_default().allowance(n as u64),
        "{extra}"
    );
    // The hedges did real work: the 1% of 1 s calls were rescued.
    assert!(extra >= n / 100, "{extra}");
    // Every hedged call has exactly one loser, and it was dropped.
    assert_eq!(cancelled.get(), extra);
}

#[tokio::test(start_paused = true)]
async fn up_to_four_extra_attempts_and_first_success_wins() {
    let (calls, cancelled) = (Count::default(), Count::default());
    // The first four attempts hang; the fifth answers in 5 ms.
    let svc = backend(
        &calls,
        &cancelled,
        |n| (n >= 4).then_some(5 * MS),
        |_| false,
    );
    let settings = HedgeSettings::default()
        .with_delay(HedgeDelay::Fixed(10 * MS))
        .with_max_extra(4)
        .with_budget(ample_budget());
    let t0 = Instant::now();
    let out = HedgeLayer::new(settings)
        .unwrap()
        .layer(svc)
        .oneshot(9)
        .await;
    assert_eq!(out.unwrap(), 9);
    assert_eq!(t0.elapsed(), 45 * MS);
    assert_eq!(calls.get(), 5);
    assert_eq!(cancelled.get(), 4);
}

#[tokio::test(start_paused = true)]
async fn retryable_failure_waits_for_the_pending_hedge() {
    let (calls, cancelled) = (Count::default(), Count::default());
    // Primary fails at 20 ms; the hedge (sent at 10 ms) succeeds at 25 ms.
    let svc = backend(
        &calls,
        &cancelled,
        |n| Some(if n == 0 { 20 * MS } else { 15 * MS }),
        |n| n == 0,
    );
    let settings = HedgeSettings::default()
        .with_delay(HedgeDelay::Fixed(10 * MS))
        .with_budget(ample_budget());
    let t0 = Instant::now();
    let out = HedgeLayer::new(settings)
        .unwrap()
        .layer(svc)
        .oneshot(1)
        .await;
    assert_eq!(out.unwrap(), 1);
    assert_eq!(t0.elapsed(), 25 * MS);
    assert_eq!(cancelled.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn non_retryable_failure_ends_the_call_and_cancels_the_rest() {
    let (calls, cancelled) = (Count::default(), Count::default());
    let svc = backend(
        &calls,
        &cancelled,
        |n| Some(if n == 0 { 20 * MS } else { 50 * MS }),
        |n| n == 0,
    );
    let fatal = |r: &Result<u32, BoxError>| match r {
        Ok(_) => crate::classify::Outcome::Success,
        Err(_) => crate::classify::Outcome::Failure { retryable: false },
    };
    let settings = HedgeSettings::default()
        .with_delay(HedgeDelay::Fixed(10 * MS))
        .with_budget(ample_budget());
    let layer = HedgeLayer::new(settings).unwrap().with_classify(fatal);
    let t0 = Instant::now();
    let err = layer.layer(svc).oneshot(1).await.unwrap_err();
    assert!(matches!(err, Error::Inner(_)));
    assert_eq!(t0.elapsed(), 20 * MS);
    assert_eq!((calls.get(), cancelled.get()), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn no_hedge_without_budget_or_replay() {
    let (calls, cancelled) = (Count::default(), Count::default());
    let slow = |_| Some(100 * MS);
    let fixed = HedgeSettings::default().with_delay(HedgeDelay::Fixed(10 * MS));
    // Default hedge budget: no floor, so a single call has no token.
    let layer = HedgeLayer::new(fixed.clone()).unwrap();
    layer
        .layer(backend(&calls, &cancelled, slow, |_| false))
        .oneshot(1)
        .await
        .unwrap();
    assert_eq!(calls.get(), 1);
    // Budget to spare, but the request cannot be copied.
    let layer = HedgeLayer::new(fixed.with_budget(ample_budget()))
        .unwrap()
        .with_replay(|_: &u32| None);
    layer
        .layer(backend(&calls, &cancelled, slow, |_| false))
        .oneshot(1)
        .await
        .unwrap();
    assert_eq!(calls.get(), 2);
}
