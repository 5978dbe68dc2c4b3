//! The registrar's background task: performs [`LeaseSchedule`]'s actions
//! against etcd and feeds it their outcomes and the key's watch events.

use std::time::Duration;

use etcd_client::{
    Client, LeaseKeepAliveStream, LeaseKeeper, PutOptions, WatchOptions, WatchResponse, WatchStream,
};
use tokio::sync::{oneshot, watch};

use super::schedule::{KeyEvent, LeaseAction, LeaseSchedule, Phase};
use crate::clock::now;
use crate::discover::etcd::EtcdCluster;
use crate::discover::{DiscoverError, later};

/// gRPC's NOT_FOUND status code: etcd's answer for an unknown lease.
const GRPC_NOT_FOUND: i32 = 5;

/// How a put went.
enum Put {
    /// Done at this revision (0 if etcd's answer had no header).
    Done(i64),
    /// etcd no longer knows the lease.
    LeaseLost,
}

/// The background task: performs the schedule's actions against etcd.
pub(super) struct Worker {
    cluster: EtcdCluster,
    key: String,
    value: Vec<u8>,
    ttl_secs: i64,
    client: Option<Client>,
    keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    /// The watch on the key, once opened.
    watch: Option<WatchStream>,
    schedule: LeaseSchedule,
    status: watch::Sender<bool>,
}

fn secs(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

impl Worker {
    pub(super) fn new(
        cluster: EtcdCluster,
        key: String,
        value: Vec<u8>,
        ttl_secs: i64,
        schedule: LeaseSchedule,
        status: watch::Sender<bool>,
    ) -> Self {
        Worker {
            cluster,
            key,
            value,
            ttl_secs,
            client: None,
            keeper: None,
            watch: None,
            schedule,
            status,
        }
    }

    pub(super) async fn run(
        mut self,
        mut stop: oneshot::Receiver<()>,
    ) -> Result<(), DiscoverError> {
        loop {
            tokio::select! {
                biased;
                signal = &mut stop => {
                    self.status.send_replace(false);
                    // No repair after this: the key is meant to go.
                    self.watch = None;
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
            LeaseAction::Put { lease } => self.put(lease).await.map(|put| match put {
                Put::Done(revision) => self.schedule.on_put(revision, now()),
                Put::LeaseLost => self.schedule.on_lease_lost(lease),
            }),
            LeaseAction::KeepAlive { lease } => self
                .keep_alive(lease)
                .await
                .map(|remaining| self.schedule.on_kept_alive(lease, remaining, now())),
            LeaseAction::Watch { start_revision } => {
                match self.open_watch(start_revision).await {
                    Ok(stream) => {
                        self.watch = Some(stream);
                        self.schedule.on_watch_opened(now());
                    }
                    Err(error) => self.watch_failed(error),
                }
                Ok(())
            }
            LeaseAction::Wait { until } => {
                self.wait(until).await;
                Ok(())
            }
        };
        if let Err(error) = result {
            self.keeper = None;
            let delay = self.schedule.on_failure(now());
            tracing::warn!(key = %self.key, error = %error, retry_in = ?delay, "etcd registration step failed");
        }
    }

    /// Sleeps until `until`, reading the key's watch meanwhile if open.
    async fn wait(&mut self, until: std::time::Instant) {
        let Some(stream) = self.watch.as_mut() else {
            tokio::time::sleep_until(until.into()).await;
            return;
        };
        let message = tokio::select! {
            () = tokio::time::sleep_until(until.into()) => return,
            message = stream.message() => message,
        };
        match message {
            Ok(Some(response)) => self.on_watch_response(response),
            Ok(None) => self.watch_failed(DiscoverError::new("etcd closed the key's watch")),
            Err(e) => self.watch_failed(DiscoverError::with_source("the key's watch broke", e)),
        }
    }

    fn watch_failed(&mut self, error: DiscoverError) {
        self.watch = None;
        let delay = self.schedule.on_watch_failed(now());
        tracing::warn!(key = %self.key, error = %error, retry_in = ?delay, "watching the registration key failed");
    }

    fn on_watch_response(&mut self, response: WatchResponse) {
        if response.compact_revision() > 0 {
            self.watch = None;
            self.schedule.on_watch_compacted(now());
            return;
        }
        if response.canceled() {
            let reason = format!(
                "etcd canceled the key's watch: {}",
                response.cancel_reason()
            );
            self.watch_failed(DiscoverError::new(reason));
            return;
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            // A put carries the key's version (1 or more), a delete version
            // 0; `Event::event_type` would panic on an unknown type.
            let event = if kv.version() > 0 {
                KeyEvent::Put {
                    revision: kv.mod_revision(),
                    ours: kv.value() == self.value.as_slice(),
                    lease: kv.lease(),
                }
            } else {
                KeyEvent::Deleted {
                    revision: kv.mod_revision(),
                }
            };
            self.schedule.on_key_event(event, now());
        }
    }

    async fn open_watch(&mut self, start_revision: i64) -> Result<WatchStream, DiscoverError> {
        let mut client = self.cluster.connected(&mut self.client).await?;
        let options = WatchOptions::new().with_start_revision(start_revision);
        client
            .watch(self.key.as_bytes(), Some(options))
            .await
            .map_err(|e| DiscoverError::with_source("opening the key's watch failed", e))
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

    async fn put(&mut self, lease: i64) -> Result<Put, DiscoverError> {
        let mut client = self.cluster.connected(&mut self.client).await?;
        let put = client
            .put(
                self.key.as_bytes(),
                self.value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await;
        match put {
            Ok(answer) => Ok(Put::Done(answer.header().map_or(0, |h| h.revision()))),
            Err(etcd_client::Error::GRpcStatus(status))
                if status.code() as i32 == GRPC_NOT_FOUND =>
            {
                Ok(Put::LeaseLost)
            }
            Err(e) => Err(DiscoverError::with_source(
                "putting the registration key failed",
                e,
            )),
        }
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
