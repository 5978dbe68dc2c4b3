//! Layer tests on tokio's paused clock, against a backend that serves `k`
//! calls at a time from one FIFO queue.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::*;
use crate::classify::Outcome;
use crate::error::{BoxError, Error};
use crate::rng::Rng;

const MS: Duration = Duration::from_millis(1);

/// `k` servers behind one FIFO queue, each call taking `service`.
fn fifo(
    k: usize,
    service: Duration,
) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send + 'static {
    let servers = Arc::new(Semaphore::new(k));
    tower::service_fn(move |x: u32| {
        let servers = servers.clone();
        async move {
            let _server = servers.acquire_owned().await?;
            tokio::time::sleep(service).await;
            Ok::<_, BoxError>(x)
        }
    })
}

#[derive(Debug, Clone, Copy)]
struct Call {
    /// Seconds since the start when the call arrived.
    at: f64,
    latency: Duration,
    admitted: bool,
    /// The limit in force when it arrived.
    limit: usize,
}

/// Offered load, as a multiple of capacity, at `t` seconds: 0.5× for 5 s,
/// up to 2× by 8 s, 2× until 20 s, back to 0.5× by 22 s, 0.5× until 30 s.
fn offered(t: f64) -> f64 {
    let points = [(0.0, 0.5), (5.0, 0.5), (8.0, 2.0), (20.0, 2.0), (22.0, 0.5)];
    let mut rate = 0.5;
    for pair in points.windows(2) {
        let ((t0, r0), (t1, r1)) = (pair[0], pair[1]);
        if t >= t0 && t < t1 {
            rate = r0 + (r1 - r0) * (t - t0) / (t1 - t0);
        }
    }
    rate
}

const K: usize = 10;
const SERVICE: Duration = Duration::from_millis(20);
const END: f64 = 30.0;

/// Open-loop Poisson arrivals (seeded) at `offered(t) × capacity` through
/// `layer` in front of the FIFO backend; every call's record, in arrival
/// order.
async fn ramp(layer: AdaptiveLimitLayer) -> Vec<Call> {
    let handle = layer.handle();
    let capacity = K as f64 / SERVICE.as_secs_f64();
    let svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(fifo(K, SERVICE));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let mut rng = Rng::seeded(7);
    let start = Instant::now();
    let mut t = 0.0;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        t += -(1.0 - rng.unit()).ln() / (offered(t) * capacity);
        if t >= END {
            break;
        }
        tokio::time::sleep_until(start + Duration::from_secs_f64(t)).await;
        let (mut svc, calls) = (svc.clone(), calls.clone());
        let limit = handle.limit();
        tasks.spawn(async move {
            let began = Instant::now();
            let result = svc.ready().await.unwrap().call(1).await;
            let admitted = match result {
                Ok(_) => true,
                Err(Error::Overloaded) => false,
                Err(e) => panic!("unexpected {e}"),
            };
            calls.lock().push(Call {
                at: (began - start).as_secs_f64(),
                latency: began.elapsed(),
                admitted,
                limit,
            });
        });
    }
    while tasks.join_next().await.is_some() {}
    let mut calls = std::mem::take(&mut *calls.lock());
    calls.sort_by(|a, b| a.at.total_cmp(&b.at));
    calls
}

fn between(calls: &[Call], from: f64, to: f64) -> Vec<Call> {
    calls
        .iter()
        .filter(|c| c.at >= from && c.at < to)
        .copied()
        .collect()
}

fn p99(calls: &[Call]) -> Duration {
    let mut l: Vec<Duration> = calls
        .iter()
        .filter(|c| c.admitted)
        .map(|c| c.latency)
        .collect();
    l.sort();
    l[l.len() * 99 / 100]
}

