//! Replayable request bodies: keep what was sent, so it can be sent again.
//! The idea and its limits are in [`ReplayBody`]'s documentation.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use bytes::{Buf, Bytes};
use http::{HeaderMap, Request};
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;

use crate::BoxError;
use crate::policy::replay::Replay;

/// The default replay buffer limit: 64 KiB.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// Marks a response whose request cannot be sent again: its body outgrew
/// the replay buffer. [`StatusClassify`](super::StatusClassify) and
/// [`GrpcClassify`](super::grpc::GrpcClassify) turn a retryable outcome
/// into a final failure when they see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotReplayable;

/// A request body could not be sent (again): it outgrew its replay buffer.
/// The classifiers never retry it. The source, when there is one, is the
/// transport error of the attempt that sent the body.
#[derive(Debug)]
pub struct ReplayError {
    source: Option<BoxError>,
}

impl ReplayError {
    pub(crate) fn new(source: Option<BoxError>) -> Self {
        ReplayError { source }
    }
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request body outgrew its replay buffer and cannot be sent again")
    }
}

impl std::error::Error for ReplayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Who may still send the body: everyone until it overflows, then only the
/// copy that read past the limit. Shared with the request's [`ReplayTicket`].
#[derive(Debug, Default)]
struct Overflow {
    /// 0 while the buffer holds everything read; then the id of the copy
    /// that may go on (ids start at 1).
    leader: AtomicU64,
}

/// In a replayable request's extensions: lets the endpoint service check,
/// without knowing the body type, whether this copy can be sent whole and
/// whether the request could be sent again.
#[derive(Debug, Clone)]
pub(crate) struct ReplayTicket {
    overflow: Arc<Overflow>,
    id: u64,
}

impl ReplayTicket {
    /// The copy can still send its whole body.
    pub(crate) fn can_send(&self) -> bool {
        let leader = self.overflow.leader.load(Ordering::Acquire);
        leader == 0 || leader == self.id
    }

    /// The body outgrew the buffer: no copy can be sent again.
    pub(crate) fn overflowed(&self) -> bool {
        self.overflow.leader.load(Ordering::Acquire) != 0
    }
}

/// How the original body has ended, as far as any copy has read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Open,
    Ended,
    Failed,
}

struct State<B> {
    /// The original body, until it ends or fails.
    body: Option<Pin<Box<B>>>,
    /// Every data frame read so far, while they fit the limit.
    chunks: Vec<Bytes>,
    buffered: usize,
    trailers: Option<HeaderMap>,
    end: End,
}

/// Wakes every copy waiting for the original body: the body keeps only the
/// waker it was last polled with, so it is given this one.
#[derive(Default)]
struct WakeAll {
    waiting: Mutex<Vec<Waker>>,
}

impl WakeAll {
    fn register(&self, waker: &Waker) {
        let mut waiting = self.waiting.lock();
        if !waiting.iter().any(|w| w.will_wake(waker)) {
            waiting.push(waker.clone());
        }
    }
}

impl Wake for WakeAll {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let waiting = std::mem::take(&mut *self.waiting.lock());
        for w in waiting {
            w.wake();
        }
    }
}

struct Shared<B> {
    state: Mutex<State<B>>,
    overflow: Arc<Overflow>,
    wake_all: Arc<WakeAll>,
    waker: Waker,
    next_id: AtomicU64,
    limit: usize,
    hint: SizeHint,
}

/// A request body that every copy of its request can send.
///
/// A retry or a hedge sends a request more than once, but a streaming body
/// can be read only once. `ReplayBody` wraps such a body; every copy of the
/// request shares it. The first copy to need the next piece of data reads
/// it from the original body and keeps it in a buffer; the others replay the
/// buffer and then carry on from the original body where the buffer ends.
/// Copies may run at the same time (a hedge), or one after the other (a
/// retry, even while the first is still sending).
///
/// The buffer holds at most a limit (default [`DEFAULT_REPLAY_LIMIT`],
/// 64 KiB). Once a body outgrows it, the buffer is dropped and only the copy
/// that read past the limit can go on: the request is not replayable any
/// more ([`BodyReplay`] makes no copy, an
/// [`EndpointService`](super::EndpointService) marks its response
/// [`NotReplayable`] so the classifiers do not retry it, and the
/// `towline_http_unreplayable_bodies_total` counter goes up). A body whose
/// size hint already says it is larger is never buffered, and is counted
/// too.
///
/// Make one with [`replayable`] (or the [`Replayable`] service), which also
/// lets the endpoint service check, before sending a copy, that it can still
/// be sent whole. Data frames are [`Bytes`] (copied out of the original
/// body's buffers only when they are not `Bytes` already).
///
/// ```
/// use towline::http::{BodyReplay, replayable};
/// use towline::policy::replay::Replay;
///
/// let request = replayable(http::Request::post("/upload").body(String::from("data")).unwrap());
/// let copy = BodyReplay.replay(&request).expect("a small body can be replayed");
/// assert_eq!(copy.uri(), "/upload");
/// ```
pub struct ReplayBody<B> {
    shared: Arc<Shared<B>>,
    id: u64,
    /// The next buffered chunk this copy sends.
    next: usize,
    done: bool,
}

