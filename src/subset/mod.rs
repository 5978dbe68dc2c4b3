//! Subsetting: each client talks to a small, fair share of the servers.
//!
//! When thousands of clients each connect to every one of thousands of
//! servers, each client holds `N` connections and each server `K`. Random
//! subsetting cuts the count but spreads load unevenly (with `K = 100`,
//! `N = 300` and 12 servers per client, per-server load varies by about
//! 50%). **Deterministic aperture** (the scheme Finagle introduced) cuts it
//! and keeps load even:
//!
//! - clients and servers are laid out on one unit ring: client `i` of `K`
//!   owns `[i / K, (i + 1) / K)` and stands in its middle, at
//!   `(i + ½) / K`; server `j` of `N` (in a stable order, here by address)
//!   occupies `[j / N, (j + 1) / N)`;
//! - each client takes the arc of width `d / N` that starts where it
//!   stands (`d` is the **aperture size**): the servers the arc covers are
//!   its subset, and a server the arc covers partly gets a weight in
//!   proportion (a server is "fully covered" at weight 1);
//! - when `d × K < N` the arcs would leave servers uncovered, so the width
//!   is raised to `1 / K`: the arcs then tile the ring and every server has
//!   a client;
//! - when a server comes or goes, the others are spaced evenly again and
//!   move by less than one server width each, so each subset changes at
//!   the ends of its arc only; when a peer comes or goes, client positions
//!   shift the same way.
//!
//! Each point of the ring is covered by `⌊w·K⌋` or `⌈w·K⌉` arcs (`w` the
//! width), so when each client spreads its calls by the weights, every
//! server receives the same load up to that rounding. With no more clients
//! than servers, each server has between `⌊K·d/N⌋` and `⌈K·d/N⌉ + 1` clients
//! (with more, a server is shared by up to `⌈K·(d + 1)/N⌉`, most of them
//! partly). A client connects to at most `d + 1` servers (`d` whole ones
//! and two partial ends), or `⌈N/K⌉ + 1` when the width was raised. The
//! computation is exact integer arithmetic ([`slice()`]), so every client
//! computes the same ring.
//!
//! Settings ([`ApertureSettings`]): aperture size `d` (default 12) and a
//! floor under it (default 3); the size used is `max(size, min_size)`,
//! capped at `N` (then every client uses every server).
//!
//! # When a server leaves
//!
//! With `K = 100`, `N = 300`, `d = 12`, removing any one server changes
//! each client's subset by at most 2 servers, the removed one counted: a
//! client that held it gains one other, a client that did not swaps at
//! most one server at each end (checked for every server removed, in this
//! module's tests). Clients stand in the middle of their share rather than
//! at its start for this: at `i / K`, every arc of that layout starts and
//! ends on a server boundary, and three servers change for the clients
//! that held the removed one (see below).
//!
//! No layout of evenly spaced servers keeps that bound for every `K`, `N`
//! and `d`. An arc that starts and ends on server boundaries covers
//! exactly `d` servers; any other arc of the same width covers `d + 1`. If
//! removing server `r` turns a client's aligned arc that contains `r` into
//! an unaligned one, the new subset has `d + 1` servers of which at most
//! `d − 1` were in the old one: at least two are new, three changes with
//! `r`. Arcs starting at `(i + o) / K` are aligned when `(i + o) · N / K`
//! is a whole number, so for any fixed offset `o` there are sizes where a
//! ring aligns every arc and the ring one server smaller aligns none (for
//! `o = ½`: `N = 2K`, then `2K − 1`; for `o = 0`: any `N` that `K`
//! divides, then `N − 1`). Apart from alignment, removing a server near
//! the ring's origin moves the servers next to it by almost a whole width,
//! which can also flip a sliver at each end of an arc; over assorted sizes
//! (K and N up to a few hundred) up to 4 servers change. What does hold
//! everywhere: only the arc's two ends and the removed server change.
//!
//! # Where the coordinate comes from
//!
//! A client must know its index among its peers and their number
//! ([`Coordinate`]). Give it directly, or let `discover::Peers` (feature
//! `etcd`) derive it from the peers' own registrations under a prefix.
//! Until the first coordinate arrives, [`Aperture`] uses a random position
//! (an aperture of about `d` servers at a random offset, as random
//! subsetting would), so a starting client never connects to every server.
//!
//! # How it plugs into a channel
//!
//! Aperture is a wrapper over the endpoint set, not over the balancer:
//! [`Aperture`] is itself a discovery source that wraps another one, and
//! the channel builder's `aperture(settings, coordinates)` applies it to
//! the channel's source. It keeps the full set (from the inner source's
//! updates) in address order, and whenever the set or the coordinate
//! changes it yields an [`Update::Reset`](crate::discover::Update::Reset)
//! holding only the subset, each endpoint's weight multiplied by its
//! covered share (times [`WEIGHT_SCALE`], so a fully covered endpoint of
//! weight 1 has weight 1000). The channel's table applies it like any
//! reset: endpoints that stay keep their slot (service, load, breaker),
//! endpoints that leave the subset are dropped (their connections close),
//! and the balancer is rebuilt with the new weights. Nothing is added to
//! the pick path.
//!
//! Balancers honour the partial weights:
//! [`Weighted`](crate::balance::Weighted) exactly, and
//! [`P2c`](crate::balance::P2c) (the default) by drawing its two candidates
//! in proportion to weight (an alias table built when the set changes)
//! before it compares their loads. Round-robin and random ignore weights
//! and treat a partial endpoint as a whole one.
//!
//! ```
//! use futures_util::StreamExt;
//! use std::net::SocketAddr;
//! use towline::discover::{Static, Update};
//! use towline::subset::{Aperture, ApertureSettings, Coordinate};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let servers: Vec<SocketAddr> = (1..=20).map(|p| SocketAddr::from(([10, 0, 0, 1], p))).collect();
//! // Client 4 of 10, 4 servers each: it stands at 4.5/10 of the ring,
//! // server 9 of the 20, and takes servers 9 to 12 (ports 10 to 13).
//! let me = Coordinate::new(4, 10).unwrap();
//! let mut subset = Aperture::fixed(Static::new(servers.clone()), ApertureSettings::new(4), me).unwrap();
//! let Some(Ok(Update::Reset(chosen))) = subset.next().await else { panic!() };
//! let ports: Vec<u16> = chosen.iter().map(|e| e.addr.port()).collect();
//! assert_eq!(ports, [10, 11, 12, 13]);
//! # });
//! ```

