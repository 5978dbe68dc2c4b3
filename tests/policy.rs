//! The channel's policies against real hyper HTTP servers on 127.0.0.1.
#![cfg(feature = "http")]

#[path = "support/http.rs"]
mod http;

use std::time::Duration;

use http::{Backend, Behavior, HttpChannel, HttpClient, Reply, connector, start_many};
use tokio::time::Instant;
use towline::balance::RoundRobin;
use towline::discover::Static;
use towline::policy::backoff::Backoff;
use towline::policy::breaker::{BreakerSettings, BreakerState};
use towline::policy::replay::CloneReplay;
use towline::policy::retry::RetrySettings;
use towline::{Channel, Error};

fn always_failing() -> Behavior {
    Behavior {
        fail_ratio: 1.0,
        ..Default::default()
    }
}

fn retry() -> RetrySettings {
    RetrySettings::default().with_max_attempts(3).with_backoff(
        Backoff::new(Duration::from_millis(1), 2.0, Duration::from_millis(5)).unwrap(),
    )
}

/// Breakers opening after `n` failures in a row, for `open` (no jitter).
fn breaker(n: u32, open: Duration, probes: u32) -> BreakerSettings {
    BreakerSettings::default()
        .with_consecutive_failures(Some(n))
        .with_failure_rate(None)
        .with_open_time(open, 2.0, open * 4)
        .with_open_jitter(0.0)
        .with_probes(probes)
}

fn channel(
    backends: &[Backend],
) -> towline::channel::Builder<
    hyper::Request<http_body_util::Full<bytes::Bytes>>,
    towline::http::EndpointService<HttpClient>,
> {
    Channel::builder(connector())
        .discover(Static::new(backends.iter().map(|b| b.addr)))
        .balancer(RoundRobin::new())
        .classifier(towline::http::StatusClassify::new())
        .replayer(CloneReplay)
}

async fn get(channel: &HttpChannel) -> Result<Reply, Error> {
    let mut ch = channel.clone();
    http::get(&mut ch).await
}

fn is_ejected(channel: &HttpChannel, backend: &Backend) -> bool {
    channel
        .endpoints()
        .iter()
        .any(|e| e.endpoint.addr == backend.addr && e.ejected)
}

#[test]
fn with_one_server_always_failing_every_request_succeeds() {
    http::seeded_runtime(2010).block_on(async {
        let backends = start_many(3, Behavior::default()).await;
        backends[1].set_behavior(always_failing());
        let channel = channel(&backends).retry(retry()).build().unwrap();
        for _ in 0..300 {
            let reply = get(&channel).await.unwrap();
            assert_eq!(reply.status, 200);
            assert_ne!(reply.from, backends[1].addr);
        }
        // The healthy servers answered every request exactly once.
        assert_eq!(backends[0].hits() + backends[2].hits(), 300);
        assert!(backends[1].hits() > 0);
    })
}

#[test]
fn failing_server_is_ejected_gets_only_probes_and_returns_when_it_recovers() {
    http::seeded_runtime(2020).block_on(async {
        let backends = start_many(3, Behavior::default()).await;
        let victim = &backends[2];
        victim.set_behavior(always_failing());
        // Long enough that 50 calls on loopback fit in it even on a loaded
        // machine (checked below, as a precondition of the 'gets nothing' check).
        let open = Duration::from_secs(3);
        let channel = channel(&backends)
            .retry(retry())
            .circuit_breaker(breaker(5, open, 2))
            .build()
            .unwrap();

        // Ejected after exactly the threshold of five failures.
        let limit = Instant::now() + Duration::from_secs(10);
        while victim.hits() < 5 {
            assert!(Instant::now() < limit, "victim never reached the threshold");
            assert_eq!(get(&channel).await.unwrap().status, 200);
        }
        let opened = Instant::now();
        assert!(is_ejected(&channel, victim));

        // While open it gets nothing (checked well inside the open time).
        for _ in 0..50 {
            assert_eq!(get(&channel).await.unwrap().status, 200);
        }
        assert!(opened.elapsed() < open, "too slow to check the open phase");
        assert_eq!(victim.hits(), 5);

        // Half-open, still failing (slowly, so both probes are in flight at
        // once): a burst of calls lets exactly the two probes through.
        victim.set_behavior(Behavior {
            delay: Duration::from_millis(200),
            fail_ratio: 1.0,
            ..Default::default()
        });
        tokio::time::sleep_until(opened + open).await;
        let burst: Vec<_> = (0..40).map(|_| get(&channel)).collect();
        for r in futures_util::future::join_all(burst).await {
            assert_eq!(r.unwrap().status, 200);
        }
        assert_eq!(victim.hits(), 7);
        assert!(is_ejected(&channel, victim));

        // It recovers: after the next (doubled) open time its probes succeed
        // and it is back in rotation.
        victim.set_behavior(Behavior::default());
        let limit = Instant::now() + Duration::from_secs(10);
        while is_ejected(&channel, victim) || victim.completed() < 20 {
            assert!(Instant::now() < limit, "victim never came back");
            assert_eq!(get(&channel).await.unwrap().status, 200);
        }
        let states = channel.policy_handle().breaker_states();
        assert!(
            states.iter().all(|(_, s)| *s == BreakerState::Closed),
            "{states:?}"
        );
    })
}

#[test]
fn panic_mode_engages_when_too_many_servers_fail() {
    http::seeded_runtime(2030).block_on(async {
        let backends = start_many(3, Behavior::default()).await;
        backends[1].set_behavior(always_failing());
        backends[2].set_behavior(always_failing());
        let channel = channel(&backends)
            .circuit_breaker(breaker(3, Duration::from_secs(60), 1))
            .build()
            .unwrap();
        let handle = channel.policy_handle();
        let limit = Instant::now() + Duration::from_secs(10);
        while !handle.in_panic_mode() {
            assert!(Instant::now() < limit, "panic mode never engaged");
            get(&channel).await.unwrap();
        }
        // Two of three are failing: at most half (one) is ejected, and with one
        // healthy server of three the channel round-robins over all of them,
        // ejected or not: exactly one call in three each.
        let ejected = channel.endpoints().iter().filter(|e| e.ejected).count();
        assert_eq!(ejected, 1);
        let before: Vec<u64> = backends.iter().map(|b| b.hits()).collect();
        for _ in 0..300 {
            get(&channel).await.unwrap();
        }
        for (b, was) in backends.iter().zip(before) {
            assert_eq!(b.hits() - was, 100, "{} of 300 calls", b.addr);
        }
    })
}
