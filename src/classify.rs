//! Classifying results: success, failure (retryable or not), or overloaded.
//!
//! A channel does not know what a "failed" response is for your protocol: an
//! HTTP 503 is an `Ok` from hyper's point of view. A [`Classify`] maps each
//! `&Result<Response, Error>` to an [`Outcome`], which drives counters, the
//! circuit breaker, retries and hedging.
//!
//! The default, [`DefaultClassify`], calls every `Ok` a success and every `Err`
//! a retryable failure, except a [`CircuitOpen`](crate::Error::CircuitOpen)
//! from a breaker below, which is a failure not worth retrying. With the
//! `http` feature, `towline::http` has classifiers for HTTP statuses and gRPC
//! status codes. Any `Fn(&Result<Resp, E>) -> Outcome` is a classifier:
//!
//! ```
//! use std::time::Duration;
//! use towline::classify::{Classify, Outcome};
//!
//! // An "HTTP-like" classifier over status codes.
//! let classify = |r: &Result<u16, std::io::Error>| match r {
//!     Ok(503) => Outcome::Overloaded { retry_after: Some(Duration::from_millis(50)) },
//!     Ok(s) if *s >= 500 => Outcome::Failure { retryable: true },
//!     Ok(s) if *s >= 400 => Outcome::Failure { retryable: false },
//!     Ok(_) => Outcome::Success,
//!     Err(_) => Outcome::Failure { retryable: true },
//! };
//! assert_eq!(classify.classify(&Ok(200)), Outcome::Success);
//! assert!(classify.classify(&Ok(503)).is_overloaded());
//! ```
//!
//! # Late outcomes
//!
//! Some protocols say how a call went only after the response was handed
//! over: gRPC puts its status in the trailers, at the end of the body. A
//! classifier whose [`Classify::defers`] is true gets each answered
//! response and an [`OutcomeReport`] through [`Classify::defer`], after
//! classifying its head as usual. The head's outcome still drives retries
//! and hedging (the call cannot wait for a body its caller has not read);
//! the report records the final outcome on the endpoint (its breaker, its
//! load and its metrics) when [`OutcomeReport::finish`] is called, typically
//! when the body ends, or the head's outcome if it is dropped unfinished.
//! Classifiers that do not defer cost nothing for it.
//!
//! ```
//! use towline::classify::{Classify, Outcome, OutcomeReport};
//!
//! /// A response whose status arrives with its last chunk.
//! struct Streamed { report: Option<OutcomeReport> }
//!
//! impl Streamed {
//!     fn end(&mut self, status_ok: bool) {
//!         if let Some(report) = self.report.take() {
//!             report.finish(if status_ok { Outcome::Success } else { Outcome::Failure { retryable: false } });
//!         }
//!     }
//! }
//!
//! struct Trailers;
//!
//! impl Classify<Streamed, std::io::Error> for Trailers {
//!     fn classify(&self, r: &Result<Streamed, std::io::Error>) -> Outcome {
//!         if r.is_ok() { Outcome::Success } else { Outcome::Failure { retryable: true } }
//!     }
//!     fn defers(&self) -> bool {
//!         true
//!     }
//!     fn defer(&self, response: &mut Streamed, report: OutcomeReport) {
//!         response.report = Some(report);
//!     }
//! }
//!
//! let mut response = Streamed { report: None };
//! Trailers.defer(&mut response, OutcomeReport::detached(Outcome::Success));
//! response.end(false);
//! ```

use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one attempt's result means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The call succeeded.
    Success,
    /// The call failed; `retryable` says whether another attempt may help.
    Failure {
        /// Whether the request may be sent again.
        retryable: bool,
    },
    /// The server refused the work because it is overloaded: retry elsewhere,
    /// not sooner than `retry_after` when the server gave one.
    Overloaded {
        /// How long the server asked callers to wait, if it said.
        retry_after: Option<Duration>,
    },
}

impl Outcome {
    /// True for [`Outcome::Success`].
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }

    /// True when another attempt may be made: a retryable failure or an
    /// overload.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Outcome::Failure { retryable: true } | Outcome::Overloaded { .. }
        )
    }

    /// True for [`Outcome::Overloaded`].
    pub fn is_overloaded(&self) -> bool {
        matches!(self, Outcome::Overloaded { .. })
    }
}

/// Maps an attempt's result to an [`Outcome`].
pub trait Classify<Resp, E>: Send + Sync + 'static {
    /// Classifies one result.
    fn classify(&self, result: &Result<Resp, E>) -> Outcome;

    /// Whether answered responses get their final outcome later, through
    /// [`defer`](Self::defer) (default `false`). Asked once, when a channel
    /// is built.
    fn defers(&self) -> bool {
        false
    }

    /// Takes an answered response (`Ok`) and the report of its attempt,
    /// when [`defers`](Self::defers) is true: keep the report with the
    /// response (for example in its body) and
    /// [`finish`](OutcomeReport::finish) it when the outcome is known.
    /// The default drops it, which records the head's outcome.
    fn defer(&self, response: &mut Resp, report: OutcomeReport) {
        let _ = (response, report);
    }
}

