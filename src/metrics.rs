//! Metric names and handles, reported through the [`metrics`] facade.
//!
//! Install any `metrics` recorder (Prometheus exporter, statsd, …) and a
//! channel reports the series below. Every handle is registered once, when
//! the channel is built or an endpoint is inserted, so the call path never
//! formats or hashes a label. Without a recorder the handles do nothing.
//!
//! Every series has a description and a unit, given to the recorder by
//! [`describe`]; channels, layers and breakers call it when they are built.
//! Call it yourself if you use a discovery source without a channel.
//!
//! Labels: `channel` is the name given to the channel builder (default
//! `"default"`); `endpoint` is the endpoint's socket address; `outcome` is
//! `success`, `failure` or `overloaded` (as the classifier said); `kind` is
//! `reset`, `insert` or `remove`.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `towline_requests_total` | counter | channel, outcome | calls finished through the channel |
//! | `towline_request_duration_seconds` | histogram | channel | call latency as the caller saw it |
//! | `towline_endpoints` | gauge | channel | endpoints in the current set |
//! | `towline_discovery_updates_total` | counter | channel, kind | discovery updates applied |
//! | `towline_discovery_errors_total` | counter | channel | errors reported by the discovery source |
//! | `towline_endpoint_requests_total` | counter | channel, endpoint, outcome | attempts sent to one endpoint |
//! | `towline_endpoint_request_duration_seconds` | histogram | channel, endpoint | attempt latency on one endpoint |
//! | `towline_endpoint_in_flight` | gauge | channel, endpoint | attempts in flight on one endpoint |
//! | `towline_attempts_total` | counter | channel | attempts sent under a policy (first tries, retries, hedges) |
//! | `towline_retries_total` | counter | channel | retries sent |
//! | `towline_hedges_sent_total` | counter | channel | hedged attempts sent |
//! | `towline_hedges_won_total` | counter | channel | calls answered by a hedged attempt |
//! | `towline_budget_exhausted_total` | counter | channel, budget | retries (`budget="retry"`) or hedges (`"hedge"`) refused by their budget |
//! | `towline_throttled_total` | counter | channel | attempts refused by adaptive throttling, never sent |
//! | `towline_breaker_state` | gauge | channel, endpoint | endpoint breaker state: 0 closed, 1 half-open, 2 open |
//! | `towline_ejected_endpoints` | gauge | channel | endpoints ejected from picks by their breaker |
//! | `towline_http_unreplayable_bodies_total` | counter | | request bodies that outgrew their replay buffer (feature `http`) |
//! | `towline_concurrency_limit`, `towline_concurrency_min_rtt_seconds` | gauge | limiter (a layer), or channel and, per endpoint, endpoint | an adaptive concurrency limit and its baseline RTT |
//! | `towline_concurrency_rejected_total`, `towline_concurrency_queued_total` | counter | limiter, or channel (and endpoint) | calls a concurrency limit refused or queued |
//!
//! Durations are in seconds; everything else counts (unit `count`; the
//! breaker state gauge is a code). Discovery sources add their own series
//! (`towline_dns_*`, `towline_etcd_*`, `towline_peers_*`), described by
//! [`describe`] too.
//!
//! The policy series are also reported by the standalone layers of
//! [`crate::policy`] (without the `channel` label); their names are
//! constants in [`crate::policy::metrics`].

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit, counter, gauge, histogram};

use crate::classify::Outcome;

/// `towline_requests_total`: calls finished, by outcome.
pub const REQUESTS_TOTAL: &str = "towline_requests_total";
/// `towline_request_duration_seconds`: call latency.
pub const REQUEST_DURATION: &str = "towline_request_duration_seconds";
/// `towline_endpoints`: size of the current endpoint set.
pub const ENDPOINTS: &str = "towline_endpoints";
/// `towline_discovery_updates_total`: discovery updates applied, by kind.
pub const DISCOVERY_UPDATES: &str = "towline_discovery_updates_total";
/// `towline_discovery_errors_total`: errors from the discovery source.
pub const DISCOVERY_ERRORS: &str = "towline_discovery_errors_total";
/// `towline_endpoint_requests_total`: attempts per endpoint, by outcome.
pub const ENDPOINT_REQUESTS: &str = "towline_endpoint_requests_total";
/// `towline_endpoint_request_duration_seconds`: attempt latency per endpoint.
pub const ENDPOINT_DURATION: &str = "towline_endpoint_request_duration_seconds";
/// `towline_endpoint_in_flight`: attempts in flight per endpoint.
pub const ENDPOINT_IN_FLIGHT: &str = "towline_endpoint_in_flight";

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric's name, kind, unit and description.
pub(crate) struct Description {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) unit: Unit,
    pub(crate) text: &'static str,
}

