//! The writer side of the endpoint table, owned by the discovery task.
//!
//! It keeps the slots in the table's chunked layout and changes them in
//! place, so an update costs what it changes, not the size of the set:
//!
//! - an insertion appends a slot to the last chunk;
//! - a removal moves the last slot into the hole (order is not kept; the
//!   channel's views sort by address);
//! - a weight change is written into the slot's load in place;
//! - a `Reset` is compared with the current set, and only the difference
//!   is applied.
//!
//! A chunk still shared with the published snapshot is copied before its
//! first change ([`Arc::make_mut`]), and publishing shares all others. The
//! balancer is rebuilt from a weight list kept in step with the slots, so a
//! balancer that ignores weights rebuilds in O(1). Updates that arrive
//! together are applied together and published once.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::slot::Slot;
use super::state::ChannelState;
use super::table::{CHUNK, Chunk, Snapshot, Table};
use crate::Endpoint;
use crate::balance::Load;
use crate::discover::{DiscoverError, Update};

/// A connector: one service per endpoint.
pub(crate) type Connect<S> = Box<dyn Fn(&Endpoint) -> S + Send + Sync>;

/// The discovery task's side of the table.
pub(crate) struct TableWriter<S> {
    table: Arc<Table<S>>,
    chunks: Vec<Arc<Chunk<S>>>,
    len: usize,
    /// Index of each endpoint's slot.
    index: HashMap<SocketAddr, usize>,
    /// Weight of each slot, by index, for balancer rebuilds.
    weights: Vec<u32>,
    /// The set changed since the last publish.
    changed: bool,
    connect: Connect<S>,
    state: Arc<ChannelState>,
    epoch: Instant,
}

