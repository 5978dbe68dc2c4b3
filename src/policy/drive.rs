//! The one async driver of the call machine ([`super::call::Call`]): it
//! sends the attempts the machine asks for through a [`Dispatch`], feeds
//! their ends back, sleeps until the machine's next timer and answers with
//! the machine's result. The channel's resilient path, `RetryLayer` and
//! `HedgeLayer` are this driver with different dispatches.
//!
//! The call's first attempt is sent and polled before the machine exists
//! (see [`super::call`]'s `first` module): a call answered by its first
//! attempt's success, the usual case, never builds the machine. Anything
//! else builds it as it would be after that attempt, and it takes over.
//!
//! It allocates nothing unless a hedge is sent (each hedge is boxed), has
//! one timer for every time the machine cares about (the next hedge, the
//! end of a pause, the cut of an attempt, the deadline), arms it only when
//! it is about to wait, and reads the clock only when it fired: every other
//! decision uses the time at which the last attempt ended.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pin_project::pin_project;
use tokio::time::Sleep;
use tower::Service;

use super::call::{
    Action, AttemptKind, Call, Ended, Ending, NotSent, Refused, Rules, SendAttempt, Tried,
};
use crate::classify::Outcome;
use crate::error::Error;
use crate::rng::{Rng, with_thread_rng};

/// How one attempt ended, as an attempt future reports it.
pub(crate) struct Finished<T> {
    /// The attempt's number in the call.
    pub(crate) number: u32,
    /// When it ended.
    pub(crate) at: Instant,
    /// How long it ran.
    pub(crate) elapsed: std::time::Duration,
    /// How: answered (with the classifier's outcome) or timed out.
    pub(crate) ended: Ended,
    /// The answer; `None` when it timed out.
    pub(crate) result: Option<Result<T, Error>>,
}

/// Where one attempt is: waiting for its service to be ready, called, or
/// over. Both kinds of attempt (on a channel's endpoint, on a layer's inner
/// service) step through it the same way.
#[pin_project(project = StepProj)]
pub(crate) enum Step<S: Service<Req>, Req> {
    /// Waiting for the service to be ready.
    Waiting { svc: S, req: Option<Req> },
    /// Called.
    Calling {
        #[pin]
        fut: S::Future,
    },
    /// Answered, cut or dropped.
    Done,
}

impl<S: Service<Req>, Req> Step<S, Req> {
    /// A step waiting for `svc` to take `req`.
    pub(crate) fn new(svc: S, req: Req) -> Self {
        Step::Waiting {
            svc,
            req: Some(req),
        }
    }

    /// Advances the attempt: the service's answer once it has one (the step
    /// is then [`Step::Done`]); pending while waiting or after it is done.
    pub(crate) fn poll_answer(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<S::Response, S::Error>> {
        loop {
            match self.as_mut().project() {
                StepProj::Waiting { svc, req } => match svc.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        let Some(req) = req.take() else {
                            return Poll::Pending;
                        };
                        let fut = svc.call(req);
                        self.set(Step::Calling { fut });
                    }
                    Poll::Ready(Err(e)) => {
                        self.set(Step::Done);
                        return Poll::Ready(Err(e));
                    }
                    Poll::Pending => return Poll::Pending,
                },
                StepProj::Calling { fut } => {
                    let answer = std::task::ready!(fut.poll(cx));
                    self.set(Step::Done);
                    return Poll::Ready(answer);
                }
                StepProj::Done => return Poll::Pending,
            }
        }
    }

    /// True once the attempt was answered, cut or dropped.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Step::Done)
    }
}

/// One attempt in flight, as the driver holds it.
pub(crate) trait Attempt: Future<Output = Finished<Self::Response>> {
    /// The answer type.
    type Response;

    /// The attempt's number in its call.
    fn number(&self) -> u32;

    /// The attempt reached its cut at `at`: record that it timed out (it is
    /// dropped next).
    fn cut(self: Pin<&mut Self>, at: Instant);

    /// The call is over without this attempt's answer (another attempt
    /// answered it): it is dropped next, and must not count as given up on
    /// by the caller. Default: nothing to record.
    fn supersede(self: Pin<&mut Self>) {}
}

/// Where a driven call's attempts go, and what it reports.
pub(crate) trait Dispatch<Req> {
    /// The answer type.
    type Response;
    /// One attempt in flight.
    type Attempt: Attempt<Response = Self::Response>;

    /// The policies, read afresh for each decision.
    fn rules(&self) -> Rules<'_>;

    /// Starts attempt `send` with `req`, avoiding the endpoints in `tried`
    /// while others can take it; returns it with an identity of the
    /// endpoint it went to (for the call's tried set), or why it could not
    /// be sent (the request is dropped).
    fn send(
        &self,
        tried: &Tried,
        send: &SendAttempt,
        req: Req,
        now: Instant,
    ) -> Result<(Self::Attempt, Option<usize>), NotSent>;