mod aperture;
mod ring;
#[cfg(test)]
mod tests;

pub use aperture::{Aperture, Coordinates};
pub use ring::{Coordinate, Member, WEIGHT_SCALE, slice};

use crate::Endpoint;
use crate::error::BuildError;

/// Aperture size and its floor (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApertureSettings {
    size: usize,
    min_size: usize,
}

impl Default for ApertureSettings {
    /// Size [`DEFAULT_SIZE`], floor [`DEFAULT_MIN_SIZE`].
    fn default() -> Self {
        ApertureSettings {
            size: DEFAULT_SIZE,
            min_size: DEFAULT_MIN_SIZE,
        }
    }
}

/// Default aperture size: 12 servers per client.
pub const DEFAULT_SIZE: usize = 12;
/// Default floor under the aperture size: 3 servers, so that one server
/// going away never leaves a client with a single one.
pub const DEFAULT_MIN_SIZE: usize = 3;

impl ApertureSettings {
    /// An aperture of `size` servers (floor [`DEFAULT_MIN_SIZE`]).
    pub fn new(size: usize) -> Self {
        ApertureSettings {
            size,
            ..Self::default()
        }
    }

    /// The floor under the size (default [`DEFAULT_MIN_SIZE`]): the size
    /// used is `max(size, min_size)`.
    pub fn with_min_size(mut self, min_size: usize) -> Self {
        self.min_size = min_size;
        self
    }

    /// The configured size.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The configured floor.
    pub fn min_size(&self) -> usize {
        self.min_size
    }

    /// The size the ring uses: `max(size, min_size)` (capped at the server
    /// count when the slice is computed).
    pub fn effective_size(&self) -> usize {
        self.size.max(self.min_size)
    }

    /// Checks the settings: both must be at least 1.
    pub fn validate(&self) -> Result<(), BuildError> {
        if self.size == 0 {
            return Err(BuildError::new("aperture size", "must be at least 1"));
        }
        if self.min_size == 0 {
            return Err(BuildError::new("aperture min_size", "must be at least 1"));
        }
        Ok(())
    }

    /// The members of the slice of `coordinate` over `servers` servers.
    pub fn slice(&self, coordinate: Coordinate, servers: usize) -> Vec<Member> {
        slice(coordinate, self.effective_size(), servers)
    }

    /// The subset of `endpoints` for `coordinate`: the endpoints in address
    /// order (the stable order every peer shares), filtered to the slice,
    /// each weight multiplied by its covered share (see [`Member::weight`]).
    /// Returned in address order.
    pub fn subset(&self, coordinate: Coordinate, endpoints: &[Endpoint]) -> Vec<Endpoint> {
        let mut ordered: Vec<&Endpoint> = endpoints.iter().collect();
        ordered.sort_by_key(|e| e.addr);
        ordered.dedup_by_key(|e| e.addr);
        let mut chosen: Vec<Endpoint> = self
            .slice(coordinate, ordered.len())
            .into_iter()
            .map(|m| {
                let endpoint = ordered[m.index];
                endpoint.clone().with_weight(m.weight(endpoint.weight))
            })
            .collect();
        chosen.sort_by_key(|e| e.addr);
        chosen
    }
}
