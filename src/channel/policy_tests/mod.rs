//! The channel's policies over in-memory endpoints, on the paused clock.

mod ejection;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tower::{Service, ServiceExt, service_fn};

use super::*;
use crate::BuildError;
use crate::balance::RoundRobin;
use crate::discover::Static;
use crate::policy::backoff::{Backoff, Jitter};
use crate::policy::breaker::{BreakerSettings, BreakerState};
use crate::policy::hedge::{HedgeDelay, HedgeSettings};
use crate::policy::replay::CloneReplay;
use crate::policy::retry::RetrySettings;

const MS: Duration = Duration::from_millis(1);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// How one in-memory endpoint answers.
#[derive(Clone, Copy, Default)]
struct Mode {
    fail: bool,
    latency: Duration,
}

/// In-memory endpoints by port: their behaviour and their hit counts.
#[derive(Clone, Default)]
struct Fleet {
    modes: Arc<Mutex<HashMap<u16, Mode>>>,
    hits: Arc<Mutex<HashMap<u16, usize>>>,
}

type Svc = tower::util::BoxCloneSyncService<u32, u16, BoxError>;

impl Fleet {
    fn new(ports: impl IntoIterator<Item = u16>) -> Self {
        let fleet = Fleet::default();
        for p in ports {
            fleet.set(p, Mode::default());
        }
        fleet
    }
    fn set(&self, port: u16, mode: Mode) {
        self.modes.lock().insert(port, mode);
    }
    fn hits(&self, port: u16) -> usize {
        self.hits.lock().get(&port).copied().unwrap_or(0)
    }
    fn total(&self) -> usize {
        self.hits.lock().values().sum()
    }
    fn connector(&self) -> impl Fn(&Endpoint) -> Svc + Send + Sync + 'static {
        let fleet = self.clone();
        move |ep: &Endpoint| {
            let port = ep.addr.port();
            let fleet = fleet.clone();
            Svc::new(service_fn(move |_req: u32| {
                *fleet.hits.lock().entry(port).or_default() += 1;
                let mode = fleet.modes.lock().get(&port).copied().unwrap_or_default();
                async move {
                    if !mode.latency.is_zero() {
                        tokio::time::sleep(mode.latency).await;
                    }
                    if mode.fail {
                        Err::<u16, BoxError>("down".into())
                    } else {
                        Ok(port)
                    }
                }
            }))
        }
    }
    fn builder(&self, ports: impl IntoIterator<Item = u16>) -> Builder<u32, Svc> {
        Channel::builder(self.connector())
            .discover(Static::new(ports.into_iter().map(addr)))
            .balancer(RoundRobin::new())
            .replay(CloneReplay)
    }
}

fn failing() -> Mode {
    Mode {
        fail: true,
        latency: Duration::ZERO,
    }
}

fn quick_retry(attempts: u32) -> RetrySettings {
    RetrySettings::default()
        .with_max_attempts(attempts)
        .with_backoff(Backoff::new(MS, 2.0, 4 * MS).unwrap())
}

/// Breakers that open after `n` failures in a row, for `open` (no jitter),
/// with `probes` half-open probes.
fn breaker(n: u32, open: Duration, probes: u32) -> BreakerSettings {
    BreakerSettings::default()
        .with_consecutive_failures(Some(n))
        .with_failure_rate(None)
        .with_open_time(open, 2.0, open * 8)
        .with_open_jitter(0.0)
        .with_probes(probes)
}

/// Counter values by name (all label sets summed), from one snapshot (a
/// snapshot of the debugging recorder drains its counters).
fn counters(snapshotter: &metrics_util::debugging::Snapshotter) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for (k, _, _, v) in snapshotter.snapshot().into_vec() {
        if let metrics_util::debugging::DebugValue::Counter(n) = v {
            *out.entry(k.key().name().to_string()).or_default() += n;
        }
    }
    out
}

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
    let name = |r: Result<Channel<u32, Svc>, BuildError>| r.unwrap_err().setting();
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
