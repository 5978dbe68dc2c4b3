//! Discovery, the table and errors, without policies.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::{StreamExt, stream};
use tower::{Service, ServiceExt, service_fn};

use super::*;
use crate::discover::{DiscoverError, Manual, Update};

type Echo = tower::util::BoxCloneSyncService<u32, u16, Infallible>;

/// A connector whose service answers with the endpoint's port.
fn echo(ep: &Endpoint) -> Echo {
    let port = ep.addr.port();
    Echo::new(service_fn(move |_req: u32| async move {
        Ok::<_, Infallible>(port)
    }))
}

#[tokio::test(start_paused = true)]
async fn waits_for_first_endpoints_then_fails_with_no_endpoints() {
    crate::rng::seed_thread_rng(501);
    let manual = Manual::new();
    let mut channel = Channel::builder(echo)
        .discover(manual.stream())
        .initial_wait(Duration::from_secs(2))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let err = channel.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(matches!(err, Error::NoEndpoints { .. }), "{err}");
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_waiting_call_is_served_when_endpoints_arrive() {
    crate::rng::seed_thread_rng(502);
    let manual = Manual::new();
    let channel = Channel::builder(echo)
        .discover(manual.stream())
        .build()
        .unwrap();
    let mut ch = channel.clone();
    let call = tokio::spawn(async move { ch.call(1).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!call.is_finished());
    manual.insert(addr(7));
    assert_eq!(call.await.unwrap().unwrap(), 7);
}

#[tokio::test(start_paused = true)]
async fn discovery_failure_before_any_endpoint_is_reported() {
    crate::rng::seed_thread_rng(503);
    let failing = stream::iter([Err::<Update, _>(DiscoverError::new("resolver unreachable"))])
        .chain(stream::pending());
    let mut channel = Channel::builder(echo)
        .discover(failing)
        .initial_wait(Duration::from_millis(100))
        .build()
        .unwrap();
    match channel.call(1).await {
        Err(Error::Discovery(e)) => assert_eq!(e.message(), "resolver unreachable"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn endpoint_state_survives_updates_and_weights_change_in_place() {
    crate::rng::seed_thread_rng(504);
    let manual = Manual::with_endpoints([addr(1), addr(2)]);
    let mut channel = Channel::builder(echo)
        .discover(manual.stream())
        .balancer(RoundRobin::new())
        .build()
        .unwrap();
    for _ in 0..10 {
        channel.call(0).await.unwrap();
    }
    manual.reset([
        Endpoint::new(addr(1)).with_weight(7),
        Endpoint::new(addr(2)),
        Endpoint::new(addr(3)),
    ]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while channel.endpoints().len() != 3 {
        assert!(tokio::time::Instant::now() < deadline, "update not applied");
        tokio::task::yield_now().await;
    }
    let info = channel.endpoints();
    assert_eq!(info[0].endpoint.weight, 7);
    assert_eq!(
        info[0].requests + info[1].requests,
        10,
        "counters were lost"
    );
    assert_eq!(info[2].requests, 0);
}

#[tokio::test]
async fn discovery_task_ends_with_the_last_clone() {
    crate::rng::seed_thread_rng(505);
    let made = Arc::new(AtomicU32::new(0));
    let marker = made.clone();
    let connect = move |ep: &Endpoint| {
        marker.fetch_add(1, Ordering::Relaxed);
        echo(ep)
    };
    let manual = Manual::with_endpoints([addr(1)]);
    let channel = Channel::builder(connect)
        .discover(manual.stream())
        .build()
        .unwrap();
    let second = channel.clone();
    drop(channel);
    let mut second = second;
    assert_eq!(second.call(0).await.unwrap(), 1);
    drop(second);
    // The task owned the connector (and its clone of `made`); once it ends,
    // only our handle is left.
    only_ours(&made, "discovery task still running").await;
}

/// Waits (up to 5 s, polling every millisecond: virtual time on a paused
/// clock) until `shared` has no other owner than the caller.
async fn only_ours<T>(shared: &Arc<T>, stuck: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(shared) > 1 {
        assert!(tokio::time::Instant::now() < deadline, "{stuck}");
        tokio::time::sleep(MS).await;
    }
}

#[tokio::test]
async fn invalid_builder_settings_are_errors() {
    crate::rng::seed_thread_rng(506);
    let err = Channel::<u32, u16>::builder(echo).build().unwrap_err();
    assert_eq!(err.setting(), "discover");
    let err = Channel::builder(echo)
        .discover(Static::new([addr(1)]))
        .name("")
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "name");
    assert!(err.to_string().contains("must not be empty"));
}

#[test]
fn building_outside_a_runtime_is_an_error() {
    crate::rng::seed_thread_rng(507);
    let err = Channel::builder(echo)
        .discover(Static::new([addr(1)]))
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "runtime");
}

#[tokio::test]
async fn empty_update_stream_errors_do_not_drop_endpoints() {
    crate::rng::seed_thread_rng(508);
    let updates = stream::iter([
        Ok(Update::Reset(vec![Endpoint::new(addr(5))])),
        Err(DiscoverError::new("transient")),
    ])
    .chain(stream::pending());
    let mut channel = Channel::builder(echo).discover(updates).build().unwrap();
    assert_eq!(channel.call(0).await.unwrap(), 5);
    tokio::task::yield_now().await;
    assert_eq!(channel.call(0).await.unwrap(), 5);
    assert_eq!(channel.endpoints().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_empty_table_or_an_impossible_pick_pulls_the_refresh_hint() {
    crate::rng::seed_thread_rng(509);
    use crate::discover::RefreshHint;
    let hint = RefreshHint::new();
    let manual = Manual::new();
    let mut channel = Channel::builder(echo)
        .discover(manual.stream())
        .refresh_hint(hint.clone())
        .initial_wait(Duration::from_millis(10))
        .build()
        .unwrap();
    // No request yet: the hint does not complete.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), hint.requested())
            .await
            .is_err()
    );
    assert!(matches!(
        channel.call(0).await,
        Err(Error::NoEndpoints { .. })
    ));
    tokio::time::timeout(Duration::from_secs(1), hint.requested())
        .await
        .expect("an empty table requests a refresh");
}

#[tokio::test(start_paused = true)]
async fn every_endpoint_failing_outright_pulls_the_refresh_hint() {
    crate::rng::seed_thread_rng(510);
    use crate::discover::RefreshHint;
    use std::io;
    // Port 1 answers; ports 2 and 3 fail as a refused connection would.
    let connect = |ep: &Endpoint| {
        let port = ep.addr.port();
        service_fn(move |_: u32| async move {
            if port == 1 {
                Ok(port)
            } else {
                Err(io::Error::from(io::ErrorKind::ConnectionRefused))
            }
        })
    };
    let hint = RefreshHint::new();
    let manual = Manual::with_endpoints([addr(1), addr(2), addr(3)]);
    let mut channel = Channel::builder(connect)
        .discover(manual.stream())
        .balancer(RoundRobin::new())
        .refresh_hint(hint.clone())
        .build()
        .unwrap();
    let requested = |hint: RefreshHint| async move {
        tokio::time::timeout(Duration::from_secs(1), hint.requested())
            .await
            .is_ok()
    };
    // Wait for the set, so the empty-table trigger stays out of this test.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while channel.endpoints().len() != 3 {
        assert!(tokio::time::Instant::now() < deadline, "set not applied");
        tokio::task::yield_now().await;
    }
    // One healthy endpoint among failing ones: no refresh.
    for _ in 0..6 {
        let _ = channel.call(0).await;
    }
    assert!(
        !requested(hint.clone()).await,
        "refresh asked while one endpoint works"
    );

    // Every endpoint failing outright: discovery is asked to look again.
    manual.remove(addr(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while channel.endpoints().len() != 2 {
        assert!(tokio::time::Instant::now() < deadline, "update not applied");
        tokio::task::yield_now().await;
    }
    for _ in 0..2 {
        assert!(matches!(channel.call(0).await, Err(Error::Inner(_))));
    }
    assert!(
        requested(hint).await,
        "no refresh with every endpoint failing"
    );
}

#[tokio::test(start_paused = true)]
async fn the_longest_durations_do_not_overflow_the_clock() {
    crate::rng::seed_thread_rng(511);
    // An empty table with the longest initial wait: the call waits rather
    // than panicking on `now + wait`, and is served once an endpoint comes.
    let manual = Manual::new();
    let mut channel = Channel::builder(echo)
        .discover(manual.stream())
        .initial_wait(Duration::MAX)
        .replayer(CloneReplay)
        .timeout(Duration::MAX)
        .retry(crate::policy::retry::RetrySettings::default())
        .build()
        .unwrap();
    let mut ch = channel.clone();
    let waiting = tokio::spawn(async move { ch.call(1).await });
    tokio::time::sleep(Duration::from_secs(3600)).await;
    manual.insert(addr(4));
    assert_eq!(waiting.await.unwrap().unwrap(), 4);
    assert_eq!(channel.call(1).await.unwrap(), 4);
}

/// Calls under a policy hold their clone's handle: more calls than one
/// batch of holds, some made before new settings replace the clone's
/// handle and some after, all outlive the clone; a clone whose calls all
/// ended drops its handle itself; once every call ends, every handle is
/// gone (nothing leaked: the discovery task ends).
#[tokio::test(start_paused = true)]
async fn calls_outlive_their_clone_and_release_its_handles() {
    crate::rng::seed_thread_rng(507);
    let fleet = Fleet::new([1, 2]);
    for p in [1, 2] {
        fleet.set(
            p,
            Mode {
                fail: false,
                latency: 10 * MS,
            },
        );
    }
    let marker = Arc::new(());
    let kept = marker.clone();
    let connect = fleet.connector();
    // A discovery that never ends by itself: its task ends with the
    // channel's last handle.
    let manual = Manual::with_endpoints([addr(1), addr(2)]);
    let mut channel = Channel::builder(move |ep: &Endpoint| {
        let _ = &kept;
        connect(ep)
    })
    .discover(manual.stream())
    .timeout(Duration::from_secs(1))
    .build()
    .unwrap();
    let handle = channel.policy_handle();
    let mut second = channel.clone();
    let mut calls = Vec::new();
    for i in 0..150 {
        if i == 100 {
            // New settings: the clone's next call makes a new handle while
            // 100 calls hold the old one.
            handle
                .update(|p| p.with_timeout(Some(Duration::from_secs(2))))
                .unwrap();
        }
        calls.push(channel.ready().await.unwrap().call(i));
    }
    drop(channel);
    drop(handle);
    for call in calls {
        assert!(matches!(call.await, Ok(1 | 2)));
    }
    for i in 0..3 {
        assert!(matches!(
            second.ready().await.unwrap().call(i).await,
            Ok(1 | 2)
        ));
    }
    drop(second);
    only_ours(&marker, "a handle outlived its calls").await;
}

/// The same on a multi-thread runtime: calls made on 8 clones run as tasks
/// on both workers (some waiting on a slow endpoint, some retried) while
/// their clones are dropped and the settings change under them; every call
/// answers and every handle is released.
#[test]
fn holds_are_given_back_from_any_thread() {
    // Every thread's generator seeded (which worker runs what is still up
    // to the scheduler; no assertion depends on it).
    crate::rng::seed_thread_rng(508);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(|| crate::rng::seed_thread_rng(509))
        .enable_all()
        .build()
        .unwrap()
        .block_on(holds_from_any_thread());
}

async fn holds_from_any_thread() {
    let fleet = Fleet::new([1, 2, 3]);
    // Calls to 2 stay in flight a while; calls to 3 fail and are retried.
    fleet.set(
        2,
        Mode {
            fail: false,
            latency: MS,
        },
    );
    fleet.set(3, failing());
    let marker = Arc::new(());
    let kept = marker.clone();
    let connect = fleet.connector();
    let manual = Manual::with_endpoints([addr(1), addr(2), addr(3)]);
    let channel = Channel::builder(move |ep: &Endpoint| {
        let _ = &kept;
        connect(ep)
    })
    .discover(manual.stream())
    .retry(quick_retry(2))
    .replayer(CloneReplay)
    .build()
    .unwrap();
    while channel.endpoints().len() < 3 {
        tokio::task::yield_now().await;
    }
    let handle = channel.policy_handle();
    let mut tasks = Vec::new();
    for clone in 0..8u32 {
        let mut ch = channel.clone();
        for i in 0..200u32 {
            if clone == 4 && i == 100 {
                handle
                    .update(|p| p.with_retry(Some(quick_retry(3))))
                    .unwrap();
            }
            // Made here, polled first on whichever worker runs the task.
            let call = ch.call(i);
            tasks.push(tokio::spawn(call));
        }
        drop(ch);
    }
    drop(channel);
    drop(handle);
    for task in tasks {
        assert!(matches!(task.await.unwrap(), Ok(1 | 2)));
    }
    only_ours(&marker, "a handle outlived its calls").await;
}
