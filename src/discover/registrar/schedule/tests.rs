//! The schedule's decisions over time values, no etcd and no clock.

use super::*;
use crate::rng::Rng;

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn schedule() -> LeaseSchedule {
    let backoff = Backoff::new("t", 100 * MS, 800 * MS, Rng::seeded(11)).unwrap();
    LeaseSchedule::new(backoff)
}

/// Lease 7 (TTL 9 s) put at revision 5 at `t0`, its watch open.
fn watched(t0: Instant) -> LeaseSchedule {
    let mut s = schedule();
    s.on_granted(7, 9 * SEC);
    s.on_put(5, t0);
    assert_eq!(s.action(t0), LeaseAction::Watch { start_revision: 6 });
    s.on_watch_opened(t0);
    s
}

fn deleted(revision: i64) -> KeyEvent {
    KeyEvent::Deleted { revision }
}

#[test]
fn grant_put_then_keep_alive_every_third_of_the_ttl() {
    let t0 = Instant::now();
    let mut s = schedule();
    assert_eq!(s.action(t0), LeaseAction::Grant);
    s.on_granted(7, 9 * SEC);
    assert_eq!(s.action(t0), LeaseAction::Put { lease: 7 });
    assert!(!s.is_registered(t0));
    s.on_put(5, t0);
    assert!(s.is_registered(t0));
    s.on_watch_opened(t0);
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
    s.on_put(5, t0);
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
    s.on_put(5, t0);
    let t1 = t0 + SEC;
    let delay = s.on_failure(t1);
    assert!(delay <= 100 * MS);
    assert_eq!(s.action(t1), LeaseAction::Wait { until: t1 + delay });
    assert!(s.is_registered(t1 + delay));
    assert_eq!(s.action(t1 + delay), LeaseAction::KeepAlive { lease: 7 });
}

