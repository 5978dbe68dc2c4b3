//! The registrar's decisions, free of I/O and clocks.
//!
//! [`LeaseSchedule`] says what to do next (grant a lease, put the key, renew
//! the lease, watch the key, or wait) from what happened so far and the time
//! passed in: renew every TTL/3; on "lease not found" start over with a
//! grant; after a failure wait a jittered backoff, then renew the same lease
//! while it may still live (before its last known expiry) or else start over.
//!
//! Once the key is put, a watch on it reports changes made by others: a
//! delete, or a put of another value or under another lease, while the lease
//! lives is repaired by putting the key again under the same lease. Events
//! at or before the last revision seen (our own puts among them) are old
//! news. A second repair within a TTL of the previous one waits a backoff,
//! so two registrars fighting over one key (a duplicated instance id) put
//! about once a backoff, not as fast as etcd answers. A broken watch is
//! opened again after its own backoff, from the revision after the last
//! seen; if etcd compacted that history away, the key is put again, since
//! what happened to it is unknown.

use std::time::{Duration, Instant};

use crate::discover::etcd::Backoff;
use crate::discover::later;

/// What the registrar's task should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeaseAction {
    /// Ask etcd for a new lease.
    Grant,
    /// Put the key under this lease.
    Put { lease: i64 },
    /// Renew this lease.
    KeepAlive { lease: i64 },
    /// Open a watch on the key from this revision on.
    Watch { start_revision: i64 },
    /// Nothing to do before this instant, apart from reading the key's watch
    /// if one is open.
    Wait { until: Instant },
}

/// A change to the key that its watch reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyEvent {
    /// The key was deleted at `revision`.
    Deleted { revision: i64 },
    /// The key was put at `revision`; `ours` tells whether the value is the
    /// registrar's, `lease` is the lease it is attached to (0 for none).
    Put {
        revision: i64,
        ours: bool,
        lease: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Grant,
    Put {
        lease: i64,
    },
    Alive {
        lease: i64,
        next_keep_alive: Instant,
    },
    /// After a failure: wait, then renew `lease` if it may still live, else
    /// start over with a grant.
    Retry {
        until: Instant,
        lease: Option<i64>,
    },
}

/// The watch on the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyWatch {
    /// None open; open one (once the key was put) at `retry_at`, or at once.
    Closed { retry_at: Option<Instant> },
    /// Open since this instant.
    Open { since: Instant },
}

/// The registrar's decisions, free of I/O and clocks.
#[derive(Debug)]
pub(super) struct LeaseSchedule {
    pub(super) phase: Phase,
    /// The TTL etcd granted for the current lease.
    pub(super) ttl: Duration,
    /// When the current lease expires if not renewed (set once the key is
    /// put).
    expires: Option<Instant>,
    pub(super) backoff: Backoff,
    /// The key must be put again under the current lease once it is known
    /// alive: someone deleted or overwrote it.
    repair: bool,
    /// The last revision of the key known: our last put, or a later event.
    /// Zero until the first put (or when etcd's answer to it had no
    /// revision); the watch starts after it.
    seen: i64,
    watch: KeyWatch,
    watch_backoff: Backoff,
    /// When the key was last repaired, and the delays between repairs that
    /// follow each other within a TTL.
    last_repair: Option<Instant>,
    repair_backoff: Backoff,
}

impl LeaseSchedule {
    /// A schedule whose lease calls, watch and repairs each back off along
    /// `backoff`'s curve, independently.
    pub(super) fn new(backoff: Backoff) -> Self {
        LeaseSchedule {
            phase: Phase::Grant,
            ttl: Duration::ZERO,
            expires: None,
            watch_backoff: backoff.clone(),
            repair_backoff: backoff.clone(),
            backoff,
            repair: false,
            seen: 0,
            watch: KeyWatch::Closed { retry_at: None },
            last_repair: None,
        }
    }

    pub(super) fn action(&self, now: Instant) -> LeaseAction {
        match self.phase {
            Phase::Grant => LeaseAction::Grant,
            Phase::Put { lease } => LeaseAction::Put { lease },
            Phase::Alive {
                lease,
                next_keep_alive,
            } => {
                if now >= next_keep_alive {
                    return LeaseAction::KeepAlive { lease };
                }
                match self.watch {
                    KeyWatch::Closed { retry_at } => match retry_at {
                        Some(at) if now < at => LeaseAction::Wait {
                            until: at.min(next_keep_alive),
                        },
                        // Revision 0 (the put's answer had no header, which
                        // etcd always sends): watch from the current
                        // revision rather than never.
                        _ => LeaseAction::Watch {
                            start_revision: if self.seen > 0 {
                                self.seen.saturating_add(1)
                            } else {
                                0
                            },
                        },
                    },
                    _ => LeaseAction::Wait {
                        until: next_keep_alive,
                    },
                }
            }
            Phase::Retry { until, lease } => {
                if now < until {
                    LeaseAction::Wait { until }
                } else {
                    match lease {
                        Some(lease) if self.lease_may_live(now) => LeaseAction::KeepAlive { lease },
                        _ => LeaseAction::Grant,
                    }
                }
            }
        }
    }

    /// Whether the key should be in etcd now: put under a lease that has not
    /// expired, and not since deleted or overwritten by someone else.
    pub(super) fn is_registered(&self, now: Instant) -> bool {
        self.lease_may_live(now) && !self.repair
    }

    /// Whether the current lease, with the key put under it, may still live.
    fn lease_may_live(&self, now: Instant) -> bool {
        let lease_held = matches!(
            self.phase,
            Phase::Alive { .. } | Phase::Retry { lease: Some(_), .. }
        );
        lease_held && self.expires.is_some_and(|expires| now < expires)
    }

