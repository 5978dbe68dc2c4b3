//! Balancers: choosing which endpoint gets the next call.
//!
//! A [`Balancer`] is a pure, synchronous picker. It is rebuilt (off the call
//! path) each time the endpoint set changes, with [`Balancer::rebuild`], so it
//! can precompute what it needs (an alias table, a weighted schedule); then
//! [`Balancer::pick`] is called with `&self` from any number of tasks at once,
//! with no lock and no allocation. A pick sees each endpoint's [`Load`]
//! through a [`LoadSet`] and a filter saying which indices are eligible (not
//! ejected by a breaker, not already tried by this call). It returns `None`
//! exactly when no index is eligible.
//!
//! | balancer | picks | cost per pick |
//! |---|---|---|
//! | [`RoundRobin`] | each eligible endpoint in turn, from a random start | O(1) |
//! | [`Random`] | uniformly at random | O(1) |
//! | [`Weighted::random`] | at random in proportion to weight (alias table) | O(1) |
//! | [`Weighted::round_robin`] | in turn, in proportion to weight, interleaved (precomputed earliest-deadline schedule) | O(1) |
//! | [`P2c::peak_ewma`], [`P2c::pending`] | the less loaded of two random endpoints | O(1) |
//! | [`ConsistentHash::maglev`], [`ConsistentHash::ring`] ([`hash`]) | by the request key ([`PickContext::key`]): the same endpoint for the same key and set, the next one in the table's order for a retry; optional bounded loads | O(1) expected |
//!
//! **Slow start** ([`slow_start`]): round-robin, weighted and P2C ramp a
//! new endpoint's share up over a window, when the pick comes with the
//! set's [`Ramps`] ([`PickContext::with_ramps`]; the channel's do when
//! [`ChannelPolicy::with_slow_start`](crate::channel::ChannelPolicy::with_slow_start)
//! is set). Round-robin and weighted picks keep a ramping endpoint's turn
//! with probability `f` (its weight factor), P2C divides its cost by `f`.
//! While nothing ramps, a pick pays one atomic load for it.
//!
//! Under heavy exclusion (most endpoints ineligible) every balancer falls back
//! to an O(n) scan, so a pick still finds an eligible endpoint when one
//! exists.
//!
//! Every pick gets a [`PickContext`] (the time of the pick, the request's
//! hash key when it has one, the set's slow-start ramps when it has them),
//! and every attempt that
//! ends — answered, cut by a timeout, or cancelled — is reported to the
//! balancer through [`Balancer::observe`] as an [`AttemptEnd`], so that a
//! latency-aware load sees what callers see.
//!
//! ```
//! use std::time::Instant;
//! use towline::balance::{Balancer, Load, PickContext, RoundRobin};
//! use towline::rng::Rng;
//!
//! let now = Instant::now();
//! let loads: Vec<Load> = (0..3).map(|_| Load::new(1, now)).collect();
//! let rr = RoundRobin::new().rebuild(&[1, 1, 1]);
//! let mut rng = Rng::seeded(1);
//! let at = PickContext::new(now);
//! let mut seen: Vec<usize> = (0..3)
//!     .map(|_| rr.pick(&at, &loads, &|_| true, &mut rng).unwrap())
//!     .collect();
//! seen.sort();
//! assert_eq!(seen, [0, 1, 2]);
//! // Nothing eligible: no pick.
//! assert_eq!(rr.pick(&at, &loads, &|_| false, &mut rng), None);
//! ```

mod alias;
mod decay;
mod end;
pub mod hash;
mod load;
mod p2c;
mod ramps;
mod random;
mod round_robin;
pub mod slow_start;
mod weighted;

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

pub use decay::Decay;
pub use end::{AttemptEnd, End};
pub use hash::ConsistentHash;
pub use load::Load;
pub use p2c::{P2c, P2cLoad};
pub use ramps::{Ramping, Ramps};
pub use random::Random;
pub use round_robin::RoundRobin;
pub use slow_start::{SlowStart, SlowStartSettings};
pub use weighted::Weighted;

