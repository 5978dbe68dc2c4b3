//! The endpoint table: an immutable snapshot swapped atomically (RCU).
//!
//! Readers (every call) load the current [`Snapshot`] without a lock and pick
//! from it with `&self`. One writer, the channel's discovery task
//! ([`super::writer::TableWriter`]), applies updates and publishes a new
//! snapshot. A slot is shared between snapshots by `Arc`, so an endpoint
//! that stays across an update keeps its service, load and counters; a
//! removed endpoint simply is not in the next snapshot, and calls already
//! holding it finish normally.
//!
//! The slots are kept in chunks of [`CHUNK`], each behind its own `Arc`,
//! so a new snapshot shares every chunk that did not change: publishing a
//! change costs a copy of one or two chunks plus one pointer per chunk,
//! not one reference count per endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::ejection::{Health, Plan};
use super::shared::SetShared;
use super::slot::Slot;
use super::slot_ref::SlotRef;
use super::state::Endpoints;
use crate::balance::{Balancer, ConsistentHash, EndpointSet, Load, LoadSet};
use crate::discover::DiscoverError;
use crate::error::Error;
use crate::policy::breaker::CircuitBreaker;
use crate::policy::limit::Limiter;

/// Slots per chunk (a power of two).
pub(crate) const CHUNK: usize = 128;
const SHIFT: u32 = CHUNK.trailing_zeros();

/// Up to [`CHUNK`] slots; every chunk of a snapshot but the last is full.
pub(crate) type Chunk<S> = Vec<SlotRef<Slot<S>>>;

/// One published endpoint set with its balancers.
pub(crate) struct Snapshot<S> {
    pub(crate) chunks: Vec<Arc<Chunk<S>>>,
    pub(crate) len: usize,
    /// The ordinary balancer.
    pub(crate) balancer: Box<dyn Balancer>,
    /// The keyed balancer, for requests with a hash key, when the channel
    /// has one.
    pub(crate) keyed: Option<ConsistentHash>,
    pub(crate) shared: Arc<SetShared>,
}

impl<S> Snapshot<S> {
    /// The slot at `index` (`index < len`).
    #[inline]
    pub(crate) fn slot(&self, index: usize) -> &SlotRef<Slot<S>> {
        &self.chunks[index >> SHIFT][index & (CHUNK - 1)]
    }

    /// Every slot, in index order.
    pub(crate) fn slots(&self) -> impl Iterator<Item = &SlotRef<Slot<S>>> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The balancer for a request with hash key `key`: the keyed one when
    /// the request has a key and the channel a keyed balancer, else the
    /// ordinary one.
    #[inline]
    pub(crate) fn balancer_for(&self, key: Option<u64>) -> &dyn Balancer {
        match (key, &self.keyed) {
            (Some(_), Some(keyed)) => keyed,
            _ => &*self.balancer,
        }
    }
}

impl<S> LoadSet for Snapshot<S> {
    #[inline]
    fn len(&self) -> usize {
        self.len
    }
    #[inline]
    fn load(&self, index: usize) -> &Load {
        &self.slot(index).load
    }
    #[inline]
    fn in_flight(&self) -> Option<u64> {
        let shared = &self.shared;
        shared
            .counts_in_flight
            .then(|| shared.in_flight.load(Ordering::Relaxed))
    }
}

/// The shared, read-mostly side of the table.
pub(crate) struct Table<S> {
    current: ArcSwap<Snapshot<S>>,
    published: Notify,
    /// The last discovery error, kept to explain an empty table to callers.
    last_error: Mutex<Option<DiscoverError>>,
    ever_populated: AtomicBool,
    /// The current set has an endpoint (a cheaper question than loading
    /// the snapshot).
    populated: AtomicBool,
    shared: Arc<SetShared>,
}

impl<S> Table<S> {
    pub(crate) fn new(balancer: &dyn Balancer, shared: Arc<SetShared>) -> Self {
        Table {
            current: ArcSwap::from_pointee(Snapshot {
                chunks: Vec::new(),
                len: 0,
                balancer: balancer.rebuild_set(&EndpointSet::new(&[], &[])),
                keyed: None,
                shared: shared.clone(),
            }),
            shared,
            published: Notify::new(),
            last_error: Mutex::new(None),
            ever_populated: AtomicBool::new(false),
            populated: AtomicBool::new(false),
        }
    }

