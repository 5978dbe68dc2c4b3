//! Discovery: where a channel learns the endpoints of a service.
//!
//! A discovery source is any
//! `Stream<Item = Result<Update, DiscoverError>> + Send + 'static` (the
//! [`Discover`] trait is implemented for all of them). It yields
//! [`Update`]s: a full set ([`Update::Reset`], e.g. each DNS answer), or single
//! changes ([`Update::Insert`], [`Update::Remove`], e.g. etcd watch events).
//! The channel applies them in a background task; an endpoint that stays
//! across an update keeps its state.
//!
//! An `Err` from the stream is reported (logged and counted) and does not
//! change the endpoint set: a source keeps its last good set by saying
//! nothing. A stream that ends leaves the last set in place.
//!
//! Sources in this crate:
//! - [`Static`]: a fixed list, sent once.
//! - [`Manual`]: a cloneable handle to insert, remove and reset endpoints at
//!   runtime.
//! - `Dns` (feature `dns`, on by default): A/AAAA or SRV records, refreshed on
//!   their TTL.
//! - `Etcd` (feature `etcd`): follows a key prefix in etcd; `Registrar`
//!   registers an instance there under a lease.
//!
//! A source that can look again on demand (DNS) takes a [`RefreshHint`]; the
//! channel pulls it when every endpoint is ejected or failing, so that a
//! fresh answer is fetched instead of waiting for the TTL.
//!
//! ```
//! use futures_util::StreamExt;
//! use towline::discover::{Static, Update};
//!
//! # tokio_test_block_on(async {
//! let mut source = Static::new(["127.0.0.1:1".parse::<std::net::SocketAddr>().unwrap(), "127.0.0.1:2".parse().unwrap()]);
//! match source.next().await {
//!     Some(Ok(Update::Reset(set))) => assert_eq!(set.len(), 2),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

#[cfg(feature = "dns")]
pub mod dns;
#[cfg(feature = "etcd")]
pub mod etcd;
mod manual;
#[cfg(feature = "etcd")]
mod peers;
#[cfg(feature = "etcd")]
mod registrar;
mod static_list;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_core::Stream;

use crate::Endpoint;

#[cfg(feature = "dns")]
pub use dns::{
    AddressFamilies, DEFAULT_ATTEMPTS, DEFAULT_FAMILY_WAIT, DEFAULT_TIMEOUT, Dns, DnsBuilder,
    ENDPOINTS_CAPPED_METRIC, Extracted, LOOKUP_ERRORS_METRIC, LOOKUPS_METRIC,
    RECORDS_SKIPPED_METRIC, RecordKind, SRV_PRIORITY_KEY, SRV_TARGET_KEY, SrvTarget,
    endpoints_from_records,
};
#[cfg(feature = "etcd")]
pub use etcd::{Etcd, EtcdBuilder, EtcdCluster};
pub use manual::{Manual, ManualStream};
#[cfg(feature = "etcd")]
pub use peers::{PEER_ERRORS_METRIC, Peers, PeersBuilder};
#[cfg(feature = "etcd")]
pub use registrar::{Registrar, RegistrarBuilder};
pub use static_list::Static;

#[cfg(any(feature = "dns", feature = "etcd"))]
pub(crate) use crate::clock::later;

/// One change to the endpoint set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The complete set: endpoints not in it are removed.
    Reset(Vec<Endpoint>),
    /// Adds an endpoint, or changes the endpoint with the same address: a
    /// new weight is applied in place (its state is kept), new metadata
    /// replaces it (the channel's connector runs again, as it may read the
    /// metadata, and its state starts afresh).
    Insert(Endpoint),
    /// Removes the endpoint with this address (no-op when absent).
    Remove(SocketAddr),
}

/// A source of endpoint updates.
///
/// Implemented for every `Stream<Item = Result<Update, DiscoverError>> + Send
/// + 'static`; there is nothing to implement by hand.
pub trait Discover: Stream<Item = Result<Update, DiscoverError>> + Send + 'static {}

impl<T> Discover for T where T: Stream<Item = Result<Update, DiscoverError>> + Send + 'static {}

/// A discovery failure: a resolver timeout, an unreachable registry, a
/// malformed record. Cheap to clone (the channel keeps the last one to report
/// it to callers when no endpoint was ever known).
#[derive(Clone)]
pub struct DiscoverError {
    message: Arc<str>,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl DiscoverError {
    /// An error described by `message`.
    pub fn new(message: impl Into<String>) -> Self {
        DiscoverError {
            message: message.into().into(),
            source: None,
        }
    }

    /// An error described by `message`, caused by `source`.
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        DiscoverError {
            message: message.into().into(),
            source: Some(Arc::new(source)),
        }
    }

    /// The description given when the error was made.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for DiscoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("DiscoverError");
        d.field("message", &&*self.message);
        if let Some(s) = &self.source {
            d.field("source", &s.to_string());
        }
        d.finish()
    }
}

impl fmt::Display for DiscoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DiscoverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A request, from the channel to its discovery source, to look again now.
///
/// Cloneable; all clones share one flag. The channel calls
/// [`request`](RefreshHint::request) when it finds no usable endpoint; a
/// source awaits [`requested`](RefreshHint::requested) next to its timer and
/// applies its own rate limit. Requests made while nobody waits are kept (one
/// at most), so none is lost between two waits.
#[derive(Debug, Clone, Default)]
pub struct RefreshHint {
    notify: Arc<tokio::sync::Notify>,
}

impl RefreshHint {
    /// A new hint with no request pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the source to look again as soon as its rate limit allows.
    pub fn request(&self) {
        self.notify.notify_one();
    }

    /// Completes when a refresh has been requested.
    pub async fn requested(&self) {
        self.notify.notified().await
    }
}
