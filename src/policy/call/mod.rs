//! One call, one machine: every decision of a call under timeout, deadline,
//! retry and hedging policies, with no I/O.
//!
//! A [`Call`] is told what happens (an attempt was sent, an attempt ended,
//! time passed) and answers what to do next, in the style of quinn-proto's
//! `Connection`: [`Call::poll`] returns the next [`Action`] for the time it
//! is given, [`Call::next_timer`] says when to call it again if nothing else
//! happens, and [`Call::on_end`] takes the end of an attempt. The channel,
//! [`RetryLayer`](super::RetryLayer) and [`HedgeLayer`](super::HedgeLayer)
//! all drive this one machine; only what an attempt *is* differs (a pick on
//! an endpoint table, or a clone of the inner service).
//!
//! What the machine decides:
//!
//! - **Rounds.** A call is a sequence of rounds; a round sends one attempt
//!   ([`AttemptKind::First`], then [`AttemptKind::Retry`]) and, with hedging,
//!   extra attempts ([`AttemptKind::Hedge`]) `k × delay` after the round
//!   started. A round ends with the first success or non-retryable failure
//!   (the driver drops the other attempts, which cancels them), or with the
//!   last retryable failure once none is pending. Then
//!   [`RetryState::next`](super::retry::RetryState::next) decides whether
//!   another round follows, after which pause.
//! - **Time limits.** Each attempt must end by its cut: the attempt timeout,
//!   capped by the call's deadline ([`attempt_limit`](super::timeout::attempt_limit)).
//!   An attempt cut by the timeout is a retryable failure; one cut by the
//!   deadline ends the call with [`Error::DeadlineExceeded`], carrying the
//!   last failure before it.
//! - **Where.** Every attempt should go to an endpoint the call has not
//!   tried; the machine keeps the set ([`Call::tried`]) for the driver's pick.
//! - **Latency samples** for a percentile hedge delay (recorded only while
//!   the delay is a percentile): an answered success gives its latency; an
//!   attempt cut by its timeout, and each attempt dropped because another
//!   one answered the call, give the time they had run (a lower bound).
//!   Failures give none: a fast failure says nothing about how long an
//!   answer takes.
//! - **The result** ([`Call::result`]): the last attempt's result, or the
//!   error that says why the call stopped.
//! - **The first attempt, without the machine.** Most calls end with their
//!   first attempt's success, and making the machine costs more than the
//!   rest of such a call. [`Call::first_attempt`] is the first decision
//!   [`Call::poll`] would make, [`Call::first_succeeded`] the end it would
//!   reach after that attempt's success, and [`Call::after_first`] the
//!   machine as it would be after sending it, for every other case; a
//!   driver counts the call in the budgets with [`Call::deposit`] either
//!   way.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use towline::classify::Outcome;
//! use towline::policy::budget::Budget;
//! use towline::policy::call::{Action, AttemptKind, Call, Ended, Retrying, Rules};
//! use towline::policy::retry::RetrySettings;
//! use towline::rng::Rng;
//!
//! let retry = RetrySettings::default();
//! let t0 = Instant::now();
//! let budget = Budget::new(retry.budget(), t0);
//! let rules = Rules {
//!     retry: Some(Retrying { settings: &retry, budget: &budget }),
//!     ..Rules::default()
//! };
//! let mut rng = Rng::seeded(1);
//! let mut call = Call::new(&rules, t0);
//! let Action::Send(first) = call.poll(t0, &rules) else { unreachable!() };
//! assert_eq!(first.kind, AttemptKind::First);
//! call.on_sent(first.number, Some(0));
//! // It fails retryably: a retry follows after a backoff pause.
//! call.on_end(first.number, Ended::Answered(Outcome::Failure { retryable: true }), t0, &rules, &mut rng);
//! assert!(matches!(call.poll(t0, &rules), Action::Wait));
//! let due = call.next_timer().unwrap();
//! let Action::Send(retry) = call.poll(due, &rules) else { unreachable!() };
//! assert_eq!((retry.kind, retry.number), (AttemptKind::Retry, 2));
//! assert!(call.tried().contains(0));
//! ```
//!
//! [`Error::DeadlineExceeded`]: crate::Error::DeadlineExceeded

mod end;
mod first;
mod outcome;
mod pending;
#[cfg(test)]
mod tests;
mod vocabulary;

use std::time::{Duration, Instant};

pub use outcome::{Finish, Tried};
use pending::{Pending, cut};
pub use vocabulary::{
    Action, AttemptKind, Ended, Ending, Hedging, NotSent, Refused, Retrying, Rules, SendAttempt,
};

use super::budget::Budget;
use super::hedge::{HedgeState, HedgeStep};
use super::later;
use super::retry::RetryState;
use super::timeout::Deadline;
use crate::classify::Outcome;

const FAILED: Outcome = Outcome::Failure { retryable: true };

