//! Per-endpoint breakers in the channel: ejection, probes, recovery, the
//! ejection cap and panic mode.

use super::*;

fn ejected(channel: &Channel<u32, u16>) -> Vec<u16> {
    channel
        .endpoints()
        .iter()
        .filter(|e| e.ejected)
        .map(|e| e.endpoint.addr.port())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn failing_endpoint_is_ejected_gets_only_probes_and_returns_when_it_recovers() {
    let fleet = Fleet::new([1, 2, 3]);
    fleet.set(3, failing());
    let open = Duration::from_secs(1);
    let channel = fleet
        .builder([1, 2, 3])
        .retry(quick_retry(3))
        .circuit_breaker(breaker(3, open, 2))
        .build()
        .unwrap();
    let call = |ch: &Channel<u32, u16>| {
        let mut ch = ch.clone();
        async move { ch.ready().await.unwrap().call(0).await }
    };
    // Opens after exactly three failures.
    while fleet.hits(3) < 3 {
        assert!(call(&channel).await.is_ok());
        assert!(ejected(&channel).is_empty() || fleet.hits(3) == 3);
    }
    assert_eq!(ejected(&channel), [3]);
    let opened_at = Instant::now();
    // While open: no traffic at all.
    for _ in 0..100 {
        assert!(call(&channel).await.is_ok());
    }
    assert_eq!(fleet.hits(3), 3);
    // Half-open: a burst of concurrent calls, the endpoint slow to fail:
    // exactly two probes reach it.
    fleet.set(
        3,
        Mode {
            fail: true,
            latency: 50 * MS,
        },
    );
    tokio::time::sleep_until(opened_at + open).await;
    let burst: Vec<_> = (0..30).map(|_| call(&channel)).collect();
    for r in futures_util::future::join_all(burst).await {
        assert!(r.is_ok());
    }
    assert_eq!(
        fleet.hits(3),
        5,
        "half-open let more than the probes through"
    );
    assert_eq!(ejected(&channel), [3]);
    // It recovers; after the (doubled) open time the probes succeed and it
    // is back in rotation.
    fleet.set(3, Mode::default());
    tokio::time::sleep(2 * open).await;
    for _ in 0..30 {
        assert!(call(&channel).await.is_ok());
    }
    assert!(ejected(&channel).is_empty());
    let handle = channel.policy_handle();
    assert!(
        handle
            .breaker_states()
            .iter()
            .all(|(_, s)| *s == BreakerState::Closed)
    );
    assert!(
        fleet.hits(3) >= 5 + 10,
        "not back in rotation: {}",
        fleet.hits(3)
    );
}

#[tokio::test(start_paused = true)]
async fn ejection_is_capped_and_panic_mode_spreads_over_all_endpoints() {
    let ports = [1, 2, 3, 4];
    let fleet = Fleet::new(ports);
    for p in [2, 3, 4] {
        fleet.set(p, failing());
    }
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let hint = crate::discover::RefreshHint::new();
    let mut channel = metrics::with_local_recorder(&recorder, || {
        fleet
            .builder(ports)
            .refresh_hint(hint.clone())
            .circuit_breaker(breaker(1, Duration::from_secs(60), 1))
            .max_ejected_share(0.5)
            .build()
            .unwrap()
    });
    // Once the endpoints are known, forget any earlier refresh request
    // (a call finding the table empty makes one).
    while channel.endpoints().len() < 4 {
        tokio::task::yield_now().await;
    }
    let _ = tokio::time::timeout(Duration::ZERO, hint.requested()).await;
    // One failure opens each failing endpoint's breaker.
    for i in 0..8 {
        let _ = channel.ready().await.unwrap().call(i).await;
    }
    let states = channel.policy_handle().breaker_states();
    let open = states
        .iter()
        .filter(|(_, s)| *s == BreakerState::Open)
        .count();
    assert_eq!(open, 3);
    // At most half the endpoints are ejected.
    assert_eq!(ejected(&channel).len(), 2);
    let gauge = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find(|(k, ..)| k.key().name() == EJECTED_ENDPOINTS)
        .map(|(.., v)| v);
    assert_eq!(
        gauge,
        Some(metrics_util::debugging::DebugValue::Gauge(2.0.into()))
    );
    // One healthy endpoint of four is below the 50% panic threshold: the
    // channel asked discovery to look again, and calls spread over every
    // endpoint again.
    assert!(channel.policy_handle().in_panic_mode());
    tokio::time::timeout(Duration::from_secs(1), hint.requested())
        .await
        .expect("panic mode asks discovery for a fresh look");
    let before: Vec<usize> = ports.iter().map(|&p| fleet.hits(p)).collect();
    for i in 0..400 {
        let _ = channel.ready().await.unwrap().call(i).await;
    }
    for (k, &p) in ports.iter().enumerate() {
        let got = fleet.hits(p) - before[k];
        assert!(
            got >= 50,
            "endpoint {p} got {got} of 400 calls in panic mode"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn without_panic_mode_ejected_endpoints_get_no_calls() {
    let ports = [1, 2, 3, 4];
    let fleet = Fleet::new(ports);
    for p in [3, 4] {
        fleet.set(p, failing());
    }
    let mut channel = fleet
        .builder(ports)
        .circuit_breaker(breaker(1, Duration::from_secs(60), 1))
        .panic_threshold(0.0)
        .build()
        .unwrap();
    for i in 0..8 {
        let _ = channel.ready().await.unwrap().call(i).await;
    }
    assert_eq!(ejected(&channel), [3, 4]);
    let before = fleet.hits(3) + fleet.hits(4);
    for i in 0..100 {
        assert!(channel.ready().await.unwrap().call(i).await.is_ok());
    }
    assert_eq!(fleet.hits(3) + fleet.hits(4), before);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_forced_open_through_the_handle_ejects_its_endpoint_until_reset() {
    let fleet = Fleet::new([1, 2, 3]);
    let mut channel = fleet
        .builder([1, 2, 3])
        .circuit_breaker(breaker(5, Duration::from_secs(1), 1))
        .build()
        .unwrap();
    channel.ready().await.unwrap().call(0).await.unwrap();
    let handle = channel.policy_handle();
    assert_eq!(handle.with_breaker(addr(2), |b| b.force_open()), Some(()));
    assert_eq!(handle.with_breaker(addr(9), |b| b.force_open()), None);
    assert_eq!(ejected(&channel), [2]);
    let before = fleet.hits(2);
    for i in 0..60 {
        channel.ready().await.unwrap().call(i).await.unwrap();
    }
    assert_eq!(fleet.hits(2), before, "a forced-open endpoint got calls");
    handle.with_breaker(addr(2), |b| b.reset());
    assert!(ejected(&channel).is_empty());
    for i in 0..60 {
        channel.ready().await.unwrap().call(i).await.unwrap();
    }
    assert!(fleet.hits(2) >= before + 15);
}

#[tokio::test(start_paused = true)]
async fn turning_breakers_off_at_runtime_returns_ejected_endpoints_to_rotation() {
    crate::rng::seed_thread_rng(521);
    let fleet = Fleet::new([1, 2, 3]);
    fleet.set(3, failing());
    let mut channel = fleet
        .builder([1, 2, 3])
        .circuit_breaker(breaker(1, Duration::from_secs(600), 1))
        .build()
        .unwrap();
    while ejected(&channel).is_empty() {
        let _ = channel.ready().await.unwrap().call(0).await;
    }
    assert_eq!(ejected(&channel), [3]);
    // Breakers off, then the endpoint recovers: nothing can bring it back
    // but the plan, which must not keep it ejected without a breaker.
    channel
        .policy_handle()
        .update(|p| p.with_breaker(None))
        .unwrap();
    assert!(ejected(&channel).is_empty());
    fleet.set(3, Mode::default());
    let before = fleet.hits(3);
    for i in 0..300 {
        assert!(channel.ready().await.unwrap().call(i).await.is_ok());
    }
    // Round-robin over three: exactly a third.
    assert_eq!(fleet.hits(3) - before, 100);
    // Turned on again, the breaker still holds its open state (600 s), so
    // the endpoint is ejected again until its breaker closes.
    channel
        .policy_handle()
        .update(|p| p.with_breaker(Some(breaker(1, Duration::from_secs(600), 1))))
        .unwrap();
    assert_eq!(ejected(&channel), [3]);
}
