//! What a call machine and its driver say to each other: the policies a
//! call follows, and the actions and events between them.

use std::time::{Duration, Instant};

use super::outcome::Finish;
use crate::classify::Outcome;
use crate::policy::budget::Budget;
use crate::policy::hedge::HedgeSettings;
use crate::policy::latency::LatencyHistogram;
use crate::policy::retry::RetrySettings;

/// Why an attempt is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptKind {
    /// The call's first attempt.
    First,
    /// The first attempt of a later round, after a retryable failure.
    Retry,
    /// An extra attempt sent while others of its round are still pending.
    Hedge,
}

impl AttemptKind {
    /// `"first"`, `"retry"` or `"hedge"`, as in spans and logs.
    pub fn name(self) -> &'static str {
        match self {
            AttemptKind::First => "first",
            AttemptKind::Retry => "retry",
            AttemptKind::Hedge => "hedge",
        }
    }
}

/// Retrying, as a call follows it: the settings and the budget they draw on.
#[derive(Debug, Clone, Copy)]
pub struct Retrying<'a> {
    /// The retry settings.
    pub settings: &'a RetrySettings,
    /// The retry budget shared by the calls of one channel or layer.
    pub budget: &'a Budget,
}

/// Hedging, as a call follows it.
#[derive(Debug, Clone, Copy)]
pub struct Hedging<'a> {
    /// The hedging settings.
    pub settings: &'a HedgeSettings,
    /// The hedge budget shared by the calls of one channel or layer.
    pub budget: &'a Budget,
    /// The latency window a percentile delay is read from and fed.
    pub latency: &'a LatencyHistogram,
}

/// The policies a call follows. The default follows none: one attempt,
/// no time limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules<'a> {
    /// A limit on each attempt.
    pub timeout: Option<Duration>,
    /// A limit on the whole call (read once, when the call starts).
    pub deadline: Option<Duration>,
    /// Retrying, if on.
    pub retry: Option<Retrying<'a>>,
    /// Hedging, if on.
    pub hedge: Option<Hedging<'a>>,
}

/// An attempt the driver should send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendAttempt {
    /// Its number in the call, from 1, hedges included.
    pub number: u32,
    /// Why it is sent.
    pub kind: AttemptKind,
    /// When it must be cut if it has not ended (the attempt timeout capped
    /// by the deadline); `None` without either.
    pub cut: Option<Instant>,
    /// No attempt can follow this one: send the request itself rather than
    /// a copy.
    pub last: bool,
}

/// Which budget refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A retry was refused (the call ends).
    Retry,
    /// A hedge was refused (no more hedges in this round).
    Hedge,
}

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send an attempt, then report it with [`Call::on_sent`](super::Call::on_sent) or
    /// [`Call::on_not_sent`](super::Call::on_not_sent).
    Send(SendAttempt),
    /// A budget refused an extra attempt (for metrics); poll again.
    Refused(Refused),
    /// Attempt `number` reached its cut at `at`: drop it (it timed out)
    /// and report it with [`Call::on_end`](super::Call::on_end) as [`Ended::TimedOut`].
    Cut {
        /// The attempt.
        number: u32,
        /// Its cut.
        at: Instant,
    },
    /// Nothing until an attempt ends or [`Call::next_timer`](super::Call::next_timer) passes.
    Wait,
    /// The call is over: drop every attempt still pending and answer with
    /// [`Call::result`](super::Call::result).
    Finish(Finish),
}

/// Why a [`SendAttempt`] was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSent {
    /// No endpoint could take it.
    NoEndpoint,
    /// The request could not be copied (hedges only; a round's attempt is
    /// then sent as it is, see [`Call::on_unreplayable`](super::Call::on_unreplayable)).
    NotReplayable,
}

/// How an attempt ended, as the driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The service answered; the classifier's outcome.
    Answered(Outcome),
    /// Its cut passed first.
    TimedOut,
}

/// How a call ended, as its driver reports it (metrics, spans, limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// Which kind of attempt answered the call with a success, if one did.
    pub answered_by: Option<AttemptKind>,
    /// The outcome of the last attempt that ended (a failure for one cut
    /// by a time limit, and when no attempt ended).
    pub last_outcome: Outcome,
    /// Attempts sent, hedges included.
    pub attempts_sent: u32,
}
