//! Following a key prefix: the list / watch / re-list state machine.
//!
//! [`PrefixFollower`] decides what the etcd stream does next and turns
//! etcd's answers into [`Update`]s. It does no I/O and reads no clock: the
//! async shell in the parent module performs each [`Action`], feeds the
//! result back, and passes the current time where a decision depends on it.
//!
//! The cycle:
//! 1. **List** the prefix; the answer's revision `R` and key/values become a
//!    [`Update::Reset`].
//! 2. **Watch** from `R + 1`, so no change between the list and the watch
//!    is missed, then **receive** events: a put is an [`Update::Insert`], a
//!    delete an [`Update::Remove`] of the address that key held.
//! 3. A failure (list, watch or a broken stream) yields an error, waits a
//!    jittered exponential backoff, and starts again at 1: the re-list's
//!    `Reset` brings in whatever changed while etcd was out of reach. The
//!    last good set stays in use meanwhile (errors change nothing).
//! 4. A watch cancelled for compaction (`compact_revision > 0`) re-lists at
//!    once, without backoff: the revision it wanted is gone, the data is not.
//!
//! Values are read with [`parse_value`]. A malformed value is reported as
//! [`Output::Malformed`] and otherwise ignored: the key keeps the last good
//! endpoint it held (if any), so a bad write never removes a good endpoint.
//! When several keys hold the same address, the endpoint stays while any of
//! them does, and the last of them in byte order gives its weight and
//! metadata; incremental updates follow the same rule, so they always agree
//! with what a re-list would yield.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::value::{ValueError, parse_value};
use crate::Endpoint;
use crate::discover::{DiscoverError, Update, later};

/// What the shell should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Read every key under the prefix (connecting first if needed).
    List,
    /// Open a watch on the prefix starting at this revision.
    Watch {
        /// The first revision the watch must report.
        start_revision: i64,
    },
    /// Wait for the next message on the open watch.
    Receive,
    /// Sleep until this instant, then call [`PrefixFollower::on_timer`].
    Wait {
        /// When the backoff ends.
        until: Instant,
    },
}

/// One change seen by a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change<'a> {
    /// The key now holds this value.
    Put {
        /// The key.
        key: &'a [u8],
        /// Its new value.
        value: &'a [u8],
    },
    /// The key was deleted (or its lease expired).
    Delete {
        /// The key.
        key: &'a [u8],
    },
}

/// Something the shell must pass on.
#[derive(Debug)]
pub(crate) enum Output {
    /// An update for the stream.
    Update(Update),
    /// A failure for the stream (the set is unchanged).
    Error(DiscoverError),
    /// A value that is not an endpoint: to be logged and counted.
    Malformed {
        /// The key, lossily decoded for the log.
        key: String,
        /// What is wrong with the value.
        error: ValueError,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    List,
    Watch { start_revision: i64 },
    Receive,
    Wait { until: Instant },
}

/// The state of one prefix follower: its phase and the endpoint each key
/// holds.
#[derive(Debug)]
pub(crate) struct PrefixFollower {
    phase: Phase,
    by_key: BTreeMap<Vec<u8>, Endpoint>,
    backoff: Backoff,
}

impl PrefixFollower {
    /// A follower that starts by listing.
    pub(crate) fn new(backoff: Backoff) -> Self {
        PrefixFollower {
            phase: Phase::List,
            by_key: BTreeMap::new(),
            backoff,
        }
    }

    /// What to do next.
    pub(crate) fn action(&self) -> Action {
        match self.phase {
            Phase::List => Action::List,
            Phase::Watch { start_revision } => Action::Watch { start_revision },
            Phase::Receive => Action::Receive,
            Phase::Wait { until } => Action::Wait { until },
        }
    }

    /// The list answered at `revision` with these key/value pairs.
    pub(crate) fn on_listed<'a>(
        &mut self,
        revision: i64,
        kvs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        out: &mut Vec<Output>,
    ) {
        let mut fresh = BTreeMap::new();
        for (key, value) in kvs {
            match parse_value(value) {
                Ok(endpoint) => {
                    fresh.insert(key.to_vec(), endpoint);
                }
                Err(error) => {
                    out.push(malformed(key, error));
                    if let Some(previous) = self.by_key.get(key) {
                        fresh.insert(key.to_vec(), previous.clone());
                    }
                }
            }
        }
        self.by_key = fresh;
        out.push(Output::Update(Update::Reset(self.endpoints())));
        self.phase = Phase::Watch {
            start_revision: revision.saturating_add(1),
        };
    }

