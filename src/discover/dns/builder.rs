//! The settings of a [`Dns`] source and their checks.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::Name;
use hickory_resolver::{Resolver, TokioResolver};

use super::Dns;
use super::family::{AddressFamilies, DEFAULT_FAMILY_WAIT};
use super::refresh::RefreshPolicy;
use super::resolve::{HickoryResolve, Target};
use crate::BuildError;
use crate::discover::RefreshHint;
use crate::rng::Rng;

/// Default time to wait for one DNS query: 2 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default number of times a query is sent before the lookup fails: 2.
pub const DEFAULT_ATTEMPTS: usize = 2;

/// Builds a [`Dns`] source; made by [`Dns::host`] or [`Dns::srv`].
///
/// Every setting has a default (listed on its method); [`build`](Self::build)
/// checks them all and returns a [`BuildError`] naming the first bad one.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .build()"]
pub struct DnsBuilder {
    name: String,
    port: Option<u16>,
    name_servers: Option<Vec<SocketAddr>>,
    timeout: Duration,
    attempts: usize,
    policy: RefreshPolicy,
    hint: Option<RefreshHint>,
    seed: Option<u64>,
    families: AddressFamilies,
    family_wait: Duration,
}

impl DnsBuilder {
    pub(super) fn new(name: String, port: Option<u16>) -> Self {
        DnsBuilder {
            name,
            port,
            name_servers: None,
            timeout: DEFAULT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
            policy: RefreshPolicy::default(),
            hint: None,
            seed: None,
            families: AddressFamilies::Both,
            family_wait: DEFAULT_FAMILY_WAIT,
        }
    }

    /// Asks these name servers (UDP, with TCP for truncated answers)
    /// instead of the system's. Default: the system configuration
    /// (`/etc/resolv.conf`, and the hosts file).
    pub fn name_servers(mut self, servers: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.name_servers = Some(servers.into_iter().collect());
        self
    }

    /// How long to wait for one query. Default [`DEFAULT_TIMEOUT`] (2 s);
    /// it replaces the system configuration's value. Must be above zero.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many times a query is sent (the first included) before the
    /// lookup counts as failed. Default [`DEFAULT_ATTEMPTS`] (2); it
    /// replaces the system configuration's value. At least 1. A dead server
    /// is detected after about `timeout × attempts`.
    pub fn attempts(mut self, attempts: usize) -> Self {
        self.attempts = attempts;
        self
    }

    /// The shortest wait between two refreshes, whatever the TTL (a TTL of 0
    /// is common). Default 1 s; must be above zero.
    pub fn min_ttl(mut self, min: Duration) -> Self {
        self.policy.min_ttl = min;
        self
    }

    /// The longest wait between two refreshes, whatever the TTL. Default
    /// 5 min; must not be below `min_ttl`.
    pub fn max_ttl(mut self, max: Duration) -> Self {
        self.policy.max_ttl = max;
        self
    }

