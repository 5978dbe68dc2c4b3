//! The async shell under virtual time, with a scripted fake resolver.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::refresh::{Answer, RefreshPolicy};
use super::resolve::{Lookup, Resolve};
use super::*;
use crate::Endpoint;

const S: Duration = Duration::from_secs(1);

/// Replies from a script (the last entry repeats) and notes when it was asked.
#[derive(Clone, Default)]
struct Fake {
    script: Arc<Mutex<VecDeque<(Duration, Lookup)>>>,
    asked_at: Arc<Mutex<Vec<Instant>>>,
    /// Whether each lookup was made while no endpoint was known.
    hurried: Arc<Mutex<Vec<bool>>>,
}

impl Fake {
    fn push(&self, latency: Duration, answer: Answer, skipped: usize) -> &Self {
        self.script
            .lock()
            .push_back((latency, Lookup { answer, skipped }));
        self
    }

    fn asked_at(&self) -> Vec<Duration> {
        let asked = self.asked_at.lock();
        asked.iter().map(|t| *t - asked[0]).collect()
    }
}

impl Resolve for Fake {
    fn lookup(&self, hurry: bool) -> Pin<Box<dyn Future<Output = Lookup> + Send + '_>> {
        self.asked_at.lock().push(Instant::now());
        self.hurried.lock().push(hurry);
        let (latency, lookup) = {
            let mut script = self.script.lock();
            if script.len() > 1 {
                script.pop_front().unwrap()
            } else {
                script.front().cloned().expect("script is not empty")
            }
        };
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            lookup
        })
    }
}

fn ep(last: u8) -> Endpoint {
    Endpoint::new(SocketAddr::from(([10, 0, 0, last], 80)))
}

fn records(set: &[Endpoint], ttl: Duration) -> Answer {
    Answer::Endpoints {
        endpoints: set.to_vec(),
        ttl,
    }
}

fn timeout() -> Answer {
    Answer::Failed(DiscoverError::new("request timed out"))
}

fn no_jitter() -> RefreshPolicy {
    RefreshPolicy {
        jitter: 0.0,
        ..RefreshPolicy::default()
    }
}

/// A source on `fake` whose metric handles live in a private recorder.
fn source(fake: &Fake, policy: RefreshPolicy, hint: Option<RefreshHint>) -> (Dns, Snapshotter) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let dns = metrics::with_local_recorder(&recorder, || {
        Dns::from_parts(
            "api.svc.test.".into(),
            Box::new(fake.clone()),
            policy,
            Rng::seeded(42),
            hint,
        )
    });
    (dns, snapshotter)
}

/// The counters recorded since the last call (a snapshot resets them).
fn counters(snapshotter: &Snapshotter) -> HashMap<String, u64> {
    let mut found = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if let DebugValue::Counter(n) = value {
            let labels: Vec<_> = key.key().labels().collect();
            assert_eq!(labels.len(), 1);
            assert_eq!(labels[0].key(), "name");
            assert_eq!(labels[0].value(), "api.svc.test.");
            found.insert(key.key().name().to_string(), n);
        }
    }
    found
}

async fn next_reset(dns: &mut Dns) -> Vec<Endpoint> {
    match dns.next().await {
        Some(Ok(Update::Reset(set))) => set,
        other => panic!("expected a reset, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn refreshes_on_ttl_and_yields_only_changes() {
    let fake = Fake::default();
    let a = [ep(2), ep(1)];
    fake.push(Duration::ZERO, records(&a, 7 * S), 0)
        .push(Duration::ZERO, records(&[ep(1), ep(2)], 7 * S), 0)
        .push(Duration::ZERO, records(&a, Duration::ZERO), 0) // TTL 0: clamped to 1 s
        .push(Duration::ZERO, records(&a, 600 * S), 0) // clamped to 5 min
        .push(Duration::ZERO, records(&[ep(3)], 600 * S), 0);
    let (mut dns, metrics) = source(&fake, no_jitter(), None);

    let start = Instant::now();
    assert_eq!(next_reset(&mut dns).await, vec![ep(1), ep(2)]);
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "first lookup at the first poll"
    );

    // Three unchanged answers pass silently; the next change is yielded.
    assert_eq!(next_reset(&mut dns).await, vec![ep(3)]);
    assert_eq!(
        fake.asked_at(),
        [Duration::ZERO, 7 * S, 14 * S, 15 * S, 315 * S]
    );
    let counted = counters(&metrics);
    assert_eq!(counted[LOOKUPS_METRIC], 5);
    assert_eq!(counted[LOOKUP_ERRORS_METRIC], 0);
}

#[tokio::test(start_paused = true)]
async fn failures_are_yielded_counted_and_backed_off() {
    let fake = Fake::default();
    fake.push(Duration::ZERO, records(&[ep(1)], 5 * S), 0);
    for _ in 0..5 {
        fake.push(2 * S, timeout(), 0); // each timeout takes 2 s to surface
    }
    fake.push(Duration::ZERO, records(&[ep(2)], 5 * S), 0);
    let (mut dns, metrics) = source(&fake, RefreshPolicy::default(), None);

    assert_eq!(next_reset(&mut dns).await, vec![ep(1)]);
    assert_eq!(counters(&metrics)[LOOKUP_ERRORS_METRIC], 0);
    for _ in 1..=5 {
        match dns.next().await {
            Some(Err(e)) => assert_eq!(e.message(), "request timed out"),
            other => panic!("expected an error, got {other:?}"),
        }
        // Each failure is counted once, when it happens.
        assert_eq!(counters(&metrics)[LOOKUP_ERRORS_METRIC], 1);
    }
    assert_eq!(next_reset(&mut dns).await, vec![ep(2)]);

    // Gaps between lookups: the first one is the (jittered) TTL, then each
    // failure's 2 s plus its backoff, growing 1, 2, 4, 8, 16 s (upper half).
    let asked = fake.asked_at();
    let gaps: Vec<Duration> = asked.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= (5 * S).mul_f64(0.9) && gaps[0] <= 5 * S);
    for (i, gap) in gaps[1..].iter().enumerate() {
        let ceiling = S * (1 << i);
        let backoff = *gap - 2 * S;
        assert!(
            backoff >= ceiling / 2 && backoff <= ceiling,
            "backoff {} was {backoff:?}",
            i + 1
        );
    }
}

