//! Request-keyed consistent hashing: a ring or a Maglev table, with optional
//! bounded loads.
//!
//! A [`ConsistentHash`] sends each request key to an endpoint that depends
//! only on the key and on the set of `(address, weight)` pairs, so caches,
//! sharded state and sessions stay on one endpoint while endpoints come and
//! go, and every client process agrees on where a key goes.
//!
//! **Key position.** A request's 64-bit key `k` is placed at
//! `p = mix64(k)`, the SplitMix64 finalizer: a bijection, so any distinct
//! keys (sequential ids included) stay distinct and spread evenly.
//!
//! **Identity.** An endpoint is its `SocketAddr`. Its identity hash `h`
//! folds the address 64 bits at a time through `mix64` from a fixed seed;
//! its `r`-th pseudo-random value is `s_r = mix64(h + (r + 1)·γ)` (the
//! SplitMix64 stream, `γ = 0x9e3779b97f4a7c15`). These functions are fixed
//! by this crate and pinned by a test, so tables agree across processes,
//! versions and platforms, and a table never depends on the order in which
//! endpoints were given (ties are broken by address).
//!
//! **Ring** ([`ConsistentHash::ring`]). Endpoint `i` of weight `wᵢ` gets
//! `vᵢ = k · wᵢ` points, the top 32 bits of `s₀ … s_{vᵢ−1}`, with `k`
//! points per unit of weight (default
//! [`DEFAULT_POINTS_PER_WEIGHT`](ConsistentHash::DEFAULT_POINTS_PER_WEIGHT)
//! = 512). A key goes to the owner of the first point at or after the top
//! 32 bits of `p`, wrapping around; a bucket index over the points makes
//! that O(1) expected. An endpoint with `v` points owns `v/R` of the key
//! space on average (`R` points in all), with a relative spread of about
//! `1/√v`: with `k = 512`, 4.4%, so the most loaded of 100 equal endpoints
//! owns about 1.1× the mean share. Because an endpoint's points depend only
//! on its own address and weight, adding or removing one moves only the
//! keys of the arcs it gains or loses, and no other key.
//!
//! The ring is capped at `R_max` points (default
//! [`DEFAULT_MAX_RING_POINTS`](ConsistentHash::DEFAULT_MAX_RING_POINTS) =
//! 65,536, 576 KiB with its index), which bounds memory, build time and
//! the cache footprint of a pick however large the set. When `k · W` would
//! exceed it (`W = Σ wᵢ`: more than 128 endpoints of weight 1 by default),
//! endpoint `i` gets `max(1, round(R_max · wᵢ / W))` points instead, as
//! Envoy's and gRPC's rings do. Then point counts follow the total weight,
//! and a change that alters the other endpoints' counts also moves that
//! share of their keys (measured: 0.8% of the other keys when one of 129
//! endpoints of weight 1 leaves, 0.3% for one of 200); raise `R_max` to stay
//! under the cap. A *minimum* ring size, as Envoy and gRPC configure it,
//! rescales every endpoint's points on every change, which at 100
//! endpoints moves 0.8% of the other keys each time: hence a count per unit
//! of weight here.
//!
//! **Maglev** ([`ConsistentHash::maglev`]). A table of `M` entries, `M`
//! prime (default [`DEFAULT_TABLE_SIZE`](ConsistentHash::DEFAULT_TABLE_SIZE)
//! = 65,537). Endpoint `i` prefers the slots `oᵢ, oᵢ + kᵢ, oᵢ + 2kᵢ, …`
//! (mod `M`) with `oᵢ = ⌊s₀·M/2⁶⁴⌋` and `kᵢ = 1 + ⌊s₁·(M−1)/2⁶⁴⌋`, which
//! visits every slot as `M` is prime. Each endpoint's number of entries is
//! its weighted share `M · wᵢ / W` rounded by largest remainder (within one
//! entry of exact, so with equal weights counts differ by at most one).
//! Then in rounds `j = 0, 1, …` every endpoint still short of its count
//! takes its `j`-th preferred slot if that is free. A key goes to entry
//! `⌊p·M/2⁶⁴⌋`: one multiplication and one load. Removing one of 100 equal
//! endpoints moves its own keys and about 0.3% of the others (the paper's
//! loop, where each turn takes the next *free* preferred slot, moves about
//! 0.6%: a removal shifts everyone's turns). Keep `M` at least 100 × n for
//! shares within about 1%; with more endpoints than entries, some own none.
//!
//! **Walk.** After the key's home entry, a pick walks on through the
//! following entries (clockwise on the ring, in table order for Maglev,
//! wrapping), skipping endpoints the filter excludes or, with bounded loads,
//! that are full. Retries and hedges exclude the endpoints already tried, so
//! they take the next distinct endpoint in this order. The walk is bounded
//! to [`WALK_LIMIT`](ConsistentHash::WALK_LIMIT) entries; past it, the
//! remaining endpoints are ranked by a rendezvous score
//! `mix64(p ⊕ hᵢ)` (highest first), an O(n) scan that only heavy exclusion
//! reaches. So every key has one fixed preference order over the set.
//!
//! **Bounded loads** ([`ConsistentHash::bounded_load`], off by default).
//! With factor `c > 1`, `P` requests in flight over all endpoints of the set
//! and the new request counted in the average (as Envoy's
//! `hash_balance_factor` and the paper do), endpoint `i` may hold at most
//! `Lᵢ = ⌈c · (P + 1) · wᵢ / W⌉` requests, this one included: it is skipped
//! when `pendingᵢ + 1 > Lᵢ`. With equal weights that is
//! `⌈c × average in-flight⌉`. `P` and `W` cover the whole set, excluded
//! endpoints included, so a call's retries see the same bounds as its
//! first attempt (while many endpoints are ejected, the bound is tighter
//! than `c` times the average of the others). Some endpoint is always under
//! its bound (`Σ Lᵢ ≥ c·(P + 1) > P`); if every *eligible* one is full, the
//! pick falls back to the first eligible endpoint in the walk order.
//!
//! | | [`ring`](ConsistentHash::ring) | [`maglev`](ConsistentHash::maglev) |
//! |---|---|---|
//! | default size | 512 points per unit of weight, at most 65,536 | 65,537 entries |
//! | memory | 9 bytes a point (8, and the bucket index) | 4 bytes an entry |
//! | build (off the pick path) | a sort of the `R` points | about 30 probes an entry (measured) |
//! | removing one of 100 equal endpoints moves | its own keys only | its own keys and about 0.3% of the others |
//! | pick | O(1) expected: a bucket, then about one point | O(1): one entry |
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Instant;
//! use towline::balance::{ConsistentHash, Load};
//!
//! let addrs: Vec<SocketAddr> = (1..=4)
//!     .map(|i| format!("10.0.0.{i}:80").parse().unwrap())
//!     .collect();
//! let hash = ConsistentHash::maglev()
//!     .bounded_load(1.25)?
//!     .rebuild(addrs.iter().map(|&a| (a, 1)));
//! let now = Instant::now();
//! let loads: Vec<Load> = addrs.iter().map(|_| Load::new(1, now)).collect();
//! let key = 0x5eed_u64; // e.g. a hash of the user id
//! let home = hash.pick(key, &loads, &|_| true).unwrap();
//! assert_eq!(hash.pick(key, &loads, &|_| true), Some(home));
//! // A retry excludes the endpoint already tried and gets the next one.
//! let next = hash.pick(key, &loads, &|i| i != home).unwrap();
//! assert_ne!(next, home);
//! # Ok::<(), towline::BuildError>(())
//! ```

