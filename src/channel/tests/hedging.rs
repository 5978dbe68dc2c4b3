//! The channel and `HedgeLayer` drive the same call machine: from the same
//! sequence of attempts they learn the same latencies and hedge the same.

use std::sync::atomic::{AtomicUsize, Ordering};

use tower::Layer;

use super::*;
use crate::policy::HedgeLayer;
use crate::policy::budget::BudgetSettings;
use crate::policy::latency::LatencySettings;
use crate::rng::Rng;

/// A backend whose `n`-th call (counted across every clone) answers after
/// `latencies[n]`.
fn backend(
    latencies: Arc<Vec<Duration>>,
    calls: Arc<AtomicUsize>,
) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send + Sync {
    service_fn(move |x: u32| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let latency = latencies[n.min(latencies.len() - 1)];
        async move {
            tokio::time::sleep(latency).await;
            Ok::<_, BoxError>(x)
        }
    })
}

fn settings() -> HedgeSettings {
    HedgeSettings::default()
        .with_delay(HedgeDelay::Percentile(0.9))
        .with_budget(BudgetSettings::new(1.0, 100, Duration::from_secs(10)).unwrap())
        .with_latency(
            LatencySettings::new(Duration::from_secs(60), 20, Duration::from_millis(100)).unwrap(),
        )
}

#[tokio::test(start_paused = true)]
async fn channel_and_hedge_layer_compute_the_same_hedge_delay_from_the_same_attempts() {
    // 5% of attempts take 500 ms, the rest 5–25 ms, from a seeded generator.
    let mut rng = Rng::seeded(77);
    let latencies: Arc<Vec<Duration>> = Arc::new(
        (0..2_000)
            .map(|_| {
                if rng.unit() < 0.05 {
                    500 * MS
                } else {
                    Duration::from_micros(5_000 + rng.below(20_000) as u64)
                }
            })
            .collect(),
    );
    let calls = 300;

    let channel_calls = Arc::new(AtomicUsize::new(0));
    let (lat, count) = (latencies.clone(), channel_calls.clone());
    let mut channel = Channel::builder(move |_: &Endpoint| backend(lat.clone(), count.clone()))
        .discover(Static::new([addr(1)]))
        .replayer(CloneReplay)
        .hedge(settings())
        .build()
        .unwrap();
    while channel.endpoints().is_empty() {
        tokio::task::yield_now().await;
    }
    let channel_start = Instant::now();
    for i in 0..calls {
        channel.ready().await.unwrap().call(i).await.unwrap();
    }
    let channel_took = channel_start.elapsed();

    let layer_calls = Arc::new(AtomicUsize::new(0));
    let layer = HedgeLayer::new(settings()).unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend(latencies, layer_calls.clone()));
    let layer_start = Instant::now();
    for i in 0..calls {
        svc.ready().await.unwrap().call(i).await.unwrap();
    }

    // The same attempts were sent (the hedges too) ...
    let sent = channel_calls.load(Ordering::SeqCst);
    assert_eq!(sent, layer_calls.load(Ordering::SeqCst));
    assert!(sent > calls as usize + 10, "hedges were sent: {sent}");
    // ... in the same time, and the latency windows hold the same samples.
    assert_eq!(channel_took, layer_start.elapsed());
    let (c, l) = (channel.policy_handle(), handle);
    let now = crate::clock::now();
    for q in [0.1, 0.5, 0.9, 0.95, 0.99, 1.0] {
        assert_eq!(
            c.latency().percentile(q, now),
            l.latency().percentile(q, now),
            "quantile {q}"
        );
    }
    assert_eq!(
        settings().delay_now(c.latency(), now),
        settings().delay_now(l.latency(), now)
    );
}
