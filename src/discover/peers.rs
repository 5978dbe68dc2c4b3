//! Peer coordinates from etcd: where this client stands among the clients
//! registered under one prefix (see [`Peers`]).

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use etcd_client::{Client, GetOptions, WatchOptions, WatchResponse};
use futures_core::Stream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::etcd::{Backoff, DEFAULT_BACKOFF_MAX, DEFAULT_BACKOFF_MIN, EtcdCluster, check_prefix};
use crate::discover::DiscoverError;
use crate::error::BuildError;
use crate::rng::Rng;
use crate::subset::Coordinate;

/// Counter of failed list or watch attempts of a [`Peers`] follower (label
/// `prefix`).
pub const PEER_ERRORS_METRIC: &str = "towline_peers_errors_total";

/// This client's [`Coordinate`] among its peers, kept current from etcd.
///
/// Each peer registers a key under a shared prefix (a
/// [`Registrar`](crate::discover::Registrar) does it, under a lease, so a
/// crashed peer goes away by itself). `Peers` lists the prefix, then
/// watches it from the listed revision + 1: the keys in byte order are the
/// peers in order, so this client's index is the rank of its own key and
/// the count is the number of keys. Every peer sees the same keys, so every
/// peer computes the same order. Values are not read: any key under the
/// prefix is a peer.
///
/// - A new coordinate is published each time the keys change it.
/// - Until its own key is seen there is no coordinate (`None`); if its key
///   vanishes later (its lease lost while it registers again), the last
///   coordinate is kept.
/// - When etcd is unreachable or the watch breaks, the last coordinate is
///   kept; the task reconnects with jittered exponential backoff (default
///   200 ms doubling to 5 s), lists again and publishes what changed
///   meanwhile. A compacted watch lists again at once.
///
/// Requires the `etcd` feature. The background task stops when `Peers` is
/// dropped.
///
/// ```no_run
/// use towline::Endpoint;
/// use towline::discover::{EtcdCluster, Peers, Registrar};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let cluster = EtcdCluster::new(["127.0.0.1:2379"]);
/// let me = Endpoint::new("10.0.0.7:9000".parse()?);
/// let registrar = Registrar::builder(cluster.clone(), "/clients/api/", me).build()?;
/// let peers = Peers::builder(cluster, "/clients/api/", registrar.key()).build()?;
/// let coordinate = peers.wait().await?;
/// println!("client {} of {}", coordinate.index(), coordinate.count());
/// # Ok(())
/// # }
/// ```
pub struct Peers {
    key: String,
    coordinate: watch::Receiver<Option<Coordinate>>,
    task: JoinHandle<()>,
}

impl Peers {
    /// Starts building a follower of `prefix` in `cluster` for the peer
    /// whose own key is `own_key` (which must start with `prefix`).
    pub fn builder(
        cluster: EtcdCluster,
        prefix: impl Into<String>,
        own_key: impl Into<String>,
    ) -> PeersBuilder {
        PeersBuilder {
            cluster,
            prefix: prefix.into(),
            own_key: own_key.into(),
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            seed: None,
        }
    }

    /// This peer's own key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The coordinate now, if known.
    pub fn current(&self) -> Option<Coordinate> {
        *self.coordinate.borrow()
    }

    /// A receiver of the coordinate, for [`Aperture`](crate::subset::Aperture)
    /// or your own `changed().await` loop.
    pub fn watch(&self) -> watch::Receiver<Option<Coordinate>> {
        self.coordinate.clone()
    }

    /// The coordinate as a stream: the current one (when known), then each
    /// new one. Ends when `Peers` is dropped.
    pub fn changes(&self) -> impl Stream<Item = Coordinate> + Send + 'static {
        let mut rx = self.coordinate.clone();
        rx.mark_changed();
        futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                rx.changed().await.ok()?;
                let current = *rx.borrow_and_update();
                if let Some(coordinate) = current {
                    return Some((coordinate, rx));
                }
            }
        })
    }

    /// Waits for the first coordinate (at once if known). Fails only if
    /// the task has ended.
    pub async fn wait(&self) -> Result<Coordinate, DiscoverError> {
        let mut rx = self.coordinate.clone();
        let known = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| DiscoverError::new("the peers task has ended"))?;
        known.ok_or_else(|| DiscoverError::new("no coordinate"))
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for Peers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peers")
            .field("key", &self.key)
            .field("coordinate", &self.current())
            .finish()
    }
}

