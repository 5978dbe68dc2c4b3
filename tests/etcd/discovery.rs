//! Discovery: puts and deletes, malformed values, restarts and compaction.

use super::*;

#[test]
fn put_makes_an_endpoint_appear_and_delete_removes_it() {
    http::seeded_runtime(4010).block_on(async {
        let procs = EtcdProcs::single().await;
        let mut kv = procs.client().await;
        kv.put("/svc/a/x", "127.0.0.1:1001", None).await.unwrap();
        let f = follow(discovery(procs.endpoints(), "/svc/a/", 1).build().unwrap());
        f.wait("the listed key", SOON, |s| s.addrs() == set_of(&[1001]))
            .await;

        let json = r#"{"addr": "127.0.0.1:1002", "weight": 5, "metadata": {"zone": "b"}}"#;
        kv.put("/svc/a/y", json, None).await.unwrap();
        let expected = Endpoint::new(addr(1002))
            .with_weight(5)
            .with_metadata("zone", "b");
        f.wait("the JSON endpoint", SOON, |s| {
            s.set.get(&addr(1002)) == Some(&expected)
        })
        .await;

        // Outside the prefix: never seen (the delete below comes after it).
        kv.put("/svc/other/z", "127.0.0.1:1003", None)
            .await
            .unwrap();
        kv.delete("/svc/a/x", None).await.unwrap();
        f.wait("the delete", SOON, |s| s.addrs() == set_of(&[1002]))
            .await;
        let seen = f.seen.lock();
        assert_eq!((seen.resets, seen.errors), (1, 0), "{seen:?}");
    })
}

/// Sum of the malformed-value counter over snapshots (a snapshot drains it).
fn malformed_count(snapshotter: &metrics_util::debugging::Snapshotter, total: &mut u64) -> u64 {
    use metrics_util::debugging::DebugValue;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if key.key().name() == MALFORMED_VALUES_METRIC
            && let DebugValue::Counter(n) = value
        {
            *total += n;
        }
    }
    *total
}

#[test]
fn malformed_values_are_skipped_and_counted_while_good_endpoints_stay() {
    http::seeded_runtime(4020).block_on(async {
        let procs = EtcdProcs::single().await;
        let mut kv = procs.client().await;
        kv.put("/svc/m/a", "127.0.0.1:2001", None).await.unwrap();
        kv.put("/svc/m/bad-at-start", "localhost:80", None)
            .await
            .unwrap();

        // The counter handle is registered once, at build: inside the local
        // recorder's scope it binds to that recorder.
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let etcd = metrics::with_local_recorder(&recorder, || {
            discovery(procs.endpoints(), "/svc/m/", 2).build().unwrap()
        });
        let f = follow(etcd);
        let mut count = 0;
        f.wait("the good listed key", SOON, |s| {
            s.addrs() == set_of(&[2001])
        })
        .await;
        assert_eq!(malformed_count(&snapshotter, &mut count), 1);

        kv.put("/svc/m/b", "127.0.0.1:2002", None).await.unwrap();
        kv.put("/svc/m/c", "{\"addr\": 12}", None).await.unwrap();
        // A good key turning malformed keeps its last good endpoint.
        kv.put("/svc/m/a", [0xff, 0xfe], None).await.unwrap();
        kv.put("/svc/m/d", "127.0.0.1:2004", None).await.unwrap();
        f.wait("the last good put", SOON, |s| {
            s.set.contains_key(&addr(2004))
        })
        .await;
        assert_eq!(f.addrs(), set_of(&[2001, 2002, 2004]));
        assert_eq!(malformed_count(&snapshotter, &mut count), 3);
        assert_eq!(f.seen.lock().errors, 0);
    })
}

#[test]
fn etcd_restart_mid_watch_resumes_and_keeps_the_set_meanwhile() {
    http::seeded_runtime(4050).block_on(async {
        let mut procs = EtcdProcs::single().await;
        let mut kv = procs.client().await;
        kv.put("/svc/x/a", "127.0.0.1:5001", None).await.unwrap();
        kv.put("/svc/x/b", "127.0.0.1:5002", None).await.unwrap();
        let f = follow(discovery(procs.endpoints(), "/svc/x/", 4).build().unwrap());
        f.wait("the listed keys", SOON, |s| {
            s.addrs() == set_of(&[5001, 5002])
        })
        .await;

        procs.kill(0);
        f.wait("the stream to report the outage", SOON, |s| s.errors > 0)
            .await;
        assert_eq!(
            f.addrs(),
            set_of(&[5001, 5002]),
            "the last good set must stay"
        );

        procs.restart(0).await;
        let mut kv = procs.client().await;
        kv.put("/svc/x/c", "127.0.0.1:5003", None).await.unwrap();
        kv.delete("/svc/x/a", None).await.unwrap();
        f.wait("changes after the restart", SOON, |s| {
            s.addrs() == set_of(&[5002, 5003])
        })
        .await;
        assert!(f.seen.lock().resets >= 2, "no re-list after the restart");
    })
}

