//! etcd discovery and registration against real etcd processes on loopback:
//! a single member, and a 3-member cluster with a member killed.
#![cfg(feature = "etcd")]

#[path = "support/etcd.rs"]
mod etcd;
#[path = "support/http.rs"]
mod http;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

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

#[test]
fn put_makes_an_endpoint_appear_and_delete_removes_it() {
    http::seeded_runtime(4010).block_on(async {
        let procs = EtcdProcs::single().await;
        let mut kv = procs.client().await;
        kv.put("/svc/a/x", "127.0.0.1:1001", None).await.unwrap();
        let f = follow(discovery(procs.endpoints(), "/svc/a/", 1).build().unwrap());
        f.wait("the listed key", SOON, |s| s.addrs() == set_of(&[1001]))
            .await;

        let json = r#"{"addr": "127.0.0.1:1002", "weight": 5, "metadata": {"zone": "b"}}"#;
        kv.put("/svc/a/y", json, None).await.unwrap();
        let expected = Endpoint::new(addr(1002))
            .with_weight(5)
            .with_metadata("zone", "b");
        f.wait("the JSON endpoint", SOON, |s| {
            s.set.get(&addr(1002)) == Some(&expected)
        })
        .await;

        // Outside the prefix: never seen (the delete below comes after it).
        kv.put("/svc/other/z", "127.0.0.1:1003", None)
            .await
            .unwrap();
        kv.delete("/svc/a/x", None).await.unwrap();
        f.wait("the delete", SOON, |s| s.addrs() == set_of(&[1002]))
            .await;
        let seen = f.seen.lock();
        assert_eq!((seen.resets, seen.errors), (1, 0), "{seen:?}");
    })
}

/// Sum of the malformed-value counter over snapshots (a snapshot drains it).
fn malformed_count(snapshotter: &metrics_util::debugging::Snapshotter, total: &mut u64) -> u64 {
    use metrics_util::debugging::DebugValue;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if key.key().name() == MALFORMED_VALUES_METRIC
            && let DebugValue::Counter(n) = value
        {
            *total += n;
        }
    }
    *total
}

#[test]
fn malformed_values_are_skipped_and_counted_while_good_endpoints_stay() {
    http::seeded_runtime(4020).block_on(async {
        let procs = EtcdProcs::single().await;
        let mut kv = procs.client().await;
        kv.put("/svc/m/a", "127.0.0.1:2001", None).await.unwrap();
        kv.put("/svc/m/bad-at-start", "localhost:80", None)
            .await
            .unwrap();

        // The counter handle is registered once, at build: inside the local
        // recorder's scope it binds to that recorder.
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let etcd = metrics::with_local_recorder(&recorder, || {
            discovery(procs.endpoints(), "/svc/m/", 2).build().unwrap()
        });
        let f = follow(etcd);
        let mut count = 0;
        f.wait("the good listed key", SOON, |s| {
            s.addrs() == set_of(&[2001])
        })
        .await;
        assert_eq!(malformed_count(&snapshotter, &mut count), 1);

        kv.put("/svc/m/b", "127.0.0.1:2002", None).await.unwrap();
        kv.put("/svc/m/c", "{\"addr\": 12}", None).await.unwrap();
        // A good key turning malformed keeps its last good endpoint.
        kv.put("/svc/m/a", [0xff, 0xfe], None).await.unwrap();
        kv.put("/svc/m/d", "127.0.0.1:2004", None).await.unwrap();
        f.wait("the last good put", SOON, |s| {
            s.set.contains_key(&addr(2004))
        })
        .await;
        assert_eq!(f.addrs(), set_of(&[2001, 2002, 2004]));
        assert_eq!(malformed_count(&snapshotter, &mut count), 3);
        assert_eq!(f.seen.lock().errors, 0);
    })
}

