//! The registrar: lease expiry, clean shutdown, a lost lease.

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
