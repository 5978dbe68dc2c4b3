//! The [`Engine`] trait through which [`Channel`](super::Channel) reaches
//! its state and its call paths without naming the endpoint service type,
//! and the types a call and a view return.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::Service;

use pin_project::pin_project;
use tracing::Span;

use super::bare;
use super::inner::Handle;
use super::limits::Entry;
use super::resilient;
use super::state::{ChannelState, Endpoints};
use crate::{BoxError, Endpoint, Error};

/// A channel, whatever its endpoint service type.
pub(crate) trait Engine<Req, Resp>: Send + Sync {
    /// Starts a call under this handle's settings, which are bare (no
    /// policy, no concurrency limit): the call's future holds no reference
    /// on the handle.
    fn call_bare(&self, req: Req) -> ResponseFuture<Resp>;
    /// Starts a call under this handle's settings.
    fn call(self: Arc<Self>, req: Req) -> ResponseFuture<Resp>;
    /// True when this handle's settings are bare and set no concurrency
    /// limit ([`call_bare`](Self::call_bare) applies).
    fn is_bare(&self) -> bool;
    /// A new handle on the same channel, with the current settings.
    fn fork(&self) -> Arc<dyn Engine<Req, Resp>>;
    /// The version of the settings this handle holds.
    fn version(&self) -> u64;
    /// The shared state.
    fn state(&self) -> &Arc<ChannelState>;
    /// The endpoint table, for tuning.
    fn table(&self) -> Arc<dyn Endpoints>;
    /// A view of every endpoint, ordered by address.
    fn endpoints(&self) -> Vec<EndpointInfo>;
}

impl<Req, S> Engine<Req, S::Response> for Handle<Req, S>
where
    Req: Send + 'static,
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    S::Future: Send + 'static,
{
    fn call_bare(&self, req: Req) -> ResponseFuture<S::Response> {
        let span = call_span(&self.inner.state);
        ResponseFuture {
            inner: Some(bare::start(&self.inner, req, span, ())),
        }
    }

    fn call(self: Arc<Self>, req: Req) -> ResponseFuture<S::Response> {
        let Some(limiter) = &self.limiter else {
            if self.bare {
                return self.call_bare(req);
            }
            let span = call_span(&self.inner.state);
            return ResponseFuture {
                inner: Some(resilient::start(self, req, span, None)),
            };
        };
        let span = call_span(&self.inner.state);
        // A place under the channel's limit first: a refused call fails
        // without being started, and allocates nothing.
        let Some(entry) = Entry::ask(Some(&**limiter)) else {
            span.record("outcome", "refused");
            return ResponseFuture { inner: None };
        };
        let inner = match entry.at_once(Some(limiter)) {
            Some(place) if self.bare => bare::start(&self.inner, req, span, place),
            Some(place) => resilient::start(self, req, span, Some(place)),
            // Over the limit, with room in the queue: the call waits there
            // for its place before anything else.
            None if self.bare => {
                let limiter = limiter.clone();
                let call = bare::queued(self.inner.clone(), limiter, entry, req, span.clone());
                boxed(span, Plain(call))
            }
            None => {
                let limiter = limiter.clone();
                let call = resilient::queued(self, limiter, entry, req, span.clone());
                boxed(span, Plain(call))
            }
        };
        ResponseFuture { inner: Some(inner) }
    }

    fn is_bare(&self) -> bool {
        self.bare && self.limiter.is_none()
    }

    fn fork(&self) -> Arc<dyn Engine<Req, S::Response>> {
        Arc::new(Handle::new(self.inner.clone()))
    }

    fn version(&self) -> u64 {
        self.version
    }

    fn state(&self) -> &Arc<ChannelState> {
        &self.inner.state
    }

    fn table(&self) -> Arc<dyn Endpoints> {
        self.inner.table.clone()
    }

    fn endpoints(&self) -> Vec<EndpointInfo> {
        let snapshot = self.inner.table.snapshot();
        let mut all: Vec<EndpointInfo> = snapshot
            .slots()
            .map(|s| EndpointInfo {
                endpoint: Endpoint {
                    weight: s.load.weight(),
                    ..s.endpoint.clone()
                },
                in_flight: s.load.pending(),
                rtt_estimate: s.load.rtt_estimate(),
                requests: s.load.finished(),
                failures: s.failures.load(Ordering::Relaxed),
                ejected: s.ejected.load(Ordering::Relaxed),
            })
            .collect();
        all.sort_by_key(|e| e.endpoint.addr);
        all
    }
}

