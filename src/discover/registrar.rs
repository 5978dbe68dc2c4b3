//! Registration: an instance announces itself in etcd under a lease (see
//! [`Registrar`]). The decisions (when to grant, put, renew, watch the key,
//! put it back, start over) are made by [`LeaseSchedule`] (in
//! `schedule.rs`), a plain state machine that takes the current time as an
//! argument; the [`Worker`] task (in `worker.rs`) only performs them.

use std::fmt;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

mod schedule;
mod worker;

use super::etcd::{Backoff, EtcdCluster, check_prefix, encode_value};
use crate::Endpoint;
use crate::discover::DiscoverError;
use crate::error::BuildError;
use crate::rng::Rng;
use schedule::LeaseSchedule;
use worker::Worker;

/// Keeps one endpoint registered in etcd under a lease.
///
/// A `Registrar` puts one key, `{prefix}{instance id}` (the instance id
/// defaults to the endpoint's address), whose value is the endpoint in the
/// JSON form [`Etcd`](crate::discover::Etcd) reads. The key is attached to a
/// lease (TTL default 10 s) that a background task keeps alive every TTL/3:
///
/// - if the process dies or the `Registrar` is dropped, keep-alives stop and
///   etcd deletes the key when the lease expires (within the TTL);
/// - [`Registrar::shutdown`] revokes the lease, which deletes the key at
///   once: the clean way to leave;
/// - if the lease is lost (etcd answers that it no longer exists, or
///   keep-alives failed for longer than the TTL), a new lease is granted and
///   the key put again;
/// - a watch on the key notices when someone else deletes it, or puts
///   another value or the key without the lease, while the lease lives: the
///   key is put back at once (same value, same lease). A change that comes
///   again within a TTL of the last repair is put back after a backoff, so
///   two registrars sharing an instance id do not fight at full speed;
/// - a failed call is retried after a jittered exponential backoff (default
///   200 ms doubling to 2 s); a watch that fails or ends is opened again
///   after its own backoff, and never stops the registration.
///
/// Requires the `etcd` feature.
///
/// ```no_run
/// use std::time::Duration;
/// use towline::Endpoint;
/// use towline::discover::{EtcdCluster, Registrar};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let me = Endpoint::new("10.0.0.7:8080".parse()?).with_metadata("zone", "a");
/// let registrar = Registrar::builder(EtcdCluster::new(["127.0.0.1:2379"]), "/services/api/", me)
///     .ttl(Duration::from_secs(10))
///     .build()?;
/// registrar.registered().await?;
/// // ... serve ...
/// registrar.shutdown().await?;
/// # Ok(())
/// # }
/// ```
pub struct Registrar {
    key: String,
    status: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), DiscoverError>>>,
}

impl Registrar {
    /// The default lease TTL: 10 s.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

    /// Starts building a registrar that puts `endpoint` under `prefix`.
    pub fn builder(
        cluster: EtcdCluster,
        prefix: impl Into<String>,
        endpoint: Endpoint,
    ) -> RegistrarBuilder {
        RegistrarBuilder {
            cluster,
            prefix: prefix.into(),
            instance_id: None,
            endpoint,
            ttl: Registrar::DEFAULT_TTL,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(2),
            seed: None,
        }
    }

    /// The key this registrar writes.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether the key is believed present: put under a lease that has not
    /// expired since its last successful keep-alive, and not seen deleted or
    /// overwritten since (false until it is put back).
    pub fn is_registered(&self) -> bool {
        *self.status.borrow()
    }

    /// Waits until the key is registered (at once if it already is). Fails
    /// only if the background task has ended.
    pub async fn registered(&self) -> Result<(), DiscoverError> {
        let mut status = self.status.clone();
        status
            .wait_for(|registered| *registered)
            .await
            .map(drop)
            .map_err(|_| DiscoverError::new("the registrar's task has ended"))
    }

    /// Stops keeping the lease alive and revokes it, which deletes the key at
    /// once. An error means the revoke did not reach etcd; the key then
    /// disappears when the lease expires.
    pub async fn shutdown(mut self) -> Result<(), DiscoverError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| DiscoverError::with_source("the registrar's task failed", e))?,
            None => Ok(()),
        }
    }
}

impl Drop for Registrar {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl fmt::Debug for Registrar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registrar")
            .field("key", &self.key)
            .field("registered", &self.is_registered())
            .finish()
    }
}

