//! Turning DNS records into endpoints: a pure function, no I/O.
//!
//! [`endpoints_from_records`] reads the answer and additional sections of one
//! DNS response and returns the endpoints they describe. It never fails and
//! never panics: a record that cannot be used (wrong class, an unspecified,
//! broadcast or multicast address, an SRV record with port 0) is skipped and
//! counted in [`Extracted::skipped`], so the caller can log and count it.
//! Records of other types (CNAMEs of a chain, DNSSEC records) are ignored
//! without being counted: they are normal in an answer.
//!
//! SRV answers: the lowest priority value present among the usable SRV
//! records is used and the others are left for failover by the server
//! operator. Each SRV record becomes one endpoint per address of its target,
//! on the record's port, with the record's weight; the addresses come from
//! the additional section when it has any for that target, else the target
//! is returned in [`Extracted::unresolved`] for the caller to look up and
//! finish with [`SrvTarget::endpoints_from`]. A target of `.` means "no
//! service here" (RFC 2782) and is ignored, not skipped.
//!
//! The output is sorted by address with one endpoint per address (SRV
//! records that land on the same address add their weights), so two answers
//! that list the same instances in a different order give equal results.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use hickory_resolver::proto::rr::{DNSClass, Name, RData, Record};

use crate::Endpoint;

/// Metadata key holding the SRV target name (fully qualified, e.g. `a1.svc.test.`).
pub const SRV_TARGET_KEY: &str = "srv_target";
/// Metadata key holding the SRV priority the endpoint came from.
pub const SRV_PRIORITY_KEY: &str = "srv_priority";

/// Which kind of records to read from a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A and AAAA records: each address becomes an endpoint on `port` with
    /// the default weight.
    Address {
        /// The port every endpoint gets.
        port: u16,
    },
    /// SRV records, with target addresses from the additional section.
    Srv,
}

/// An SRV record of the chosen priority whose target had no address in the
/// additional section: look the target up (A and AAAA) and pass the answer
/// records to [`SrvTarget::endpoints_from`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    /// The target host name.
    pub target: Name,
    /// The port from the SRV record.
    pub port: u16,
    /// The weight from the SRV record.
    pub weight: u16,
    /// The priority from the SRV record.
    pub priority: u16,
    /// The TTL of the SRV record, in seconds.
    pub ttl: u32,
}

/// What [`endpoints_from_records`] found in one response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// The endpoints, sorted by address, one per address.
    pub endpoints: Vec<Endpoint>,
    /// SRV targets still to be looked up (always empty for
    /// [`RecordKind::Address`]).
    pub unresolved: Vec<SrvTarget>,
    /// How many records were malformed or unusable and were skipped.
    pub skipped: usize,
    /// The smallest TTL, in seconds, among the records used; `None` when no
    /// record was used.
    pub ttl: Option<u32>,
}

impl Extracted {
    /// True when the response held no usable record and nothing to look up,
    /// and nothing was skipped either: an authoritative "no such records".
    pub fn is_empty_answer(&self) -> bool {
        self.endpoints.is_empty() && self.unresolved.is_empty() && self.skipped == 0
    }

    /// Adds `other`'s endpoints, skipped count and TTL to this result (used
    /// to fold in the lookups of unresolved SRV targets).
    pub fn absorb(&mut self, other: Extracted) {
        let mut all = std::mem::take(&mut self.endpoints);
        all.extend(other.endpoints);
        self.endpoints = merge_by_address(all, true);
        self.unresolved.extend(other.unresolved);
        self.skipped += other.skipped;
        self.ttl = min_ttl(self.ttl, other.ttl);
    }
}

