//! Picking by key: the home entry, the bounded walk, the exact fallback.

use super::{ConsistentHash, mix};
use crate::balance::LoadSet;

impl ConsistentHash {
    /// Picks the endpoint for `key` among the indices of `set` that
    /// `eligible` accepts: the first in the key's walk order, skipping full
    /// endpoints when loads are bounded (see the [module docs](super)).
    /// `None` exactly when no index is eligible.
    ///
    /// With bounded loads this sums the in-flight counts of the whole set
    /// (O(n)); a caller that keeps that total calls
    /// [`pick_with_in_flight`](Self::pick_with_in_flight) instead. A table
    /// not rebuilt for a set of this length still returns an eligible index
    /// when one exists, though not a consistent one.
    pub fn pick(
        &self,
        key: u64,
        set: &dyn LoadSet,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let in_flight = match self.bound {
            Some(_) => (0..set.len())
                .map(|i| u64::from(set.load(i).pending()))
                .sum(),
            None => 0,
        };
        self.pick_with_in_flight(key, set, eligible, in_flight)
    }

    /// As [`pick`](Self::pick), with `in_flight`, the requests in flight
    /// over the whole set, given by the caller (ignored without bounded
    /// loads). O(1) expected, whatever the set size, unless heavy exclusion
    /// or load sends it past [`WALK_LIMIT`](Self::WALK_LIMIT) entries (then
    /// O(n)).
    pub fn pick_with_in_flight(
        &self,
        key: u64,
        set: &dyn LoadSet,
        eligible: &dyn Fn(usize) -> bool,
        in_flight: u64,
    ) -> Option<usize> {
        let n = set.len();
        if n != self.len() {
            return mismatched(key, n, eligible);
        }
        let p = mix::key_position(key);
        if n == 0 || self.table.len() == 0 {
            return self.rendezvous(p, eligible);
        }
        // The common case, kept small: the key's home takes it.
        let home = self.table.start(p);
        let i = self.table.owner(home);
        if eligible(i) && self.admits(set, i, in_flight) {
            return Some(i);
        }
        self.walk_on(p, home, set, eligible, in_flight)
    }

    /// True when endpoint `i` may take one more request (always, without
    /// bounded loads).
    #[inline]
    fn admits(&self, set: &dyn LoadSet, i: usize, in_flight: u64) -> bool {
        match self.bound {
            None => true,
            Some(b) => b.admits(
                set.load(i).pending(),
                self.weights[i],
                in_flight,
                self.total_weight,
            ),
        }
    }

    /// The rest of a pick whose home entry did not take it: the bounded walk
    /// on from `home`, then the exact rendezvous fallback.
    fn walk_on(
        &self,
        p: u64,
        home: usize,
        set: &dyn LoadSet,
        eligible: &dyn Fn(usize) -> bool,
        in_flight: u64,
    ) -> Option<usize> {
        let under = |i: usize| self.admits(set, i, in_flight);
        let len = self.table.len();
        let mut first = None;
        for k in 0..len.min(Self::WALK_LIMIT) {
            let s = if home + k >= len {
                home + k - len
            } else {
                home + k
            };
            let i = self.table.owner(s);
            if eligible(i) {
                if under(i) {
                    return Some(i);
                }
                first.get_or_insert(i);
            }
        }
        // Heavy exclusion or load: exact, by rendezvous rank.
        if self.bound.is_some()
            && let Some(i) = self.rendezvous(p, |i| eligible(i) && under(i))
        {
            return Some(i);
        }
        first.or_else(|| self.rendezvous(p, eligible))
    }

    /// The accepted index with the highest rendezvous score for `position`
    /// (ties to the lower identity hash, then the lower index).
    fn rendezvous(&self, position: u64, accept: impl Fn(usize) -> bool) -> Option<usize> {
        (0..self.len()).filter(|&i| accept(i)).max_by_key(|&i| {
            let id = self.ids[i];
            (mix::rendezvous(position, id), std::cmp::Reverse((id, i)))
        })
    }
}

/// A pick on a set the table was not built for: the first eligible index
/// from one derived from the key.
fn mismatched(key: u64, n: usize, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
    let start = mix::reduce(mix::key_position(key), n);
    (0..n).map(|k| (start + k) % n).find(|&i| eligible(i))
}
