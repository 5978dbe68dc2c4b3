//! The endpoint table: an immutable snapshot swapped atomically (RCU).
//!
//! Readers (every call) load the current [`Snapshot`] without a lock and pick
//! from it with `&self`. One writer, the channel's discovery task, applies
//! [`Update`]s to its own map of [`Slot`]s and publishes a new snapshot. A slot
//! is shared between snapshots by `Arc`, so an endpoint that stays across an
//! update keeps its service, load and counters; a removed endpoint simply is
//! not in the next snapshot, and calls already holding it finish normally.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::policy::Policies;
use crate::balance::{Balancer, Load, LoadSet};
use crate::classify::Outcome;
use crate::discover::{DiscoverError, Update};
use crate::metrics::{ChannelMetrics, EndpointMetrics};
use crate::policy::breaker::CircuitBreaker;
use crate::{Endpoint, Error};

/// Everything the channel keeps about one endpoint.
pub(crate) struct Slot<S> {
    pub(crate) endpoint: Endpoint,
    pub(crate) service: S,
    pub(crate) load: Load,
    pub(crate) failures: AtomicU64,
    /// Set while the endpoint must get no picks (breaker open).
    pub(crate) ejected: AtomicBool,
    /// Whether the last attempt ended in an error from the service itself
    /// (a failed connection, not a response classified as failure).
    pub(crate) erroring: AtomicBool,
    /// The endpoint's circuit breaker, when the channel has breakers.
    pub(crate) breaker: Option<CircuitBreaker>,
    pub(crate) metrics: EndpointMetrics,
}

impl<S> Slot<S> {
    /// Marks an attempt as started; the guard marks it finished when dropped
    /// (also when the call is cancelled).
    pub(crate) fn begin(&self) -> InFlight<'_, S> {
        self.load.start();
        self.metrics.in_flight.increment(1.0);
        InFlight { slot: self }
    }

    /// Records a finished attempt's outcome and latency.
    pub(crate) fn record(&self, outcome: Outcome, rtt: Duration) {
        if !outcome.is_success() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.metrics.requests.record(outcome);
        self.metrics.duration.record(rtt.as_secs_f64());
    }
}

/// An attempt in flight on a slot.
pub(crate) struct InFlight<'a, S> {
    slot: &'a Slot<S>,
}

impl<S> Drop for InFlight<'_, S> {
    fn drop(&mut self) {
        self.slot.load.end();
        self.slot.metrics.in_flight.decrement(1.0);
    }
}

/// One published endpoint set with its balancer.
pub(crate) struct Snapshot<S> {
    pub(crate) slots: Vec<Arc<Slot<S>>>,
    pub(crate) balancer: Box<dyn Balancer>,
}

impl<S> LoadSet for Snapshot<S> {
    fn len(&self) -> usize {
        self.slots.len()
    }
    fn load(&self, index: usize) -> &Load {
        &self.slots[index].load
    }
}

/// The shared, read-mostly side of the table.
pub(crate) struct Table<S> {
    current: ArcSwap<Snapshot<S>>,
    published: Notify,
    /// The last discovery error, kept to explain an empty table to callers.
    last_error: Mutex<Option<DiscoverError>>,
    ever_populated: AtomicBool,
}

impl<S> Table<S> {
    pub(crate) fn new(balancer: &dyn Balancer) -> Self {
        Table {
            current: ArcSwap::from_pointee(Snapshot {
                slots: Vec::new(),
                balancer: balancer.rebuild(&[]),
            }),
            published: Notify::new(),
            last_error: Mutex::new(None),
            ever_populated: AtomicBool::new(false),
        }
    }

    /// A short-lived view of the current snapshot, for a pick: cheaper than
    /// [`snapshot`](Self::snapshot), but must not be held across an await.
    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<Snapshot<S>>> {
        self.current.load()
    }

