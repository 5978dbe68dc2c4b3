//! The lookup seam: one [`Resolve::lookup`] per refresh, and its hickory
//! implementation.
//!
//! The refresh loop only sees [`Lookup`] results (an [`Answer`] and how many
//! records were skipped), so unit tests drive it with a fake resolver under
//! virtual time, and [`HickoryResolve`] is the only code that talks to DNS.
//!
//! Host mode sends the A and AAAA queries side by side (or only the one the
//! [`AddressFamilies`] setting asks for): if both fail in transport the
//! lookup fails and the set is kept; if one fails and the other gives
//! addresses, the answer is [`Answer::Partial`]: the new addresses of the
//! one family, the last ones of the other kept (see [`super::family`]); a
//! lookup made while no endpoint is known counts a family still silent
//! `family_wait` after the other gave addresses as failed; if both say "no
//! records" the answer is empty. SRV mode sends one SRV query,
//! then address queries for the targets of the chosen priority that the
//! additional section left out; there any transport failure fails the whole
//! lookup (a partial answer would not say which target lost a family).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::future::join_all;
use hickory_resolver::TokioResolver;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

use super::family::{AddressFamilies, Family, gather};
use super::records::{Extracted, RecordKind, SrvTarget, endpoints_from_records, min_ttl};
use super::refresh::Answer;
use crate::discover::DiscoverError;

/// The result of one lookup.
#[derive(Debug, Clone)]
pub(crate) struct Lookup {
    pub answer: Answer,
    /// Records skipped as malformed or unusable.
    pub skipped: usize,
}

/// Looks the configured name up once.
pub(crate) trait Resolve: Send + Sync + 'static {
    /// One complete lookup (including SRV target lookups). `hurry`: no
    /// endpoint is known, so a family that answers well after the other
    /// need not be waited for (see [`HickoryResolve::family_wait`]).
    fn lookup(&self, hurry: bool) -> Pin<Box<dyn Future<Output = Lookup> + Send + '_>>;
}

/// What is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A and AAAA of `name`, every address on `port`.
    Host { name: Name, port: u16 },
    /// SRV records of `name`.
    Srv { name: Name },
}

/// [`Resolve`] on a hickory resolver.
pub(crate) struct HickoryResolve {
    pub resolver: TokioResolver,
    pub target: Target,
    /// At most this many SRV targets are looked up per refresh.
    pub max_target_lookups: usize,
    /// Which address families are asked for and kept.
    pub families: AddressFamilies,
    /// In a hurried host lookup, how long the other family is waited for
    /// once one has given addresses.
    pub family_wait: Duration,
}

/// The address records of one name, from the families asked.
struct Addresses {
    records: Vec<Record>,
    /// The least negative TTL of the families that had no records.
    negative_ttl: Option<u32>,
    /// A family whose query failed while another one answered.
    failed: Option<(Family, NetError)>,
}

/// One query's result, sorted into the three cases the refresh cares about.
enum Query {
    Records(Vec<Record>, Vec<Record>),
    NoRecords(Option<u32>),
    Failed(NetError),
}

impl Resolve for HickoryResolve {
    fn lookup(&self, hurry: bool) -> Pin<Box<dyn Future<Output = Lookup> + Send + '_>> {
        Box::pin(async move {
            match &self.target {
                Target::Host { name, port } => {
                    let kind = RecordKind::Address { port: *port };
                    let wait = hurry.then_some(self.family_wait);
                    match self.addresses(name, wait).await {
                        Ok(Addresses {
                            records,
                            negative_ttl,
                            failed: None,
                        }) => conclude(endpoints_from_records(&records, &[], kind), negative_ttl),
                        Ok(Addresses {
                            records,
                            failed: Some((family, e)),
                            ..
                        }) => partial(name, endpoints_from_records(&records, &[], kind), family, e),
                        Err(e) => failed(name, e),
                    }
                }
                Target::Srv { name } => self.srv(name).await,
            }
        })
    }
}

impl HickoryResolve {
    async fn query(&self, name: &Name, rtype: RecordType) -> Query {
        match self.resolver.lookup(name.clone(), rtype).await {
            Ok(lookup) => Query::Records(lookup.answers().to_vec(), lookup.additionals().to_vec()),
            Err(NetError::Dns(DnsError::NoRecordsFound(no))) => Query::NoRecords(no.negative_ttl),
            Err(e) => Query::Failed(e),
        }
    }