#[test]
fn registrar_dropped_expires_within_ttl_and_shutdown_leaves_at_once() {
    http::seeded_runtime(4030).block_on(async {
        let procs = EtcdProcs::single().await;
        let mut kv = procs.client().await;
        let f = follow(discovery(procs.endpoints(), "/svc/r/", 3).build().unwrap());
        let a_ep = Endpoint::new(addr(3001)).with_metadata("zone", "a");
        let a = register(cluster(procs.endpoints()), "/svc/r/", a_ep.clone(), 1).await;
        let b = register(
            cluster(procs.endpoints()),
            "/svc/r/",
            Endpoint::new(addr(3002)),
            2,
        )
        .await;
        f.wait("both registrations", SOON, |s| {
            s.addrs() == set_of(&[3001, 3002]) && s.set[&addr(3001)] == a_ep
        })
        .await;

        // Keep-alives hold the keys well past the TTL.
        assert_held(&mut kv, a.key(), || f.addrs() == set_of(&[3001, 3002])).await;

        // Clean shutdown: the revoke deletes the key before shutdown returns.
        let b_key = b.key().to_owned();
        b.shutdown().await.unwrap();
        assert_eq!(lease_of(&mut kv, &b_key).await, None);
        f.wait(
            "the shut-down instance to leave",
            Duration::from_secs(1),
            |s| !s.set.contains_key(&addr(3002)),
        )
        .await;

        // Dropped without revoke: gone once the lease expires.
        drop(a);
        let took = f
            .wait(
                "the dropped instance to expire",
                TTL + Duration::from_secs(1),
                |s| s.set.is_empty(),
            )
            .await;
        println!("dropped registrar disappeared after {took:?} (TTL {TTL:?})");
    })
}

