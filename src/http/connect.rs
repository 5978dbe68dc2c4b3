//! The connector: one service per endpoint over a shared HTTP client.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use pin_project::pin_project;
use tower::Service;

use super::replay::{NotReplayable, ReplayError, ReplayTicket};
use super::target::{TargetRef, target};
use crate::{BoxError, Endpoint};

/// The address of the endpoint that answered, in every response's
/// extensions.
///
/// ```
/// # use towline::http::EndpointAddr;
/// # let response = http::Response::new(());
/// if let Some(EndpointAddr(addr)) = response.extensions().get::<EndpointAddr>() {
///     println!("answered by {addr}");
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointAddr(pub SocketAddr);

/// Makes the per-endpoint services of a channel from one HTTP client.
///
/// Each endpoint's [`EndpointService`] sends through a clone of the client
/// (a hyper-util `Client` is a handle on one connection pool, so every
/// endpoint shares it). Scheme: `http` by default.
///
/// The request's URI is rewritten to `scheme://endpoint-address/path?query`;
/// headers are kept as they are, so a `Host` header set by the caller (for
/// name-based virtual hosting) wins over the address that HTTP/1 clients
/// otherwise derive from the URI.
///
/// ```
/// use http::uri::Scheme;
/// use towline::http::Connector;
/// # let client = tower::service_fn(|_: http::Request<String>| async {
/// #     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
/// # });
/// let connect = Connector::new(client).scheme(Scheme::HTTPS).into_fn();
/// # let _ = connect;
/// ```
#[derive(Debug, Clone)]
pub struct Connector<C> {
    client: C,
    scheme: Scheme,
    mark: bool,
}

impl<C: Clone> Connector<C> {
    /// A connector over `client`, for `http://`, that marks responses with
    /// [`EndpointAddr`].
    pub fn new(client: C) -> Self {
        Connector {
            client,
            scheme: Scheme::HTTP,
            mark: true,
        }
    }

    /// The scheme requests are sent with (default `http`; `https` needs a
    /// client that speaks TLS).
    pub fn scheme(mut self, scheme: Scheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// Whether each response carries the answering endpoint's
    /// [`EndpointAddr`] in its extensions (default `true`). Turning it off
    /// saves an allocation and a map insert per response (a map too, when
    /// the client's response has no extension yet): for callers that never
    /// read the address.
    pub fn endpoint_addr(mut self, on: bool) -> Self {
        self.mark = on;
        self
    }

    /// The service for one endpoint.
    pub fn service(&self, endpoint: &Endpoint) -> EndpointService<C> {
        EndpointService::new(self.client.clone(), self.scheme.clone(), endpoint.addr)
            .endpoint_addr(self.mark)
    }

    /// This connector as the function [`Channel::builder`](crate::Channel::builder)
    /// takes.
    pub fn into_fn(self) -> impl Fn(&Endpoint) -> EndpointService<C> + Send + Sync + 'static
    where
        C: Send + Sync + 'static,
    {
        move |endpoint| self.service(endpoint)
    }
}

/// The connector function for `client` over `http://`: the usual argument of
/// [`Channel::builder`](crate::Channel::builder). See [`Connector`].
pub fn connect<C>(client: C) -> impl Fn(&Endpoint) -> EndpointService<C> + Send + Sync + 'static
where
    C: Clone + Send + Sync + 'static,
{
    Connector::new(client).into_fn()
}

/// The service of one endpoint: points each request at the endpoint, sends
/// it through the client, and marks the response with [`EndpointAddr`]
/// (unless [turned off](Self::endpoint_addr)).
///
/// Errors are the client's, boxed. A request whose replayable body can no
/// longer be sent whole fails with [`ReplayError`] before anything is sent,
/// and a response to a request that cannot be sent again carries
/// [`NotReplayable`], so that the classifiers do not retry it.
///
/// Cloning it (the channel clones it for every attempt) clones the client
/// and copies a pointer to the endpoint's scheme, authority and address,
/// made once when the endpoint is inserted and kept for the process's life
/// (for the first 1,024 distinct scheme and address pairs, under 256 bytes
/// each; later ones are reference-counted), so that neither the clone nor
/// pointing a request counts a reference. The request's path and query are moved into
/// its new URI, not copied: copying a parsed path would allocate.
#[derive(Clone)]
pub struct EndpointService<C> {
    client: C,
    target: TargetRef,
    /// Responses get the address in their extensions.
    mark: bool,
}

impl<C> EndpointService<C> {
    /// The service for the endpoint at `addr`, marking responses with
    /// [`EndpointAddr`].
    pub fn new(client: C, scheme: Scheme, addr: SocketAddr) -> Self {
        EndpointService {
            client,
            target: target(scheme, addr),
            mark: true,
        }
    }

