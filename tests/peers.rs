//! Peer coordinates from a real etcd the tests start: peers registered with
//! `Registrar` learn distinct indices, follow a peer leaving, keep their
//! coordinate through an etcd restart; and channels narrowed by
//! `Aperture` to those coordinates cover every server between them.
#![cfg(all(feature = "etcd", feature = "http"))]

#[path = "support/etcd.rs"]
mod etcd;
#[path = "support/http.rs"]
mod http;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::time::Instant;

use etcd::EtcdProcs;
use towline::discover::{EtcdCluster, PEER_ERRORS_METRIC, Peers, Registrar, Static};
use towline::subset::{Aperture, ApertureSettings, Coordinate};
use towline::{Channel, Endpoint};

/// Bound for anything that should happen "soon" on loopback.
const SOON: Duration = Duration::from_secs(15);
/// Lease TTL: long enough to outlive the etcd restart below.
const TTL: Duration = Duration::from_secs(5);
const PREFIX: &str = "/peers/api/";

fn cluster(procs: &EtcdProcs) -> EtcdCluster {
    EtcdCluster::new(procs.endpoints()).connect_timeout(Duration::from_millis(500))
}

/// Registers peer `i` as `{PREFIX}peer-{i}` and waits until it is in etcd.
async fn register(procs: &EtcdProcs, i: u16) -> Registrar {
    let me = Endpoint::new(SocketAddr::from(([127, 0, 0, 1], 9000 + i)));
    let r = Registrar::builder(cluster(procs), PREFIX, me)
        .instance_id(format!("peer-{i}"))
        .ttl(TTL)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .jitter_seed(u64::from(i))
        .build()
        .unwrap();
    tokio::time::timeout(SOON, r.registered())
        .await
        .expect("registered in time")
        .expect("registrar task alive");
    r
}

fn follow(procs: &EtcdProcs, key: &str, seed: u64) -> Peers {
    Peers::builder(cluster(procs), PREFIX, key)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .jitter_seed(seed)
        .build()
        .unwrap()
}

/// Polls `check` every 20 ms until it holds; fails after `SOON`. Returns
/// how long it took.
async fn until(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < SOON, "{what}: not within {SOON:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

fn coordinates(peers: &[Peers]) -> Vec<Option<(usize, usize)>> {
    peers
        .iter()
        .map(|p| p.current().map(|c| (c.index(), c.count())))
        .collect()
}

fn expected(count: usize) -> Vec<Option<(usize, usize)>> {
    (0..count).map(|i| Some((i, count))).collect()
}

#[test]
fn peers_get_distinct_indices_and_follow_one_leaving() {
    http::seeded_runtime(5010).block_on(async {
        let procs = EtcdProcs::single().await;
        let mut registrars = Vec::new();
        for i in 0..8 {
            registrars.push(register(&procs, i).await);
        }
        let peers: Vec<Peers> = registrars
            .iter()
            .zip(0..)
            .map(|(r, seed)| follow(&procs, r.key(), seed))
            .collect();
        until("8 peers see 8 distinct indices", || {
            coordinates(&peers) == expected(8)
        })
        .await;
        let mut changes = Box::pin(peers[0].changes());
        assert_eq!(changes.next().await, Some(Coordinate::new(0, 8).unwrap()));

        // Peer 3 leaves cleanly: its key goes at once.
        let leaving = registrars.remove(3);
        leaving.shutdown().await.expect("revoked");
        let took = until("the others converge to 7", || {
            let mut now = coordinates(&peers);
            now.remove(3);
            now == expected(7)
        })
        .await;
        println!("7 peers converged {took:?} after one left");
        assert_eq!(changes.next().await, Some(Coordinate::new(0, 7).unwrap()));
        // The one that left no longer sees its key: it keeps its last
        // coordinate rather than inventing one.
        assert_eq!(peers[3].current(), Coordinate::new(3, 8).ok());
    })
}

/// The followers' errors so far, summed into `total` over snapshots: a
/// snapshot of the debugging recorder drains its counters, so one snapshot
/// holds only the errors since the last (under load, the followers' errors
/// spread over many 20 ms polls and no single one holds three).
fn errors_of(snapshotter: &Snapshotter, total: &mut u64) -> u64 {
    *total += snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == PEER_ERRORS_METRIC)
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum::<u64>();
    *total
}

