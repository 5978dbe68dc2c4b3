//! The driver's side of the call machine: the machine with the attempts,
//! timer and answer only it needs, and the loop that runs it once a call
//! needs more than its first attempt's success.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pin_project::pin_project;
use tokio::time::Sleep;

use super::attempt::{Attempt, Finished};
use super::dispatch::{Dispatch, request};
use super::place::Place;
use crate::error::Error;
use crate::policy::call::{Action, AttemptKind, Call, Ended, NotSent, Rules};
use crate::rng::{Rng, with_thread_rng};

/// The call machine and the driver's state that only it needs.
#[pin_project]
pub(super) struct Machine<A, T> {
    pub(super) call: Call,
    /// Hedges, each in a boxed place (a hedge is the one case that
    /// allocates).
    hedges: Vec<Pin<Box<Place<A>>>>,
    #[pin]
    timer: Option<Sleep>,
    /// What the timer is armed for.
    timer_at: Option<Instant>,
    kept: Option<Result<T, Error>>,
    /// The first attempt's time, when it was sent as the call started.
    took: Option<Duration>,
    /// How long the attempt that ended last ran, if it was answered.
    answered_in: Option<Duration>,
}

impl<A, T> Machine<A, T> {
    pub(super) fn new(call: Call) -> Self {
        Machine {
            call,
            hedges: Vec::new(),
            timer: None,
            timer_at: None,
            kept: None,
            took: None,
            answered_in: None,
        }
    }
}