impl<B> ReplayBody<B> {
    fn new(body: B, limit: usize) -> Self
    where
        B: Body,
    {
        let hint = body.size_hint();
        let wake_all = Arc::new(WakeAll::default());
        let overflow = Arc::new(Overflow::default());
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                body: Some(Box::pin(body)),
                chunks: Vec::new(),
                buffered: 0,
                trailers: None,
                end: End::Open,
            }),
            waker: Waker::from(wake_all.clone()),
            wake_all,
            overflow,
            next_id: AtomicU64::new(2),
            limit,
            hint,
        });
        let body = ReplayBody {
            shared,
            id: 1,
            next: 0,
            done: false,
        };
        if usize::try_from(body.shared.hint.lower()).map_or(true, |n| n > limit) {
            // Known to be too large: the original alone will send it.
            body.overflow_to(body.id);
        }
        body
    }

    fn overflow_to(&self, leader: u64) {
        let won = self.shared.overflow.leader.compare_exchange(
            0,
            leader,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if won.is_ok() {
            metrics::counter!(super::UNREPLAYABLE_BODIES).increment(1);
        }
    }

    /// A copy that sends the whole body from the start, or `None` when the
    /// body outgrew the buffer.
    pub fn try_clone(&self) -> Option<Self> {
        if self.shared.overflow.leader.load(Ordering::Acquire) != 0 {
            return None;
        }
        Some(ReplayBody {
            shared: self.shared.clone(),
            id: self.shared.next_id.fetch_add(1, Ordering::Relaxed),
            next: 0,
            done: false,
        })
    }

    /// The buffer limit this body was made with.
    pub fn limit(&self) -> usize {
        self.shared.limit
    }

    fn ticket(&self) -> ReplayTicket {
        ReplayTicket {
            overflow: self.shared.overflow.clone(),
            id: self.id,
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBody")
            .field("copy", &self.id)
            .field("limit", &self.shared.limit)
            .finish_non_exhaustive()
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let shared = &*this.shared;
        let mut state = shared.state.lock();
        let leader = shared.overflow.leader.load(Ordering::Acquire);
        if leader != 0 && leader != this.id {
            this.done = true;
            return Poll::Ready(Some(Err(ReplayError::new(None).into())));
        }
        if leader == 0 && this.next < state.chunks.len() {
            let chunk = state.chunks[this.next].clone();
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        // At the front of what has been read: the original body is next.
        match state.end {
            End::Open => {}
            End::Ended => {
                this.done = true;
                return Poll::Ready(state.trailers.clone().map(|t| Ok(Frame::trailers(t))));
            }
            End::Failed => {
                // The body's own error went to the copy that read it.
                this.done = true;
                return Poll::Ready(Some(Err("the request body failed".into())));
            }
        }
        // Registered before polling, so a wake-up racing the poll is kept.
        shared.wake_all.register(cx.waker());
        let mut all = Context::from_waker(&shared.waker);
        loop {
            let Some(body) = state.body.as_mut() else {
                this.done = true;
                return Poll::Ready(None);
            };
            let frame = match body.as_mut().poll_frame(&mut all) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    state.end = End::Ended;
                    state.body = None;
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    state.end = End::Failed;
                    state.body = None;
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let frame = match frame.into_data() {
                Ok(mut data) => {
                    let bytes = data.copy_to_bytes(data.remaining());
                    if shared.overflow.leader.load(Ordering::Acquire) == 0 {
                        if state.buffered + bytes.len() > shared.limit {
                            state.chunks = Vec::new();
                            this.overflow_to(this.id);
                        } else {
                            state.buffered += bytes.len();
                            state.chunks.push(bytes.clone());
                            this.next += 1;
                        }
                    }
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Err(frame) => frame,
            };
            if let Ok(trailers) = frame.into_trailers() {
                state.trailers = Some(trailers.clone());
                state.end = End::Ended;
                state.body = None;
                this.done = true;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            // A kind of frame this version does not know: skip it.
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.done {
            return true;
        }
        let state = self.shared.state.lock();
        let leader = self.shared.overflow.leader.load(Ordering::Acquire);
        if leader != 0 && leader != self.id {
            // Its next poll is an error, not the end.
            return false;
        }
        if leader == 0 && self.next < state.chunks.len() {
            return false;
        }
        match (&state.body, state.end) {
            (Some(body), End::Open) => body.is_end_stream(),
            (_, End::Ended) => state.trailers.is_none(),
            _ => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.shared.hint
    }
}

/// Wraps the body of `req` in a [`ReplayBody`] with the default limit
/// (64 KiB), so that [`BodyReplay`] can copy the request.
pub fn replayable<B: Body>(req: Request<B>) -> Request<ReplayBody<B>> {
    replayable_with_limit(req, DEFAULT_REPLAY_LIMIT)
}

/// Wraps the body of `req` in a [`ReplayBody`] that buffers at most `limit`
/// bytes.
pub fn replayable_with_limit<B: Body>(req: Request<B>, limit: usize) -> Request<ReplayBody<B>> {
    let (mut parts, body) = req.into_parts();
    let body = ReplayBody::new(body, limit);
    parts.extensions.insert(body.ticket());
    Request::from_parts(parts, body)
}

/// Copies requests whose bodies are [`ReplayBody`]s: the
/// [`Replay`] for a channel of such requests (`.replayer(BodyReplay)`).
/// Method, URI, version, headers and extensions are cloned. A request whose
/// body outgrew the buffer is not copied, so it is sent once.
#[derive(Debug, Clone, Copy, Default)]
pub struct BodyReplay;

impl<B> Replay<Request<ReplayBody<B>>> for BodyReplay {
    fn replay(&self, req: &Request<ReplayBody<B>>) -> Option<Request<ReplayBody<B>>> {
        let body = req.body().try_clone()?;
        let ticket = body.ticket();
        let mut copy = Request::new(body);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        copy.extensions_mut().insert(ticket);
        Some(copy)
    }
}

mod service;

pub use service::{Replayable, ReplayableLayer};

#[cfg(test)]
mod tests;
