//! The writer side of the endpoint table, owned by the discovery task.
//!
//! It keeps the slots in the table's chunked layout and changes them in
//! place, so an update costs what it changes, not the size of the set:
//!
//! - an insertion appends a slot to the last chunk;
//! - a removal moves the last slot into the hole (order is not kept; the
//!   channel's views sort by address);
//! - a weight change is written into the slot's load in place;
//! - a metadata change replaces the slot: the connector runs again (it may
//!   read the metadata, a TLS name or a zone, say) and the endpoint starts
//!   afresh, as a new one would (gRPC keys its subchannels on address and
//!   attributes alike);
//! - a `Reset` is compared with the current set, and only the difference
//!   is applied.
//!
//! A chunk still shared with the published snapshot is copied before its
//! first change ([`Arc::make_mut`]), and publishing shares all others. The
//! balancer is rebuilt from address and weight lists kept in step with the
//! slots, so a balancer that ignores them rebuilds in O(1). Updates that
//! arrive together are applied together and published once. The keyed
//! balancer, when there is one, is rebuilt off this task
//! ([`super::keyed`]), and its new table published when it is done.
//!
//! An endpoint added to a set that had endpoints starts its slow-start
//! ramp (a no-op while slow start is off).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::keyed::{Built, Keyed};
use super::slot::Slot;
use super::slot_ref::SlotRef;
use super::state::ChannelState;
use super::table::{CHUNK, Chunk, Snapshot, Table};
use crate::Endpoint;
use crate::balance::{EndpointSet, Load};
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
    /// Address and weight of each slot, by index, for balancer rebuilds.
    addrs: Vec<SocketAddr>,
    weights: Vec<u32>,
    /// The set changed since the last publish.
    changed: bool,
    connect: Connect<S>,
    state: Arc<ChannelState>,
    epoch: Instant,
    keyed: Option<Keyed>,
}

