//! The channel's concurrency limits: refusals, the queue, what the limiter
//! learns from calls, runtime tuning, per-endpoint limits, metrics.

use super::*;
use crate::classify::Outcome;
use crate::policy::limit::{
    AimdSettings, GradientSettings, LIMIT_METRIC, LimitAlgorithm, LimitSettings, REJECTED_METRIC,
};

fn slow(ms: u64) -> Mode {
    Mode {
        fail: false,
        latency: Duration::from_millis(ms),
    }
}

fn fixed(n: usize) -> LimitSettings {
    LimitSettings::new(LimitAlgorithm::Fixed(n))
}

/// Starts `channel.call(req)` on its own task.
fn spawn_call(
    channel: &Channel<u32, u16>,
    req: u32,
) -> tokio::task::JoinHandle<Result<u16, Error>> {
    let mut channel = channel.clone();
    tokio::spawn(async move { channel.call(req).await })
}

#[tokio::test(start_paused = true)]
async fn a_call_over_the_limit_is_refused_at_once_and_never_sent() {
    crate::rng::seed_thread_rng(701);
    let fleet = Fleet::new([1, 2]);
    fleet.set(1, slow(100));
    fleet.set(2, slow(100));
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // Bare path (no other policy) and resilient path (with retries): both
    // take the place before anything else.
    for retry in [false, true] {
        let builder = fleet.builder([1, 2]).concurrency_limit(fixed(2));
        let builder = if retry {
            builder.retry(quick_retry(3))
        } else {
            builder
        };
        let channel = metrics::with_local_recorder(&recorder, || builder.build().unwrap());
        let before = fleet.total();
        let running = [spawn_call(&channel, 1), spawn_call(&channel, 2)];
        tokio::task::yield_now().await;
        let t0 = Instant::now();
        let refused = channel.clone().call(3).await;
        assert!(matches!(refused, Err(Error::Overloaded)), "{refused:?}");
        assert_eq!(t0.elapsed(), Duration::ZERO, "a refusal waited");
        for call in running {
            assert!(call.await.unwrap().is_ok());
        }
        // Not sent, not retried: only the two admitted calls reached an
        // endpoint.
        assert_eq!(fleet.total() - before, 2);
        let limit = channel.policy_handle().concurrency_limit().unwrap();
        assert_eq!((limit.limit(), limit.in_flight()), (2, 0));
        assert_eq!(limit.rejected(), 1);
        // Room again once they ended.
        assert!(channel.clone().call(4).await.is_ok());
    }
    use crate::policy::metrics::ATTEMPTS;
    let counts = counters(&snapshotter);
    assert_eq!(counts[REJECTED_METRIC], 2);
    // The retrying channel counted its 3 admitted calls' attempts only.
    assert_eq!(counts[ATTEMPTS], 3);
}

#[tokio::test(start_paused = true)]
async fn over_the_limit_calls_wait_in_the_queue_up_to_its_longest_wait() {
    crate::rng::seed_thread_rng(702);
    let fleet = Fleet::new([1]);
    fleet.set(1, slow(100));
    let settings = fixed(1).with_queue(1, 150 * MS);
    let channel = fleet
        .builder([1])
        .concurrency_limit(settings)
        .build()
        .unwrap();
    let t0 = Instant::now();
    let first = spawn_call(&channel, 1);
    tokio::task::yield_now().await;
    // Waits for the first call's place, then runs: done at 200 ms.
    let second = spawn_call(&channel, 2);
    tokio::task::yield_now().await;
    // The queue holds one: the third is refused at once.
    assert!(matches!(
        channel.clone().call(3).await,
        Err(Error::Overloaded)
    ));
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert!(first.await.unwrap().is_ok());
    assert!(second.await.unwrap().is_ok());
    assert_eq!(t0.elapsed(), 200 * MS);
    let limit = channel.policy_handle().concurrency_limit().unwrap();
    assert_eq!((limit.queued(), limit.rejected()), (1, 1));

    // A wait longer than the queue allows ends in a refusal at 150 ms.
    fleet.set(1, slow(1000));
    let t0 = Instant::now();
    let running = spawn_call(&channel, 4);
    tokio::task::yield_now().await;
    assert!(matches!(
        channel.clone().call(5).await,
        Err(Error::Overloaded)
    ));
    assert_eq!(t0.elapsed(), 150 * MS);
    assert!(running.await.unwrap().is_ok());
    assert_eq!(limit.rejected(), 2);
}