#[test]
fn registrar_whose_lease_was_lost_registers_again() {
    http::seeded_runtime(4040).block_on(async {
        let procs = EtcdProcs::single().await;
        let mut kv = procs.client().await;
        let r = register(
            cluster(procs.endpoints()),
            "/svc/l/",
            Endpoint::new(addr(4001)),
            3,
        )
        .await;
        let first = lease_of(&mut kv, r.key()).await.expect("registered key");
        // The lease vanishes behind the registrar's back (as after an etcd
        // restart on a fresh data directory): the key goes with it.
        kv.lease_revoke(first).await.unwrap();
        assert_eq!(lease_of(&mut kv, r.key()).await, None);

        let deadline = Instant::now() + TTL + Duration::from_secs(2);
        loop {
            if let Some(lease) = lease_of(&mut kv, r.key()).await {
                assert_ne!(lease, first, "the key came back under the revoked lease");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the registrar did not register again"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::timeout(SOON, r.registered())
            .await
            .unwrap()
            .unwrap();
        // Leaving revokes the new lease.
        let key = r.key().to_owned();
        r.shutdown().await.unwrap();
        assert_eq!(lease_of(&mut kv, &key).await, None);
    })
}

#[test]
fn etcd_restart_mid_watch_resumes_and_keeps_the_set_meanwhile() {
    http::seeded_runtime(4050).block_on(async {
        let mut procs = EtcdProcs::single().await;
        let mut kv = procs.client().await;
        kv.put("/svc/x/a", "127.0.0.1:5001", None).await.unwrap();
        kv.put("/svc/x/b", "127.0.0.1:5002", None).await.unwrap();
        let f = follow(discovery(procs.endpoints(), "/svc/x/", 4).build().unwrap());
        f.wait("the listed keys", SOON, |s| {
            s.addrs() == set_of(&[5001, 5002])
        })
        .await;

        procs.kill(0);
        f.wait("the stream to report the outage", SOON, |s| s.errors > 0)
            .await;
        assert_eq!(
            f.addrs(),
            set_of(&[5001, 5002]),
            "the last good set must stay"
        );

        procs.restart(0).await;
        let mut kv = procs.client().await;
        kv.put("/svc/x/c", "127.0.0.1:5003", None).await.unwrap();
        kv.delete("/svc/x/a", None).await.unwrap();
        f.wait("changes after the restart", SOON, |s| {
            s.addrs() == set_of(&[5002, 5003])
        })
        .await;
        assert!(f.seen.lock().resets >= 2, "no re-list after the restart");
    })
}

#[test]
fn watch_at_a_compacted_revision_relists_instead_of_sticking() {
    http::seeded_runtime(4060).block_on(async {
        let procs = EtcdProcs::single().await;
        let mut kv = procs.client().await;
        kv.put("/svc/c/a", "127.0.0.1:6001", None).await.unwrap();
        // Polled by hand: the stream works only while polled, so the watch is
        // opened (from the listed revision + 1) only at the second poll.
        let mut etcd = discovery(procs.endpoints(), "/svc/c/", 5).build().unwrap();
        let first = tokio::time::timeout(SOON, etcd.next()).await.unwrap();
        assert_eq!(
            first.unwrap().unwrap(),
            Update::Reset(vec![Endpoint::new(addr(6001))])
        );

        kv.put("/svc/c/b", "127.0.0.1:6002", None).await.unwrap();
        kv.delete("/svc/c/a", None).await.unwrap();
        let put = kv.put("/svc/c/c", "127.0.0.1:6003", None).await.unwrap();
        let revision = put.header().unwrap().revision();
        kv.compact(revision, None).await.unwrap();

        // The watch wants a revision that is gone: etcd cancels it with the
        // compact revision, and the stream lists again.
        let next = tokio::time::timeout(SOON, etcd.next()).await.unwrap();
        assert_eq!(
            next.unwrap().unwrap(),
            Update::Reset(vec![Endpoint::new(addr(6002)), Endpoint::new(addr(6003))])
        );
        // And the new watch works.
        kv.put("/svc/c/d", "127.0.0.1:6004", None).await.unwrap();
        let next = tokio::time::timeout(SOON, etcd.next()).await.unwrap();
        assert_eq!(
            next.unwrap().unwrap(),
            Update::Insert(Endpoint::new(addr(6004)))
        );
    })
}

#[test]
fn changes_and_compaction_while_our_member_is_down_are_seen_after_restart() {
    http::seeded_runtime(4070).block_on(async {
        let mut procs = EtcdProcs::cluster(3).await;
        let mut kv = procs.client_to(&[1, 2]).await;
        kv.put("/svc/d/a", "127.0.0.1:7001", None).await.unwrap();
        kv.put("/svc/d/b", "127.0.0.1:7002", None).await.unwrap();
        // Discovery talks to member 0 only.
        let f = follow(
            discovery(vec![procs.endpoint(0)], "/svc/d/", 6)
                .build()
                .unwrap(),
        );
        f.wait("the listed keys", SOON, |s| {
            s.addrs() == set_of(&[7001, 7002])
        })
        .await;

        procs.kill(0);
        f.wait("the stream to report the outage", SOON, |s| s.errors > 0)
            .await;
        // While it is down: a put, a delete, and a compaction past the revision
        // the watch had reached.
        retry("put", async || {
            kv.put("/svc/d/c", "127.0.0.1:7003", None).await
        })
        .await;
        retry("delete", async || kv.delete("/svc/d/a", None).await).await;
        let put = retry("put", async || {
            kv.put("/svc/d/e", "127.0.0.1:7005", None).await
        })
        .await;
        let revision = put.header().unwrap().revision();
        retry("compact", async || kv.compact(revision, None).await).await;
        assert_eq!(
            f.addrs(),
            set_of(&[7001, 7002]),
            "the last good set must stay"
        );

        procs.restart(0).await;
        f.wait("the changes made while down", SOON, |s| {
            s.addrs() == set_of(&[7002, 7003, 7005])
        })
        .await;
        // Still following afterwards.
        retry("delete", async || kv.delete("/svc/d/b", None).await).await;
        f.wait("a delete after the restart", SOON, |s| {
            s.addrs() == set_of(&[7003, 7005])
        })
        .await;
    })
}

#[test]
fn three_member_cluster_keeps_discovery_and_registration_with_the_leader_killed() {
    http::seeded_runtime(4080).block_on(async {
        let mut procs = EtcdProcs::cluster(3).await;
        let all = procs.endpoints();
        let f = follow(discovery(all.clone(), "/svc/k/", 7).build().unwrap());
        let r = register(
            cluster(all.clone()),
            "/svc/k/",
            Endpoint::new(addr(8001)),
            4,
        )
        .await;
        f.wait("the registration", SOON, |s| s.addrs() == set_of(&[8001]))
            .await;

        let leader = procs.leader().await;
        procs.kill(leader);
        let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
        let mut kv = procs.client_to(&survivors).await;

        // Discovery goes on through the survivors.
        retry("put", async || {
            kv.put("/svc/k/manual", "127.0.0.1:8002", None).await
        })
        .await;
        f.wait("a put after the kill", SOON, |s| {
            s.set.contains_key(&addr(8002))
        })
        .await;

        // The registration is kept alive through the survivors for 2 TTLs.
        assert_held(&mut kv, r.key(), || f.addrs().contains(&addr(8001))).await;

        // A new instance registers, is discovered, and leaves cleanly.
        let r2 = register(
            cluster(all.clone()),
            "/svc/k/",
            Endpoint::new(addr(8003)),
            5,
        )
        .await;
        f.wait("the new registration", SOON, |s| {
            s.set.contains_key(&addr(8003))
        })
        .await;
        r2.shutdown().await.unwrap();
        f.wait("the clean leave", SOON, |s| {
            s.addrs() == set_of(&[8001, 8002])
        })
        .await;
    })
}

#[test]
fn put_to_first_request_propagation_p50_p99() {
    http::seeded_runtime(4090).block_on(async {
    let procs = EtcdProcs::single().await;
    let mut kv = procs.client().await;
    let anchor = http::Backend::start(http::Behavior::default(), 1).await;
    let target = http::Backend::start(http::Behavior::default(), 2).await;
    kv.put("/svc/p/anchor", anchor.addr.to_string(), None)
        .await
        .unwrap();
    let etcd = discovery(procs.endpoints(), "/svc/p/", 8).build().unwrap();
    let mut channel = Channel::builder(http::connector())
        .discover(etcd)
        .balancer(RoundRobin::new())
        .build()
        .unwrap();
    let call = |channel: &mut Channel<String, http::Reply>| {
        let mut ch = channel.clone();
        async move { ch.ready().await?.call("/".to_string()).await }
    };
    call(&mut channel).await.unwrap();

    let mut samples = Vec::with_capacity(100);
    for i in 0..100 {
        let hits_before = target.hits();
        let start = Instant::now();
        kv.put("/svc/p/target", target.addr.to_string(), None)
            .await
            .unwrap();
        // Round-robin over {anchor, target}: the target gets every other
        // call once the channel has it.
        while target.hits() == hits_before {
            assert!(
                start.elapsed() < SOON,
                "change {i} never reached the channel"
            );
            call(&mut channel).await.unwrap();
        }
        samples.push(start.elapsed());
        kv.delete("/svc/p/target", None).await.unwrap();
        assert!(
            http::eventually(SOON, || channel
                .endpoints()
                .iter()
                .all(|e| e.endpoint.addr != target.addr))
            .await,
            "change {i}: the delete never reached the channel"
        );
    }
    samples.sort();
    let (p50, p99, max) = (samples[49], samples[98], samples[99]);
    println!(
        "etcd put-to-first-request propagation over {} changes: p50 {p50:?}, p99 {p99:?}, max {max:?}",
        samples.len()
    );
    // Target is 100 ms on loopback; the bound here only catches breakage.
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
    })
}

/// Discovery and registration work with the `good` connection settings,
/// and with the `bad` ones discovery yields only errors.
async fn works_only_with_good_settings(good: EtcdCluster, bad: EtcdCluster, prefix: &str) {
    let f = follow(discovery_with(good.clone(), prefix, 11).build().unwrap());
    let _r = register(good, prefix, Endpoint::new(addr(9001)), 7).await;
    f.wait("the registration", SOON, |s| s.addrs() == set_of(&[9001]))
        .await;
    let g = follow(discovery_with(bad, prefix, 12).build().unwrap());
    g.wait("a refused connection", SOON, |s| s.errors >= 2)
        .await;
    assert_eq!(g.seen.lock().resets, 0);
}

#[cfg(feature = "etcd-tls")]
#[test]
fn tls_members_serve_a_client_that_trusts_their_ca_only() {
    http::seeded_runtime(4100).block_on(async {
        use towline::discover::etcd::{Certificate, TlsOptions};

        let procs = EtcdProcs::single_tls().await;
        let url = format!("https://{}", procs.endpoint(0));
        let ca = procs.tls().expect("TLS member").ca_pem.clone();
        let trusting = cluster(vec![url.clone()]).tls(
            TlsOptions::new()
                .ca_certificate(Certificate::from_pem(&ca))
                .domain_name("127.0.0.1"),
        );
        // Without the CA the server's certificate is refused.
        let untrusting = cluster(vec![url]).tls(TlsOptions::new().domain_name("127.0.0.1"));
        works_only_with_good_settings(trusting, untrusting, "/svc/t/").await;
    })
}

#[test]
fn user_and_password_are_passed_through() {
    http::seeded_runtime(4110).block_on(async {
        let procs = EtcdProcs::single().await;
        let mut admin = procs.client().await;
        admin.user_add("root", "s3cret", None).await.unwrap();
        admin.user_grant_role("root", "root").await.unwrap();
        admin.auth_enable().await.unwrap();

        let login = cluster(procs.endpoints()).user("root", "s3cret");
        let wrong = cluster(procs.endpoints()).user("root", "wrong");
        works_only_with_good_settings(login, wrong, "/svc/u/").await;
    })
}
