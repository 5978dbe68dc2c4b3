//! What the channel reports: every attempt's end on its endpoint's load,
//! outcomes a classifier gives late, the attempt hook, and why no endpoint
//! was found.

use crate::balance::P2c;
use crate::classify::{Classify, Outcome, OutcomeReport};
use crate::discover::{DiscoverError, Manual, Update};
use futures_util::stream;

use super::*;

fn info(channel: &Channel<u32, u16>, port: u16) -> EndpointInfo {
    channel
        .endpoints()
        .into_iter()
        .find(|e| e.endpoint.addr.port() == port)
        .unwrap()
}

/// Builds a channel over `fleet` and waits until it knows `ports`.
async fn ready(builder: Builder<u32, Svc>, ports: usize) -> Channel<u32, u16> {
    let channel = builder.build().unwrap();
    while channel.endpoints().len() < ports {
        tokio::task::yield_now().await;
    }
    channel
}

#[tokio::test(start_paused = true)]
async fn an_attempt_the_caller_gives_up_on_is_a_latency_sample() {
    crate::rng::seed_thread_rng(531);
    let fleet = Fleet::new([1]);
    fleet.set(
        1,
        Mode {
            fail: false,
            latency: Duration::from_secs(3600),
        },
    );
    let mut channel = ready(fleet.builder([1]).balancer(P2c::peak_ewma()), 1).await;
    // The caller gives up after 900 ms: the call future is dropped.
    let call = channel.ready().await.unwrap().call(0);
    assert!(tokio::time::timeout(900 * MS, call).await.is_err());
    let e = info(&channel, 1);
    assert_eq!(e.rtt_estimate, Some(900 * MS));
    assert_eq!((e.in_flight, e.requests, e.failures), (0, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn timeouts_and_losing_hedges_are_latency_samples_and_a_stall_loses_its_traffic() {
    crate::rng::seed_thread_rng(532);
    let fleet = Fleet::new([1, 2]);
    for (port, latency) in [(1, 10 * MS), (2, Duration::from_secs(3600))] {
        fleet.set(
            port,
            Mode {
                fail: false,
                latency,
            },
        );
    }
    let hedge = HedgeSettings::default()
        .with_delay(HedgeDelay::Fixed(50 * MS))
        .with_budget(
            crate::policy::budget::BudgetSettings::new(1.0, 100, Duration::from_secs(10)).unwrap(),
        );
    let mut channel = ready(
        fleet
            .builder([1, 2])
            // An endpoint not measured yet looks fast, so both are tried.
            .balancer(P2c::peak_ewma().default_rtt(MS))
            .timeout(300 * MS)
            .hedge(hedge),
        2,
    )
    .await;
    for i in 0..50 {
        channel.ready().await.unwrap().call(i).await.unwrap();
    }
    // The stalled endpoint's attempts were cut (timeouts of 300 ms) or lost
    // to a hedge after 50 ms: either way its estimate is far above the
    // healthy one's, and after its first attempt it gets almost nothing.
    let (fast, stalled) = (info(&channel, 1), info(&channel, 2));
    assert_eq!(fast.rtt_estimate, Some(10 * MS));
    let slow = stalled
        .rtt_estimate
        .expect("the stalled endpoint was measured");
    assert!(slow >= 50 * MS, "{slow:?}");
    assert_eq!(stalled.in_flight, 0);
    assert!(stalled.requests <= 3, "{stalled:?}");
    assert_eq!(fleet.hits(1), 50);
}

/// A response whose outcome is known only when its "body" ends.
struct Streamed {
    port: u16,
    report: Option<OutcomeReport>,
}

impl Streamed {
    /// Ends the body with a status: port 1's bodies end in failure.
    fn end(mut self) {
        if let Some(report) = self.report.take() {
            report.finish(if self.port == 1 {
                Outcome::Failure { retryable: false }
            } else {
                Outcome::Success
            });
        }
    }
}

/// Classifies every head as a success, and defers the final outcome.
struct Trailers;

impl Classify<Streamed, BoxError> for Trailers {
    fn classify(&self, result: &Result<Streamed, BoxError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure { retryable: true },
        }
    }

    fn defers(&self) -> bool {
        true
    }

    fn defer(&self, response: &mut Streamed, report: OutcomeReport) {
        response.report = Some(report);
    }
}

#[tokio::test(start_paused = true)]
async fn late_outcomes_reach_the_breaker_and_counters_when_the_body_ends() {
    crate::rng::seed_thread_rng(533);
    let connect = |ep: &Endpoint| {
        let port = ep.addr.port();
        tower::util::BoxCloneSyncService::new(service_fn(move |_: u32| async move {
            Ok::<_, BoxError>(Streamed { port, report: None })
        }))
    };
    let mut channel = Channel::builder(connect)
        .discover(Static::new([addr(1), addr(2)]))
        .balancer(RoundRobin::new())
        .classifier(Trailers)
        .circuit_breaker(breaker(2, Duration::from_secs(60), 1))
        .build()
        .unwrap();
    let failures = |ch: &Channel<u32, Streamed>, port: u16| {
        ch.endpoints()
            .iter()
            .find(|e| e.endpoint.addr.port() == port)
            .map_or(0, |e| e.failures)
    };
    // Heads only: every attempt looks like a success until its body ends.
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(channel.ready().await.unwrap().call(i).await.unwrap());
    }
    assert_eq!(failures(&channel, 1), 0);
    assert!(channel.endpoints().iter().all(|e| !e.ejected));
    for body in held {
        body.end();
    }
    // Port 1's two failures, reported late, open its breaker.
    assert_eq!((failures(&channel, 1), failures(&channel, 2)), (2, 0));
    let ejected: Vec<u16> = channel
        .endpoints()
        .iter()
        .filter(|e| e.ejected)
        .map(|e| e.endpoint.addr.port())
        .collect();
    assert_eq!(ejected, [1]);
    // A body dropped before it ends records its head's outcome.
    let body = channel.ready().await.unwrap().call(9).await.unwrap();
    assert_eq!(body.port, 2);
    drop(body);
    assert_eq!(failures(&channel, 2), 0);
    assert_eq!(
        channel.endpoints().iter().map(|e| e.requests).sum::<u64>(),
        5
    );
}

#[tokio::test(start_paused = true)]
async fn the_attempt_hook_sees_each_attempt_before_it_is_sent() {
    crate::rng::seed_thread_rng(534);
    let fleet = Fleet::new([1, 2]);
    fleet.set(1, failing());
    fleet.set(2, failing());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let mut channel = fleet
        .builder([1, 2])
        .retry(quick_retry(2))
        .timeout(200 * MS)
        .deadline(Duration::from_secs(1))
        .on_attempt(move |req, at| {
            *req += 1000;
            log.lock().push((
                at.endpoint().port(),
                at.number(),
                at.kind(),
                at.remaining(),
                at.cut().map(|c| c - at.started()),
            ));
        })
        .build()
        .unwrap();
    let t0 = Instant::now();
    assert!(channel.ready().await.unwrap().call(5).await.is_err());
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_ne!(seen[0].0, seen[1].0, "the retry went elsewhere");
    assert_eq!(
        seen.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>(),
        [(1, AttemptKind::First), (2, AttemptKind::Retry)]
    );
    for s in &seen {
        // The attempt timeout is the nearer limit; nothing ran meanwhile.
        assert_eq!((s.3, s.4), (Some(200 * MS), Some(200 * MS)));
    }
    assert!(t0.elapsed() < 200 * MS);
    // A bare channel calls the hook too, once per call.
    let count = Arc::new(Mutex::new(0));
    let counter = count.clone();
    let mut bare = ready(
        fleet.builder([2]).on_attempt(move |_, at| {
            assert_eq!(
                (at.number(), at.kind(), at.cut()),
                (1, AttemptKind::First, None)
            );
            *counter.lock() += 1;
        }),
        1,
    )
    .await;
    let _ = bare.ready().await.unwrap().call(0).await;
    assert_eq!(*count.lock(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_endpoints_names_the_channel_and_the_last_discovery_error() {
    crate::rng::seed_thread_rng(535);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let updates = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|u| (u, rx)) });
    let fleet = Fleet::new([1]);
    let mut channel = Channel::builder(fleet.connector())
        .discover(updates)
        .name("users")
        .initial_wait(100 * MS)
        .build()
        .unwrap();
    tx.send(Ok(Update::Reset(vec![Endpoint::new(addr(1))])))
        .unwrap();
    while channel.endpoints().is_empty() {
        tokio::task::yield_now().await;
    }
    tx.send(Ok(Update::Reset(Vec::new()))).unwrap();
    tx.send(Err(DiscoverError::new("users.svc did not resolve")))
        .unwrap();
    while !channel.endpoints().is_empty() {
        tokio::task::yield_now().await;
    }
    let err = channel.ready().await.unwrap().call(0).await.unwrap_err();
    let Error::NoEndpoints {
        channel: name,
        last_discovery_error: Some(last),
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(&**name, "users");
    assert_eq!(last.message(), "users.svc did not resolve");
    assert!(err.to_string().contains("`users`"), "{err}");
    let source = std::error::Error::source(&err).expect("the discovery error");
    assert!(source.to_string().contains("did not resolve"));
    // Without a discovery error there is no source.
    let manual = Manual::new();
    let mut quiet = Channel::builder(fleet.connector())
        .discover(manual.stream())
        .initial_wait(MS)
        .build()
        .unwrap();
    let err = quiet.call(0).await.unwrap_err();
    assert!(matches!(
        &err,
        Error::NoEndpoints {
            last_discovery_error: None,
            ..
        }
    ));
    assert!(std::error::Error::source(&err).is_none());
}

#[tokio::test(start_paused = true)]
async fn closures_classify_and_replay_without_annotations() {
    crate::rng::seed_thread_rng(536);
    let fleet = Fleet::new([1, 2]);
    fleet.set(1, failing());
    let mut channel = Channel::builder(fleet.connector())
        .discover(Static::new([addr(1), addr(2)]))
        .balancer(RoundRobin::new())
        .classify(|r| match r {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure { retryable: true },
        })
        .replay(|r| Some(*r))
        .retry(quick_retry(2))
        .build()
        .unwrap();
    for i in 0..10 {
        assert_eq!(channel.ready().await.unwrap().call(i).await.unwrap(), 2);
    }
}
