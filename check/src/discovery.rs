//! Discovery data from the outside: etcd values and DNS answers.
//!
//! [`run_discovery`] feeds a [`DiscoveryCase`] to the pure functions that
//! turn outside data into endpoints, and checks:
//!
//! - etcd (feature `etcd`): [`parse_value`] never panics on any bytes; a
//!   value it accepts round-trips through [`encode_value`] to an equal
//!   endpoint; every endpoint (any address, weight and metadata) written by
//!   [`encode_value`] reads back equal, and a bare `ip:port` with
//!   surrounding whitespace reads back as that address with the defaults;
//! - DNS (feature `dns`): decoding any bytes as a DNS message and passing its
//!   records to [`endpoints_from_records`] never panics and gives endpoints
//!   sorted by address, one per address, with usable addresses and nonzero
//!   ports; for generated A, AAAA and SRV records (sent through the wire
//!   format and back) the endpoints are exactly the usable addresses (A and
//!   AAAA) or the addresses of the lowest-priority usable SRV targets with
//!   their summed weights (SRV), the unresolved targets are exactly those
//!   with no address record, and the TTL is the smallest one used.
//!
//! [`parse_value`]: towline::discover::etcd::parse_value
//! [`encode_value`]: towline::discover::etcd::encode_value
//! [`endpoints_from_records`]: towline::discover::endpoints_from_records

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::{Arbitrary, Unstructured};

use super::Violation;
#[cfg(feature = "etcd")]
use super::ensure;

/// One fuzz input for the discovery parsers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryCase {
    /// Raw bytes as an etcd value.
    EtcdValue(Vec<u8>),
    /// An endpoint written as an etcd value and read back.
    EtcdEndpoint(EndpointSpec),
    /// Raw bytes as a DNS message.
    DnsMessage(Vec<u8>),
    /// Generated records as a DNS response.
    DnsAnswer(AnswerSpec),
}

impl<'a> Arbitrary<'a> for DiscoveryCase {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.int_in_range(0..=3u8)? {
            0 => DiscoveryCase::EtcdValue(u.arbitrary()?),
            1 => DiscoveryCase::EtcdEndpoint(u.arbitrary()?),
            2 => DiscoveryCase::DnsMessage(u.arbitrary()?),
            _ => DiscoveryCase::DnsAnswer(u.arbitrary()?),
        })
    }

    /// Raw-byte cases take every remaining byte as they are.
    fn arbitrary_take_rest(mut u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.int_in_range(0..=3u8)? {
            0 => DiscoveryCase::EtcdValue(u.take_rest().to_vec()),
            1 => DiscoveryCase::EtcdEndpoint(u.arbitrary()?),
            2 => DiscoveryCase::DnsMessage(u.take_rest().to_vec()),
            _ => DiscoveryCase::DnsAnswer(u.arbitrary()?),
        })
    }
}

impl DiscoveryCase {
    /// Runs [`run_discovery`] on this case.
    pub fn run(&self) -> Result<(), Violation> {
        run_discovery(self)
    }
}

/// An IP address, biased toward the special ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum IpSpec {
    /// Any IPv4 address.
    V4([u8; 4]),
    /// Any IPv6 address.
    V6([u16; 8]),
    /// An IPv6 address with a scope id (link-local style).
    V6Scoped([u16; 8], u32),
    /// `0.0.0.0` (unusable).
    Unspecified,
    /// `255.255.255.255` (unusable).
    Broadcast,
    /// A multicast address (unusable).
    Multicast(u8),
    /// `127.0.0.1`.
    Loopback,
}

impl IpSpec {
    fn ip(self) -> IpAddr {
        match self {
            IpSpec::V4(o) => Ipv4Addr::from(o).into(),
            IpSpec::V6(s) | IpSpec::V6Scoped(s, _) => Ipv6Addr::from(s).into(),
            IpSpec::Unspecified => Ipv4Addr::UNSPECIFIED.into(),
            IpSpec::Broadcast => Ipv4Addr::BROADCAST.into(),
            IpSpec::Multicast(x) => Ipv4Addr::new(224, 0, 0, x).into(),
            IpSpec::Loopback => Ipv4Addr::LOCALHOST.into(),
        }
    }

