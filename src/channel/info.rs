//! What an attempt hook learns about the attempt it sees.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::policy::call::AttemptKind;

/// What an [`on_attempt`](super::Builder::on_attempt) hook learns about the
/// attempt whose request it sees, just before it is sent.
///
/// ```
/// use std::time::{Duration, Instant};
/// use towline::channel::{AttemptInfo, AttemptKind};
///
/// // A hook that propagates the time left, as gRPC's `grpc-timeout` does.
/// let hook = |req: &mut Vec<String>, at: &AttemptInfo| {
///     if let Some(left) = at.remaining() {
///         req.push(format!("timeout={}m", left.as_millis()));
///     }
///     req.push(format!("attempt={} ({})", at.number(), at.kind().name()));
/// };
/// let info = AttemptInfo::new(
///     "127.0.0.1:80".parse().unwrap(),
///     2,
///     AttemptKind::Retry,
///     Instant::now(),
///     None,
/// );
/// let mut req = Vec::new();
/// hook(&mut req, &info);
/// assert_eq!(req, ["attempt=2 (retry)"]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptInfo {
    endpoint: SocketAddr,
    number: u32,
    kind: AttemptKind,
    started: Instant,
    cut: Option<Instant>,
}

impl AttemptInfo {
    /// The attempt `number` (from 1) of a call, of `kind`, to `endpoint`,
    /// started at `started` and cut at `cut` if it has not ended by then.
    pub fn new(
        endpoint: SocketAddr,
        number: u32,
        kind: AttemptKind,
        started: Instant,
        cut: Option<Instant>,
    ) -> Self {
        AttemptInfo {
            endpoint,
            number,
            kind,
            started,
            cut,
        }
    }

    /// The address of the endpoint the attempt goes to.
    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    /// The attempt's number within its call, from 1, hedges included.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Whether it is the call's first attempt, a retry or a hedge.
    pub fn kind(&self) -> AttemptKind {
        self.kind
    }

    /// When the attempt started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// When the attempt will be cut if it has not ended: the smaller of its
    /// attempt timeout and the call's deadline; `None` without either.
    pub fn cut(&self) -> Option<Instant> {
        self.cut
    }

    /// The time left before the cut, now (reads the clock); `None` when
    /// the attempt has no limit.
    pub fn remaining(&self) -> Option<Duration> {
        self.cut
            .map(|cut| cut.saturating_duration_since(crate::clock::now()))
    }
}