/// The span of one call (see the [module docs](super)).
fn call_span(state: &ChannelState) -> Span {
    tracing::debug_span!(
        target: "towline",
        "call",
        channel = %state.name,
        outcome = tracing::field::Empty,
    )
}

/// A call in progress, polled inside its call span, which it is handed
/// (a call need not keep its own copy of the span).
pub(crate) trait CallFuture: Send {
    /// The call's response.
    type Response;

    /// Polls the call; `span` is the call's span, entered.
    fn poll_in(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        span: &Span,
    ) -> Poll<Result<Self::Response, Error>>;
}

/// A call future that keeps what it needs of the span itself.
#[pin_project]
pub(crate) struct Plain<F>(#[pin] pub(crate) F);

impl<F, Resp> CallFuture for Plain<F>
where
    F: Future<Output = Result<Resp, Error>> + Send,
{
    type Response = Resp;

    fn poll_in(self: Pin<&mut Self>, cx: &mut Context<'_>, _: &Span) -> Poll<Result<Resp, Error>> {
        self.project().0.poll(cx)
    }
}

/// A call and its span, as boxed: the call runs inside the span.
#[pin_project]
pub(crate) struct Spanned<F> {
    /// Dropped first: a call dropped unfinished records its attempts'
    /// cancellation in their spans, children of the call span.
    #[pin]
    call: F,
    span: Span,
}

impl<F: CallFuture> Future for Spanned<F> {
    type Output = Result<F::Response, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        this.call.poll_in(cx, this.span)
    }
}

/// A boxed call (the one allocation of a call).
pub(crate) type Boxed<T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send>>;

/// Boxes `call` in `span`.
pub(crate) fn boxed<F>(span: Span, call: F) -> Boxed<F::Response>
where
    F: CallFuture + 'static,
{
    Box::pin(Spanned { call, span })
}

/// Boxes in `span` the call that `init` writes, in place: a call made on
/// the stack would be copied whole into its box (with a library call above
/// 128 bytes).
///
/// # Safety
///
/// `init` must initialize the place it is given (it gets the span too).
pub(crate) unsafe fn boxed_in_place<F>(
    span: Span,
    init: impl FnOnce(*mut F, &Span),
) -> Boxed<F::Response>
where
    F: CallFuture + 'static,
{
    let mut boxed = Box::<Spanned<F>>::new_uninit();
    let place = boxed.as_mut_ptr();
    // SAFETY: both fields of the box are written before it is assumed
    // initialized (the call by `init`, as the caller promises); `span`
    // is written first and only read while `call` is written.
    unsafe {
        std::ptr::addr_of_mut!((*place).span).write(span);
        init(std::ptr::addr_of_mut!((*place).call), &(*place).span);
        Box::into_pin(boxed.assume_init())
    }
}

/// The future of a [`Channel`](super::Channel) call: the one heap
/// allocation of a call (none for a call refused by the channel's
/// concurrency limit). It runs inside the call's span.
pub struct ResponseFuture<Resp> {
    /// `None`: refused by the concurrency limit.
    inner: Option<Boxed<Resp>>,
}

impl<Resp> Future for ResponseFuture<Resp> {
    type Output = Result<Resp, Error>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.inner {
            Some(inner) => inner.as_mut().poll(cx),
            None => Poll::Ready(Err(Error::Overloaded)),
        }
    }
}

impl<Resp> std::fmt::Debug for ResponseFuture<Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFuture")
    }
}

/// What [`Channel::endpoints`](super::Channel::endpoints) reports about one
/// endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointInfo {
    /// The endpoint, with its current weight.
    pub endpoint: Endpoint,
    /// Attempts in flight now.
    pub in_flight: u32,
    /// The peak-EWMA round-trip estimate (recorded by P2C peak-EWMA only).
    pub rtt_estimate: Option<Duration>,
    /// Attempts finished on this endpoint, including ones cancelled or cut
    /// by a timeout.
    pub requests: u64,
    /// Of those, attempts that were answered and that the classifier did
    /// not call a success.
    pub failures: u64,
    /// Whether the endpoint is ejected from picks now.
    pub ejected: bool,
}