    /// The share of the (clamped) TTL by which a refresh may come early, at
    /// random, so that many clients do not query in step. Default 0.1; in
    /// `[0, 1)`.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.policy.jitter = jitter;
        self
    }

    /// The retry wait after failed lookups: `initial` after the first,
    /// doubling up to `max`, each drawn at random from the upper half of the
    /// step. Default 1 s and 30 s; `initial` above zero, `max >= initial`.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.policy.backoff_initial = initial;
        self.policy.backoff_max = max;
        self
    }

    /// How long authoritative empty answers (NXDOMAIN, no records) must last
    /// before a non-empty set is dropped. Default 30 s; zero drops at once.
    pub fn empty_grace(mut self, grace: Duration) -> Self {
        self.policy.empty_grace = grace;
        self
    }

    /// The most endpoints taken from one answer; beyond it a stable subset
    /// is kept (a warning is logged). Default 1,024; at least 1.
    pub fn max_endpoints(mut self, max: usize) -> Self {
        self.policy.max_endpoints = max;
        self
    }

    /// Looks again early when `hint` is requested (the channel does when it
    /// has no usable endpoint). Default: no hint, refresh on TTL only.
    pub fn refresh_hint(mut self, hint: RefreshHint) -> Self {
        self.hint = Some(hint);
        self
    }

    /// The shortest time between the start of one lookup and a lookup
    /// asked for by the hint. Default 1 s; must be above zero.
    pub fn min_hint_interval(mut self, interval: Duration) -> Self {
        self.policy.min_hint_interval = interval;
        self
    }

    /// Seeds the random jitter (for reproducible tests). Default: seeded
    /// from the operating system.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Which address families are asked for (A, AAAA or both) and kept.
    /// Default: [`AddressFamilies::Both`], which keeps the last endpoints of
    /// a family whose query fails while the other answers; set one family
    /// where the resolver drops the other's queries, to stop waiting for
    /// them on every lookup. See [`AddressFamilies`].
    pub fn address_families(mut self, families: AddressFamilies) -> Self {
        self.families = families;
        self
    }

    /// While no endpoint is known (the first lookup, or after the set
    /// emptied), how long a lookup waits for the other address family once
    /// one family has given addresses. Default [`DEFAULT_FAMILY_WAIT`]
    /// (250 ms). A family still unanswered then counts as failed for that
    /// lookup: the first family's endpoints are published, the failure is
    /// reported, and the next lookup (at the earlier of the TTL and the
    /// backoff, 1 s at first by default) waits for both, as every lookup
    /// with endpoints known does. So a
    /// resolver that never answers one family's queries delays the first
    /// endpoints by this wait, not by the query timeout (`timeout ×
    /// attempts`). Only with [`AddressFamilies::Both`] in host mode; SRV
    /// targets are always waited for.
    pub fn family_wait(mut self, wait: Duration) -> Self {
        self.family_wait = wait;
        self
    }

    /// Checks the settings and makes the source. Reads the system resolver
    /// configuration when no name servers were given; needs no runtime
    /// (lookups start at the first poll, inside one).
    pub fn build(self) -> Result<Dns, BuildError> {
        self.check()?;
        let name = parse_name(&self.name)?;
        let target = match self.port {
            Some(0) => return Err(BuildError::new("port", "must not be 0")),
            Some(port) => Target::Host { name, port },
            None => {
                check_srv_name(&name)?;
                Target::Srv { name }
            }
        };
        let resolver = self.resolver()?;
        let rng = self.seed.map_or_else(Rng::from_entropy, Rng::seeded);
        let resolve = HickoryResolve {
            resolver,
            target,
            max_target_lookups: self.policy.max_endpoints,
            families: self.families,
            family_wait: self.family_wait,
        };
        Ok(Dns::from_parts(
            self.name,
            Box::new(resolve),
            self.policy,
            rng,
            self.hint,
        ))
    }

    fn check(&self) -> Result<(), BuildError> {
        let p = &self.policy;
        let checks: [(bool, &'static str, &str); 9] = [
            (self.timeout.is_zero(), "timeout", "must be above zero"),
            (self.attempts == 0, "attempts", "must be at least 1"),
            (p.min_ttl.is_zero(), "min_ttl", "must be above zero"),
            (
                p.max_ttl < p.min_ttl,
                "max_ttl",
                "must not be below min_ttl",
            ),
            (
                !(0.0..1.0).contains(&p.jitter),
                "jitter",
                "must be in [0, 1)",
            ),
            (
                p.backoff_initial.is_zero(),
                "backoff",
                "initial must be above zero",
            ),
            (
                p.backoff_max < p.backoff_initial,
                "backoff",
                "max must not be below initial",
            ),
            (p.max_endpoints == 0, "max_endpoints", "must be at least 1"),
            (
                p.min_hint_interval.is_zero(),
                "min_hint_interval",
                "must be above zero",
            ),
        ];
        if let Some((_, setting, reason)) = checks.into_iter().find(|(bad, ..)| *bad) {
            return Err(BuildError::new(setting, reason));
        }
        if self.name_servers.as_ref().is_some_and(Vec::is_empty) {
            return Err(BuildError::new(
                "name_servers",
                "must list at least one server",
            ));
        }
        Ok(())
    }

    fn resolver(&self) -> Result<TokioResolver, BuildError> {
        let mut builder = match &self.name_servers {
            Some(servers) => {
                let config = ResolverConfig::from_name_servers(
                    servers.iter().map(|s| name_server(*s)).collect(),
                );
                Resolver::builder_with_config(config, TokioRuntimeProvider::default())
            }
            None => TokioResolver::builder_tokio().map_err(|e| {
                BuildError::new(
                    "name_servers",
                    format!("cannot read the system DNS configuration: {e}"),
                )
            })?,
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = self.timeout;
        // hickory counts the re-sends after the first query.
        opts.attempts = self.attempts - 1;
        // Every refresh must ask the server; TTLs are honoured by the refresh
        // schedule, not by a cache.
        opts.cache_size = 0;
        if self.name_servers.is_some() {
            opts.use_hosts_file = ResolveHosts::Never;
        }
        builder
            .build()
            .map_err(|e| BuildError::new("name_servers", format!("cannot build the resolver: {e}")))
    }
}

fn name_server(addr: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

fn parse_name(name: &str) -> Result<Name, BuildError> {
    if name.trim().is_empty() {
        return Err(BuildError::new("name", "must not be empty"));
    }
    Name::from_utf8(name)
        .map_err(|e| BuildError::new("name", format!("`{name}` is not a DNS name: {e}")))
}

/// An SRV name is `_service._proto.domain`.
fn check_srv_name(name: &Name) -> Result<(), BuildError> {
    let mut labels = name.iter();
    let underscored = |l: Option<&[u8]>| l.is_some_and(|l| l.len() > 1 && l[0] == b'_');
    if underscored(labels.next()) && underscored(labels.next()) && labels.next().is_some() {
        Ok(())
    } else {
        Err(BuildError::new(
            "name",
            format!("`{name}` is not an SRV name of the form _service._proto.domain"),
        ))
    }
}
