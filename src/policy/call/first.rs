//! A call's first attempt without the machine.
//!
//! Most calls end with their first attempt's success. A driver can send
//! that attempt as the call starts ([`Call::first_attempt`]) and, when it
//! answers with a success, end the call ([`Call::first_succeeded`]) without
//! ever building the machine, which costs more than the rest of such a call.
//! Anything else (the attempt is still pending and a timer may be needed,
//! it failed, it could not be sent) makes the machine as it would be after
//! sending that attempt ([`Call::after_first`]), and the machine decides
//! from there. The decisions are the machine's own: the machine's tests
//! check that both ways agree.

use std::time::{Duration, Instant};

use super::pending::cut;
use super::{Action, AttemptKind, Call, Ending, NotSent, Rules, SendAttempt};
use crate::classify::Outcome;
use crate::policy::hedge::HedgeDelay;
use crate::policy::timeout::Deadline;

impl Call {
    /// The first attempt of a call that started at `start`, to send at
    /// `now`, as [`poll`](Self::poll) would ask for it; `None` when the
    /// deadline has already passed (only the machine ends such a call).
    ///
    /// `last` says whether an attempt may follow from the settings alone:
    /// with hedging on it is `false` even when the machine would find no
    /// hedge delay yet (a percentile with too few samples), so the request
    /// is copied a little more often than needed, never less.
    #[inline]
    pub fn first_attempt(rules: &Rules, start: Instant, now: Instant) -> Option<SendAttempt> {
        let deadline = rules.deadline.map(|d| Deadline::new(start, d));
        if deadline.is_some_and(|d| d.is_expired(now)) {
            return None;
        }
        let retries = rules.retry.is_some_and(|r| r.settings.max_attempts() > 1);
        Some(SendAttempt {
            number: 1,
            kind: AttemptKind::First,
            cut: cut(now, rules.timeout, deadline.as_ref()).map(|(at, _)| at),
            last: !retries && rules.hedge.is_none(),
        })
    }

    /// The machine of a call that started at `start` (already counted in
    /// its budgets, see [`deposit`](Self::deposit)) after its
    /// [`first_attempt`](Self::first_attempt) was handled at `now`: `sent`
    /// is the endpoint it went to, or why it was not sent; `replayable`
    /// is false when the request could not be copied for another attempt.
    pub fn after_first(
        rules: &Rules,
        start: Instant,
        now: Instant,
        sent: Result<Option<usize>, NotSent>,
        replayable: bool,
    ) -> Call {
        let mut call = Call::counted(rules, start);
        let action = call.poll(now, rules);
        debug_assert!(matches!(action, Action::Send(s) if s.number == 1));
        if !replayable {
            call.on_unreplayable();
        }
        match sent {
            Ok(endpoint) => call.on_sent(1, endpoint),
            Err(why) => call.on_not_sent(1, why),
        }
        call
    }

    /// Whether the machine may need a timer while the
    /// [`first_attempt`](Self::first_attempt) is pending: an attempt
    /// timeout, a deadline, or a hedge (`replayable`: its request could be
    /// copied). Without any, a driver can wait for that attempt's end
    /// without the machine.
    #[inline]
    pub fn first_may_time_out(rules: &Rules, replayable: bool) -> bool {
        rules.timeout.is_some() || rules.deadline.is_some() || (rules.hedge.is_some() && replayable)
    }

    /// Ends a call whose [`first_attempt`](Self::first_attempt), sent as
    /// the call started, answered with a success after `elapsed`, at `at`:
    /// the machine would answer with that response. Records the latency
    /// sample a percentile hedge delay reads.
    #[inline]
    pub fn first_succeeded(rules: &Rules, elapsed: Duration, at: Instant) -> Ending {
        if let Some(h) = rules.hedge
            && matches!(h.settings.delay(), HedgeDelay::Percentile(_))
        {
            h.latency.record(elapsed, at);
        }
        Ending {
            answered_by: Some(AttemptKind::First),
            last_outcome: Outcome::Success,
            attempts_sent: 1,
        }
    }

    /// How the call ended (or how far it got), for the driver's reports.
    pub fn ending(&self) -> Ending {
        Ending {
            answered_by: self.answered_by,
            last_outcome: self.last_outcome,
            attempts_sent: self.sent,
        }
    }
}