mod balancer;
mod bounded;
mod maglev;
mod mix;
mod pick;
mod remap;
mod ring;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::error::BuildError;
use bounded::Bound;
pub(crate) use remap::{Remap, Tracker};

/// A consistent-hash balancer: a ring or a Maglev table over the endpoint
/// set, picking by a 64-bit request key (formulas in the [module docs](self)).
///
/// Built empty by [`ring`](Self::ring) or [`maglev`](Self::maglev) (these
/// carry only the settings), then [`rebuild`](Self::rebuild) for each
/// endpoint set, off the pick path; [`pick`](Self::pick) takes `&self`.
///
/// ```
/// use std::net::SocketAddr;
/// use towline::balance::ConsistentHash;
///
/// let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
/// let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
/// // Weight 3 to 1: b gets three times a's points, and of the key space.
/// let ring = ConsistentHash::ring().rebuild([(a, 1), (b, 3)]);
/// assert_eq!(ring.table_len(), 4 * 512);
/// let shares = ring.shares();
/// assert!((shares[1] / shares[0] - 3.0).abs() < 0.5);
/// // The table depends on the set, not on the order it was given in.
/// let again = ConsistentHash::ring().rebuild([(b, 3), (a, 1)]);
/// assert_eq!(ring.home(42).map(|i| [a, b][i]), again.home(42).map(|i| [b, a][i]));
/// ```
#[derive(Clone)]
pub struct ConsistentHash {
    kind: Kind,
    bound: Option<Bound>,
    /// The table and what it was built from, shared by clones.
    built: Arc<Built>,
    /// For a table used with a later set than the one it was built for
    /// (while the channel rebuilds it): built index → current index.
    remap: Option<Arc<Remap>>,
}

