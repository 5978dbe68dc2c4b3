//! The registrar's decisions, free of I/O and clocks.
//!
//! [`LeaseSchedule`] says what to do next (grant a lease, put the key, renew
//! the lease, or wait) from what happened so far and the time passed in:
//! renew every TTL/3; on "lease not found" start over with a grant; after a
//! failure wait a jittered backoff, then renew the same lease while it may
//! still live (before its last known expiry) or else start over.

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
    /// Nothing to do before this instant.
    Wait { until: Instant },
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
}

impl LeaseSchedule {
    pub(super) fn new(backoff: Backoff) -> Self {
        LeaseSchedule {
            phase: Phase::Grant,
            ttl: Duration::ZERO,
            expires: None,
            backoff,
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
                    LeaseAction::KeepAlive { lease }
                } else {
                    LeaseAction::Wait {
                        until: next_keep_alive,
                    }
                }
            }
            Phase::Retry { until, lease } => {
                if now < until {
                    LeaseAction::Wait { until }
                } else {
                    match lease {
                        Some(lease) if self.is_registered(now) => LeaseAction::KeepAlive { lease },
                        _ => LeaseAction::Grant,
                    }
                }
            }
        }
    }

    /// Whether the key should be in etcd now.
    pub(super) fn is_registered(&self, now: Instant) -> bool {
        let lease_held = matches!(
            self.phase,
            Phase::Alive { .. } | Phase::Retry { lease: Some(_), .. }
        );
        lease_held && self.expires.is_some_and(|expires| now < expires)
    }

    pub(super) fn on_granted(&mut self, lease: i64, ttl: Duration) {
        self.ttl = ttl;
        self.expires = None;
        self.phase = Phase::Put { lease };
    }

    pub(super) fn on_put(&mut self, now: Instant) {
        if let Phase::Put { lease } = self.phase {
            self.backoff.reset();
            self.renewed(lease, self.ttl, now);
        }
    }

    /// A keep-alive answered: `remaining` is the lease's TTL now, zero when
    /// etcd no longer knows the lease.
    pub(super) fn on_kept_alive(&mut self, lease: i64, remaining: Duration, now: Instant) {
        if remaining.is_zero() {
            tracing::warn!(
                lease,
                "etcd lease lost; granting a new one and putting the key again"
            );
            self.expires = None;
            self.phase = Phase::Grant;
        } else {
            self.backoff.reset();
            self.renewed(lease, remaining, now);
        }
    }

    fn renewed(&mut self, lease: i64, remaining: Duration, now: Instant) {
        self.expires = Some(later(now, remaining));
        let interval = (self.ttl / 3).max(Duration::from_millis(100));
        self.phase = Phase::Alive {
            lease,
            next_keep_alive: later(now, interval),
        };
    }

    /// A call failed: wait a backoff, keeping the lease if it may still live.
    pub(super) fn on_failure(&mut self, now: Instant) -> Duration {
        let delay = self.backoff.next_delay();
        let lease = match self.phase {
            Phase::Alive { lease, .. }
            | Phase::Retry {
                lease: Some(lease), ..
            } => Some(lease),
            _ => None,
        };
        self.phase = Phase::Retry {
            until: later(now, delay),
            lease,
        };
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    const SEC: Duration = Duration::from_secs(1);

    fn schedule() -> LeaseSchedule {
        let backoff = Backoff::new(
            "t",
            Duration::from_millis(100),
            Duration::from_millis(800),
            Rng::seeded(11),
        )
        .unwrap();
        LeaseSchedule::new(backoff)
    }

    #[test]
    fn grant_put_then_keep_alive_every_third_of_the_ttl() {
        let t0 = Instant::now();
        let mut s = schedule();
        assert_eq!(s.action(t0), LeaseAction::Grant);
        s.on_granted(7, 9 * SEC);
        assert_eq!(s.action(t0), LeaseAction::Put { lease: 7 });
        assert!(!s.is_registered(t0));
        s.on_put(t0);
        assert!(s.is_registered(t0));
        assert_eq!(
            s.action(t0),
            LeaseAction::Wait {
                until: t0 + 3 * SEC
            }
        );
        assert_eq!(s.action(t0 + 3 * SEC), LeaseAction::KeepAlive { lease: 7 });
        s.on_kept_alive(7, 9 * SEC, t0 + 3 * SEC);
        assert_eq!(
            s.action(t0 + 3 * SEC),
            LeaseAction::Wait {
                until: t0 + 6 * SEC
            }
        );
        assert!(s.is_registered(t0 + 11 * SEC));
        assert!(!s.is_registered(t0 + 12 * SEC));
    }

    #[test]
    fn lost_lease_is_granted_and_put_again() {
        let t0 = Instant::now();
        let mut s = schedule();
        s.on_granted(7, 3 * SEC);
        s.on_put(t0);
        s.on_kept_alive(7, Duration::ZERO, t0 + SEC);
        assert!(!s.is_registered(t0 + SEC));
        assert_eq!(s.action(t0 + SEC), LeaseAction::Grant);
        s.on_granted(8, 3 * SEC);
        assert_eq!(s.action(t0 + SEC), LeaseAction::Put { lease: 8 });
    }

    #[test]
    fn keep_alive_failure_retries_the_same_lease_while_it_may_live() {
        let t0 = Instant::now();
        let mut s = schedule();
        s.on_granted(7, 3 * SEC);
        s.on_put(t0);
        let t1 = t0 + SEC;
        let delay = s.on_failure(t1);
        assert!(delay <= Duration::from_millis(100));
        assert_eq!(s.action(t1), LeaseAction::Wait { until: t1 + delay });
        assert!(s.is_registered(t1 + delay));
        assert_eq!(s.action(t1 + delay), LeaseAction::KeepAlive { lease: 7 });
    }

    #[test]
    fn keep_alive_failures_past_expiry_start_over_with_a_grant() {
        let t0 = Instant::now();
        let mut s = schedule();
        s.on_granted(7, 2 * SEC);
        s.on_put(t0);
        let mut now = t0 + SEC;
        // Failures every backoff until the lease has surely expired.
        while now < t0 + 3 * SEC {
            now += s.on_failure(now);
        }
        assert!(!s.is_registered(now));
        assert_eq!(s.action(now), LeaseAction::Grant);
    }

    #[test]
    fn grant_or_put_failure_backs_off_then_grants_again() {
        let t0 = Instant::now();
        let mut s = schedule();
        let d1 = s.on_failure(t0);
        assert_eq!(s.action(t0 + d1), LeaseAction::Grant);
        s.on_granted(9, 3 * SEC);
        let d2 = s.on_failure(t0 + d1);
        assert!(
            d2 >= Duration::from_millis(100),
            "second delay grows: {d2:?}"
        );
        assert_eq!(s.action(t0 + d1 + d2), LeaseAction::Grant);
        assert!(!s.is_registered(t0 + d1 + d2));
    }

    #[test]
    fn a_huge_backoff_waits_long_instead_of_retrying_at_once() {
        let t0 = Instant::now();
        let huge = Backoff::new("t", Duration::MAX, Duration::MAX, Rng::seeded(12)).unwrap();
        let mut s = LeaseSchedule::new(huge);
        s.on_failure(t0);
        let year = 365 * 24 * 3600 * SEC;
        assert!(
            matches!(s.action(t0), LeaseAction::Wait { until } if until > t0 + year),
            "{:?}",
            s.action(t0)
        );
    }
}
