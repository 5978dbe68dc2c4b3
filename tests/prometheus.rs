//! The quickstart's Prometheus endpoint, scraped over real HTTP and parsed
//! with a Prometheus text-format parser: every towline series is described,
//! and each endpoint's breaker has its state gauge.
#![cfg(feature = "http")]

#[path = "support/prometheus.rs"]
mod prometheus;
#[path = "support/http.rs"]
mod support;

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus_parse::{Scrape, Value};
use towline::Channel;
use towline::balance::RoundRobin;
use towline::discover::Static;
use towline::http::StatusClassify;
use towline::policy::backoff::Backoff;
use towline::policy::breaker::BreakerSettings;
use towline::policy::budget::BudgetSettings;
use towline::policy::replay::CloneReplay;
use towline::policy::retry::RetrySettings;

use support::{Backend, Behavior, get};

const CALLS: u64 = 60;

/// GETs `url` until the exporter answers (it binds in the background),
/// for at most 10 s.
async fn scrape(url: &str) -> String {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let request = http::Request::get(url).body(Full::default()).unwrap();
        match client.request(request).await {
            Ok(response) if response.status() == StatusCode::OK => {
                let body = response.into_body().collect().await.unwrap().to_bytes();
                return String::from_utf8(body.to_vec()).expect("the exposition format is text");
            }
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "no scrape from {url}: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_scrape_parses_and_shows_each_endpoint_breaker() {
    let url = prometheus::serve(prometheus::free_local_addr()).unwrap();
    let backends = [
        Backend::start(Behavior::failing(StatusCode::INTERNAL_SERVER_ERROR), 1).await,
        Backend::start(Behavior::default(), 2).await,
        Backend::start(Behavior::default(), 3).await,
    ];
    let mut channel = Channel::builder(support::connector())
        .discover(Static::new(backends.iter().map(|b| b.addr)))
        .balancer(RoundRobin::new())
        .classifier(StatusClassify::new())
        .replayer(CloneReplay)
        .retry(
            RetrySettings::default()
                .with_max_attempts(3)
                .with_backoff(
                    Backoff::new(Duration::from_millis(1), 1.0, Duration::from_millis(1)).unwrap(),
                )
                .with_budget(BudgetSettings::new(1.0, 10_000, Duration::from_secs(10)).unwrap()),
        )
        .circuit_breaker(BreakerSettings::default().with_open_time(
            Duration::from_secs(60),
            2.0,
            Duration::from_secs(120),
        ))
        .name("scraped")
        .build()
        .unwrap();
    for _ in 0..CALLS {
        assert_eq!(get(&mut channel).await.unwrap().status, 200);
    }

    let text = scrape(&url).await;
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");

    // One state gauge per endpoint breaker, labelled by channel and
    // endpoint: the failing one open (2), the others closed (0).
    let gauges: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "towline_breaker_state")
        .collect();
    assert_eq!(gauges.len(), backends.len(), "{gauges:#?}");
    for (i, backend) in backends.iter().enumerate() {
        let endpoint = backend.addr.to_string();
        let gauge = gauges
            .iter()
            .find(|s| {
                s.labels.get("channel") == Some("scraped")
                    && s.labels.get("endpoint") == Some(endpoint.as_str())
            })
            .unwrap_or_else(|| panic!("no breaker gauge for {endpoint} in:\n{text}"));
        assert_eq!(gauge.labels.get("breaker"), None, "{gauge:?}");
        let want = if i == 0 { 2.0 } else { 0.0 };
        assert!(
            matches!(gauge.value, Value::Gauge(v) if v == want),
            "{gauge:?}"
        );
    }

    let successes = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "towline_requests_total"
                && s.labels.get("channel") == Some("scraped")
                && s.labels.get("outcome") == Some("success")
        })
        .expect("the request counter");
    assert!(
        matches!(successes.value, Value::Counter(n) if n == CALLS as f64),
        "{successes:?}"
    );

    // Every towline family has its description (HELP). Histograms are
    // rendered as summaries, whose `_sum` and `_count` samples belong to
    // the family without the suffix.
    let families: std::collections::BTreeSet<&str> = scrape
        .samples
        .iter()
        .map(|s| s.metric.as_str())
        .filter(|m| m.starts_with("towline_"))
        .map(|m| {
            let summary_part = m.strip_suffix("_sum").or_else(|| m.strip_suffix("_count"));
            summary_part
                .filter(|f| scrape.docs.contains_key(*f))
                .unwrap_or(m)
        })
        .collect();
    assert!(families.len() >= 10, "{families:?}");
    for family in families {
        let help = scrape.docs.get(family).map(String::as_str).unwrap_or("");
        assert!(help.len() > 10, "{family} has no description");
    }
}