    #[cfg(feature = "etcd")]
    fn socket(self, port: u16) -> std::net::SocketAddr {
        use std::net::{SocketAddr, SocketAddrV6};
        match self {
            IpSpec::V6Scoped(s, scope) => SocketAddrV6::new(s.into(), port, 0, scope).into(),
            _ => SocketAddr::new(self.ip(), port),
        }
    }
}

/// An endpoint to write as an etcd value.
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
pub struct EndpointSpec {
    /// Its address.
    pub ip: IpSpec,
    /// Its port.
    pub port: u16,
    /// Its weight.
    pub weight: u32,
    /// Its metadata (any strings).
    pub metadata: Vec<(String, String)>,
    /// Whitespace around the bare `ip:port` form (index into a few
    /// whitespace strings).
    pub padding: u8,
}

/// A generated DNS response.
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
pub struct AnswerSpec {
    /// Read as SRV records (else as A/AAAA on `port`).
    pub srv: bool,
    /// The port for A/AAAA reading.
    pub port: u16,
    /// The answer section.
    pub answers: Vec<RecordSpec>,
    /// The additional section.
    pub additionals: Vec<RecordSpec>,
}

/// One resource record.
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
pub struct RecordSpec {
    /// Owner name (index into a few names).
    pub owner: u8,
    /// TTL in seconds.
    pub ttl: u32,
    /// Class IN (else CH, which is unusable).
    pub class_in: bool,
    /// The data.
    pub data: RecordData,
}

/// Record data.
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
pub enum RecordData {
    /// An A or AAAA record (scope ids are dropped).
    Address(IpSpec),
    /// An SRV record.
    Srv {
        /// Priority (lower is preferred).
        priority: u16,
        /// Weight.
        weight: u16,
        /// Port (0 is unusable).
        port: u16,
        /// Target name (index into a few names; one is the root, `.`).
        target: u8,
    },
    /// A CNAME record (ignored).
    Cname {
        /// Target name.
        target: u8,
    },
}

/// Runs one case.
pub fn run_discovery(case: &DiscoveryCase) -> Result<(), Violation> {
    match case {
        #[cfg(feature = "etcd")]
        DiscoveryCase::EtcdValue(bytes) => etcd::raw(bytes),
        #[cfg(feature = "etcd")]
        DiscoveryCase::EtcdEndpoint(spec) => etcd::round_trip(spec),
        #[cfg(feature = "dns")]
        DiscoveryCase::DnsMessage(bytes) => dns::raw(bytes),
        #[cfg(feature = "dns")]
        DiscoveryCase::DnsAnswer(spec) => dns::answer(spec),
        #[allow(unreachable_patterns)]
        _ => Ok(()),
    }
}

#[cfg(feature = "etcd")]
mod etcd {
    use super::*;
    use towline::Endpoint;
    use towline::discover::etcd::{encode_value, parse_value};

    const PADDING: [&str; 4] = ["", "\n", " \t", "\r\n  "];

    pub(super) fn raw(bytes: &[u8]) -> Result<(), Violation> {
        if let Ok(endpoint) = parse_value(bytes) {
            let again = parse_value(&encode_value(&endpoint));
            ensure!(
                again.as_ref() == Ok(&endpoint),
                0,
                "{:?} parsed to {endpoint:?}, which encodes and parses back to {again:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        Ok(())
    }

    pub(super) fn round_trip(spec: &EndpointSpec) -> Result<(), Violation> {
        let addr = spec.ip.socket(spec.port);
        let endpoint = Endpoint {
            addr,
            weight: spec.weight,
            metadata: spec.metadata.iter().cloned().collect(),
        };
        let encoded = encode_value(&endpoint);
        let back = parse_value(&encoded);
        ensure!(
            back.as_ref() == Ok(&endpoint),
            0,
            "{endpoint:?} encoded as {:?} parses back to {back:?}",
            String::from_utf8_lossy(&encoded)
        );
        let pad = PADDING[usize::from(spec.padding) % PADDING.len()];
        let bare = format!("{pad}{addr}{pad}");
        let back = parse_value(bare.as_bytes());
        ensure!(
            back == Ok(Endpoint::new(addr)),
            0,
            "bare value {bare:?} parses to {back:?}"
        );
        Ok(())
    }
}

#[cfg(feature = "dns")]
mod dns;