/// The sample is the answering attempt's time, not the call's: a call that
/// failed fast on one endpoint, paused, and was answered by another in
/// 10 ms is a 10 ms sample. So the probe's baseline is exactly 10 ms.
#[tokio::test(start_paused = true)]
async fn the_limiter_learns_the_answering_attempts_latency() {
    crate::rng::seed_thread_rng(703);
    let fleet = Fleet::new([1, 2]);
    fleet.set(1, failing());
    fleet.set(2, slow(10));
    let gradient = GradientSettings::default().with_probe(3, 20);
    let mut channel = fleet
        .builder([1, 2])
        .retry(quick_retry(2))
        .concurrency_limit(
            LimitSettings::new(LimitAlgorithm::Gradient(gradient)).with_jitter_seed(1),
        )
        .build()
        .unwrap();
    let limit = channel.policy_handle().concurrency_limit().unwrap();
    assert_eq!(limit.limit(), 3, "probing first");
    for i in 0..40 {
        assert_eq!(channel.call(i).await.unwrap(), 2);
    }
    assert!(fleet.hits(1) >= 10, "some calls were retried");
    assert_eq!(limit.min_rtt(), Some(10 * MS));
    assert_eq!(limit.limit(), 20, "back to the initial limit");
}

/// A call dropped before its end gives its place back, whichever way it
/// holds it: a bare call admitted at once (the place reached through its
/// slot), one waiting for discovery, one with a policy.
#[tokio::test(start_paused = true)]
async fn a_dropped_call_gives_its_place_back_on_every_path() {
    crate::rng::seed_thread_rng(708);
    let fleet = Fleet::new([1]);
    fleet.set(1, slow(100));
    for retry in [false, true] {
        let manual = crate::discover::Manual::new();
        let builder = Channel::builder(fleet.connector())
            .discover(manual.stream())
            .replayer(CloneReplay)
            .concurrency_limit(fixed(2));
        let builder = if retry {
            builder.retry(quick_retry(2))
        } else {
            builder
        };
        let channel = builder.build().unwrap();
        let limit = channel.policy_handle().concurrency_limit().unwrap();
        // A call that holds its place 10 ms, then is dropped.
        let drop_midway = async |req| {
            let call = spawn_call(&channel, req);
            tokio::time::sleep(10 * MS).await;
            assert_eq!(limit.in_flight(), 1);
            call.abort();
            assert!(call.await.unwrap_err().is_cancelled());
            assert_eq!(limit.in_flight(), 0, "retry: {retry}");
        };
        // Waiting for discovery.
        drop_midway(1).await;
        // Sent, before its answer.
        manual.insert(addr(1));
        drop_midway(2).await;
        // Waiting for discovery, then answered: its place is settled.
        manual.remove(addr(1));
        let waiting = spawn_call(&channel, 3);
        tokio::time::sleep(10 * MS).await;
        manual.insert(addr(1));
        assert_eq!(waiting.await.unwrap().unwrap(), 1);
        assert_eq!((limit.in_flight(), limit.rejected()), (0, 0));
    }
}

