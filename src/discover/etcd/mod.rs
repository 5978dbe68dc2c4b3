//! etcd discovery: follow a key prefix and turn it into endpoint updates.
//!
//! Each instance of a service writes one key under a shared prefix (for
//! example `/services/api/10.0.0.7:8080`) whose value names its address;
//! [`Registrar`](crate::discover::Registrar) does that with a lease, so a
//! crashed instance disappears by itself. [`Etcd`] lists the prefix, then
//! watches it from the listed revision + 1, so no change is missed between
//! the two:
//!
//! - the list becomes an [`Update::Reset`]; each put an [`Update::Insert`];
//!   each delete (or lease expiry) an [`Update::Remove`] of the address that
//!   key held;
//! - when the watch breaks or etcd is unreachable, the stream yields an
//!   `Err` (the channel keeps its last good set), reconnects with jittered
//!   exponential backoff (default 200 ms doubling to 5 s), lists again and
//!   yields a fresh `Reset`, so changes made meanwhile are seen;
//! - when the watch's revision was compacted away, it lists and watches
//!   again at once.
//!
//! Values are a bare `ip:port` or JSON `{"addr": "ip:port", "weight": N,
//! "metadata": {..}}` (see [`parse_value`]). A malformed value is skipped,
//! logged at `warn` and counted in [`MALFORMED_VALUES_METRIC`]; it never
//! removes a good endpoint: a key whose value turns malformed keeps the last
//! good endpoint it held until it is deleted or fixed. Two keys holding the
//! same address make one endpoint, present while either key is; the last key
//! in byte order gives its weight and metadata.
//!
//! Requires the `etcd` feature (the etcd-client build runs `protoc`: Debian
//! `protobuf-compiler` and `libprotobuf-dev`).
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use towline::discover::{Etcd, EtcdCluster};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = EtcdCluster::new(["127.0.0.1:2379"]);
//! let mut updates = Etcd::builder(cluster, "/services/api/").build()?;
//! // Give `updates` to a channel's builder, or read it yourself:
//! while let Some(update) = updates.next().await {
//!     println!("{update:?}");
//! }
//! # Ok(())
//! # }
//! ```

mod backoff;
mod cluster;
mod follow;
mod value;

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use etcd_client::{Client, GetOptions, GetResponse, WatchOptions, WatchResponse, WatchStream};
use futures_core::Stream;

pub(crate) use backoff::Backoff;
pub use cluster::EtcdCluster;
/// TLS settings for [`EtcdCluster::tls`] (feature `etcd-tls`), re-exported
/// from etcd-client (they are tonic's).
#[cfg(feature = "etcd-tls")]
pub use etcd_client::{Certificate, Identity, TlsOptions};
use follow::{Action, Change, Output, PrefixFollower};
pub use value::{ValueError, encode_value, parse_value};

use crate::clock::now;
use crate::discover::{DiscoverError, Update};
use crate::error::BuildError;
use crate::rng::Rng;

/// Counter of values under a watched prefix that were not endpoints (label
/// `prefix`).
pub const MALFORMED_VALUES_METRIC: &str = "towline_etcd_malformed_values_total";

/// Default first reconnect delay: 200 ms.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Default largest reconnect delay: 5 s.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A discovery source following an etcd key prefix (see the [module
/// docs](self)).
///
/// A `Stream<Item = Result<Update, DiscoverError>>` that never ends. It does
/// its work only while polled, and dropping it closes its watch.
pub struct Etcd {
    prefix: String,
    inner: Pin<Box<dyn Stream<Item = Result<Update, DiscoverError>> + Send>>,
}

impl Etcd {
    /// Starts building a source for the keys under `prefix` in `cluster`.
    pub fn builder(cluster: EtcdCluster, prefix: impl Into<String>) -> EtcdBuilder {
        EtcdBuilder {
            cluster,
            prefix: prefix.into(),
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            seed: None,
        }
    }

    /// The watched prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl fmt::Debug for Etcd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Etcd")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Stream for Etcd {
    type Item = Result<Update, DiscoverError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Settings for an [`Etcd`] source.
#[derive(Debug, Clone)]
pub struct EtcdBuilder {
    cluster: EtcdCluster,
    prefix: String,
    backoff_min: Duration,
    backoff_max: Duration,
    seed: Option<u64>,
}

impl EtcdBuilder {
    /// Reconnect delays: the first failure waits about `min`, each further
    /// one twice as long up to `max`, each drawn from the upper half of its
    /// range (default 200 ms to 5 s). `min` must be above zero and at most
    /// `max`.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    /// Seeds the backoff jitter, for reproducible tests (default: seeded
    /// from the operating system).
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the settings and makes the source. No I/O happens until the
    /// stream is first polled.
    pub fn build(self) -> Result<Etcd, BuildError> {
        self.cluster.validate()?;
        check_prefix(&self.prefix)?;
        let rng = self.seed.map_or_else(Rng::from_entropy, Rng::seeded);
        let backoff = Backoff::new("reconnect_backoff", self.backoff_min, self.backoff_max, rng)?;
        let malformed = metrics::counter!(MALFORMED_VALUES_METRIC, "prefix" => self.prefix.clone());
        let driver = Driver {
            cluster: self.cluster,
            prefix: self.prefix.clone(),
            client: None,
            watch: None,
            follower: PrefixFollower::new(backoff),
            pending: VecDeque::new(),
            malformed,
        };
        let stream = futures_util::stream::unfold(driver, |mut driver| async move {
            let item = driver.next().await;
            Some((item, driver))
        });
        Ok(Etcd {
            prefix: self.prefix,
            inner: Box::pin(stream),
        })
    }
}

/// A prefix must name something: an empty one would follow the whole key
/// space.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), BuildError> {
    if prefix.is_empty() {
        return Err(BuildError::new(
            "prefix",
            "an empty prefix would cover the whole etcd key space",
        ));
    }
    Ok(())
}

