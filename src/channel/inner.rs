//! The state a channel's clones share, and each clone's own handle on it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tower::Service;

use super::hold::{Counted, Holds};
use super::info::AttemptInfo;
use super::settings::ChannelPolicy;
use super::state::ChannelState;
use super::table::{Snapshot, Table};
use crate::Error;
use crate::policy::budget::Tallies;
use crate::policy::call::{Call, Hedging, Retrying, Rules};
use crate::policy::limit::Limiter;
use crate::policy::replay::Replay;

/// A hook run on each attempt's request just before it is sent.
pub(crate) type Hook<Req> = Box<dyn Fn(&mut Req, &AttemptInfo) + Send + Sync>;

/// Extracts a request's hash key, for the keyed balancer.
pub(crate) type HashKey<Req> = Box<dyn Fn(&Req) -> Option<u64> + Send + Sync>;

/// State shared by all clones of a channel (the classifier is in the
/// untyped [`ChannelState`], where attempts reach it through their slot).
pub(crate) struct Inner<Req, S: Service<Req>> {
    pub(crate) state: Arc<ChannelState>,
    pub(crate) table: Arc<Table<S>>,
    pub(crate) replay: Option<Box<dyn Replay<Req>>>,
    pub(crate) on_attempt: Option<Hook<Req>>,
    /// The key extractor, when the channel has a keyed balancer.
    pub(crate) hash_key: Option<HashKey<Req>>,
    pub(crate) initial_wait: Duration,
    /// Dropped with the last clone, which stops the discovery task.
    pub(crate) _stop: tokio::sync::oneshot::Sender<()>,
}

impl<Req, S: Service<Req>> Inner<Req, S> {
    /// The request's hash key, when the channel picks by key and the
    /// request has one.
    #[inline]
    pub(crate) fn key(&self, req: &Req) -> Option<u64> {
        self.hash_key.as_ref().and_then(|key| key(req))
    }

    /// The error of a call that found no usable endpoint; asks discovery
    /// to look again.
    pub(crate) fn no_endpoint(&self) -> Error {
        self.state.request_refresh();
        self.table.empty_error(&self.state.name)
    }

    /// The current endpoint set once it has an endpoint, waiting up to the
    /// initial wait (and asking discovery to look again) while it is empty.
    pub(crate) async fn populated(&self) -> Result<Arc<Snapshot<S>>, Error> {
        let state = &self.state;
        self.table
            .populated(self.initial_wait, &state.name, || state.request_refresh())
            .await
    }
}

/// One clone's own reference to the shared state, with its own copy of the
/// settings. A call clones the handle of the channel it was made on; when
/// each task owns its clone, that reference count is touched by one core
/// only, instead of every core contending on the shared state's count, and
/// the call reads its settings without touching any other. When the
/// settings change, the clone's next call makes a new handle.
pub(crate) struct Handle<Req, S: Service<Req>> {
    pub(crate) inner: Arc<Inner<Req, S>>,
    /// The settings of calls made through this handle.
    pub(crate) settings: ChannelPolicy,
    /// No policy is on: calls take the bare path.
    pub(crate) bare: bool,
    /// The version of `settings`.
    pub(crate) version: u64,
    /// The channel's concurrency limiter, when these settings set a limit.
    pub(crate) limiter: Option<Arc<Limiter>>,
    /// The calls that hold the handle.
    pub(crate) holds: Holds,
    /// Whether these settings count a call in the channel's retry budget
    /// and in its hedge budget ([`Call::counted_in`]).
    counted_in: [bool; 2],
}

impl<Req, S: Service<Req>> Counted for Handle<Req, S> {
    fn holds(&self) -> &Holds {
        &self.holds
    }
}

impl<Req, S: Service<Req>> Handle<Req, S> {
    /// A handle with the channel's current settings.
    pub(crate) fn new(inner: Arc<Inner<Req, S>>) -> Self {
        let state = &inner.state;
        let version = state.version.load(Ordering::Acquire);
        let settings = (**state.settings.load()).clone();
        let limiter = state.limiter(&settings);
        let mut handle = Handle {
            inner,
            bare: settings.is_bare(),
            settings,
            version,
            limiter,
            holds: Holds::default(),
            counted_in: [false; 2],
        };
        handle.counted_in = Call::counted_in(&handle.rules()).map(|b| b.is_some());
        handle
    }

    /// The rules of calls made through this handle.
    #[inline(always)]
    pub(crate) fn rules(&self) -> Rules<'_> {
        let settings = &self.settings;
        let state = &*self.inner.state;
        Rules {
            timeout: settings.timeout(),
            deadline: settings.deadline(),
            retry: settings
                .retry()
                .filter(|r| r.max_attempts() > 1)
                .map(|settings| Retrying {
                    settings,
                    budget: &state.retry_budget,
                }),
            hedge: settings.hedge().map(|settings| Hedging {
                settings,
                budget: &state.hedge_budget,
                latency: &state.latency,
            }),
        }
    }

    /// Counts a call starting at `start` in the budgets these settings
    /// count it in, through `tallies` (the calling clone's).
    #[inline(always)]
    pub(crate) fn count(&self, start: Instant, tallies: &mut Tallies) {
        let state = &*self.inner.state;
        let [retry, hedge] = self.counted_in;
        if retry {
            tallies.retry.deposit(&state.retry_budget, start);
        }
        if hedge {
            tallies.hedge.deposit(&state.hedge_budget, start);
        }
    }
}