/// Reads the endpoints out of one DNS response's `answers` and
/// `additionals`. Pure and total: any input gives a result, unusable records
/// are counted in [`Extracted::skipped`].
///
/// ```
/// use hickory_resolver::proto::rr::{Name, RData, Record, rdata::A};
/// use towline::discover::{RecordKind, endpoints_from_records};
///
/// let name = Name::from_ascii("api.svc.test.").unwrap();
/// let answers = [
///     Record::from_rdata(name.clone(), 30, RData::A(A::new(10, 0, 0, 2))),
///     Record::from_rdata(name.clone(), 20, RData::A(A::new(0, 0, 0, 0))), // unusable
/// ];
/// let found = endpoints_from_records(&answers, &[], RecordKind::Address { port: 8080 });
/// assert_eq!(found.endpoints.len(), 1);
/// assert_eq!(found.endpoints[0].addr, "10.0.0.2:8080".parse().unwrap());
/// assert_eq!(found.skipped, 1);
/// assert_eq!(found.ttl, Some(30));
/// ```
pub fn endpoints_from_records(
    answers: &[Record],
    additionals: &[Record],
    kind: RecordKind,
) -> Extracted {
    match kind {
        RecordKind::Address { port } => {
            address_endpoints(answers, port, |ip| Endpoint::new(SocketAddr::new(ip, port)))
        }
        RecordKind::Srv => srv_endpoints(answers, additionals),
    }
}

impl SrvTarget {
    /// The endpoints of this target from the address records of its lookup
    /// (A and AAAA answers), with this record's port, weight and metadata.
    pub fn endpoints_from(&self, address_records: &[Record]) -> Extracted {
        let mut found = address_endpoints(address_records, self.port, |ip| self.endpoint(ip));
        if found.ttl.is_some() {
            found.ttl = min_ttl(found.ttl, Some(self.ttl));
        }
        found
    }

    fn endpoint(&self, ip: IpAddr) -> Endpoint {
        Endpoint::new(SocketAddr::new(ip, self.port))
            .with_weight(u32::from(self.weight))
            .with_metadata(SRV_TARGET_KEY, self.target.to_string())
            .with_metadata(SRV_PRIORITY_KEY, self.priority.to_string())
    }
}

/// Endpoints from every A/AAAA record in `records`, built by `make`.
fn address_endpoints(
    records: &[Record],
    port: u16,
    make: impl Fn(IpAddr) -> Endpoint,
) -> Extracted {
    let mut found = Extracted::default();
    if port == 0 {
        found.skipped = records.iter().filter(|r| address_of(r).is_some()).count();
        return found;
    }
    let mut endpoints = Vec::new();
    for record in records {
        let Some(ip) = address_of(record) else {
            continue;
        };
        if record.dns_class != DNSClass::IN || !usable_ip(ip) {
            found.skipped += 1;
            continue;
        }
        endpoints.push(make(ip));
        found.ttl = min_ttl(found.ttl, Some(record.ttl));
    }
    // An address listed twice is one instance, not twice the share.
    found.endpoints = merge_by_address(endpoints, false);
    found
}

fn srv_endpoints(answers: &[Record], additionals: &[Record]) -> Extracted {
    let mut found = Extracted::default();
    let mut usable = Vec::new();
    for record in answers {
        let RData::SRV(srv) = &record.data else {
            continue;
        };
        if srv.target.is_root() {
            // "Decidedly not available" (RFC 2782): not an error.
            continue;
        }
        if record.dns_class != DNSClass::IN || srv.port == 0 {
            found.skipped += 1;
            continue;
        }
        usable.push(SrvTarget {
            target: srv.target.clone(),
            port: srv.port,
            weight: srv.weight,
            priority: srv.priority,
            ttl: record.ttl,
        });
    }
    let Some(best) = usable.iter().map(|t| t.priority).min() else {
        return found;
    };
    let mut endpoints = Vec::new();
    for target in usable.into_iter().filter(|t| t.priority == best) {
        let glue: Vec<Record> = additionals
            .iter()
            .filter(|r| address_of(r).is_some() && r.name == target.target)
            .cloned()
            .collect();
        if glue.is_empty() {
            found.unresolved.push(target);
            continue;
        }
        let part = target.endpoints_from(&glue);
        found.skipped += part.skipped;
        if !part.endpoints.is_empty() {
            found.ttl = min_ttl(found.ttl, part.ttl);
        }
        endpoints.extend(part.endpoints);
    }
    found.endpoints = merge_by_address(endpoints, true);
    found
}

fn address_of(record: &Record) -> Option<IpAddr> {
    match &record.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    }
}

/// An address a call can be sent to.
fn usable_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

