//! The spans of a call, captured by a subscriber that records every span,
//! its parent and its fields.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

use super::*;
use crate::policy::budget::BudgetSettings;

#[derive(Debug, Clone)]
struct Captured {
    name: &'static str,
    parent: Option<u64>,
    fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct Capture {
    spans: Mutex<BTreeMap<u64, Captured>>,
    next: AtomicU64,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl Subscriber for &'static Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("towline")
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = BTreeMap::new();
        span.record(&mut Fields(&mut fields));
        self.spans.lock().insert(
            id,
            Captured {
                name: span.metadata().name(),
                parent: span.parent().map(Id::into_u64),
                fields,
            },
        );
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some(s) = self.spans.lock().get_mut(&span.into_u64()) {
            values.record(&mut Fields(&mut s.fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[tokio::test(start_paused = true)]
async fn a_retried_hedged_call_shows_its_attempts_as_child_spans() {
    crate::rng::seed_thread_rng(541);
    let capture: &'static Capture = Box::leak(Box::default());
    let _guard = tracing::subscriber::set_default(capture);
    // By attempt, across endpoints: the first fails after 30 ms, its hedge
    // (sent at 10 ms) fails after 5 ms, the retry answers at once.
    let calls = Arc::new(AtomicUsize::new(0));
    let count = calls.clone();
    let connect = move |ep: &Endpoint| {
        let port = ep.addr.port();
        let count = count.clone();
        Svc::new(service_fn(move |_: u32| {
            let n = count.fetch_add(1, Ordering::SeqCst);
            async move {
                let (latency, fail) = [(30 * MS, true), (5 * MS, true)]
                    .get(n)
                    .copied()
                    .unwrap_or((Duration::ZERO, false));
                tokio::time::sleep(latency).await;
                if fail {
                    Err::<u16, BoxError>("down".into())
                } else {
                    Ok(port)
                }
            }
        }))
    };
    let mut channel = Channel::builder(connect)
        .discover(Static::new([addr(1), addr(2), addr(3)]))
        .balancer(RoundRobin::new())
        .replayer(CloneReplay)
        .name("spans")
        .retry(quick_retry(3))
        .hedge(
            HedgeSettings::default()
                .with_delay(HedgeDelay::Fixed(10 * MS))
                .with_budget(BudgetSettings::new(1.0, 100, Duration::from_secs(10)).unwrap()),
        )
        .build()
        .unwrap();
    channel.ready().await.unwrap().call(0).await.unwrap();

    let spans = capture.spans.lock().clone();
    let calls: Vec<(&u64, &Captured)> = spans.iter().filter(|(_, s)| s.name == "call").collect();
    assert_eq!(calls.len(), 1, "{spans:#?}");
    let (&call_id, call) = calls[0];
    assert_eq!(call.fields["channel"], "spans");
    assert_eq!(call.fields["outcome"], "success");
    let attempts: Vec<&Captured> = spans.values().filter(|s| s.name == "attempt").collect();
    assert!(attempts.iter().all(|a| a.parent == Some(call_id)));
    let row = |a: &Captured| {
        (
            a.fields["attempt"].clone(),
            a.fields["kind"].clone(),
            a.fields["outcome"].clone(),
        )
    };
    let rows: Vec<_> = attempts.iter().map(|a| row(a)).collect();
    let want = [
        ("1", "first", "failure"),
        ("2", "hedge", "failure"),
        ("3", "retry", "success"),
    ];
    assert_eq!(
        rows,
        want.map(|(n, k, o)| (n.to_string(), k.to_string(), o.to_string()))
    );
    // Each attempt went to a different endpoint.
    let mut endpoints: Vec<&String> = attempts.iter().map(|a| &a.fields["endpoint"]).collect();
    endpoints.sort();
    endpoints.dedup();
    assert_eq!(endpoints.len(), 3);
}
