//! Timeouts: a limit on each attempt, and a deadline over the whole call.
//!
//! - The **attempt timeout** bounds one try on one endpoint; when it fires
//!   the attempt fails with [`Error::AttemptTimeout`], which the default
//!   classifier calls retryable.
//! - The **deadline** bounds the whole call: every attempt, every backoff
//!   pause and every hedge. When it passes the call ends with
//!   [`Error::DeadlineExceeded`], carrying the last attempt's error if there
//!   was one, and no further attempt is started.
//!
//! Neither is set by default. [`Deadline`] is the decision core: it answers
//! "how long is left" and "does an attempt after this pause still fit" for a
//! given `now`. [`TimeoutLayer`] is the standalone tower layer, in either
//! flavour; an attempt's effective limit inside a retry loop is the smaller
//! of the attempt timeout and what is left of the deadline
//! ([`attempt_limit`]).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use towline::policy::timeout::Deadline;
//!
//! let start = Instant::now();
//! let deadline = Deadline::new(start, Duration::from_millis(100));
//! let later = start + Duration::from_millis(70);
//! assert_eq!(deadline.remaining(later), Duration::from_millis(30));
//! // A 20 ms pause followed by an attempt still fits, a 30 ms one does not.
//! assert!(deadline.fits(later, Duration::from_millis(20), Duration::ZERO));
//! assert!(!deadline.fits(later, Duration::from_millis(30), Duration::ZERO));
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use pin_project::pin_project;
use tokio::time::Sleep;
use tower::{Layer, Service};

use super::into_error;
use crate::error::{BoxError, BuildError, Error};

/// Refuses a zero duration for `setting`.
pub(crate) fn positive(setting: &'static str, d: Duration) -> Result<Duration, BuildError> {
    if d.is_zero() {
        Err(BuildError::new(setting, "must be greater than zero"))
    } else {
        Ok(d)
    }
}

/// The overall deadline of one call: a start and a length.
///
/// The instant it passes is computed when asked for: a call that ends
/// before it waits never needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    start: Instant,
    length: Duration,
}

impl Deadline {
    /// A deadline `length` after `start`.
    #[inline]
    pub fn new(start: Instant, length: Duration) -> Self {
        Deadline { start, length }
    }

    /// When the deadline started running.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// The instant the deadline passes.
    pub fn at(&self) -> Instant {
        super::later(self.start, self.length)
    }

    /// The deadline's length as configured.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// Time left at `now` (zero once passed).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.at().saturating_duration_since(now)
    }

    /// True once `now` has reached the deadline.
    #[inline]
    pub fn is_expired(&self, now: Instant) -> bool {
        // At its start (a call's first round) no addition is needed.
        if now <= self.start && !self.length.is_zero() {
            return false;
        }
        now >= self.at()
    }

    /// True when an attempt started after waiting `pause` from `now` would
    /// still have more than `min_attempt` before the deadline.
    pub fn fits(&self, now: Instant, pause: Duration, min_attempt: Duration) -> bool {
        self.remaining(now) > pause.saturating_add(min_attempt)
    }

    /// The error for this deadline, carrying the last attempt's error.
    pub fn error(&self, last: Option<Error>) -> Error {
        Error::DeadlineExceeded {
            deadline: self.length,
            last: last.map(Box::new),
        }
    }
}

/// Which limit bounds an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The per-attempt timeout.
    Attempt(Duration),
    /// What was left of the deadline.
    Deadline(Deadline),
}

impl Limit {
    /// The error when this limit is reached.
    pub fn error(&self) -> Error {
        match self {
            Limit::Attempt(d) => Error::AttemptTimeout(*d),
            Limit::Deadline(d) => d.error(None),
        }
    }
}

/// The time an attempt starting at `now` may take, and which limit that is:
/// the attempt timeout capped by what is left of the deadline. `None` when
/// neither is set.
pub fn attempt_limit(
    attempt_timeout: Option<Duration>,
    deadline: Option<&Deadline>,
    now: Instant,
) -> Option<(Duration, Limit)> {
    let by_deadline = deadline.map(|d| (d.remaining(now), Limit::Deadline(*d)));
    match (attempt_timeout, by_deadline) {
        (Some(t), Some((left, limit))) if left < t => Some((left, limit)),
        (Some(t), _) => Some((t, Limit::Attempt(t))),
        (None, by_deadline) => by_deadline,
    }
}

/// A tower layer bounding each call's time: as a per-attempt timeout
/// ([`TimeoutLayer::attempt`], error [`Error::AttemptTimeout`]) or as an
/// overall deadline ([`TimeoutLayer::deadline`], error
/// [`Error::DeadlineExceeded`]). Put the attempt flavour inside a
/// `RetryLayer` and the deadline flavour outside it (or use the retry
/// settings' own deadline, which also stops retries that cannot fit).
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    length: Duration,
    is_deadline: bool,
}

impl TimeoutLayer {
    /// A per-attempt timeout. Zero is refused.
    pub fn attempt(timeout: Duration) -> Result<Self, BuildError> {
        Ok(TimeoutLayer {
            length: positive("attempt_timeout", timeout)?,
            is_deadline: false,
        })
    }