/// AIMD moves at once, which shows what a call's end teaches: an
/// overloaded answer and a timeout are drops, a plain failure nothing.
#[tokio::test(start_paused = true)]
async fn overloaded_answers_and_timeouts_are_drops_other_failures_teach_nothing() {
    crate::rng::seed_thread_rng(704);
    let fleet = Fleet::new([1, 2, 3]);
    fleet.set(2, failing());
    fleet.set(3, slow(50));
    let aimd = AimdSettings::default().with_limits(1, 10, 100);
    let mut channel = Channel::builder(fleet.connector())
        .discover(Static::new([addr(1), addr(2), addr(3)]))
        .balancer(RoundRobin::new())
        .timeout(20 * MS)
        .classify(|r: &Result<u16, BoxError>| match r {
            Ok(1) => Outcome::Overloaded { retry_after: None },
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure { retryable: true },
        })
        .concurrency_limit(LimitSettings::new(LimitAlgorithm::Aimd(aimd)))
        .build()
        .unwrap();
    let limit = channel.policy_handle().concurrency_limit().unwrap();
    let mut seen = Vec::new();
    for i in 0..3 {
        let result = channel.call(i).await;
        seen.push((result.is_ok(), limit.limit()));
    }
    // Round-robin from a random start: each endpoint once. Port 1 answers
    // "overloaded" (a drop: 10 → 9), port 2 fails (nothing), port 3 times
    // out (a drop, a round trip after the first: 9 → 8).
    assert_eq!(limit.limit(), 8, "{seen:?}");
    assert_eq!(fleet.total(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_retune_keeps_the_limit_and_baseline_and_a_limit_can_come_and_go() {
    crate::rng::seed_thread_rng(705);
    let fleet = Fleet::new([1]);
    fleet.set(1, slow(10));
    let mut channel = fleet.builder([1]).build().unwrap();
    let handle = channel.policy_handle();
    assert!(handle.concurrency_limit().is_none());
    // Turned on at runtime.
    handle
        .update(|p| p.with_concurrency_limit(Some(LimitSettings::default().with_jitter_seed(2))))
        .unwrap();
    for i in 0..30 {
        channel.call(i).await.unwrap();
    }
    let limit = handle.concurrency_limit().unwrap();
    assert_eq!((limit.min_rtt(), limit.limit()), (Some(10 * MS), 20));
    // Other gradient settings: limit and baseline stay.
    let tighter = GradientSettings::default()
        .with_tolerance(0.1)
        .with_limits(3, 5, 15);
    handle
        .update(|p| {
            p.with_concurrency_limit(Some(
                LimitSettings::new(LimitAlgorithm::Gradient(tighter)).with_jitter_seed(3),
            ))
        })
        .unwrap();
    assert_eq!((limit.min_rtt(), limit.limit()), (Some(10 * MS), 15));
    // Off: nothing is refused, whatever runs.
    handle.update(|p| p.with_concurrency_limit(None)).unwrap();
    let many: Vec<_> = (0..40).map(|i| spawn_call(&channel, i)).collect();
    for call in many {
        assert!(call.await.unwrap().is_ok());
    }
    // On again as a fixed limit: the same limiter, its counts kept.
    handle
        .update(|p| p.with_concurrency_limit(Some(fixed(1))))
        .unwrap();
    let running = spawn_call(&channel, 1);
    tokio::task::yield_now().await;
    assert!(matches!(channel.call(2).await, Err(Error::Overloaded)));
    assert!(running.await.unwrap().is_ok());
    let again = handle.concurrency_limit().unwrap();
    assert_eq!(
        (again.limit(), again.rejected(), limit.rejected()),
        (1, 1, 1)
    );
    // Invalid settings are refused and change nothing.
    let e = handle
        .update(|p| p.with_concurrency_limit(Some(fixed(0))))
        .unwrap_err();
    assert_eq!(e.setting(), "limit");
    assert_eq!(again.limit(), 1);
}

#[tokio::test(start_paused = true)]
async fn per_endpoint_limits_send_calls_where_there_is_room() {
    crate::rng::seed_thread_rng(706);
    let fleet = Fleet::new([1, 2]);
    fleet.set(1, slow(100));
    fleet.set(2, slow(100));
    let channel = fleet
        .builder([1, 2])
        .endpoint_concurrency_limit(fixed(1))
        .build()
        .unwrap();
    let handle = channel.policy_handle();
    // Round-robin from a random start would send two calls in a row to
    // different endpoints anyway; three calls need the limits.
    let first = spawn_call(&channel, 1);
    let second = spawn_call(&channel, 2);
    tokio::task::yield_now().await;
    let states: Vec<_> = handle
        .endpoint_concurrency_limits()
        .iter()
        .map(|(addr, l)| (addr.port(), l.in_flight()))
        .collect();
    assert_eq!(states, [(1, 1), (2, 1)]);
    // No endpoint has room: refused at once, as overloaded.
    let t0 = Instant::now();
    assert!(matches!(
        channel.clone().call(3).await,
        Err(Error::Overloaded)
    ));
    assert_eq!(t0.elapsed(), Duration::ZERO);
    let mut ports = [
        first.await.unwrap().unwrap(),
        second.await.unwrap().unwrap(),
    ];
    ports.sort();
    assert_eq!(ports, [1, 2]);
    assert_eq!(handle.refused_for_endpoint_limits(), 1);
    assert_eq!(fleet.total(), 2);
    // Retuned at runtime: two places each.
    handle
        .update(|p| p.with_endpoint_concurrency_limit(Some(fixed(2))))
        .unwrap();
    let calls: Vec<_> = (0..4).map(|i| spawn_call(&channel, i)).collect();
    for call in calls {
        assert!(call.await.unwrap().is_ok());
    }
    // A channel built without them cannot add them later.
    let plain = fleet.builder([1]).build().unwrap();
    let e = plain
        .policy_handle()
        .update(|p| p.with_endpoint_concurrency_limit(Some(fixed(1))))
        .unwrap_err();
    assert_eq!(e.setting(), "endpoint_concurrency_limit");
}

/// The channel's limit is labelled with the channel (per-endpoint limits,
/// made by the discovery task, are checked with a global recorder in
/// `tests/metrics.rs`).
#[tokio::test(start_paused = true)]
async fn limits_show_as_metrics_with_the_channel_label() {
    crate::rng::seed_thread_rng(707);
    let fleet = Fleet::new([1]);
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let mut channel = metrics::with_local_recorder(&recorder, || {
        fleet
            .builder([1])
            .name("api")
            .concurrency_limit(fixed(7))
            .endpoint_concurrency_limit(fixed(3))
            .build()
            .unwrap()
    });
    channel.call(1).await.unwrap();
    let mut limits: Vec<(Vec<(String, String)>, f64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| k.key().name() == LIMIT_METRIC)
        .map(|(k, _, _, v)| {
            let labels = k
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            let metrics_util::debugging::DebugValue::Gauge(g) = v else {
                panic!("{v:?}")
            };
            (labels, g.into_inner())
        })
        .collect();
    limits.sort_by(|a, b| a.0.cmp(&b.0));
    let label = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    assert_eq!(limits, [(vec![label("channel", "api")], 7.0)]);
}