const fn count(name: &'static str, kind: Kind, text: &'static str) -> Description {
    Description {
        name,
        kind,
        unit: Unit::Count,
        text,
    }
}

const fn seconds(name: &'static str, text: &'static str) -> Description {
    Description {
        name,
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        text,
    }
}

use crate::policy::limit;
use crate::policy::metrics as policy;

/// Every metric the crate reports, without the feature-gated ones.
const CORE: &[Description] = &[
    count(
        REQUESTS_TOTAL,
        Kind::Counter,
        "Calls finished through the channel, by outcome (success, failure, overloaded).",
    ),
    seconds(
        REQUEST_DURATION,
        "Call latency as the caller saw it, retries and pauses included.",
    ),
    count(
        ENDPOINTS,
        Kind::Gauge,
        "Endpoints in the channel's current set.",
    ),
    count(
        DISCOVERY_UPDATES,
        Kind::Counter,
        "Discovery updates applied, by kind (reset, insert, remove).",
    ),
    count(
        DISCOVERY_ERRORS,
        Kind::Counter,
        "Errors reported by the channel's discovery source.",
    ),
    count(
        ENDPOINT_REQUESTS,
        Kind::Counter,
        "Attempts finished on one endpoint, by outcome.",
    ),
    seconds(ENDPOINT_DURATION, "Attempt latency on one endpoint."),
    count(
        ENDPOINT_IN_FLIGHT,
        Kind::Gauge,
        "Attempts in flight on one endpoint.",
    ),
    count(
        policy::ATTEMPTS,
        Kind::Counter,
        "Attempts sent under a retry or hedging policy: first tries, retries and hedges.",
    ),
    count(policy::RETRIES, Kind::Counter, "Retries sent."),
    count(
        policy::HEDGES_SENT,
        Kind::Counter,
        "Extra (hedged) attempts sent.",
    ),
    count(
        policy::HEDGES_WON,
        Kind::Counter,
        "Calls answered by a hedged attempt.",
    ),
    count(
        policy::BUDGET_EXHAUSTED,
        Kind::Counter,
        "Retries or hedges refused by their budget, by budget (retry, hedge).",
    ),
    count(
        policy::THROTTLED,
        Kind::Counter,
        "Attempts refused by the channel's adaptive throttling, never sent (the backends were refusing or failing most recent attempts).",
    ),
    count(
        policy::BREAKER_STATE,
        Kind::Gauge,
        "Circuit breaker state, by channel and endpoint (or by breaker name for a standalone breaker): 0 closed, 1 half-open, 2 open (forced states as the state they force).",
    ),
    count(
        crate::channel::EJECTED_ENDPOINTS,
        Kind::Gauge,
        "Endpoints ejected from picks because their breaker is not closed.",
    ),
    count(
        limit::LIMIT_METRIC,
        Kind::Gauge,
        "Concurrency limit in force, by limiter or channel.",
    ),
    Description {
        name: limit::MIN_RTT_METRIC,
        kind: Kind::Gauge,
        unit: Unit::Seconds,
        text: "Baseline round-trip time the adaptive concurrency limit compares against, by limiter or channel.",
    },
    count(
        limit::REJECTED_METRIC,
        Kind::Counter,
        "Calls refused by a concurrency limit, by limiter or channel.",
    ),
    count(
        limit::QUEUED_METRIC,
        Kind::Counter,
        "Calls that waited in a concurrency limiter's queue, by limiter or channel.",
    ),
];

