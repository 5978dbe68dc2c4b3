//! Tests of the prefix follower: list, watch, re-list and malformed values.

use super::*;
use crate::rng::Rng;

fn follower() -> PrefixFollower {
    let backoff = Backoff::new(
        "t",
        Duration::from_millis(100),
        Duration::from_secs(2),
        Rng::seeded(9),
    )
    .unwrap();
    PrefixFollower::new(backoff)
}

fn ep(port: u16) -> Endpoint {
    Endpoint::new(SocketAddr::from(([127, 0, 0, 1], port)))
}

fn updates(out: Vec<Output>) -> Vec<Update> {
    out.into_iter()
        .filter_map(|o| match o {
            Output::Update(u) => Some(u),
            _ => None,
        })
        .collect()
}

fn put<'a>(key: &'a str, value: &'a str) -> Change<'a> {
    Change::Put {
        key: key.as_bytes(),
        value: value.as_bytes(),
    }
}

fn delete(key: &str) -> Change<'_> {
    Change::Delete {
        key: key.as_bytes(),
    }
}

/// Lists `kvs` at `revision` and returns the outputs.
fn list(f: &mut PrefixFollower, revision: i64, kvs: &[(&str, &str)]) -> Vec<Output> {
    let mut out = Vec::new();
    f.on_listed(
        revision,
        kvs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        &mut out,
    );
    out
}

fn change(f: &mut PrefixFollower, changes: Vec<Change<'_>>) -> Vec<Update> {
    let mut out = Vec::new();
    f.on_changes(changes, &mut out);
    updates(out)
}

#[test]
fn list_resets_then_watches_from_next_revision() {
    let mut f = follower();
    assert_eq!(f.action(), Action::List);
    let out = list(
        &mut f,
        41,
        &[("/s/a", "127.0.0.1:1"), ("/s/b", "127.0.0.1:2")],
    );
    assert_eq!(updates(out), vec![Update::Reset(vec![ep(1), ep(2)])]);
    assert_eq!(f.action(), Action::Watch { start_revision: 42 });
    f.on_watch_opened();
    assert_eq!(f.action(), Action::Receive);
}

#[test]
fn put_inserts_and_delete_removes_the_address_the_key_held() {
    let mut f = follower();
    list(&mut f, 1, &[]);
    assert_eq!(
        change(&mut f, vec![put("/s/a", "127.0.0.1:1")]),
        vec![Update::Insert(ep(1))]
    );
    // The key moves to another address: insert the new, remove the old.
    assert_eq!(
        change(&mut f, vec![put("/s/a", "127.0.0.1:2")]),
        vec![Update::Insert(ep(2)), Update::Remove(ep(1).addr)]
    );
    // A delete carries no value: the address comes from the key map.
    assert_eq!(
        change(&mut f, vec![delete("/s/a")]),
        vec![Update::Remove(ep(2).addr)]
    );
    // Deleting an unknown key changes nothing.
    assert_eq!(change(&mut f, vec![delete("/s/zz")]), vec![]);
    assert!(f.endpoints().is_empty());
}