/// The last failure of a call, when it had one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    None,
    /// An answer (the driver keeps the result).
    Answered,
    /// An attempt cut by this timeout (no result).
    Timeout(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The next round starts at `at`.
    Start { at: Instant, kind: AttemptKind },
    /// A round is running.
    Round,
    /// The call is over.
    Done(Finish),
}

/// The state of one call (see the [module docs](self)).
#[derive(Debug)]
pub struct Call {
    phase: Phase,
    deadline: Option<Deadline>,
    retry: RetryState,
    hedge: HedgeState,
    round_start: Instant,
    /// Attempts in flight: the round's first inline, hedges after it.
    first: Option<Pending>,
    hedges: Vec<Pending>,
    sent: u32,
    tried: Tried,
    replayable: bool,
    /// How long after the round's start its next hedge is due, if one may
    /// be sent (the instant is computed only when it is needed).
    hedge_next: Option<Duration>,
    last: Last,
    /// A refusal to report before the next decision.
    refused: Option<Refused>,
    answered_by: Option<AttemptKind>,
    last_outcome: Outcome,
}

impl Call {
    /// A call starting at `start`: its deadline runs from here, and it
    /// counts as one call in the budgets it may draw on.
    #[inline(always)]
    pub fn new(rules: &Rules, start: Instant) -> Self {
        Call::deposit(rules, start);
        Call::counted(rules, start)
    }

    /// Counts a call starting at `start` in the budgets it may draw on (what
    /// [`new`](Self::new) does besides making the machine): a driver that
    /// may never need the machine ([`first_attempt`](Self::first_attempt))
    /// calls this once, as the call starts.
    #[inline(always)]
    pub fn deposit(rules: &Rules, start: Instant) {
        // Budgets made together share an epoch: one clock subtraction.
        let mut since: Option<(Instant, u64)> = None;
        for budget in Call::counted_in(rules).into_iter().flatten() {
            let epoch = budget.epoch();
            let ns = match since {
                Some((e, ns)) if e == epoch => ns,
                _ => {
                    let ns = crate::clock::nanos_since(start, epoch);
                    since = Some((epoch, ns));
                    ns
                }
            };
            budget.deposit_at(ns);
        }
    }