#[test]
fn an_etcd_restart_keeps_the_last_coordinate_then_refreshes_it() {
    http::seeded_runtime(5020).block_on(async {
        let mut procs = EtcdProcs::single().await;
        let mut registrars = Vec::new();
        for i in 1..=3 {
            registrars.push(register(&procs, i).await);
        }
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let peers: Vec<Peers> = metrics::with_local_recorder(&recorder, || {
            registrars
                .iter()
                .zip(0..)
                .map(|(r, seed)| follow(&procs, r.key(), seed))
                .collect()
        });
        until("3 peers", || coordinates(&peers) == expected(3)).await;

        procs.kill(0);
        let mut errors = 0;
        until("the followers to notice the outage", || {
            errors_of(&snapshotter, &mut errors) >= 3
        })
        .await;
        // Down for a while: the coordinates stay as they were.
        let held_until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < held_until {
            assert_eq!(coordinates(&peers), expected(3), "lost while etcd is down");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        procs.restart(0).await;
        // A peer that sorts first joins: every index moves up by one.
        let mut kv = procs.client().await;
        kv.put(format!("{PREFIX}peer-0"), "127.0.0.1:9000", None)
            .await
            .expect("put after the restart");
        let took = until("the followers to refresh", || {
            coordinates(&peers) == [Some((1, 4)), Some((2, 4)), Some((3, 4))]
        })
        .await;
        println!("refreshed {took:?} after etcd came back");
    })
}

/// Eight channels, each narrowed by `Aperture` to the coordinate its
/// `Peers` learns: each holds exactly its slice of the 24 servers, the
/// slices cover them all, and they adjust when a peer leaves.
#[test]
fn aperture_channels_cover_every_server_and_adjust() {
    http::seeded_runtime(5030).block_on(async {
        let procs = EtcdProcs::single().await;
        let servers: Vec<Endpoint> = (1..=24)
            .map(|p| Endpoint::new(SocketAddr::from(([10, 0, 0, 1], p))))
            .collect();
        let settings = ApertureSettings::new(6);
        let mut registrars = Vec::new();
        let mut peers = Vec::new();
        let mut channels = Vec::new();
        for i in 0..8 {
            let r = register(&procs, i).await;
            let p = follow(&procs, r.key(), u64::from(i));
            let subset = Aperture::new(Static::new(servers.clone()), settings, p.watch()).unwrap();
            let connect =
                |_: &Endpoint| tower::service_fn(|x: u32| async move { Ok::<_, Infallible>(x) });
            channels.push(Channel::builder(connect).discover(subset).build().unwrap());
            registrars.push(r);
            peers.push(p);
        }
        let held = |channels: &[Channel<u32, _>]| -> Vec<BTreeSet<SocketAddr>> {
            channels
                .iter()
                .map(|ch| ch.endpoints().iter().map(|e| e.endpoint.addr).collect())
                .collect()
        };
        let slices = |count: usize| -> Vec<BTreeSet<SocketAddr>> {
            (0..count)
                .map(|i| {
                    let c = Coordinate::new(i, count).unwrap();
                    settings
                        .subset(c, &servers)
                        .iter()
                        .map(|e| e.addr)
                        .collect()
                })
                .collect()
        };
        let all: BTreeSet<SocketAddr> = servers.iter().map(|e| e.addr).collect();
        until("each channel holds its slice of 8", || {
            held(&channels) == slices(8)
        })
        .await;
        let union = held(&channels)
            .into_iter()
            .flatten()
            .collect::<BTreeSet<_>>();
        assert_eq!(union, all);

        // The last peer leaves; its channel goes with it.
        registrars.pop().unwrap().shutdown().await.expect("revoked");
        channels.pop();
        until("the 7 remaining channels to re-slice", || {
            held(&channels) == slices(7)
        })
        .await;
        let union = held(&channels)
            .into_iter()
            .flatten()
            .collect::<BTreeSet<_>>();
        assert_eq!(union, all, "a server lost its clients");
        drop(peers);
    })
}