    /// A short-lived view of the current snapshot, for a pick: cheaper than
    /// [`snapshot`](Self::snapshot), but must not be held across an await.
    #[inline]
    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<Snapshot<S>>> {
        self.current.load()
    }

    /// The current snapshot.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot<S>> {
        self.current.load_full()
    }

    /// The current snapshot once it has an endpoint, waiting up to `wait`.
    /// `on_empty` runs once if the table is empty on arrival (to ask
    /// discovery to look again); `channel` names the channel in the error.
    pub(crate) async fn populated(
        &self,
        wait: Duration,
        channel: &Arc<str>,
        on_empty: impl FnOnce(),
    ) -> Result<Arc<Snapshot<S>>, Error> {
        let snapshot = self.snapshot();
        if !snapshot.is_empty() {
            return Ok(snapshot);
        }
        on_empty();
        // Saturating: an initial wait of Duration::MAX means "wait forever".
        let deadline =
            tokio::time::Instant::from_std(crate::clock::later(crate::clock::now(), wait));
        loop {
            let notified = self.published.notified();
            tokio::pin!(notified);
            // Register before checking, so a publish in between is not missed.
            notified.as_mut().enable();
            let snapshot = self.snapshot();
            if !snapshot.is_empty() {
                return Ok(snapshot);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(self.empty_error(channel));
            }
        }
    }

    /// Why no endpoint could be used: the discovery error if no endpoint
    /// was ever known and discovery failed, else [`Error::NoEndpoints`]
    /// with the last discovery error, if any.
    pub(crate) fn empty_error(&self, channel: &Arc<str>) -> Error {
        let last = self.last_error.lock().clone();
        match last {
            Some(e) if !self.ever_populated.load(Ordering::Relaxed) => Error::Discovery(e),
            last => Error::NoEndpoints {
                channel: channel.clone(),
                last_discovery_error: last,
            },
        }
    }

    pub(crate) fn discovery_failed(&self, error: DiscoverError) {
        *self.last_error.lock() = Some(error);
    }

    /// True when the current set has an endpoint.
    #[inline]
    pub(crate) fn is_populated(&self) -> bool {
        self.populated.load(Ordering::Relaxed)
    }

    pub(crate) fn publish(&self, snapshot: Arc<Snapshot<S>>) {
        let populated = !snapshot.is_empty();
        if populated {
            self.ever_populated.store(true, Ordering::Relaxed);
        }
        self.current.store(snapshot);
        self.populated.store(populated, Ordering::Relaxed);
        self.published.notify_waiters();
    }
}

impl<S: Send + Sync + 'static> Endpoints for Table<S> {
    fn each_breaker(&self, f: &mut dyn FnMut(std::net::SocketAddr, &CircuitBreaker)) {
        for slot in self.snapshot().slots() {
            if let Some(b) = &slot.breaker {
                f(slot.endpoint.addr, b);
            }
        }
    }

    fn each_limiter(&self, f: &mut dyn FnMut(std::net::SocketAddr, &Arc<Limiter>)) {
        for slot in self.snapshot().slots() {
            if let Some(l) = &slot.limiter {
                f(slot.endpoint.addr, l);
            }
        }
    }

    fn health(&self, breakers: bool) -> Vec<Health> {
        self.current()
            .slots()
            .map(|s| Health {
                unhealthy: breakers && s.breaker.as_ref().is_some_and(|b| !b.state().admits_all()),
                ejected: s.ejected.load(Ordering::Relaxed),
            })
            .collect()
    }

    fn all_erroring(&self) -> bool {
        self.current()
            .slots()
            .all(|s| s.erroring.load(Ordering::Relaxed))
    }

    fn apply(&self, plan: &Plan) {
        let current = self.current();
        let mut now = None;
        for (slot, &ejected) in current.slots().zip(&plan.ejected) {
            let was = slot.ejected.load(Ordering::Relaxed);
            if was != ejected {
                slot.ejected.store(ejected, Ordering::Relaxed);
                if was {
                    // Back from ejection: its slow-start ramp starts again.
                    let now = *now.get_or_insert_with(crate::clock::now);
                    self.shared.ramps.start(&slot.load, now);
                }
            }
        }
    }
}
