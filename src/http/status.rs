//! Classifying HTTP responses by status code.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, Response, StatusCode, header::RETRY_AFTER};

use crate::classify::{Classify, Outcome};

/// Classifies HTTP results for a channel.
///
/// | result | outcome (default) |
/// |---|---|
/// | 429 Too Many Requests, 503 Service Unavailable | [`Outcome::Overloaded`], with the `Retry-After` header's delay (seconds or HTTP-date) |
/// | other 5xx | retryable failure ([`server_errors_retryable`](Self::server_errors_retryable) turns that off) |
/// | 1xx to 4xx but 429 | success: the endpoint did its job, the request was at fault |
/// | a transport error (refused connection, reset) | retryable failure |
/// | a transport error for a request that cannot be sent again ([`ReplayError`](super::ReplayError)), or a breaker's [`CircuitOpen`](crate::Error::CircuitOpen) | final failure |
///
/// [`status`](Self::status) fixes the outcome of any one status. A response
/// marked [`NotReplayable`](super::NotReplayable) is never retried: a
/// retryable outcome becomes a final failure.
///
/// ```
/// use std::time::Duration;
/// use http::{Response, StatusCode};
/// use towline::classify::{Classify, Outcome};
/// use towline::http::StatusClassify;
///
/// let classify = StatusClassify::new().status(StatusCode::NOT_IMPLEMENTED, Outcome::Failure { retryable: false });
/// let busy = Response::builder().status(503).header("retry-after", "2").body(()).unwrap();
/// let result: Result<_, std::io::Error> = Ok(busy);
/// assert_eq!(
///     classify.classify(&result),
///     Outcome::Overloaded { retry_after: Some(Duration::from_secs(2)) }
/// );
/// assert_eq!(classify.classify_status(StatusCode::BAD_GATEWAY), Outcome::Failure { retryable: true });
/// assert_eq!(classify.classify_status(StatusCode::NOT_IMPLEMENTED), Outcome::Failure { retryable: false });
/// assert_eq!(classify.classify_status(StatusCode::NOT_FOUND), Outcome::Success);
/// ```
#[derive(Debug, Clone)]
pub struct StatusClassify {
    server_errors_retryable: bool,
    fixed: Vec<(StatusCode, Outcome)>,
}

impl Default for StatusClassify {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusClassify {
    /// The default classification (see the table above).
    pub fn new() -> Self {
        StatusClassify {
            server_errors_retryable: true,
            fixed: Vec::new(),
        }
    }

    /// Whether 5xx other than 503 are retryable failures (default `true`);
    /// when `false` they are final failures.
    pub fn server_errors_retryable(mut self, retryable: bool) -> Self {
        self.server_errors_retryable = retryable;
        self
    }

    /// Fixes the outcome of `status`, whatever the defaults say. An
    /// [`Outcome::Overloaded`] without a delay still takes one from a
    /// `Retry-After` header.
    pub fn status(mut self, status: StatusCode, outcome: Outcome) -> Self {
        self.fixed.retain(|(s, _)| *s != status);
        self.fixed.push((status, outcome));
        self
    }

    /// The outcome of `status` alone, without headers.
    pub fn classify_status(&self, status: StatusCode) -> Outcome {
        if let Some((_, outcome)) = self.fixed.iter().find(|(s, _)| *s == status) {
            return *outcome;
        }
        match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                Outcome::Overloaded { retry_after: None }
            }
            s if s.is_server_error() => Outcome::Failure {
                retryable: self.server_errors_retryable,
            },
            _ => Outcome::Success,
        }
    }

    /// The outcome of a response with `status` and `headers`, reading a
    /// `Retry-After` date against `now`.
    pub fn classify_parts(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Outcome {
        match self.classify_status(status) {
            Outcome::Overloaded { retry_after: None } => Outcome::Overloaded {
                retry_after: retry_after(headers, now),
            },
            outcome => outcome,
        }
    }

    /// The outcome of `response` (a `Retry-After` date is read against the
    /// system clock).
    #[inline]
    pub fn classify_response<B>(&self, response: &Response<B>) -> Outcome {
        // The usual answer, with nothing configured: no table to look at.
        if response.status().as_u16() < 400 && self.fixed.is_empty() {
            return Outcome::Success;
        }
        self.classify_unusual(response)
    }

    /// [`classify_response`](Self::classify_response) past its fast path.
    #[inline(never)]
    fn classify_unusual<B>(&self, response: &Response<B>) -> Outcome {
        // The clock is read only when a Retry-After may need it.
        let outcome = match self.classify_status(response.status()) {
            Outcome::Overloaded { retry_after: None } => Outcome::Overloaded {
                retry_after: retry_after(response.headers(), SystemTime::now()),
            },
            outcome => outcome,
        };
        super::unless_unreplayable(response, outcome)
    }
}

impl<B, E: 'static> Classify<Response<B>, E> for StatusClassify {
    #[inline]
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        match result {
            Ok(response) => self.classify_response(response),
            Err(e) => super::error_outcome(e),
        }
    }
}