    /// The watch was opened; its messages come next.
    pub(crate) fn on_watch_opened(&mut self) {
        self.phase = Phase::Receive;
    }

    /// etcd confirmed the watch: the connection works, so the backoff
    /// starts over.
    pub(crate) fn on_watch_created(&mut self) {
        self.backoff.reset();
    }

    /// The watch reported these changes, in order.
    pub(crate) fn on_changes<'a>(
        &mut self,
        changes: impl IntoIterator<Item = Change<'a>>,
        out: &mut Vec<Output>,
    ) {
        for change in changes {
            match change {
                Change::Put { key, value } => self.put(key, value, out),
                Change::Delete { key } => self.set_key(key, None, out),
            }
        }
    }

    /// etcd cancelled the watch. With `compact_revision > 0` the start
    /// revision was compacted away: list again now. Any other cancel is a
    /// failure.
    pub(crate) fn on_watch_canceled(
        &mut self,
        compact_revision: i64,
        reason: &str,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        if compact_revision > 0 {
            tracing::info!(
                compact_revision,
                "etcd watch fell behind a compaction; listing the prefix again"
            );
            self.phase = Phase::List;
        } else {
            let reason = if reason.is_empty() {
                "no reason given"
            } else {
                reason
            };
            self.on_failure(
                DiscoverError::new(format!("etcd cancelled the watch: {reason}")),
                now,
                out,
            );
        }
    }

    /// An RPC failed or the watch stream broke: report it and back off.
    /// Returns the delay chosen.
    pub(crate) fn on_failure(
        &mut self,
        error: DiscoverError,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> Duration {
        let delay = self.backoff.next_delay();
        tracing::warn!(error = %error, retry_in = ?delay, "etcd discovery failed");
        out.push(Output::Error(error));
        self.phase = Phase::Wait {
            until: later(now, delay),
        };
        delay
    }

    /// Time passed: a finished backoff leads to a re-list.
    pub(crate) fn on_timer(&mut self, now: Instant) {
        if let Phase::Wait { until } = self.phase
            && now >= until
        {
            self.phase = Phase::List;
        }
    }

    /// The current set: one endpoint per address (for an address held by
    /// several keys, the last key in byte order gives weight and metadata).
    pub(crate) fn endpoints(&self) -> Vec<Endpoint> {
        let mut by_addr = BTreeMap::new();
        for endpoint in self.by_key.values() {
            by_addr.insert(endpoint.addr, endpoint);
        }
        by_addr.into_values().cloned().collect()
    }

    fn put(&mut self, key: &[u8], value: &[u8], out: &mut Vec<Output>) {
        match parse_value(value) {
            Ok(endpoint) => self.set_key(key, Some(endpoint), out),
            Err(error) => out.push(malformed(key, error)),
        }
    }

    /// Sets (or, with `None`, deletes) what `key` holds, and reports the
    /// change of every address it touches: the address it held and the one
    /// it holds now. For each, the update turns the old view of that
    /// address into exactly what [`endpoints`](Self::endpoints) now says,
    /// so incremental updates and a re-list always agree.
    fn set_key(&mut self, key: &[u8], endpoint: Option<Endpoint>, out: &mut Vec<Output>) {
        let old_addr = self.by_key.get(key).map(|e| e.addr);
        let new_addr = endpoint.as_ref().map(|e| e.addr);
        // The new address first: a key that moves never leaves a gap.
        let mut touched: Vec<SocketAddr> = new_addr.into_iter().chain(old_addr).collect();
        touched.dedup();
        let before: Vec<Option<Endpoint>> =
            touched.iter().map(|&a| self.holder(a).cloned()).collect();
        match endpoint {
            Some(endpoint) => self.by_key.insert(key.to_vec(), endpoint),
            None => self.by_key.remove(key),
        };
        for (addr, before) in touched.into_iter().zip(before) {
            let after = self.holder(addr);
            if after != before.as_ref() {
                let update = match after {
                    Some(endpoint) => Update::Insert(endpoint.clone()),
                    None => Update::Remove(addr),
                };
                out.push(Output::Update(update));
            }
        }
    }

    /// The endpoint that represents `addr`: the last key in byte order that
    /// holds it (as in [`endpoints`](Self::endpoints)).
    fn holder(&self, addr: SocketAddr) -> Option<&Endpoint> {
        self.by_key.values().rev().find(|e| e.addr == addr)
    }
}

fn malformed(key: &[u8], error: ValueError) -> Output {
    Output::Malformed {
        key: String::from_utf8_lossy(key).into_owned(),
        error,
    }
}

#[cfg(test)]
mod tests;
