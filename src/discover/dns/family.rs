//! Address families: which of A (IPv4) and AAAA (IPv6) a [`Dns`](super::Dns)
//! source asks for, and how it lives with a server that answers only one.
//!
//! By default both are asked side by side. When one of the two queries
//! fails in transport (a timeout, a refused connection, SERVFAIL) and the
//! other one gives addresses, the answer is used for its own family and the
//! last published endpoints of the failed family are kept: a lost AAAA
//! packet drops no IPv6 endpoint, and a server that never answers AAAA
//! (some middleboxes drop those queries) still gives the IPv4 endpoints,
//! while the failure is reported and counted on every lookup. While no
//! endpoint is known yet (the first lookup, or after the set emptied), a
//! family that has not answered [`DEFAULT_FAMILY_WAIT`] (250 ms) after the
//! other one gave addresses is counted as failed for that lookup, so such a
//! server holds the first endpoints back for that long rather than for the
//! whole query timeout (2 s × 2 attempts by default); later lookups wait for
//! both as usual. With
//! [`AddressFamilies::V4Only`] or [`AddressFamilies::V6Only`] the other
//! query is not sent at all, and that family's records in SRV additional
//! sections are left out (so a target with glue of the other family only
//! is looked up for the family kept).
//!
//! ```no_run
//! use towline::discover::{AddressFamilies, Dns};
//!
//! // The resolver in this network drops AAAA queries: ask for A only.
//! let source = Dns::host("api.internal.", 8080)
//!     .address_families(AddressFamilies::V4Only)
//!     .build()
//!     .expect("valid settings");
//! # drop(source);
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hickory_resolver::proto::rr::{RData, Record, RecordType};

/// How long a lookup made while no endpoint is known waits for the other
/// family once one family has given addresses (see
/// [`DnsBuilder::family_wait`](super::DnsBuilder::family_wait)): 250 ms.
pub const DEFAULT_FAMILY_WAIT: Duration = Duration::from_millis(250);

/// Which address families a [`Dns`](super::Dns) source asks for, set with
/// [`DnsBuilder::address_families`](super::DnsBuilder::address_families).
/// Default: [`Both`](AddressFamilies::Both).
///
/// With both, a failed query of one family while the other gives addresses
/// keeps the failed family's last endpoints next to the new ones, and the
/// failure is reported and counted on each such lookup (host mode; in SRV
/// mode any failed address query fails the lookup and keeps the set). With
/// one family only, the other is never asked for, and its records in SRV
/// additional sections are left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressFamilies {
    /// A and AAAA, side by side (the default). If one fails and the other
    /// gives addresses, the failed family's last endpoints are kept.
    #[default]
    Both,
    /// A only: no AAAA query is sent, and IPv6 addresses are left out.
    V4Only,
    /// AAAA only: no A query is sent, and IPv4 addresses are left out.
    V6Only,
}

/// One address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    /// The query type that asks for this family's addresses.
    pub(crate) fn record_type(self) -> RecordType {
        match self {
            Family::V4 => RecordType::A,
            Family::V6 => RecordType::AAAA,
        }
    }

    /// Whether `addr` is of this family.
    pub(crate) fn holds(self, addr: &SocketAddr) -> bool {
        match self {
            Family::V4 => addr.is_ipv4(),
            Family::V6 => addr.is_ipv6(),
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "A (IPv4)",
            Family::V6 => "AAAA (IPv6)",
        })
    }
}

impl AddressFamilies {
    /// The families asked for, in query order.
    pub(crate) fn asked(self) -> &'static [Family] {
        match self {
            AddressFamilies::Both => &[Family::V4, Family::V6],
            AddressFamilies::V4Only => &[Family::V4],
            AddressFamilies::V6Only => &[Family::V6],
        }
    }

    /// Whether `record` may give an endpoint: every record but an address
    /// of a family not asked for (CNAMEs, SRV and the rest pass).
    pub(crate) fn admits(self, record: &Record) -> bool {
        !matches!(
            (self, &record.data),
            (AddressFamilies::V4Only, RData::AAAA(_)) | (AddressFamilies::V6Only, RData::A(_))
        )
    }
}

