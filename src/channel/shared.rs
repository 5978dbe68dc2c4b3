//! What every endpoint set of one channel shares with its slots and its
//! settings, kept apart from the table so that the slots and the channel
//! state can hold it without importing the table.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use crate::balance::Ramps;

/// What every snapshot of one channel shares with the table, its slots
/// and its settings: the slow-start ramps, and the in-flight total that
/// bounded loads need (kept only when the keyed balancer bounds loads).
pub(crate) struct SetShared {
    pub(crate) ramps: Ramps,
    /// Attempts in flight on the set's endpoints, kept only when
    /// `counts_in_flight` (each slot then holds this struct to count).
    pub(crate) in_flight: AtomicU64,
    pub(crate) counts_in_flight: bool,
}

impl SetShared {
    /// Ramps timed from `epoch` (the epoch of every slot's load), and an
    /// in-flight total when `count_in_flight`.
    pub(crate) fn new(epoch: Instant, count_in_flight: bool) -> Self {
        SetShared {
            ramps: Ramps::new(epoch, None),
            in_flight: AtomicU64::new(0),
            counts_in_flight: count_in_flight,
        }
    }
}
