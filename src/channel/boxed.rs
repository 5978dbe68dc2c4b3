//! How a call is boxed: the call future and its span in one allocation,
//! written in place, polled inside the span. Shared by the bare and the
//! resilient call paths and by the engine that starts them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;
use tracing::Span;

use crate::Error;

/// A call in progress, polled inside its call span, which it is handed
/// (a call need not keep its own copy of the span).
pub(crate) trait CallFuture: Send {
    /// The call's response.
    type Response;

    /// Polls the call; `span` is the call's span, entered.
    fn poll_in(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        span: &Span,
    ) -> Poll<Result<Self::Response, Error>>;
}

/// A call future that keeps what it needs of the span itself.
#[pin_project]
pub(crate) struct Plain<F>(#[pin] pub(crate) F);

impl<F, Resp> CallFuture for Plain<F>
where
    F: Future<Output = Result<Resp, Error>> + Send,
{
    type Response = Resp;

    fn poll_in(self: Pin<&mut Self>, cx: &mut Context<'_>, _: &Span) -> Poll<Result<Resp, Error>> {
        self.project().0.poll(cx)
    }
}

/// A call and its span, as boxed: the call runs inside the span.
#[pin_project]
pub(crate) struct Spanned<F> {
    /// Dropped first: a call dropped unfinished records its attempts'
    /// cancellation in their spans, children of the call span.
    #[pin]
    call: F,
    span: Span,
}

impl<F: CallFuture> Future for Spanned<F> {
    type Output = Result<F::Response, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        this.call.poll_in(cx, this.span)
    }
}

/// A boxed call (the one allocation of a call).
pub(crate) type Boxed<T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send>>;

/// Boxes `call` in `span`.
pub(crate) fn boxed<F>(span: Span, call: F) -> Boxed<F::Response>
where
    F: CallFuture + 'static,
{
    Box::pin(Spanned { call, span })
}

/// Boxes in `span` the call that `init` writes, in place: a call made on
/// the stack would be copied whole into its box (with a library call above
/// 128 bytes).
///
/// # Safety
///
/// `init` must initialize the place it is given (it gets the span too).
pub(crate) unsafe fn boxed_in_place<F>(
    span: Span,
    init: impl FnOnce(*mut F, &Span),
) -> Boxed<F::Response>
where
    F: CallFuture + 'static,
{
    let mut boxed = Box::<Spanned<F>>::new_uninit();
    let place = boxed.as_mut_ptr();
    // SAFETY: both fields of the box are written before it is assumed
    // initialized (the call by `init`, as the caller promises); `span`
    // is written first and only read while `call` is written.
    unsafe {
        std::ptr::addr_of_mut!((*place).span).write(span);
        init(std::ptr::addr_of_mut!((*place).call), &(*place).span);
        Box::into_pin(boxed.assume_init())
    }
}
