//! DNS discovery: the endpoints of a service from A/AAAA or SRV records,
//! refreshed on the records' own TTL, never lost to a resolver hiccup.
//!
//! [`Dns`] is a discovery source (feature `dns`, on by default) for two kinds
//! of names:
//! - [`Dns::host`]: a host name and a port; every A and AAAA address becomes
//!   an endpoint on that port with weight 1.
//! - [`Dns::srv`]: an SRV name (`_service._proto.domain.`); each record of the
//!   lowest priority present becomes an endpoint per address of its target,
//!   with the record's port, and its weight as the endpoint weight. Target
//!   addresses come from the additional section when the server sends them,
//!   else from a lookup. Endpoints carry the metadata `srv_target` and
//!   `srv_priority`.
//!
//! Behaviour (defaults in brackets, all settable on [`DnsBuilder`]):
//! - It looks up at the first poll, then again at the answer's TTL clamped to
//!   \[1 s, 5 min\], up to \[10 %\] early at random. A [`Update::Reset`] is
//!   yielded only when the set changed (order does not matter).
//! - A timeout or transport error keeps the last set: the stream yields a
//!   [`DiscoverError`] (the channel logs and counts it), logs a warning,
//!   counts `towline_dns_lookup_errors_total{name}` and retries after a
//!   jittered exponential backoff \[1 s doubling to 30 s\].
//! - If only one of the A and AAAA queries fails, the other family's answer
//!   is used and the failed family's last endpoints are kept (reported and
//!   counted as a failed lookup); \[both\] families are asked, or one only
//!   ([`AddressFamilies`], see [`DnsBuilder::address_families`]).
//! - An authoritative empty answer (NXDOMAIN, no records) empties a held set
//!   only once it has lasted the grace period \[30 s\].
//! - Malformed or unusable records are skipped, logged and counted
//!   (`towline_dns_records_skipped_total{name}`); an answer with nothing
//!   usable left counts as a failure and keeps the last set.
//! - At most \[1,024\] endpoints per answer; past that a stable subset is kept
//!   (different per client) and a warning logged.
//! - With a [`RefreshHint`] it looks again as soon as the hint is requested,
//!   at most once per \[1 s\].
//! - The resolver is the system's (`/etc/resolv.conf`) or the given name
//!   servers; query timeout \[2 s\] and attempts \[2\]; no answer cache.
//!
//! Names should be fully qualified (trailing dot); otherwise the system's
//! search domains apply.
//!
//! ```no_run
//! use std::time::Duration;
//! use towline::discover::{Dns, RefreshHint};
//!
//! let hint = RefreshHint::new();
//! let source = Dns::srv("_http._tcp.api.svc.cluster.local.")
//!     .name_servers(["10.0.0.10:53".parse().unwrap()])
//!     .timeout(Duration::from_millis(500))
//!     .refresh_hint(hint.clone())
//!     .build()
//!     .expect("valid settings");
//! // Give `source` to the channel builder, and `hint` too.
//! # drop(source);
//! ```
//!
//! The conversion from records to endpoints is the pure
//! [`endpoints_from_records`], usable on any DNS message.

mod builder;
mod family;
mod records;
mod refresh;
mod resolve;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use metrics::Counter;

use super::{DiscoverError, RefreshHint, Update};
use crate::clock::now;
use crate::rng::Rng;
use refresh::{Note, RefreshPolicy, Refresher, Step};
use resolve::Resolve;

pub use builder::{DEFAULT_ATTEMPTS, DEFAULT_TIMEOUT, DnsBuilder};
pub use family::{AddressFamilies, DEFAULT_FAMILY_WAIT};
pub use records::{
    Extracted, RecordKind, SRV_PRIORITY_KEY, SRV_TARGET_KEY, SrvTarget, endpoints_from_records,
};

/// Counter of lookups, by `name`.
pub const LOOKUPS_METRIC: &str = "towline_dns_lookups_total";
/// Counter of failed lookups (timeout, transport, server failure, nothing
/// usable), by `name`.
pub const LOOKUP_ERRORS_METRIC: &str = "towline_dns_lookup_errors_total";
/// Counter of skipped malformed or unusable records, by `name`.
pub const RECORDS_SKIPPED_METRIC: &str = "towline_dns_records_skipped_total";
/// Counter of answers cut to the endpoint cap, by `name`.
pub const ENDPOINTS_CAPPED_METRIC: &str = "towline_dns_endpoints_capped_total";

/// A discovery source that follows a DNS name; see the [module docs](self).
///
/// A `Stream<Item = Result<Update, DiscoverError>> + Send + 'static` (so a
/// [`Discover`](crate::discover::Discover)). It must be polled inside a tokio
/// runtime with the time driver enabled.
pub struct Dns {
    inner: Pin<Box<dyn Stream<Item = Result<Update, DiscoverError>> + Send>>,
}

impl Dns {
    /// Follows the A and AAAA records of `host`, with `port` on every
    /// endpoint.
    pub fn host(host: impl Into<String>, port: u16) -> DnsBuilder {
        DnsBuilder::new(host.into(), Some(port))
    }

    /// Follows the SRV records of `name` (`_service._proto.domain.`).
    pub fn srv(name: impl Into<String>) -> DnsBuilder {
        DnsBuilder::new(name.into(), None)
    }