/// Settings for [`Peers`].
#[derive(Debug, Clone)]
pub struct PeersBuilder {
    cluster: EtcdCluster,
    prefix: String,
    own_key: String,
    backoff_min: Duration,
    backoff_max: Duration,
    seed: Option<u64>,
}

impl PeersBuilder {
    /// Reconnect delays: about `min` after the first failure, doubling up
    /// to `max` (default 200 ms to 5 s). `min` above zero, at most `max`.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        (self.backoff_min, self.backoff_max) = (min, max);
        self
    }

    /// Seeds the backoff jitter, for reproducible tests (default: seeded
    /// from the operating system).
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the settings and starts the background task; must be called
    /// inside a Tokio runtime (else a `BuildError` for `runtime`).
    pub fn build(self) -> Result<Peers, BuildError> {
        self.cluster.validate()?;
        check_prefix(&self.prefix)?;
        if self.own_key.len() <= self.prefix.len() || !self.own_key.starts_with(&self.prefix) {
            return Err(BuildError::new(
                "own_key",
                format!("`{}` is not a key under `{}`", self.own_key, self.prefix),
            ));
        }
        let rng = self.seed.map_or_else(Rng::from_entropy, Rng::seeded);
        let backoff = Backoff::new("reconnect_backoff", self.backoff_min, self.backoff_max, rng)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            BuildError::new(
                "runtime",
                "Peers::build must be called inside a Tokio runtime",
            )
        })?;
        let (tx, coordinate) = watch::channel(None);
        let follower = Follower {
            errors: metrics::counter!(PEER_ERRORS_METRIC, "prefix" => self.prefix.clone()),
            cluster: self.cluster,
            prefix: self.prefix,
            set: PeerSet::new(self.own_key.clone().into_bytes()),
            client: None,
            backoff,
            tx,
        };
        Ok(Peers {
            key: self.own_key,
            coordinate,
            task: runtime.spawn(follower.run()),
        })
    }
}

/// The peers' keys and the coordinate they give this peer (no I/O).
#[derive(Debug)]
pub(crate) struct PeerSet {
    own: Vec<u8>,
    keys: BTreeSet<Vec<u8>>,
}

impl PeerSet {
    pub(crate) fn new(own: Vec<u8>) -> Self {
        PeerSet {
            own,
            keys: BTreeSet::new(),
        }
    }

    /// Replaces every key (a fresh list).
    pub(crate) fn reset<'a>(&mut self, keys: impl IntoIterator<Item = &'a [u8]>) {
        self.keys = keys.into_iter().map(<[u8]>::to_vec).collect();
    }

    /// A key was put (`present`) or deleted.
    pub(crate) fn set(&mut self, key: &[u8], present: bool) {
        if present {
            self.keys.insert(key.to_vec());
        } else {
            self.keys.remove(key);
        }
    }

    /// The rank of the own key and the number of keys; `None` while the own
    /// key is absent.
    pub(crate) fn coordinate(&self) -> Option<Coordinate> {
        if !self.keys.contains(&self.own) {
            return None;
        }
        let index = self.keys.range(..self.own.clone()).count();
        Coordinate::new(index, self.keys.len()).ok()
    }
}

/// The background task.
struct Follower {
    cluster: EtcdCluster,
    prefix: String,
    set: PeerSet,
    client: Option<Client>,
    backoff: Backoff,
    tx: watch::Sender<Option<Coordinate>>,
    errors: metrics::Counter,
}

impl Follower {
    async fn run(mut self) {
        loop {
            // `Ok` means the watch was compacted away: list again at once.
            if let Err(error) = self.follow().await {
                self.errors.increment(1);
                let delay = self.backoff.next_delay();
                tracing::warn!(prefix = %self.prefix, error = %error, retry_in = ?delay, "following etcd peers failed");
                tokio::time::sleep(delay).await;
            }
        }
    }