    /// The address answers of `name` for the families asked; an error when
    /// every family asked failed. With `wait`, a family unanswered `wait`
    /// after another gave addresses counts as failed (see [`gather`]).
    async fn addresses(&self, name: &Name, wait: Option<Duration>) -> Result<Addresses, NetError> {
        let queries = self
            .families
            .asked()
            .iter()
            .map(|f| (*f, self.query(name, f.record_type())))
            .collect();
        let gives_addresses = |q: &Query| match q {
            Query::Records(answers, _) => answers
                .iter()
                .any(|r| matches!(r.data, RData::A(_) | RData::AAAA(_))),
            _ => false,
        };
        let mut found = Addresses {
            records: Vec::new(),
            negative_ttl: None,
            failed: None,
        };
        let mut answered = false;
        for (family, q) in gather(queries, wait, gives_addresses).await {
            let q = q.unwrap_or(Query::Failed(NetError::Message(
                "no answer while the other family's addresses waited (no endpoint known yet)",
            )));
            match q {
                Query::Records(answers, _) => {
                    answered = true;
                    let admitted = answers.into_iter().filter(|r| self.families.admits(r));
                    found.records.extend(admitted);
                }
                Query::NoRecords(ttl) => {
                    answered = true;
                    found.negative_ttl = min_ttl(found.negative_ttl, ttl);
                }
                Query::Failed(e) => found.failed = Some((family, e)),
            }
        }
        match found.failed {
            Some((_, e)) if !answered => Err(e),
            _ => Ok(found),
        }
    }

    async fn srv(&self, name: &Name) -> Lookup {
        let mut found = match self.query(name, RecordType::SRV).await {
            Query::Records(answers, mut additionals) => {
                additionals.retain(|r| self.families.admits(r));
                endpoints_from_records(&answers, &additionals, RecordKind::Srv)
            }
            Query::NoRecords(ttl) => return conclude(Extracted::default(), ttl),
            Query::Failed(e) => return failed(name, e),
        };
        let mut targets = std::mem::take(&mut found.unresolved);
        if targets.len() > self.max_target_lookups {
            tracing::warn!(
                name = %name,
                targets = targets.len(),
                limit = self.max_target_lookups,
                "SRV answer names more targets without addresses than the endpoint cap; looking up only the first ones"
            );
            targets.truncate(self.max_target_lookups);
        }
        let lookups = join_all(targets.iter().map(|t| self.addresses(&t.target, None))).await;
        for (target, result) in targets.iter().zip(lookups) {
            match result {
                Ok(Addresses {
                    records,
                    failed: None,
                    ..
                }) => found.absorb(resolve_target(target, &records)),
                Ok(Addresses {
                    failed: Some((_, e)),
                    ..
                })
                | Err(e) => return failed(&target.target, e),
            }
        }
        conclude(found, None)
    }
}

fn resolve_target(target: &SrvTarget, records: &[Record]) -> Extracted {
    let part = target.endpoints_from(records);
    if part.endpoints.is_empty() {
        tracing::debug!(target = %target.target, "SRV target has no usable address");
    }
    part
}

/// Sorts an extraction into endpoints, an empty answer, or (records present
/// but none usable) a failure that keeps the last set.
fn conclude(found: Extracted, negative_ttl: Option<u32>) -> Lookup {
    let skipped = found.skipped;
    let answer = if found.is_empty_answer() {
        Answer::Empty {
            ttl: negative_ttl.map(secs),
        }
    } else if found.endpoints.is_empty() {
        Answer::Failed(DiscoverError::new(format!(
            "DNS answer had {skipped} records and none usable"
        )))
    } else {
        Answer::Endpoints {
            endpoints: found.endpoints,
            ttl: found.ttl.map(secs).unwrap_or_default(),
        }
    };
    Lookup { answer, skipped }
}

/// A host lookup where `family` failed with `e` and the other family
/// answered with `found`; the refresher keeps `family`'s last endpoints
/// (or, when `found` has none, the whole set).
fn partial(name: &Name, found: Extracted, family: Family, e: NetError) -> Lookup {
    let error = DiscoverError::with_source(
        format!("DNS lookup of {name} failed for {family} (the other family answered)"),
        e,
    );
    Lookup {
        answer: Answer::Partial {
            endpoints: found.endpoints,
            ttl: found.ttl.map(secs).unwrap_or_default(),
            kept: family,
            error,
        },
        skipped: found.skipped,
    }
}

fn secs(ttl: u32) -> Duration {
    Duration::from_secs(u64::from(ttl))
}

fn failed(name: &Name, e: NetError) -> Lookup {
    Lookup {
        answer: Answer::Failed(DiscoverError::with_source(
            format!("DNS lookup of {name} failed"),
            e,
        )),
        skipped: 0,
    }
}
