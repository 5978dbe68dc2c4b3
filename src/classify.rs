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
        let other: Result<(), Error> = Err(Error::NoEndpoints);
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
