//! Where a driven call's attempts go ([`Dispatch`]: the channel's endpoints
//! or a layer's inner service), and the request each attempt carries.

use std::pin::Pin;
use std::time::{Duration, Instant};

use super::attempt::Attempt;
use super::place::Place;
use crate::error::Error;
use crate::policy::call::{AttemptKind, Ending, NotSent, Refused, Rules, SendAttempt, Tried};

/// Where a driven call's attempts go, and what it reports.
pub(crate) trait Dispatch<Req> {
    /// The answer type.
    type Response;
    /// One attempt in flight.
    type Attempt: Attempt<Response = Self::Response>;

    /// The policies, read afresh for each decision.
    fn rules(&self) -> Rules<'_>;

    /// Starts attempt `send` with `req`, avoiding the endpoints in `tried`
    /// while others can take it, and writes it into `place` (which it may
    /// empty); returns an identity of the endpoint it went to (for the
    /// call's tried set), or why it could not be sent (the request is
    /// dropped, `place` left empty or as it was).
    fn send(
        &self,
        tried: &Tried,
        send: &SendAttempt,
        req: Req,
        now: Instant,
        place: Pin<&mut Place<Self::Attempt>>,
    ) -> Result<Option<usize>, NotSent>;

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

/// The request for `send`: a copy while another attempt may follow, else
/// the original; with it, whether it could not be copied (so that nothing
/// can follow it). `None` for a hedge whose request cannot be copied.
pub(super) fn request<D: Dispatch<Req> + ?Sized, Req>(
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