/// The async shell: performs the follower's actions against etcd.
struct Driver {
    cluster: EtcdCluster,
    prefix: String,
    client: Option<Client>,
    watch: Option<WatchStream>,
    follower: PrefixFollower,
    pending: VecDeque<Result<Update, DiscoverError>>,
    malformed: metrics::Counter,
}

impl Driver {
    async fn next(&mut self) -> Result<Update, DiscoverError> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return item;
            }
            let mut out = Vec::new();
            self.step(&mut out).await;
            self.absorb(out);
        }
    }

    async fn step(&mut self, out: &mut Vec<Output>) {
        match self.follower.action() {
            Action::List => {
                self.watch = None;
                match self.list().await {
                    Ok((revision, response)) => {
                        let kvs = response.kvs().iter().map(|kv| (kv.key(), kv.value()));
                        self.follower.on_listed(revision, kvs, out);
                    }
                    Err(e) => self.fail(e, out),
                }
            }
            Action::Watch { start_revision } => match self.open_watch(start_revision).await {
                Ok(watch) => {
                    self.watch = Some(watch);
                    self.follower.on_watch_opened();
                }
                Err(e) => self.fail(e, out),
            },
            Action::Receive => {
                let message = match &mut self.watch {
                    Some(watch) => watch.message().await,
                    None => Ok(None),
                };
                match message {
                    Ok(Some(response)) => self.on_response(response, out),
                    Ok(None) => self.fail(DiscoverError::new("etcd closed the watch stream"), out),
                    Err(e) => self.fail(DiscoverError::with_source("etcd watch broke", e), out),
                }
            }
            Action::Wait { until } => {
                tokio::time::sleep_until(until.into()).await;
                self.follower.on_timer(now());
            }
        }
    }

    fn fail(&mut self, error: DiscoverError, out: &mut Vec<Output>) {
        self.watch = None;
        self.follower.on_failure(error, now(), out);
    }

    async fn list(&mut self) -> Result<(i64, GetResponse), DiscoverError> {
        let mut client = self.cluster.connected(&mut self.client).await?;
        let response = client
            .get(
                self.prefix.as_bytes(),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| DiscoverError::with_source("listing the etcd prefix failed", e))?;
        let revision = response
            .header()
            .map(|h| h.revision())
            .ok_or_else(|| DiscoverError::new("etcd list answer has no header"))?;
        Ok((revision, response))
    }

    async fn open_watch(&mut self, start_revision: i64) -> Result<WatchStream, DiscoverError> {
        let mut client = self.cluster.connected(&mut self.client).await?;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(start_revision);
        client
            .watch(self.prefix.as_bytes(), Some(options))
            .await
            .map_err(|e| DiscoverError::with_source("opening the etcd watch failed", e))
    }

    fn on_response(&mut self, response: WatchResponse, out: &mut Vec<Output>) {
        if response.canceled() || response.compact_revision() > 0 {
            self.watch = None;
            self.follower.on_watch_canceled(
                response.compact_revision(),
                response.cancel_reason(),
                now(),
                out,
            );
            return;
        }
        if response.created() {
            self.follower.on_watch_created();
        }
        // A put carries the key's new version (1 or more); a delete carries
        // version 0 (etcd's KeyValue semantics). Reading the version instead
        // of `Event::event_type`, which panics on an event type it does not
        // know, keeps a surprising server from crashing the process.
        let changes = response.events().iter().filter_map(|event| {
            let kv = event.kv()?;
            Some(if kv.version() > 0 {
                Change::Put {
                    key: kv.key(),
                    value: kv.value(),
                }
            } else {
                Change::Delete { key: kv.key() }
            })
        });
        self.follower.on_changes(changes, out);
    }

    fn absorb(&mut self, out: Vec<Output>) {
        for output in out {
            match output {
                Output::Update(update) => self.pending.push_back(Ok(update)),
                Output::Error(error) => self.pending.push_back(Err(error)),
                Output::Malformed { key, error } => {
                    tracing::warn!(prefix = %self.prefix, key = %key, error = %error, "skipping a malformed etcd value");
                    self.malformed.increment(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_build_errors() {
        let cluster = || EtcdCluster::new(["127.0.0.1:2379"]);
        let err = Etcd::builder(cluster(), "").build().unwrap_err();
        assert_eq!(err.setting(), "prefix");
        let err = Etcd::builder(cluster(), "/s/")
            .reconnect_backoff(Duration::from_secs(2), Duration::from_secs(1))
            .build()
            .unwrap_err();
        assert_eq!(err.setting(), "reconnect_backoff");
        let err = Etcd::builder(EtcdCluster::new(["nope"]), "/s/")
            .build()
            .unwrap_err();
        assert_eq!(err.setting(), "endpoints");
    }

    #[test]
    fn build_does_no_io_and_needs_no_runtime() {
        let etcd = Etcd::builder(EtcdCluster::new(["127.0.0.1:1"]), "/s/")
            .jitter_seed(1)
            .build()
            .unwrap();
        assert_eq!(etcd.prefix(), "/s/");
    }

    #[tokio::test(start_paused = true)]
    async fn unreachable_etcd_yields_errors_and_no_update() {
        use futures_util::StreamExt;
        // Port 1 on loopback refuses connections: every list fails. With
        // paused time the backoff waits pass instantly.
        let mut etcd = Etcd::builder(EtcdCluster::new(["127.0.0.1:1"]), "/s/")
            .jitter_seed(2)
            .build()
            .unwrap();
        for _ in 0..3 {
            let item = etcd.next().await.expect("the stream never ends");
            assert!(item.is_err(), "{item:?}");
        }
    }
}
