//! The longest durations the settings accept (`Duration::MAX`) are valid
//! and must not overflow `Instant` on the call path.

use std::time::{Duration, Instant};

use tower::{Layer, ServiceExt};

use super::{Count, flaky};
use crate::classify::Outcome;
use crate::policy::breaker::{BreakerSettings, BreakerState, CircuitBreaker};
use crate::policy::hedge::{HedgeDelay, HedgeSettings};
use crate::policy::retry::RetrySettings;
use crate::policy::{HedgeLayer, RetryLayer, TimeoutLayer};

#[tokio::test(start_paused = true)]
async fn endless_timeouts_and_deadlines_let_calls_through() {
    let calls = Count::default();
    for layer in [
        TimeoutLayer::attempt(Duration::MAX).unwrap(),
        TimeoutLayer::deadline(Duration::MAX).unwrap(),
    ] {
        assert_eq!(layer.layer(flaky(0, &calls)).oneshot(1).await.unwrap(), 1);
    }
    let retry = RetrySettings::default()
        .with_deadline(Duration::MAX)
        .with_attempt_timeout(Duration::MAX);
    let layer = RetryLayer::new(retry).unwrap();
    let retried = Count::default();
    assert_eq!(layer.layer(flaky(1, &retried)).oneshot(2).await.unwrap(), 2);
    assert_eq!(retried.get(), 2, "the failure was retried");
    let hedge = HedgeSettings::default().with_delay(HedgeDelay::Fixed(Duration::MAX));
    let layer = HedgeLayer::new(hedge).unwrap();
    assert_eq!(layer.layer(flaky(0, &calls)).oneshot(3).await.unwrap(), 3);
    assert_eq!(calls.get(), 3);
}

#[test]
fn endless_open_time_holds_the_breaker_open() {
    let settings = BreakerSettings::default()
        .with_consecutive_failures(Some(1))
        .with_open_time(Duration::MAX, 2.0, Duration::MAX);
    let breaker = CircuitBreaker::new(settings).unwrap();
    let now = Instant::now();
    let a = breaker.try_acquire(now).unwrap();
    let failed = Outcome::Failure { retryable: true };
    breaker.record(a, failed, Duration::ZERO, now);
    assert_eq!(breaker.state(), BreakerState::Open);
    assert!(
        breaker
            .try_acquire(now + Duration::from_secs(3600))
            .is_none()
    );
}