#[test]
fn identical_put_is_not_repeated_and_weight_change_is_an_insert() {
    let mut f = follower();
    list(&mut f, 1, &[("/s/a", "127.0.0.1:1")]);
    assert_eq!(change(&mut f, vec![put("/s/a", "127.0.0.1:1")]), vec![]);
    assert_eq!(
        change(
            &mut f,
            vec![put("/s/a", r#"{"addr":"127.0.0.1:1","weight":7}"#)]
        ),
        vec![Update::Insert(ep(1).with_weight(7))]
    );
}

#[test]
fn malformed_put_keeps_the_good_endpoint_and_is_reported() {
    let mut f = follower();
    list(&mut f, 1, &[("/s/a", "127.0.0.1:1")]);
    let mut out = Vec::new();
    f.on_changes(vec![put("/s/a", "garbage"), put("/s/b", "{")], &mut out);
    let keys: Vec<_> = out
        .iter()
        .map(|o| match o {
            Output::Malformed { key, .. } => key.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(keys, ["/s/a", "/s/b"]);
    assert_eq!(f.endpoints(), vec![ep(1)]);
    // The key still owns its last good address: deleting it removes it.
    assert_eq!(
        change(&mut f, vec![delete("/s/a")]),
        vec![Update::Remove(ep(1).addr)]
    );
}

#[test]
fn relist_keeps_last_good_endpoint_of_a_key_now_malformed() {
    let mut f = follower();
    list(
        &mut f,
        1,
        &[("/s/a", "127.0.0.1:1"), ("/s/b", "127.0.0.1:2")],
    );
    let out = list(&mut f, 9, &[("/s/a", "bad"), ("/s/c", "bad")]);
    let malformed = out
        .iter()
        .filter(|o| matches!(o, Output::Malformed { .. }))
        .count();
    assert_eq!(malformed, 2);
    // a keeps its old endpoint; b is gone; c never had a good one.
    assert_eq!(updates(out), vec![Update::Reset(vec![ep(1)])]);
}

#[test]
fn shared_address_stays_until_the_last_key_goes() {
    let mut f = follower();
    let heavy = r#"{"addr":"127.0.0.1:1","weight":9}"#;
    list(&mut f, 1, &[("/s/a", heavy), ("/s/b", "127.0.0.1:1")]);
    // The last key in byte order (b) speaks for the address.
    assert_eq!(f.endpoints(), vec![ep(1)]);
    // a changes, but b still speaks for the address: nothing to say.
    assert_eq!(change(&mut f, vec![put("/s/a", "127.0.0.1:1")]), vec![]);
    // b goes: a (now weight 1 too) keeps the address, unchanged.
    assert_eq!(change(&mut f, vec![delete("/s/b")]), vec![]);
    assert_eq!(
        change(&mut f, vec![put("/s/a", heavy)]),
        vec![Update::Insert(ep(1).with_weight(9))]
    );
    assert_eq!(
        change(&mut f, vec![delete("/s/a")]),
        vec![Update::Remove(ep(1).addr)]
    );
}

/// Random puts (good and malformed), deletes and re-lists over a few keys
/// and addresses: applying the outputs to a set, as a channel does,
/// always gives exactly what a re-list would.
#[test]
fn incremental_updates_always_agree_with_the_full_set() {
    let mut rng = Rng::seeded(42);
    let keys = ["/s/a", "/s/b", "/s/c", "/s/d"];
    let values = [
        "127.0.0.1:1",
        "127.0.0.1:2",
        r#"{"addr":"127.0.0.1:1","weight":5}"#,
        r#"{"addr":"127.0.0.1:3","metadata":{"z":"x"}}"#,
        "garbage",
    ];
    let mut f = follower();
    let mut applied: BTreeMap<SocketAddr, Endpoint> = BTreeMap::new();
    let mut etcd: BTreeMap<&str, &str> = BTreeMap::new();
    for step in 0..20_000 {
        let mut out = Vec::new();
        match rng.below(10) {
            0 => {
                let kvs: Vec<_> = etcd
                    .iter()
                    .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
                    .collect();
                f.on_listed(step, kvs, &mut out);
            }
            1..=3 => {
                let key = keys[rng.below(keys.len())];
                etcd.remove(key);
                f.on_changes(vec![delete(key)], &mut out);
            }
            _ => {
                let key = keys[rng.below(keys.len())];
                let value = values[rng.below(values.len())];
                etcd.insert(key, value);
                f.on_changes(vec![put(key, value)], &mut out);
            }
        }
        for update in updates(out) {
            match update {
                Update::Reset(set) => applied = set.into_iter().map(|e| (e.addr, e)).collect(),
                Update::Insert(e) => {
                    applied.insert(e.addr, e);
                }
                Update::Remove(a) => {
                    applied.remove(&a);
                }
            }
        }
        let applied: Vec<Endpoint> = applied.values().cloned().collect();
        assert_eq!(applied, f.endpoints(), "step {step}");
    }
}

#[test]
fn failure_reports_backs_off_then_relists() {
    let mut f = follower();
    list(&mut f, 5, &[("/s/a", "127.0.0.1:1")]);
    f.on_watch_opened();
    let t0 = Instant::now();
    let mut out = Vec::new();
    let delay = f.on_failure(DiscoverError::new("stream broke"), t0, &mut out);
    assert!(matches!(&out[..], [Output::Error(e)] if e.message() == "stream broke"));
    assert_eq!(f.action(), Action::Wait { until: t0 + delay });
    f.on_timer(t0 + delay / 2);
    assert_eq!(f.action(), Action::Wait { until: t0 + delay });
    f.on_timer(t0 + delay);
    assert_eq!(f.action(), Action::List);
    // The set is untouched by the failure.
    assert_eq!(f.endpoints(), vec![ep(1)]);
}

#[test]
fn consecutive_failures_grow_the_delay_until_a_watch_is_created() {
    let mut f = follower();
    let now = Instant::now();
    let mut out = Vec::new();
    let delays: Vec<_> = (0..5)
        .map(|_| f.on_failure(DiscoverError::new("down"), now, &mut out))
        .collect();
    // Ceilings 100, 200, 400, 800, 1600 ms with jitter in the upper half.
    assert!(delays[4] >= Duration::from_millis(800), "{delays:?}");
    f.on_watch_created();
    let d = f.on_failure(DiscoverError::new("down"), now, &mut out);
    assert!(d <= Duration::from_millis(100), "{d:?}");
}

#[test]
fn compaction_relists_at_once_other_cancels_back_off() {
    let mut f = follower();
    list(&mut f, 5, &[]);
    f.on_watch_opened();
    let now = Instant::now();
    let mut out = Vec::new();
    f.on_watch_canceled(17, "", now, &mut out);
    assert!(out.is_empty());
    assert_eq!(f.action(), Action::List);

    list(&mut f, 20, &[]);
    f.on_watch_opened();
    f.on_watch_canceled(0, "permission denied", now, &mut out);
    assert!(matches!(&out[..], [Output::Error(e)] if e.message().contains("permission denied")));
    assert!(matches!(f.action(), Action::Wait { .. }));
}
