//! When to look a name up again, and what each answer changes: a plain
//! synchronous state machine driven by the caller's clock.
//!
//! The [`Refresher`] takes every lookup result with the time it arrived and
//! returns a [`Step`]: the set to publish (only when it changed), the error
//! to report, and when to look again:
//! - an answer with records: at its TTL clamped to `[min_ttl, max_ttl]`
//!   (defaults 1 s and 5 min), brought forward by a random share of up to
//!   `jitter` (default 10 %) so that many clients do not resolve in step;
//! - a transport error or timeout: the last set stays, the next try comes
//!   after an exponential backoff (`backoff_initial` 1 s doubling up to
//!   `backoff_max` 30 s) drawn uniformly from the upper half of the step;
//! - one address family answering while the other's query fails: the new
//!   addresses of the one and the last published ones of the other, the
//!   error reported, the next try at the earlier of the TTL and the backoff;
//! - an authoritative empty answer (NXDOMAIN, no records): a non-empty set is
//!   only dropped once empty answers have lasted `empty_grace` (30 s);
//! - more endpoints than `max_endpoints` (1,024): a stable subset is kept,
//!   chosen by a per-client salted hash so that clients spread over the full
//!   set instead of all taking the same addresses.
//!
//! An early refresh asked through a hint moves the next lookup to now, but
//! never sooner than `min_hint_interval` (1 s) after the previous lookup
//! started.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use super::family::Family;
use crate::Endpoint;
use crate::discover::{DiscoverError, later};
use crate::policy::backoff::{Backoff, Jitter};
use crate::rng::Rng;

/// The tunable settings of a [`Refresher`]; see the module doc for defaults.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RefreshPolicy {
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub jitter: f64,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub empty_grace: Duration,
    pub max_endpoints: usize,
    pub min_hint_interval: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(300),
            jitter: 0.1,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            empty_grace: Duration::from_secs(30),
            max_endpoints: 1024,
            min_hint_interval: Duration::from_secs(1),
        }
    }
}

/// The result of one lookup, as the resolver reports it.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// Usable endpoints (any order, may exceed the cap) valid for `ttl`.
    Endpoints {
        endpoints: Vec<Endpoint>,
        ttl: Duration,
    },
    /// An authoritative "no such name / no records", with the negative TTL
    /// when the server gave one.
    Empty { ttl: Option<Duration> },
    /// No usable answer: timeout, transport error, server failure, or only
    /// malformed records.
    Failed(DiscoverError),
    /// One address family answered with `endpoints` (valid for `ttl`) while
    /// the query of family `kept` failed with `error`: the last published
    /// endpoints of `kept` stay next to the new ones.
    Partial {
        endpoints: Vec<Endpoint>,
        ttl: Duration,
        kept: Family,
        error: DiscoverError,
    },
}

/// What the caller should do after a lookup.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    /// The new set to publish, present only when it differs from the last.
    pub update: Option<Vec<Endpoint>>,
    /// The error to report (the set is kept).
    pub error: Option<DiscoverError>,
    /// When to look up again.
    pub next_at: Instant,
    /// What happened, for logs.
    pub note: Note,
}

/// What a lookup did to the set, for logs and metrics.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Note {
    /// The answer gave the set already published.
    Unchanged,
    /// The answer gave a different set.
    Changed {
        /// When the answer had more endpoints than the cap: how many.
        cut_from: Option<usize>,
    },
    /// An empty answer while a set is held; it is dropped at `until`.
    /// `first` marks the answer that started the empty spell.
    EmptyWithinGrace { until: Instant, first: bool },
    /// Empty answers outlasted the grace period (or nothing was held): the
    /// set is now empty.
    Emptied,
    /// The lookup failed; this many times in a row.
    Failed { consecutive: u32 },
    /// One family's query failed (this many lookups in a row) and its last
    /// endpoints were kept; `changed`: the published set changed.
    Partial {
        kept: Family,
        consecutive: u32,
        changed: bool,
    },
}

/// The refresh state of one DNS name.
#[derive(Debug, Clone)]
pub(crate) struct Refresher {
    policy: RefreshPolicy,
    rng: Rng,
    /// Salt of the hash that picks which endpoints survive the cap.
    subset_salt: u64,
    /// The last published set; `None` before the first answer.
    current: Option<Vec<Endpoint>>,
    /// Since when answers have been empty while a set was held.
    empty_since: Option<Instant>,
    failures: u32,
    /// `None` until the first lookup: look up at once.
    next_at: Option<Instant>,
    last_started: Option<Instant>,
}

impl Refresher {
    pub(crate) fn new(policy: RefreshPolicy, mut rng: Rng) -> Self {
        let subset_salt = rng.next_u64();
        Refresher {
            policy,
            rng,
            subset_salt,
            current: None,
            empty_since: None,
            failures: 0,
            next_at: None,
            last_started: None,
        }
    }

    /// Whether a non-empty set has been published (and not emptied since).
    pub(crate) fn has_endpoints(&self) -> bool {
        self.current.as_ref().is_some_and(|set| !set.is_empty())
    }

    /// When the next lookup is due (`now` itself before the first one).
    pub(crate) fn next_at(&self, now: Instant) -> Instant {
        self.next_at.unwrap_or(now)
    }

    /// Records that a lookup starts at `now`.
    pub(crate) fn on_lookup_started(&mut self, now: Instant) {
        self.last_started = Some(now);
    }

    /// An early refresh was asked for at `now`: brings the next lookup
    /// forward as far as the rate limit allows. Returns the new due time.
    pub(crate) fn on_hint(&mut self, now: Instant) -> Instant {
        let allowed = match self.last_started {
            Some(started) => later(started, self.policy.min_hint_interval).max(now),
            None => now,
        };
        let due = self.next_at(now).min(allowed);
        self.next_at = Some(due);
        due
    }

