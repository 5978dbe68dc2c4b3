//! DNS discovery against a real dnsmasq started by each test on its own port
//! (never the system resolver). Needs the Debian package `dnsmasq-base`.
#![cfg(all(feature = "dns", feature = "http"))]

#[path = "../support/dns_relay.rs"]
mod dns_relay;
#[path = "../support/dnsmasq.rs"]
mod dnsmasq;
#[path = "../support/http.rs"]
mod http;

mod families;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use towline::balance::RoundRobin;
use towline::discover::{
    DiscoverError, Dns, DnsBuilder, LOOKUP_ERRORS_METRIC, RefreshHint, SRV_TARGET_KEY, Update,
};
use towline::{Channel, Endpoint};

use dnsmasq::{Dnsmasq, LOCAL_TTL, Srv};
use http::{Behavior, connector, eventually, get, start_many};

const SRV_NAME: &str = "_http._tcp.svc.test";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Settings for fast tests: short timeouts and backoff, seeded jitter.
fn fast(builder: DnsBuilder, server: &Dnsmasq) -> DnsBuilder {
    builder
        .name_servers([server.addr()])
        .timeout(Duration::from_millis(1000))
        .attempts(1)
        .backoff(Duration::from_millis(200), Duration::from_secs(1))
        .jitter_seed(7)
}

/// What the stream said while waiting for a set.
#[derive(Debug, Default)]
struct Seen {
    resets: Vec<Vec<Endpoint>>,
    errors: Vec<DiscoverError>,
}

/// Reads the stream until a reset satisfies `done`, or panics at `deadline`.
async fn wait_for_set(
    dns: &mut Dns,
    within: Duration,
    done: impl Fn(&[Endpoint]) -> bool,
) -> (Vec<Endpoint>, Seen) {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = Seen::default();
    loop {
        match tokio::time::timeout_at(deadline, dns.next()).await {
            Ok(Some(Ok(Update::Reset(set)))) => {
                if done(&set) {
                    return (set, seen);
                }
                seen.resets.push(set);
            }
            Ok(Some(Ok(other))) => panic!("DNS yields only resets, got {other:?}"),
            Ok(Some(Err(e))) => seen.errors.push(e),
            Ok(None) => panic!("the DNS stream ended"),
            Err(_) => panic!("no matching set within {within:?}; saw {seen:?}"),
        }
    }
}

fn addrs(set: &[Endpoint]) -> Vec<SocketAddr> {
    set.iter().map(|e| e.addr).collect()
}

