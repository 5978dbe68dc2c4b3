//! The lookup seam: one [`Resolve::lookup`] per refresh, and its hickory
//! implementation.
//!
//! The refresh loop only sees [`Lookup`] results (an [`Answer`] and how many
//! records were skipped), so unit tests drive it with a fake resolver under
//! virtual time, and [`HickoryResolve`] is the only code that talks to DNS.
//!
//! Host mode sends the A and AAAA queries side by side: if either fails in
//! transport the whole lookup fails (the set is kept, rather than dropping
//! one address family on a lost packet); if both say "no records" the answer
//! is empty. SRV mode sends one SRV query, then A and AAAA queries for the
//! targets of the chosen priority that the additional section left out.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::future::{join, join_all};
use hickory_resolver::TokioResolver;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{Name, Record, RecordType};

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
    /// One complete lookup (including SRV target lookups).
    fn lookup(&self) -> Pin<Box<dyn Future<Output = Lookup> + Send + '_>>;
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
}

/// One query's result, sorted into the three cases the refresh cares about.
enum Query {
    Records(Vec<Record>, Vec<Record>),
    NoRecords(Option<u32>),
    Failed(NetError),
}

impl Resolve for HickoryResolve {
    fn lookup(&self) -> Pin<Box<dyn Future<Output = Lookup> + Send + '_>> {
        Box::pin(async move {
            match &self.target {
                Target::Host { name, port } => {
                    let kind = RecordKind::Address { port: *port };
                    match self.addresses(name).await {
                        Ok((records, negative_ttl)) => {
                            conclude(endpoints_from_records(&records, &[], kind), negative_ttl)
                        }
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

    /// A and AAAA answers of `name`, or the negative TTL when both are empty.
    async fn addresses(&self, name: &Name) -> Result<(Vec<Record>, Option<u32>), NetError> {
        let (v4, v6) = join(
            self.query(name, RecordType::A),
            self.query(name, RecordType::AAAA),
        )
        .await;
        let mut records = Vec::new();
        let mut negative_ttl = None;
        for q in [v4, v6] {
            match q {
                Query::Records(answers, _) => records.extend(answers),
                Query::NoRecords(ttl) => negative_ttl = min_ttl(negative_ttl, ttl),
                Query::Failed(e) => return Err(e),
            }
        }
        Ok((records, negative_ttl))
    }

    async fn srv(&self, name: &Name) -> Lookup {
        let mut found = match self.query(name, RecordType::SRV).await {
            Query::Records(answers, additionals) => {
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
        let lookups = join_all(targets.iter().map(|t| self.addresses(&t.target))).await;
        for (target, result) in targets.iter().zip(lookups) {
            match result {
                Ok((records, _)) => found.absorb(resolve_target(target, &records)),
                Err(e) => return failed(&target.target, e),
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
    let secs = |ttl: u32| Duration::from_secs(u64::from(ttl));
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

fn failed(name: &Name, e: NetError) -> Lookup {
    Lookup {
        answer: Answer::Failed(DiscoverError::with_source(
            format!("DNS lookup of {name} failed"),
            e,
        )),
        skipped: 0,
    }
}
