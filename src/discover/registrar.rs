//! Registration: an instance announces itself in etcd under a lease (see
//! [`Registrar`]). The decisions (when to grant, put, renew, start over) are
//! made by [`LeaseSchedule`] (in `schedule.rs`), a plain state machine that
//! takes the current time as an argument; the [`Worker`] task only performs
//! them.

use std::fmt;
use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

mod schedule;

use super::etcd::{Backoff, EtcdCluster, check_prefix, encode_value};
use crate::Endpoint;
use crate::clock::now;
use crate::discover::{DiscoverError, later};
use crate::error::BuildError;
use crate::rng::Rng;
use schedule::{LeaseAction, LeaseSchedule, Phase};

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
/// - a failed call is retried after a jittered exponential backoff (default
///   200 ms doubling to 2 s).
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
    /// expired since its last successful keep-alive.
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
        let worker = Worker {
            cluster: self.cluster,
            key: key.clone(),
            value: encode_value(&self.endpoint),
            ttl_secs,
            client: None,
            keeper: None,
            schedule: LeaseSchedule::new(backoff),
            status: status_tx,
        };
        let task = runtime.spawn(worker.run(stop_rx));
        Ok(Registrar {
            key,
            status,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// The background task: performs the schedule's actions against etcd.
struct Worker {
    cluster: EtcdCluster,
    key: String,
    value: Vec<u8>,
    ttl_secs: i64,
    client: Option<Client>,
    keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    schedule: LeaseSchedule,
    status: watch::Sender<bool>,
}

fn secs(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

impl Worker {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) -> Result<(), DiscoverError> {
        loop {
            tokio::select! {
                biased;
                signal = &mut stop => {
                    self.status.send_replace(false);
                    return match signal {
                        Ok(()) => self.revoke().await,
                        // The handle is gone without asking: let the lease expire.
                        Err(_) => Ok(()),
                    };
                }
                () = self.step() => {}
            }
            let registered = self.schedule.is_registered(now());
            self.status
                .send_if_modified(|r| std::mem::replace(r, registered) != registered);
        }
    }

    async fn step(&mut self) {
        let result = match self.schedule.action(now()) {
            LeaseAction::Grant => {
                self.keeper = None;
                self.grant()
                    .await
                    .map(|(lease, ttl)| self.schedule.on_granted(lease, ttl))
            }
            LeaseAction::Put { lease } => {
                self.put(lease).await.map(|()| self.schedule.on_put(now()))
            }
            LeaseAction::KeepAlive { lease } => self
                .keep_alive(lease)
                .await
                .map(|remaining| self.schedule.on_kept_alive(lease, remaining, now())),
            LeaseAction::Wait { until } => {
                tokio::time::sleep_until(until.into()).await;
                Ok(())
            }
        };
        if let Err(error) = result {
            self.keeper = None;
            let delay = self.schedule.on_failure(now());
            tracing::warn!(key = %self.key, error = %error, retry_in = ?delay, "etcd registration step failed");
        }
    }

    async fn grant(&mut self) -> Result<(i64, Duration), DiscoverError> {
        let mut client = self.cluster.connected(&mut self.client).await?;
        let granted = client
            .lease_grant(self.ttl_secs, None)
            .await
            .map_err(|e| DiscoverError::with_source("granting an etcd lease failed", e))?;
        if !granted.error().is_empty() || granted.ttl() <= 0 {
            return Err(DiscoverError::new(format!(
                "etcd refused the lease: {}",
                granted.error()
            )));
        }
        Ok((granted.id(), secs(granted.ttl())))
    }

    async fn put(&mut self, lease: i64) -> Result<(), DiscoverError> {
        let mut client = self.cluster.connected(&mut self.client).await?;
        client
            .put(
                self.key.as_bytes(),
                self.value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .map(drop)
            .map_err(|e| DiscoverError::with_source("putting the registration key failed", e))
    }

    /// Renews `lease`; returns its remaining TTL, zero if etcd lost it.
    async fn keep_alive(&mut self, lease: i64) -> Result<Duration, DiscoverError> {
        let broken = |e| DiscoverError::with_source("etcd lease keep-alive failed", e);
        if self
            .keeper
            .as_ref()
            .is_none_or(|(keeper, _)| keeper.id() != lease)
        {
            self.keeper = None;
            let mut client = self.cluster.connected(&mut self.client).await?;
            // Opening the stream sends one keep-alive and reads its answer;
            // this error variant is its "lease not found".
            return match client.lease_keep_alive(lease).await {
                Ok(opened) => {
                    self.keeper = Some(opened);
                    Ok(self.schedule.ttl)
                }
                Err(etcd_client::Error::LeaseKeepAliveError(_)) => Ok(Duration::ZERO),
                Err(e) => Err(broken(e)),
            };
        }
        let Some((keeper, answers)) = self.keeper.as_mut() else {
            return Err(DiscoverError::new("no keep-alive stream"));
        };
        keeper.keep_alive().await.map_err(broken)?;
        let wait = self.schedule.ttl.max(Duration::from_secs(1));
        match tokio::time::timeout(wait, answers.message()).await {
            Ok(Ok(Some(answer))) => Ok(secs(answer.ttl())),
            Ok(Ok(None)) => Err(DiscoverError::new("etcd closed the keep-alive stream")),
            Ok(Err(e)) => Err(broken(e)),
            Err(_) => Err(DiscoverError::new(
                "etcd did not answer a keep-alive in time",
            )),
        }
    }

    /// Revokes the current lease, retrying (with the backoff) while the
    /// lease may still live: with several members, a call can land on one
    /// that is down. A lease etcd no longer knows counts as revoked.
    async fn revoke(&mut self) -> Result<(), DiscoverError> {
        self.keeper = None;
        let lease = match self.schedule.phase {
            Phase::Put { lease } | Phase::Alive { lease, .. } => lease,
            Phase::Retry {
                lease: Some(lease), ..
            } => lease,
            _ => return Ok(()),
        };
        let give_up = later(now(), self.schedule.ttl.max(Duration::from_secs(1)));
        loop {
            let error = match self.cluster.connected(&mut self.client).await {
                Ok(mut client) => match client.lease_revoke(lease).await {
                    Ok(_) => return Ok(()),
                    Err(etcd_client::Error::GRpcStatus(status))
                        if status.code() as i32 == GRPC_NOT_FOUND =>
                    {
                        return Ok(());
                    }
                    Err(e) => DiscoverError::with_source("revoking the etcd lease failed", e),
                },
                Err(e) => e,
            };
            let delay = self.schedule.backoff.next_delay();
            if later(now(), delay) >= give_up {
                return Err(error);
            }
            tracing::debug!(lease, error = %error, retry_in = ?delay, "retrying the lease revoke");
            tokio::time::sleep(delay).await;
        }
    }
}

/// gRPC's NOT_FOUND status code: etcd's answer for an unknown lease.
const GRPC_NOT_FOUND: i32 = 5;

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