    /// Whether responses carry [`EndpointAddr`] (default `true`); see
    /// [`Connector::endpoint_addr`].
    pub fn endpoint_addr(mut self, on: bool) -> Self {
        self.mark = on;
        self
    }

    /// The endpoint's address.
    pub fn addr(&self) -> SocketAddr {
        self.target.addr
    }

    /// `uri` with this endpoint's scheme and authority, and its own path
    /// and query (moved, not copied).
    #[inline]
    fn point(&self, uri: Uri) -> Result<Uri, http::uri::InvalidUriParts> {
        let mut parts = uri.into_parts();
        parts.scheme = Some(self.target.scheme.clone());
        parts.authority = Some(self.target.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        Uri::from_parts(parts)
    }
}

impl<C> fmt::Debug for EndpointService<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointService")
            .field("scheme", &self.target.scheme)
            .field("addr", &self.target.addr)
            .finish_non_exhaustive()
    }
}

impl<C, B, RB> Service<Request<B>> for EndpointService<C>
where
    C: Service<Request<B>, Response = Response<RB>>,
    C::Error: Into<BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<C::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.client.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let ticket = if req.extensions().is_empty() {
            None
        } else {
            req.extensions_mut().remove::<ReplayTicket>()
        };
        if ticket.as_ref().is_some_and(|t| !t.can_send()) {
            return ResponseFuture::failed(ReplayError::new(None).into());
        }
        match self.point(std::mem::take(req.uri_mut())) {
            Ok(uri) => *req.uri_mut() = uri,
            Err(e) => return ResponseFuture::failed(e.into()),
        }
        ResponseFuture {
            state: State::Calling {
                fut: self.client.call(req),
                addr: self.mark.then_some(self.target.addr),
                ticket,
            },
        }
    }
}

/// The future of an [`EndpointService`] call.
#[pin_project]
pub struct ResponseFuture<F> {
    #[pin]
    state: State<F>,
}

#[pin_project(project = StateProj)]
enum State<F> {
    Calling {
        #[pin]
        fut: F,
        /// Where responses are marked as from; `None`: not marked.
        addr: Option<SocketAddr>,
        ticket: Option<ReplayTicket>,
    },
    Failed {
        error: Option<BoxError>,
    },
}