#[tokio::test(start_paused = true)]
async fn gradient_holds_latency_at_overload_and_recovers() {
    let layer = AdaptiveLimitLayer::new(LimitSettings::default().with_jitter_seed(3)).unwrap();
    let handle = layer.handle();
    let calls = ramp(layer).await;
    let capacity = K as f64 / SERVICE.as_secs_f64();

    // At 2× for the last 8 s of the overload: the service stays busy, the
    // excess is refused at once, admitted calls wait little.
    let overload = between(&calls, 12.0, 20.0);
    let served = overload.iter().filter(|c| c.admitted).count() as f64 / 8.0;
    assert!(
        served >= 0.9 * capacity,
        "goodput {served:.0}/s of {capacity:.0}/s"
    );
    let refused: Vec<_> = overload.iter().filter(|c| !c.admitted).collect();
    assert!(refused.len() as f64 > 0.3 * overload.len() as f64);
    assert!(
        refused.iter().all(|c| c.latency.is_zero()),
        "a refusal waited"
    );
    let unloaded = p99(&between(&calls, 1.0, 5.0));
    let loaded = p99(&overload);
    assert!(
        loaded <= unloaded * 3,
        "p99 {loaded:?} vs {unloaded:?} unloaded"
    );
    // The limit sits near the capacity, k calls at a time: at most
    // 1.25 k + √limit, plus the smoothing's lag.
    let (lo, hi) = overload.iter().fold((usize::MAX, 0), |(lo, hi), c| {
        (lo.min(c.limit), hi.max(c.limit))
    });
    assert!(lo >= K && hi <= 2 * K, "limit between {lo} and {hi} at 2x");

    // Load back to 0.5× at 22 s: within 2 s nothing is refused and latency
    // is back where it was.
    let after = between(&calls, 24.0, END);
    assert!(after.iter().all(|c| c.admitted), "refused after recovery");
    assert!(p99(&after) <= unloaded + SERVICE / 2, "{:?}", p99(&after));
    assert!(
        handle.limit() >= K,
        "limit {} below the capacity",
        handle.limit()
    );
    assert_eq!(handle.min_rtt(), Some(SERVICE));
    assert_eq!(handle.in_flight(), 0);
    println!(
        "gradient: goodput {served:.0}/s of {capacity:.0}/s at 2x, p99 {loaded:?} (unloaded {unloaded:?}), \
         limit {lo}..{hi} at 2x, {} refused, limit {} at the end",
        handle.rejected(),
        handle.limit()
    );
}

/// For contrast: the same ramp with no effective limit queues without
/// bound, and latency passes any deadline.
#[tokio::test(start_paused = true)]
async fn without_a_limit_latency_collapses() {
    let none = LimitSettings::new(LimitAlgorithm::Fixed(usize::MAX));
    let calls = ramp(AdaptiveLimitLayer::new(none).unwrap()).await;
    let unloaded = p99(&between(&calls, 1.0, 5.0));
    let loaded = p99(&between(&calls, 12.0, 20.0));
    assert!(calls.iter().all(|c| c.admitted));
    assert!(loaded > unloaded * 50, "p99 {loaded:?} vs {unloaded:?}");
    println!("no limit: p99 {loaded:?} at 2x (unloaded {unloaded:?})");
}

/// A backend that holds every call for `hold`.
fn slow(
    hold: Duration,
) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send + 'static {
    tower::service_fn(move |x: u32| async move {
        tokio::time::sleep(hold).await;
        Ok::<_, BoxError>(x)
    })
}