use crate::rng::Rng;

/// The endpoints a balancer picks among, seen through their loads.
pub trait LoadSet {
    /// Number of endpoints; indices are `0..len()`.
    fn len(&self) -> usize;
    /// The load of endpoint `index` (`index < len()`).
    fn load(&self, index: usize) -> &Load;
    /// True when there are no endpoints.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Requests in flight over the whole set, when the set keeps that total
    /// (the channel's does while a keyed balancer bounds loads), so that a
    /// bounded pick does not sum it (default: `None`).
    fn in_flight(&self) -> Option<u64> {
        None
    }
}

impl LoadSet for [Load] {
    fn len(&self) -> usize {
        <[Load]>::len(self)
    }
    fn load(&self, index: usize) -> &Load {
        &self[index]
    }
}

impl LoadSet for Vec<Load> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn load(&self, index: usize) -> &Load {
        &self[index]
    }
}

/// A load-balancing strategy.
pub trait Balancer: fmt::Debug + Send + Sync + 'static {
    /// A short name for logs and metrics ("round_robin", "p2c_peak_ewma", …).
    fn name(&self) -> &'static str;

    /// A balancer for a new endpoint set whose weights, by index, are
    /// `weights`. Called whenever the set or a weight changes, never on the
    /// pick path.
    fn rebuild(&self, weights: &[u32]) -> Box<dyn Balancer>;

    /// A balancer for a new endpoint set given with its addresses (an
    /// endpoint's identity), which is what the channel calls. Balancers
    /// that place endpoints by identity ([`ConsistentHash`]) override it;
    /// the default is [`rebuild`](Self::rebuild) with the weights.
    fn rebuild_set(&self, set: &EndpointSet<'_>) -> Box<dyn Balancer> {
        self.rebuild(set.weights())
    }

    /// Picks an index `i < set.len()` with `eligible(i)`, or `None` when there
    /// is none. `at` says when the pick happens (for time-decayed loads).
    fn pick(
        &self,
        at: &PickContext,
        set: &dyn LoadSet,
        eligible: &dyn Fn(usize) -> bool,
        rng: &mut Rng,
    ) -> Option<usize>;

    /// Records how an attempt on the endpoint of `load` ended: every
    /// attempt is reported once, whether it was answered, cut by a timeout
    /// or cancelled. Only balancers that learn from attempts do anything
    /// here (default: nothing).
    fn observe(&self, load: &Load, end: &AttemptEnd) {
        let _ = (load, end);
    }
}

/// What a balancer is told about one pick: the time it happens, the
/// request's hash key if it has one, and the set's slow-start ramps if it
/// has them. Construct it with [`PickContext::new`] (then
/// [`with_key`](Self::with_key), [`with_ramps`](Self::with_ramps)).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct PickContext<'a> {
    /// The time of the pick.
    pub now: Instant,
    /// The request's hash key (see [`ConsistentHash`]); balancers that do
    /// not pick by key ignore it.
    pub key: Option<u64>,
    /// The slow-start ramps of the set picked from (see [`Ramps`]); none:
    /// no endpoint ramps.
    pub ramps: Option<&'a Ramps>,
}

impl PickContext<'static> {
    /// The context of a pick at `now`, without a key or ramps.
    pub fn new(now: Instant) -> Self {
        PickContext {
            now,
            key: None,
            ramps: None,
        }
    }
}

impl<'a> PickContext<'a> {
    /// The same pick, for a request with hash key `key`.
    pub fn with_key(mut self, key: Option<u64>) -> Self {
        self.key = key;
        self
    }

