//! One call under the channel's policies: deadline ▸ retry rounds ▸ hedged
//! attempts ▸ per-attempt timeout and breaker.
//!
//! A round sends one attempt, plus hedges when hedging is on; the round
//! ends with the first success or non-retryable failure (the other attempts
//! are dropped, which cancels them), or with the last retryable failure once
//! none is pending. The retry state machine then decides whether another
//! round follows. Every attempt goes to an endpoint the call has not tried
//! while one is left. Nothing here allocates unless a hedge is sent.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Sleep;
use tower::Service;

use super::call::{Attempt, attempt};
use super::policy::{ChannelPolicy, Policies, admits};
use super::table::Snapshot;
use super::{Handle, Shared, now};
use crate::classify::Outcome;
use crate::error::{BoxError, Error};
use crate::policy::breaker::{Admission, Permit};
use crate::policy::hedge::{HedgeDelay, HedgeState, HedgeStep};
use crate::policy::retry::{RetryDecision, RetryState, Stop};
use crate::policy::timeout::{Deadline, Expiring, Limit, attempt_limit};
use crate::policy::{into_error, later};
use crate::rng::with_thread_rng;

/// The endpoints a call has tried, without allocating for the first few.
#[derive(Default)]
pub(crate) struct Tried {
    first: [usize; 4],
    len: usize,
    more: Vec<usize>,
}

impl Tried {
    pub(crate) fn insert(&mut self, i: usize) {
        if self.len < self.first.len() {
            self.first[self.len] = i;
            self.len += 1;
        } else {
            self.more.push(i);
        }
    }

    pub(crate) fn contains(&self, i: usize) -> bool {
        self.first[..self.len].contains(&i) || self.more.contains(&i)
    }
}

/// Picks an endpoint for an attempt at `now`, preferring one not in
/// `tried`, and takes its breaker's admission. Outside panic mode an
/// ejected endpoint is picked only when its breaker admits a probe.
fn choose<S>(
    snapshot: &Snapshot<S>,
    tried: &Tried,
    policies: &Policies,
    now: Instant,
) -> Option<(usize, Option<Admission>)> {
    let panic = policies.panicking();
    if tried.len == 0 && !panic {
        // A first attempt: the usual case, with the least work per candidate.
        let eligible = |i: usize| admits(&snapshot.slots[i], now);
        if let Some(i) =
            with_thread_rng(|rng| snapshot.balancer.pick(snapshot, &eligible, now, rng))
        {
            let slot = &snapshot.slots[i];
            match slot.breaker.as_ref().map(|b| b.try_acquire(now)) {
                None => return Some((i, None)),
                Some(Some(admission)) => return Some((i, Some(admission))),
                // Its breaker refused (half-open without a free probe):
                // fall through to the general search.
                Some(None) => {}
            }
        }
    }
    let mut refused = Tried::default();
    for allow_tried in [false, true] {
        loop {
            let eligible = |i: usize| {
                (allow_tried || !tried.contains(i))
                    && !refused.contains(i)
                    && (panic || admits(&snapshot.slots[i], now))
            };
            let Some(i) =
                with_thread_rng(|rng| snapshot.balancer.pick(snapshot, &eligible, now, rng))
            else {
                break;
            };
            let slot = &snapshot.slots[i];
            let Some(breaker) = &slot.breaker else {
                return Some((i, None));
            };
            match breaker.try_acquire(now) {
                Some(admission) => return Some((i, Some(admission))),
                // Panic mode, or an endpoint left in rotation by the
                // ejection cap: send without the breaker's permission.
                None if panic || !slot.ejected.load(std::sync::atomic::Ordering::Relaxed) => {
                    return Some((i, None));
                }
                None => refused.insert(i),
            }
        }
    }
    None
}

/// One attempt under its time limit and its endpoint's breaker.
async fn guarded<Req, S>(
    shared: &Shared<Req, S>,
    snapshot: &Snapshot<S>,
    index: usize,
    admission: Option<Admission>,
    req: Req,
    limit: Option<(Instant, Limit)>,
    record_latency: bool,
) -> Result<Attempt<S::Response>, Limit>
where
    S: Service<Req> + Clone,
    S::Response: 'static,
    S::Error: Into<BoxError> + 'static,
{
    let slot = &snapshot.slots[index];
    let permit = admission
        .zip(slot.breaker.as_ref())
        .map(|(a, b)| Permit::new(b, a));
    let fut = attempt(shared, slot, req);
    let out = match limit {
        None => Ok(fut.await),
        Some((at, limit)) => Expiring::new(fut, at).await.map_err(|()| limit),
    };
    let (outcome, rtt, end) = match &out {
        Ok(a) => (a.outcome, a.rtt, a.end),
        Err(limit) => {
            let end = now();
            let took = match limit {
                Limit::Attempt(t) => *t,
                Limit::Deadline(d) => end.saturating_duration_since(d.at() - d.length()),
            };
            (Outcome::Failure { retryable: true }, took, end)
        }
    };
    if record_latency && outcome.is_success() {
        shared.policies.latency.record(rtt, end);
    }
    if let Some(permit) = permit
        && permit.finish(outcome, rtt, end).is_some()
    {
        shared.policies.refresh_ejections(&shared.table);
    }
    out
}

