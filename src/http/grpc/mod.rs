//! gRPC: status-code classification, retry pushback and deadlines.
//!
//! A gRPC call is an HTTP/2 request; its outcome is the `grpc-status` code,
//! which arrives either in the response headers (a "Trailers-Only" response,
//! which is how servers answer most errors, tonic's included) or in the
//! trailers after the body. [`GrpcClassify`] reads it from the headers at
//! once. For a status in the trailers, a channel built with [`connect`]
//! (the gRPC connector) and `GrpcClassify` records the outcome on the
//! endpoint when the body ends ([`GrpcStatusBody`]): its breaker, load and
//! metrics see it, but the call, already answered, is not retried.
//!
//! | code | outcome (default) |
//! |---|---|
//! | `OK` | success |
//! | `UNAVAILABLE` | retryable failure |
//! | `RESOURCE_EXHAUSTED` | [`Outcome::Overloaded`] |
//! | every other code (`DEADLINE_EXCEEDED`, `INTERNAL`, …) | final failure |
//!
//! [`GrpcClassify::code`] changes any of them. A server's
//! `grpc-retry-pushback-ms` header is honoured on a retryable code: a delay
//! of that many milliseconds (the outcome becomes `Overloaded` with that
//! delay), and a negative or malformed value means "do not retry". An HTTP
//! status other than 200 without a `grpc-status` is mapped to a code as the
//! gRPC HTTP mapping says (502, 503, 504 and 429 are `UNAVAILABLE`).
//!
//! Deadlines: [`propagate_deadline`] is the attempt hook that gives each
//! attempt's server the time the attempt has left
//! (`.on_attempt(grpc::propagate_deadline)`); [`set_grpc_timeout`] writes
//! a `grpc-timeout` header (at most 8 digits and a unit, rounded up) and
//! [`parse_grpc_timeout`] reads one, as a server does.
//!
//! ```
//! use http::Response;
//! use towline::classify::{Classify, Outcome};
//! use towline::http::grpc::{Code, GrpcClassify};
//!
//! let classify = GrpcClassify::new().code(Code::Internal, Outcome::Failure { retryable: true });
//! let unavailable = Response::builder()
//!     .header("content-type", "application/grpc")
//!     .header("grpc-status", "14")
//!     .body(())
//!     .unwrap();
//! let result: Result<_, std::io::Error> = Ok(unavailable);
//! assert_eq!(classify.classify(&result), Outcome::Failure { retryable: true });
//! ```

mod body;
mod connect;
mod timeout;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, Response, StatusCode};

pub use body::GrpcStatusBody;
pub use connect::{GrpcEndpointService, ResponseFuture, connect};
pub use timeout::{
    GRPC_TIMEOUT, encode_grpc_timeout, parse_grpc_timeout, propagate_deadline, set_grpc_timeout,
};

use body::StatusSlot;

use crate::classify::{Classify, Outcome, OutcomeReport};

/// The `grpc-status` header.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// The `grpc-retry-pushback-ms` header.
pub const GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// A gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// 0: not an error.
    Ok = 0,
    /// 1: cancelled, usually by the caller.
    Cancelled = 1,
    /// 2: unknown error.
    Unknown = 2,
    /// 3: the client sent an invalid argument.
    InvalidArgument = 3,
    /// 4: the deadline expired before the operation completed.
    DeadlineExceeded = 4,
    /// 5: a requested entity was not found.
    NotFound = 5,
    /// 6: the entity the client tried to create already exists.
    AlreadyExists = 6,
    /// 7: the caller may not do this.
    PermissionDenied = 7,
    /// 8: a resource (a quota, the server's capacity) is exhausted.
    ResourceExhausted = 8,
    /// 9: the system is not in a state the operation needs.
    FailedPrecondition = 9,
    /// 10: aborted, usually by a concurrency conflict.
    Aborted = 10,
    /// 11: past the valid range.
    OutOfRange = 11,
    /// 12: not implemented or not supported.
    Unimplemented = 12,
    /// 13: an internal error.
    Internal = 13,
    /// 14: the service is unavailable now; most likely transient.
    Unavailable = 14,
    /// 15: unrecoverable data loss.
    DataLoss = 15,
    /// 16: the caller is not authenticated.
    Unauthenticated = 16,
}

const CODES: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

impl Code {
    /// The code with this number; numbers outside 0 to 16 are `Unknown`,
    /// as gRPC says.
    pub fn from_i32(n: i32) -> Code {
        usize::try_from(n)
            .ok()
            .and_then(|i| CODES.get(i).copied())
            .unwrap_or(Code::Unknown)
    }

    /// The code a `grpc-status` value names (`None` when it is not a number).
    pub fn from_header(value: &http::HeaderValue) -> Option<Code> {
        let text = value.to_str().ok()?.trim();
        text.parse::<i32>().ok().map(Code::from_i32)
    }