    /// The current snapshot.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot<S>> {
        self.current.load_full()
    }

    /// The current snapshot once it has an endpoint, waiting up to `wait`.
    /// `on_empty` runs once if the table is empty on arrival (to ask
    /// discovery to look again).
    pub(crate) async fn populated(
        &self,
        wait: Duration,
        on_empty: impl FnOnce(),
    ) -> Result<Arc<Snapshot<S>>, Error> {
        let snapshot = self.snapshot();
        if !snapshot.slots.is_empty() {
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
            if !snapshot.slots.is_empty() {
                return Ok(snapshot);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(self.empty_error());
            }
        }
    }

    /// Why the table is empty: the discovery error if no endpoint was ever
    /// known and discovery failed, else [`Error::NoEndpoints`].
    fn empty_error(&self) -> Error {
        if !self.ever_populated.load(Ordering::Relaxed)
            && let Some(e) = self.last_error.lock().clone()
        {
            return Error::Discovery(e);
        }
        Error::NoEndpoints
    }

    pub(crate) fn discovery_failed(&self, error: DiscoverError) {
        *self.last_error.lock() = Some(error);
    }

    fn publish(&self, snapshot: Snapshot<S>) {
        if !snapshot.slots.is_empty() {
            self.ever_populated.store(true, Ordering::Relaxed);
        }
        self.current.store(Arc::new(snapshot));
        self.published.notify_waiters();
    }
}

/// The writer side: owned by the discovery task.
pub(crate) struct TableWriter<S> {
    table: Arc<Table<S>>,
    slots: HashMap<SocketAddr, Arc<Slot<S>>>,
    connect: Box<dyn Fn(&Endpoint) -> S + Send + Sync>,
    balancer: Arc<dyn Balancer>,
    metrics: ChannelMetrics,
    epoch: Instant,
    policies: Arc<Policies>,
}

impl<S> TableWriter<S> {
    pub(crate) fn new(
        table: Arc<Table<S>>,
        connect: Box<dyn Fn(&Endpoint) -> S + Send + Sync>,
        balancer: Arc<dyn Balancer>,
        metrics: ChannelMetrics,
        policies: Arc<Policies>,
    ) -> Self {
        TableWriter {
            table,
            slots: HashMap::new(),
            connect,
            balancer,
            metrics,
            epoch: crate::channel::now(),
            policies,
        }
    }

    /// Applies one update to the writer's map (not yet visible to callers).
    pub(crate) fn apply(&mut self, update: Update) {
        match update {
            Update::Reset(set) => {
                self.metrics.resets.increment(1);
                let mut next = HashMap::with_capacity(set.len());
                for endpoint in set {
                    let slot = self.keep_or_make(endpoint);
                    next.insert(slot.endpoint.addr, slot);
                }
                self.slots = next;
            }
            Update::Insert(endpoint) => {
                self.metrics.inserts.increment(1);
                let slot = self.keep_or_make(endpoint);
                self.slots.insert(slot.endpoint.addr, slot);
            }
            Update::Remove(addr) => {
                self.metrics.removes.increment(1);
                self.slots.remove(&addr);
            }
        }
    }

    /// The existing slot for this address (weight updated in place), or a
    /// new one with a freshly connected service.
    fn keep_or_make(&mut self, endpoint: Endpoint) -> Arc<Slot<S>> {
        if let Some(slot) = self.slots.get(&endpoint.addr) {
            slot.load.set_weight(endpoint.weight);
            return slot.clone();
        }
        Arc::new(Slot {
            service: (self.connect)(&endpoint),
            load: Load::new(endpoint.weight, self.epoch),
            failures: AtomicU64::new(0),
            ejected: AtomicBool::new(false),
            erroring: AtomicBool::new(false),
            breaker: self.policies.make_breaker(endpoint.addr),
            metrics: self.metrics.endpoint(endpoint.addr),
            endpoint,
        })
    }

    /// Makes the writer's map the current snapshot.
    pub(crate) fn publish(&self) {
        let mut slots: Vec<Arc<Slot<S>>> = self.slots.values().cloned().collect();
        slots.sort_by_key(|s| s.endpoint.addr);
        let weights: Vec<u32> = slots.iter().map(|s| s.load.weight()).collect();
        let balancer = self.balancer.rebuild(&weights);
        self.metrics.endpoints.set(slots.len() as f64);
        self.table.publish(Snapshot { slots, balancer });
        self.policies.refresh_ejections(&self.table);
    }

    pub(crate) fn discovery_failed(&self, error: DiscoverError) {
        self.metrics.discovery_errors.increment(1);
        self.table.discovery_failed(error);
    }
}