/// A built table and the set it was built for, by index.
struct Built {
    table: Table,
    /// Identity hash and weight (all 1 if every weight was 0).
    ids: Vec<u64>,
    weights: Vec<u32>,
    total_weight: u64,
}

/// The built table; both hold indices into the set given to `rebuild`.
enum Table {
    Ring(ring::RingIndex),
    Maglev(Vec<u32>),
}

impl Table {
    fn len(&self) -> usize {
        match self {
            Table::Ring(r) => r.len(),
            Table::Maglev(t) => t.len(),
        }
    }

    /// The first entry to look at for a key position (the table must not be
    /// empty).
    #[inline]
    fn start(&self, position: u64) -> usize {
        match self {
            Table::Ring(r) => r.slot(position),
            Table::Maglev(t) => maglev::slot(position, t.len()),
        }
    }

    #[inline]
    fn owner(&self, entry: usize) -> usize {
        match self {
            Table::Ring(r) => r.owner(entry) as usize,
            Table::Maglev(t) => t[entry] as usize,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ring {
        points_per_weight: u32,
        min_points: usize,
        max_points: usize,
    },
    Maglev {
        size: usize,
    },
}

impl ConsistentHash {
    /// The default number of ring points per unit of weight: 512 (see the
    /// module docs for why).
    pub const DEFAULT_POINTS_PER_WEIGHT: u32 = 512;
    /// The default cap on ring points: 65,536.
    pub const DEFAULT_MAX_RING_POINTS: usize = 1 << 16;
    /// The default minimum ring size: 1,024 points (as Envoy's
    /// `minimum_ring_size`). With 512 points per unit of weight it applies
    /// only to a set whose total weight is 1.
    pub const DEFAULT_MIN_RING_POINTS: usize = 1 << 10;
    /// The largest cap on ring points accepted: 8,388,608 (about 72 MiB).
    pub const MAX_RING_POINTS: usize = 1 << 23;
    /// The default Maglev table size: 65,537 entries (a prime).
    pub const DEFAULT_TABLE_SIZE: usize = 65_537;
    /// The smallest Maglev table accepted: 1,021 entries (below it a share
    /// of the key space cannot be finer than 0.1%).
    pub const MIN_TABLE_SIZE: usize = 1_021;
    /// The largest Maglev table accepted: 16,777,213 entries (the largest
    /// prime below 2²⁴; 64 MB).
    pub const MAX_TABLE_SIZE: usize = 16_777_213;
    /// How many entries a pick walks past the key's home before ranking the
    /// rest of the set by rendezvous score: 64.
    pub const WALK_LIMIT: usize = 64;

    /// A hash ring with the default sizes (512 points per unit of weight, at
    /// least 1,024 and at most 65,536 points), without bounded loads.
    pub fn ring() -> Self {
        Self::empty(Kind::Ring {
            points_per_weight: Self::DEFAULT_POINTS_PER_WEIGHT,
            min_points: Self::DEFAULT_MIN_RING_POINTS,
            max_points: Self::DEFAULT_MAX_RING_POINTS,
        })
    }

    /// A hash ring with `points_per_weight` points per unit of weight (1 to
    /// 65,536) and at most `max_points` points in all (1 to
    /// [`MAX_RING_POINTS`](Self::MAX_RING_POINTS)); see the module docs.
    pub fn ring_with_points(points_per_weight: u32, max_points: usize) -> Result<Self, BuildError> {
        if !(1..=1 << 16).contains(&points_per_weight) {
            return Err(BuildError::new(
                "hash.points_per_weight",
                format!("must be between 1 and 65536, got {points_per_weight}"),
            ));
        }
        if !(1..=Self::MAX_RING_POINTS).contains(&max_points) {
            return Err(BuildError::new(
                "hash.max_ring_points",
                format!(
                    "must be between 1 and {}, got {max_points}",
                    Self::MAX_RING_POINTS
                ),
            ));
        }
        Ok(Self::empty(Kind::Ring {
            points_per_weight,
            min_points: Self::DEFAULT_MIN_RING_POINTS.min(max_points),
            max_points,
        }))
    }

    /// Sets the ring's minimum size (default
    /// [`DEFAULT_MIN_RING_POINTS`](Self::DEFAULT_MIN_RING_POINTS), never
    /// above the cap): when a set's points per unit of weight would make a
    /// smaller ring, every endpoint gets its weighted share of `min_points`
    /// instead. See the module docs for the trade-off. An error for a
    /// Maglev table, or a size of 0 or above the ring's cap.
    pub fn min_ring_points(mut self, min_points: usize) -> Result<Self, BuildError> {
        let Kind::Ring {
            min_points: min,
            max_points,
            ..
        } = &mut self.kind
        else {
            return Err(BuildError::new(
                "hash.min_ring_points",
                "applies to a ring (ConsistentHash::ring), not a Maglev table",
            ));
        };
        if !(1..=*max_points).contains(&min_points) {
            return Err(BuildError::new(
                "hash.min_ring_points",
                format!("must be between 1 and the cap of {max_points}, got {min_points}"),
            ));
        }
        *min = min_points;
        Ok(self)
    }

    /// A Maglev table of the default size, without bounded loads.
    pub fn maglev() -> Self {
        Self::empty(Kind::Maglev {
            size: Self::DEFAULT_TABLE_SIZE,
        })
    }

    /// A Maglev table of `size` entries: a prime between
    /// [`MIN_TABLE_SIZE`](Self::MIN_TABLE_SIZE) and
    /// [`MAX_TABLE_SIZE`](Self::MAX_TABLE_SIZE).
    pub fn maglev_with_table_size(size: usize) -> Result<Self, BuildError> {
        if !(Self::MIN_TABLE_SIZE..=Self::MAX_TABLE_SIZE).contains(&size) {
            return Err(BuildError::new(
                "hash.table_size",
                format!(
                    "must be between {} and {}, got {size}",
                    Self::MIN_TABLE_SIZE,
                    Self::MAX_TABLE_SIZE
                ),
            ));
        }
        if !maglev::is_prime(size) {
            return Err(BuildError::new(
                "hash.table_size",
                format!("must be prime (so every preference list covers the table), got {size}"),
            ));
        }
        Ok(Self::empty(Kind::Maglev { size }))
    }

    /// Turns on bounded loads with factor `c`: above 1, at most 100, taken
    /// to a thousandth (1.25 allows 25% over the average).
    pub fn bounded_load(mut self, c: f64) -> Result<Self, BuildError> {
        self.bound = Some(Bound::new(c)?);
        Ok(self)
    }

    fn empty(kind: Kind) -> Self {
        ConsistentHash {
            kind,
            bound: None,
            built: Arc::new(Built {
                table: Table::Maglev(Vec::new()),
                ids: Vec::new(),
                weights: Vec::new(),
                total_weight: 0,
            }),
            remap: None,
        }
    }

    /// "ring_hash" or "maglev".
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Ring { .. } => "ring_hash",
            Kind::Maglev { .. } => "maglev",
        }
    }

