//! Endpoints: the instances of a service that a channel can send calls to.
//!
//! An [`Endpoint`] is identified by its socket address alone: two endpoints
//! with the same address are the same instance, whatever their weight or
//! metadata. Discovery sources produce endpoints; the channel keeps per-endpoint
//! state (load, counters, breaker) keyed by that address, so an endpoint that
//! stays across a discovery update keeps its state.
//!
//! ```
//! use towline::Endpoint;
//!
//! let ep = Endpoint::new("127.0.0.1:8080".parse().unwrap())
//!     .with_weight(5)
//!     .with_metadata("zone", "a");
//! assert_eq!(ep.weight, 5);
//! assert_eq!(ep.metadata.get("zone").map(String::as_str), Some("a"));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

/// The default weight of an endpoint: 1.
pub const DEFAULT_WEIGHT: u32 = 1;

/// One instance of a service.
///
/// Identity is [`addr`](Endpoint::addr). The `weight` (default
/// [`DEFAULT_WEIGHT`]) is used by weighted balancers and divides the cost in
/// P2C; a weight of 0 means "only when nothing else is eligible". `metadata`
/// carries free-form labels from discovery (SRV target, etcd JSON fields).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The socket address calls go to; the endpoint's identity.
    pub addr: SocketAddr,
    /// Relative share of traffic for weighted balancers (default 1).
    pub weight: u32,
    /// Free-form labels from discovery (empty by default).
    pub metadata: BTreeMap<String, String>,
}

impl Endpoint {
    /// An endpoint at `addr` with weight 1 and no metadata.
    pub fn new(addr: SocketAddr) -> Self {
        Endpoint {
            addr,
            weight: DEFAULT_WEIGHT,
            metadata: BTreeMap::new(),
        }
    }

    /// Sets the weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Adds one metadata label.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Endpoint::new(addr)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Endpoint");
        d.field("addr", &self.addr).field("weight", &self.weight);
        if !self.metadata.is_empty() {
            d.field("metadata", &self.metadata);
        }
        d.finish()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (weight {})", self.addr, self.weight)
    }
}