fn counters(snapshotter: &Snapshotter) -> HashMap<String, u64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(n) => Some((key.key().name().to_string(), n)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_and_aaaa_records_become_endpoints() {
    let server = Dnsmasq::start(
        &[
            (ip("127.0.0.12"), "api.svc.test"),
            (ip("127.0.0.11"), "api.svc.test"),
            (ip("fd00::11"), "api.svc.test"),
            (ip("127.0.0.99"), "other.svc.test"),
        ],
        &[],
    );
    let mut dns = fast(Dns::host("api.svc.test.", 8080), &server)
        .build()
        .unwrap();
    let (set, _) = wait_for_set(&mut dns, Duration::from_secs(5), |_| true).await;
    assert_eq!(
        addrs(&set),
        [
            addr("127.0.0.11:8080"),
            addr("127.0.0.12:8080"),
            addr("[fd00::11]:8080")
        ]
    );
    assert!(set.iter().all(|e| e.weight == 1));
}

/// The first set an SRV source on `server` yields: address, weight, target.
async fn first_srv_set(server: &Dnsmasq) -> Vec<(SocketAddr, u32, String)> {
    let mut dns = fast(Dns::srv(format!("{SRV_NAME}.")), server)
        .build()
        .unwrap();
    let (set, _) = wait_for_set(&mut dns, Duration::from_secs(5), |_| true).await;
    set.into_iter()
        .map(|e| (e.addr, e.weight, e.metadata[SRV_TARGET_KEY].clone()))
        .collect()
}

#[tokio::test]
async fn srv_records_become_weighted_endpoints_of_the_lowest_priority() {
    let server = Dnsmasq::start(
        &[
            (ip("127.0.0.21"), "a1.svc.test"),
            (ip("127.0.0.22"), "a2.svc.test"),
            (ip("127.0.0.23"), "backup.svc.test"),
        ],
        &[
            Srv::new(SRV_NAME, "a1.svc.test", 8081, 10, 5),
            Srv::new(SRV_NAME, "a2.svc.test", 8082, 10, 1),
            Srv::new(SRV_NAME, "backup.svc.test", 9000, 20, 9),
        ],
    );
    assert_eq!(
        first_srv_set(&server).await,
        [
            (addr("127.0.0.21:8081"), 5, "a1.svc.test.".into()),
            (addr("127.0.0.22:8082"), 1, "a2.svc.test.".into()),
        ]
    );
}

#[tokio::test]
async fn srv_targets_without_glue_are_looked_up() {
    let server = Dnsmasq::start_with_addresses(
        &[(ip("127.0.0.25"), "a1.svc.test")],
        &[
            Srv::new(SRV_NAME, "a1.svc.test", 81, 1, 1),
            Srv::new(SRV_NAME, "far.svc.test", 80, 1, 3),
        ],
        &[("far.svc.test", ip("127.0.0.26"))],
    );
    assert_eq!(
        first_srv_set(&server).await,
        [
            (addr("127.0.0.25:81"), 1, "a1.svc.test.".into()),
            (addr("127.0.0.26:80"), 3, "far.svc.test.".into()),
        ]
    );
}

#[tokio::test]
async fn a_hosts_dir_change_arrives_within_ttl_plus_one_second() {
    let server = Dnsmasq::start(&[(ip("127.0.0.31"), "api.svc.test")], &[]);
    let mut dns = fast(Dns::host("api.svc.test.", 80), &server)
        .build()
        .unwrap();
    let (set, _) = wait_for_set(&mut dns, Duration::from_secs(5), |_| true).await;
    assert_eq!(addrs(&set), [addr("127.0.0.31:80")]);

    let limit = Duration::from_secs(LOCAL_TTL + 1);
    // An added record...
    server.set_hosts(&[
        (ip("127.0.0.31"), "api.svc.test"),
        (ip("127.0.0.32"), "api.svc.test"),
    ]);
    let (set, seen) = wait_for_set(&mut dns, limit, |s| s.len() == 2).await;
    assert_eq!(addrs(&set), [addr("127.0.0.31:80"), addr("127.0.0.32:80")]);
    assert!(seen.resets.is_empty(), "no set in between: {seen:?}");

    // ...and a changed one.
    server.set_hosts(&[
        (ip("127.0.0.33"), "api.svc.test"),
        (ip("127.0.0.32"), "api.svc.test"),
    ]);
    let (set, _) = wait_for_set(&mut dns, limit, |s| {
        s.iter().any(|e| e.addr.ip() == ip("127.0.0.33"))
    })
    .await;
    assert_eq!(addrs(&set), [addr("127.0.0.32:80"), addr("127.0.0.33:80")]);
}

#[tokio::test]
async fn a_dead_server_keeps_the_set_counts_errors_and_refresh_resumes() {
    let mut server = Dnsmasq::start(&[(ip("127.0.0.41"), "api.svc.test")], &[]);
    let recorder = DebuggingRecorder::new();
    let metrics = recorder.snapshotter();
    // Handles are registered at build: they stay bound to this recorder.
    let mut dns = metrics::with_local_recorder(&recorder, || {
        fast(Dns::host("api.svc.test.", 80), &server)
            .build()
            .unwrap()
    });
    wait_for_set(&mut dns, Duration::from_secs(5), |s| s.len() == 1).await;
    assert_eq!(counters(&metrics).get(LOOKUP_ERRORS_METRIC), Some(&0));

    server.kill();
    // The stream reports failures and never a new set while the server is down.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut errors = 0;
    while errors < 3 {
        match tokio::time::timeout_at(deadline, dns.next()).await {
            Ok(Some(Err(e))) => {
                assert!(e.message().contains("api.svc.test"), "{e:?}");
                errors += 1;
            }
            other => panic!("expected lookup errors while dnsmasq is down, got {other:?}"),
        }
    }
    assert_eq!(counters(&metrics).get(LOOKUP_ERRORS_METRIC), Some(&3));

    // Refresh resumes: a change made while the server was down shows up.
    server.set_hosts(&[(ip("127.0.0.42"), "api.svc.test")]);
    server.restart();
    let (set, _) = wait_for_set(&mut dns, Duration::from_secs(5), |s| {
        s.iter().any(|e| e.addr.ip() == ip("127.0.0.42"))
    })
    .await;
    assert_eq!(addrs(&set), [addr("127.0.0.42:80")]);
}

#[tokio::test]
async fn nxdomain_empties_the_set_only_after_the_grace_period() {
    let server = Dnsmasq::start(&[(ip("127.0.0.51"), "api.svc.test")], &[]);
    let grace = Duration::from_secs(3);
    let mut dns = fast(Dns::host("api.svc.test.", 80), &server)
        .empty_grace(grace)
        .build()
        .unwrap();
    wait_for_set(&mut dns, Duration::from_secs(5), |s| s.len() == 1).await;

    server.set_hosts(&[(ip("127.0.0.59"), "unrelated.svc.test")]);
    let removed_at = Instant::now();
    // The first NXDOMAIN comes within a TTL; the set goes a grace later.
    let limit = grace + Duration::from_secs(LOCAL_TTL + 1);
    let (_, seen) = wait_for_set(&mut dns, limit, <[Endpoint]>::is_empty).await;
    let held = removed_at.elapsed();
    assert!(
        held >= grace,
        "set dropped after {held:?}, before the {grace:?} grace"
    );
    assert!(seen.resets.is_empty(), "no set in between: {seen:?}");
}

#[tokio::test]
async fn an_srv_change_after_a_restart_is_picked_up() {
    let hosts = [
        (ip("127.0.0.61"), "a1.svc.test"),
        (ip("127.0.0.62"), "a2.svc.test"),
    ];
    let mut server = Dnsmasq::start(&hosts, &[Srv::new(SRV_NAME, "a1.svc.test", 8080, 1, 5)]);
    let mut dns = fast(Dns::srv(format!("{SRV_NAME}.")), &server)
        .build()
        .unwrap();
    let (set, _) = wait_for_set(&mut dns, Duration::from_secs(5), |_| true).await;
    assert_eq!(addrs(&set), [addr("127.0.0.61:8080")]);

    server.restart_with_srv(&[
        Srv::new(SRV_NAME, "a1.svc.test", 8080, 1, 2),
        Srv::new(SRV_NAME, "a2.svc.test", 8080, 1, 7),
    ]);
    let (set, _) = wait_for_set(&mut dns, Duration::from_secs(LOCAL_TTL + 3), |s| {
        s.len() == 2
    })
    .await;
    let got: Vec<(SocketAddr, u32)> = set.iter().map(|e| (e.addr, e.weight)).collect();
    assert_eq!(
        got,
        [(addr("127.0.0.61:8080"), 2), (addr("127.0.0.62:8080"), 7)]
    );
}

#[tokio::test]
async fn a_refresh_hint_looks_again_before_the_ttl() {
    let server = Dnsmasq::start(&[(ip("127.0.0.71"), "api.svc.test")], &[]);
    let hint = RefreshHint::new();
    // TTL refresh would only come after about a minute.
    let mut dns = fast(Dns::host("api.svc.test.", 80), &server)
        .min_ttl(Duration::from_secs(60))
        .refresh_hint(hint.clone())
        .build()
        .unwrap();
    wait_for_set(&mut dns, Duration::from_secs(5), |s| s.len() == 1).await;
    server.set_hosts(&[(ip("127.0.0.72"), "api.svc.test")]);
    hint.request();
    // Rate limit (1 s after the last lookup) plus a lookup.
    let (set, _) = wait_for_set(&mut dns, Duration::from_secs(3), |_| true).await;
    assert_eq!(addrs(&set), [addr("127.0.0.72:80")]);
}

/// SRV records for backends that all listen on 127.0.0.1 with their own
/// ports: `b{i}.svc.test` → port of backend i, priority 1, weight 1.
fn srv_for(ports: &[u16]) -> Vec<Srv> {
    ports
        .iter()
        .enumerate()
        .map(|(i, port)| Srv::new(SRV_NAME, &format!("b{i}.svc.test"), *port, 1, 1))
        .collect()
}

fn loopback_hosts(count: usize) -> Vec<(IpAddr, String)> {
    (0..count)
        .map(|i| (ip("127.0.0.1"), format!("b{i}.svc.test")))
        .collect()
}

fn host_refs(hosts: &[(IpAddr, String)]) -> Vec<(IpAddr, &str)> {
    hosts
        .iter()
        .map(|(ip, name)| (*ip, name.as_str()))
        .collect()
}

#[test]
fn requests_reach_a_backend_added_in_dns() {
    http::seeded_runtime(3010).block_on(async {
        let backends = start_many(2, Behavior::default()).await;
        let ports: Vec<u16> = backends.iter().map(|b| b.addr.port()).collect();
        // Both SRV records exist, but only b0's name resolves at first.
        let server = Dnsmasq::start(&host_refs(&loopback_hosts(1)), &srv_for(&ports));
        let dns = fast(Dns::srv(format!("{SRV_NAME}.")), &server)
            .build()
            .unwrap();
        let mut channel = Channel::builder(connector())
            .discover(dns)
            .balancer(RoundRobin::new())
            .name("dns-added")
            .build()
            .unwrap();
        for _ in 0..10 {
            assert_eq!(get(&mut channel).await.unwrap().from, backends[0].addr);
        }
        assert_eq!(backends[1].hits(), 0);

        server.set_hosts(&host_refs(&loopback_hosts(2)));
        let limit = Duration::from_secs(LOCAL_TTL + 1);
        assert!(
            eventually(limit, || channel.endpoints().len() == 2).await,
            "the new backend did not reach the channel within {limit:?}"
        );
        for _ in 0..10 {
            assert_eq!(get(&mut channel).await.unwrap().status, 200);
        }
        // Round-robin over two: half of the new calls each.
        assert_eq!(backends[1].hits(), 5);
    })
}

#[test]
fn the_channel_keeps_serving_while_dnsmasq_is_down() {
    http::seeded_runtime(3020).block_on(async {
        let backends = start_many(2, Behavior::default()).await;
        let ports: Vec<u16> = backends.iter().map(|b| b.addr.port()).collect();
        let mut server = Dnsmasq::start(&host_refs(&loopback_hosts(2)), &srv_for(&ports));
        let recorder = DebuggingRecorder::new();
        let metrics = recorder.snapshotter();
        let dns = metrics::with_local_recorder(&recorder, || {
            fast(Dns::srv(format!("{SRV_NAME}.")), &server)
                .build()
                .unwrap()
        });
        let mut channel = Channel::builder(connector())
            .discover(dns)
            .balancer(RoundRobin::new())
            .name("dns-down")
            .build()
            .unwrap();
        assert_eq!(get(&mut channel).await.unwrap().status, 200);
        assert!(eventually(Duration::from_secs(5), || channel.endpoints().len() == 2).await);

        server.kill();
        // Serve all through several failed lookups.
        let mut errors = 0;
        let deadline = Instant::now() + Duration::from_secs(15);
        while errors < 3 {
            assert!(
                Instant::now() < deadline,
                "only {errors} lookup errors counted"
            );
            let reply = get(&mut channel).await.expect("served from the last set");
            assert_eq!(reply.status, 200);
            // Each snapshot takes the increments since the one before.
            errors += counters(&metrics)
                .get(LOOKUP_ERRORS_METRIC)
                .copied()
                .unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(20)).await; // pace the calls
        }
        assert_eq!(channel.endpoints().len(), 2);
        assert!(backends.iter().all(|b| b.hits() > 1));
    })
}