/// The delay a `Retry-After` header asks for, at `now`: a number of seconds,
/// or an HTTP-date (a date in the past is no delay). `None` when the header
/// is missing or malformed.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderMap;
/// use towline::http::retry_after;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", "120".parse().unwrap());
/// assert_eq!(retry_after(&headers, SystemTime::now()), Some(Duration::from_secs(120)));
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_770);
/// headers.insert("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap());
/// assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
/// ```
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for u64 seconds is "a very long time".
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxError;
    use crate::http::{NotReplayable, ReplayError};

    const EPOCH_1994: u64 = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT

    fn headers(retry_after: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, retry_after.parse().unwrap());
        h
    }

    #[test]
    fn retry_after_reads_seconds_and_all_three_date_forms() {
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let now = at(EPOCH_1994 - 30);
        for date in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                retry_after(&headers(date), now),
                Some(Duration::from_secs(30)),
                "{date}"
            );
        }
        // A date already past asks for no wait.
        assert_eq!(
            retry_after(
                &headers("Sun, 06 Nov 1994 08:49:37 GMT"),
                at(EPOCH_1994 + 5)
            ),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after(&headers(" 3 "), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(retry_after(&headers("0"), now), Some(Duration::ZERO));
        assert_eq!(
            retry_after(&headers("99999999999999999999999"), now),
            Some(Duration::from_secs(u64::MAX))
        );
        for bad in ["-1", "1.5", "soon", "", "Sun, 32 Nov 1994 08:49:37 GMT"] {
            assert_eq!(retry_after(&headers(bad), now), None, "{bad:?}");
        }
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn statuses_map_to_outcomes() {
        let c = StatusClassify::new();
        let now = SystemTime::UNIX_EPOCH;
        for (status, outcome) in [
            (200, Outcome::Success),
            (301, Outcome::Success),
            (404, Outcome::Success),
            (
                429,
                Outcome::Overloaded {
                    retry_after: Some(Duration::from_secs(4)),
                },
            ),
            (
                503,
                Outcome::Overloaded {
                    retry_after: Some(Duration::from_secs(4)),
                },
            ),
            (500, Outcome::Failure { retryable: true }),
            (502, Outcome::Failure { retryable: true }),
            (504, Outcome::Failure { retryable: true }),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(
                c.classify_parts(status, &headers("4"), now),
                outcome,
                "{status}"
            );
        }
        assert_eq!(
            c.classify_parts(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), now),
            Outcome::Overloaded { retry_after: None }
        );
        let strict = c.clone().server_errors_retryable(false);
        assert_eq!(
            strict.classify_status(StatusCode::INTERNAL_SERVER_ERROR),
            Outcome::Failure { retryable: false }
        );
        assert!(
            strict
                .classify_status(StatusCode::SERVICE_UNAVAILABLE)
                .is_overloaded()
        );
        let fixed = c
            .status(StatusCode::NOT_FOUND, Outcome::Failure { retryable: true })
            .status(
                StatusCode::SERVICE_UNAVAILABLE,
                Outcome::Failure { retryable: false },
            )
            .status(
                StatusCode::CONFLICT,
                Outcome::Overloaded { retry_after: None },
            );
        assert_eq!(
            fixed.classify_status(StatusCode::NOT_FOUND),
            Outcome::Failure { retryable: true }
        );
        assert_eq!(
            fixed.classify_status(StatusCode::SERVICE_UNAVAILABLE),
            Outcome::Failure { retryable: false }
        );
        assert_eq!(
            fixed.classify_parts(StatusCode::CONFLICT, &headers("1"), now),
            Outcome::Overloaded {
                retry_after: Some(Duration::from_secs(1))
            }
        );
    }

    #[test]
    fn errors_are_retryable_unless_the_request_cannot_be_sent_again() {
        let c = StatusClassify::new();
        let refused: Result<Response<()>, BoxError> = Err(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(c.classify(&refused), Outcome::Failure { retryable: true });
        let spent: Result<Response<()>, BoxError> =
            Err(Box::new(ReplayError::new(Some("reset".into()))));
        assert_eq!(c.classify(&spent), Outcome::Failure { retryable: false });
        let open: Result<Response<()>, crate::Error> = Err(crate::Error::CircuitOpen);
        assert_eq!(c.classify(&open), Outcome::Failure { retryable: false });
        let opaque: Result<Response<()>, u8> = Err(1);
        assert_eq!(c.classify(&opaque), Outcome::Failure { retryable: true });
    }

    #[test]
    fn an_unreplayable_response_is_final() {
        let c = StatusClassify::new();
        let mut busy = Response::builder().status(503).body(()).unwrap();
        busy.extensions_mut().insert(NotReplayable);
        assert_eq!(
            c.classify_response(&busy),
            Outcome::Failure { retryable: false }
        );
        let mut ok = Response::new(());
        ok.extensions_mut().insert(NotReplayable);
        assert_eq!(c.classify_response(&ok), Outcome::Success);
    }
}