/// Waits for each family's query, side by side, and gives every family's
/// result in the order asked. With `wait` (a lookup made while no endpoint
/// is known), once one result `has_addresses`, the queries still running
/// get at most `wait` more; those unanswered then give `None`.
pub(crate) async fn gather<T, F>(
    queries: Vec<(Family, F)>,
    wait: Option<Duration>,
    has_addresses: impl Fn(&T) -> bool,
) -> Vec<(Family, Option<T>)>
where
    F: Future<Output = T>,
{
    let mut results: Vec<(Family, Option<T>)> =
        queries.iter().map(|(family, _)| (*family, None)).collect();
    let mut running: FuturesUnordered<_> = queries
        .into_iter()
        .enumerate()
        .map(|(i, (_, query))| async move { (i, query.await) })
        .collect();
    let mut until: Option<tokio::time::Instant> = None;
    loop {
        let next = match until {
            None => running.next().await,
            Some(at) => match tokio::time::timeout_at(at, running.next()).await {
                Ok(next) => next,
                // The others had their wait: left unanswered.
                Err(_) => break,
            },
        };
        let Some((i, result)) = next else { break };
        if until.is_none()
            && has_addresses(&result)
            && let Some(wait) = wait
        {
            // A wait too long for the clock means no limit.
            until = tokio::time::Instant::now().checked_add(wait);
        }
        results[i].1 = Some(result);
    }
    results
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME};
    use hickory_resolver::proto::rr::{Name, RData, Record};

    use super::*;

    fn record(data: RData) -> Record {
        Record::from_rdata(Name::from_ascii("a.test.").unwrap(), 60, data)
    }

    #[test]
    fn each_setting_asks_and_admits_its_families() {
        let v4 = record(RData::A(A::from(Ipv4Addr::LOCALHOST)));
        let v6 = record(RData::AAAA(AAAA::from(Ipv6Addr::LOCALHOST)));
        let alias = record(RData::CNAME(CNAME(Name::from_ascii("b.test.").unwrap())));
        let admitted = |f: AddressFamilies| {
            [&v4, &v6, &alias]
                .into_iter()
                .map(|r| f.admits(r))
                .collect::<Vec<_>>()
        };
        assert_eq!(admitted(AddressFamilies::Both), [true, true, true]);
        assert_eq!(admitted(AddressFamilies::V4Only), [true, false, true]);
        assert_eq!(admitted(AddressFamilies::V6Only), [false, true, true]);
        assert_eq!(AddressFamilies::default().asked(), [Family::V4, Family::V6]);
        assert_eq!(AddressFamilies::V4Only.asked(), [Family::V4]);
        assert_eq!(AddressFamilies::V6Only.asked(), [Family::V6]);
    }

    #[test]
    fn families_tell_their_addresses_apart() {
        let v4: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert!(Family::V4.holds(&v4) && !Family::V4.holds(&v6));
        assert!(Family::V6.holds(&v6) && !Family::V6.holds(&v4));
        assert_eq!(Family::V6.record_type(), RecordType::AAAA);
    }

    /// A query answering `value` after `ms` milliseconds of virtual time.
    async fn answer(ms: u64, value: u32) -> u32 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        value
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_wait_every_family_is_waited_for() {
        let t0 = tokio::time::Instant::now();
        let queries = vec![(Family::V4, answer(5, 4)), (Family::V6, answer(4_000, 6))];
        let got = gather(queries, None, |_| true).await;
        assert_eq!(got, [(Family::V4, Some(4)), (Family::V6, Some(6))]);
        assert_eq!(t0.elapsed(), ms(4_000));
    }

    #[tokio::test(start_paused = true)]
    async fn with_a_wait_a_family_silent_past_it_is_left_unanswered() {
        let t0 = tokio::time::Instant::now();
        let queries = vec![(Family::V4, answer(5, 4)), (Family::V6, answer(4_000, 6))];
        let got = gather(queries, Some(ms(250)), |_| true).await;
        assert_eq!(got, [(Family::V4, Some(4)), (Family::V6, None)]);
        assert_eq!(t0.elapsed(), ms(255));
        // Answered within the wait: both, as soon as the second answers.
        let t0 = tokio::time::Instant::now();
        let queries = vec![(Family::V4, answer(100, 4)), (Family::V6, answer(5, 6))];
        let got = gather(queries, Some(ms(250)), |_| true).await;
        assert_eq!(got, [(Family::V4, Some(4)), (Family::V6, Some(6))]);
        assert_eq!(t0.elapsed(), ms(100));
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_starts_only_at_a_result_with_addresses() {
        // The first result has none (no records, say): the other is
        // waited for in full.
        let t0 = tokio::time::Instant::now();
        let queries = vec![(Family::V4, answer(5, 0)), (Family::V6, answer(4_000, 6))];
        let got = gather(queries, Some(ms(250)), |v| *v > 0).await;
        assert_eq!(got, [(Family::V4, Some(0)), (Family::V6, Some(6))]);
        assert_eq!(t0.elapsed(), ms(4_000));
        // One family asked: nothing to wait for.
        let got = gather(vec![(Family::V6, answer(5, 6))], Some(ms(1)), |_| true).await;
        assert_eq!(got, [(Family::V6, Some(6))]);
    }
}