impl<Resp, E, F> Classify<Resp, E> for F
where
    F: Fn(&Result<Resp, E>) -> Outcome + Send + Sync + 'static,
{
    fn classify(&self, result: &Result<Resp, E>) -> Outcome {
        self(result)
    }
}

/// The default classifier: `Ok` is a success, `Err` a retryable failure,
/// except [`Error::CircuitOpen`](crate::Error::CircuitOpen).
///
/// A `CircuitOpen` error comes from a circuit breaker *below* the policy
/// that classifies (a [`CircuitBreakerLayer`](crate::policy::CircuitBreakerLayer)
/// under a [`RetryLayer`](crate::policy::RetryLayer), say): the breaker
/// refused the call without sending it, and asking it again at once would
/// only be refused again while spending the retry budget. It is a
/// non-retryable failure. It is recognised when the inner error type is
/// [`crate::Error`] or a [`BoxError`](crate::BoxError) holding one.
///
/// ```
/// use towline::Error;
/// use towline::classify::{Classify, DefaultClassify, Outcome};
///
/// let open: Result<(), Error> = Err(Error::CircuitOpen);
/// assert_eq!(DefaultClassify.classify(&open), Outcome::Failure { retryable: false });
/// let refused: Result<(), std::io::Error> = Err(std::io::ErrorKind::ConnectionRefused.into());
/// assert_eq!(DefaultClassify.classify(&refused), Outcome::Failure { retryable: true });
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassify;

impl<Resp, E: 'static> Classify<Resp, E> for DefaultClassify {
    fn classify(&self, result: &Result<Resp, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) => Outcome::Failure {
                retryable: !is_circuit_open(e),
            },
        }
    }
}

/// Where a deferred outcome is recorded (an endpoint of a channel).
pub(crate) trait OutcomeSink: Send + Sync {
    /// Records the final outcome of `attempt`.
    fn record(&self, attempt: &Answered, outcome: Outcome);
}

/// An owned sink that a report can hold as a plain pointer, so that
/// deferring an outcome allocates nothing (an endpoint's slot reference).
///
/// # Safety
///
/// [`into_raw`](Self::into_raw) must give a pointer that stays valid
/// until [`from_raw`](Self::from_raw) takes it back, once, as the same
/// sink.
pub(crate) unsafe trait RawSink: OutcomeSink + Sized + 'static {
    /// The sink as a pointer, owning it.
    fn into_raw(self) -> NonNull<()>;

    /// The sink `raw` came from.
    ///
    /// # Safety
    ///
    /// `raw` comes from [`into_raw`](Self::into_raw) on this type and is
    /// taken back once.
    unsafe fn from_raw(raw: NonNull<()>) -> Self;
}

impl<T: OutcomeSink> OutcomeSink for Arc<T> {
    fn record(&self, attempt: &Answered, outcome: Outcome) {
        (**self).record(attempt, outcome);
    }
}

// SAFETY: `Arc::from_raw` takes back what `Arc::into_raw` gave, once.
unsafe impl<T: OutcomeSink + 'static> RawSink for Arc<T> {
    fn into_raw(self) -> NonNull<()> {
        NonNull::new(Arc::into_raw(self).cast_mut().cast()).expect("an Arc is never null")
    }

    unsafe fn from_raw(raw: NonNull<()>) -> Self {
        // SAFETY: as the caller promises.
        unsafe { Arc::from_raw(raw.cast::<T>().as_ptr()) }
    }
}

/// A sink held as a pointer with the one function that uses it: records
/// through the sink and releases it.
struct HeldSink {
    raw: NonNull<()>,
    finish: unsafe fn(NonNull<()>, &Answered, Outcome),
}

// SAFETY: the pointer is an owned `RawSink`, which is `Send + Sync`.
unsafe impl Send for HeldSink {}
// SAFETY: as for `Send`.
unsafe impl Sync for HeldSink {}

impl HeldSink {
    fn new<P: RawSink>(sink: P) -> Self {
        /// Takes the sink back, records through it, drops it.
        unsafe fn finish<P: RawSink>(raw: NonNull<()>, attempt: &Answered, outcome: Outcome) {
            // SAFETY: `raw` came from `P::into_raw` and is finished once.
            let sink = unsafe { P::from_raw(raw) };
            sink.record(attempt, outcome);
        }
        HeldSink {
            raw: sink.into_raw(),
            finish: finish::<P>,
        }
    }

    fn finish(self, attempt: &Answered, outcome: Outcome) {
        // SAFETY: `self` is consumed, so the sink is taken back once.
        unsafe { (self.finish)(self.raw, attempt, outcome) }
    }
}

/// An answered attempt whose outcome is deferred.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answered {
    /// From sending to the answer.
    pub(crate) elapsed: Duration,
    /// When the answer came.
    pub(crate) at: Instant,
    /// The breaker admission the attempt holds, in raw form.
    pub(crate) admission: Option<(u64, bool)>,
}

/// Records the final outcome of one answered attempt, later (see
/// [Late outcomes](self#late-outcomes)).
///
/// [`finish`](Self::finish) records the given outcome; dropping the report
/// unfinished records the outcome the head was classified with. Either way
/// it records once.
pub struct OutcomeReport {
    sink: Option<HeldSink>,
    attempt: Answered,
    head: Outcome,
}