    /// The budgets a call under `rules` is counted in: its retry budget
    /// (when it may retry) and its hedge budget (when it may hedge and that
    /// budget does not share the retry budget's deposits).
    #[inline(always)]
    pub(crate) fn counted_in<'a>(rules: &Rules<'a>) -> [Option<&'a Budget>; 2] {
        let retry = rules.retry.filter(|r| r.settings.max_attempts() > 1);
        let hedge = rules
            .hedge
            .filter(|h| !retry.is_some_and(|r| h.budget.shares_deposits(r.budget)));
        [retry.map(|r| r.budget), hedge.map(|h| h.budget)]
    }

    /// The machine of a call starting at `start`, already counted in the
    /// budgets ([`deposit`](Self::deposit)).
    pub fn counted(rules: &Rules, start: Instant) -> Self {
        Call {
            phase: Phase::Start {
                at: start,
                kind: AttemptKind::First,
            },
            deadline: rules.deadline.map(|d| Deadline::new(start, d)),
            retry: RetryState::new(),
            hedge: HedgeState::new(None),
            round_start: start,
            first: None,
            hedges: Vec::new(),
            sent: 0,
            tried: Tried::default(),
            replayable: true,
            hedge_next: None,
            last: Last::None,
            refused: None,
            answered_by: None,
            last_outcome: FAILED,
        }
    }

    /// The endpoints attempts were sent to (as reported by
    /// [`on_sent`](Self::on_sent)): pick others while there are.
    pub fn tried(&self) -> &Tried {
        &self.tried
    }

    /// The deadline, if the call has one.
    pub fn deadline(&self) -> Option<&Deadline> {
        self.deadline.as_ref()
    }

    /// Attempts sent so far, hedges included.
    pub fn attempts_sent(&self) -> u32 {
        self.sent
    }

    /// Which kind of attempt answered the call with a success.
    pub fn answered_by(&self) -> Option<AttemptKind> {
        self.answered_by
    }

    /// The outcome of the last attempt that ended (a failure for one cut
    /// by a time limit, and before any attempt ended).
    pub fn last_outcome(&self) -> Outcome {
        self.last_outcome
    }

    /// When [`poll`](Self::poll) has something to do even if no attempt
    /// ends: the next round after a pause, the next hedge, or the cut of an
    /// attempt in flight (its timeout or the deadline).
    pub fn next_timer(&self) -> Option<Instant> {
        let phase = match self.phase {
            Phase::Start { at, .. } => Some(at),
            Phase::Round => self.hedge_due(),
            Phase::Done(_) => return None,
        };
        self.pending()
            .filter_map(|p| p.cut.map(|(at, _)| at))
            .chain(phase)
            .min()
    }

    fn pending(&self) -> impl Iterator<Item = &Pending> {
        self.first.iter().chain(&self.hedges)
    }

    fn hedge_due(&self) -> Option<Instant> {
        self.hedge_after()
            .map(|after| later(self.round_start, after))
    }

    fn hedge_after(&self) -> Option<Duration> {
        self.hedge_next.filter(|_| self.replayable)
    }

    /// The next thing to do at `now`.
    pub fn poll(&mut self, now: Instant, rules: &Rules) -> Action {
        if let Some(refused) = self.refused.take() {
            return Action::Refused(refused);
        }
        if !matches!(self.phase, Phase::Done(_))
            && let Some(p) = self
                .pending()
                .find(|p| p.cut.is_some_and(|(at, _)| at <= now))
        {
            let at = p.cut.map_or(now, |(at, _)| at);
            return Action::Cut {
                number: p.number,
                at,
            };
        }
        match self.phase {
            Phase::Done(finish) => Action::Finish(finish),
            Phase::Start { at, kind } => {
                if now < at {
                    return Action::Wait;
                }
                self.start_round(now, kind, rules)
            }
            Phase::Round => self.maybe_hedge(now, rules),
        }
    }

    fn start_round(&mut self, now: Instant, kind: AttemptKind, rules: &Rules) -> Action {
        if self.deadline.is_some_and(|d| d.is_expired(now)) {
            return self.finish(Finish::Deadline);
        }
        self.phase = Phase::Round;
        self.round_start = now;
        let delay = match &rules.hedge {
            Some(h) if self.replayable => h.settings.delay_now(h.latency, now),
            _ => None,
        };
        self.hedge = HedgeState::new(delay);
        self.hedge_next = rules.hedge.and_then(|h| self.hedge.next_after(h.settings));
        let rounds_left = rules
            .retry
            .is_some_and(|r| self.retry.attempts() + 1 < r.settings.max_attempts());
        let last = !rounds_left && self.hedge_next.is_none();
        Action::Send(self.send(kind, now, last, rules))
    }

    fn maybe_hedge(&mut self, now: Instant, rules: &Rules) -> Action {
        let (Some(h), Some(after)) = (&rules.hedge, self.hedge_after()) else {
            return Action::Wait;
        };
        // Not due at the round's start (no addition needed then).
        if (now <= self.round_start && !after.is_zero()) || now < later(self.round_start, after) {
            return Action::Wait;
        }
        let step = self.hedge.on_due(h.settings, now, h.budget);
        self.hedge_next = self.hedge.next_after(h.settings);
        match step {
            HedgeStep::Send => {
                let rounds_left = rules
                    .retry
                    .is_some_and(|r| self.retry.attempts() + 1 < r.settings.max_attempts());
                let last = !rounds_left && self.hedge_after().is_none();
                Action::Send(self.send(AttemptKind::Hedge, now, last, rules))
            }
            HedgeStep::BudgetExhausted => Action::Refused(Refused::Hedge),
            HedgeStep::Done => Action::Wait,
        }
    }

    fn send(&mut self, kind: AttemptKind, now: Instant, last: bool, rules: &Rules) -> SendAttempt {
        self.sent += 1;
        let cut = cut(now, rules.timeout, self.deadline.as_ref());
        let pending = Pending {
            number: self.sent,
            kind,
            started: now,
            cut,
        };
        if kind == AttemptKind::Hedge {
            self.hedges.push(pending);
        } else {
            self.first = Some(pending);
        }
        SendAttempt {
            number: self.sent,
            kind,
            cut: cut.map(|(at, _)| at),
            last,
        }
    }

    /// Reports that attempt `number` went to endpoint `endpoint` (an index
    /// of the driver's choosing; `None` when there is no choice of endpoint).
    pub fn on_sent(&mut self, number: u32, endpoint: Option<usize>) {
        let _ = number;
        if let Some(e) = endpoint {
            self.tried.insert(e);
        }
    }

    /// Reports that attempt `number` could not be sent. A round with no
    /// attempt ends the call ([`Finish::NoEndpoint`]); a hedge is simply
    /// not sent.
    pub fn on_not_sent(&mut self, number: u32, why: NotSent) {
        let _ = why;
        if self.first.is_some_and(|p| p.number == number) {
            self.first = None;
            if self.hedges.is_empty() {
                self.phase = Phase::Done(Finish::NoEndpoint);
            }
        } else {
            self.hedges.retain(|p| p.number != number);
        }
    }

    /// Reports that the request could not be copied, so the attempt just
    /// sent carried the request itself: no hedge and no retry can follow.
    pub fn on_unreplayable(&mut self) {
        self.replayable = false;
    }

    fn take(&mut self, number: u32) -> Option<Pending> {
        if self.first.is_some_and(|p| p.number == number) {
            return self.first.take();
        }
        let i = self.hedges.iter().position(|p| p.number == number)?;
        Some(self.hedges.swap_remove(i))
    }

    fn finish(&mut self, finish: Finish) -> Action {
        self.phase = Phase::Done(finish);
        Action::Finish(finish)
    }
}