impl<S: Send + Sync + 'static> TableWriter<S> {
    pub(crate) fn new(
        table: Arc<Table<S>>,
        connect: Connect<S>,
        state: Arc<ChannelState>,
        keyed: Option<Keyed>,
    ) -> Self {
        TableWriter {
            table,
            chunks: Vec::new(),
            len: 0,
            index: HashMap::new(),
            addrs: Vec::new(),
            weights: Vec::new(),
            changed: false,
            connect,
            epoch: state.shared.ramps.epoch(),
            state,
            keyed,
        }
    }

    /// Applies one update (not yet visible to callers: see
    /// [`publish`](Self::publish)).
    pub(crate) fn apply(&mut self, update: Update) {
        let metrics = &self.state.metrics;
        match update {
            Update::Reset(set) => {
                metrics.resets.increment(1);
                // Where each address is listed last: an address listed
                // twice counts once, as its last entry says (earlier ones
                // would connect, or replace, for nothing).
                let last: HashMap<SocketAddr, usize> =
                    set.iter().enumerate().map(|(i, e)| (e.addr, i)).collect();
                let gone: Vec<SocketAddr> = self
                    .index
                    .keys()
                    .filter(|a| !last.contains_key(a))
                    .copied()
                    .collect();
                for addr in gone {
                    self.remove(addr);
                }
                for (i, endpoint) in set.into_iter().enumerate() {
                    if last[&endpoint.addr] == i {
                        self.insert(endpoint);
                    }
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

    fn slot_mut(&mut self, index: usize) -> &mut SlotRef<Slot<S>> {
        let chunk = Arc::make_mut(&mut self.chunks[index / CHUNK]);
        &mut chunk[index % CHUNK]
    }

    /// Adds an endpoint, or updates the weight of the one at its address
    /// in place (its other state is kept); one whose metadata changed is
    /// replaced.
    fn insert(&mut self, endpoint: Endpoint) {
        if let Some(&i) = self.index.get(&endpoint.addr) {
            let held = &self.chunks[i / CHUNK][i % CHUNK].endpoint;
            if held.metadata != endpoint.metadata {
                self.remove(endpoint.addr);
                return self.insert(endpoint);
            }
            if self.weights[i] != endpoint.weight {
                self.weights[i] = endpoint.weight;
                self.chunks[i / CHUNK][i % CHUNK]
                    .load
                    .set_weight(endpoint.weight);
                if let Some(k) = &mut self.keyed {
                    k.reweighted();
                }
                self.changed = true;
            }
            return;
        }
        let load = Load::new(endpoint.weight, self.epoch);
        // A newcomer to a set that had endpoints ramps up (the first set
        // does not: everyone is equally cold).
        if self.table.is_populated() {
            self.state.shared.ramps.start(&load, crate::clock::now());
        }
        let slot = SlotRef::new(Slot::new(
            endpoint.clone(),
            (self.connect)(&endpoint),
            load,
            self.state.clone(),
        ));
        let i = self.len;
        if i / CHUNK == self.chunks.len() {
            self.chunks.push(Arc::new(Vec::with_capacity(CHUNK)));
        }
        Arc::make_mut(&mut self.chunks[i / CHUNK]).push(slot);
        self.index.insert(endpoint.addr, i);
        self.addrs.push(endpoint.addr);
        self.weights.push(endpoint.weight);
        if let Some(k) = &mut self.keyed {
            k.inserted();
        }
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
        self.addrs.swap_remove(i);
        if i != last {
            self.index.insert(moved.endpoint.addr, i);
            self.weights[i] = weight;
            *self.slot_mut(i) = moved;
        }
        if let Some(k) = &mut self.keyed {
            k.removed(i);
        }
        self.len = last;
        self.changed = true;
    }

    /// Makes the writer's set the current snapshot, if it changed.
    pub(crate) fn publish(&mut self) {
        if !std::mem::take(&mut self.changed) {
            return;
        }
        self.state.metrics.endpoints.set(self.len as f64);
        self.publish_set();
    }

    /// Publishes the writer's set with its balancers, then starts a build
    /// of the keyed table if it is stale. (The ordinary balancer is rebuilt
    /// each time, also when only the keyed table is new: O(1) but for
    /// weighted ones, and the snapshot then owns it, with no reference
    /// count to follow on the pick path.)
    fn publish_set(&mut self) {
        let set = EndpointSet::new(&self.addrs, &self.weights);
        let balancer = self.state.balancer.rebuild_set(&set);
        let keyed = self
            .keyed
            .as_mut()
            .map(|k| k.view(&self.addrs, &self.weights));
        let snapshot = Arc::new(Snapshot {
            chunks: self.chunks.clone(),
            len: self.len,
            balancer,
            keyed,
            shared: self.state.shared.clone(),
        });
        let table = &*self.table;
        let published = snapshot.clone();
        self.state.publish(table, || table.publish(published));
        if let Some(k) = &mut self.keyed {
            k.build_if_stale(snapshot.len, move || {
                let members = snapshot.slots().map(|s| (s.endpoint.addr, s.load.weight()));
                members.collect()
            });
        }
    }

    /// Takes a keyed table built off this task and publishes it with the
    /// current set (unless a later table superseded it).
    pub(crate) fn keyed_built(&mut self, built: Built) {
        if self.keyed.as_mut().is_some_and(|k| k.install(built)) {
            self.publish_set();
        }
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
        writer_with(ChannelPolicy::default(), None).0
    }

    type Builds = tokio::sync::mpsc::UnboundedReceiver<Built>;

    /// A writer with these settings and keyed balancer; the receiver gets
    /// the keyed tables built off the writer.
    fn writer_with(
        policy: ChannelPolicy,
        hash: Option<crate::balance::ConsistentHash>,
    ) -> (TableWriter<u16>, Builds) {
        let balancer: Arc<dyn crate::balance::Balancer> = Arc::new(RoundRobin::new());
        let bounded = hash.as_ref().is_some_and(|h| h.bounded_factor().is_some());
        let shared = Arc::new(super::super::shared::SetShared::new(
            crate::clock::now(),
            bounded,
        ));
        let table = Arc::new(Table::<u16>::new(&*balancer, shared.clone()));
        let weak = Arc::downgrade(&table) as std::sync::Weak<dyn super::super::state::Endpoints>;
        let state = Arc::new(ChannelState::new(
            "t", policy, false, None, balancer, shared, weak,
        ));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let keyed = hash.map(|h| Keyed::new(h, tx));
        let connect = Box::new(|e: &Endpoint| e.addr.port());
        (TableWriter::new(table, connect, state, keyed), rx)
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
        assert!(SlotRef::ptr_eq(slot, &kept));
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
    fn a_metadata_change_replaces_the_endpoint_and_a_weight_change_does_not() {
        crate::rng::seed_thread_rng(602);
        let connected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut w = writer();
        let count = connected.clone();
        w.connect = Box::new(move |e: &Endpoint| {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            e.addr.port()
        });
        let zone = |z: &str| Endpoint::new(addr(7)).with_metadata("zone", z);
        w.apply(Update::Reset(vec![zone("a"), Endpoint::new(addr(8))]));
        w.publish();
        let first = w.table.snapshot().slot(w.index[&addr(7)]).clone();
        let connects = || connected.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(connects(), 2);
        // Same metadata, new weight: in place, no new connection.
        w.apply(Update::Insert(zone("a").with_weight(4)));
        w.publish();
        let slot = w.table.snapshot().slot(w.index[&addr(7)]).clone();
        assert!(SlotRef::ptr_eq(&slot, &first));
        assert_eq!((slot.load.weight(), connects()), (4, 2));
        // New metadata (in a reset too): a new slot, connected again, with
        // the new metadata and weight.
        w.apply(Update::Reset(vec![
            zone("b").with_weight(2),
            Endpoint::new(addr(8)),
        ]));
        w.publish();
        let slot = w.table.snapshot().slot(w.index[&addr(7)]).clone();
        assert!(!SlotRef::ptr_eq(&slot, &first));
        assert_eq!(slot.endpoint.metadata["zone"], "b");
        assert_eq!((slot.load.weight(), connects()), (2, 3));
        assert_eq!(published(&w), [7, 8].into_iter().collect());
        assert_eq!(
            (w.len, w.addrs.len(), w.weights[w.index[&addr(7)]]),
            (2, 2, 2)
        );
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

    /// The keyed table is built at once for the first set; a change is
    /// published at once through a remap of the old table, then again with
    /// the table built off the writer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn keyed_tables_are_rebuilt_off_the_writer_and_remapped_meanwhile() {
        let hash = crate::balance::ConsistentHash::maglev();
        let (mut w, mut builds) = writer_with(ChannelPolicy::default(), Some(hash));
        let n = 300u16;
        w.apply(Update::Reset(
            (1..=n).map(|p| Endpoint::new(addr(p))).collect(),
        ));
        w.publish();
        let first = w.table.snapshot();
        let fresh = format!("{:?}", first.keyed.as_ref().unwrap());
        assert!(fresh.contains("remapped: false"), "{fresh}");
        let port_of = |s: &Snapshot<u16>, key: u64| {
            let i = s.keyed.as_ref().unwrap().pick(key, s, &|_| true).unwrap();
            s.slot(i).service
        };
        w.apply(Update::Remove(addr(1)));
        w.apply(Update::Insert(Endpoint::new(addr(9_000))));
        w.publish();
        let during = w.table.snapshot();
        let view = format!("{:?}", during.keyed.as_ref().unwrap());
        assert!(view.contains("remapped: true"), "{view}");
        // Keys stay where they were unless their endpoint left.
        for key in 0..2_000 {
            let before = port_of(&first, key);
            if before != 1 {
                assert_eq!(port_of(&during, key), before, "key {key}");
            }
        }
        // The build ends; the writer publishes it (nothing else changed).
        let built = builds.recv().await.expect("a table built off the writer");
        w.keyed_built(built);
        let after = w.table.snapshot();
        let view = format!("{:?}", after.keyed.as_ref().unwrap());
        assert!(view.contains("remapped: false"), "{view}");
        assert!(!w.keyed.as_ref().unwrap().building());
        assert!(Arc::ptr_eq(&after.chunks[0], &during.chunks[0]));
        let reached: BTreeSet<u16> = (0..20_000).map(|k| port_of(&after, k)).collect();
        assert!(reached.contains(&9_000) && !reached.contains(&1));
        // Most of a large change is built at once.
        w.apply(Update::Reset(
            (1_000..1_000 + n).map(|p| Endpoint::new(addr(p))).collect(),
        ));
        w.publish();
        let view = format!("{:?}", w.table.snapshot().keyed.as_ref().unwrap());
        assert!(view.contains("remapped: false"), "{view}");
    }

    /// Endpoints added to a set that had endpoints ramp up; the first set
    /// does not, and nothing ramps with slow start off.
    #[test]
    fn newcomers_to_a_populated_set_start_a_ramp() {
        use crate::balance::SlowStartSettings;
        for on in [true, false] {
            let policy =
                ChannelPolicy::default().with_slow_start(on.then(SlowStartSettings::default));
            let (mut w, _) = writer_with(policy, None);
            w.apply(Update::Reset(
                (1..=3).map(|p| Endpoint::new(addr(p))).collect(),
            ));
            w.apply(Update::Insert(Endpoint::new(addr(4))));
            w.publish();
            w.apply(Update::Insert(Endpoint::new(addr(5))));
            w.publish();
            let s = w.table.snapshot();
            let ramping: Vec<u16> = s
                .slots()
                .filter(|slot| slot.load.ramp_end() > 0)
                .map(|slot| slot.service)
                .collect();
            assert_eq!(ramping, if on { vec![5] } else { vec![] });
        }
    }
}