    /// The same pick, from a set whose endpoints ramp as `ramps` says.
    pub fn with_ramps<'b>(self, ramps: &'b Ramps) -> PickContext<'b> {
        PickContext {
            now: self.now,
            key: self.key,
            ramps: Some(ramps),
        }
    }

    /// The ramps running at this pick, if any (one atomic load when the
    /// set has ramps and none runs).
    #[inline]
    pub fn ramping(&self) -> Option<Ramping<'a>> {
        self.ramps?.active(self.now)
    }
}

/// The endpoint set a balancer is rebuilt for ([`Balancer::rebuild_set`]):
/// by index, each endpoint's address and weight.
///
/// ```
/// use std::net::SocketAddr;
/// use towline::balance::EndpointSet;
///
/// let addrs: Vec<SocketAddr> = vec!["10.0.0.1:80".parse().unwrap()];
/// let set = EndpointSet::new(&addrs, &[3]);
/// assert_eq!((set.len(), set.weights()), (1, &[3][..]));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct EndpointSet<'a> {
    addrs: &'a [SocketAddr],
    weights: &'a [u32],
}

impl<'a> EndpointSet<'a> {
    /// The set whose endpoint `i` is at `addrs[i]` with weight
    /// `weights[i]`. If the slices differ in length, the shorter one sets
    /// the length.
    pub fn new(addrs: &'a [SocketAddr], weights: &'a [u32]) -> Self {
        let n = addrs.len().min(weights.len());
        EndpointSet {
            addrs: &addrs[..n],
            weights: &weights[..n],
        }
    }

    /// The addresses, by index.
    pub fn addrs(&self) -> &'a [SocketAddr] {
        self.addrs
    }

    /// The weights, by index.
    pub fn weights(&self) -> &'a [u32] {
        self.weights
    }

    /// How many endpoints.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// True for the empty set.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }
}

/// How many random draws to try before falling back to an exact scan.
const RANDOM_TRIES: usize = 4;

/// A uniformly random eligible index other than `avoid`, or `None`.
///
/// Random draws first (O(1) when most indices are eligible), then an exact
/// two-pass scan, so the result is uniform over the eligible indices either
/// way.
pub(crate) fn sample_eligible(
    n: usize,
    eligible: &dyn Fn(usize) -> bool,
    avoid: Option<usize>,
    rng: &mut Rng,
) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let ok = |i: usize| Some(i) != avoid && eligible(i);
    for _ in 0..RANDOM_TRIES {
        let i = rng.below(n);
        if ok(i) {
            return Some(i);
        }
    }
    let count = (0..n).filter(|&i| ok(i)).count();
    if count == 0 {
        return None;
    }
    let k = rng.below(count);
    (0..n).filter(|&i| ok(i)).nth(k)
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;

    pub fn loads(n: usize) -> Vec<Load> {
        let now = Instant::now();
        (0..n).map(|_| Load::new(1, now)).collect()
    }

    pub fn all(_: usize) -> bool {
        true
    }

    /// The context of a pick now.
    pub fn at() -> PickContext<'static> {
        PickContext::new(Instant::now())
    }

    /// Every balancer returns `None` on an empty set and on a fully excluded
    /// set, and only eligible indices otherwise.
    pub fn check_exclusions(b: &dyn Balancer) {
        let now = at();
        let mut rng = Rng::seeded(11);
        let empty = b.rebuild(&[]);
        assert_eq!(empty.pick(&now, &loads(0), &all, &mut rng), None);
        let b = b.rebuild(&[1, 2, 3, 4, 5]);
        let set = loads(5);
        assert_eq!(b.pick(&now, &set, &|_| false, &mut rng), None);
        for _ in 0..200 {
            let i = b.pick(&now, &set, &|i| i == 1 || i == 3, &mut rng).unwrap();
            assert!(i == 1 || i == 3, "picked excluded {i}");
        }
        for _ in 0..50 {
            assert_eq!(b.pick(&now, &set, &|i| i == 4, &mut rng), Some(4));
        }
    }
}