    fn from_parts(
        name: String,
        resolve: Box<dyn Resolve>,
        policy: RefreshPolicy,
        rng: Rng,
        hint: Option<RefreshHint>,
    ) -> Dns {
        let driver = Driver {
            metrics: DnsMetrics::new(&name),
            name: name.into(),
            resolve,
            refresher: Refresher::new(policy, rng),
            hint,
            deferred: None,
        };
        let inner = futures_util::stream::unfold(driver, |mut driver| async move {
            let item = driver.next_item().await;
            Some((item, driver))
        });
        Dns {
            inner: Box::pin(inner),
        }
    }
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns").finish_non_exhaustive()
    }
}

impl Stream for Dns {
    type Item = Result<Update, DiscoverError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Metric handles, registered once per source.
struct DnsMetrics {
    lookups: Counter,
    errors: Counter,
    skipped: Counter,
    capped: Counter,
}

impl DnsMetrics {
    fn new(name: &str) -> Self {
        let label = name.to_string();
        DnsMetrics {
            lookups: metrics::counter!(LOOKUPS_METRIC, "name" => label.clone()),
            errors: metrics::counter!(LOOKUP_ERRORS_METRIC, "name" => label.clone()),
            skipped: metrics::counter!(RECORDS_SKIPPED_METRIC, "name" => label.clone()),
            capped: metrics::counter!(ENDPOINTS_CAPPED_METRIC, "name" => label),
        }
    }
}

/// The async shell around [`Refresher`]: waits, looks up, reports.
struct Driver {
    name: Arc<str>,
    resolve: Box<dyn Resolve>,
    refresher: Refresher,
    hint: Option<RefreshHint>,
    metrics: DnsMetrics,
    /// An error to yield before the next lookup: a partial answer yields
    /// its changed set first.
    deferred: Option<DiscoverError>,
}

impl Driver {
    /// Looks up until there is something to yield: a changed set or an error.
    async fn next_item(&mut self) -> Result<Update, DiscoverError> {
        if let Some(error) = self.deferred.take() {
            return Err(error);
        }
        loop {
            self.wait_until_due().await;
            self.refresher.on_lookup_started(now());
            self.metrics.lookups.increment(1);
            let hurry = !self.refresher.has_endpoints();
            let lookup = self.resolve.lookup(hurry).await;
            if lookup.skipped > 0 {
                self.metrics.skipped.increment(lookup.skipped as u64);
                tracing::warn!(name = %self.name, skipped = lookup.skipped, "skipped malformed or unusable DNS records");
            }
            let step = self.refresher.on_answer(now(), lookup.answer);
            self.report(&step);
            match (step.update, step.error) {
                (Some(set), error) => {
                    self.deferred = error;
                    return Ok(Update::Reset(set));
                }
                (None, Some(error)) => return Err(error),
                (None, None) => {}
            }
        }
    }

    async fn wait_until_due(&mut self) {
        loop {
            let due = self.refresher.next_at(now());
            if due <= now() {
                return;
            }
            let sleep = tokio::time::sleep_until(due.into());
            match &self.hint {
                None => return sleep.await,
                Some(hint) => {
                    tokio::select! {
                        () = sleep => return,
                        () = hint.requested() => {
                            let due = self.refresher.on_hint(now());
                            tracing::debug!(name = %self.name, in_ms = due.saturating_duration_since(now()).as_millis() as u64, "early DNS refresh requested");
                        }
                    }
                }
            }
        }
    }

    fn report(&self, step: &Step) {
        let name = &*self.name;
        let next_in_ms = step.next_at.saturating_duration_since(now()).as_millis() as u64;
        match &step.note {
            Note::Unchanged => tracing::trace!(name, next_in_ms, "DNS answer unchanged"),
            Note::Changed { cut_from } => {
                let endpoints = step.update.as_ref().map_or(0, Vec::len);
                if let Some(total) = cut_from {
                    self.metrics.capped.increment(1);
                    tracing::warn!(
                        name,
                        total,
                        kept = endpoints,
                        "DNS answer has more endpoints than the cap; keeping a subset"
                    );
                }
                tracing::debug!(name, endpoints, next_in_ms, "DNS endpoints changed");
            }
            Note::EmptyWithinGrace { until, first } => {
                let removal_in_ms = until.saturating_duration_since(now()).as_millis() as u64;
                let message =
                    "DNS name has no records; keeping the last endpoints for the grace period";
                // Warn once per empty spell; the repeats are routine.
                if *first {
                    tracing::warn!(name, removal_in_ms, "{message}");
                } else {
                    tracing::debug!(name, removal_in_ms, "{message}");
                }
            }
            Note::Emptied => {
                tracing::warn!(name, "DNS name has no records; endpoint set is now empty")
            }
            Note::Partial {
                kept,
                consecutive,
                changed,
            } => {
                self.metrics.errors.increment(1);
                let error = step.error.as_ref().map(error_chain).unwrap_or_default();
                let (kept, endpoints) = (kept.to_string(), step.update.as_ref().map(Vec::len));
                tracing::warn!(name, %kept, consecutive, changed, ?endpoints, retry_in_ms = next_in_ms, %error, "DNS lookup failed for one address family; keeping its last endpoints");
            }
            Note::Failed { consecutive } => {
                self.metrics.errors.increment(1);
                let error = step.error.as_ref().map(error_chain).unwrap_or_default();
                tracing::warn!(name, consecutive, retry_in_ms = next_in_ms, %error, "DNS lookup failed; keeping the last endpoints");
            }
        }
    }
}

/// The error and its sources, joined by ": ".
fn error_chain(error: &DiscoverError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests;