    /// The bounded-load factor, if bounded loads are on.
    pub fn bounded_factor(&self) -> Option<f64> {
        self.bound.map(|b| b.factor())
    }

    /// A table with these settings for a new endpoint set, given as
    /// `(address, weight)` by index. Call it whenever the set or a weight
    /// changes, off the pick path. If every weight is 0, all count as 1.
    /// Addresses are expected to be distinct; a duplicate is kept as its own
    /// member, ranked after its twin (no panic).
    pub fn rebuild(&self, endpoints: impl IntoIterator<Item = (SocketAddr, u32)>) -> Self {
        let endpoints: Vec<(SocketAddr, u32)> = endpoints.into_iter().collect();
        let all_zero = endpoints.iter().all(|&(_, w)| w == 0);
        let weights: Vec<u32> = endpoints
            .iter()
            .map(|&(_, w)| if all_zero { 1 } else { w })
            .collect();
        let ids: Vec<u64> = endpoints.iter().map(|(a, _)| mix::identity(a)).collect();
        // Canonical order: by address, so the table ignores input order.
        let mut order: Vec<u32> = (0..endpoints.len() as u32).collect();
        order.sort_by_key(|&i| (endpoints[i as usize], i));
        let members: Vec<(u64, u32)> = order
            .iter()
            .map(|&i| (ids[i as usize], weights[i as usize]))
            .collect();
        let table = match self.kind {
            Kind::Ring {
                points_per_weight,
                min_points,
                max_points,
            } => {
                let sizes = ring::Sizes {
                    points_per_weight,
                    min_points,
                    max_points,
                };
                Table::Ring(ring::build(&members, &order, sizes))
            }
            Kind::Maglev { size } => {
                let entries = maglev::populate(&members, size);
                Table::Maglev(entries.into_iter().map(|r| order[r as usize]).collect())
            }
        };
        ConsistentHash {
            kind: self.kind,
            bound: self.bound,
            built: Arc::new(Built {
                table,
                ids,
                total_weight: weights.iter().map(|&w| u64::from(w)).sum(),
                weights,
            }),
            remap: None,
        }
    }

