//! Adaptive throttling as a channel option: local refusals with their own
//! error and metric, recovery, retries, runtime tuning.

use super::*;
use crate::policy::metrics::THROTTLED;
use crate::policy::throttle::ThrottleSettings;

/// Calls `n` times, `gap` apart; returns the errors, in order (`None` for a
/// success).
async fn calls(channel: &mut Channel<u32, u16>, n: u32, gap: Duration) -> Vec<Option<Error>> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(channel.ready().await.unwrap().call(i).await.err());
        tokio::time::sleep(gap).await;
    }
    out
}

fn throttled(errors: &[Option<Error>]) -> usize {
    errors
        .iter()
        .filter(|e| matches!(e, Some(Error::Throttled)))
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_throttled_channel_refuses_locally_counts_it_and_recovers() {
    crate::rng::seed_thread_rng(911);
    let fleet = Fleet::new([1]);
    fleet.set(1, failing());
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let mut channel = metrics::with_local_recorder(&recorder, || {
        fleet
            .builder([1])
            .throttle(ThrottleSettings::default())
            .build()
            .unwrap()
    });
    // 1,000 calls over 5 s against a backend that fails them all: after
    // the first few, the throttle refuses all it may (80%).
    let n = 1_000;
    let errors = calls(&mut channel, n, 5 * MS).await;
    assert!(errors.iter().all(Option::is_some));
    let refused = throttled(&errors);
    assert_eq!(
        refused + fleet.hits(1),
        n as usize,
        "every call is one or the other"
    );
    let (mean, sd) = (0.8 * f64::from(n), (f64::from(n) * 0.8 * 0.2).sqrt());
    assert!(
        (refused as f64 - mean).abs() <= 3.5 * sd + 5.0,
        "{refused} refused, expected about {mean}"
    );
    assert_eq!(counters(&snapshotter)[THROTTLED], refused as u64);
    let text = Error::Throttled.to_string();
    assert!(text.contains("adaptive throttling"), "{text}");
    // The backend recovers. Within two windows (20 s) the throttle has
    // seen enough successes to refuse nothing.
    fleet.set(1, Mode::default());
    let recovering = calls(&mut channel, 2_000, 10 * MS).await;
    assert!(throttled(&recovering[..200]) > 0, "still refusing at first");
    assert_eq!(throttled(&recovering[1_900..]), 0);
    assert!(
        recovering
            .iter()
            .all(|e| e.is_none() || matches!(e, Some(Error::Throttled)))
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_retry_ends_the_call_with_the_last_attempts_error() {
    crate::rng::seed_thread_rng(902);
    let fleet = Fleet::new([1, 2]);
    fleet.set(1, failing());
    fleet.set(2, failing());
    let mut channel = fleet
        .builder([1, 2])
        .retry(quick_retry(3))
        .throttle(ThrottleSettings::default())
        .build()
        .unwrap();
    let errors = calls(&mut channel, 500, 5 * MS).await;
    let mut kinds = HashMap::new();
    for e in errors.iter().flatten() {
        let kind = match e {
            Error::Throttled => "throttled",
            Error::Inner(_) => "inner",
            Error::RetriesExhausted { .. } => "exhausted",
            Error::BudgetExhausted { .. } => "budget",
            other => panic!("unexpected {other:?}"),
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }
    // Calls whose first attempt went out and whose retry was refused end
    // with that attempt's error, never with "no endpoints".
    assert!(kinds["throttled"] > 0 && kinds["inner"] > 0, "{kinds:?}");
    assert_eq!(errors.iter().flatten().count(), 500);
}

#[tokio::test(start_paused = true)]
async fn throttling_turns_on_and_off_at_runtime_and_keeps_its_counts() {
    crate::rng::seed_thread_rng(903);
    let fleet = Fleet::new([1]);
    fleet.set(1, failing());
    let mut channel = fleet.builder([1]).build().unwrap();
    let handle = channel.policy_handle();
    // Off: every call reaches the backend.
    assert_eq!(throttled(&calls(&mut channel, 100, 5 * MS).await), 0);
    assert_eq!(fleet.hits(1), 100);
    handle
        .update(|p| p.with_throttle(Some(ThrottleSettings::default())))
        .unwrap();
    assert!(handle.settings().throttle().is_some());
    assert!(throttled(&calls(&mut channel, 200, 5 * MS).await) > 100);
    // A lower cap refuses less (5% of 200: under 25 by far); off again
    // refuses nothing.
    let lenient = ThrottleSettings::default().with_max_reject(0.05);
    handle.update(|p| p.with_throttle(Some(lenient))).unwrap();
    assert!(throttled(&calls(&mut channel, 200, 5 * MS).await) < 25);
    handle.update(|p| p.with_throttle(None)).unwrap();
    assert_eq!(throttled(&calls(&mut channel, 50, 5 * MS).await), 0);
    // Invalid settings are refused and the old ones stay.
    let bad = ThrottleSettings::default().with_max_reject(2.0);
    let e = handle.update(|p| p.with_throttle(Some(bad))).unwrap_err();
    assert_eq!(e.setting(), "throttle.max_reject");
    assert!(handle.settings().throttle().is_none());
}