#[test]
fn invalid_settings_are_build_errors() {
    let host = || Dns::host("api.svc.test.", 80);
    let secs = Duration::from_secs;
    let cases: Vec<(DnsBuilder, &str)> = vec![
        (Dns::host("api.svc.test.", 0), "port"),
        (Dns::host("", 80), "name"),
        (Dns::host("bad..name.", 80), "name"),
        (Dns::srv("api.svc.test."), "name"),
        (host().timeout(Duration::ZERO), "timeout"),
        (host().attempts(0), "attempts"),
        (host().min_ttl(Duration::ZERO), "min_ttl"),
        (host().min_ttl(secs(10)).max_ttl(secs(5)), "max_ttl"),
        (host().jitter(1.0), "jitter"),
        (host().jitter(f64::NAN), "jitter"),
        (host().backoff(Duration::ZERO, secs(1)), "backoff"),
        (host().backoff(secs(2), secs(1)), "backoff"),
        (host().max_endpoints(0), "max_endpoints"),
        (
            host().min_hint_interval(Duration::ZERO),
            "min_hint_interval",
        ),
        (host().name_servers([]), "name_servers"),
    ];
    for (builder, setting) in cases {
        let err = builder.build().unwrap_err();
        assert_eq!(err.setting(), setting, "{err}");
    }
    // And the valid forms build (no runtime needed).
    host().name_servers([addr("127.0.0.1:53")]).build().unwrap();
    Dns::srv("_http._tcp.svc.test.")
        .name_servers([addr("127.0.0.1:53")])
        .build()
        .unwrap();
}

#[test]
fn the_system_configuration_builds() {
    // Reads /etc/resolv.conf; no query is sent.
    Dns::host("api.svc.test.", 80)
        .build()
        .expect("system resolver configuration");
}
