//! The call machine's decisions, over plain time values: no runtime.

use std::time::{Duration, Instant};

use super::*;
use crate::error::Error;
use crate::policy::backoff::{Backoff, Jitter};
use crate::policy::budget::BudgetSettings;
use crate::policy::hedge::{HedgeDelay, HedgeSettings};
use crate::policy::latency::{LatencyHistogram, LatencySettings};
use crate::policy::retry::RetrySettings;
use crate::policy::retry::Stop;
use crate::rng::Rng;

const MS: Duration = Duration::from_millis(1);
const FAIL: Ended = Ended::Answered(Outcome::Failure { retryable: true });
const OK: Ended = Ended::Answered(Outcome::Success);

/// Budgets and settings the rules borrow.
struct World {
    t0: Instant,
    retry: RetrySettings,
    hedge: HedgeSettings,
    retry_budget: Budget,
    hedge_budget: Budget,
    latency: LatencyHistogram,
    timeout: Option<Duration>,
    deadline: Option<Duration>,
    rng: Rng,
}

impl World {
    fn new() -> Self {
        let t0 = Instant::now();
        let ample = BudgetSettings::new(1.0, 100, Duration::from_secs(10)).unwrap();
        let retry = RetrySettings::default()
            .with_max_attempts(3)
            .with_budget(ample)
            .with_backoff(
                Backoff::new(5 * MS, 2.0, 20 * MS)
                    .unwrap()
                    .with_jitter(Jitter::None),
            );
        let hedge = HedgeSettings::default()
            .with_delay(HedgeDelay::Fixed(10 * MS))
            .with_budget(ample);
        let latency = LatencySettings::new(Duration::from_secs(10), 1, MS).unwrap();
        World {
            t0,
            retry_budget: Budget::new(retry.budget(), t0),
            hedge_budget: Budget::new(hedge.budget(), t0),
            latency: LatencyHistogram::new(&latency, t0),
            retry,
            hedge,
            timeout: None,
            deadline: None,
            rng: Rng::seeded(3),
        }
    }

    fn rules(&self, retry: bool, hedge: bool) -> Rules<'_> {
        Rules {
            timeout: self.timeout,
            deadline: self.deadline,
            retry: retry.then_some(Retrying {
                settings: &self.retry,
                budget: &self.retry_budget,
            }),
            hedge: hedge.then_some(Hedging {
                settings: &self.hedge,
                budget: &self.hedge_budget,
                latency: &self.latency,
            }),
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }
}

fn sent(action: Action) -> SendAttempt {
    match action {
        Action::Send(s) => s,
        other => panic!("expected a send, got {other:?}"),
    }
}

fn end(w: &mut World, call: &mut Call, retry: bool, hedge: bool, n: u32, e: Ended, ms: u64) {
    let mut rng = w.rng.clone();
    call.on_end(n, e, w.at(ms), &w.rules(retry, hedge), &mut rng);
    w.rng = rng;
}

#[test]
fn a_single_attempt_answers_with_its_result() {
    let w = World::new();
    let rules = w.rules(false, false);
    let mut call = Call::new(&rules, w.t0);
    let first = sent(call.poll(w.t0, &rules));
    assert_eq!(
        (first.number, first.kind, first.cut),
        (1, AttemptKind::First, None)
    );
    assert!(first.last, "nothing can follow: send the request itself");
    call.on_sent(1, Some(4));
    assert_eq!(call.poll(w.t0, &rules), Action::Wait);
    assert_eq!(call.next_timer(), None);
    call.on_end(1, OK, w.at(3), &rules, &mut Rng::seeded(1));
    let Action::Finish(finish) = call.poll(w.at(3), &rules) else {
        panic!()
    };
    assert_eq!(
        call.result(finish, Some(Ok::<_, Error>(7)), || unreachable!())
            .unwrap(),
        7
    );
    assert_eq!(call.answered_by(), Some(AttemptKind::First));
}

