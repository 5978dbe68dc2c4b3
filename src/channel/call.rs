//! One call through the channel: wait for endpoints, pick, attempt, record.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::future::poll_fn;
use tower::Service;

use super::table::{Slot, Snapshot};
use super::{Handle, Shared, now};
use crate::classify::Outcome;
use crate::rng::with_thread_rng;
use crate::{BoxError, Error};

/// The result of one attempt on one endpoint.
pub(crate) struct Attempt<Resp> {
    /// The inner service's result, its error boxed.
    pub(crate) result: Result<Resp, BoxError>,
    /// What the classifier made of it.
    pub(crate) outcome: Outcome,
    /// How long it took, and when it ended.
    pub(crate) rtt: std::time::Duration,
    pub(crate) end: std::time::Instant,
}

/// Sends `req` to the endpoint of `slot`, and records the outcome on its
/// load (through the channel's balancer, for latency-aware ones), counters
/// and metrics.
pub(crate) async fn attempt<Req, S>(
    shared: &Shared<Req, S>,
    slot: &Slot<S>,
    req: Req,
) -> Attempt<S::Response>
where
    S: Service<Req> + Clone,
    S::Response: 'static,
    S::Error: Into<BoxError> + 'static,
{
    let mut service = slot.service.clone();
    let start = now();
    let in_flight = slot.begin();
    let result = match poll_fn(|cx| service.poll_ready(cx)).await {
        Ok(()) => service.call(req).await,
        Err(e) => Err(e),
    };
    let end = now();
    let rtt = end.saturating_duration_since(start);
    let outcome = shared.classify.classify(&result);
    drop(in_flight);
    slot.record(outcome, rtt);
    shared.balancer.observe(&slot.load, rtt, end);
    note_service_error(shared, slot, result.is_err());
    Attempt {
        result: result.map_err(Into::into),
        outcome,
        rtt,
        end,
    }
}

/// Tracks which endpoints' services are failing outright (connection
/// errors), and asks discovery to look again when every endpoint is: the
/// set may be stale. The scan runs only on an error, and only when the
/// channel has a refresh hint.
fn note_service_error<Req, S: Service<Req>>(shared: &Shared<Req, S>, slot: &Slot<S>, error: bool) {
    let was = slot.erroring.load(Ordering::Relaxed);
    if was != error {
        slot.erroring.store(error, Ordering::Relaxed);
    }
    if error && shared.policies.has_refresh_hint() {
        let current = shared.table.current();
        if current
            .slots
            .iter()
            .all(|s| s.erroring.load(Ordering::Relaxed))
        {
            shared.request_refresh();
        }
    }
}

/// The picked endpoint's slot (skipping ejected ones), or `None` when no
/// endpoint is eligible.
fn pick_slot<S>(snapshot: &Snapshot<S>, at: std::time::Instant) -> Option<Arc<Slot<S>>> {
    let eligible = |i: usize| !snapshot.slots[i].ejected.load(Ordering::Relaxed);
    with_thread_rng(|rng| snapshot.balancer.pick(snapshot, &eligible, at, rng))
        .map(|i| snapshot.slots[i].clone())
}

/// A call with no policy: one attempt on one picked endpoint.
///
/// The pick happens under a short-lived guard of the current snapshot and
/// only the picked slot is kept for the call, so a call never touches the
/// snapshot's reference count, which every core would contend on.
pub(crate) async fn call<Req, S>(
    shared: Arc<Handle<Req, S>>,
    req: Req,
) -> Result<S::Response, Error>
where
    S: Service<Req> + Clone,
    S::Response: 'static,
    S::Error: Into<BoxError> + 'static,
{
    let start = now();
    let picked = {
        let current = shared.table.current();
        (!current.slots.is_empty()).then(|| pick_slot(&current, start))
    };
    let picked = match picked {
        Some(picked) => picked,
        // Empty table: wait for discovery (the slow path).
        None => {
            let snapshot = shared
                .table
                .populated(shared.initial_wait, || shared.request_refresh())
                .await?;
            pick_slot(&snapshot, start)
        }
    };
    let Some(slot) = picked else {
        shared.request_refresh();
        return Err(Error::NoEndpoints);
    };
    let attempt = attempt(&shared, &slot, req).await;
    shared
        .metrics
        .record_call(attempt.outcome, now().saturating_duration_since(start));
    // A response the classifier called a failure is still the caller's
    // answer when nothing else will be tried.
    attempt.result.map_err(Error::Inner)
}
