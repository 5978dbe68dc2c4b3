//! The channel's keyed balancer: a consistent-hash table kept in step with
//! the endpoint set without putting its build on the discovery task.
//!
//! A Maglev table takes milliseconds to build (65,537 entries), a ring a
//! sort of up to 65,536 points, where one endpoint change otherwise costs
//! microseconds. So:
//!
//! - the first set, and a change that leaves the table missing or having
//!   lost more than a quarter of the set ([`MAX_CHURN`]), is built at once
//!   (the change was O(n) anyway);
//! - any other change is published at once with the newest table seen
//!   through a [`Remap`](crate::balance::hash) of its indices (kept up to
//!   date in O(1) per change; copied, 4 bytes an endpoint, per publish),
//!   and a new table is built on tokio's blocking pool from the published
//!   snapshot; the discovery task publishes it when it is done. At most one
//!   build runs at a time; changes made meanwhile start the next one when
//!   it ends.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::balance::ConsistentHash;
use crate::balance::hash::Tracker;

/// Above this share of endpoints missing from the table or gone from the
/// set, the table is rebuilt at once rather than seen through a remap: a
/// quarter.
pub(crate) const MAX_CHURN: f64 = 0.25;

/// A table built off the discovery task.
pub(crate) struct Built {
    generation: u64,
    table: ConsistentHash,
}

/// The keyed balancer's state on the discovery task.
pub(crate) struct Keyed {
    proto: ConsistentHash,
    /// The newest table, and where the endpoints of its set are now.
    table: Option<(ConsistentHash, Tracker)>,
    /// The build under way: its number, and where the endpoints of its set
    /// are now.
    building: Option<(u64, Tracker)>,
    /// The set (or a weight) changed since the newest build started.
    stale: bool,
    generation: u64,
    done: mpsc::UnboundedSender<Built>,
}

impl Keyed {
    /// A keyed balancer with `proto`'s settings; finished builds are sent
    /// to `done`, for the discovery task to [`install`](Self::install).
    pub(crate) fn new(proto: ConsistentHash, done: mpsc::UnboundedSender<Built>) -> Self {
        Keyed {
            proto,
            table: None,
            building: None,
            stale: true,
            generation: 0,
            done,
        }
    }

    fn trackers(&mut self) -> impl Iterator<Item = &mut Tracker> {
        let table = self.table.as_mut().map(|(_, t)| t);
        table
            .into_iter()
            .chain(self.building.as_mut().map(|(_, t)| t))
    }

    /// An endpoint was appended to the set.
    pub(crate) fn inserted(&mut self) {
        self.trackers().for_each(Tracker::inserted);
        self.stale = true;
    }

    /// The endpoint at index `i` was removed (the last one moved there).
    pub(crate) fn removed(&mut self, i: usize) {
        self.trackers().for_each(|t| t.removed(i));
        self.stale = true;
    }

    /// A weight changed.
    pub(crate) fn reweighted(&mut self) {
        self.stale = true;
    }

    /// The table for the set about to be published (`addrs` and `weights`
    /// by index): built now if there is none yet or the set changed too
    /// much, else the newest one, remapped if the set changed since it was
    /// built.
    pub(crate) fn view(&mut self, addrs: &[SocketAddr], weights: &[u32]) -> ConsistentHash {
        let rebuild_now = match &self.table {
            None => true,
            Some((_, tracker)) => {
                tracker.churn() > MAX_CHURN || tokio::runtime::Handle::try_current().is_err()
            }
        };
        if rebuild_now && self.stale {
            let members = addrs.iter().copied().zip(weights.iter().copied());
            let table = self.proto.rebuild(members);
            self.table = Some((table, Tracker::new(addrs.len())));
            // A build under way is superseded: its result will be ignored.
            self.building = None;
            self.generation += 1;
            self.stale = false;
        }
        let (table, tracker) = self.table.as_ref().expect("a table was built above");
        if tracker.unchanged() {
            table.clone()
        } else {
            table.remapped(Arc::new(tracker.remap()))
        }
    }

    /// Starts a build of the set `members` will list (called with the set
    /// just published) when the table is stale and no build is under way.
    pub(crate) fn build_if_stale<M>(&mut self, len: usize, members: M)
    where
        M: FnOnce() -> Vec<(SocketAddr, u32)> + Send + 'static,
    {
        if !self.stale || self.building.is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.generation += 1;
        let generation = self.generation;
        let proto = self.proto.clone();
        let done = self.done.clone();
        runtime.spawn_blocking(move || {
            let table = proto.rebuild(members());
            // The channel may be gone: then nobody needs the table.
            let _ = done.send(Built { generation, table });
        });
        self.building = Some((generation, Tracker::new(len)));
        self.stale = false;
    }

    /// Takes a finished build as the newest table; false (and nothing
    /// changes) when a later table superseded it.
    pub(crate) fn install(&mut self, built: Built) -> bool {
        match self.building.take() {
            Some((generation, tracker)) if generation == built.generation => {
                self.table = Some((built.table, tracker));
                true
            }
            other => {
                self.building = other;
                false
            }
        }
    }

    /// Whether a build is under way.
    #[cfg(test)]
    pub(crate) fn building(&self) -> bool {
        self.building.is_some()
    }
}
