//! DNS records to endpoints: a reference computed from the generated
//! records, and the shape every result must have.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use hickory_resolver::proto::op::{Message, OpCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME, SRV};
use hickory_resolver::proto::rr::{DNSClass, Name, RData, Record};

use super::{AnswerSpec, RecordData, RecordSpec};
use crate::{Violation, ensure};
use towline::DEFAULT_WEIGHT;
use towline::discover::{
    Extracted, RecordKind, SRV_PRIORITY_KEY, SrvTarget, endpoints_from_records,
};

/// Owner and target names; the last is the root (`.`, "no service").
const NAMES: [&str; 5] = [
    "a.svc.test.",
    "A.SVC.TEST.",
    "b.svc.test.",
    "c.svc.test.",
    ".",
];

fn name(i: u8) -> Name {
    Name::from_ascii(NAMES[usize::from(i) % NAMES.len()]).expect("a valid name")
}

fn record(spec: &RecordSpec) -> Record {
    let data = match spec.data {
        RecordData::Address(ip) => match ip.ip() {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        },
        RecordData::Srv {
            priority,
            weight,
            port,
            target,
        } => RData::SRV(SRV::new(priority, weight, port, name(target))),
        RecordData::Cname { target } => RData::CNAME(CNAME(name(target))),
    };
    // TTLs with the top bit set are read as 0 by some decoders (RFC 2181).
    let mut r = Record::from_rdata(name(spec.owner), spec.ttl & 0x7fff_ffff, data);
    r.dns_class = if spec.class_in {
        DNSClass::IN
    } else {
        DNSClass::CH
    };
    r
}

fn address(r: &Record) -> Option<IpAddr> {
    match &r.data {
        RData::A(a) => Some(a.0.into()),
        RData::AAAA(a) => Some(a.0.into()),
        _ => None,
    }
}

/// An address a call can be sent to (as the module documents).
fn usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

fn used(r: &Record) -> Option<IpAddr> {
    address(r).filter(|&ip| r.dns_class == DNSClass::IN && usable(ip))
}

/// Any bytes: decoding and extraction never panic, and results are well
/// formed.
pub(super) fn raw(bytes: &[u8]) -> Result<(), Violation> {
    let Ok(message) = Message::from_vec(bytes) else {
        return Ok(());
    };
    for kind in [
        RecordKind::Srv,
        RecordKind::Address { port: 8080 },
        RecordKind::Address { port: 0 },
    ] {
        let found = endpoints_from_records(&message.answers, &message.additionals, kind);
        well_formed(&found, kind)?;
    }
    Ok(())
}

/// Generated records, through the wire format: the result is the one the
/// module documents.
pub(super) fn answer(spec: &AnswerSpec) -> Result<(), Violation> {
    let answers: Vec<Record> = spec.answers.iter().map(record).collect();
    let additionals: Vec<Record> = spec.additionals.iter().map(record).collect();
    let kind = if spec.srv {
        RecordKind::Srv
    } else {
        RecordKind::Address { port: spec.port }
    };
    let found = endpoints_from_records(&answers, &additionals, kind);
    well_formed(&found, kind)?;
    let expected = if spec.srv {
        expected_srv(&answers, &additionals)
    } else {
        expected_address(&answers, spec.port)
    };
    ensure!(
        same(&found, &expected),
        0,
        "records gave {found:?}, expected {expected:?}"
    );
    // The same records after encoding and decoding give the same result.
    let mut message = Message::response(0, OpCode::Query);
    message.answers = answers;
    message.additionals = additionals;
    if let Ok(wire) = message.to_vec()
        && let Ok(back) = Message::from_vec(&wire)
    {
        let again = endpoints_from_records(&back.answers, &back.additionals, kind);
        ensure!(
            same(&again, &found),
            0,
            "after the wire format {again:?}, before {found:?}"
        );
    }
    Ok(())
}

/// Endpoints, unresolved targets, skipped count and TTL agree (metadata
/// is checked for the SRV priority only).
fn same(a: &Extracted, b: &Extracted) -> bool {
    let key = |x: &Extracted| -> Vec<(SocketAddr, u32, Option<String>)> {
        x.endpoints
            .iter()
            .map(|e| (e.addr, e.weight, e.metadata.get(SRV_PRIORITY_KEY).cloned()))
            .collect()
    };
    key(a) == key(b) && a.unresolved == b.unresolved && a.skipped == b.skipped && a.ttl == b.ttl
}

