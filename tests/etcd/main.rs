//! etcd discovery and registration against real etcd processes on loopback:
//! a single member, and a 3-member cluster with a member killed.
#![cfg(all(feature = "etcd", feature = "http"))]

#[path = "../support/etcd.rs"]
mod etcd;
#[path = "../support/http.rs"]
mod http;

mod cluster;
mod discovery;
mod registrar;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use etcd::EtcdProcs;
use towline::balance::RoundRobin;
use towline::discover::etcd::MALFORMED_VALUES_METRIC;
use towline::discover::{Etcd, EtcdBuilder, EtcdCluster, Registrar, Update};
use towline::{Channel, Endpoint};

/// Bound for anything that should happen "soon" on loopback.
const SOON: Duration = Duration::from_secs(15);
/// Lease TTL for the registrar tests.
const TTL: Duration = Duration::from_secs(2);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The members at `endpoints`, with a short connect timeout.
fn cluster(endpoints: Vec<String>) -> EtcdCluster {
    EtcdCluster::new(endpoints).connect_timeout(Duration::from_millis(500))
}

fn discovery(endpoints: Vec<String>, prefix: &str, seed: u64) -> EtcdBuilder {
    discovery_with(cluster(endpoints), prefix, seed)
}

fn discovery_with(cluster: EtcdCluster, prefix: &str, seed: u64) -> EtcdBuilder {
    Etcd::builder(cluster, prefix)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .jitter_seed(seed)
}

/// Starts a registrar (TTL 2 s) and waits until its key is in etcd.
async fn register(cluster: EtcdCluster, prefix: &str, ep: Endpoint, seed: u64) -> Registrar {
    let r = Registrar::builder(cluster, prefix, ep)
        .ttl(TTL)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .jitter_seed(seed)
        .build()
        .unwrap();
    tokio::time::timeout(SOON, r.registered())
        .await
        .expect("registered in time")
        .expect("registrar task alive");
    r
}

/// Checks, every 100 ms for two TTLs, that `key` stays in etcd and that
/// `check` holds: keep-alives must be working.
async fn assert_held(kv: &mut etcd_client::Client, key: &str, check: impl Fn() -> bool) {
    let held_until = Instant::now() + TTL * 2;
    while Instant::now() < held_until {
        assert!(
            lease_of(kv, key).await.is_some(),
            "{key} expired while kept alive"
        );
        assert!(check(), "{key}: check failed while kept alive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a follower of the stream has seen, applied the way a channel does.
#[derive(Debug, Default)]
struct Seen {
    set: BTreeMap<SocketAddr, Endpoint>,
    resets: usize,
    errors: usize,
}

impl Seen {
    fn addrs(&self) -> BTreeSet<SocketAddr> {
        self.set.keys().copied().collect()
    }
}

/// Drives an `Etcd` stream in a task and records what it yields.
struct Follow {
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl Drop for Follow {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn follow(mut etcd: Etcd) -> Follow {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = seen.clone();
    let task = tokio::spawn(async move {
        while let Some(item) = etcd.next().await {
            let mut s = shared.lock();
            match item {
                Ok(Update::Reset(set)) => {
                    s.resets += 1;
                    s.set = set.into_iter().map(|e| (e.addr, e)).collect();
                }
                Ok(Update::Insert(e)) => {
                    s.set.insert(e.addr, e);
                }
                Ok(Update::Remove(a)) => {
                    s.set.remove(&a);
                }
                Err(_) => s.errors += 1,
            }
        }
    });
    Follow { seen, task }
}

impl Follow {
    fn addrs(&self) -> BTreeSet<SocketAddr> {
        self.seen.lock().addrs()
    }

    /// Polls until `cond` holds; fails naming `what` after `limit`.
    /// Returns how long it took.
    async fn wait(&self, what: &str, limit: Duration, cond: impl Fn(&Seen) -> bool) -> Duration {
        let start = Instant::now();
        loop {
            if cond(&self.seen.lock()) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}; seen {:?}",
                self.seen.lock()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn set_of(ports: &[u16]) -> BTreeSet<SocketAddr> {
    ports.iter().map(|&p| addr(p)).collect()
}

/// Whether `key` exists in etcd now, and under which lease.
async fn lease_of(client: &mut etcd_client::Client, key: &str) -> Option<i64> {
    let got = retry("get", async || client.get(key, None).await).await;
    got.kvs().first().map(|kv| kv.lease())
}

/// Runs the test's own etcd operation until it succeeds (a cluster that
/// just lost its leader refuses writes until it elects another), failing
/// after `SOON`.
async fn retry<T>(what: &str, mut op: impl AsyncFnMut() -> Result<T, etcd_client::Error>) -> T {
    let start = Instant::now();
    loop {
        match op().await {
            Ok(value) => return value,
            Err(e) => assert!(start.elapsed() < SOON, "{what} kept failing: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