#[test]
fn retries_pause_go_elsewhere_and_stop_after_max_attempts() {
    let mut w = World::new();
    let mut call = Call::new(&w.rules(true, false), w.t0);
    let mut pauses = Vec::new();
    let mut t = 0;
    for round in 1..=3u32 {
        let due = call.next_timer().unwrap();
        assert_eq!(call.poll(due - MS / 2, &w.rules(true, false)), Action::Wait);
        let s = sent(call.poll(due, &w.rules(true, false)));
        let kind = if round == 1 {
            AttemptKind::First
        } else {
            AttemptKind::Retry
        };
        assert_eq!((s.number, s.kind), (round, kind));
        assert_eq!(s.last, round == 3, "a copy while another round may follow");
        assert!(!call.tried().contains(round as usize));
        call.on_sent(s.number, Some(round as usize));
        pauses.push(due.duration_since(w.t0).as_millis() as u64 - t);
        t = due.duration_since(w.t0).as_millis() as u64 + 1;
        end(&mut w, &mut call, true, false, s.number, FAIL, t);
    }
    // 5 ms, then 10 ms between rounds (no jitter).
    assert_eq!(pauses, [0, 5, 10]);
    let Action::Finish(finish) = call.poll(w.at(t), &w.rules(true, false)) else {
        panic!()
    };
    assert_eq!(finish, Finish::Answer(Stop::AttemptsExhausted));
    let err = call
        .result(
            finish,
            Some(Err::<u32, _>(Error::inner("boom"))),
            || unreachable!(),
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::RetriesExhausted { attempts: 3, .. }),
        "{err:?}"
    );
}

#[test]
fn an_attempt_timeout_is_a_retryable_failure_and_the_deadline_ends_the_call() {
    let mut w = World::new();
    w.timeout = Some(30 * MS);
    w.deadline = Some(70 * MS);
    let mut call = Call::new(&w.rules(true, false), w.t0);
    let s = sent(call.poll(w.t0, &w.rules(true, false)));
    assert_eq!(s.cut, Some(w.at(30)));
    end(&mut w, &mut call, true, false, 1, Ended::TimedOut, 30);
    let due = call.next_timer().unwrap();
    assert_eq!(due, w.at(35));
    let s = sent(call.poll(due, &w.rules(true, false)));
    // 35 ms left of the deadline: the timeout still fits.
    assert_eq!(s.cut, Some(w.at(65)));
    end(&mut w, &mut call, true, false, 2, Ended::TimedOut, 65);
    // 5 ms left, a 10 ms pause: no room for a third round.
    let Action::Finish(finish) = call.poll(w.at(65), &w.rules(true, false)) else {
        panic!()
    };
    let err = call
        .result::<u32>(finish, None, || unreachable!())
        .unwrap_err();
    match err {
        Error::DeadlineExceeded {
            deadline,
            last: Some(last),
        } => {
            assert_eq!(deadline, 70 * MS);
            assert!(matches!(*last, Error::AttemptTimeout(t) if t == 30 * MS));
        }
        other => panic!("{other:?}"),
    }
    // An attempt cut by the deadline ends the call at once.
    let mut w = World::new();
    w.deadline = Some(20 * MS);
    let mut call = Call::new(&w.rules(true, false), w.t0);
    let s = sent(call.poll(w.t0, &w.rules(true, false)));
    assert_eq!(s.cut, Some(w.at(20)));
    end(&mut w, &mut call, true, false, 1, Ended::TimedOut, 20);
    assert_eq!(
        call.poll(w.at(20), &w.rules(true, false)),
        Action::Finish(Finish::Deadline)
    );
}

#[test]
fn hedges_are_spaced_by_the_delay_and_the_first_success_wins() {
    let mut w = World::new();
    w.hedge = w.hedge.clone().with_max_extra(2);
    let mut call = Call::new(&w.rules(false, true), w.t0);
    let first = sent(call.poll(w.t0, &w.rules(false, true)));
    assert!(!first.last, "a hedge may follow");
    call.on_sent(1, Some(0));
    assert_eq!(call.next_timer(), Some(w.at(10)));
    assert_eq!(call.poll(w.at(9), &w.rules(false, true)), Action::Wait);
    let h1 = sent(call.poll(w.at(10), &w.rules(false, true)));
    assert_eq!(
        (h1.number, h1.kind, h1.last),
        (2, AttemptKind::Hedge, false)
    );
    call.on_sent(2, Some(1));
    assert_eq!(call.next_timer(), Some(w.at(20)));
    let h2 = sent(call.poll(w.at(20), &w.rules(false, true)));
    assert!(h2.last, "the last hedge carries the request itself");
    call.on_sent(3, Some(2));
    assert_eq!(call.next_timer(), None);
    // The first hedge fails; the others are still pending.
    end(&mut w, &mut call, false, true, 2, FAIL, 22);
    assert_eq!(call.poll(w.at(22), &w.rules(false, true)), Action::Wait);
    end(&mut w, &mut call, false, true, 3, OK, 25);
    assert_eq!(
        call.poll(w.at(25), &w.rules(false, true)),
        Action::Finish(Finish::Answer(Stop::Succeeded))
    );
    assert_eq!(call.answered_by(), Some(AttemptKind::Hedge));
}

