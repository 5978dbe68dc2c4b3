//! The registrar: lease expiry, clean shutdown, a lost lease, a key deleted
//! or overwritten behind its back.

use super::*;

#[test]
fn registrar_dropped_expires_within_ttl_and_shutdown_leaves_at_once() {
    http::seeded_runtime(4030).block_on(async {
        let procs = EtcdProcs::single().await;
        let mut kv = procs.client().await;
        let f = follow(discovery(procs.endpoints(), "/svc/r/", 3).build().unwrap());
        let a_ep = Endpoint::new(addr(3001)).with_metadata("zone", "a");
        let a = register(cluster(procs.endpoints()), "/svc/r/", a_ep.clone(), 1).await;
        let b = register(
            cluster(procs.endpoints()),
            "/svc/r/",
            Endpoint::new(addr(3002)),
            2,
        )
        .await;
        f.wait("both registrations", SOON, |s| {
            s.addrs() == set_of(&[3001, 3002]) && s.set[&addr(3001)] == a_ep
        })
        .await;

        // Keep-alives hold the keys well past the TTL.
        assert_held(&mut kv, a.key(), || f.addrs() == set_of(&[3001, 3002])).await;

        // Clean shutdown: the revoke deletes the key before shutdown returns.
        let b_key = b.key().to_owned();
        b.shutdown().await.unwrap();
        assert_eq!(lease_of(&mut kv, &b_key).await, None);
        f.wait(
            "the shut-down instance to leave",
            Duration::from_secs(1),
            |s| !s.set.contains_key(&addr(3002)),
        )
        .await;

        // Dropped without revoke: gone once the lease expires.
        drop(a);
        let took = f
            .wait(
                "the dropped instance to expire",
                TTL + Duration::from_secs(1),
                |s| s.set.is_empty(),
            )
            .await;
        println!("dropped registrar disappeared after {took:?} (TTL {TTL:?})");
    })
}

#[test]
fn registrar_whose_lease_was_lost_registers_again() {
    http::seeded_runtime(4040).block_on(async {
        let procs = EtcdProcs::single().await;
        let mut kv = procs.client().await;
        let r = register(
            cluster(procs.endpoints()),
            "/svc/l/",
            Endpoint::new(addr(4001)),
            3,
        )
        .await;
        let first = lease_of(&mut kv, r.key()).await.expect("registered key");
        // The lease vanishes behind the registrar's back (as after an etcd
        // restart on a fresh data directory): the key goes with it.
        kv.lease_revoke(first).await.unwrap();
        assert_eq!(lease_of(&mut kv, r.key()).await, None);

        let deadline = Instant::now() + TTL + Duration::from_secs(2);
        loop {
            if let Some(lease) = lease_of(&mut kv, r.key()).await {
                assert_ne!(lease, first, "the key came back under the revoked lease");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the registrar did not register again"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::timeout(SOON, r.registered())
            .await
            .unwrap()
            .unwrap();
        // Leaving revokes the new lease.
        let key = r.key().to_owned();
        r.shutdown().await.unwrap();
        assert_eq!(lease_of(&mut kv, &key).await, None);
    })
}

#[test]
fn registrar_puts_back_its_key_when_deleted_or_overwritten() {
    http::seeded_runtime(4120).block_on(async {
        let procs = EtcdProcs::single().await;
        let mut kv = procs.client().await;
        let ep = Endpoint::new(addr(5001)).with_metadata("zone", "b");
        let r = register(cluster(procs.endpoints()), "/svc/w/", ep, 5).await;
        let key = r.key().to_owned();
        let ours = entry(&mut kv, &key).await.expect("registered key");
        assert_ne!(ours.1, 0, "the key is not under a lease");

        // Deleted, overwritten with another value, and put with our value
        // but without the lease (it would then outlive the instance): each
        // is put back with our value under the same lease.
        retry("delete", async || kv.delete(key.as_str(), None).await).await;
        let took = wait_entry(&mut kv, &key, "the deleted key", &ours, REPAIR).await;
        println!("deleted key put back after {took:?}");
        retry("overwrite", async || kv.put(key.as_str(), "{}", None).await).await;
        let took = wait_entry(&mut kv, &key, "the overwritten key", &ours, REPAIR).await;
        println!("overwritten key put back after {took:?}");
        let value = ours.0.clone();
        retry("detach", async || {
            kv.put(key.as_str(), value.clone(), None).await
        })
        .await;
        wait_entry(&mut kv, &key, "the key detached", &ours, REPAIR).await;
        tokio::time::timeout(SOON, r.registered())
            .await
            .unwrap()
            .unwrap();
        // Repaired, the key is kept alive as before.
        assert_held(&mut kv, &key, || r.is_registered()).await;

        // Leaving still deletes the key (`shutdown` waits for the task to
        // end, so nothing can put it back after).
        r.shutdown().await.unwrap();
        assert_eq!(entry(&mut kv, &key).await, None);
    })
}

#[test]
fn registrar_watches_its_key_again_after_etcd_restarts() {
    http::seeded_runtime(4130).block_on(async {
        let mut procs = EtcdProcs::single().await;
        let mut kv = procs.client().await;
        let r = register(
            cluster(procs.endpoints()),
            "/svc/x/",
            Endpoint::new(addr(5101)),
            6,
        )
        .await;
        let key = r.key().to_owned();
        // The key's watch breaks with etcd; the registrar must open it again
        // (it starts from the last revision it saw, so the delete below is
        // seen even if it comes first).
        procs.kill(0);
        procs.restart(0).await;
        tokio::time::timeout(SOON, r.registered())
            .await
            .unwrap()
            .unwrap();
        let ours = entry(&mut kv, &key).await.expect("registered key");
        retry("delete", async || kv.delete(key.as_str(), None).await).await;
        let took = wait_entry(&mut kv, &key, "the deleted key", &ours, SOON).await;
        println!("deleted key put back {took:?} after the delete, etcd restarted");
        r.shutdown().await.unwrap();
        assert_eq!(entry(&mut kv, &key).await, None);
    })
}

/// How soon a deleted or overwritten key must be back: a repair takes
/// milliseconds on loopback.
const REPAIR: Duration = Duration::from_secs(1);

/// The value of `key` in etcd now and its lease, if the key exists.
async fn entry(client: &mut etcd_client::Client, key: &str) -> Option<(Vec<u8>, i64)> {
    let got = retry("get", async || client.get(key, None).await).await;
    got.kvs()
        .first()
        .map(|kv| (kv.value().to_vec(), kv.lease()))
}

/// Polls until `key` holds `want` (value and lease), failing naming `what`
/// after `limit`. Returns how long it took.
async fn wait_entry(
    client: &mut etcd_client::Client,
    key: &str,
    what: &str,
    want: &(Vec<u8>, i64),
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let got = entry(client, key).await;
        if got.as_ref() == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}; the key is {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
