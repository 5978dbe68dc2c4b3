//! How the machine takes the end of an attempt: the latency samples it
//! gives, whether it ends the call, its round, or neither, and what follows
//! a round's last retryable failure.

use std::time::Instant;

use super::{Call, FAILED, Finish, Last, Phase};
use crate::classify::Outcome;
use crate::policy::call::{AttemptKind, Ended, Refused, Rules};
use crate::policy::hedge::HedgeDelay;
use crate::policy::later;
use crate::policy::retry::{RetryDecision, Stop};
use crate::rng::Rng;

impl Call {
    /// Reports that attempt `number` ended at `now`. The driver keeps the
    /// result of an answered attempt as the call's last one (replacing the
    /// one it kept before); a timed-out attempt leaves none.
    pub fn on_end(
        &mut self,
        number: u32,
        ended: Ended,
        now: Instant,
        rules: &Rules,
        rng: &mut Rng,
    ) {
        let Some(attempt) = self.take(number) else {
            return;
        };
        if matches!(self.phase, Phase::Done(_)) {
            return;
        }
        let latency = rules
            .hedge
            .filter(|h| matches!(h.settings.delay(), HedgeDelay::Percentile(_)))
            .map(|h| h.latency);
        let ran = || now.saturating_duration_since(attempt.started);
        self.last_outcome = match ended {
            Ended::Answered(o) => o,
            Ended::TimedOut => FAILED,
        };
        let outcome = match ended {
            Ended::Answered(outcome) => {
                if outcome.is_success()
                    && let Some(l) = latency
                {
                    l.record(ran(), now);
                }
                self.last = Last::Answered;
                outcome
            }
            Ended::TimedOut => match attempt.cut {
                Some((_, None)) => {
                    self.finish(Finish::Deadline);
                    return;
                }
                cut => {
                    if let Some(l) = latency {
                        l.record(ran(), now);
                    }
                    self.last = Last::Timeout(cut.and_then(|(_, t)| t).unwrap_or_else(ran));
                    Outcome::Failure { retryable: true }
                }
            },
        };
        if outcome.is_success() || !outcome.is_retryable() {
            if outcome.is_success()
                && let Some(l) = latency
            {
                // The attempts that lose to this answer ran at least this long.
                for p in self.first.iter().chain(&self.hedges) {
                    l.record(now.saturating_duration_since(p.started), now);
                }
            }
            if outcome.is_success() {
                self.answered_by = Some(attempt.kind);
            }
            let stop = if outcome.is_success() {
                Stop::Succeeded
            } else {
                Stop::NotRetryable
            };
            self.finish(Finish::Answer(stop));
            return;
        }
        if self.first.is_some() || !self.hedges.is_empty() {
            // Others of this round may still answer.
            return;
        }
        self.end_round(outcome, now, rules, rng);
    }

    /// After a round's last retryable failure: another round, or the end.
    fn end_round(&mut self, outcome: Outcome, now: Instant, rules: &Rules, rng: &mut Rng) {
        let Some(r) = &rules.retry else {
            self.finish(Finish::Answer(Stop::AttemptsExhausted));
            return;
        };
        let decision = self.retry.next(
            r.settings,
            outcome,
            self.replayable,
            now,
            self.deadline.as_ref(),
            r.budget,
            rng,
        );
        match decision {
            RetryDecision::Retry { after } => {
                self.phase = Phase::Start {
                    at: later(now, after),
                    kind: AttemptKind::Retry,
                };
            }
            RetryDecision::Stop(stop) => {
                if stop == Stop::BudgetExhausted {
                    self.refused = Some(Refused::Retry);
                }
                self.finish(Finish::Answer(stop));
            }
        }
    }
}