    /// How many endpoints the table was built for.
    pub fn len(&self) -> usize {
        self.built.ids.len()
    }

    /// True when the table was built for no endpoint (or not built yet).
    pub fn is_empty(&self) -> bool {
        self.built.ids.is_empty()
    }

    /// Entries in the table: ring points or Maglev slots (0 before
    /// [`rebuild`](Self::rebuild)).
    pub fn table_len(&self) -> usize {
        self.built.table.len()
    }

    /// The endpoint that owns `key`, ignoring loads and exclusions; `None`
    /// for an empty table. (An index of the set the table was built for.)
    pub fn home(&self, key: u64) -> Option<usize> {
        let p = mix::key_position(key);
        self.start(p).map(|s| self.built.table.owner(s))
    }

    /// Each endpoint's share of the key space, by index (they sum to 1 when
    /// the table is not empty).
    pub fn shares(&self) -> Vec<f64> {
        let mut shares = vec![0.0; self.len()];
        match &self.built.table {
            Table::Ring(r) => r.arcs().for_each(|(o, arc)| shares[o as usize] += arc),
            Table::Maglev(t) => t
                .iter()
                .for_each(|&o| shares[o as usize] += 1.0 / t.len() as f64),
        }
        shares
    }

    /// With bounded loads, the most requests endpoint `index` may hold after
    /// taking a new one when `in_flight` are in flight over the set:
    /// `⌈c · (in_flight + 1) · w / W⌉`. `None` without bounded loads or for
    /// an index out of range.
    pub fn load_limit(&self, index: usize, in_flight: u64) -> Option<u64> {
        let w = *self.built.weights.get(index)?;
        Some(self.bound?.limit(w, in_flight, self.built.total_weight))
    }

    /// The first entry to look at for a key position.
    #[inline]
    fn start(&self, position: u64) -> Option<usize> {
        let table = &self.built.table;
        (table.len() > 0).then(|| table.start(position))
    }

    /// This table, used with a later endpoint set than the one it was built
    /// for: `remap` says where each of its endpoints is now. Picks stay
    /// eligible and consistent while the channel builds the new set's table
    /// off the discovery task; endpoints the table does not know get keys
    /// only when no other is eligible.
    pub(crate) fn remapped(&self, remap: Arc<Remap>) -> Self {
        ConsistentHash {
            remap: Some(remap),
            ..self.clone()
        }
    }
}

impl fmt::Debug for ConsistentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsistentHash")
            .field("kind", &self.kind)
            .field("bounded_load", &self.bounded_factor())
            .field("endpoints", &self.len())
            .field("entries", &self.table_len())
            .field("remapped", &self.remap.is_some())
            .finish()
    }
}