    /// A copy of `req` for another attempt, or `None`.
    fn replay(&self, req: &Req) -> Option<Req>;

    /// The error of a call that found no endpoint.
    fn no_endpoint(&self) -> Error;

    /// Notes a sent attempt (metrics).
    fn on_sent(&self, kind: AttemptKind);

    /// Notes a refusal by a budget (metrics).
    fn on_refused(&self, which: Refused);

    /// Notes the end of the call at `now` (metrics). `took` is the call's
    /// duration when the driver knows it without reading the clock (a call
    /// answered by its first attempt, sent when the call started).
    fn on_finish(&self, ending: &Ending, now: Instant, took: Option<Duration>);

    /// Sees the call's result before it is returned, at `now`;
    /// `answered_in` is how long the attempt whose end finished the call
    /// ran, when that attempt was answered (`None` when it was cut, or no
    /// attempt ended it). Default: nothing.
    fn on_result(
        &self,
        ending: &Ending,
        now: Instant,
        answered_in: Option<Duration>,
        result: &Result<Self::Response, Error>,
    ) {
        let _ = (ending, now, answered_in, result);
    }
}

/// A call driven to its end (see the [module docs](self)).
#[pin_project]
pub(crate) struct Drive<D: Dispatch<Req>, Req> {
    dispatch: D,
    /// The round's first attempt, in place (the call's first attempt is
    /// sent and polled here before the machine exists).
    #[pin]
    first: Option<D::Attempt>,
    template: Option<Req>,
    /// When the call started.
    start: Instant,
    /// The latest time the driver knows.
    now: Instant,
    /// How far the call got without the machine.
    quick: Quick,
    /// The machine and what only it needs, built when the call needs more
    /// than its first attempt's success.
    #[pin]
    machine: Option<Machine<D::Attempt, D::Response>>,
}

/// How far a call got without its machine.
#[derive(Debug, Clone, Copy)]
enum Quick {
    /// Nothing sent yet: the first poll sends the first attempt.
    Fresh,
    /// The first attempt went out, to `endpoint`; `replayable`: the request
    /// could be copied for more attempts.
    Sent {
        endpoint: Option<usize>,
        replayable: bool,
    },
    /// The machine runs the call.
    Off,
}

