//! Resilience policies: timeout and deadline, retry, hedging, circuit breaker.
//!
//! Each policy is split in two:
//!
//! - a **decision core**: plain synchronous code with no I/O, no tokio and no
//!   wall clock. It is given the time (`now: Instant`) or a duration and
//!   returns a decision ([`retry::RetryState::next`],
//!   [`hedge::HedgeSettings::delay_now`], [`breaker::BreakerCore`],
//!   [`budget::Budget`], [`latency::LatencyHistogram`], [`backoff::Backoff`]).
//!   The whole orchestration of one call (rounds, hedges, time limits, the
//!   final result) is one more such core, [`call::Call`], which the channel
//!   and the retry and hedging layers all drive. These are what the unit
//!   tests drive directly;
//! - a **thin async shell**: a tower [`Layer`](tower::Layer), its
//!   [`Service`](tower::Service) and a named future, which only wire the core
//!   to tokio's clock and to calls: [`TimeoutLayer`], [`RetryLayer`],
//!   [`HedgeLayer`], [`CircuitBreakerLayer`]. They work around any service in
//!   a `tower::ServiceBuilder`, and the channel uses the same cores.
//!
//! Every layer's service returns [`crate::Error`]. An inner error that is
//! already a [`crate::Error`] (for example from a `TimeoutLayer` below a
//! `RetryLayer`) passes through unchanged; any other is wrapped in
//! [`Error::Inner`].
//!
//! Settings are checked when a layer is built: an invalid value is an
//! `Err(`[`BuildError`](crate::BuildError)`)` naming the setting, never a
//! panic. Settings that can change at runtime (retry, hedge, budget ratios,
//! breaker thresholds) are swapped atomically through a handle, and the
//! state they govern (breaker state, budget balance, latency history) is kept.
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use towline::policy::{RetryLayer, TimeoutLayer, retry::RetrySettings};
//!
//! let retry = RetryLayer::new(RetrySettings::default().with_max_attempts(4)).unwrap();
//! let timeout = TimeoutLayer::attempt(Duration::from_millis(200)).unwrap();
//! let _svc = ServiceBuilder::new()
//!     .layer(retry)
//!     .layer(timeout)
//!     .service(tower::service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x + 1) }));
//! ```
//!
//! # Metrics
//!
//! Recorded through the `metrics` facade; handles are registered once when a
//! layer or breaker is built (install the recorder before building), with
//! descriptions and units ([`crate::metrics::describe`]).
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `towline_attempts_total` | counter | | attempts sent (first tries, retries and hedges) |
//! | `towline_retries_total` | counter | | retries sent |
//! | `towline_hedges_sent_total` | counter | | extra (hedged) attempts sent |
//! | `towline_hedges_won_total` | counter | | calls answered by a hedged attempt |
//! | `towline_budget_exhausted_total` | counter | `budget` = `retry` or `hedge` | a retry or hedge refused by its budget |
//! | `towline_breaker_state` | gauge | `breaker` (a channel's: `channel`, `endpoint`) | breaker state: 0 closed, 1 half-open, 2 open |

pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod call;
pub(crate) mod drive;
pub mod hedge;
mod hedge_layer;
pub mod latency;
pub mod limit;
pub mod metrics;
pub mod replay;
pub mod retry;
mod retry_layer;
mod shell;
#[cfg(test)]
pub(crate) mod tests;
pub mod throttle;
pub mod timeout;

pub use breaker::{CircuitBreaker, CircuitBreakerLayer};
pub use hedge_layer::{Hedge, HedgeFuture, HedgeHandle, HedgeLayer};
pub use retry_layer::{Retry, RetryFuture, RetryHandle, RetryLayer};
pub use timeout::{Timeout, TimeoutFuture, TimeoutLayer};

use crate::error::{BoxError, Error};

/// Converts an inner service error into a towline [`Error`], unwrapping one
/// that already is.
pub(crate) fn into_error<E: Into<BoxError>>(e: E) -> Error {
    match e.into().downcast::<Error>() {
        Ok(e) => *e,
        Err(other) => Error::Inner(other),
    }
}

pub(crate) use crate::clock::{later, now};