#[tokio::test(start_paused = true)]
async fn over_the_limit_calls_wait_in_a_bounded_queue() {
    let settings = LimitSettings::new(LimitAlgorithm::Fixed(2)).with_queue(2, 50 * MS);
    let layer = AdaptiveLimitLayer::new(settings).unwrap();
    let handle = layer.handle();
    let svc = layer.layer(slow(30 * MS));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..5 {
        let mut svc = svc.clone();
        tasks.spawn(async move {
            let r = svc.ready().await.unwrap().call(i).await;
            (i, r.is_ok(), start.elapsed())
        });
        tokio::task::yield_now().await;
    }
    let mut results: Vec<_> = tasks.join_all().await;
    results.sort();
    // Two run at once; two wait for them and run next; the fifth finds the
    // queue full and is refused at once.
    let ms = |r: &(u32, bool, Duration)| (r.1, r.2.as_millis());
    let got: Vec<_> = results.iter().map(ms).collect();
    assert_eq!(
        got,
        [(true, 30), (true, 30), (true, 60), (true, 60), (false, 0)]
    );
    assert_eq!((handle.queued(), handle.rejected()), (2, 1));

    // Waiting longer than the limit allows: refused after exactly 50 ms.
    let settings = LimitSettings::new(LimitAlgorithm::Fixed(1)).with_queue(4, 50 * MS);
    let svc = AdaptiveLimitLayer::new(settings)
        .unwrap()
        .layer(slow(200 * MS));
    let (mut a, mut b) = (svc.clone(), svc);
    let first = tokio::spawn(async move { a.ready().await.unwrap().call(1).await });
    tokio::task::yield_now().await;
    let t = Instant::now();
    let second = b.ready().await.unwrap().call(2).await;
    assert!(matches!(second, Err(Error::Overloaded)));
    assert_eq!(t.elapsed(), 50 * MS);
    assert!(first.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn places_come_back_on_cancel_drop_and_unready_calls() {
    let layer = AdaptiveLimitLayer::new(LimitSettings::new(LimitAlgorithm::Fixed(1))).unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(slow(Duration::from_secs(1)));
    // A call cancelled mid-way gives its place back.
    let fut = svc.ready().await.unwrap().call(1);
    assert_eq!(handle.in_flight(), 1);
    drop(fut);
    assert_eq!(handle.in_flight(), 0);
    // A service made ready, then dropped, gives its place back.
    let mut other = svc.clone();
    other.ready().await.unwrap();
    assert_eq!(handle.in_flight(), 1);
    drop(other);
    assert_eq!(handle.in_flight(), 0);
    // A call without poll_ready: admitted if there is room, else refused.
    let running = svc.call(1);
    assert!(matches!(svc.call(2).await, Err(Error::Overloaded)));
    assert!(running.await.is_ok());
    assert_eq!(handle.rejected(), 1);
}

/// AIMD reacts to each kind of result at once, which shows what the layer
/// reports: an overloaded answer and a timeout are drops, another failure
/// teaches nothing, a success may grow the limit.
#[tokio::test(start_paused = true)]
async fn results_are_classified_into_samples() {
    let aimd = AimdSettings::default().with_limits(1, 10, 100);
    let settings = LimitSettings::new(LimitAlgorithm::Aimd(aimd));
    let classify = |r: &Result<u32, BoxError>| match r {
        Ok(503) => Outcome::Overloaded { retry_after: None },
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure { retryable: true },
    };
    let layer = AdaptiveLimitLayer::new(settings)
        .unwrap()
        .with_classify(classify);
    let handle = layer.handle();
    let svc = layer.layer(tower::service_fn(|x: u32| async move {
        tokio::time::sleep(MS).await;
        match x {
            0 => Err::<u32, BoxError>("refused".into()),
            1 => Err(Box::new(Error::AttemptTimeout(MS)) as BoxError),
            x => Ok(x),
        }
    }));
    let call = async |x| svc.clone().oneshot(x).await;
    assert!(call(0).await.is_err());
    assert_eq!(handle.limit(), 10, "a plain failure is ignored");
    assert!(call(503).await.is_ok());
    assert_eq!(handle.limit(), 9, "an overloaded answer is a drop");
    assert!(call(1).await.unwrap_err().is_timeout());
    assert_eq!(handle.limit(), 8, "a timeout is a drop");
}

#[tokio::test(start_paused = true)]
async fn state_shows_as_metrics() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let settings = LimitSettings::new(LimitAlgorithm::Fixed(1)).with_name("api");
    let layer =
        metrics::with_local_recorder(&recorder, || AdaptiveLimitLayer::new(settings)).unwrap();
    let mut svc = layer.layer(slow(MS));
    let running = svc.call(1);
    assert!(svc.call(2).await.is_err());
    running.await.unwrap();
    let metrics: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key.key().name().to_owned(), value))
        .collect();
    let value = |name: &str| metrics.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    assert_eq!(value(REJECTED_METRIC), Some(&DebugValue::Counter(1)));
    assert_eq!(value(LIMIT_METRIC), Some(&DebugValue::Gauge(1.0.into())));
    assert_eq!(value(QUEUED_METRIC), Some(&DebugValue::Counter(0)));
}

#[test]
fn invalid_settings_are_build_errors() {
    let cases = [
        (LimitSettings::new(LimitAlgorithm::Fixed(0)), "limit"),
        (
            LimitSettings::default().with_queue(1, Duration::ZERO),
            "queue",
        ),
        (
            LimitSettings::new(LimitAlgorithm::Gradient(
                GradientSettings::default().with_smoothing(2.0),
            )),
            "smoothing",
        ),
        (
            LimitSettings::new(LimitAlgorithm::Aimd(
                AimdSettings::default().with_backoff(2.0),
            )),
            "backoff",
        ),
    ];
    for (settings, setting) in cases {
        assert_eq!(
            AdaptiveLimitLayer::new(settings).unwrap_err().setting(),
            setting
        );
    }
}