#[tokio::test(start_paused = true)]
async fn empty_answers_clear_the_set_after_the_grace_period() {
    let fake = Fake::default();
    fake.push(Duration::ZERO, records(&[ep(1)], 2 * S), 0).push(
        Duration::ZERO,
        Answer::Empty { ttl: None },
        0,
    );
    let (mut dns, _metrics) = source(&fake, RefreshPolicy::default(), None);

    assert_eq!(next_reset(&mut dns).await, vec![ep(1)]);
    let set = next_reset(&mut dns).await;
    assert!(set.is_empty());
    let first_empty = fake.asked_at.lock()[1];
    let held = Instant::now() - first_empty;
    assert!(
        held >= 30 * S && held < 31 * S,
        "set dropped {held:?} after the first empty answer"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hint_brings_the_next_lookup_forward_rate_limited() {
    let fake = Fake::default();
    fake.push(Duration::ZERO, records(&[ep(1)], 300 * S), 0)
        .push(Duration::ZERO, records(&[ep(2)], 300 * S), 0)
        .push(Duration::ZERO, records(&[ep(3)], 300 * S), 0);
    let hint = RefreshHint::new();
    let (mut dns, _metrics) = source(&fake, RefreshPolicy::default(), Some(hint.clone()));
    let start = Instant::now();
    assert_eq!(next_reset(&mut dns).await, vec![ep(1)]);

    // Requested right away: the 1 s rate limit holds it back.
    hint.request();
    assert_eq!(next_reset(&mut dns).await, vec![ep(2)]);
    assert_eq!(start.elapsed(), S);

    // Requested 10 s later: served at once.
    tokio::time::sleep(10 * S).await;
    hint.request();
    assert_eq!(next_reset(&mut dns).await, vec![ep(3)]);
    assert_eq!(start.elapsed(), 11 * S);
    assert_eq!(fake.asked_at(), [Duration::ZERO, S, 11 * S]);
}

#[tokio::test(start_paused = true)]
async fn skipped_records_and_caps_are_counted() {
    let fake = Fake::default();
    let many: Vec<Endpoint> = (1..=5).map(ep).collect();
    fake.push(Duration::ZERO, records(&many, 5 * S), 3);
    let policy = RefreshPolicy {
        max_endpoints: 2,
        ..RefreshPolicy::default()
    };
    let (mut dns, metrics) = source(&fake, policy, None);
    assert_eq!(next_reset(&mut dns).await.len(), 2);
    let counted = counters(&metrics);
    assert_eq!(counted[RECORDS_SKIPPED_METRIC], 3);
    assert_eq!(counted[ENDPOINTS_CAPPED_METRIC], 1);
}

#[test]
fn dns_is_a_discovery_source() {
    fn discover<D: crate::discover::Discover + Unpin>() {}
    discover::<Dns>();
}

#[tokio::test(start_paused = true)]
async fn a_partial_answer_yields_its_set_then_its_error() {
    let fake = Fake::default();
    let v6 = Endpoint::new("[fd00::1]:80".parse().unwrap());
    let partial = Answer::Partial {
        endpoints: vec![ep(3)],
        ttl: 60 * S,
        kept: super::family::Family::V6,
        error: DiscoverError::new("AAAA timed out"),
    };
    fake.push(Duration::ZERO, records(&[ep(1), v6.clone()], 60 * S), 0)
        .push(Duration::ZERO, partial, 0);
    let (mut dns, metrics) = source(&fake, no_jitter(), None);
    assert_eq!(next_reset(&mut dns).await, vec![ep(1), v6.clone()]);
    // The new IPv4 set with the IPv6 endpoint kept, then the failure.
    assert_eq!(next_reset(&mut dns).await, vec![ep(3), v6]);
    let asked = fake.asked_at().len();
    match dns.next().await {
        Some(Err(e)) => assert!(e.to_string().contains("AAAA"), "{e}"),
        other => panic!("expected the partial answer's error, got {other:?}"),
    }
    assert_eq!(
        fake.asked_at().len(),
        asked,
        "the error comes before the next lookup"
    );
    let counted = counters(&metrics);
    assert_eq!(counted.get(LOOKUP_ERRORS_METRIC), Some(&1));
    assert_eq!(counted.get(LOOKUPS_METRIC), Some(&2));
}

#[tokio::test(start_paused = true)]
async fn lookups_hurry_only_while_no_endpoint_is_known() {
    let fake = Fake::default();
    let a = [ep(1)];
    fake.push(Duration::ZERO, timeout(), 0)
        .push(Duration::ZERO, records(&a, S), 0)
        .push(Duration::ZERO, records(&[ep(2)], S), 0);
    let (mut dns, _) = source(&fake, no_jitter(), None);
    // The failure, then the first set: both lookups made with no set.
    assert!(matches!(dns.next().await, Some(Err(_))));
    assert_eq!(next_reset(&mut dns).await, a);
    // The next one, with endpoints known, waits for every family.
    assert_eq!(next_reset(&mut dns).await, [ep(2)]);
    assert_eq!(*fake.hurried.lock(), [true, true, false]);
}
