//! Address families against dnsmasq behind a relay that can drop every
//! AAAA (or A) query, as resolvers behind some middleboxes do.

use std::time::Duration;

use futures_util::StreamExt;
use metrics_util::debugging::DebuggingRecorder;
use towline::discover::{AddressFamilies, Dns, DnsBuilder, LOOKUP_ERRORS_METRIC};

use super::dns_relay::{A, AAAA, DnsRelay};
use super::dnsmasq::{Dnsmasq, Srv};
use super::{SRV_NAME, addr, addrs, counters, ip, wait_for_set};

/// A source on `relay`: 300 ms per query, one attempt, fast backoff.
fn through(builder: DnsBuilder, relay: &DnsRelay) -> DnsBuilder {
    builder
        .name_servers([relay.addr()])
        .timeout(Duration::from_millis(300))
        .attempts(1)
        .backoff(Duration::from_millis(200), Duration::from_secs(1))
        .jitter_seed(9)
}

fn dual_stack(v4: &str, v6: &str) -> Dnsmasq {
    Dnsmasq::start(&[(ip(v4), "api.svc.test"), (ip(v6), "api.svc.test")], &[])
}

#[tokio::test]
async fn dropped_aaaa_queries_keep_the_ipv6_endpoints_and_follow_the_ipv4_ones() {
    let server = dual_stack("127.0.0.21", "fd00::21");
    let relay = DnsRelay::start(server.addr()).await;
    let recorder = DebuggingRecorder::new();
    let metrics = recorder.snapshotter();
    let mut dns = metrics::with_local_recorder(&recorder, || {
        through(Dns::host("api.svc.test.", 80), &relay)
            .build()
            .unwrap()
    });
    let (set, _) = wait_for_set(&mut dns, Duration::from_secs(5), |_| true).await;
    assert_eq!(addrs(&set), [addr("127.0.0.21:80"), addr("[fd00::21]:80")]);

    // AAAA queries go unanswered from now on, and both records change.
    relay.drop_queries(Some(AAAA));
    server.set_hosts(&[
        (ip("127.0.0.22"), "api.svc.test"),
        (ip("fd00::22"), "api.svc.test"),
    ]);
    let (set, _) = wait_for_set(&mut dns, Duration::from_secs(10), |s| {
        s.iter().any(|e| e.addr.ip() == ip("127.0.0.22"))
    })
    .await;
    // The new IPv4 address, and the last IPv6 one kept (not the new one,
    // which nobody could ask for).
    assert_eq!(addrs(&set), [addr("127.0.0.22:80"), addr("[fd00::21]:80")]);
    // The failure comes right after the set, and is counted.
    match tokio::time::timeout(Duration::from_secs(5), dns.next()).await {
        Ok(Some(Err(e))) => assert!(e.message().contains("AAAA"), "{e:?}"),
        other => panic!("expected the AAAA failure, got {other:?}"),
    }
    let errors = counters(&metrics)
        .get(LOOKUP_ERRORS_METRIC)
        .copied()
        .unwrap_or(0);
    assert!(errors >= 1, "lookup errors counted: {errors}");

    // AAAA answered again: the new IPv6 address arrives.
    relay.drop_queries(None);
    let (set, _) = wait_for_set(&mut dns, Duration::from_secs(10), |s| {
        s.iter().any(|e| e.addr.ip() == ip("fd00::22"))
    })
    .await;
    assert_eq!(addrs(&set), [addr("127.0.0.22:80"), addr("[fd00::22]:80")]);
}

#[tokio::test]
async fn a_first_lookup_without_aaaa_answers_gives_the_ipv4_endpoints() {
    let server = dual_stack("127.0.0.23", "fd00::23");
    let relay = DnsRelay::start(server.addr()).await;
    relay.drop_queries(Some(AAAA));
    // The AAAA query would time out only after 30 s: the IPv4 endpoints
    // come after the family wait (250 ms by default), well within the 10 s
    // this waits for them.
    let mut dns = through(Dns::host("api.svc.test.", 80), &relay)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let (set, seen) = wait_for_set(&mut dns, Duration::from_secs(10), |_| true).await;
    assert_eq!(addrs(&set), [addr("127.0.0.23:80")]);
    assert!(seen.resets.is_empty(), "{seen:?}");
    // The AAAA failure is reported right after the set.
    match tokio::time::timeout(Duration::from_secs(5), dns.next()).await {
        Ok(Some(Err(e))) => assert!(e.message().contains("AAAA"), "{e:?}"),
        other => panic!("expected the AAAA failure, got {other:?}"),
    }
}

#[tokio::test]
async fn one_family_only_asks_for_that_family_alone() {
    let server = dual_stack("127.0.0.24", "fd00::24");
    for (families, expected, unasked) in [
        (AddressFamilies::V4Only, addr("127.0.0.24:80"), AAAA),
        (AddressFamilies::V6Only, addr("[fd00::24]:80"), A),
    ] {
        let relay = DnsRelay::start(server.addr()).await;
        // The other family's queries would go unanswered.
        relay.drop_queries(Some(unasked));
        let recorder = DebuggingRecorder::new();
        let metrics = recorder.snapshotter();
        let mut dns = metrics::with_local_recorder(&recorder, || {
            through(Dns::host("api.svc.test.", 80), &relay)
                .address_families(families)
                .build()
                .unwrap()
        });
        let (set, seen) = wait_for_set(&mut dns, Duration::from_secs(5), |_| true).await;
        assert_eq!(addrs(&set), [expected], "{families:?}");
        assert!(seen.errors.is_empty(), "{families:?}: {seen:?}");
        assert_eq!(
            counters(&metrics).get(LOOKUP_ERRORS_METRIC),
            Some(&0),
            "{families:?}"
        );
        let asked = relay.seen();
        assert!(
            !asked.is_empty() && !asked.contains(&unasked),
            "{families:?}: {asked:?}"
        );
    }
}

#[tokio::test]
async fn one_family_only_leaves_the_other_out_of_srv_answers() {
    let server = Dnsmasq::start(
        &[
            (ip("127.0.0.27"), "a1.svc.test"),
            (ip("fd00::27"), "a1.svc.test"),
        ],
        &[Srv::new(SRV_NAME, "a1.svc.test", 8080, 1, 1)],
    );
    let relay = DnsRelay::start(server.addr()).await;
    for (families, expected) in [
        (
            AddressFamilies::Both,
            vec![addr("127.0.0.27:8080"), addr("[fd00::27]:8080")],
        ),
        (AddressFamilies::V4Only, vec![addr("127.0.0.27:8080")]),
        (AddressFamilies::V6Only, vec![addr("[fd00::27]:8080")]),
    ] {
        let mut dns = through(Dns::srv(format!("{SRV_NAME}.")), &relay)
            .address_families(families)
            .build()
            .unwrap();
        let (set, _) = wait_for_set(&mut dns, Duration::from_secs(5), |_| true).await;
        assert_eq!(addrs(&set), expected, "{families:?}");
    }
}