/// The smaller of two optional TTLs (either may be missing).
pub(super) fn min_ttl(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Sorts by address and folds endpoints with the same address into one,
/// keeping the first one's metadata. With `sum_weights` the weights add up
/// (two SRV records naming one instance give it both shares); without, the
/// first weight stays.
fn merge_by_address(endpoints: Vec<Endpoint>, sum_weights: bool) -> Vec<Endpoint> {
    let mut by_addr: BTreeMap<SocketAddr, Endpoint> = BTreeMap::new();
    for endpoint in endpoints {
        by_addr
            .entry(endpoint.addr)
            .and_modify(|kept| {
                if sum_weights {
                    kept.weight = kept.weight.saturating_add(endpoint.weight);
                }
            })
            .or_insert(endpoint);
    }
    by_addr.into_values().collect()
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME, SRV};

    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn a(owner: &str, ttl: u32, ip: [u8; 4]) -> Record {
        Record::from_rdata(name(owner), ttl, RData::A(A::from(Ipv4Addr::from(ip))))
    }

    fn srv(ttl: u32, priority: u16, weight: u16, port: u16, target: &str) -> Record {
        Record::from_rdata(
            name("_http._tcp.svc.test."),
            ttl,
            RData::SRV(SRV::new(priority, weight, port, name(target))),
        )
    }

    #[test]
    fn address_records_become_sorted_unique_endpoints() {
        let answers = [
            Record::from_rdata(
                name("api.svc.test."),
                60,
                RData::CNAME(CNAME(name("real.svc.test."))),
            ),
            a("real.svc.test.", 9, [10, 0, 0, 3]),
            a("real.svc.test.", 7, [10, 0, 0, 1]),
            a("real.svc.test.", 9, [10, 0, 0, 3]),
            Record::from_rdata(
                name("real.svc.test."),
                5,
                RData::AAAA(AAAA::from(Ipv6Addr::LOCALHOST)),
            ),
        ];
        let found = endpoints_from_records(&answers, &[], RecordKind::Address { port: 80 });
        let addrs: Vec<String> = found.endpoints.iter().map(|e| e.addr.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.1:80", "10.0.0.3:80", "[::1]:80"]);
        assert!(found.endpoints.iter().all(|e| e.weight == 1));
        assert_eq!(found.skipped, 0);
        assert_eq!(found.ttl, Some(5));
    }

    #[test]
    fn unusable_addresses_and_foreign_classes_are_skipped() {
        let mut chaos = a("x.test.", 1, [10, 0, 0, 9]);
        chaos.dns_class = DNSClass::CH;
        let answers = [
            a("x.test.", 1, [0, 0, 0, 0]),
            a("x.test.", 1, [255, 255, 255, 255]),
            a("x.test.", 1, [224, 0, 0, 1]),
            Record::from_rdata(
                name("x.test."),
                1,
                RData::AAAA(AAAA::from(Ipv6Addr::UNSPECIFIED)),
            ),
            chaos,
        ];
        let found = endpoints_from_records(&answers, &[], RecordKind::Address { port: 80 });
        assert!(found.endpoints.is_empty());
        assert_eq!(found.skipped, 5);
        assert_eq!(found.ttl, None);
        assert!(!found.is_empty_answer());
        let none = endpoints_from_records(&[], &[], RecordKind::Address { port: 80 });
        assert!(none.is_empty_answer());
    }

    #[test]
    fn srv_uses_lowest_priority_weights_and_glue() {
        let answers = [
            srv(30, 10, 5, 8080, "a1.svc.test."),
            srv(30, 10, 1, 8081, "a2.svc.test."),
            srv(30, 20, 9, 9000, "backup.svc.test."),
            srv(30, 5, 3, 0, "broken.svc.test."), // port 0: skipped, not chosen
        ];
        let additionals = [
            a("a1.svc.test.", 4, [127, 0, 0, 11]),
            a("A2.SVC.TEST.", 6, [127, 0, 0, 12]), // names compare case-insensitively
            a("backup.svc.test.", 1, [127, 0, 0, 13]),
        ];
        let found = endpoints_from_records(&answers, &additionals, RecordKind::Srv);
        assert_eq!(found.skipped, 1);
        assert!(found.unresolved.is_empty());
        let got: Vec<(String, u32)> = found
            .endpoints
            .iter()
            .map(|e| (e.addr.to_string(), e.weight))
            .collect();
        assert_eq!(
            got,
            [
                ("127.0.0.11:8080".to_string(), 5),
                ("127.0.0.12:8081".to_string(), 1)
            ]
        );
        let first = &found.endpoints[0];
        assert_eq!(first.metadata[SRV_TARGET_KEY], "a1.svc.test.");
        assert_eq!(first.metadata[SRV_PRIORITY_KEY], "10");
        assert_eq!(found.ttl, Some(4));
    }

    #[test]
    fn srv_targets_without_glue_are_returned_for_lookup() {
        let answers = [srv(30, 1, 2, 8080, "far.svc.test."), srv(30, 1, 0, 1, ".")];
        let found = endpoints_from_records(&answers, &[], RecordKind::Srv);
        assert!(found.endpoints.is_empty());
        assert_eq!(found.skipped, 0);
        assert_eq!(found.unresolved.len(), 1);
        let target = &found.unresolved[0];
        assert_eq!(target.target, name("far.svc.test."));

        let lookup = [
            a("far.svc.test.", 3, [10, 1, 1, 1]),
            a("far.svc.test.", 3, [0, 0, 0, 0]),
        ];
        let mut total = found.clone();
        total.unresolved.clear();
        total.absorb(target.endpoints_from(&lookup));
        assert_eq!(total.endpoints.len(), 1);
        assert_eq!(total.endpoints[0].addr, "10.1.1.1:8080".parse().unwrap());
        assert_eq!(total.endpoints[0].weight, 2);
        assert_eq!(total.skipped, 1);
        assert_eq!(total.ttl, Some(3));
    }

    #[test]
    fn srv_root_target_only_is_an_empty_answer() {
        let found = endpoints_from_records(&[srv(30, 0, 0, 0, ".")], &[], RecordKind::Srv);
        assert!(found.is_empty_answer());
    }

    #[test]
    fn duplicate_srv_records_add_their_weights() {
        let answers = [srv(30, 1, 2, 80, "a.test."), srv(30, 1, 3, 80, "a.test.")];
        let additionals = [a("a.test.", 30, [10, 0, 0, 1])];
        let found = endpoints_from_records(&answers, &additionals, RecordKind::Srv);
        assert_eq!(found.endpoints.len(), 1);
        assert_eq!(found.endpoints[0].weight, 5);
    }

    /// Invariants that hold for any input: sorted unique addresses, no
    /// unusable address, no port 0, and (for SRV) only the best priority.
    fn check(found: &Extracted, kind: RecordKind) {
        assert!(found.endpoints.windows(2).all(|w| w[0].addr < w[1].addr));
        for e in &found.endpoints {
            assert!(usable_ip(e.addr.ip()) && e.addr.port() != 0, "{e:?}");
            if let RecordKind::Address { port } = kind {
                assert_eq!(e.addr.port(), port);
            }
        }
        if !found.endpoints.is_empty() {
            assert!(found.ttl.is_some());
        }
    }

    #[test]
    fn mutated_wire_messages_never_panic() {
        use hickory_resolver::proto::op::{Message, OpCode};

        let mut message = Message::response(7, OpCode::Query);
        message.add_answers([
            srv(30, 1, 5, 8080, "a1.svc.test."),
            srv(30, 1, 1, 8081, "a2.svc.test."),
            srv(30, 2, 1, 8082, "b.svc.test."),
            a("x.svc.test.", 5, [10, 0, 0, 1]),
        ]);
        message.add_additionals([
            a("a1.svc.test.", 4, [127, 0, 0, 11]),
            Record::from_rdata(
                name("a2.svc.test."),
                4,
                RData::AAAA(AAAA::from(Ipv6Addr::LOCALHOST)),
            ),
        ]);
        let wire = message.to_vec().unwrap();
        let mut rng = crate::rng::Rng::seeded(99);
        let mut parsed = 0;
        for _ in 0..20_000 {
            let mut bytes = wire.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len());
                bytes[at] = rng.next_u64() as u8;
            }
            if rng.below(8) == 0 {
                bytes.truncate(rng.below(bytes.len() + 1));
            }
            let Ok(m) = Message::from_vec(&bytes) else {
                continue;
            };
            parsed += 1;
            for kind in [RecordKind::Srv, RecordKind::Address { port: 80 }] {
                let found = endpoints_from_records(&m.answers, &m.additionals, kind);
                check(&found, kind);
            }
        }
        // Enough mutants decode to exercise the conversion, not just the parser.
        assert!(parsed > 1_000, "only {parsed} mutants parsed");
    }
}