#[cfg(feature = "dns")]
const DNS: &[Description] = {
    use crate::discover::dns;
    &[
        count(
            dns::LOOKUPS_METRIC,
            Kind::Counter,
            "DNS lookups made, by name.",
        ),
        count(
            dns::LOOKUP_ERRORS_METRIC,
            Kind::Counter,
            "DNS lookups that failed or found nothing usable, by name.",
        ),
        count(
            dns::RECORDS_SKIPPED_METRIC,
            Kind::Counter,
            "Malformed or unusable DNS records skipped, by name.",
        ),
        count(
            dns::ENDPOINTS_CAPPED_METRIC,
            Kind::Counter,
            "DNS answers cut to the endpoint cap, by name.",
        ),
    ]
};
#[cfg(not(feature = "dns"))]
const DNS: &[Description] = &[];

#[cfg(feature = "etcd")]
const ETCD: &[Description] = &[
    count(
        crate::discover::etcd::MALFORMED_VALUES_METRIC,
        Kind::Counter,
        "Values under a watched etcd prefix that were not endpoints, by prefix.",
    ),
    count(
        crate::discover::PEER_ERRORS_METRIC,
        Kind::Counter,
        "Failed list or watch attempts of an etcd peer follower, by prefix.",
    ),
];
#[cfg(not(feature = "etcd"))]
const ETCD: &[Description] = &[];

#[cfg(feature = "http")]
const HTTP: &[Description] = &[count(
    crate::http::UNREPLAYABLE_BODIES,
    Kind::Counter,
    "Request bodies that outgrew their replay buffer: those requests are sent once, never retried or hedged.",
)];
#[cfg(not(feature = "http"))]
const HTTP: &[Description] = &[];

/// Every metric of the crate, with the enabled features'.
pub(crate) fn descriptions() -> impl Iterator<Item = &'static Description> {
    CORE.iter().chain(DNS).chain(ETCD).chain(HTTP)
}

/// Gives the installed recorder the unit and description of every metric
/// towline reports. Idempotent and cheap; channels, policy layers and
/// breakers call it when they are built, so call it yourself only for a
/// discovery source used without a channel, or for a recorder installed
/// after the channel was built.
pub fn describe() {
    for d in descriptions() {
        match d.kind {
            Kind::Counter => metrics::describe_counter!(d.name, d.unit, d.text),
            Kind::Gauge => metrics::describe_gauge!(d.name, d.unit, d.text),
            Kind::Histogram => metrics::describe_histogram!(d.name, d.unit, d.text),
        }
    }
}

/// `labels` plus `key = value` (for registering handles, never per call).
pub(crate) fn with_label(
    labels: &[(&'static str, String)],
    key: &'static str,
    value: &str,
) -> Vec<(&'static str, String)> {
    let mut all = labels.to_vec();
    all.push((key, value.to_string()));
    all
}

/// One counter per outcome, so recording needs no label.
#[derive(Debug, Clone)]
pub(crate) struct OutcomeCounters {
    success: Counter,
    failure: Counter,
    overloaded: Counter,
}

impl OutcomeCounters {
    fn new(name: &'static str, labels: &[(&'static str, String)]) -> Self {
        let with = |outcome: &str| counter!(name, &with_label(labels, "outcome", outcome));
        OutcomeCounters {
            success: with("success"),
            failure: with("failure"),
            overloaded: with("overloaded"),
        }
    }

    pub(crate) fn record(&self, outcome: Outcome) {
        match outcome {
            Outcome::Success => self.success.increment(1),
            Outcome::Failure { .. } => self.failure.increment(1),
            Outcome::Overloaded { .. } => self.overloaded.increment(1),
        }
    }
}

/// Channel-wide handles.
#[derive(Debug, Clone)]
pub(crate) struct ChannelMetrics {
    pub(crate) requests: OutcomeCounters,
    pub(crate) duration: Histogram,
    pub(crate) endpoints: Gauge,
    pub(crate) resets: Counter,
    pub(crate) inserts: Counter,
    pub(crate) removes: Counter,
    pub(crate) discovery_errors: Counter,
    name: String,
}

impl ChannelMetrics {
    pub(crate) fn new(channel: &str) -> Self {
        describe();
        let labels = [("channel", channel.to_string())];
        let kind = |k: &'static str| counter!(DISCOVERY_UPDATES, "channel" => channel.to_string(), "kind" => k);
        ChannelMetrics {
            requests: OutcomeCounters::new(REQUESTS_TOTAL, &labels),
            duration: histogram!(REQUEST_DURATION, &labels),
            endpoints: gauge!(ENDPOINTS, &labels),
            resets: kind("reset"),
            inserts: kind("insert"),
            removes: kind("remove"),
            discovery_errors: counter!(DISCOVERY_ERRORS, &labels),
            name: channel.to_string(),
        }
    }