#[test]
fn budgets_refuse_hedges_and_retries() {
    let mut w = World::new();
    let none = BudgetSettings::new(0.0, 0, Duration::from_secs(1)).unwrap();
    w.hedge_budget = Budget::new(&none, w.t0);
    w.retry_budget = Budget::new(&none, w.t0);
    let mut call = Call::new(&w.rules(true, true), w.t0);
    sent(call.poll(w.t0, &w.rules(true, true)));
    call.on_sent(1, Some(0));
    assert_eq!(
        call.poll(w.at(10), &w.rules(true, true)),
        Action::Refused(Refused::Hedge)
    );
    assert_eq!(call.next_timer(), None, "no more hedges in this round");
    end(&mut w, &mut call, true, true, 1, FAIL, 12);
    assert_eq!(
        call.poll(w.at(12), &w.rules(true, true)),
        Action::Refused(Refused::Retry)
    );
    let Action::Finish(finish) = call.poll(w.at(12), &w.rules(true, true)) else {
        panic!()
    };
    assert_eq!(finish, Finish::Answer(Stop::BudgetExhausted));
}

#[test]
fn no_endpoint_and_no_copy() {
    let mut w = World::new();
    let mut call = Call::new(&w.rules(true, true), w.t0);
    let s = sent(call.poll(w.t0, &w.rules(true, true)));
    call.on_not_sent(s.number, NotSent::NoEndpoint);
    assert_eq!(
        call.poll(w.t0, &w.rules(true, true)),
        Action::Finish(Finish::NoEndpoint)
    );
    // A request that cannot be copied is sent once: no hedge, no retry.
    let mut call = Call::new(&w.rules(true, true), w.t0);
    sent(call.poll(w.t0, &w.rules(true, true)));
    call.on_unreplayable();
    call.on_sent(1, Some(0));
    assert_eq!(call.next_timer(), None);
    end(&mut w, &mut call, true, true, 1, FAIL, 40);
    assert_eq!(
        call.poll(w.at(40), &w.rules(true, true)),
        Action::Finish(Finish::Answer(Stop::NotReplayable))
    );
}

#[test]
fn latency_samples_are_successes_timeouts_and_losers() {
    let mut w = World::new();
    w.hedge = w.hedge.clone().with_delay(HedgeDelay::Percentile(0.5));
    w.timeout = Some(50 * MS);
    // Warm the window (min 1 sample) so that the percentile gives a delay.
    w.latency.record(10 * MS, w.t0);
    let mut call = Call::new(&w.rules(true, true), w.t0);
    sent(call.poll(w.t0, &w.rules(true, true)));
    call.on_sent(1, Some(0));
    let due = call.next_timer().unwrap();
    let hedge = sent(call.poll(due, &w.rules(true, true)));
    call.on_sent(hedge.number, Some(1));
    // The hedge answers at 30 ms: its own time, and the primary's 30 ms so
    // far (it loses) are samples.
    end(&mut w, &mut call, true, true, hedge.number, OK, 30);
    let samples = |w: &World| -> Vec<Duration> {
        [0.01, 0.5, 1.0]
            .map(|q| w.latency.percentile(q, w.at(30)).unwrap())
            .to_vec()
    };
    let d = due.duration_since(w.t0);
    let got = samples(&w);
    assert!(got[0] >= 10 * MS && got[0] < 11 * MS, "{got:?}");
    assert!(got[2] >= 30 * MS && got[2] < 31 * MS, "{got:?}");
    assert!(30 * MS - d < got[2]);
    // A failure gives none; a timeout gives its limit.
    let mut w = World::new();
    w.hedge = w.hedge.clone().with_delay(HedgeDelay::Percentile(0.5));
    w.timeout = Some(50 * MS);
    let mut call = Call::new(&w.rules(true, true), w.t0);
    sent(call.poll(w.t0, &w.rules(true, true)));
    end(&mut w, &mut call, true, true, 1, FAIL, 1);
    let s = sent(call.poll(call.next_timer().unwrap(), &w.rules(true, true)));
    end(&mut w, &mut call, true, true, s.number, Ended::TimedOut, 56);
    let p = w.latency.percentile(1.0, w.at(56)).unwrap();
    assert!(p >= 50 * MS && p < 52 * MS, "{p:?}");
    assert!(w.latency.percentile(0.01, w.at(56)).unwrap() >= 50 * MS);
}

/// Retry on or off, hedging on or off, and how long after its start the
/// call is first driven (a call that waited for its first endpoint).
fn combinations() -> Vec<(bool, bool, u64)> {
    let mut all = Vec::new();
    for retry in [false, true] {
        for hedge in [false, true] {
            for wait_ms in [0, 5] {
                all.push((retry, hedge, wait_ms));
            }
        }
    }
    all
}

