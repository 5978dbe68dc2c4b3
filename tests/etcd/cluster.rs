//! Clusters and connections: a killed leader, propagation time, TLS, authentication.

use super::*;

#[test]
fn three_member_cluster_keeps_discovery_and_registration_with_the_leader_killed() {
    http::seeded_runtime(4080).block_on(async {
        let mut procs = EtcdProcs::cluster(3).await;
        let all = procs.endpoints();
        let f = follow(discovery(all.clone(), "/svc/k/", 7).build().unwrap());
        let r = register(
            cluster(all.clone()),
            "/svc/k/",
            Endpoint::new(addr(8001)),
            4,
        )
        .await;
        f.wait("the registration", SOON, |s| s.addrs() == set_of(&[8001]))
            .await;

        let leader = procs.leader().await;
        procs.kill(leader);
        let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
        let mut kv = procs.client_to(&survivors).await;

        // Discovery goes on through the survivors.
        retry("put", async || {
            kv.put("/svc/k/manual", "127.0.0.1:8002", None).await
        })
        .await;
        f.wait("a put after the kill", SOON, |s| {
            s.set.contains_key(&addr(8002))
        })
        .await;

        // The registration is kept alive through the survivors for 2 TTLs.
        assert_held(&mut kv, r.key(), || f.addrs().contains(&addr(8001))).await;

        // A new instance registers, is discovered, and leaves cleanly.
        let r2 = register(
            cluster(all.clone()),
            "/svc/k/",
            Endpoint::new(addr(8003)),
            5,
        )
        .await;
        f.wait("the new registration", SOON, |s| {
            s.set.contains_key(&addr(8003))
        })
        .await;
        r2.shutdown().await.unwrap();
        f.wait("the clean leave", SOON, |s| {
            s.addrs() == set_of(&[8001, 8002])
        })
        .await;
    })
}

#[test]
fn put_to_first_request_propagation_p50_p99() {
    http::seeded_runtime(4090).block_on(async {
    let procs = EtcdProcs::single().await;
    let mut kv = procs.client().await;
    let anchor = http::Backend::start(http::Behavior::default(), 1).await;
    let target = http::Backend::start(http::Behavior::default(), 2).await;
    kv.put("/svc/p/anchor", anchor.addr.to_string(), None)
        .await
        .unwrap();
    let etcd = discovery(procs.endpoints(), "/svc/p/", 8).build().unwrap();
    let mut channel = Channel::builder(http::connector())
        .discover(etcd)
        .balancer(RoundRobin::new())
        .build()
        .unwrap();
    let call = |channel: &mut http::HttpChannel| {
        let mut ch = channel.clone();
        async move { http::get(&mut ch).await }
    };
    call(&mut channel).await.unwrap();

    let mut samples = Vec::with_capacity(100);
    for i in 0..100 {
        let hits_before = target.hits();
        let start = Instant::now();
        kv.put("/svc/p/target", target.addr.to_string(), None)
            .await
            .unwrap();
        // Round-robin over {anchor, target}: the target gets every other
        // call once the channel has it.
        while target.hits() == hits_before {
            assert!(
                start.elapsed() < SOON,
                "change {i} never reached the channel"
            );
            call(&mut channel).await.unwrap();
        }
        samples.push(start.elapsed());
        kv.delete("/svc/p/target", None).await.unwrap();
        assert!(
            http::eventually(SOON, || channel
                .endpoints()
                .iter()
                .all(|e| e.endpoint.addr != target.addr))
            .await,
            "change {i}: the delete never reached the channel"
        );
    }
    samples.sort();
    let (p50, p99, max) = (samples[49], samples[98], samples[99]);
    println!(
        "etcd put-to-first-request propagation over {} changes: p50 {p50:?}, p99 {p99:?}, max {max:?}",
        samples.len()
    );
    // Target is 100 ms on loopback; the bound here only catches breakage.
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
    })
}

/// Discovery and registration work with the `good` connection settings,
/// and with the `bad` ones discovery yields only errors.
async fn works_only_with_good_settings(good: EtcdCluster, bad: EtcdCluster, prefix: &str) {
    let f = follow(discovery_with(good.clone(), prefix, 11).build().unwrap());
    let _r = register(good, prefix, Endpoint::new(addr(9001)), 7).await;
    f.wait("the registration", SOON, |s| s.addrs() == set_of(&[9001]))
        .await;
    let g = follow(discovery_with(bad, prefix, 12).build().unwrap());
    g.wait("a refused connection", SOON, |s| s.errors >= 2)
        .await;
    assert_eq!(g.seen.lock().resets, 0);
}

#[cfg(feature = "etcd-tls")]
#[test]
fn tls_members_serve_a_client_that_trusts_their_ca_only() {
    http::seeded_runtime(4100).block_on(async {
        use towline::discover::etcd::{Certificate, TlsOptions};

        let procs = EtcdProcs::single_tls().await;
        let url = format!("https://{}", procs.endpoint(0));
        let ca = procs.tls().expect("TLS member").ca_pem.clone();
        let trusting = cluster(vec![url.clone()]).tls(
            TlsOptions::new()
                .ca_certificate(Certificate::from_pem(&ca))
                .domain_name("127.0.0.1"),
        );
        // Without the CA the server's certificate is refused.
        let untrusting = cluster(vec![url]).tls(TlsOptions::new().domain_name("127.0.0.1"));
        works_only_with_good_settings(trusting, untrusting, "/svc/t/").await;
    })
}

#[test]
fn user_and_password_are_passed_through() {
    http::seeded_runtime(4110).block_on(async {
        let procs = EtcdProcs::single().await;
        let mut admin = procs.client().await;
        admin.user_add("root", "s3cret", None).await.unwrap();
        admin.user_grant_role("root", "root").await.unwrap();
        admin.auth_enable().await.unwrap();

        let login = cluster(procs.endpoints()).user("root", "s3cret");
        let wrong = cluster(procs.endpoints()).user("root", "wrong");
        works_only_with_good_settings(login, wrong, "/svc/u/").await;
    })
}