    /// Handles for one endpoint of this channel.
    pub(crate) fn endpoint(&self, addr: std::net::SocketAddr) -> EndpointMetrics {
        let labels = [
            ("channel", self.name.clone()),
            ("endpoint", addr.to_string()),
        ];
        EndpointMetrics {
            requests: OutcomeCounters::new(ENDPOINT_REQUESTS, &labels),
            duration: histogram!(ENDPOINT_DURATION, &labels),
            in_flight: gauge!(ENDPOINT_IN_FLIGHT, &labels),
        }
    }

    pub(crate) fn record_call(&self, outcome: Outcome, latency: Duration) {
        self.requests.record(outcome);
        self.duration.record(latency.as_secs_f64());
    }
}

/// Per-endpoint handles, made when the endpoint is inserted.
#[derive(Debug, Clone)]
pub(crate) struct EndpointMetrics {
    pub(crate) requests: OutcomeCounters,
    pub(crate) duration: Histogram,
    pub(crate) in_flight: Gauge,
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::SocketAddr;
    use std::time::Duration;

    use metrics_util::debugging::DebuggingRecorder;
    use tower::{Service, ServiceExt, service_fn};

    use super::*;
    use crate::discover::Static;
    use crate::policy::breaker::BreakerSettings;
    use crate::policy::hedge::{HedgeDelay, HedgeSettings};
    use crate::policy::replay::CloneReplay;
    use crate::policy::retry::RetrySettings;
    use crate::{Channel, Endpoint};

    #[test]
    fn descriptions_are_unique_and_complete() {
        let mut names = HashSet::new();
        for d in descriptions() {
            assert!(names.insert(d.name), "{} described twice", d.name);
            assert!(d.name.starts_with("towline_"), "{}", d.name);
            assert!(d.text.ends_with('.') && d.text.len() > 10, "{}", d.name);
            let counter = d.name.ends_with("_total");
            assert_eq!(
                counter,
                d.kind == Kind::Counter,
                "{}: counters end in _total",
                d.name
            );
            let seconds = d.name.ends_with("_seconds");
            assert_eq!(seconds, d.unit == Unit::Seconds, "{}", d.name);
        }
    }

    /// Runs a channel with every policy on a current-thread runtime, so that
    /// the discovery task also reports to the thread's local recorder, and
    /// checks that every series it made has a unit and a description.
    #[tokio::test]
    async fn every_series_a_channel_reports_is_described() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _local = metrics::set_default_local_recorder(&recorder);
        let addrs: Vec<SocketAddr> = (1..=3)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let connect = |ep: &Endpoint| {
            let fails = ep.addr.port() == 1;
            service_fn(move |_: u32| async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                if fails {
                    Err("down")
                } else {
                    Ok::<_, &str>(())
                }
            })
        };
        let mut channel = Channel::builder(connect)
            .discover(Static::new(addrs))
            .replayer(CloneReplay)
            .retry(RetrySettings::default().with_max_attempts(3))
            .hedge(
                HedgeSettings::default().with_delay(HedgeDelay::Fixed(Duration::from_micros(10))),
            )
            .circuit_breaker(BreakerSettings::default())
            .name("described")
            .build()
            .unwrap();
        for i in 0..30 {
            let _ = channel.ready().await.unwrap().call(i).await;
        }
        let known: HashSet<&str> = descriptions().map(|d| d.name).collect();
        let snapshot = snapshotter.snapshot().into_vec();
        let mut seen = HashSet::new();
        for (key, unit, text, _) in &snapshot {
            let name = key.key().name();
            seen.insert(name.to_string());
            assert!(
                known.contains(name),
                "{name} is not in the description table"
            );
            assert!(unit.is_some(), "{name} has no unit");
            assert!(text.is_some(), "{name} has no description");
        }
        for name in [
            REQUESTS_TOTAL,
            ENDPOINT_REQUESTS,
            crate::policy::metrics::BREAKER_STATE,
            crate::policy::metrics::RETRIES,
            crate::channel::EJECTED_ENDPOINTS,
        ] {
            assert!(seen.contains(name), "{name} was not reported: {seen:?}");
        }
    }
}
