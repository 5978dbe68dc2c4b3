//! Connection settings for an etcd cluster (see [`EtcdCluster`]), shared by
//! discovery and registration.

use std::fmt;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use crate::discover::DiscoverError;
use crate::error::BuildError;

/// Where an etcd cluster is and how to talk to it.
///
/// `EtcdCluster` holds the connection settings shared by [`Etcd`]
/// discovery and the [`Registrar`]: the member endpoints (give several: the
/// client spreads requests over them and moves on when one is down),
/// timeouts, HTTP/2 keep-alive, user/password authentication and, with the
/// `etcd-tls` feature, TLS.
///
/// Defaults: connect timeout 2 s, request timeout 5 s (unary calls and the
/// opening of a stream; an open watch is not cut by it), HTTP/2 keep-alive
/// ping every 10 s with a 5 s timeout (so a silently dead member is noticed),
/// no authentication, plain HTTP.
///
/// ```
/// use std::time::Duration;
/// use towline::discover::EtcdCluster;
///
/// let cluster = EtcdCluster::new(["127.0.0.1:2379", "127.0.0.1:22379", "127.0.0.1:32379"])
///     .user("svc", "secret")
///     .request_timeout(Duration::from_secs(3));
/// # drop(cluster);
/// ```
///
/// [`Etcd`]: super::Etcd
/// [`Registrar`]: crate::discover::Registrar
#[derive(Clone)]
pub struct EtcdCluster {
    endpoints: Vec<String>,
    user: Option<(String, String)>,
    connect_timeout: Duration,
    request_timeout: Duration,
    keep_alive: Option<(Duration, Duration)>,
    #[cfg(feature = "etcd-tls")]
    tls: Option<etcd_client::TlsOptions>,
}

impl EtcdCluster {
    /// A cluster reached at these member endpoints: `host:port`, or
    /// `http://host:port` (`https://` with the `etcd-tls` feature).
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EtcdCluster {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            user: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            keep_alive: Some((Duration::from_secs(10), Duration::from_secs(5))),
            #[cfg(feature = "etcd-tls")]
            tls: None,
        }
    }

    /// Authenticates as this etcd user (default: no authentication).
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((name.into(), password.into()));
        self
    }

    /// How long to wait for a TCP connection to a member (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a unary call, or the opening of a stream, may take
    /// (default 5 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// HTTP/2 keep-alive: a ping every `interval`, the connection dropped
    /// when no answer comes within `timeout` (default 10 s and 5 s). etcd
    /// refuses pings more often than every 5 s by default.
    pub fn keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive = Some((interval, timeout));
        self
    }

    /// Turns HTTP/2 keep-alive pings off.
    pub fn no_keep_alive(mut self) -> Self {
        self.keep_alive = None;
        self
    }

    /// Connects over TLS with these options (feature `etcd-tls`); the
    /// endpoints may then be given as `https://host:port` or `host:port`.
    #[cfg(feature = "etcd-tls")]
    pub fn tls(mut self, tls: etcd_client::TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The member endpoints, as given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Checks the settings; the builders call this.
    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        if self.endpoints.is_empty() {
            return Err(BuildError::new(
                "endpoints",
                "at least one etcd endpoint is needed",
            ));
        }
        for endpoint in &self.endpoints {
            check_endpoint(endpoint, self.tls_enabled())?;
        }
        for (setting, d) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err(BuildError::new(setting, "must be above zero"));
            }
        }
        if let Some((interval, timeout)) = self.keep_alive
            && (interval.is_zero() || timeout.is_zero())
        {
            return Err(BuildError::new(
                "keep_alive",
                "interval and timeout must be above zero",
            ));
        }
        if let Some((name, _)) = &self.user
            && name.is_empty()
        {
            return Err(BuildError::new("user", "the user name is empty"));
        }
        Ok(())
    }

    fn tls_enabled(&self) -> bool {
        #[cfg(feature = "etcd-tls")]
        {
            self.tls.is_some()
        }
        #[cfg(not(feature = "etcd-tls"))]
        {
            false
        }
    }

    /// Opens a client. Without a user this does no I/O (members are dialled
    /// on first use); with one it authenticates, so it fails while etcd is
    /// unreachable.
    pub(crate) async fn connect(&self) -> Result<Client, DiscoverError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_timeout(self.request_timeout)
            .with_require_leader(true);
        if let Some((interval, timeout)) = self.keep_alive {
            options = options.with_keep_alive(interval, timeout);
        }
        if let Some((name, password)) = &self.user {
            options = options.with_user(name.clone(), password.clone());
        }
        #[cfg(feature = "etcd-tls")]
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.clone());
        }
        Client::connect(&self.endpoints, Some(options))
            .await
            .map_err(|e| DiscoverError::with_source("cannot connect to etcd", e))
    }

    /// The client in `cached`, opened with [`connect`](Self::connect) on
    /// first use; etcd-client redials members by itself afterwards.
    pub(crate) async fn connected(
        &self,
        cached: &mut Option<Client>,
    ) -> Result<Client, DiscoverError> {
        if let Some(client) = cached {
            return Ok(client.clone());
        }
        let client = self.connect().await?;
        *cached = Some(client.clone());
        Ok(client)
    }
}

