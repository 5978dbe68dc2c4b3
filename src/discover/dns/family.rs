//! Address families: which of A (IPv4) and AAAA (IPv6) a [`Dns`](super::Dns)
//! source asks for, and how it lives with a server that answers only one.
//!
//! By default both are asked side by side. When one of the two queries
//! fails in transport (a timeout, a refused connection, SERVFAIL) and the
//! other one gives addresses, the answer is used for its own family and the
//! last published endpoints of the failed family are kept: a lost AAAA
//! packet drops no IPv6 endpoint, and a server that never answers AAAA
//! (some middleboxes drop those queries) still gives the IPv4 endpoints,
//! while the failure is reported and counted on every lookup. With
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

use std::net::SocketAddr;

use hickory_resolver::proto::rr::{RData, Record, RecordType};

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
}