    /// The lease the key is (or is being) put under, once it was put.
    fn current_lease(&self) -> Option<i64> {
        match self.phase {
            Phase::Alive { lease, .. }
            | Phase::Retry {
                lease: Some(lease), ..
            } => Some(lease),
            Phase::Put { lease } if self.expires.is_some() => Some(lease),
            _ => None,
        }
    }

    pub(super) fn on_granted(&mut self, lease: i64, ttl: Duration) {
        self.ttl = ttl;
        self.expires = None;
        self.repair = false;
        self.phase = Phase::Put { lease };
    }

    /// The key was put at `revision`.
    pub(super) fn on_put(&mut self, revision: i64, now: Instant) {
        let Phase::Put { lease } = self.phase else {
            return;
        };
        self.backoff.reset();
        self.seen = self.seen.max(revision);
        if self.expires.is_some() {
            // A repair: the put did not renew the lease, so renew it now to
            // learn its expiry afresh.
            self.repair = false;
            self.phase = Phase::Alive {
                lease,
                next_keep_alive: now,
            };
        } else {
            self.renewed(lease, self.ttl, now);
        }
    }

    /// A keep-alive answered: `remaining` is the lease's TTL now, zero when
    /// etcd no longer knows the lease.
    pub(super) fn on_kept_alive(&mut self, lease: i64, remaining: Duration, now: Instant) {
        if remaining.is_zero() {
            self.on_lease_lost(lease);
        } else {
            self.backoff.reset();
            self.renewed(lease, remaining, now);
            if self.repair {
                self.phase = Phase::Put { lease };
            }
        }
    }

    /// etcd no longer knows `lease` (a keep-alive or a put said so): start
    /// over with a new one.
    pub(super) fn on_lease_lost(&mut self, lease: i64) {
        tracing::warn!(
            lease,
            "etcd lease lost; granting a new one and putting the key again"
        );
        self.expires = None;
        self.repair = false;
        self.phase = Phase::Grant;
    }

    fn renewed(&mut self, lease: i64, remaining: Duration, now: Instant) {
        self.expires = Some(later(now, remaining));
        let interval = (self.ttl / 3).max(Duration::from_millis(100));
        self.phase = Phase::Alive {
            lease,
            next_keep_alive: later(now, interval),
        };
    }

    /// A call failed: wait a backoff, keeping the lease if it may still live
    /// (a failed repair put is tried again after renewing the lease).
    pub(super) fn on_failure(&mut self, now: Instant) -> Duration {
        let delay = self.backoff.next_delay();
        let lease = self.current_lease();
        if matches!(self.phase, Phase::Put { .. }) && lease.is_some() {
            self.repair = true;
        }
        if lease.is_none() {
            self.repair = false;
        }
        self.phase = Phase::Retry {
            until: later(now, delay),
            lease,
        };
        delay
    }

    /// The watch on the key is open.
    pub(super) fn on_watch_opened(&mut self, now: Instant) {
        self.watch = KeyWatch::Open { since: now };
    }

    /// Opening the watch failed, or the open watch broke or ended: open it
    /// again after a backoff, which starts over if the watch had held for a
    /// TTL.
    pub(super) fn on_watch_failed(&mut self, now: Instant) -> Duration {
        if let KeyWatch::Open { since } = self.watch
            && now >= later(since, self.quiet())
        {
            self.watch_backoff.reset();
        }
        let delay = self.watch_backoff.next_delay();
        self.watch = KeyWatch::Closed {
            retry_at: Some(later(now, delay)),
        };
        delay
    }

    /// etcd compacted the history the watch started from: the key may have
    /// changed unseen, so put it again, and watch from that put on.
    pub(super) fn on_watch_compacted(&mut self, now: Instant) {
        self.watch = KeyWatch::Closed { retry_at: None };
        if self.current_lease().is_some() {
            tracing::warn!(
                "etcd compacted the registration key's watch history; putting the key again"
            );
            self.repair_now(now);
        }
    }

    /// The watch reported a change to the key.
    pub(super) fn on_key_event(&mut self, event: KeyEvent, now: Instant) {
        let (revision, foreign) = match event {
            KeyEvent::Deleted { revision } => (revision, true),
            KeyEvent::Put {
                revision,
                ours,
                lease,
            } => (revision, !ours || Some(lease) != self.current_lease()),
        };
        if revision <= self.seen {
            return;
        }
        self.seen = revision;
        if foreign && self.current_lease().is_some() {
            tracing::warn!(
                revision,
                "the registration key was deleted or overwritten; putting it back"
            );
            self.repair_now(now);
        }
    }

    /// Puts the key back under the current lease: at once, or after a
    /// backoff (renewing the lease first) when the previous repair was less
    /// than a TTL ago.
    fn repair_now(&mut self, now: Instant) {
        let recent = self
            .last_repair
            .is_some_and(|last| now < later(last, self.quiet()));
        if !recent {
            self.repair_backoff.reset();
        }
        self.last_repair = Some(now);
        match self.phase {
            Phase::Alive { lease, .. } if !recent => {
                self.repair = true;
                self.phase = Phase::Put { lease };
            }
            Phase::Alive { lease, .. } => {
                self.repair = true;
                let delay = self.repair_backoff.next_delay();
                tracing::warn!(retry_in = ?delay, "the registration key keeps changing; is another registrar using the same instance id?");
                self.phase = Phase::Retry {
                    until: later(now, delay),
                    lease: Some(lease),
                };
            }
            // A retry renews the lease, then puts.
            Phase::Retry { lease: Some(_), .. } => self.repair = true,
            // A put or a grant is coming anyway.
            _ => {}
        }
    }

    /// How long the watch must hold, or repairs stay apart, to count as
    /// calm again: the TTL, at least a second.
    fn quiet(&self) -> Duration {
        self.ttl.max(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests;
