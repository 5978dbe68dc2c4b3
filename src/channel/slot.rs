//! Everything the channel keeps about one endpoint, and how an attempt's
//! end is recorded on it.

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::shared::SetShared;
use super::slot_ref::SlotRef;
use super::state::ChannelState;
use crate::Endpoint;
use crate::balance::{AttemptEnd, End, Load};
use crate::classify::{Answered, Outcome, OutcomeSink, RawSink};
use crate::metrics::EndpointMetrics;
use crate::policy::breaker::{Admission, CircuitBreaker};
use crate::policy::limit::Limiter;

/// One endpoint of a channel.
///
/// Its load comes first: held through a [`SlotRef`](super::slot_ref::SlotRef),
/// the load's hot fields share a cache line with the reference count.
#[repr(C)]
pub(crate) struct Slot<S> {
    pub(crate) load: Load,
    pub(crate) endpoint: Endpoint,
    pub(crate) service: S,
    pub(crate) failures: AtomicU64,
    /// Set while the endpoint must get no picks (breaker open).
    pub(crate) ejected: AtomicBool,
    /// Whether the last attempt ended in an error from the service itself
    /// (a failed connection, not a response classified as failure).
    pub(crate) erroring: AtomicBool,
    /// The endpoint's circuit breaker, when the channel has breakers.
    pub(crate) breaker: Option<CircuitBreaker>,
    /// The endpoint's concurrency limiter, when the channel has
    /// per-endpoint limits.
    pub(crate) limiter: Option<Arc<Limiter>>,
    pub(crate) metrics: EndpointMetrics,
    /// The channel's shared state: its balancer learns from this endpoint's
    /// attempts, and a breaker change recomputes ejections.
    pub(crate) state: Arc<ChannelState>,
    /// The set state whose in-flight total this endpoint's attempts count
    /// in, when the channel keeps one (bounded loads).
    counted: Option<Arc<SetShared>>,
}

const FAILED: Outcome = Outcome::Failure { retryable: true };

impl<S> Slot<S> {
    pub(crate) fn new(
        endpoint: Endpoint,
        service: S,
        load: Load,
        state: Arc<ChannelState>,
    ) -> Self {
        Slot {
            breaker: state.make_breaker(endpoint.addr),
            limiter: state.make_limiter(endpoint.addr),
            metrics: state.metrics.endpoint(endpoint.addr),
            service,
            load,
            failures: AtomicU64::new(0),
            ejected: AtomicBool::new(false),
            erroring: AtomicBool::new(false),
            endpoint,
            counted: state.shared.counts_in_flight.then(|| state.shared.clone()),
            state,
        }
    }

    /// Marks an attempt as in flight.
    #[inline]
    pub(crate) fn begin(&self) {
        self.load.start();
        if let Some(set) = &self.counted {
            set.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        self.metrics.in_flight.increment(1.0);
    }

    /// Marks an attempt as no longer in flight (answered, cut or dropped).
    #[inline]
    pub(crate) fn leave(&self) {
        self.load.end();
        if let Some(set) = &self.counted {
            set.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        self.metrics.in_flight.decrement(1.0);
    }

    /// Notes whether this endpoint's service failed outright (not a
    /// response classified as failure), and asks discovery to look again
    /// when every endpoint's last attempt did: the set may be stale. The
    /// scan runs only on an error, and only when the channel has a refresh
    /// hint.
    #[inline]
    pub(crate) fn note_service_error(&self, error: bool) {
        if self.erroring.load(Ordering::Relaxed) != error {
            self.erroring.store(error, Ordering::Relaxed);
        }
        if error && self.state.has_refresh_hint() && self.state.all_erroring() {
            self.state.request_refresh();
        }
    }

    /// Records how an attempt ended: on the load (through the channel's
    /// balancer), the counters and metrics of an answer, and the breaker
    /// whose admission it holds (a timeout is a failure there, a
    /// cancellation gives the admission back).
    pub(crate) fn record(&self, end: &AttemptEnd, admission: Option<Admission>) {
        if let End::Response(outcome) = end.end {
            if !outcome.is_success() {
                self.failures.fetch_add(1, Ordering::Relaxed);
            }
            self.metrics.requests.record(outcome);
            self.metrics.duration.record(end.elapsed.as_secs_f64());
        }
        self.state.balancer.observe(&self.load, end);
        if self.state.throttling.load(Ordering::Relaxed) {
            // Accepted: answered with a success. A caller that gave up saw
            // no answer in time; an attempt that lost a hedge race says
            // nothing either way.
            let accepted = match end.end {
                End::Response(outcome) => Some(outcome.is_success()),
                End::Superseded => None,
                _ => Some(false),
            };
            if let Some(accepted) = accepted {
                self.state.throttle.record(end.at, accepted);
            }
        }
        if let (Some(breaker), Some(admission)) = (&self.breaker, admission) {
            let transition = match end.end {
                End::Response(outcome) => breaker.record(admission, outcome, end.elapsed, end.at),
                End::TimedOut => breaker.record(admission, FAILED, end.elapsed, end.at),
                _ => {
                    breaker.release(admission);
                    None
                }
            };
            if transition.is_some() {
                self.state.refresh_ejections();
            }
        }
    }
}

impl<S> Slot<S> {
    /// Gives back the place an attempt held under this endpoint's limit,
    /// with what its end teaches: an overloaded answer or a cut is a drop,
    /// a success a latency sample, anything else nothing. (With a
    /// classifier that defers, the head's outcome is what counts here.)
    pub(crate) fn leave_limit(&self, end: &AttemptEnd) {
        if let Some(limiter) = &self.limiter {
            limiter.leave_for(end);
        }
    }
}

/// Where a deferred outcome is recorded: the endpoint's slot, held until
/// then (as a plain pointer in the report: no allocation).
pub(crate) struct LateOutcome<S>(pub(crate) SlotRef<Slot<S>>);

impl<S: Send + Sync> OutcomeSink for LateOutcome<S> {
    fn record(&self, attempt: &Answered, outcome: Outcome) {
        let end = AttemptEnd::new(End::Response(outcome), attempt.elapsed, attempt.at);
        self.0
            .record(&end, attempt.admission.map(Admission::from_raw));
    }
}

// SAFETY: `SlotRef::from_raw` takes back what `SlotRef::into_raw` gave.
unsafe impl<S: Send + Sync + 'static> RawSink for LateOutcome<S> {
    fn into_raw(self) -> NonNull<()> {
        SlotRef::into_raw(self.0)
    }

    unsafe fn from_raw(raw: NonNull<()>) -> Self {
        // SAFETY: as the caller promises.
        LateOutcome(unsafe { SlotRef::from_raw(raw) })
    }
}
