//! Picking by key: the home entry, the bounded walk, the exact fallback.
//!
//! Entries of the table hold indices of the set it was built for ("built"
//! indices, `b`); a pick answers with indices of the set it is given
//! ("current" indices, `i`). They are the same unless the table is used
//! through a [`Remap`](super::Remap) while its successor is being built.

use super::{ConsistentHash, mix};
use crate::balance::LoadSet;

impl ConsistentHash {
    /// Picks the endpoint for `key` among the indices of `set` that
    /// `eligible` accepts: the first in the key's walk order, skipping full
    /// endpoints when loads are bounded (see the [module docs](super)).
    /// `None` exactly when no index is eligible.
    ///
    /// With bounded loads this takes the in-flight total from
    /// [`LoadSet::in_flight`], or sums it over the set (O(n)) when the set
    /// does not keep it. A table not built for a set of this length still
    /// returns an eligible index when one exists, though not a consistent
    /// one.
    pub fn pick(
        &self,
        key: u64,
        set: &dyn LoadSet,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let in_flight = match self.bound {
            Some(_) => set.in_flight().unwrap_or_else(|| {
                (0..set.len())
                    .map(|i| u64::from(set.load(i).pending()))
                    .sum()
            }),
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
        let expected = self.remap.as_ref().map_or(self.len(), |r| r.current_len());
        if n != expected {
            return mismatched(key, n, eligible);
        }
        let p = mix::key_position(key);
        let table = &self.built.table;
        if n == 0 || table.len() == 0 {
            return self.rendezvous(p, eligible);
        }
        // The common case, kept small: the key's home takes it.
        let home = table.start(p);
        let b = table.owner(home);
        if let Some(i) = self.current(b)
            && eligible(i)
            && self.admits(set, b, i, in_flight)
        {
            return Some(i);
        }
        self.walk_on(key, home, set, eligible, in_flight)
    }

    /// The current index of built index `b`, if it is in the set.
    #[inline]
    fn current(&self, b: usize) -> Option<usize> {
        match &self.remap {
            None => Some(b),
            Some(r) => r.get(b),
        }
    }

    /// True when endpoint `b` (built index), at current index `i`, may take
    /// one more request (always, without bounded loads).
    #[inline]
    fn admits(&self, set: &dyn LoadSet, b: usize, i: usize, in_flight: u64) -> bool {
        match self.bound {
            None => true,
            Some(bound) => bound.admits(
                set.load(i).pending(),
                self.built.weights[b],
                in_flight,
                self.built.total_weight,
            ),
        }
    }

    /// The rest of a pick whose home entry did not take it: the bounded walk
    /// on from `home`, then the exact rendezvous fallback.
    fn walk_on(
        &self,
        key: u64,
        home: usize,
        set: &dyn LoadSet,
        eligible: &dyn Fn(usize) -> bool,
        in_flight: u64,
    ) -> Option<usize> {
        let p = mix::key_position(key);
        let table = &self.built.table;
        let len = table.len();
        let mut first = None;
        for k in 0..len.min(Self::WALK_LIMIT) {
            let s = if home + k >= len {
                home + k - len
            } else {
                home + k
            };
            let b = table.owner(s);
            let Some(i) = self.current(b) else { continue };
            if eligible(i) {
                if self.admits(set, b, i, in_flight) {
                    return Some(i);
                }
                first.get_or_insert(i);
            }
        }
        // Heavy exclusion or load: exact, by rendezvous rank.
        if self.bound.is_some()
            && let Some(i) =
                self.rendezvous_by(p, |b, i| eligible(i) && self.admits(set, b, i, in_flight))
        {
            return Some(i);
        }
        first
            .or_else(|| self.rendezvous(p, eligible))
            // Through a remap, endpoints the table does not know yet.
            .or_else(|| {
                self.remap
                    .as_ref()
                    .and_then(|_| mismatched(key, set.len(), eligible))
            })
    }

    /// The accepted current index with the highest rendezvous score for
    /// `position`.
    fn rendezvous(&self, position: u64, accept: impl Fn(usize) -> bool) -> Option<usize> {
        self.rendezvous_by(position, |_, i| accept(i))
    }

    /// The current index, among those `accept(built, current)` takes, with
    /// the highest rendezvous score for `position` (ties to the lower
    /// identity hash, then the lower built index).
    fn rendezvous_by(&self, position: u64, accept: impl Fn(usize, usize) -> bool) -> Option<usize> {
        let ids = &self.built.ids;
        (0..ids.len())
            .filter_map(|b| self.current(b).filter(|&i| accept(b, i)).map(|i| (b, i)))
            .max_by_key(|&(b, _)| {
                (
                    mix::rendezvous(position, ids[b]),
                    std::cmp::Reverse((ids[b], b)),
                )
            })
            .map(|(_, i)| i)
    }
}

/// A pick on a set the table was not built for: the first eligible index
/// from one derived from the key.
fn mismatched(key: u64, n: usize, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
    let start = mix::reduce(mix::key_position(key), n);
    (0..n).map(|k| (start + k) % n).find(|&i| eligible(i))
}
