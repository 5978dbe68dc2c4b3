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

use std::time::Duration;

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
