//! [`Replayable`]: the service (and layer) that wraps request bodies.

use std::task::{Context, Poll};

use http::Request;
use http_body::Body;
use tower::{Layer, Service};

use super::{DEFAULT_REPLAY_LIMIT, ReplayBody, replayable_with_limit};

/// A service that makes every request replayable ([`replayable_with_limit`])
/// before passing it to `S`: put it in front of a channel built with
/// [`BodyReplay`](super::BodyReplay), for example as a tonic client's transport.
#[derive(Debug, Clone)]
pub struct Replayable<S> {
    inner: S,
    limit: usize,
}

impl<S> Replayable<S> {
    /// Wraps `inner`, with the default limit (64 KiB).
    pub fn new(inner: S) -> Self {
        Replayable {
            inner,
            limit: DEFAULT_REPLAY_LIMIT,
        }
    }

    /// Wraps `inner`, buffering at most `limit` bytes per body.
    pub fn with_limit(inner: S, limit: usize) -> Self {
        Replayable { inner, limit }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B> Service<Request<B>> for Replayable<S>
where
    S: Service<Request<ReplayBody<B>>>,
    B: Body,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> S::Future {
        self.inner.call(replayable_with_limit(req, self.limit))
    }
}

/// The layer of [`Replayable`].
#[derive(Debug, Clone, Copy)]
pub struct ReplayableLayer {
    limit: usize,
}

impl ReplayableLayer {
    /// A layer buffering at most `limit` bytes per body.
    pub fn new(limit: usize) -> Self {
        ReplayableLayer { limit }
    }
}

impl Default for ReplayableLayer {
    fn default() -> Self {
        Self::new(DEFAULT_REPLAY_LIMIT)
    }
}

impl<S> Layer<S> for ReplayableLayer {
    type Service = Replayable<S>;

    fn layer(&self, inner: S) -> Replayable<S> {
        Replayable::with_limit(inner, self.limit)
    }
}