    /// Takes the result of the lookup that finished at `now`.
    pub(crate) fn on_answer(&mut self, now: Instant, answer: Answer) -> Step {
        let step = match answer {
            Answer::Endpoints { endpoints, .. } if endpoints.is_empty() => self.on_empty(now, None),
            Answer::Endpoints { endpoints, ttl } => self.on_endpoints(now, endpoints, ttl),
            Answer::Empty { ttl } => self.on_empty(now, ttl),
            Answer::Failed(error) => self.on_failure(now, error),
            // The family that answered gave nothing usable: a plain
            // failure (the whole set is kept).
            Answer::Partial {
                endpoints, error, ..
            } if endpoints.is_empty() => self.on_failure(now, error),
            Answer::Partial {
                endpoints,
                ttl,
                kept,
                error,
            } => self.on_partial(now, endpoints, ttl, kept, error),
        };
        self.next_at = Some(step.next_at);
        step
    }

    fn on_endpoints(&mut self, now: Instant, endpoints: Vec<Endpoint>, ttl: Duration) -> Step {
        self.failures = 0;
        self.empty_since = None;
        let total = endpoints.len();
        let set = self.normalize(endpoints);
        let cut_from = (total > self.policy.max_endpoints).then_some(total);
        let next_at = later(now, self.ttl_delay(ttl));
        if self.current.as_ref() == Some(&set) {
            return Step {
                update: None,
                error: None,
                next_at,
                note: Note::Unchanged,
            };
        }
        self.current = Some(set.clone());
        Step {
            update: Some(set),
            error: None,
            next_at,
            note: Note::Changed { cut_from },
        }
    }

    /// `endpoints` of one family answered; family `kept` failed: its last
    /// published endpoints are added, the failure counted and reported, and
    /// the next lookup is at the earlier of the TTL and the backoff.
    fn on_partial(
        &mut self,
        now: Instant,
        mut endpoints: Vec<Endpoint>,
        ttl: Duration,
        kept: Family,
        error: DiscoverError,
    ) -> Step {
        let held = self.current.iter().flatten();
        endpoints.retain(|e| !kept.holds(&e.addr));
        endpoints.extend(held.filter(|e| kept.holds(&e.addr)).cloned());
        let consecutive = self.failures.saturating_add(1);
        let mut step = self.on_endpoints(now, endpoints, ttl);
        self.failures = consecutive;
        step.next_at = step
            .next_at
            .min(later(now, self.backoff_delay(consecutive)));
        step.error = Some(error);
        step.note = Note::Partial {
            kept,
            consecutive,
            changed: step.update.is_some(),
        };
        step
    }

    fn on_empty(&mut self, now: Instant, ttl: Option<Duration>) -> Step {
        self.failures = 0;
        let next_at = later(now, self.ttl_delay(ttl.unwrap_or(Duration::ZERO)));
        if self.has_endpoints() {
            let first = self.empty_since.is_none();
            let since = *self.empty_since.get_or_insert(now);
            let until = later(since, self.policy.empty_grace);
            if now < until {
                return Step {
                    update: None,
                    error: None,
                    // Look again when the grace ends, so the removal is on time.
                    next_at: next_at.min(until),
                    note: Note::EmptyWithinGrace { until, first },
                };
            }
        }
        self.empty_since = None;
        let update = match self.current.replace(Vec::new()) {
            Some(old) if old.is_empty() => None,
            _ => Some(Vec::new()),
        };
        let note = if update.is_some() {
            Note::Emptied
        } else {
            Note::Unchanged
        };
        Step {
            update,
            error: None,
            next_at,
            note,
        }
    }

    fn on_failure(&mut self, now: Instant, error: DiscoverError) -> Step {
        self.failures = self.failures.saturating_add(1);
        Step {
            update: None,
            error: Some(error),
            next_at: later(now, self.backoff_delay(self.failures)),
            note: Note::Failed {
                consecutive: self.failures,
            },
        }
    }

    /// The TTL clamped to the policy's bounds, brought forward by up to
    /// `jitter` of itself.
    fn ttl_delay(&mut self, ttl: Duration) -> Duration {
        let clamped = ttl.clamp(self.policy.min_ttl, self.policy.max_ttl);
        clamped.mul_f64(1.0 - self.policy.jitter * self.rng.unit())
    }

    /// The wait after the `failures`-th failure in a row: the crate's
    /// exponential backoff with equal jitter, uniform in the upper half of
    /// `backoff_initial * 2^(failures - 1)`, capped at `backoff_max`.
    fn backoff_delay(&mut self, failures: u32) -> Duration {
        Backoff::from_parts(self.policy.backoff_initial, 2.0, self.policy.backoff_max)
            .with_jitter(Jitter::Equal)
            .delay(failures.saturating_sub(1), Duration::ZERO, &mut self.rng)
    }

    /// Sorted by address, and cut to the cap by a salted hash of the address
    /// (stable across answers, different between clients).
    fn normalize(&self, mut endpoints: Vec<Endpoint>) -> Vec<Endpoint> {
        endpoints.sort_by_key(|e| e.addr);
        endpoints.dedup_by(|a, b| a.addr == b.addr);
        if endpoints.len() > self.policy.max_endpoints {
            endpoints.sort_by_cached_key(|e| {
                let mut h = DefaultHasher::new();
                (self.subset_salt, e.addr).hash(&mut h);
                h.finish()
            });
            endpoints.truncate(self.policy.max_endpoints);
            endpoints.sort_by_key(|e| e.addr);
        }
        endpoints
    }
}

#[cfg(test)]
#[path = "refresh_tests.rs"]
mod tests;
