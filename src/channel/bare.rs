//! The bare call path: no policy, one attempt on one picked endpoint.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tower::Service;
use tracing::Span;

use super::attempt::{Attempt, outcome_name};
use super::inner::Handle;
use super::limits::Entry;
use super::slot::Slot;
use super::state::ChannelState;
use super::table::Snapshot;
use crate::balance::PickContext;
use crate::classify::Outcome;
use crate::policy::call::{AttemptKind, Ended};
use crate::rng::with_thread_rng;
use crate::{BoxError, Error};

/// The picked endpoint's slot (skipping ejected ones), or `None` when no
/// endpoint is eligible. A request with a hash `key` goes to the keyed
/// balancer, when the channel has one.
fn pick<S>(
    snapshot: &Snapshot<S>,
    at: Instant,
    key: Option<u64>,
    state: &ChannelState,
) -> Option<Arc<Slot<S>>> {
    let balancer = snapshot.balancer_for(key);
    let at = PickContext {
        now: at,
        key,
        ramps: Some(&snapshot.shared.ramps),
    };
    let picked = if state.ejected() == 0 {
        // Nothing ejected: no endpoint needs a look before it is picked.
        with_thread_rng(|rng| balancer.pick(&at, snapshot, &|_| true, rng))
    } else {
        let eligible = |i: usize| !snapshot.slot(i).ejected.load(Ordering::Relaxed);
        with_thread_rng(|rng| balancer.pick(&at, snapshot, &eligible, rng))
    };
    picked.map(|i| snapshot.slot(i).clone())
}

/// A call with no policy but, perhaps, the channel's concurrency limit: one
/// attempt on one picked endpoint.
///
/// The pick happens under a short-lived guard of the current snapshot and
/// only the picked slot is kept for the call, so a call never touches the
/// snapshot's reference count, which every core would contend on. The
/// clock is read twice: at the start and when the answer comes; the
/// limiter's sample is made of those two readings.
pub(crate) async fn bare<Req, S>(
    handle: Arc<Handle<Req, S>>,
    req: Req,
    span: Span,
    entry: Entry,
) -> Result<S::Response, Error>
where
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Response: 'static,
    S::Error: Into<BoxError> + 'static,
{
    let place = entry.enter(handle.limiter.as_deref()).await?;
    let inner = &*handle.inner;
    let start = crate::clock::now();
    let key = inner.key(&req);
    let picked = {
        let current = inner.table.current();
        (!current.is_empty()).then(|| pick(&current, start, key, &inner.state))
    };
    let picked = match picked {
        Some(picked) => picked,
        // Empty table: wait for discovery (the slow path).
        None => pick(&*inner.populated().await?, start, key, &inner.state),
    };
    let Some(slot) = picked else {
        return Err(inner.no_endpoint());
    };
    let attempt = Attempt::new(
        inner,
        slot,
        req,
        1,
        AttemptKind::First,
        start,
        None,
        None,
        false,
        &span,
    );
    let finished = attempt.await;
    let (outcome, timed_out) = match finished.ended {
        Ended::Answered(outcome) => (outcome, false),
        Ended::TimedOut => (Outcome::Failure { retryable: true }, true),
    };
    place.settle(outcome, timed_out, finished.elapsed, finished.at);
    inner.state.metrics.record_call(outcome, finished.elapsed);
    span.record("outcome", outcome_name(outcome));
    // A response the classifier called a failure is still the caller's
    // answer when nothing else will be tried.
    finished
        .result
        .unwrap_or_else(|| Err(Error::inner("an attempt without a time limit timed out")))
}