#[test]
fn keep_alive_failures_past_expiry_start_over_with_a_grant() {
    let t0 = Instant::now();
    let mut s = schedule();
    s.on_granted(7, 2 * SEC);
    s.on_put(5, t0);
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
    assert!(d2 >= 100 * MS, "second delay grows: {d2:?}");
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

#[test]
fn the_key_is_watched_only_once_put() {
    let t0 = Instant::now();
    let mut s = schedule();
    s.on_key_event(deleted(3), t0);
    assert_eq!(s.action(t0), LeaseAction::Grant);
    s.on_granted(7, 9 * SEC);
    s.on_key_event(deleted(4), t0);
    assert_eq!(s.action(t0), LeaseAction::Put { lease: 7 });
    s.on_put(5, t0);
    assert_eq!(s.action(t0), LeaseAction::Watch { start_revision: 6 });
}

#[test]
fn a_deleted_key_is_put_back_under_the_same_lease_at_once() {
    let t0 = Instant::now();
    let mut s = watched(t0);
    let t1 = t0 + SEC;
    s.on_key_event(deleted(6), t1);
    assert!(!s.is_registered(t1));
    assert_eq!(s.action(t1), LeaseAction::Put { lease: 7 });
    s.on_put(7, t1);
    assert!(s.is_registered(t1));
    // The put did not renew the lease: renew it now to learn its expiry.
    assert_eq!(s.action(t1), LeaseAction::KeepAlive { lease: 7 });
    s.on_kept_alive(7, 9 * SEC, t1);
    assert_eq!(
        s.action(t1),
        LeaseAction::Wait {
            until: t1 + 3 * SEC
        }
    );
    // Our own put, seen by the watch, is old news.
    s.on_key_event(
        KeyEvent::Put {
            revision: 7,
            ours: true,
            lease: 7,
        },
        t1,
    );
    assert!(s.is_registered(t1));
    assert!(matches!(s.action(t1), LeaseAction::Wait { .. }));
}

#[test]
fn another_value_or_another_lease_is_put_back() {
    let t0 = Instant::now();
    for (ours, lease) in [(false, 7), (false, 0), (true, 0), (true, 99)] {
        let mut s = watched(t0);
        let event = KeyEvent::Put {
            revision: 6,
            ours,
            lease,
        };
        s.on_key_event(event, t0 + SEC);
        assert_eq!(
            s.action(t0 + SEC),
            LeaseAction::Put { lease: 7 },
            "{event:?}"
        );
    }
}

#[test]
fn our_value_under_our_lease_and_old_revisions_are_left_alone() {
    let t0 = Instant::now();
    let mut s = watched(t0);
    let events = [
        KeyEvent::Put {
            revision: 5,
            ours: false,
            lease: 0,
        },
        deleted(4),
        KeyEvent::Put {
            revision: 8,
            ours: true,
            lease: 7,
        },
        // Older than the last event seen, as a reopened watch replays it.
        deleted(8),
    ];
    for event in events {
        s.on_key_event(event, t0 + SEC);
        assert!(s.is_registered(t0 + SEC), "{event:?}");
        assert!(
            matches!(s.action(t0 + SEC), LeaseAction::Wait { .. }),
            "{event:?}"
        );
    }
}

#[test]
fn a_failed_repair_renews_the_lease_then_puts_again() {
    let t0 = Instant::now();
    let mut s = watched(t0);
    s.on_key_event(deleted(6), t0);
    let delay = s.on_failure(t0);
    assert!(!s.is_registered(t0 + delay));
    assert_eq!(s.action(t0 + delay), LeaseAction::KeepAlive { lease: 7 });
    s.on_kept_alive(7, 9 * SEC, t0 + delay);
    assert_eq!(s.action(t0 + delay), LeaseAction::Put { lease: 7 });
    // A put refused for a lease etcd lost starts over.
    s.on_lease_lost(7);
    assert_eq!(s.action(t0 + delay), LeaseAction::Grant);
    s.on_granted(8, 9 * SEC);
    s.on_put(9, t0 + delay);
    assert!(s.is_registered(t0 + delay));
}

#[test]
fn a_change_during_a_retry_is_repaired_after_the_renewal() {
    let t0 = Instant::now();
    let mut s = watched(t0);
    let delay = s.on_failure(t0 + SEC);
    s.on_key_event(deleted(6), t0 + SEC);
    let t1 = t0 + SEC + delay;
    assert!(!s.is_registered(t1));
    assert_eq!(s.action(t1), LeaseAction::KeepAlive { lease: 7 });
    s.on_kept_alive(7, 9 * SEC, t1);
    assert_eq!(s.action(t1), LeaseAction::Put { lease: 7 });
}

#[test]
fn changes_that_keep_coming_are_repaired_at_a_growing_interval() {
    let t0 = Instant::now();
    let mut s = watched(t0);
    let mut now = t0;
    let mut revision = 6;
    let mut waits = Vec::new();
    for _ in 0..6 {
        s.on_key_event(deleted(revision), now);
        if let LeaseAction::Wait { until } = s.action(now) {
            waits.push(until - now);
            now = until;
            assert_eq!(s.action(now), LeaseAction::KeepAlive { lease: 7 });
            s.on_kept_alive(7, 9 * SEC, now);
        }
        assert_eq!(s.action(now), LeaseAction::Put { lease: 7 });
        s.on_put(revision + 1, now);
        s.on_kept_alive(7, 9 * SEC, now);
        revision += 2;
    }
    // The first repair is at once, the next ones back off up to the cap.
    assert_eq!(waits.len(), 5, "{waits:?}");
    assert!(waits[0] <= 100 * MS && waits[4] >= 400 * MS, "{waits:?}");
    // After a calm TTL, a change is repaired at once again.
    now += 9 * SEC;
    s.on_kept_alive(7, 9 * SEC, now);
    s.on_key_event(deleted(revision), now);
    assert_eq!(s.action(now), LeaseAction::Put { lease: 7 });
}

#[test]
fn a_broken_watch_reopens_after_its_backoff_from_the_last_seen_revision() {
    let t0 = Instant::now();
    let mut s = watched(t0);
    s.on_key_event(deleted(9), t0);
    s.on_put(10, t0);
    s.on_kept_alive(7, 9 * SEC, t0);
    let d1 = s.on_watch_failed(t0);
    assert!(d1 <= 100 * MS);
    // The lease is untouched.
    assert!(s.is_registered(t0 + d1));
    assert_eq!(s.action(t0), LeaseAction::Wait { until: t0 + d1 });
    assert_eq!(s.action(t0 + d1), LeaseAction::Watch { start_revision: 11 });
    // Failing to open it grows the delay; the keep-alive still comes first.
    let d2 = s.on_watch_failed(t0 + d1);
    let d3 = s.on_watch_failed(t0 + d1 + d2);
    assert!(d3 >= 200 * MS, "{d2:?} {d3:?}");
    assert_eq!(s.action(t0 + 3 * SEC), LeaseAction::KeepAlive { lease: 7 });
    // A watch that held for a TTL starts its backoff over.
    s.on_watch_opened(t0 + SEC);
    assert!(s.on_watch_failed(t0 + 10 * SEC) <= 100 * MS);
}

#[test]
fn compacted_watch_history_puts_the_key_again_and_watches_from_that_put() {
    let t0 = Instant::now();
    let mut s = watched(t0);
    s.on_watch_compacted(t0 + SEC);
    assert_eq!(s.action(t0 + SEC), LeaseAction::Put { lease: 7 });
    s.on_put(40, t0 + SEC);
    s.on_kept_alive(7, 9 * SEC, t0 + SEC);
    assert_eq!(
        s.action(t0 + SEC),
        LeaseAction::Watch { start_revision: 41 }
    );
}

#[test]
fn a_put_answered_without_a_revision_still_gets_its_key_watched() {
    let t0 = Instant::now();
    let mut s = schedule();
    s.on_granted(7, 9 * SEC);
    // etcd's answer had no header: the revision is unknown, so the watch
    // starts at the current one.
    s.on_put(0, t0);
    assert_eq!(s.action(t0), LeaseAction::Watch { start_revision: 0 });
    s.on_watch_opened(t0);
    assert!(matches!(s.action(t0), LeaseAction::Wait { .. }));
    // Broken, it is opened again after its backoff, the same way.
    let wait = s.on_watch_failed(t0);
    assert!(matches!(s.action(t0), LeaseAction::Wait { .. }));
    assert_eq!(
        s.action(t0 + wait),
        LeaseAction::Watch { start_revision: 0 }
    );
}
