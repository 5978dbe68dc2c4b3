//! The channel's metrics reach an installed `metrics` recorder.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};
use tower::{Service, ServiceExt, service_fn};
use towline::classify::Outcome;
use towline::discover::Manual;
use towline::policy::limit::{LimitAlgorithm, LimitSettings};
use towline::{Channel, Endpoint};

fn find<'a>(
    snapshot: &'a [(
        CompositeKey,
        Option<metrics::Unit>,
        Option<metrics::SharedString>,
        DebugValue,
    )],
    kind: MetricKind,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a DebugValue> {
    snapshot.iter().find_map(|(key, _, _, value)| {
        let k = key.key();
        let matches = key.kind() == kind
            && k.name() == name
            && labels
                .iter()
                .all(|(n, v)| k.labels().any(|l| l.key() == *n && l.value() == *v));
        matches.then_some(value)
    })
}

#[tokio::test]
async fn channel_reports_requests_endpoints_and_discovery() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("only recorder in this test binary");

    let good: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let bad: SocketAddr = "127.0.0.1:2".parse().unwrap();
    let manual = Manual::with_endpoints([good, bad]);
    let connect = |ep: &Endpoint| {
        let fails = ep.addr.port() == 2;
        service_fn(move |_: ()| async move { Ok::<_, Infallible>(fails) })
    };
    let mut channel = Channel::builder(connect)
        .discover(manual.stream())
        .balancer(towline::balance::RoundRobin::new())
        .classify(|r: &Result<bool, Infallible>| match r {
            Ok(true) => Outcome::Failure { retryable: false },
            _ => Outcome::Success,
        })
        .name("metrics-test")
        .build()
        .unwrap();
    for _ in 0..10 {
        channel.ready().await.unwrap().call(()).await.unwrap();
    }
    manual.remove(bad);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while channel.endpoints().len() != 1 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::task::yield_now().await;
    }

    let snap = snapshotter.snapshot().into_vec();
    let ch = ("channel", "metrics-test");
    let counter =
        |name, labels: &[(&str, &str)]| match find(&snap, MetricKind::Counter, name, labels) {
            Some(DebugValue::Counter(c)) => *c,
            other => panic!("{name} {labels:?}: {other:?}"),
        };
    assert_eq!(
        counter("towline_requests_total", &[ch, ("outcome", "success")]),
        5
    );
    assert_eq!(
        counter("towline_requests_total", &[ch, ("outcome", "failure")]),
        5
    );
    assert_eq!(
        counter(
            "towline_endpoint_requests_total",
            &[ch, ("endpoint", "127.0.0.1:2"), ("outcome", "failure")]
        ),
        5
    );
    assert_eq!(
        counter(
            "towline_endpoint_requests_total",
            &[ch, ("endpoint", "127.0.0.1:1"), ("outcome", "success")]
        ),
        5
    );
    assert_eq!(
        counter("towline_discovery_updates_total", &[ch, ("kind", "remove")]),
        1
    );
    assert!(counter("towline_discovery_updates_total", &[ch, ("kind", "reset")]) >= 1);
    match find(&snap, MetricKind::Gauge, "towline_endpoints", &[ch]) {
        Some(DebugValue::Gauge(g)) => assert_eq!(g.into_inner(), 1.0),
        other => panic!("endpoints gauge: {other:?}"),
    }
    match find(
        &snap,
        MetricKind::Histogram,
        "towline_request_duration_seconds",
        &[ch],
    ) {
        Some(DebugValue::Histogram(h)) => assert_eq!(h.len(), 10),
        other => panic!("duration histogram: {other:?}"),
    }

    // Concurrency limits: the channel's, and each endpoint's.
    let limits = Channel::builder(connect)
        .discover(Manual::with_endpoints([good]).stream())
        .concurrency_limit(LimitSettings::new(LimitAlgorithm::Fixed(7)))
        .endpoint_concurrency_limit(LimitSettings::new(LimitAlgorithm::Fixed(3)))
        .name("limits-test")
        .build()
        .unwrap();
    limits.oneshot(()).await.unwrap();
    let snap = snapshotter.snapshot().into_vec();
    let ch = ("channel", "limits-test");
    let gauge = |labels: &[(&str, &str)]| match find(
        &snap,
        MetricKind::Gauge,
        "towline_concurrency_limit",
        labels,
    ) {
        Some(DebugValue::Gauge(g)) => g.into_inner(),
        other => panic!("{labels:?}: {other:?}"),
    };
    assert_eq!(gauge(&[ch, ("endpoint", "127.0.0.1:1")]), 3.0);
    let channel_only = snap.iter().find(|(key, ..)| {
        let k = key.key();
        k.name() == "towline_concurrency_limit" && k.labels().map(|l| (l.key(), l.value())).eq([ch])
    });
    assert!(
        matches!(channel_only, Some((.., DebugValue::Gauge(g))) if g.into_inner() == 7.0),
        "{channel_only:?}"
    );
}