#[test]
fn watch_at_a_compacted_revision_relists_instead_of_sticking() {
    http::seeded_runtime(4060).block_on(async {
        let procs = EtcdProcs::single().await;
        let mut kv = procs.client().await;
        kv.put("/svc/c/a", "127.0.0.1:6001", None).await.unwrap();
        // Polled by hand: the stream works only while polled, so the watch is
        // opened (from the listed revision + 1) only at the second poll.
        let mut etcd = discovery(procs.endpoints(), "/svc/c/", 5).build().unwrap();
        let first = tokio::time::timeout(SOON, etcd.next()).await.unwrap();
        assert_eq!(
            first.unwrap().unwrap(),
            Update::Reset(vec![Endpoint::new(addr(6001))])
        );

        kv.put("/svc/c/b", "127.0.0.1:6002", None).await.unwrap();
        kv.delete("/svc/c/a", None).await.unwrap();
        let put = kv.put("/svc/c/c", "127.0.0.1:6003", None).await.unwrap();
        let revision = put.header().unwrap().revision();
        kv.compact(revision, None).await.unwrap();

        // The watch wants a revision that is gone: etcd cancels it with the
        // compact revision, and the stream lists again.
        let next = tokio::time::timeout(SOON, etcd.next()).await.unwrap();
        assert_eq!(
            next.unwrap().unwrap(),
            Update::Reset(vec![Endpoint::new(addr(6002)), Endpoint::new(addr(6003))])
        );
        // And the new watch works.
        kv.put("/svc/c/d", "127.0.0.1:6004", None).await.unwrap();
        let next = tokio::time::timeout(SOON, etcd.next()).await.unwrap();
        assert_eq!(
            next.unwrap().unwrap(),
            Update::Insert(Endpoint::new(addr(6004)))
        );
    })
}

#[test]
fn changes_and_compaction_while_our_member_is_down_are_seen_after_restart() {
    http::seeded_runtime(4070).block_on(async {
        let mut procs = EtcdProcs::cluster(3).await;
        let mut kv = procs.client_to(&[1, 2]).await;
        kv.put("/svc/d/a", "127.0.0.1:7001", None).await.unwrap();
        kv.put("/svc/d/b", "127.0.0.1:7002", None).await.unwrap();
        // Discovery talks to member 0 only.
        let f = follow(
            discovery(vec![procs.endpoint(0)], "/svc/d/", 6)
                .build()
                .unwrap(),
        );
        f.wait("the listed keys", SOON, |s| {
            s.addrs() == set_of(&[7001, 7002])
        })
        .await;

        procs.kill(0);
        f.wait("the stream to report the outage", SOON, |s| s.errors > 0)
            .await;
        // While it is down: a put, a delete, and a compaction past the revision
        // the watch had reached.
        retry("put", async || {
            kv.put("/svc/d/c", "127.0.0.1:7003", None).await
        })
        .await;
        retry("delete", async || kv.delete("/svc/d/a", None).await).await;
        let put = retry("put", async || {
            kv.put("/svc/d/e", "127.0.0.1:7005", None).await
        })
        .await;
        let revision = put.header().unwrap().revision();
        retry("compact", async || kv.compact(revision, None).await).await;
        assert_eq!(
            f.addrs(),
            set_of(&[7001, 7002]),
            "the last good set must stay"
        );

        procs.restart(0).await;
        f.wait("the changes made while down", SOON, |s| {
            s.addrs() == set_of(&[7002, 7003, 7005])
        })
        .await;
        // Still following afterwards.
        retry("delete", async || kv.delete("/svc/d/b", None).await).await;
        f.wait("a delete after the restart", SOON, |s| {
            s.addrs() == set_of(&[7003, 7005])
        })
        .await;
    })
}
