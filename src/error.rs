//! The one error type of a channel and its policies, and the builder error.
//!
//! [`Error`] says why a call failed; every variant that wraps another error
//! exposes it through [`std::error::Error::source`], so the inner service's
//! own error stays reachable (downcast it from [`BoxError`]). `Display`
//! describes only this level and never repeats the source's text: walk
//! `source()` (as most error reporters do) for the whole chain.
//! [`BuildError`] says which builder setting was invalid and why.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::discover::DiscoverError;

/// A type-erased error, as tower uses.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a call through a towline channel or layer failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No endpoint was available: discovery has produced none (within the
    /// channel's initial wait), or every endpoint was excluded. Its
    /// `source()` is the last discovery error, if there was one.
    NoEndpoints {
        /// The name of the channel.
        channel: Arc<str>,
        /// The last error the discovery source reported, if any (for
        /// example, the name did not resolve).
        last_discovery_error: Option<DiscoverError>,
    },
    /// Discovery failed before any endpoint was ever known.
    Discovery(DiscoverError),
    /// One attempt took longer than the per-attempt timeout.
    AttemptTimeout(Duration),
    /// The overall deadline of the call passed (attempts and backoff
    /// included). Carries the last attempt's error, if there was one.
    DeadlineExceeded {
        /// The deadline that was exceeded.
        deadline: Duration,
        /// The last attempt's error, if any attempt finished.
        last: Option<Box<Error>>,
    },
    /// A circuit breaker is open and rejected the call without trying it.
    CircuitOpen,
    /// A concurrency limit was reached: the call was refused without being
    /// sent, at once or after a bounded wait in the limiter's queue (see
    /// [`crate::policy::limit`]). Nothing reached the service, so it is safe
    /// to try again later or elsewhere.
    Overloaded,
    /// Adaptive throttling refused the call locally: the backends have
    /// been refusing or failing most of this channel's recent attempts (see
    /// [`crate::policy::throttle`]). Nothing was sent.
    Throttled,
    /// Every allowed attempt failed; carries the last attempt's error.
    RetriesExhausted {
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        last: Box<Error>,
    },
    /// The retry budget refused a retry; carries the last attempt's error.
    BudgetExhausted {
        /// The last attempt's error.
        last: Box<Error>,
    },
    /// The inner (per-endpoint) service returned an error (a refused
    /// connection, say); the error is the source.
    ///
    /// A *response* that the classifier calls a failure (an HTTP 503, a gRPC
    /// `UNAVAILABLE`) is not an error: it steers retries and breakers, and
    /// when nothing else is tried the caller gets that response as `Ok`.
    Inner(BoxError),
}

impl Error {
    /// Wraps an inner service error.
    pub fn inner(e: impl Into<BoxError>) -> Self {
        Error::Inner(e.into())
    }

    /// True when this error (or the last attempt it carries) is a timeout of
    /// an attempt or of the deadline.
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::AttemptTimeout(_) | Error::DeadlineExceeded { .. } => true,
            Error::RetriesExhausted { last, .. } | Error::BudgetExhausted { last } => {
                last.is_timeout()
            }
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoEndpoints { channel, .. } => {
                write!(f, "no endpoints available on channel `{channel}`")
            }
            Error::Discovery(_) => f.write_str("discovery failed before any endpoint was known"),
            Error::AttemptTimeout(d) => write!(f, "attempt timed out after {d:?}"),
            Error::DeadlineExceeded { deadline, .. } => {
                write!(f, "deadline of {deadline:?} exceeded")
            }
            Error::CircuitOpen => f.write_str("circuit breaker is open"),
            Error::Overloaded => f.write_str("concurrency limit reached: call refused"),
            Error::Throttled => f.write_str(
                "refused by adaptive throttling: the backends are refusing most recent calls",
            ),
            Error::RetriesExhausted { attempts, .. } => {
                write!(f, "all {attempts} attempts failed")
            }
            Error::BudgetExhausted { .. } => f.write_str("retry budget exhausted"),
            Error::Inner(_) => f.write_str("the inner service failed"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Discovery(e) => Some(e),
            Error::NoEndpoints {
                last_discovery_error: Some(e),
                ..
            } => Some(e),
            Error::DeadlineExceeded { last, .. } => last
                .as_deref()
                .map(|e| e as &(dyn std::error::Error + 'static)),
            Error::RetriesExhausted { last, .. } | Error::BudgetExhausted { last } => Some(&**last),
            Error::Inner(e) => Some(&**e),
            _ => None,
        }
    }
}

/// An invalid builder setting: which setting, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    setting: &'static str,
    reason: String,
}

impl BuildError {
    /// An error for `setting`, explained by `reason`.
    pub fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        BuildError {
            setting,
            reason: reason.into(),
        }
    }

    /// The name of the offending setting.
    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// Why the setting was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid setting `{}`: {}", self.setting, self.reason)
    }
}

impl std::error::Error for BuildError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    /// Every level's text, joined the way error reporters join a chain.
    fn chain(e: &dyn std::error::Error) -> Vec<String> {
        let mut out = vec![e.to_string()];
        let mut next = e.source();
        while let Some(s) = next {
            out.push(s.to_string());
            next = s.source();
        }
        out
    }

    #[test]
    fn display_never_repeats_the_source() {
        let io = || std::io::Error::other("connection refused by 10.0.0.7");
        let errors = [
            Error::inner(io()),
            Error::Discovery(DiscoverError::with_source(
                "lookup of svc.test failed",
                io(),
            )),
            Error::RetriesExhausted {
                attempts: 3,
                last: Box::new(Error::inner(io())),
            },
            Error::BudgetExhausted {
                last: Box::new(Error::inner(io())),
            },
            Error::DeadlineExceeded {
                deadline: Duration::from_secs(1),
                last: Some(Box::new(Error::inner(io()))),
            },
        ];
        for e in &errors {
            let levels = chain(e);
            // The root cause's text appears exactly once in the whole chain.
            let mentions = levels
                .iter()
                .filter(|l| l.contains("connection refused"))
                .count();
            assert_eq!(mentions, 1, "{levels:?}");
            assert!(e.source().is_some());
        }
    }
}