#[test]
fn the_first_attempt_without_the_machine_is_the_machines_first_attempt() {
    let mut w = World::new();
    let settings = [
        (None, None),
        (Some(20 * MS), None),
        (None, Some(15 * MS)),
        (Some(20 * MS), Some(15 * MS)),
        (Some(10 * MS), Some(15 * MS)),
        (None, Some(3 * MS)),
    ];
    let mut checked = 0;
    for (timeout, deadline) in settings {
        w.timeout = timeout;
        w.deadline = deadline;
        for (retry, hedge, wait_ms) in combinations() {
            let rules = w.rules(retry, hedge);
            let now = w.at(wait_ms);
            let mut machine = Call::counted(&rules, w.t0);
            let quick = Call::first_attempt(&rules, w.t0, now);
            let Action::Send(send) = machine.poll(now, &rules) else {
                // Only a deadline already passed keeps the first attempt.
                assert_eq!(quick, None, "{timeout:?} {deadline:?} wait {wait_ms}");
                assert_eq!(machine.poll(now, &rules), Action::Finish(Finish::Deadline));
                continue;
            };
            let quick = quick.expect("the machine sends a first attempt");
            assert_eq!(
                (quick.number, quick.kind, quick.cut),
                (send.number, send.kind, send.cut)
            );
            // A copy whenever the machine might want one.
            assert!(!quick.last || send.last);
            machine.on_sent(1, Some(3));
            let mut after = Call::after_first(&rules, w.t0, now, Ok(Some(3)), true);
            if !Call::first_may_time_out(&rules, true) {
                assert_eq!(machine.next_timer(), None, "nothing due while it runs");
            }
            // From here on both decide the same: a retryable failure, then
            // whatever follows it.
            assert_eq!(after.next_timer(), machine.next_timer());
            assert_eq!(after.tried().contains(3), machine.tried().contains(3));
            let ended = now + MS;
            for call in [&mut machine, &mut after] {
                call.on_end(1, FAIL, ended, &rules, &mut Rng::seeded(5));
            }
            assert_eq!(after.ending(), machine.ending());
            let next = machine.next_timer().unwrap_or(ended);
            assert_eq!(after.next_timer(), machine.next_timer());
            assert_eq!(after.poll(next, &rules), machine.poll(next, &rules));
            checked += 1;
        }
    }
    assert_eq!(checked, 44, "every combination but the passed deadlines");
}

#[test]
fn a_first_attempt_that_could_not_be_sent_ends_the_call_as_in_the_machine() {
    let w = World::new();
    let rules = w.rules(true, true);
    let mut machine = Call::new(&rules, w.t0);
    let send = sent(machine.poll(w.t0, &rules));
    machine.on_not_sent(send.number, NotSent::NoEndpoint);
    let mut after = Call::after_first(&rules, w.t0, w.t0, Err(NotSent::NoEndpoint), true);
    let finish = Action::Finish(Finish::NoEndpoint);
    assert_eq!(machine.poll(w.t0, &rules), finish);
    assert_eq!(after.poll(w.t0, &rules), finish);
    // A request that could not be copied: no hedge is ever due.
    let unreplayable = Call::after_first(&rules, w.t0, w.t0, Ok(None), false);
    assert_eq!(unreplayable.next_timer(), None);
}

#[test]
fn a_first_success_records_what_the_machine_records() {
    let mut w = World::new();
    w.hedge = HedgeSettings::default().with_delay(HedgeDelay::Percentile(0.5));
    let twin = World::new();
    let (machine_latency, quick_latency) = (&w.latency, &twin.latency);
    for (i, ms) in [4u32, 9, 2, 30, 7].into_iter().enumerate() {
        let t = w.at(10 * i as u64);
        let ended = t + ms * MS;
        let rules = w.rules(true, true);
        let mut call = Call::new(&rules, t);
        let send = sent(call.poll(t, &rules));
        call.on_sent(send.number, Some(1));
        call.on_end(1, OK, ended, &rules, &mut Rng::seeded(1));
        let quick_rules = Rules {
            hedge: rules.hedge.map(|h| Hedging {
                latency: quick_latency,
                ..h
            }),
            ..rules
        };
        let ending = Call::first_succeeded(&quick_rules, ms * MS, ended);
        assert_eq!(ending, call.ending());
        let at = ended;
        assert_eq!(
            quick_latency.percentile(0.5, at),
            machine_latency.percentile(0.5, at)
        );
    }
    assert!(machine_latency.percentile(0.5, w.at(60)).is_some());
}