/// When an attempt starting at `start` must end, and which limit that is.
fn limit_at(
    settings: &ChannelPolicy,
    deadline: Option<&Deadline>,
    start: Instant,
) -> Option<(Instant, Limit)> {
    attempt_limit(settings.timeout(), deadline, start).map(|(d, l)| (later(start, d), l))
}

/// No hedges yet: a set for futures of the same type as `first`.
fn none_like<F>(_first: &F) -> Option<FuturesUnordered<F>> {
    None
}

/// How a round ended.
enum RoundEnd<Resp> {
    /// An attempt's result: success, non-retryable, or the last retryable
    /// failure.
    Done(Attempt<Resp>),
    /// The call's deadline passed.
    Deadline,
    /// No endpoint could be picked.
    NoEndpoint,
}

fn timed_out<Resp>(limit: Limit) -> RoundEnd<Resp> {
    match limit {
        Limit::Deadline(_) => RoundEnd::Deadline,
        Limit::Attempt(t) => RoundEnd::Done(Attempt {
            result: Err(Box::new(limit.error())),
            outcome: Outcome::Failure { retryable: true },
            rtt: t,
            end: now(),
        }),
    }
}

/// What a finished attempt does to its round: `Some` ends it.
fn settle<Resp>(
    out: Result<Attempt<Resp>, Limit>,
    last: &mut Option<Attempt<Resp>>,
) -> Option<RoundEnd<Resp>> {
    match out.map_or_else(timed_out, RoundEnd::Done) {
        RoundEnd::Done(a) if a.outcome.is_retryable() => {
            *last = Some(a);
            None
        }
        end => Some(end),
    }
}

/// Everything a round needs from its call.
struct Round<'a, Req, S: Service<Req>> {
    shared: &'a Shared<Req, S>,
    snapshot: &'a Snapshot<S>,
    settings: &'a ChannelPolicy,
    deadline: Option<&'a Deadline>,
    /// The original request, kept for hedges and retries (owned, so that
    /// a round needs `Req: Send` only, not `Sync`).
    template: Option<Req>,
}

impl<Req: 'static, S> Round<'_, Req, S>
where
    S: Service<Req> + Clone,
    S::Response: 'static,
    S::Error: Into<BoxError> + 'static,
{
    async fn run(&mut self, tried: &mut Tried, req: Req, start: Instant) -> RoundEnd<S::Response> {
        let policies = &*self.shared.policies;
        let Some((index, admission)) = choose(self.snapshot, tried, policies, start) else {
            return RoundEnd::NoEndpoint;
        };
        tried.insert(index);
        policies.retry_metrics.attempts.increment(1);
        let hedge = self.settings.hedge();
        let record = hedge.is_some_and(|h| matches!(h.delay(), HedgeDelay::Percentile(_)));
        let limit = limit_at(self.settings, self.deadline, start);
        let delay = hedge.and_then(|h| h.delay_now(&policies.latency, start));
        let mut state = HedgeState::new(delay);
        let first_due = match hedge {
            Some(h) if self.template.is_some() => state.next_at(h, start),
            _ => None,
        };
        let first = guarded(
            self.shared,
            self.snapshot,
            index,
            admission,
            req,
            limit,
            record,
        );
        let (Some(hedge), Some(first_due)) = (hedge, first_due) else {
            return first.await.map_or_else(timed_out, RoundEnd::Done);
        };
        // The hedge timer is made only if the first attempt is not answered
        // at once.
        let mut timer = pin!(None::<Sleep>);
        let mut due = Some(first_due);
        let mut extras = none_like(&first);
        let mut primary = pin!(Some(first));
        let mut last = None;
        // Held as `&mut` so that the future needs `Req: Send`, not `Sync`.
        let template = &mut self.template;
        poll_fn(|cx| {
            loop {
                if let Some(p) = primary.as_mut().as_pin_mut()
                    && let Poll::Ready(out) = p.poll(cx)
                {
                    primary.set(None);
                    if let Some(end) = settle(out, &mut last) {
                        return Poll::Ready(end);
                    }
                }
                if let Some(set) = extras.as_mut() {
                    while let Poll::Ready(Some(out)) = StreamExt::poll_next_unpin(set, cx) {
                        let won = matches!(&out, Ok(a) if a.outcome.is_success());
                        if let Some(end) = settle(out, &mut last) {
                            if won {
                                policies.hedge_metrics.won.increment(1);
                            }
                            return Poll::Ready(end);
                        }
                    }
                }
                if let Some(at) = due
                    && timer.is_none()
                {
                    timer.set(Some(tokio::time::sleep_until(at.into())));
                }
                if let Some(t) = timer.as_mut().as_pin_mut()
                    && t.poll(cx).is_ready()
                {
                    let t = now();
                    match state.on_due(hedge, t, &policies.hedge_budget) {
                        HedgeStep::Send => {
                            let copy = match (&self.shared.replay, template.as_mut()) {
                                (Some(r), Some(original)) => r.replay(original),
                                _ => None,
                            };
                            let pick = choose(self.snapshot, tried, policies, t);
                            if let (Some(req), Some((i, admission))) = (copy, pick) {
                                tried.insert(i);
                                policies.hedge_metrics.attempts.increment(1);
                                policies.hedge_metrics.sent.increment(1);
                                let limit = limit_at(self.settings, self.deadline, t);
                                extras
                                    .get_or_insert_with(FuturesUnordered::new)
                                    .push(guarded(
                                        self.shared,
                                        self.snapshot,
                                        i,
                                        admission,
                                        req,
                                        limit,
                                        record,
                                    ));
                            }
                        }
                        HedgeStep::BudgetExhausted => {
                            policies.hedge_metrics.budget_exhausted.increment(1)
                        }
                        HedgeStep::Done => {}
                    }
                    due = state.next_at(hedge, start);
                    timer.set(None);
                    continue;
                }
                let pending = extras.as_ref().is_some_and(|e| !e.is_empty());
                if primary.is_none() && !pending {
                    return Poll::Ready(last.take().map_or(RoundEnd::NoEndpoint, RoundEnd::Done));
                }
                return Poll::Pending;
            }
        })
        .await
    }
}

