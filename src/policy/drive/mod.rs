//! The one async driver of the call machine ([`super::call::Call`]): it
//! sends the attempts the machine asks for through a [`Dispatch`], feeds
//! their ends back, sleeps until the machine's next timer and answers with
//! the machine's result. The channel's resilient path, `RetryLayer` and
//! `HedgeLayer` are this driver with different dispatches.
//!
//! The call's first attempt is sent and polled before the machine exists
//! (see [`super::call`]): a call answered by its first attempt's success,
//! the usual case, never builds the machine, and neither does its wait when
//! no timer can be due meanwhile (no timeout, deadline or hedging). Anything
//! else builds it as it would be after that attempt, and it takes over.
//!
//! It allocates nothing unless it tries a hedge (each hedge's place is
//! boxed as it is tried, so that the attempt is written where it stays), has
//! one timer for every time the machine cares about (the next hedge, the
//! end of a pause, the cut of an attempt, the deadline), arms it only when
//! it is about to wait, and reads the clock only when it fired: every other
//! decision uses the time at which the last attempt ended.

mod attempt;
mod dispatch;
mod machine;
mod place;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use pin_project::pin_project;

pub(crate) use attempt::{Attempt, Finished, Step};
pub(crate) use dispatch::Dispatch;
use dispatch::request;
use machine::{Machine, run_machine};
pub(crate) use place::Place;

use super::call::{AttemptKind, Call, Ended, Tried};
use crate::classify::Outcome;
use crate::error::Error;

/// A call driven to its end (see the [module docs](self)).
#[pin_project]
pub(crate) struct Drive<D: Dispatch<Req>, Req> {
    dispatch: D,
    /// The round's first attempt, in place (the call's first attempt is
    /// sent and polled here before the machine exists).
    #[pin]
    first: Place<D::Attempt>,
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

impl<D: Dispatch<Req>, Req> Drive<D, Req> {
    /// A call of `req` through `dispatch`, started at `start` (its deadline
    /// runs from there) and driven from `now`; counted in its budgets here
    /// unless the caller `counted` it.
    #[inline(always)]
    pub(crate) fn new(dispatch: D, req: Req, start: Instant, now: Instant, counted: bool) -> Self {
        let mut drive = std::mem::MaybeUninit::<Self>::uninit();
        // SAFETY: the place is writable and aligned, and `init` initializes
        // every field of it.
        unsafe {
            Self::init(drive.as_mut_ptr(), dispatch, req, start, now, counted);
            drive.assume_init()
        }
    }

    /// Writes at `this` the drive [`new`](Self::new) would return, field
    /// by field: a driver is large (an attempt, the machine's place), and
    /// made on the stack it would be copied whole into its box.
    ///
    /// # Safety
    ///
    /// `this` must be valid for writes and aligned; on return the drive
    /// there is fully initialized (and not yet pinned). The call is
    /// counted in its budgets here unless the caller `counted` it.
    #[inline(always)]
    pub(crate) unsafe fn init(
        this: *mut Self,
        dispatch: D,
        req: Req,
        start: Instant,
        now: Instant,
        counted: bool,
    ) {
        use std::ptr::addr_of_mut;
        if !counted {
            Call::deposit(&dispatch.rules(), start);
        }
        // SAFETY: the caller gives a writable, aligned place; every field
        // is written once.
        unsafe {
            addr_of_mut!((*this).dispatch).write(dispatch);
            addr_of_mut!((*this).first).write(Place::empty());
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
                    match dispatch.send(&Tried::NONE, &send, req, *this.now, first.as_mut()) {
                        Ok(endpoint) => {
                            dispatch.on_sent(AttemptKind::First);
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
                let Poll::Ready(Finished {
                    at,
                    elapsed,
                    result: Some(result),
                    ..
                }) = poll
                else {
                    unreachable!()
                };
                // The answer is the output as it is: built once, where the
                // caller reads it.
                let output = Poll::Ready(result);
                first.as_mut().clear();
                let ending = Call::first_succeeded(&rules, elapsed, at);
                dispatch.on_finish(&ending, at, quick.then_some(elapsed));
                if let Poll::Ready(result) = &output {
                    dispatch.on_result(&ending, at, Some(elapsed), result);
                }
                return output;
            }
            if poll.is_pending() && !Call::first_may_time_out(&rules, replayable) {
                // Nothing is due before it ends: wait for its end without
                // the machine.
                return Poll::Pending;
            }
            *this.quick = Quick::Off;
            let call = Call::after_first(&rules, start, *this.now, Ok(endpoint), replayable);
            machine.set(Some(Machine::new(call)));
            match poll {
                Poll::Ready(out) => {
                    first.as_mut().clear();
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
