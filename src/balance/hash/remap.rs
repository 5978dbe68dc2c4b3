//! A table used with a later endpoint set than the one it was built for.
//!
//! The channel's endpoint set changes one endpoint at a time (an insertion
//! appends; a removal moves the last endpoint into the hole), and a table
//! takes milliseconds to build at 10,000 endpoints. So a set change is
//! published at once with the old table seen through a [`Remap`] (each of
//! its endpoints' index in the new set, or none), while the new table is
//! built off the discovery task. [`Tracker`] keeps that map up to date
//! change by change, in O(1) per change.
//!
//! Through a remap, a key keeps its endpoint while that endpoint stays in
//! the set; the keys of a removed endpoint walk on to the next endpoint in
//! the table's order (on a ring, exactly where the new table sends them);
//! a new endpoint gets keys once its table is built.

/// No index: the endpoint left the set.
const GONE: u32 = u32::MAX;

/// Where each endpoint of the set a table was built for is in the current
/// set.
#[derive(Debug)]
pub(crate) struct Remap {
    to_current: Box<[u32]>,
    current_len: usize,
}

impl Remap {
    /// The current index of built index `b`, if that endpoint is still in
    /// the set.
    #[inline]
    pub(crate) fn get(&self, b: usize) -> Option<usize> {
        match self.to_current.get(b) {
            Some(&i) if i != GONE => Some(i as usize),
            _ => None,
        }
    }

    /// The size of the current set.
    pub(crate) fn current_len(&self) -> usize {
        self.current_len
    }
}

/// Follows the endpoints of the set a table was built for through later
/// changes.
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    /// By built index: the current index, or [`GONE`].
    to_current: Vec<u32>,
    /// By current index: the built index, or [`GONE`] for an endpoint the
    /// table does not know.
    to_built: Vec<u32>,
    /// Built endpoints removed, and current endpoints unknown to the table.
    lost: usize,
    added: usize,
}

impl Tracker {
    /// A table built for the current set of `n` endpoints.
    pub(crate) fn new(n: usize) -> Self {
        let identity: Vec<u32> = (0..n as u32).collect();
        Tracker {
            to_current: identity.clone(),
            to_built: identity,
            lost: 0,
            added: 0,
        }
    }

    /// An endpoint was appended to the current set.
    pub(crate) fn inserted(&mut self) {
        self.to_built.push(GONE);
        self.added += 1;
    }

    /// The endpoint at current index `i` was removed, and the last one
    /// moved into its place.
    pub(crate) fn removed(&mut self, i: usize) {
        let Some(moved) = self.to_built.pop() else {
            return;
        };
        let b = if i < self.to_built.len() {
            std::mem::replace(&mut self.to_built[i], moved)
        } else {
            moved
        };
        if b == GONE {
            self.added -= 1;
        } else {
            self.to_current[b as usize] = GONE;
            self.lost += 1;
        }
        if i < self.to_built.len() && moved != GONE {
            self.to_current[moved as usize] = i as u32;
        }
    }

    /// The set is still the one the table was built for.
    pub(crate) fn unchanged(&self) -> bool {
        self.lost == 0 && self.added == 0
    }

    /// The share of endpoints the table misses or has lost, relative to the
    /// larger of the two sets.
    pub(crate) fn churn(&self) -> f64 {
        let size = self.to_current.len().max(self.to_built.len()).max(1);
        (self.lost + self.added) as f64 / size as f64
    }

    /// The map as it is now.
    pub(crate) fn remap(&self) -> Remap {
        Remap {
            to_current: self.to_current.clone().into_boxed_slice(),
            current_len: self.to_built.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Against a plain model: a vector of endpoint names in index order,
    /// changed the way the channel's writer changes it.
    #[test]
    fn the_tracker_follows_inserts_and_swap_removals() {
        let mut rng = Rng::seeded(3);
        for _ in 0..200 {
            let n = rng.below(12);
            let built: Vec<u32> = (0..n as u32).collect();
            let mut current = built.clone();
            let mut next = 100;
            let mut tracker = Tracker::new(n);
            for _ in 0..rng.below(30) {
                if current.is_empty() || rng.below(2) == 0 {
                    current.push(next);
                    next += 1;
                    tracker.inserted();
                } else {
                    let i = rng.below(current.len());
                    current.swap_remove(i);
                    tracker.removed(i);
                }
                let remap = tracker.remap();
                assert_eq!(remap.current_len(), current.len());
                for (b, name) in built.iter().enumerate() {
                    let expected = current.iter().position(|c| c == name);
                    assert_eq!(remap.get(b), expected, "built {b}");
                }
                let unknown = current.iter().filter(|&&c| c >= 100).count();
                let lost = built.iter().filter(|b| !current.contains(b)).count();
                assert_eq!(tracker.unchanged(), unknown == 0 && lost == 0);
            }
        }
    }
}
