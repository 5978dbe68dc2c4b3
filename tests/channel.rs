//! The channel against real hyper HTTP servers on 127.0.0.1.
#![cfg(feature = "http")]

#[path = "support/http.rs"]
mod http;

use std::time::Duration;

use http::{Backend, Behavior, connector, eventually, get, start_many};
use towline::balance::{P2c, RoundRobin};
use towline::discover::{Manual, Static};
use towline::{Channel, Endpoint, Error};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn traffic_spreads_over_three_servers() {
    http::seeded_runtime(1010).block_on(async {
        let backends = start_many(3, Behavior::default()).await;
        let mut channel = Channel::builder(connector())
            .discover(Static::new(backends.iter().map(|b| b.addr)))
            .balancer(RoundRobin::new())
            .build()
            .unwrap();
        for _ in 0..300 {
            assert_eq!(get(&mut channel).await.unwrap().status, 200);
        }
        // Round-robin from one task: exactly one in three to each.
        for b in &backends {
            assert_eq!(b.hits(), 100, "{}", b.addr);
        }
        let info = channel.endpoints();
        assert_eq!(info.len(), 3);
        assert!(
            info.iter()
                .all(|e| e.requests == 100 && e.failures == 0 && e.in_flight == 0)
        );
    })
}

#[test]
fn removed_server_gets_no_new_requests_and_in_flight_ones_finish() {
    http::seeded_runtime(1020).block_on(async {
        let backends = start_many(3, Behavior::default()).await;
        let manual = Manual::with_endpoints(backends.iter().map(|b| b.addr));
        let channel = Channel::builder(connector())
            .discover(manual.stream())
            .balancer(RoundRobin::new())
            .build()
            .unwrap();
        let victim = &backends[1];
        victim.set_behavior(Behavior {
            hang: true,
            ..Default::default()
        });

        // Round-robin over 3 endpoints: three concurrent calls put one on the victim.
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let mut ch = channel.clone();
                tokio::spawn(async move { get(&mut ch).await })
            })
            .collect();
        assert!(
            eventually(WAIT, || victim.in_flight() == 1).await,
            "no call reached the victim"
        );

        assert!(manual.remove(victim.addr));
        assert!(
            eventually(WAIT, || channel
                .endpoints()
                .iter()
                .all(|e| e.endpoint.addr != victim.addr))
            .await,
            "removal was never applied"
        );
        let hits_at_removal = victim.hits();
        let mut ch = channel.clone();
        for _ in 0..100 {
            let reply = get(&mut ch).await.unwrap();
            assert_ne!(reply.from, victim.addr);
        }
        assert_eq!(
            victim.hits(),
            hits_at_removal,
            "a removed endpoint got new requests"
        );

        // The call that was in flight on the removed endpoint completes normally.
        victim.release();
        let mut from_victim = 0;
        for call in calls {
            let reply = call.await.unwrap().unwrap();
            assert_eq!(reply.status, 200);
            from_victim += usize::from(reply.from == victim.addr);
        }
        assert_eq!(from_victim, 1);
    })
}

#[test]
fn added_server_receives_traffic() {
    http::seeded_runtime(1030).block_on(async {
        let backends = start_many(2, Behavior::default()).await;
        let manual = Manual::with_endpoints(backends.iter().map(|b| b.addr));
        let mut channel = Channel::builder(connector())
            .discover(manual.stream())
            .balancer(RoundRobin::new())
            .build()
            .unwrap();
        get(&mut channel).await.unwrap();
        let newcomer = Backend::start(Behavior::default(), 9).await;
        manual.insert(Endpoint::new(newcomer.addr));
        assert!(eventually(WAIT, || channel.endpoints().len() == 3).await);
        for _ in 0..90 {
            get(&mut channel).await.unwrap();
        }
        assert_eq!(newcomer.hits(), 30);
    })
}

#[test]
fn killed_server_calls_fail_with_the_inner_error() {
    http::seeded_runtime(1040).block_on(async {
        let backends = start_many(2, Behavior::default()).await;
        let mut channel = Channel::builder(connector())
            .discover(Static::new(backends.iter().map(|b| b.addr)))
            .balancer(RoundRobin::new())
            .build()
            .unwrap();
        get(&mut channel).await.unwrap();
        backends[0].kill();
        let (mut ok, mut failed) = (0, 0);
        for _ in 0..20 {
            match get(&mut channel).await {
                Ok(reply) => {
                    assert_eq!(reply.from, backends[1].addr);
                    ok += 1;
                }
                Err(Error::Inner(inner)) => {
                    // The hyper client's own error, reachable for the caller.
                    assert!(
                        inner
                            .downcast_ref::<hyper_util::client::legacy::Error>()
                            .is_some(),
                        "{inner}"
                    );
                    failed += 1;
                }
                Err(other) => panic!("unexpected error {other}"),
            }
        }
        assert_eq!((ok, failed), (10, 10));
        let dead = channel
            .endpoints()
            .into_iter()
            .find(|e| e.endpoint.addr == backends[0].addr)
            .unwrap();
        assert_eq!(dead.failures, 10);
    })
}

#[test]
fn many_tasks_share_clones_of_one_channel() {
    http::seeded_runtime(1050).block_on(async {
        let backends = start_many(4, Behavior::delay(Duration::from_millis(1))).await;
        let channel = Channel::builder(connector())
            .discover(Static::new(backends.iter().map(|b| b.addr)))
            .balancer(P2c::peak_ewma())
            .build()
            .unwrap();
        let tasks: Vec<_> = (0..256)
            .map(|_| {
                let mut ch = channel.clone();
                tokio::spawn(async move {
                    for _ in 0..10 {
                        assert_eq!(get(&mut ch).await.unwrap().status, 200);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(backends.iter().map(Backend::hits).sum::<u64>(), 2560);
        // Every endpoint took part, and all in-flight counts returned to zero.
        for e in channel.endpoints() {
            assert!(e.requests > 0, "{:?}", e.endpoint);
            assert_eq!(e.in_flight, 0);
        }
    })
}