/// The call machine and the driver's state that only it needs.
#[pin_project]
struct Machine<A, T> {
    call: Call,
    /// Hedges, each boxed (a hedge is the one case that allocates).
    hedges: Vec<Pin<Box<A>>>,
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
    fn new(call: Call) -> Self {
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

impl<D: Dispatch<Req>, Req> Drive<D, Req> {
    /// A call of `req` through `dispatch`, started at `start` (its deadline
    /// runs from there) and driven from `now`.
    #[inline(always)]
    pub(crate) fn new(dispatch: D, req: Req, start: Instant, now: Instant) -> Self {
        Call::deposit(&dispatch.rules(), start);
        Drive {
            dispatch,
            first: None,
            template: Some(req),
            start,
            now,
            quick: Quick::Fresh,
            machine: None,
        }
    }

    /// Writes at `this` the drive [`new`](Self::new) would return, field
    /// by field: a driver is large (an attempt, the machine's place), and
    /// made on the stack it would be copied whole into its box.
    ///
    /// # Safety
    ///
    /// `this` must be valid for writes and aligned; on return the drive
    /// there is fully initialized (and not yet pinned).
    #[inline(always)]
    pub(crate) unsafe fn init(
        this: *mut Self,
        dispatch: D,
        req: Req,
        start: Instant,
        now: Instant,
    ) {
        use std::ptr::addr_of_mut;
        Call::deposit(&dispatch.rules(), start);
        // SAFETY: the caller gives a writable, aligned place; every field
        // is written once.
        unsafe {
            addr_of_mut!((*this).dispatch).write(dispatch);
            addr_of_mut!((*this).first).write(None);
            addr_of_mut!((*this).template).write(Some(req));
            addr_of_mut!((*this).start).write(start);
            addr_of_mut!((*this).now).write(now);
            addr_of_mut!((*this).quick).write(Quick::Fresh);
            addr_of_mut!((*this).machine).write(None);
        }
    }

    /// Attempts sent so far, hedges included (for a future's `Debug`).
    pub(crate) fn attempts_sent(&self) -> u32 {
        match (&self.machine, self.quick) {
            (Some(m), _) => m.call.attempts_sent(),
            (None, Quick::Sent { .. }) => 1,
            (None, _) => 0,
        }
    }
}

impl<D: Dispatch<Req>, Req> Future for Drive<D, Req> {
    type Output = Result<D::Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let dispatch = &*this.dispatch;
        let rules = dispatch.rules();
        let mut first = this.first;
        let mut machine = this.machine;
        let (start, quick) = (*this.start, *this.start == *this.now);
        // An attempt's end for the machine to take once it is built.
        let mut ended = None;
        // The first attempt was polled already in this call of `poll`.
        let mut polled = false;
        if let Quick::Fresh = *this.quick {
            // The first attempt, sent as the machine would send it.
            *this.quick = Quick::Off;
            match Call::first_attempt(&rules, start, *this.now) {
                None => machine.set(Some(Machine::new(Call::counted(&rules, start)))),
                Some(send) => {
                    let (req, copied) = request(dispatch, this.template, &send)
                        .expect("a first attempt always has its request");
                    let replayable = !copied;
                    match dispatch.send(&Tried::NONE, &send, req, *this.now) {
                        Ok((attempt, endpoint)) => {
                            dispatch.on_sent(AttemptKind::First);
                            first.set(Some(attempt));
                            *this.quick = Quick::Sent {
                                endpoint,
                                replayable,
                            };
                        }
                        Err(why) => {
                            let call =
                                Call::after_first(&rules, start, *this.now, Err(why), replayable);
                            machine.set(Some(Machine::new(call)));
                        }
                    }
                }
            }
        }
        if let Quick::Sent {
            endpoint,
            replayable,
        } = *this.quick
        {
            // Its success ends the call without the machine.
            let attempt = first.as_mut().as_pin_mut().expect("the first attempt");
            let poll = attempt.poll(cx);
            if let Poll::Ready(out) = &poll
                && out.ended == Ended::Answered(Outcome::Success)
                && matches!(out.result, Some(Ok(_)))
            {
                let Poll::Ready(out) = poll else {
                    unreachable!()
                };
                first.set(None);
                let ending = Call::first_succeeded(&rules, out.elapsed, out.at);
                let took = quick.then_some(out.elapsed);
                dispatch.on_finish(&ending, out.at, took);
                let result = out.result.expect("an answer");
                dispatch.on_result(&ending, out.at, Some(out.elapsed), &result);
                return Poll::Ready(result);
            }
            *this.quick = Quick::Off;
            let call = Call::after_first(&rules, start, *this.now, Ok(endpoint), replayable);
            machine.set(Some(Machine::new(call)));
            match poll {
                Poll::Ready(out) => {
                    first.set(None);
                    ended = Some(out);
                }
                Poll::Pending => polled = true,
            }
        }
        run_machine(
            dispatch,
            &rules,
            first,
            machine,
            this.template,
            this.now,
            quick,
            ended,
            polled,
            cx,
        )
    }
}

/// The call once its machine runs it: feeds `ended` (an attempt's end not
/// yet fed), polls the attempts (the first one unless `polled` says it was
/// just polled), does what the machine asks and sleeps until its next
/// timer. Out of line: a call answered by its first attempt never gets
/// here, and its path stays short.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn run_machine<D: Dispatch<Req>, Req>(
    dispatch: &D,
    rules: &Rules,
    mut first: Pin<&mut Option<D::Attempt>>,
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
            first.set(None);
            if out.number == 1 && quick {
                *m.took = Some(out.elapsed);
            }
            feed(m.call, rules, m.kept, now, m.answered_in, out);
        }
        let mut i = 0;
        while i < m.hedges.len() {
            if let Poll::Ready(out) = m.hedges[i].as_mut().poll(cx) {
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
                    match dispatch.send(m.call.tried(), send, req, *now) {
                        Ok((attempt, endpoint)) => {
                            m.call.on_sent(send.number, endpoint);
                            dispatch.on_sent(send.kind);
                            if send.kind == AttemptKind::Hedge {
                                m.hedges.push(Box::pin(attempt));
                            } else {
                                first.set(Some(attempt));
                            }
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
                        first.set(None);
                    } else if let Some(i) = m.hedges.iter().position(|a| a.number() == number) {
                        let mut a = m.hedges.swap_remove(i);
                        a.as_mut().cut(at);
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
                        a.as_mut().supersede();
                    }
                    first.set(None);
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

/// The request for `send`: a copy while another attempt may follow, else
/// the original; with it, whether it could not be copied (so that nothing
/// can follow it). `None` for a hedge whose request cannot be copied.
fn request<D: Dispatch<Req> + ?Sized, Req>(
    dispatch: &D,
    template: &mut Option<Req>,
    send: &SendAttempt,
) -> Option<(Req, bool)> {
    let original = template.take()?;
    if send.last {
        return Some((original, false));
    }
    match dispatch.replay(&original) {
        Some(copy) => {
            *template = Some(original);
            Some((copy, false))
        }
        None if send.kind == AttemptKind::Hedge => {
            *template = Some(original);
            None
        }
        // Sent as it is: nothing can follow it.
        None => Some((original, true)),
    }
}