    /// Lists, then watches until something breaks.
    async fn follow(&mut self) -> Result<(), DiscoverError> {
        let mut client = self.cluster.connected(&mut self.client).await?;
        let listed = client
            .get(
                self.prefix.as_bytes(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .map_err(|e| DiscoverError::with_source("listing the peers failed", e))?;
        let revision = listed
            .header()
            .map(|h| h.revision())
            .ok_or_else(|| DiscoverError::new("etcd list answer has no header"))?;
        self.set.reset(listed.kvs().iter().map(|kv| kv.key()));
        self.publish();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision.saturating_add(1));
        let mut watch = client
            .watch(self.prefix.as_bytes(), Some(options))
            .await
            .map_err(|e| DiscoverError::with_source("opening the peers watch failed", e))?;
        loop {
            let response = watch
                .message()
                .await
                .map_err(|e| DiscoverError::with_source("the peers watch broke", e))?
                .ok_or_else(|| DiscoverError::new("etcd closed the peers watch"))?;
            if !self.on_response(&response)? {
                return Ok(());
            }
        }
    }

    /// Applies one watch answer; `Ok(false)` when it was compacted away.
    fn on_response(&mut self, response: &WatchResponse) -> Result<bool, DiscoverError> {
        if response.compact_revision() > 0 {
            tracing::info!(prefix = %self.prefix, "peers watch fell behind a compaction; listing again");
            return Ok(false);
        }
        if response.canceled() {
            return Err(DiscoverError::new(format!(
                "etcd cancelled the peers watch: {}",
                response.cancel_reason()
            )));
        }
        if response.created() {
            self.backoff.reset();
        }
        // A put carries version >= 1, a delete version 0 (see etcd/mod.rs).
        for kv in response.events().iter().filter_map(|e| e.kv()) {
            self.set.set(kv.key(), kv.version() > 0);
        }
        self.publish();
        Ok(true)
    }

    /// Publishes the coordinate if known and changed; keeps the last one
    /// while the own key is absent.
    fn publish(&self) {
        match self.set.coordinate() {
            Some(c) => {
                self.tx.send_if_modified(|now| {
                    let changed = *now != Some(c);
                    *now = Some(c);
                    changed
                });
            }
            None => {
                tracing::debug!(prefix = %self.prefix, "own key not among the peers; keeping the last coordinate")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(keys: &[&str], own: &str) -> PeerSet {
        let mut s = PeerSet::new(own.as_bytes().to_vec());
        s.reset(keys.iter().map(|k| k.as_bytes()));
        s
    }

    #[test]
    fn index_is_the_rank_of_the_own_key() {
        let mut s = set(&["/p/b", "/p/a", "/p/c"], "/p/b");
        assert_eq!(s.coordinate(), Some(Coordinate::new(1, 3).unwrap()));
        s.set(b"/p/0", true);
        assert_eq!(s.coordinate(), Some(Coordinate::new(2, 4).unwrap()));
        s.set(b"/p/c", false);
        s.set(b"/p/c", false);
        assert_eq!(s.coordinate(), Some(Coordinate::new(2, 3).unwrap()));
        s.set(b"/p/b", false);
        assert_eq!(s.coordinate(), None);
    }

    #[test]
    fn every_peer_gets_a_distinct_index() {
        let keys: Vec<String> = (0..8).map(|i| format!("/p/{}", 7 - i)).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut seen: Vec<usize> = refs
            .iter()
            .map(|own| set(&refs, own).coordinate().unwrap().index())
            .collect();
        seen.sort();
        assert_eq!(seen, (0..8).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn bad_settings_are_build_errors() {
        let c = || EtcdCluster::new(["127.0.0.1:2379"]);
        let cases = [
            (Peers::builder(c(), "/p/", "/q/x"), "own_key"),
            (Peers::builder(c(), "/p/", "/p/"), "own_key"),
            (Peers::builder(c(), "", "/p/x"), "prefix"),
            (
                Peers::builder(c(), "/p/", "/p/x")
                    .reconnect_backoff(Duration::from_secs(2), Duration::from_secs(1)),
                "reconnect_backoff",
            ),
        ];
        for (builder, setting) in cases {
            assert_eq!(builder.build().unwrap_err().setting(), setting);
        }
    }

    #[test]
    fn build_outside_a_runtime_is_an_error() {
        let b = Peers::builder(EtcdCluster::new(["127.0.0.1:2379"]), "/p/", "/p/x");
        assert_eq!(b.build().unwrap_err().setting(), "runtime");
    }

    #[tokio::test(start_paused = true)]
    async fn unreachable_etcd_gives_no_coordinate_and_keeps_trying() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        // Port 1 on loopback refuses connections; paused time runs the
        // backoff waits at once.
        let peers = metrics::with_local_recorder(&recorder, || {
            Peers::builder(EtcdCluster::new(["127.0.0.1:1"]), "/p/", "/p/x")
                .jitter_seed(1)
                .build()
        })
        .unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(peers.current(), None);
        let errors = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find(|(key, ..)| key.key().name() == PEER_ERRORS_METRIC)
            .map(|(.., value)| value);
        assert!(
            matches!(errors, Some(DebugValue::Counter(n)) if n >= 3),
            "{errors:?}"
        );
    }
}
