//! The channel over in-memory endpoints, on the paused clock: its basics,
//! its policies, ejection, and what it reports (load, spans, hooks).

mod basics;
mod ejection;
mod hedging;
mod keyed;
mod limits;
mod policy;
mod report;
mod spans;
mod throttle;

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
use crate::{BoxError, Endpoint, Error};

const MS: Duration = Duration::from_millis(1);

pub(super) fn addr(port: u16) -> SocketAddr {
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
            .replayer(CloneReplay)
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