    /// An overall deadline. Zero is refused.
    pub fn deadline(deadline: Duration) -> Result<Self, BuildError> {
        Ok(TimeoutLayer {
            length: positive("deadline", deadline)?,
            is_deadline: true,
        })
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            layer: *self,
        }
    }
}

/// The service made by [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    layer: TimeoutLayer,
}

impl<S, Req> Service<Req> for Timeout<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(into_error)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let start = super::now();
        let limit = if self.layer.is_deadline {
            Limit::Deadline(Deadline::new(start, self.layer.length))
        } else {
            Limit::Attempt(self.layer.length)
        };
        TimeoutFuture {
            inner: Expiring::new(self.inner.call(req), super::later(start, self.layer.length)),
            limit,
        }
    }
}

/// A future bounded by an instant. The timer is only made when the future
/// is first found pending, so an answer that is ready at once never touches
/// the timer wheel. The answer wins a tie with the timer.
#[pin_project]
#[derive(Debug)]
pub(crate) struct Expiring<F> {
    #[pin]
    inner: F,
    #[pin]
    sleep: Option<Sleep>,
    at: Instant,
}

impl<F> Expiring<F> {
    pub(crate) fn new(inner: F, at: Instant) -> Self {
        Expiring {
            inner,
            sleep: None,
            at,
        }
    }
}

impl<F: Future> Future for Expiring<F> {
    /// `Err(())` when the instant passed first.
    type Output = Result<F::Output, ()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if this.sleep.is_none() {
            this.sleep
                .set(Some(tokio::time::sleep_until((*this.at).into())));
        }
        match this.sleep.as_pin_mut() {
            Some(sleep) => sleep.poll(cx).map(Err),
            None => Poll::Pending,
        }
    }
}

/// The future of a [`Timeout`] call.
#[pin_project]
#[derive(Debug)]
pub struct TimeoutFuture<F> {
    #[pin]
    inner: Expiring<F>,
    limit: Limit,
}

impl<F, T, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match ready!(this.inner.poll(cx)) {
            Ok(r) => Poll::Ready(r.map_err(into_error)),
            Err(()) => Poll::Ready(Err(this.limit.error())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn slow(after: Duration) -> impl Service<u32, Response = u32, Error = BoxError> + Clone {
        tower::service_fn(move |x: u32| async move {
            tokio::time::sleep(after).await;
            Ok::<_, BoxError>(x)
        })
    }

    #[tokio::test(start_paused = true)]
    async fn attempt_timeout_fires_exactly_at_its_setting() {
        let t = Duration::from_millis(250);
        let layer = TimeoutLayer::attempt(t).unwrap();
        let start = tokio::time::Instant::now();
        let err = layer
            .layer(slow(Duration::from_secs(10)))
            .oneshot(1)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::AttemptTimeout(d) if d == t), "{err:?}");
        assert_eq!(start.elapsed(), t);
        // An answer one millisecond (the timer's resolution) before the
        // limit gets through.
        let ok = layer
            .layer(slow(t - Duration::from_millis(1)))
            .oneshot(7)
            .await;
        assert_eq!(ok.unwrap(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_flavour_reports_deadline() {
        let layer = TimeoutLayer::deadline(Duration::from_millis(40)).unwrap();
        let start = tokio::time::Instant::now();
        let err = layer
            .layer(slow(Duration::from_secs(1)))
            .oneshot(1)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::DeadlineExceeded { deadline, last: None } if deadline == Duration::from_millis(40))
        );
        assert_eq!(start.elapsed(), Duration::from_millis(40));
    }

    #[test]
    fn zero_durations_are_refused() {
        let e = TimeoutLayer::attempt(Duration::ZERO).unwrap_err();
        assert_eq!(e.setting(), "attempt_timeout");
        assert!(e.to_string().contains("greater than zero"));
        assert_eq!(
            TimeoutLayer::deadline(Duration::ZERO)
                .unwrap_err()
                .setting(),
            "deadline"
        );
    }

    #[test]
    fn attempt_limit_is_the_smaller_of_timeout_and_deadline() {
        let t0 = Instant::now();
        let d = Deadline::new(t0, Duration::from_millis(100));
        let ms = Duration::from_millis;
        assert_eq!(attempt_limit(None, None, t0), None);
        assert_eq!(
            attempt_limit(Some(ms(30)), Some(&d), t0),
            Some((ms(30), Limit::Attempt(ms(30))))
        );
        let late = t0 + ms(90);
        assert_eq!(
            attempt_limit(Some(ms(30)), Some(&d), late),
            Some((ms(10), Limit::Deadline(d)))
        );
        assert_eq!(
            attempt_limit(None, Some(&d), late),
            Some((ms(10), Limit::Deadline(d)))
        );
        assert!(d.is_expired(t0 + ms(100)));
        assert_eq!(d.remaining(t0 + ms(200)), Duration::ZERO);
    }
}