const FAILED: Outcome = Outcome::Failure { retryable: true };

/// A call under the channel's policies.
pub(crate) async fn call<Req: 'static, S>(
    shared: Arc<Handle<Req, S>>,
    settings: Arc<ChannelPolicy>,
    req: Req,
) -> Result<S::Response, Error>
where
    S: Service<Req> + Clone,
    S::Response: 'static,
    S::Error: Into<BoxError> + 'static,
{
    let policies = &*shared.policies;
    let start = now();
    let deadline = settings.deadline().map(|d| Deadline::new(start, d));
    let retry = settings.retry().filter(|r| r.max_attempts() > 1);
    if retry.is_some() {
        policies.retry_budget.deposit(start);
    }
    if settings.hedge().is_some() {
        policies.hedge_budget.deposit(start);
    }
    let snapshot = shared
        .table
        .populated(shared.initial_wait, || shared.request_refresh())
        .await?;
    let mut tried = Tried::default();
    let mut retry_state = RetryState::new();
    let mut template = Some(req);
    let mut replayable = true;
    let mut last_error: Option<Error> = None;
    // Each exit gives the result, its outcome and when the call ended.
    let (result, outcome, end) = loop {
        let Some(original) = template.take() else {
            break (Err(last_error.unwrap_or(Error::NoEndpoints)), FAILED, now());
        };
        // Send a copy while the original may be needed again.
        let more = retry.is_some_and(|r| retry_state.attempts() + 1 < r.max_attempts());
        let copy = if more || settings.hedge().is_some() {
            shared.replay.as_ref().and_then(|r| r.replay(&original))
        } else {
            None
        };
        let req = match copy {
            Some(copy) => {
                template = Some(original);
                copy
            }
            None => {
                // Sent as it is: either its last attempt, or it cannot be
                // copied (then it is sent once).
                replayable &= !more;
                original
            }
        };
        let mut round = Round {
            shared: &shared,
            snapshot: &snapshot,
            settings: &settings,
            deadline: deadline.as_ref(),
            template: template.take(),
        };
        let round_start = if retry_state.attempts() == 0 {
            start
        } else {
            now()
        };
        let end = round.run(&mut tried, req, round_start).await;
        template = round.template;
        let attempt = match end {
            RoundEnd::Done(a) => a,
            RoundEnd::Deadline => {
                let d = deadline.expect("only a deadline ends a round this way");
                break (Err(d.error(last_error)), FAILED, now());
            }
            RoundEnd::NoEndpoint => {
                shared.request_refresh();
                break (Err(last_error.unwrap_or(Error::NoEndpoints)), FAILED, now());
            }
        };
        let Some(retry) = retry.filter(|_| !attempt.outcome.is_success()) else {
            break (
                attempt.result.map_err(into_error),
                attempt.outcome,
                attempt.end,
            );
        };
        let decision = with_thread_rng(|rng| {
            retry_state.next(
                retry,
                attempt.outcome,
                replayable,
                attempt.end,
                deadline.as_ref(),
                &policies.retry_budget,
                rng,
            )
        });
        match decision {
            RetryDecision::Retry { after } => {
                policies.retry_metrics.retries.increment(1);
                last_error = attempt.result.err().map(into_error);
                if !after.is_zero() {
                    tokio::time::sleep(after).await;
                }
            }
            RetryDecision::Stop(stop) => {
                if stop == Stop::BudgetExhausted {
                    policies.retry_metrics.budget_exhausted.increment(1);
                }
                let result = attempt.result.map_err(|e| {
                    crate::policy::retry_final_error(
                        stop,
                        into_error(e),
                        retry_state.attempts(),
                        deadline.as_ref(),
                    )
                });
                break (result, attempt.outcome, attempt.end);
            }
        }
    };
    shared
        .metrics
        .record_call(outcome, end.saturating_duration_since(start));
    result
}
