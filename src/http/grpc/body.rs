//! A response body that reports the gRPC status in its trailers.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;
use pin_project::pin_project;

use super::GrpcClassify;
use crate::classify::{Outcome, OutcomeReport};

/// The body of a gRPC response from a [`GrpcEndpointService`](super::GrpcEndpointService):
/// the client's body, unchanged, which records the call's final outcome
/// on the endpoint that answered when it ends.
///
/// A gRPC server that has started to answer puts the call's status in the
/// trailers, after the messages: a response can look fine when its headers
/// arrive and still end in `UNAVAILABLE`. When such a response comes
/// through a channel classified by [`GrpcClassify`], the channel hands the
/// attempt's [`OutcomeReport`] to this body (see
/// [late outcomes](crate::classify#late-outcomes)), and the body finishes
/// it when it ends:
///
/// - with trailers: their `grpc-status` (and pushback), as
///   [`GrpcClassify::classify_trailers`] says;
/// - without trailers: the status never came, an `UNKNOWN` error;
/// - with an error (a reset stream, a dropped connection): a retryable
///   failure.
///
/// So the endpoint's breaker, load and metrics see the status in the
/// trailers. The call itself was answered when the headers came: a status
/// in the trailers cannot make it retry (its caller is already reading the
/// body). A body dropped before its end records the outcome of the headers
/// (a success). A body whose response had its status in the headers
/// (Trailers-Only), or that did not come through such a channel, reports
/// nothing.
///
/// ```
/// use std::convert::Infallible;
/// use bytes::Bytes;
/// use http::{HeaderMap, Response};
/// use http_body_util::{BodyExt, Full};
/// use tower::{Service, ServiceExt, service_fn};
/// use towline::Channel;
/// use towline::discover::Static;
/// use towline::http::grpc::{self, GrpcClassify};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // An in-memory gRPC server: a message, then UNAVAILABLE in the trailers.
/// let server = service_fn(|_req: http::Request<String>| async {
///     let mut trailers = HeaderMap::new();
///     trailers.insert("grpc-status", "14".parse().unwrap());
///     let body = Full::new(Bytes::from_static(b"\0\0\0\0\0"))
///         .with_trailers(async move { Some(Ok(trailers)) });
///     Ok::<_, Infallible>(Response::new(body))
/// });
/// let addr: std::net::SocketAddr = "127.0.0.1:50051".parse()?;
/// let mut channel = Channel::builder(grpc::connect(server))
///     .discover(Static::new([addr]))
///     .classifier(GrpcClassify::new())
///     .build()?;
/// let response = channel.ready().await?.call(http::Request::new(String::new())).await?;
/// // Answered: the headers said nothing was wrong.
/// assert_eq!(channel.endpoints()[0].failures, 0);
/// let trailers = response.into_body().collect().await?.trailers().cloned();
/// assert_eq!(trailers.unwrap()["grpc-status"], "14");
/// // The trailers reached the endpoint: one failure.
/// assert_eq!(channel.endpoints()[0].failures, 1);
/// # Ok(())
/// # }
/// ```
#[pin_project]
pub struct GrpcStatusBody<B> {
    #[pin]
    inner: B,
    /// Where the channel leaves the attempt's report; `None` once ended, or
    /// for a response whose status is in its headers.
    status: Option<Arc<PendingStatus>>,
}

/// The report of an attempt whose status is in the trailers, left by
/// [`GrpcClassify::defer`] for the body to finish.
#[derive(Default)]
pub(crate) struct PendingStatus {
    report: Mutex<Option<(OutcomeReport, GrpcClassify)>>,
}

impl PendingStatus {
    /// Leaves `report`, to be finished as `classify` reads the trailers.
    pub(crate) fn wait(&self, report: OutcomeReport, classify: GrpcClassify) {
        *self.report.lock() = Some((report, classify));
    }

    /// Finishes the report, if one was left, with the outcome `end` gives.
    fn finish(&self, end: impl FnOnce(&GrpcClassify) -> Outcome) {
        let waiting = self.report.lock().take();
        if let Some((report, classify)) = waiting {
            report.finish(end(&classify));
        }
    }
}

/// In the extensions of a response whose status is in its trailers, until
/// the classifier takes it: how it reaches the body.
#[derive(Clone)]
pub(crate) struct StatusSlot(pub(crate) Arc<PendingStatus>);

impl<B> GrpcStatusBody<B> {
    /// `inner`, reporting to `status` when it ends.
    pub(crate) fn new(inner: B, status: Option<Arc<PendingStatus>>) -> Self {
        GrpcStatusBody { inner, status }
    }

    /// The client's body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The client's body, mutably.
    pub fn get_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    /// The client's body; its end is then reported by nobody (a report
    /// waiting for it records the headers' outcome).
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> fmt::Debug for GrpcStatusBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcStatusBody")
            .field("waiting", &self.status.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: Body> Body for GrpcStatusBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        // The body ends with its trailers, an error, or nothing more.
        let ended = match &frame {
            Some(Ok(f)) => f.is_trailers(),
            _ => true,
        };
        if ended && let Some(status) = this.status.take() {
            status.finish(|classify| match &frame {
                Some(Ok(f)) => match f.trailers_ref() {
                    Some(trailers) => classify.classify_trailers(trailers),
                    None => classify.classify_trailers(&HeaderMap::new()),
                },
                Some(Err(_)) => Outcome::Failure { retryable: true },
                None => classify.classify_trailers(&HeaderMap::new()),
            });
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
