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

use tracing::Span;

use super::bare;
use super::boxed::{Boxed, Plain, boxed};
use super::hold::{Credits, Hold};
use super::inner::Handle;
use super::limits::{Entry, InChannel};
use super::resilient;
use super::state::{ChannelState, Endpoints};
use crate::policy::budget::Tallies;
use crate::{BoxError, Endpoint, Error};

/// A channel, whatever its endpoint service type.
pub(crate) trait Engine<Req, Resp>: Send + Sync {
    /// Starts a call under this handle's settings, which are bare (no
    /// policy, no concurrency limit): the call's future holds no reference
    /// on the handle.
    fn call_bare(&self, req: Req) -> ResponseFuture<Resp>;
    /// Starts a call under this handle's settings, which are bare but for
    /// the channel's concurrency limit: the call's future holds no
    /// reference on the handle, nor on the limiter.
    fn call_limited(&self, req: Req) -> ResponseFuture<Resp>;
    /// Starts a call under this handle's settings, which set a policy,
    /// counting it in the budgets through `tallies` and holding the handle
    /// through `credits` (the calling clone's).
    ///
    /// # Safety
    ///
    /// `this` must be `Arc::as_ptr` of the calling clone's `Arc` on this
    /// handle, its only one, and the clone must end as [`Hold::take`]
    /// requires, through [`let_go`](Self::let_go).
    unsafe fn call(
        &self,
        this: *const (),
        req: Req,
        tallies: &mut Tallies,
        credits: &mut Credits,
    ) -> ResponseFuture<Resp>;
    /// The owning clone ends, with `unused` holds: true when no call holds
    /// the handle (the clone drops it), false when the last hold will.
    fn let_go(&self, unused: Credits) -> bool;
    /// Which of the three applies to this handle's settings.
    fn path(&self) -> Path;
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

    fn call_limited(&self, req: Req) -> ResponseFuture<S::Response> {
        // Only a handle with a limiter takes this path.
        let Some(limiter) = &self.limiter else {
            return self.call_bare(req);
        };
        let span = call_span(&self.inner.state);
        // A place under the channel's limit first: a refused call fails
        // without being started, and allocates nothing.
        let Some(entry) = Entry::ask(Some(&**limiter)) else {
            span.record("outcome", "refused");
            return ResponseFuture { inner: None };
        };
        let inner = if entry == Entry::Queued {
            // Over the limit, with room in the queue: the call waits there
            // for its place before anything else.
            let limiter = limiter.clone();
            let call = bare::queued(self.inner.clone(), limiter, entry, req, span.clone());
            boxed(span, Plain(call))
        } else {
            // This handle's limiter is the channel's: the call's slot
            // reaches it through the channel's state.
            bare::start(&self.inner, req, span, InChannel::taken())
        };
        ResponseFuture { inner: Some(inner) }
    }

    unsafe fn call(
        &self,
        this: *const (),
        req: Req,
        tallies: &mut Tallies,
        credits: &mut Credits,
    ) -> ResponseFuture<S::Response> {
        let this = this.cast::<Self>();
        // A bare handle never gets here: the channel sends its calls to
        // `call_bare` or `call_limited`.
        let Some(limiter) = &self.limiter else {
            let span = call_span(&self.inner.state);
            // SAFETY: as this function requires.
            let hold = unsafe { Hold::take(this, credits) };
            return ResponseFuture {
                inner: Some(resilient::start(hold, req, span, None, tallies)),
            };
        };
        let span = call_span(&self.inner.state);
        // A place under the channel's limit first: a refused call fails
        // without being started, and allocates nothing.
        let Some(entry) = Entry::ask(Some(&**limiter)) else {
            span.record("outcome", "refused");
            return ResponseFuture { inner: None };
        };
        // SAFETY: as this function requires.
        let hold = unsafe { Hold::take(this, credits) };
        let inner = match entry.at_once(Some(limiter)) {
            Some(place) => resilient::start(hold, req, span, Some(place), tallies),
            // Over the limit, with room in the queue: the call waits there
            // for its place before anything else.
            None => {
                let limiter = limiter.clone();
                let call = resilient::queued(hold, limiter, entry, req, span.clone());
                boxed(span, Plain(call))
            }
        };
        ResponseFuture { inner: Some(inner) }
    }

    fn let_go(&self, unused: Credits) -> bool {
        self.holds.let_go(unused)
    }

    fn path(&self) -> Path {
        match (self.bare, self.limiter.is_some()) {
            (true, false) => Path::Bare,
            (true, true) => Path::Limited,
            (false, _) => Path::Full,
        }
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

/// How a handle's calls are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// No policy, no limit: [`Engine::call_bare`].
    Bare,
    /// No policy but the channel's concurrency limit:
    /// [`Engine::call_limited`].
    Limited,
    /// A policy: [`Engine::call`].
    Full,
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
