//! Subsetting and discovery in the simulator: which backends each client's
//! channel is told about, and when a backend leaves discovery.
//!
//! Every client's channel follows one shared source: a `Static` list of
//! every backend, or, when a phase removes a backend from discovery or a
//! backend joins during the run, a `Manual` one that a timer task changes
//! at those edges. A
//! configuration's `subset` narrows each client's view: its deterministic
//! aperture (client `i` of the `K` clients of the scenario, in file order),
//! or a random subset drawn once per client from the run's seed.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;
use futures_util::StreamExt;
use tokio::time::Instant;

use super::ScenarioError;
use super::backend::BackendSpec;
use super::format::FileSubset;
use crate::Endpoint;
use crate::discover::{DiscoverError, Manual, Static, Update};
use crate::rng::Rng;
use crate::subset::ApertureSettings;

/// A discovery stream, boxed.
pub(crate) type Updates = Pin<Box<dyn Stream<Item = Result<Update, DiscoverError>> + Send>>;

/// Which backends each client uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum SubsetSpec {
    /// Its deterministic aperture.
    Aperture(ApertureSettings),
    /// A random subset of this many backends.
    Random(usize),
}

/// A configuration's `subset` table: `{ aperture = d }` (with an optional
/// `min_size`) or `{ random = d }`.
pub(crate) fn subset(s: &FileSubset, at: &str) -> Result<SubsetSpec, ScenarioError> {
    let bad = |m: &str| Err(ScenarioError::new(format!("{at}: subset: {m}")));
    match (s.aperture, s.random, s.min_size) {
        (Some(d), None, min) => {
            let mut settings = ApertureSettings::new(d);
            if let Some(min) = min {
                settings = settings.with_min_size(min);
            }
            match settings.validate() {
                Ok(()) => Ok(SubsetSpec::Aperture(settings)),
                Err(e) => bad(&e.to_string()),
            }
        }
        (None, Some(0), None) => bad("a random subset needs at least one backend"),
        (None, Some(d), None) => Ok(SubsetSpec::Random(d)),
        _ => bad("write { aperture = d } (min_size optional) or { random = d }"),
    }
}

/// The address of backend `i` (10.0.x.y:80, in index order).
pub(crate) fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i >> 8) as u8, (i & 0xff) as u8], 80))
}

/// The index of the backend at `addr`.
pub(crate) fn index(addr: SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(a) => {
            let o = a.ip().octets();
            (usize::from(o[2]) << 8) | usize::from(o[3])
        }
        SocketAddr::V6(_) => 0,
    }
}

/// The backends as discovery lists them over a run.
pub(crate) struct Listing {
    endpoints: Vec<Endpoint>,
    /// `(backend, from, to)`: out of discovery between the two times.
    removals: Vec<(usize, Duration, Duration)>,
    manual: Option<Manual>,
}

impl Listing {
    /// The listing of `backends` (in index order, their weights).
    pub(crate) fn new(backends: &[BackendSpec]) -> Self {
        let mut endpoints = Vec::new();
        let mut removals = Vec::new();
        for spec in backends {
            for _ in 0..spec.count {
                let i = endpoints.len();
                endpoints.push(Endpoint::new(addr(i)).with_weight(spec.weight));
                // A backend that joins later is out of discovery until then.
                if !spec.join.is_zero() {
                    removals.push((i, Duration::ZERO, spec.join));
                }
                for p in spec.phases.iter().filter(|p| p.removed == Some(true)) {
                    removals.push((i, p.from, p.to));
                }
            }
        }
        let mut listing = Listing {
            endpoints,
            removals,
            manual: None,
        };
        if !listing.removals.is_empty() {
            listing.manual = Some(Manual::with_endpoints(listing.listed(Duration::ZERO)));
        }
        listing
    }

    /// The endpoints listed at `t`.
    fn listed(&self, t: Duration) -> Vec<Endpoint> {
        self.endpoints
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                !self
                    .removals
                    .iter()
                    .any(|&(r, from, to)| r == *i && from <= t && t < to)
            })
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Whether each backend is listed at `t`, by index.
    pub(crate) fn listed_at(&self, t: Duration) -> Vec<bool> {
        let listed: BTreeSet<SocketAddr> = self.listed(t).iter().map(|e| e.addr).collect();
        self.endpoints
            .iter()
            .map(|e| listed.contains(&e.addr))
            .collect()
    }

    /// A new stream of the listing for one client's channel.
    pub(crate) fn source(&self) -> Updates {
        match &self.manual {
            Some(manual) => Box::pin(manual.stream()),
            None => Box::pin(Static::new(self.endpoints.clone())),
        }
    }

    /// A stream of the listing narrowed to a random subset of `size`
    /// backends drawn with `rng`.
    pub(crate) fn random_source(&self, size: usize, rng: &mut Rng) -> Updates {
        let n = self.endpoints.len();
        let mut chosen = BTreeSet::new();
        while chosen.len() < size.min(n) {
            chosen.insert(rng.below(n));
        }
        let keep = move |e: &Endpoint| chosen.contains(&index(e.addr));
        Box::pin(self.source().filter_map(move |item| {
            let item = match item {
                Ok(Update::Reset(set)) => {
                    Ok(Update::Reset(set.into_iter().filter(&keep).collect()))
                }
                Ok(Update::Insert(e)) if !keep(&e) => return std::future::ready(None),
                other => other,
            };
            std::future::ready(Some(item))
        }))
    }

    /// Changes the listing at each removal's edges, from `epoch`, until the
    /// last edge (on the current runtime); nothing without removals.
    pub(crate) fn follow(&self, epoch: Instant) {
        let Some(manual) = self.manual.clone() else {
            return;
        };
        let mut edges: Vec<Duration> = self
            .removals
            .iter()
            .flat_map(|&(_, from, to)| [from, to])
            .collect();
        edges.sort();
        edges.dedup();
        let at: Vec<(Duration, Vec<Endpoint>)> =
            edges.into_iter().map(|t| (t, self.listed(t))).collect();
        tokio::spawn(async move {
            for (t, set) in at {
                // A removal without an end has no edge to wait for.
                let Some(when) = epoch.checked_add(t) else {
                    return;
                };
                tokio::time::sleep_until(when).await;
                manual.reset(set);
            }
        });
    }
}
