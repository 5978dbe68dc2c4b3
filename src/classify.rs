//! Classifying results: success, failure (retryable or not), or overloaded.
//!
//! A channel does not know what a "failed" response is for your protocol: an
//! HTTP 503 is an `Ok` from hyper's point of view. A [`Classify`] maps each
//! `&Result<Response, Error>` to an [`Outcome`], which drives counters, the
//! circuit breaker, retries and hedging.
//!
//! The default, [`DefaultClassify`], calls every `Ok` a success and every `Err`
//! a retryable failure. Any `Fn(&Result<Resp, E>) -> Outcome` is a classifier:
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

/// The default classifier: `Ok` is a success, `Err` a retryable failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassify;

impl<Resp, E> Classify<Resp, E> for DefaultClassify {
    fn classify(&self, result: &Result<Resp, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure { retryable: true },
        }
    }
}

/// Where a deferred outcome is recorded (an endpoint of a channel).
pub(crate) trait OutcomeSink: Send + Sync {
    /// Records the final outcome of `attempt`.
    fn record(&self, attempt: &Answered, outcome: Outcome);
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
    sink: Option<Arc<dyn OutcomeSink>>,
    attempt: Answered,
    head: Outcome,
}

impl OutcomeReport {
    pub(crate) fn new(sink: Arc<dyn OutcomeSink>, attempt: Answered, head: Outcome) -> Self {
        OutcomeReport {
            sink: Some(sink),
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
            sink.record(&self.attempt, outcome);
        }
    }
}

impl Drop for OutcomeReport {
    fn drop(&mut self) {
        if let Some(sink) = self.sink.take() {
            sink.record(&self.attempt, self.head);
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
