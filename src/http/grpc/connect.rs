//! The gRPC connector: the HTTP connector, with response bodies that
//! report the status in their trailers.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project::pin_project;
use tower::Service;

use super::GrpcClassify;
use super::body::{GrpcStatusBody, PendingStatus, StatusSlot};
use crate::http::{Connector, EndpointService};
use crate::{BoxError, Endpoint};

/// The connector function for gRPC over `client` (`http://`): the argument
/// of [`Channel::builder`](crate::Channel::builder) for a gRPC channel.
///
/// Like [`crate::http::connect`] (each request pointed at its endpoint, the
/// answering address in [`EndpointAddr`](crate::http::EndpointAddr)), and
/// each response body is a [`GrpcStatusBody`], so that with
/// [`GrpcClassify`] a status in the trailers reaches the endpoint's breaker
/// and metrics. For TLS, see [`Connector::into_grpc_fn`].
pub fn connect<C>(client: C) -> impl Fn(&Endpoint) -> GrpcEndpointService<C> + Send + Sync + 'static
where
    C: Clone + Send + Sync + 'static,
{
    Connector::new(client).into_grpc_fn()
}

impl<C: Clone> Connector<C> {
    /// This connector as the function [`Channel::builder`](crate::Channel::builder)
    /// takes for gRPC: see [`connect`].
    pub fn into_grpc_fn(
        self,
    ) -> impl Fn(&Endpoint) -> GrpcEndpointService<C> + Send + Sync + 'static
    where
        C: Send + Sync + 'static,
    {
        move |endpoint| GrpcEndpointService::new(self.service(endpoint))
    }
}

/// The service of one endpoint for gRPC: an [`EndpointService`] whose
/// response bodies are [`GrpcStatusBody`]s. Made by [`connect`].
#[derive(Clone)]
pub struct GrpcEndpointService<C> {
    inner: EndpointService<C>,
}

impl<C> GrpcEndpointService<C> {
    /// Wraps the HTTP service of one endpoint.
    pub fn new(inner: EndpointService<C>) -> Self {
        GrpcEndpointService { inner }
    }

    /// The endpoint's address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr()
    }
}

impl<C> fmt::Debug for GrpcEndpointService<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("GrpcEndpointService")
            .field(&self.inner)
            .finish()
    }
}

impl<C, B, RB> Service<Request<B>> for GrpcEndpointService<C>
where
    C: Service<Request<B>, Response = Response<RB>>,
    C::Error: Into<BoxError>,
{
    type Response = Response<GrpcStatusBody<RB>>;
    type Error = BoxError;
    type Future = ResponseFuture<crate::http::ResponseFuture<C::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(req),
        }
    }
}

/// The future of a [`GrpcEndpointService`] call.
#[pin_project]
pub struct ResponseFuture<F> {
    #[pin]
    inner: F,
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<F, RB> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, BoxError>>,
{
    type Output = Result<Response<GrpcStatusBody<RB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = ready!(self.project().inner.poll(cx))?;
        // Only a status still to come needs a place for the report; the
        // classifier finds it in the extensions.
        let pending =
            GrpcClassify::status_in_trailers(&response).then(Arc::<PendingStatus>::default);
        if let Some(pending) = &pending {
            response
                .extensions_mut()
                .insert(StatusSlot(pending.clone()));
        }
        Poll::Ready(Ok(response.map(|body| GrpcStatusBody::new(body, pending))))
    }
}