/// Settings for a [`Registrar`].
#[derive(Debug, Clone)]
pub struct RegistrarBuilder {
    cluster: EtcdCluster,
    prefix: String,
    instance_id: Option<String>,
    endpoint: Endpoint,
    ttl: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    seed: Option<u64>,
}

impl RegistrarBuilder {
    /// The lease TTL: how long the key outlives the last keep-alive (default
    /// 10 s). etcd counts whole seconds, so this must be a whole number of
    /// seconds, at least 1 s (etcd may raise a very short TTL to its own
    /// minimum, about 1.5 × its election timeout; keep-alives follow the TTL
    /// etcd granted).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The last part of the key (default: the endpoint's address), for
    /// instances that want a stable name. Must not be empty.
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// Retry delays after a failed call: about `min` first, doubling up to
    /// `max` (default 200 ms to 2 s). `min` must be above zero and at most
    /// `max`.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    /// Seeds the backoff jitter, for reproducible tests (default: seeded from
    /// the operating system).
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the settings and starts the background task. Must be called
    /// inside a Tokio runtime (else a `BuildError` for `runtime`).
    /// Registration proceeds in the background: await
    /// [`Registrar::registered`] to know it has happened.
    pub fn build(self) -> Result<Registrar, BuildError> {
        self.cluster.validate()?;
        check_prefix(&self.prefix)?;
        if self.ttl < Duration::from_secs(1) || self.ttl.subsec_nanos() != 0 {
            return Err(BuildError::new(
                "ttl",
                format!(
                    "{:?} is not a whole number of seconds of at least 1 s",
                    self.ttl
                ),
            ));
        }
        let ttl_secs = i64::try_from(self.ttl.as_secs())
            .map_err(|_| BuildError::new("ttl", "too long for etcd"))?;
        let instance_id = match self.instance_id {
            Some(id) if id.is_empty() => {
                return Err(BuildError::new("instance_id", "must not be empty"));
            }
            Some(id) => id,
            None => self.endpoint.addr.to_string(),
        };
        let rng = self.seed.map_or_else(Rng::from_entropy, Rng::seeded);
        let backoff = Backoff::new("reconnect_backoff", self.backoff_min, self.backoff_max, rng)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            BuildError::new(
                "runtime",
                "Registrar::build must be called inside a Tokio runtime",
            )
        })?;

        let key = format!("{}{}", self.prefix, instance_id);
        let (status_tx, status) = watch::channel(false);
        let (stop, stop_rx) = oneshot::channel();
        let worker = Worker::new(
            self.cluster,
            key.clone(),
            encode_value(&self.endpoint),
            ttl_secs,
            LeaseSchedule::new(backoff),
            status_tx,
        );
        let task = runtime.spawn(worker.run(stop_rx));
        Ok(Registrar {
            key,
            status,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn bad_settings_are_build_errors() {
        let ep = Endpoint::new("127.0.0.1:80".parse().unwrap());
        let b = || Registrar::builder(EtcdCluster::new(["127.0.0.1:2379"]), "/s/", ep.clone());
        let cases = [
            (b().ttl(Duration::from_millis(1500)), "ttl"),
            (b().ttl(Duration::ZERO), "ttl"),
            (b().instance_id(""), "instance_id"),
            (
                b().reconnect_backoff(SEC, Duration::ZERO),
                "reconnect_backoff",
            ),
            (
                Registrar::builder(EtcdCluster::new(["127.0.0.1:2379"]), "", ep.clone()),
                "prefix",
            ),
        ];
        for (builder, setting) in cases {
            assert_eq!(builder.build().unwrap_err().setting(), setting);
        }
    }

    #[test]
    fn build_outside_a_runtime_is_an_error_not_a_panic() {
        let ep = Endpoint::new("127.0.0.1:80".parse().unwrap());
        let err = Registrar::builder(EtcdCluster::new(["127.0.0.1:2379"]), "/s/", ep)
            .build()
            .unwrap_err();
        assert_eq!(err.setting(), "runtime");
    }

    #[tokio::test]
    async fn default_key_is_prefix_and_address() {
        let ep = Endpoint::new("127.0.0.1:80".parse().unwrap());
        let r = Registrar::builder(EtcdCluster::new(["127.0.0.1:1"]), "/s/", ep)
            .jitter_seed(1)
            .build()
            .unwrap();
        assert_eq!(r.key(), "/s/127.0.0.1:80");
        assert!(!r.is_registered());
    }
}