    /// The code for an HTTP status of a response without `grpc-status`, as
    /// gRPC's HTTP-to-gRPC mapping gives it.
    pub fn from_http(status: StatusCode) -> Code {
        match status.as_u16() {
            200 => Code::Ok,
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

/// Classifies gRPC results by status code; see the [module docs](self).
/// Cheap to clone (the code table is shared).
#[derive(Debug, Clone)]
pub struct GrpcClassify {
    outcomes: Arc<[Outcome; 17]>,
}

impl Default for GrpcClassify {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcClassify {
    /// The default classification (see the [module docs](self)).
    pub fn new() -> Self {
        let outcomes = CODES.map(|code| match code {
            Code::Ok => Outcome::Success,
            Code::Unavailable => Outcome::Failure { retryable: true },
            Code::ResourceExhausted => Outcome::Overloaded { retry_after: None },
            _ => Outcome::Failure { retryable: false },
        });
        GrpcClassify {
            outcomes: Arc::new(outcomes),
        }
    }

    /// Sets the outcome of `code`. Application errors that say nothing
    /// about the server's health (`NOT_FOUND`, `INVALID_ARGUMENT`, …) can
    /// be made successes here, so that breakers do not count them.
    pub fn code(mut self, code: Code, outcome: Outcome) -> Self {
        Arc::make_mut(&mut self.outcomes)[code as usize] = outcome;
        self
    }

    /// The outcome of `code` with the pushback header value, if any.
    pub fn classify_code(&self, code: Code, pushback: Option<&http::HeaderValue>) -> Outcome {
        let outcome = self.outcomes[code as usize];
        match pushback {
            Some(value) if outcome.is_retryable() => match parse_pushback(value) {
                Some(delay) => Outcome::Overloaded {
                    retry_after: Some(delay),
                },
                // The server asked for no retry.
                None => Outcome::Failure { retryable: false },
            },
            _ => outcome,
        }
    }

    /// The outcome of a trailers map (or Trailers-Only headers) that holds
    /// `grpc-status`; `None` when it does not.
    pub fn classify_status_headers(&self, headers: &HeaderMap) -> Option<Outcome> {
        let code = headers
            .get(GRPC_STATUS)
            .map(|v| Code::from_header(v).unwrap_or(Code::Unknown))?;
        Some(self.classify_code(code, headers.get(GRPC_RETRY_PUSHBACK_MS)))
    }

    /// The outcome of the trailers that end a response body. Trailers
    /// without `grpc-status` are an `UNKNOWN` error.
    pub fn classify_trailers(&self, trailers: &HeaderMap) -> Outcome {
        self.classify_status_headers(trailers)
            .unwrap_or_else(|| self.classify_code(Code::Unknown, None))
    }

    /// Whether the status of `response` is still to come, in its trailers
    /// (HTTP 200 without `grpc-status` in the headers): then its
    /// [`GrpcStatusBody`] reports it.
    pub fn status_in_trailers<B>(response: &Response<B>) -> bool {
        response.status() == StatusCode::OK && !response.headers().contains_key(GRPC_STATUS)
    }

    /// The outcome known from a response's head: its `grpc-status`
    /// (Trailers-Only), the HTTP status mapped to a code, or a success for
    /// now when the status comes in the trailers.
    pub fn classify_response<B>(&self, response: &Response<B>) -> Outcome {
        let outcome = match self.classify_status_headers(response.headers()) {
            Some(outcome) => outcome,
            None if response.status() == StatusCode::OK => Outcome::Success,
            None => self.classify_code(Code::from_http(response.status()), None),
        };
        super::unless_unreplayable(response, outcome)
    }
}

impl<B, E: 'static> Classify<Response<B>, E> for GrpcClassify {
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        match result {
            Ok(response) => self.classify_response(response),
            Err(e) => super::error_outcome(e),
        }
    }

    /// True: a response whose status is in its trailers gets its final
    /// outcome when its body ends.
    fn defers(&self) -> bool {
        true
    }

    /// Leaves the report with the response's [`GrpcStatusBody`] when the
    /// status is still to come; otherwise (the status was in the headers,
    /// or the body is not a `GrpcStatusBody`) the report is dropped here,
    /// which records the headers' outcome at once.
    fn defer(&self, response: &mut Response<B>, report: OutcomeReport) {
        if let Some(StatusSlot(pending)) = response.extensions_mut().remove::<StatusSlot>() {
            pending.wait(report, self.clone());
        }
    }
}

/// A `grpc-retry-pushback-ms` value: milliseconds to wait, or `None` for a
/// negative or malformed value (which asks not to retry).
fn parse_pushback(value: &http::HeaderValue) -> Option<Duration> {
    let ms: i64 = value.to_str().ok()?.trim().parse().ok()?;
    u64::try_from(ms).ok().map(Duration::from_millis)
}

#[cfg(test)]
mod tests;
