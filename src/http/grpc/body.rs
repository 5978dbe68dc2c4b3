//! A response body that reports the gRPC status in its trailers.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;

use super::GrpcClassify;
use crate::classify::Outcome;

/// Wraps a gRPC response body whose status comes in its trailers, and calls
/// `on_end` once with the call's [`Outcome`] when the body ends:
///
/// - trailers: their `grpc-status` (and pushback), as
///   [`GrpcClassify::classify_trailers`] says;
/// - the end without trailers: the status never came, an `UNKNOWN` error;
/// - an error from the body (a reset stream, a dropped connection): a
///   retryable failure.
///
/// If the body is dropped before it ends (the caller stopped reading),
/// `on_end` is not called: nothing is known about the call.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use http::HeaderMap;
/// use http_body_util::{BodyExt, Full, combinators::BoxBody};
/// use towline::classify::Outcome;
/// use towline::http::grpc::{GrpcClassify, GrpcStatusBody};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut trailers = HeaderMap::new();
/// trailers.insert("grpc-status", "14".parse().unwrap());
/// let body = Full::new(bytes::Bytes::from_static(b"msg")).with_trailers(async move { Some(Ok(trailers)) });
/// let seen = Arc::new(Mutex::new(None));
/// let report = seen.clone();
/// let body = GrpcStatusBody::new(body, GrpcClassify::new(), move |o| *report.lock().unwrap() = Some(o));
/// body.collect().await.unwrap();
/// assert_eq!(*seen.lock().unwrap(), Some(Outcome::Failure { retryable: true }));
/// # }
/// ```
#[pin_project]
pub struct GrpcStatusBody<B, F> {
    #[pin]
    inner: B,
    classify: GrpcClassify,
    on_end: Option<F>,
}

impl<B, F: FnOnce(Outcome)> GrpcStatusBody<B, F> {
    /// Wraps `inner`; `classify` maps the status to an outcome.
    pub fn new(inner: B, classify: GrpcClassify, on_end: F) -> Self {
        GrpcStatusBody {
            inner,
            classify,
            on_end: Some(on_end),
        }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B, F> fmt::Debug for GrpcStatusBody<B, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcStatusBody")
            .field("ended", &self.on_end.is_none())
            .finish_non_exhaustive()
    }
}

impl<B, F> Body for GrpcStatusBody<B, F>
where
    B: Body,
    F: FnOnce(Outcome),
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let outcome = match &frame {
            Some(Ok(f)) => f.trailers_ref().map(|t| this.classify.classify_trailers(t)),
            Some(Err(_)) => Some(Outcome::Failure { retryable: true }),
            None => Some(this.classify.classify_trailers(&http::HeaderMap::new())),
        };
        if let Some(outcome) = outcome
            && let Some(report) = this.on_end.take()
        {
            report(outcome);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
