//! The channel's policies: retries, hedges, time limits, settings.

use super::*;

#[tokio::test(start_paused = true)]
async fn retries_go_to_other_endpoints_so_every_call_succeeds() {
    let fleet = Fleet::new([1, 2, 3]);
    fleet.set(2, failing());
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let mut channel = metrics::with_local_recorder(&recorder, || {
        fleet
            .builder([1, 2, 3])
            .retry(quick_retry(3))
            .build()
            .unwrap()
    });
    for i in 0..300 {
        let port = channel.ready().await.unwrap().call(i).await.unwrap();
        assert_ne!(port, 2);
    }
    // Each call ends with one success on a healthy endpoint, and a retry
    // never went back to the failing one: 300 hits on the healthy ones.
    assert_eq!(fleet.hits(1) + fleet.hits(3), 300);
    assert!(fleet.hits(2) > 0 && fleet.hits(2) <= 300);
    // Attempts and retries are counted.
    use crate::policy::metrics::{ATTEMPTS, RETRIES};
    let counts = counters(&snapshotter);
    assert_eq!(counts[ATTEMPTS], fleet.total() as u64);
    assert_eq!(counts[RETRIES], fleet.hits(2) as u64);
}

#[tokio::test(start_paused = true)]
async fn runtime_change_of_max_attempts_applies_to_the_next_call_and_breakers_keep_state() {
    let fleet = Fleet::new([1, 2]);
    fleet.set(1, failing());
    fleet.set(2, failing());
    let mut channel = fleet
        .builder([1, 2])
        .retry(quick_retry(2))
        .circuit_breaker(breaker(3, Duration::from_secs(60), 1))
        .build()
        .unwrap();
    let handle = channel.policy_handle();
    assert!(channel.ready().await.unwrap().call(0).await.is_err());
    assert_eq!(fleet.total(), 2);
    handle
        .update(|p| p.with_retry(Some(quick_retry(4))))
        .unwrap();
    let err = channel.ready().await.unwrap().call(0).await.unwrap_err();
    assert!(
        matches!(err, Error::RetriesExhausted { attempts: 4, .. }),
        "{err:?} after {} hits {:?}",
        fleet.total(),
        handle.breaker_states()
    );
    assert_eq!(fleet.total(), 6);
    // Each endpoint failed once in the first call and twice in the second:
    // three in a row only if the first call's counts survived the change.
    let states = handle.breaker_states();
    assert!(
        states.iter().all(|(_, s)| *s == BreakerState::Open),
        "{states:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn hedges_go_to_another_endpoint() {
    let fleet = Fleet::new([1, 2]);
    fleet.set(
        1,
        Mode {
            fail: false,
            latency: 100 * MS,
        },
    );
    fleet.set(
        2,
        Mode {
            fail: false,
            latency: 5 * MS,
        },
    );
    let hedge = HedgeSettings::default()
        .with_delay(HedgeDelay::Fixed(10 * MS))
        .with_budget(
            crate::policy::budget::BudgetSettings::new(1.0, 100, Duration::from_secs(10)).unwrap(),
        );
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let mut channel = metrics::with_local_recorder(&recorder, || {
        fleet.builder([1, 2]).hedge(hedge).build().unwrap()
    });
    for i in 0..20 {
        let t0 = Instant::now();
        let port = channel.ready().await.unwrap().call(i).await.unwrap();
        assert_eq!(port, 2);
        assert!(t0.elapsed() <= 15 * MS, "{:?}", t0.elapsed());
    }
    // Every call answered from the fast endpoint: its primary went there,
    // or its hedge did (never back to the slow one, which got at most one
    // attempt per call).
    assert_eq!(fleet.hits(2), 20);
    assert!(fleet.hits(1) <= 20);
    // A hedge was sent, and won, for each call that started on the slow one.
    use crate::policy::metrics::{HEDGES_SENT, HEDGES_WON};
    let counts = counters(&snapshotter);
    assert_eq!(counts[HEDGES_SENT], fleet.hits(1) as u64);
    assert_eq!(counts[HEDGES_WON], fleet.hits(1) as u64);
}

#[tokio::test(start_paused = true)]
async fn deadline_and_attempt_timeout_apply_to_channel_calls() {
    let fleet = Fleet::new([1, 2]);
    for p in [1, 2] {
        fleet.set(
            p,
            Mode {
                fail: false,
                latency: Duration::from_secs(10),
            },
        );
    }
    let settings = RetrySettings::default().with_max_attempts(10).with_backoff(
        Backoff::new(5 * MS, 2.0, 5 * MS)
            .unwrap()
            .with_jitter(Jitter::None),
    );
    let mut channel = fleet
        .builder([1, 2])
        .timeout(30 * MS)
        .deadline(100 * MS)
        .retry(settings)
        .build()
        .unwrap();
    let t0 = Instant::now();
    let err = channel.ready().await.unwrap().call(0).await.unwrap_err();
    // 30 + 5 + 30 + 5 + 30 = 100: the third attempt is cut by the deadline
    // at exactly 100 ms, carrying the second attempt's timeout.
    assert_eq!(t0.elapsed(), 100 * MS);
    match err {
        Error::DeadlineExceeded {
            deadline,
            last: Some(last),
        } => {
            assert_eq!(deadline, 100 * MS);
            assert!(
                matches!(*last, Error::AttemptTimeout(t) if t == 30 * MS),
                "{last:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fleet.total(), 3);
}

#[tokio::test]
async fn invalid_policy_settings_are_refused_at_build() {
    let fleet = Fleet::new([1]);
    let without_replay = || Channel::builder(fleet.connector()).discover(Static::new([addr(1)]));
    let name = |r: Result<Channel<u32, u16>, BuildError>| r.unwrap_err().setting();
    assert_eq!(
        name(without_replay().retry(RetrySettings::default()).build()),
        "replay"
    );
    assert_eq!(
        name(without_replay().hedge(HedgeSettings::default()).build()),
        "replay"
    );
    // One attempt needs no replay.
    assert!(
        without_replay()
            .retry(RetrySettings::default().with_max_attempts(1))
            .build()
            .is_ok()
    );
    assert_eq!(
        name(fleet.builder([1]).timeout(Duration::ZERO).build()),
        "timeout"
    );
    assert_eq!(
        name(fleet.builder([1]).deadline(Duration::ZERO).build()),
        "deadline"
    );
    assert_eq!(
        name(fleet.builder([1]).max_ejected_share(1.5).build()),
        "max_ejected_share"
    );
    assert_eq!(
        name(fleet.builder([1]).panic_threshold(-0.1).build()),
        "panic_threshold"
    );
    assert_eq!(
        name(
            fleet
                .builder([1])
                .retry(RetrySettings::default().with_max_attempts(0))
                .build()
        ),
        "retry.max_attempts"
    );
    assert_eq!(
        name(
            fleet
                .builder([1])
                .circuit_breaker(BreakerSettings::default().with_probes(0))
                .build()
        ),
        "breaker.probes"
    );
    let e = without_replay()
        .retry(RetrySettings::default())
        .build()
        .unwrap_err();
    assert!(e.reason().contains("CloneReplay"), "{e}");
    // A handle cannot add breakers the channel was built without.
    let channel = fleet.builder([1]).build().unwrap();
    let e = channel
        .policy_handle()
        .update(|p| p.with_breaker(Some(BreakerSettings::default())))
        .unwrap_err();
    assert_eq!(e.setting(), "circuit_breaker");
}
