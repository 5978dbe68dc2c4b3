//! [`Channel`]: the public handle and its `tower::Service` impl.

use std::fmt;
use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tower::Service;

use super::engine::{EndpointInfo, Engine, Path, ResponseFuture};
use super::hold::Credits;
use super::state::ChannelState;
use super::tuning::PolicyHandle;
use crate::Error;
use crate::policy::budget::Tallies;

/// A discovery-aware, load-balancing client channel for requests `Req`
/// answered with `Resp`. See the [module docs](super).
///
/// The endpoint service type does not appear: a channel is built from a
/// connector by [`Channel::builder`], which checks every bound once, at
/// [`build`](super::Builder::build).
pub struct Channel<Req, Resp> {
    /// This clone's handle (its only owner; dropped as [`Drop`] says).
    engine: ManuallyDrop<Arc<dyn Engine<Req, Resp>>>,
    /// The shared state, whose settings version each call checks.
    state: Arc<ChannelState>,
    /// The version of the handle's settings.
    version: u64,
    /// How the handle's calls are made.
    path: Path,
    /// This clone's deposits into the budgets, added a few calls at a
    /// time: the clone's task is the only one to touch them.
    tallies: Tallies,
    /// Holds on the handle taken for calls and not yet given to one.
    credits: Credits,
}

impl<Req, Resp> Channel<Req, Resp> {
    pub(crate) fn from_engine(engine: Arc<dyn Engine<Req, Resp>>) -> Self {
        Channel {
            state: engine.state().clone(),
            version: engine.version(),
            path: engine.path(),
            engine: ManuallyDrop::new(engine),
            tallies: Tallies::default(),
            credits: Credits::default(),
        }
    }

    /// The channel's name (the `channel` metric label).
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// A point-in-time view of every endpoint in the current set, ordered by
    /// address.
    pub fn endpoints(&self) -> Vec<EndpointInfo> {
        self.engine.endpoints()
    }

    /// A handle to change the channel's policy settings at runtime; breaker
    /// state, budgets and the latency window are kept.
    pub fn policy_handle(&self) -> PolicyHandle {
        PolicyHandle {
            state: self.state.clone(),
            table: self.engine.table(),
        }
    }
}

impl<Req, Resp> Clone for Channel<Req, Resp> {
    /// A new handle on the same channel. Give each task its own clone:
    /// cloning allocates a small handle once; a call then only touches
    /// counts that its own task owns (its endpoint's aside), takes its hold
    /// on the handle from a batch the clone took at once, and is counted in
    /// the retry budget through the clone's own tally (see
    /// [`policy::budget`](crate::policy::budget)).
    fn clone(&self) -> Self {
        Channel::from_engine(self.engine.fork())
    }
}

impl<Req, Resp> Drop for Channel<Req, Resp> {
    /// Adds the calls this clone counted and the budgets do not have yet,
    /// and lets go of the handle (also when new settings replace it): the
    /// last call holding it drops it, if any does.
    fn drop(&mut self) {
        let state = &*self.state;
        self.tallies.flush(&state.retry_budget, &state.hedge_budget);
        // SAFETY: taken once, here; the field is not used after.
        let engine = unsafe { ManuallyDrop::take(&mut self.engine) };
        if !engine.let_go(self.credits) {
            // The last hold drops the handle with this count.
            std::mem::forget(engine);
        }
    }
}

impl<Req, Resp> fmt::Debug for Channel<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.name())
            .field("endpoints", &self.endpoints().len())
            .finish()
    }
}

impl<Req, Resp> Service<Req> for Channel<Req, Resp> {
    type Response = Resp;
    type Error = Error;
    type Future = ResponseFuture<Resp>;

    /// Always ready: readiness is awaited per endpoint, inside the call.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        // New settings: a new handle for this clone (calls in flight keep
        // theirs).
        if self.version != self.state.version.load(Ordering::Acquire) {
            *self = Channel::from_engine(self.engine.fork());
        }
        // The future of a call without a policy holds no reference on the
        // handle.
        match self.path {
            Path::Bare => self.engine.call_bare(req),
            Path::Limited => self.engine.call_limited(req),
            // SAFETY: this clone owns the handle's only `Arc`, whose own
            // pointer it passes, and lets go of it in `drop`.
            Path::Full => unsafe {
                let this = Arc::as_ptr(&self.engine).cast::<()>();
                self.engine
                    .call(this, req, &mut self.tallies, &mut self.credits)
            },
        }
    }
}