impl OutcomeReport {
    pub(crate) fn new<P: RawSink>(sink: P, attempt: Answered, head: Outcome) -> Self {
        OutcomeReport {
            sink: Some(HeldSink::new(sink)),
            attempt,
            head,
        }
    }

    /// A report that records nowhere: for testing a classifier alone.
    pub fn detached(head: Outcome) -> Self {
        OutcomeReport {
            sink: None,
            attempt: Answered {
                elapsed: Duration::ZERO,
                at: Instant::now(),
                admission: None,
            },
            head,
        }
    }

    /// The outcome the response's head was classified with (what a dropped
    /// report records).
    pub fn head_outcome(&self) -> Outcome {
        self.head
    }

    /// How long the attempt took until its response came.
    pub fn elapsed(&self) -> Duration {
        self.attempt.elapsed
    }

    /// Records `outcome` as the attempt's final outcome.
    pub fn finish(mut self, outcome: Outcome) {
        if let Some(sink) = self.sink.take() {
            sink.finish(&self.attempt, outcome);
        }
    }
}

impl Drop for OutcomeReport {
    fn drop(&mut self) {
        if let Some(sink) = self.sink.take() {
            sink.finish(&self.attempt, self.head);
        }
    }
}

impl fmt::Debug for OutcomeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutcomeReport")
            .field("head", &self.head)
            .field("elapsed", &self.attempt.elapsed)
            .field("recorded", &self.sink.is_none())
            .finish()
    }
}

/// `e` as a `dyn Error`, when its type is one of the usual erased or
/// towline forms: [`crate::Error`], [`BoxError`](crate::BoxError) (with or
/// without `Sync`) or `std::io::Error`. Other types are opaque here.
pub(crate) fn as_error<E: 'static>(e: &E) -> Option<&(dyn std::error::Error + 'static)> {
    let any = e as &dyn std::any::Any;
    if let Some(e) = any.downcast_ref::<crate::Error>() {
        return Some(e);
    }
    if let Some(e) = any.downcast_ref::<crate::BoxError>() {
        return Some(&**e);
    }
    if let Some(e) = any.downcast_ref::<Box<dyn std::error::Error + Send + 'static>>() {
        return Some(&**e);
    }
    if let Some(e) = any.downcast_ref::<std::io::Error>() {
        return Some(e);
    }
    None
}

/// True when `e` is a breaker's refusal ([`crate::Error::CircuitOpen`]).
pub(crate) fn is_circuit_open<E: 'static>(e: &E) -> bool {
    as_error(e)
        .and_then(|e| e.downcast_ref::<crate::Error>())
        .is_some_and(|e| matches!(e, crate::Error::CircuitOpen))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BoxError, Error};

    #[test]
    fn circuit_open_from_below_is_not_retried() {
        let direct: Result<(), Error> = Err(Error::CircuitOpen);
        let boxed: Result<(), BoxError> = Err(Box::new(Error::CircuitOpen));
        let other: Result<(), Error> =
            Err(Error::AttemptTimeout(std::time::Duration::from_millis(1)));
        let io: Result<(), std::io::Error> = Err(std::io::Error::other("reset"));
        let no = Outcome::Failure { retryable: false };
        let yes = Outcome::Failure { retryable: true };
        assert_eq!(DefaultClassify.classify(&direct), no);
        assert_eq!(DefaultClassify.classify(&boxed), no);
        assert_eq!(DefaultClassify.classify(&other), yes);
        assert_eq!(DefaultClassify.classify(&io), yes);
        assert_eq!(
            DefaultClassify.classify(&Ok::<_, Error>(())),
            Outcome::Success
        );
    }

    /// The user trial's case: a retry over a single-host breaker. An open
    /// breaker ends the call at once instead of spending retries (and the
    /// budget) on refusals.
    #[tokio::test]
    async fn a_retry_over_an_open_breaker_stops_at_the_first_refusal() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU32, Ordering};
        use tower::{ServiceBuilder, ServiceExt, service_fn};

        use crate::policy::breaker::BreakerSettings;
        use crate::policy::retry::RetrySettings;
        use crate::policy::{CircuitBreakerLayer, RetryLayer};

        let breaker = CircuitBreakerLayer::new(BreakerSettings::default()).unwrap();
        breaker.breaker().force_open();
        let retry = RetryLayer::new(RetrySettings::default().with_max_attempts(5)).unwrap();
        let attempts = Arc::new(AtomicU32::new(0));
        let seen = attempts.clone();
        let svc = ServiceBuilder::new()
            .layer(retry)
            .map_request(move |r: u32| {
                seen.fetch_add(1, Ordering::SeqCst);
                r
            })
            .layer(breaker)
            .service(service_fn(|_: u32| async { Ok::<_, Error>(()) }));
        let err = svc.oneshot(1).await.unwrap_err();
        assert!(matches!(err, Error::CircuitOpen), "{err:?}");
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            1,
            "one attempt, no retries"
        );
    }
}