impl fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password is never printed.
        f.debug_struct("EtcdCluster")
            .field("endpoints", &self.endpoints)
            .field("user", &self.user.as_ref().map(|(name, _)| name))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("keep_alive", &self.keep_alive)
            .field("tls", &self.tls_enabled())
            .finish()
    }
}

/// Accepts `[scheme://]host:port` with a numeric port; `https` only when TLS
/// is configured.
fn check_endpoint(endpoint: &str, tls: bool) -> Result<(), BuildError> {
    let bad = |why: &str| BuildError::new("endpoints", format!("`{endpoint}`: {why}"));
    let rest = if let Some(rest) = endpoint.strip_prefix("https://") {
        if !tls {
            return Err(bad(if cfg!(feature = "etcd-tls") {
                "https needs TLS options (EtcdCluster::tls)"
            } else {
                "https needs the `etcd-tls` feature"
            }));
        }
        rest
    } else if let Some(rest) = endpoint.strip_prefix("http://") {
        if tls {
            return Err(bad("TLS options are set but the endpoint is http://"));
        }
        rest
    } else {
        endpoint
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(bad("expected host:port"));
    };
    if host.is_empty() || host.contains(['/', ' ', '@']) {
        return Err(bad("the host is empty or not a host name"));
    }
    if port.parse::<u16>().is_err() {
        return Err(bad("the port is not a number from 0 to 65535"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_settings_pass() {
        let c = EtcdCluster::new(["127.0.0.1:2379", "http://etcd-1.local:2379", "[::1]:2379/"]);
        c.validate().unwrap();
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let cases = [
            (EtcdCluster::new(Vec::<String>::new()), "endpoints"),
            (EtcdCluster::new(["127.0.0.1"]), "endpoints"),
            (EtcdCluster::new(["127.0.0.1:http"]), "endpoints"),
            (EtcdCluster::new([":2379"]), "endpoints"),
            (EtcdCluster::new(["127.0.0.1:70000"]), "endpoints"),
            (EtcdCluster::new(["https://127.0.0.1:2379"]), "endpoints"),
            (
                EtcdCluster::new(["127.0.0.1:2379"]).request_timeout(Duration::ZERO),
                "request_timeout",
            ),
            (
                EtcdCluster::new(["127.0.0.1:2379"]).connect_timeout(Duration::ZERO),
                "connect_timeout",
            ),
            (
                EtcdCluster::new(["127.0.0.1:2379"])
                    .keep_alive(Duration::ZERO, Duration::from_secs(1)),
                "keep_alive",
            ),
            (EtcdCluster::new(["127.0.0.1:2379"]).user("", "pw"), "user"),
        ];
        for (cluster, setting) in cases {
            let err = cluster
                .validate()
                .expect_err(&format!("{cluster:?} accepted"));
            assert_eq!(err.setting(), setting, "{err}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let c = EtcdCluster::new(["127.0.0.1:2379"]).user("svc", "hunter2");
        let shown = format!("{c:?}");
        assert!(
            shown.contains("svc") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
