//! The one async driver of the call machine ([`super::call::Call`]): it
//! sends the attempts the machine asks for through a [`Dispatch`], feeds
//! their ends back, sleeps until the machine's next timer and answers with
//! the machine's result. The channel's resilient path, `RetryLayer` and
//! `HedgeLayer` are this driver with different dispatches.
//!
//! It allocates nothing unless a hedge is sent (hedges go into a
//! `FuturesUnordered`), arms its timer only when it is about to wait, and
//! reads the clock only when its timer fired: every other decision uses the
//! time at which the last attempt ended.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::stream::{FuturesUnordered, StreamExt};
use pin_project::pin_project;
use tokio::time::Sleep;

use super::call::{Action, AttemptKind, Call, Ended, NotSent, Refused, Rules, SendAttempt};
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

/// Where a driven call's attempts go, and what it reports.
pub(crate) trait Dispatch<Req> {
    /// The answer type.
    type Response;
    /// One attempt in flight: it enforces its own cut.
    type Attempt: Future<Output = Finished<Self::Response>>;

    /// The policies, read afresh for each decision.
    fn rules(&self) -> Rules<'_>;

    /// Starts attempt `send` with `req`; returns it with the index of the
    /// endpoint it went to (for the call's tried set), or why it could not
    /// be sent (the request is dropped).
    fn send(
        &mut self,
        call: &Call,
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

    /// Notes the end of the call at `now` (metrics: see
    /// [`Call::answered_by`] and [`Call::last_outcome`]).
    fn on_finish(&self, call: &Call, now: Instant);
}

/// A call driven to its end (see the [module docs](self)).
#[pin_project]
pub(crate) struct Drive<D: Dispatch<Req>, Req> {
    call: Call,
    dispatch: D,
    #[pin]
    first: Option<D::Attempt>,
    hedges: Option<FuturesUnordered<D::Attempt>>,
    #[pin]
    timer: Option<Sleep>,
    /// What the timer is armed for.
    timer_at: Option<Instant>,
    template: Option<Req>,
    kept: Option<Result<D::Response, Error>>,
    /// The latest time the driver knows.
    now: Instant,
}

impl<D: Dispatch<Req>, Req> Drive<D, Req> {
    /// A call of `req` through `dispatch`, started at `start` (its deadline
    /// runs from there) and driven from `now`.
    pub(crate) fn new(dispatch: D, req: Req, start: Instant, now: Instant) -> Self {
        let call = Call::new(&dispatch.rules(), start);
        Drive {
            call,
            dispatch,
            first: None,
            hedges: None,
            timer: None,
            timer_at: None,
            template: Some(req),
            kept: None,
            now,
        }
    }

    /// The machine (for a future's `Debug`).
    pub(crate) fn call(&self) -> &Call {
        &self.call
    }
}

impl<D: Dispatch<Req>, Req> Future for Drive<D, Req> {
    type Output = Result<D::Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            // Feed every ended attempt to the machine.
            if let Some(attempt) = this.first.as_mut().as_pin_mut()
                && let Poll::Ready(out) = attempt.poll(cx)
            {
                this.first.set(None);
                feed(this.call, this.dispatch, this.kept, this.now, out);
            }
            if let Some(set) = this.hedges.as_mut() {
                while let Poll::Ready(Some(out)) = set.poll_next_unpin(cx) {
                    feed(this.call, this.dispatch, this.kept, this.now, out);
                }
            }
            // Do what the machine asks until it waits.
            let mut sent = false;
            loop {
                let action = this.call.poll(*this.now, &this.dispatch.rules());
                match action {
                    Action::Send(send) => {
                        let Some(req) = request(this.call, this.dispatch, this.template, &send)
                        else {
                            this.call.on_not_sent(send.number, NotSent::NotReplayable);
                            continue;
                        };
                        match this.dispatch.send(this.call, &send, req, *this.now) {
                            Ok((attempt, endpoint)) => {
                                this.call.on_sent(send.number, endpoint);
                                this.dispatch.on_sent(send.kind);
                                if send.kind == AttemptKind::Hedge {
                                    this.hedges
                                        .get_or_insert_with(FuturesUnordered::new)
                                        .push(attempt);
                                } else {
                                    this.first.set(Some(attempt));
                                }
                                sent = true;
                            }
                            Err(why) => this.call.on_not_sent(send.number, why),
                        }
                    }
                    Action::Refused(which) => this.dispatch.on_refused(which),
                    Action::Wait => break,
                    Action::Finish(finish) => {
                        // Every attempt still pending loses: dropped, which
                        // cancels it.
                        this.first.set(None);
                        *this.hedges = None;
                        let dispatch = &*this.dispatch;
                        dispatch.on_finish(this.call, *this.now);
                        let result = this
                            .call
                            .result(finish, this.kept.take(), || dispatch.no_endpoint());
                        return Poll::Ready(result);
                    }
                }
            }
            if sent {
                // Poll the new attempts once, so that they can wake us.
                continue;
            }
            let Some(at) = this.call.next_timer() else {
                return Poll::Pending;
            };
            if at <= *this.now {
                continue;
            }
            if *this.timer_at != Some(at) {
                match this.timer.as_mut().as_pin_mut() {
                    Some(timer) => timer.reset(at.into()),
                    None => this.timer.set(Some(tokio::time::sleep_until(at.into()))),
                }
                *this.timer_at = Some(at);
            }
            let Some(timer) = this.timer.as_mut().as_pin_mut() else {
                return Poll::Pending;
            };
            if timer.poll(cx).is_pending() {
                return Poll::Pending;
            }
            *this.timer_at = None;
            *this.now = crate::clock::now().max(at);
        }
    }
}

/// Hands one ended attempt to the machine and keeps its answer.
fn feed<D: Dispatch<Req>, Req>(
    call: &mut Call,
    dispatch: &D,
    kept: &mut Option<Result<D::Response, Error>>,
    now: &mut Instant,
    out: Finished<D::Response>,
) {
    *now = (*now).max(out.at);
    if let Some(result) = out.result {
        *kept = Some(result);
    }
    let rules = dispatch.rules();
    if matches!(out.ended, Ended::Answered(o) if o.is_success()) {
        // A success ends the call: no random pause is drawn, so the thread
        // generator is not needed.
        call.on_end(out.number, out.ended, *now, &rules, &mut Rng::seeded(0));
    } else {
        with_thread_rng(|rng| call.on_end(out.number, out.ended, *now, &rules, rng));
    }
}

/// The request for `send`: a copy while another attempt may follow, else
/// the original. `None` for a hedge whose request cannot be copied.
fn request<D: Dispatch<Req>, Req>(
    call: &mut Call,
    dispatch: &D,
    template: &mut Option<Req>,
    send: &SendAttempt,
) -> Option<Req> {
    let original = template.take()?;
    if send.last {
        return Some(original);
    }
    match dispatch.replay(&original) {
        Some(copy) => {
            *template = Some(original);
            Some(copy)
        }
        None if send.kind == AttemptKind::Hedge => {
            *template = Some(original);
            None
        }
        None => {
            // Sent as it is: nothing can follow it.
            call.on_unreplayable();
            Some(original)
        }
    }
}