fn well_formed(found: &Extracted, kind: RecordKind) -> Result<(), Violation> {
    let addrs: Vec<SocketAddr> = found.endpoints.iter().map(|e| e.addr).collect();
    ensure!(
        addrs.windows(2).all(|w| w[0] < w[1]),
        0,
        "endpoints not sorted one per address: {addrs:?}"
    );
    for e in &found.endpoints {
        ensure!(
            usable(e.addr.ip()) && e.addr.port() != 0,
            0,
            "unusable endpoint {e:?}"
        );
        if let RecordKind::Address { port } = kind {
            ensure!(
                e.addr.port() == port && e.weight == DEFAULT_WEIGHT,
                0,
                "address endpoint {e:?} for port {port}"
            );
        }
    }
    ensure!(
        found.ttl.is_some() != found.endpoints.is_empty(),
        0,
        "TTL {:?} with {} endpoints",
        found.ttl,
        found.endpoints.len()
    );
    if matches!(kind, RecordKind::Address { .. }) {
        ensure!(
            found.unresolved.is_empty(),
            0,
            "address records left targets unresolved"
        );
    }
    Ok(())
}

fn expected_address(answers: &[Record], port: u16) -> Extracted {
    let records: Vec<&Record> = answers.iter().filter(|r| address(r).is_some()).collect();
    let mut out = Extracted::default();
    if port == 0 {
        out.skipped = records.len();
        return out;
    }
    let mut addrs = BTreeSet::new();
    for r in &records {
        match used(r) {
            Some(ip) => {
                addrs.insert(SocketAddr::new(ip, port));
                out.ttl = Some(out.ttl.map_or(r.ttl, |t: u32| t.min(r.ttl)));
            }
            None => out.skipped += 1,
        }
    }
    out.endpoints = addrs.into_iter().map(towline::Endpoint::new).collect();
    out
}

fn expected_srv(answers: &[Record], additionals: &[Record]) -> Extracted {
    let mut out = Extracted::default();
    let mut usable_srv = Vec::new();
    for r in answers {
        let RData::SRV(srv) = &r.data else { continue };
        if srv.target.is_root() {
            continue;
        }
        if r.dns_class == DNSClass::IN && srv.port != 0 {
            usable_srv.push((r, srv));
        } else {
            out.skipped += 1;
        }
    }
    let Some(best) = usable_srv.iter().map(|(_, s)| s.priority).min() else {
        return out;
    };
    let mut weights: BTreeMap<SocketAddr, u32> = BTreeMap::new();
    for (r, srv) in usable_srv.into_iter().filter(|(_, s)| s.priority == best) {
        let glue: Vec<&Record> = additionals
            .iter()
            .filter(|g| address(g).is_some() && g.name == srv.target)
            .collect();
        if glue.is_empty() {
            out.unresolved.push(SrvTarget {
                target: srv.target.clone(),
                port: srv.port,
                weight: srv.weight,
                priority: srv.priority,
                ttl: r.ttl,
            });
            continue;
        }
        // One share per address per SRV record, however often the address
        // is listed for its target.
        let mut ips = BTreeSet::new();
        let mut ttl: Option<u32> = None;
        for g in glue {
            match used(g) {
                Some(ip) => {
                    ips.insert(ip);
                    ttl = Some(ttl.map_or(g.ttl, |t| t.min(g.ttl)));
                }
                None => out.skipped += 1,
            }
        }
        if let Some(t) = ttl {
            let t = t.min(r.ttl);
            out.ttl = Some(out.ttl.map_or(t, |o| o.min(t)));
        }
        for ip in ips {
            let w = weights.entry(SocketAddr::new(ip, srv.port)).or_default();
            *w = w.saturating_add(u32::from(srv.weight));
        }
    }
    out.endpoints = weights
        .into_iter()
        .map(|(addr, w)| {
            towline::Endpoint::new(addr)
                .with_weight(w)
                .with_metadata(SRV_PRIORITY_KEY, best.to_string())
        })
        .collect();
    out
}