/// The call once its machine runs it: feeds `ended` (an attempt's end not
/// yet fed), polls the attempts (the first one unless `polled` says it was
/// just polled), does what the machine asks and sleeps until its next
/// timer. Out of line: a call answered by its first attempt never gets
/// here, and its path stays short.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
pub(super) fn run_machine<D: Dispatch<Req>, Req>(
    dispatch: &D,
    rules: &Rules,
    mut first: Pin<&mut Place<D::Attempt>>,
    mut machine: Pin<&mut Option<Machine<D::Attempt, D::Response>>>,
    template: &mut Option<Req>,
    now: &mut Instant,
    quick: bool,
    ended: Option<Finished<D::Response>>,
    mut polled: bool,
    cx: &mut Context<'_>,
) -> Poll<Result<D::Response, Error>> {
    let m = machine
        .as_mut()
        .as_pin_mut()
        .expect("the machine runs the call")
        .project();
    let mut timer = m.timer;
    if let Some(out) = ended {
        if out.number == 1 && quick {
            *m.took = Some(out.elapsed);
        }
        feed(m.call, rules, m.kept, now, m.answered_in, out);
    }
    loop {
        // Feed every ended attempt to the machine.
        if !std::mem::take(&mut polled)
            && let Some(attempt) = first.as_mut().as_pin_mut()
            && let Poll::Ready(out) = attempt.poll(cx)
        {
            first.as_mut().clear();
            if out.number == 1 && quick {
                *m.took = Some(out.elapsed);
            }
            feed(m.call, rules, m.kept, now, m.answered_in, out);
        }
        let mut i = 0;
        while i < m.hedges.len() {
            let hedge = m.hedges[i].as_mut().as_pin_mut();
            if let Poll::Ready(out) = hedge.expect("a sent hedge").poll(cx) {
                drop(m.hedges.swap_remove(i));
                feed(m.call, rules, m.kept, now, m.answered_in, out);
            } else {
                i += 1;
            }
        }
        // Do what the machine asks until it waits.
        let mut sent = false;
        loop {
            let action = m.call.poll(*now, rules);
            // Borrowed, not moved: the fields are read one by one.
            match &action {
                Action::Send(send) => {
                    let Some((req, copied)) = request(dispatch, template, send) else {
                        m.call.on_not_sent(send.number, NotSent::NotReplayable);
                        continue;
                    };
                    if copied {
                        m.call.on_unreplayable();
                    }
                    let sending = if send.kind == AttemptKind::Hedge {
                        let mut place = Box::pin(Place::empty());
                        dispatch
                            .send(m.call.tried(), send, req, *now, place.as_mut())
                            .inspect(|_| m.hedges.push(place))
                    } else {
                        dispatch.send(m.call.tried(), send, req, *now, first.as_mut())
                    };
                    match sending {
                        Ok(endpoint) => {
                            m.call.on_sent(send.number, endpoint);
                            dispatch.on_sent(send.kind);
                            // Poll it before asking the machine again:
                            // an answer at once ends the round.
                            sent = true;
                            break;
                        }
                        Err(why) => m.call.on_not_sent(send.number, why),
                    }
                }
                &Action::Cut { number, at } => {
                    if let Some(a) = first.as_mut().as_pin_mut()
                        && a.number() == number
                    {
                        a.cut(at);
                        first.as_mut().clear();
                    } else if let Some(i) = m
                        .hedges
                        .iter()
                        .position(|a| a.get().is_some_and(|a| a.number() == number))
                    {
                        let mut a = m.hedges.swap_remove(i);
                        if let Some(a) = a.as_mut().as_pin_mut() {
                            a.cut(at);
                        }
                    }
                    let out = Finished {
                        number,
                        at,
                        elapsed: Duration::ZERO,
                        ended: Ended::TimedOut,
                        result: None,
                    };
                    feed(m.call, rules, m.kept, now, m.answered_in, out);
                }
                &Action::Refused(which) => dispatch.on_refused(which),
                Action::Wait => break,
                &Action::Finish(finish) => {
                    // Every attempt still pending loses: dropped, which
                    // cancels it.
                    if let Some(a) = first.as_mut().as_pin_mut() {
                        a.supersede();
                    }
                    for a in m.hedges.iter_mut() {
                        if let Some(a) = a.as_mut().as_pin_mut() {
                            a.supersede();
                        }
                    }
                    first.as_mut().clear();
                    m.hedges.clear();
                    let ending = m.call.ending();
                    let took = m.took.filter(|_| ending.attempts_sent == 1);
                    dispatch.on_finish(&ending, *now, took);
                    let result = m
                        .call
                        .result(finish, m.kept.take(), || dispatch.no_endpoint());
                    dispatch.on_result(&ending, *now, *m.answered_in, &result);
                    return Poll::Ready(result);
                }
            }
        }
        if sent {
            // Poll the new attempt once, so that it can wake us.
            continue;
        }
        let Some(at) = m.call.next_timer() else {
            return Poll::Pending;
        };
        if at <= *now {
            continue;
        }
        if *m.timer_at != Some(at) {
            match timer.as_mut().as_pin_mut() {
                Some(timer) => timer.reset(at.into()),
                None => timer.set(Some(tokio::time::sleep_until(at.into()))),
            }
            *m.timer_at = Some(at);
        }
        let Some(timer) = timer.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        if timer.poll(cx).is_pending() {
            return Poll::Pending;
        }
        *m.timer_at = None;
        *now = crate::clock::now().max(at);
    }
}

/// Hands one ended attempt to the machine and keeps its answer.
#[inline(always)]
fn feed<T>(
    call: &mut Call,
    rules: &Rules,
    kept: &mut Option<Result<T, Error>>,
    now: &mut Instant,
    answered_in: &mut Option<Duration>,
    out: Finished<T>,
) {
    *now = (*now).max(out.at);
    *answered_in = matches!(out.ended, Ended::Answered(_)).then_some(out.elapsed);
    if let Some(result) = out.result {
        *kept = Some(result);
    }
    if matches!(out.ended, Ended::Answered(o) if o.is_success()) {
        // A success ends the call: no random pause is drawn, so the thread
        // generator is not needed.
        call.on_end(out.number, out.ended, *now, rules, &mut Rng::seeded(0));
    } else {
        with_thread_rng(|rng| call.on_end(out.number, out.ended, *now, rules, rng));
    }
}