impl<F> ResponseFuture<F> {
    fn failed(error: BoxError) -> Self {
        ResponseFuture {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<RB>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (fut, addr, ticket) = match self.project().state.project() {
            StateProj::Calling { fut, addr, ticket } => (fut, addr, ticket),
            StateProj::Failed { error } => {
                return Poll::Ready(Err(error
                    .take()
                    .unwrap_or_else(|| "polled after completion".into())));
            }
        };
        // The response is marked where it lies: no extra move of it.
        let mut result = ready!(fut.poll(cx)).map_err(Into::into);
        // The body may still be streaming; what counts is whether it could
        // be sent again from here on.
        let spent = ticket.as_ref().is_some_and(|t| t.overflowed());
        match &mut result {
            Ok(response) => {
                if let Some(addr) = *addr {
                    // Cheaper than `insert`, which hands back (and downcasts)
                    // any value it replaces.
                    *response
                        .extensions_mut()
                        .get_or_insert_with(|| EndpointAddr(addr)) = EndpointAddr(addr);
                }
                if spent {
                    response.extensions_mut().insert(NotReplayable);
                }
            }
            Err(_) if spent => result = Err(unreplayable(result)),
            Err(_) => {}
        }
        Poll::Ready(result)
    }
}

/// The error of an attempt whose request cannot be sent again.
#[cold]
fn unreplayable<T>(result: Result<T, BoxError>) -> BoxError {
    ReplayError::new(result.err()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{ServiceExt, service_fn};

    fn echo_uri()
    -> impl Service<
        Request<String>,
        Response = Response<String>,
        Error = Infallible,
        Future = impl Send,
    > + Clone {
        service_fn(|req: Request<String>| async move {
            let host = req
                .headers()
                .get(http::header::HOST)
                .map(|h| h.to_str().unwrap().to_string());
            Ok(Response::new(format!("{} {host:?}", req.uri())))
        })
    }

    async fn send(
        svc: EndpointService<
            impl Service<Request<String>, Response = Response<String>, Error = Infallible>,
        >,
        req: Request<String>,
    ) -> Response<String> {
        svc.oneshot(req).await.unwrap()
    }

    #[tokio::test]
    async fn points_requests_at_the_endpoint_and_keeps_path_query_and_headers() {
        let v4: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let v6: SocketAddr = "[::1]:9090".parse().unwrap();
        let svc = EndpointService::new(echo_uri(), Scheme::HTTP, v4);
        let req = Request::get("http://ignored.example/a/b?x=1&y=2")
            .header("host", "api.example")
            .body(String::new())
            .unwrap();
        let resp = send(svc, req).await;
        assert_eq!(
            resp.body(),
            "http://127.0.0.1:8080/a/b?x=1&y=2 Some(\"api.example\")"
        );
        assert_eq!(
            resp.extensions().get::<EndpointAddr>(),
            Some(&EndpointAddr(v4))
        );

        let svc = EndpointService::new(echo_uri(), Scheme::HTTPS, v6);
        let resp = send(svc, Request::new(String::new())).await;
        assert_eq!(resp.body(), "https://[::1]:9090/ None");
        let resp = send(
            EndpointService::new(echo_uri(), Scheme::HTTP, v6),
            Request::get("/only/path").body(String::new()).unwrap(),
        )
        .await;
        assert_eq!(resp.body(), "http://[::1]:9090/only/path None");
    }

    #[tokio::test]
    async fn the_address_extension_can_be_turned_off() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let connector = Connector::new(echo_uri()).endpoint_addr(false);
        let svc = connector.service(&Endpoint::new(addr));
        let resp = send(svc, Request::get("/a").body(String::new()).unwrap()).await;
        // Still pointed at the endpoint, only not marked.
        assert_eq!(resp.body(), "http://127.0.0.1:8080/a None");
        assert!(resp.extensions().get::<EndpointAddr>().is_none());
        let svc = connector.endpoint_addr(true).service(&Endpoint::new(addr));
        let resp = send(svc, Request::new(String::new())).await;
        assert_eq!(
            resp.extensions().get::<EndpointAddr>(),
            Some(&EndpointAddr(addr))
        );
    }

    #[tokio::test]
    async fn client_errors_are_boxed_and_reach_the_caller() {
        let failing = service_fn(|_: Request<String>| async {
            Err::<Response<String>, _>(std::io::Error::other("refused"))
        });
        let svc = EndpointService::new(failing, Scheme::HTTP, "127.0.0.1:1".parse().unwrap());
        let err = svc.oneshot(Request::new(String::new())).await.unwrap_err();
        assert_eq!(err.to_string(), "refused");
        assert!(err.downcast_ref::<std::io::Error>().is_some());
    }
}