impl<S: Send + Sync + 'static> TableWriter<S> {
    pub(crate) fn new(table: Arc<Table<S>>, connect: Connect<S>, state: Arc<ChannelState>) -> Self {
        TableWriter {
            table,
            chunks: Vec::new(),
            len: 0,
            index: HashMap::new(),
            weights: Vec::new(),
            changed: false,
            connect,
            state,
            epoch: crate::clock::now(),
        }
    }

    /// Applies one update (not yet visible to callers: see
    /// [`publish`](Self::publish)).
    pub(crate) fn apply(&mut self, update: Update) {
        let metrics = &self.state.metrics;
        match update {
            Update::Reset(set) => {
                metrics.resets.increment(1);
                let keep: HashSet<SocketAddr> = set.iter().map(|e| e.addr).collect();
                let gone: Vec<SocketAddr> = self
                    .index
                    .keys()
                    .filter(|a| !keep.contains(a))
                    .copied()
                    .collect();
                for addr in gone {
                    self.remove(addr);
                }
                for endpoint in set {
                    self.insert(endpoint);
                }
            }
            Update::Insert(endpoint) => {
                metrics.inserts.increment(1);
                self.insert(endpoint);
            }
            Update::Remove(addr) => {
                metrics.removes.increment(1);
                self.remove(addr);
            }
        }
    }

    fn slot_mut(&mut self, index: usize) -> &mut Arc<Slot<S>> {
        let chunk = Arc::make_mut(&mut self.chunks[index / CHUNK]);
        &mut chunk[index % CHUNK]
    }

    /// Adds an endpoint, or updates the weight of the one at its address
    /// in place (its other state is kept).
    fn insert(&mut self, endpoint: Endpoint) {
        if let Some(&i) = self.index.get(&endpoint.addr) {
            if self.weights[i] != endpoint.weight {
                self.weights[i] = endpoint.weight;
                self.chunks[i / CHUNK][i % CHUNK]
                    .load
                    .set_weight(endpoint.weight);
                self.changed = true;
            }
            return;
        }
        let slot = Arc::new(Slot::new(
            endpoint.clone(),
            (self.connect)(&endpoint),
            Load::new(endpoint.weight, self.epoch),
            self.state.clone(),
        ));
        let i = self.len;
        if i / CHUNK == self.chunks.len() {
            self.chunks.push(Arc::new(Vec::with_capacity(CHUNK)));
        }
        Arc::make_mut(&mut self.chunks[i / CHUNK]).push(slot);
        self.index.insert(endpoint.addr, i);
        self.weights.push(endpoint.weight);
        self.len += 1;
        self.changed = true;
    }

    /// Removes an endpoint: the last slot moves into its place.
    fn remove(&mut self, addr: SocketAddr) {
        let Some(i) = self.index.remove(&addr) else {
            return;
        };
        let last = self.len - 1;
        let moved = Arc::make_mut(&mut self.chunks[last / CHUNK])
            .pop()
            .expect("the last chunk holds the last slot");
        if self.chunks[last / CHUNK].is_empty() {
            self.chunks.pop();
        }
        let weight = self.weights.pop().expect("a weight per slot");
        if i != last {
            self.index.insert(moved.endpoint.addr, i);
            self.weights[i] = weight;
            *self.slot_mut(i) = moved;
        }
        self.len = last;
        self.changed = true;
    }

    /// Makes the writer's set the current snapshot, if it changed.
    pub(crate) fn publish(&mut self) {
        if !std::mem::take(&mut self.changed) {
            return;
        }
        let balancer = self.state.balancer.rebuild(&self.weights);
        self.state.metrics.endpoints.set(self.len as f64);
        let snapshot = Snapshot {
            chunks: self.chunks.clone(),
            len: self.len,
            balancer,
        };
        let table = &*self.table;
        self.state.publish(table, || table.publish(snapshot));
    }

    pub(crate) fn discovery_failed(&self, error: DiscoverError) {
        self.state.metrics.discovery_errors.increment(1);
        self.table.discovery_failed(error);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::balance::RoundRobin;
    use crate::channel::settings::ChannelPolicy;

    fn writer() -> TableWriter<u16> {
        let balancer: Arc<dyn crate::balance::Balancer> = Arc::new(RoundRobin::new());
        let table = Arc::new(Table::<u16>::new(&*balancer));
        let weak = Arc::downgrade(&table) as std::sync::Weak<dyn super::super::state::Endpoints>;
        let state = Arc::new(ChannelState::new(
            "t",
            ChannelPolicy::default(),
            false,
            None,
            balancer,
            weak,
        ));
        TableWriter::new(table, Box::new(|e: &Endpoint| e.addr.port()), state)
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn published(w: &TableWriter<u16>) -> BTreeSet<u16> {
        let s = w.table.snapshot();
        let ports: Vec<u16> = (0..s.len).map(|i| s.slot(i).service).collect();
        assert_eq!(ports.len(), s.slots().count());
        ports.into_iter().collect()
    }

    #[test]
    fn churn_across_chunks_keeps_the_set_and_the_slots() {
        crate::rng::seed_thread_rng(601);
        let mut w = writer();
        let n = 3 * CHUNK as u16 + 5;
        w.apply(Update::Reset(
            (1..=n).map(|p| Endpoint::new(addr(p))).collect(),
        ));
        w.publish();
        assert_eq!(published(&w), (1..=n).collect());
        let kept = w.table.snapshot().slot(w.index[&addr(7)]).clone();
        // Remove from the first chunk, the middle and the end; add some.
        for p in [1, 200, n] {
            w.apply(Update::Remove(addr(p)));
        }
        w.apply(Update::Insert(Endpoint::new(addr(9_000))));
        w.apply(Update::Insert(Endpoint::new(addr(7)).with_weight(3)));
        w.publish();
        let mut want: BTreeSet<u16> = (2..n).filter(|&p| p != 200).collect();
        want.insert(9_000);
        assert_eq!(published(&w), want);
        // The endpoint that stayed kept its slot, with the new weight.
        let now = w.table.snapshot();
        let slot = now.slot(w.index[&addr(7)]);
        assert!(Arc::ptr_eq(slot, &kept));
        assert_eq!(slot.load.weight(), 3);
        assert_eq!(w.weights[w.index[&addr(7)]], 3);
        // A reset to the same set publishes nothing new.
        let before = w.table.snapshot();
        w.apply(Update::Reset(
            want.iter()
                .map(|&p| Endpoint::new(addr(p)).with_weight(if p == 7 { 3 } else { 1 }))
                .collect(),
        ));
        w.publish();
        assert!(Arc::ptr_eq(&before, &w.table.snapshot()));
        // Removing everything empties every chunk.
        w.apply(Update::Reset(Vec::new()));
        w.publish();
        assert!(w.table.snapshot().is_empty() && w.chunks.is_empty());
    }

    #[test]
    fn an_unchanged_chunk_is_shared_with_the_last_snapshot() {
        let mut w = writer();
        let n = 2 * CHUNK as u16;
        w.apply(Update::Reset(
            (1..=n).map(|p| Endpoint::new(addr(p))).collect(),
        ));
        w.publish();
        let before = w.table.snapshot();
        w.apply(Update::Remove(addr(n)));
        w.publish();
        let after = w.table.snapshot();
        assert!(Arc::ptr_eq(&before.chunks[0], &after.chunks[0]));
        assert!(!Arc::ptr_eq(&before.chunks[1], &after.chunks[1]));
    }
}
