//! Retry: sending a failed request again, within limits.
//!
//! After each attempt, [`RetryState::next`] decides, in this order:
//!
//! 1. a success, or a failure the classifier calls not retryable, ends the
//!    call ([`Stop::Succeeded`], [`Stop::NotRetryable`]);
//! 2. a request that could not be copied was sent once ([`Stop::NotReplayable`]);
//! 3. after `max_attempts` attempts (the first one included) the call ends
//!    ([`Stop::AttemptsExhausted`]);
//! 4. the pause is the [`Backoff`] delay, or the server's retry-after from
//!    [`Outcome::Overloaded`] when that is longer (unless turned off);
//! 5. if the deadline cannot fit the pause plus `min_attempt_time`, the call
//!    ends now rather than start an attempt doomed to time out
//!    ([`Stop::DeadlineTooClose`]);
//! 6. the retry budget must grant a token ([`Stop::BudgetExhausted`]).
//!
//! Defaults ([`RetrySettings::default`]): 3 attempts, [`Backoff::default`]
//! (25 ms × 2 up to 1 s, full jitter), retry budget 20% + 10/s over 10 s,
//! retry-after honoured, no deadline, `min_attempt_time` zero.
//!
//! [`RetryLayer`](super::RetryLayer) is the standalone tower layer; the
//! channel runs the same state machine and also steers each retry to an
//! endpoint the call has not tried.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use towline::classify::Outcome;
//! use towline::policy::budget::Budget;
//! use towline::policy::retry::{RetryDecision, RetrySettings, RetryState, Stop};
//! use towline::rng::Rng;
//!
//! let settings = RetrySettings::default().with_max_attempts(2);
//! settings.validate().unwrap();
//! let now = Instant::now();
//! let budget = Budget::new(settings.budget(), now);
//! let mut rng = Rng::seeded(1);
//! let mut call = RetryState::new();
//! let failed = Outcome::Failure { retryable: true };
//! assert!(matches!(call.next(&settings, failed, true, now, None, &budget, &mut rng), RetryDecision::Retry { .. }));
//! assert_eq!(call.next(&settings, failed, true, now, None, &budget, &mut rng), RetryDecision::Stop(Stop::AttemptsExhausted));
//! ```

use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::budget::{Budget, BudgetSettings};
use super::timeout::{Deadline, positive};
use crate::classify::Outcome;
use crate::error::BuildError;
use crate::rng::Rng;

/// The most attempts a call may be allowed.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

/// Retry settings. Build with [`RetrySettings::default`] and the `with_`
/// methods; they are checked by [`RetrySettings::validate`] when given to a
/// layer, a channel builder or a tuning handle.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySettings {
    max_attempts: u32,
    backoff: Backoff,
    budget: BudgetSettings,
    honour_retry_after: bool,
    deadline: Option<Duration>,
    attempt_timeout: Option<Duration>,
    min_attempt_time: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_attempts: 3,
            backoff: Backoff::default(),
            budget: BudgetSettings::retry_default(),
            honour_retry_after: true,
            deadline: None,
            attempt_timeout: None,
            min_attempt_time: Duration::ZERO,
        }
    }
}

impl RetrySettings {
    /// Attempts per call, the first included (default 3; 1 turns retries
    /// off; 1 to 100).
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// The backoff between attempts (default [`Backoff::default`]).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The retry budget (default [`BudgetSettings::retry_default`]).
    pub fn with_budget(mut self, budget: BudgetSettings) -> Self {
        self.budget = budget;
        self
    }

    /// Whether a server's retry-after lengthens the pause (default true).
    pub fn with_honour_retry_after(mut self, honour: bool) -> Self {
        self.honour_retry_after = honour;
        self
    }

    /// An overall deadline covering all attempts and pauses (default none).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// A timeout on each attempt (default none). In a standalone
    /// [`RetryLayer`](super::RetryLayer) it bounds each attempt the way a
    /// [`TimeoutLayer`](super::TimeoutLayer) inside it would.
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// The least time an attempt must have before the deadline to be worth
    /// starting (default zero: any time left).
    pub fn with_min_attempt_time(mut self, min: Duration) -> Self {
        self.min_attempt_time = min;
        self
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), BuildError> {
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS_LIMIT {
            return Err(BuildError::new(
                "retry.max_attempts",
                format!(
                    "must be between 1 and {MAX_ATTEMPTS_LIMIT} (the first attempt counts), got {}",
                    self.max_attempts
                ),
            ));
        }
        self.backoff.validate()?;
        self.budget.validate()?;
        if let Some(d) = self.deadline {
            positive("retry.deadline", d)?;
        }
        if let Some(t) = self.attempt_timeout {
            positive("retry.attempt_timeout", t)?;
        }
        if let Some(d) = self.deadline
            && self.min_attempt_time >= d
        {
            return Err(BuildError::new(
                "retry.min_attempt_time",
                format!(
                    "must be shorter than the deadline ({d:?}), got {:?}",
                    self.min_attempt_time
                ),
            ));
        }
        Ok(())
    }

    /// Attempts per call, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The backoff.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The retry budget settings.
    pub fn budget(&self) -> &BudgetSettings {
        &self.budget
    }

    /// Whether a server's retry-after is honoured.
    pub fn honour_retry_after(&self) -> bool {
        self.honour_retry_after
    }

    /// The overall deadline, if any.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// The per-attempt timeout, if any.
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.attempt_timeout
    }

    /// The least time worth starting an attempt with.
    pub fn min_attempt_time(&self) -> Duration {
        self.min_attempt_time
    }
}

/// Why a call stops retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The attempt succeeded.
    Succeeded,
    /// The classifier called the failure not retryable.
    NotRetryable,
    /// The request could not be copied, so it was sent once.
    NotReplayable,
    /// `max_attempts` attempts were made.
    AttemptsExhausted,
    /// The pause plus the minimum attempt time does not fit the deadline.
    DeadlineTooClose,
    /// The retry budget had no token.
    BudgetExhausted,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Send another attempt after this pause.
    Retry {
        /// The pause before the next attempt.
        after: Duration,
    },
    /// End the call.
    Stop(Stop),
}

/// The retry state of one call.
#[derive(Debug, Clone, Default)]
pub struct RetryState {
    attempts: u32,
    previous_pause: Duration,
}

impl RetryState {
    /// A call before its first attempt has finished.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attempts finished so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Records a finished attempt with `outcome` and decides what follows.
    /// `replayable` says whether a copy for another attempt exists. Takes a
    /// budget token only when it answers [`RetryDecision::Retry`].
    #[allow(clippy::too_many_arguments)]
    pub fn next(
        &mut self,
        settings: &RetrySettings,
        outcome: Outcome,
        replayable: bool,
        now: Instant,
        deadline: Option<&Deadline>,
        budget: &Budget,
        rng: &mut Rng,
    ) -> RetryDecision {
        self.attempts += 1;
        let stop = RetryDecision::Stop;
        if outcome.is_success() {
            return stop(Stop::Succeeded);
        }
        if !outcome.is_retryable() {
            return stop(Stop::NotRetryable);
        }
        if !replayable {
            return stop(Stop::NotReplayable);
        }
        if self.attempts >= settings.max_attempts {
            return stop(Stop::AttemptsExhausted);
        }
        let mut pause = settings
            .backoff
            .delay(self.attempts - 1, self.previous_pause, rng);
        if let Outcome::Overloaded {
            retry_after: Some(wait),
        } = outcome
            && settings.honour_retry_after
        {
            pause = pause.max(wait);
        }
        if let Some(d) = deadline
            && !d.fits(now, pause, settings.min_attempt_time)
        {
            return stop(Stop::DeadlineTooClose);
        }
        if !budget.try_withdraw(now) {
            return stop(Stop::BudgetExhausted);
        }
        self.previous_pause = pause;
        RetryDecision::Retry { after: pause }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const FAIL: Outcome = Outcome::Failure { retryable: true };

    fn setup(s: &RetrySettings) -> (Instant, Budget, Rng) {
        let now = Instant::now();
        (now, Budget::new(s.budget(), now), Rng::seeded(5))
    }

    #[test]
    fn stops_in_the_documented_order() {
        let s = RetrySettings::default();
        let (now, budget, mut rng) = setup(&s);
        let mut call = RetryState::new();
        assert_eq!(
            call.next(&s, Outcome::Success, true, now, None, &budget, &mut rng),
            RetryDecision::Stop(Stop::Succeeded)
        );
        let mut call = RetryState::new();
        let fatal = Outcome::Failure { retryable: false };
        assert_eq!(
            call.next(&s, fatal, true, now, None, &budget, &mut rng),
            RetryDecision::Stop(Stop::NotRetryable)
        );
        let mut call = RetryState::new();
        assert_eq!(
            call.next(&s, FAIL, false, now, None, &budget, &mut rng),
            RetryDecision::Stop(Stop::NotReplayable)
        );
        let mut call = RetryState::new();
        assert!(matches!(
            call.next(&s, FAIL, true, now, None, &budget, &mut rng),
            RetryDecision::Retry { .. }
        ));
        assert!(matches!(
            call.next(&s, FAIL, true, now, None, &budget, &mut rng),
            RetryDecision::Retry { .. }
        ));
        assert_eq!(
            call.next(&s, FAIL, true, now, None, &budget, &mut rng),
            RetryDecision::Stop(Stop::AttemptsExhausted)
        );
        assert_eq!(call.attempts(), 3);
    }

    #[test]
    fn retry_after_lengthens_the_pause_unless_turned_off() {
        let s = RetrySettings::default();
        let (now, budget, mut rng) = setup(&s);
        let busy = Outcome::Overloaded {
            retry_after: Some(500 * MS),
        };
        let mut call = RetryState::new();
        assert_eq!(
            call.next(&s, busy, true, now, None, &budget, &mut rng),
            RetryDecision::Retry { after: 500 * MS }
        );
        let s = s.with_honour_retry_after(false);
        let mut call = RetryState::new();
        match call.next(&s, busy, true, now, None, &budget, &mut rng) {
            RetryDecision::Retry { after } => assert!(after <= 25 * MS),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn never_starts_an_attempt_the_deadline_cannot_fit() {
        let s = RetrySettings::default().with_min_attempt_time(10 * MS);
        let (now, budget, mut rng) = setup(&s);
        let deadline = Deadline::new(now, 100 * MS);
        let busy = Outcome::Overloaded {
            retry_after: Some(85 * MS),
        };
        // 85 ms pause + 10 ms attempt fits in 100 ms; at 10 ms in it does not.
        let mut call = RetryState::new();
        assert!(matches!(
            call.next(&s, busy, true, now, Some(&deadline), &budget, &mut rng),
            RetryDecision::Retry { .. }
        ));
        let mut call = RetryState::new();
        assert_eq!(
            call.next(
                &s,
                busy,
                true,
                now + 10 * MS,
                Some(&deadline),
                &budget,
                &mut rng
            ),
            RetryDecision::Stop(Stop::DeadlineTooClose)
        );
        // Refused for the deadline: no budget token was taken.
        assert!((budget.balance(now) - 99.0).abs() < 1e-9);
    }

    #[test]
    fn budget_refusal_stops_retries() {
        let s = RetrySettings::default()
            .with_budget(BudgetSettings::new(0.0, 0, Duration::from_secs(1)).unwrap());
        let (now, budget, mut rng) = setup(&s);
        let mut call = RetryState::new();
        assert_eq!(
            call.next(&s, FAIL, true, now, None, &budget, &mut rng),
            RetryDecision::Stop(Stop::BudgetExhausted)
        );
    }

    #[test]
    fn invalid_settings_are_refused() {
        let base = RetrySettings::default();
        let e = base.clone().with_max_attempts(0).validate().unwrap_err();
        assert_eq!(e.setting(), "retry.max_attempts");
        assert!(e.reason().contains("first attempt counts"));
        assert_eq!(
            base.clone()
                .with_max_attempts(101)
                .validate()
                .unwrap_err()
                .setting(),
            "retry.max_attempts"
        );
        assert_eq!(
            base.clone()
                .with_deadline(Duration::ZERO)
                .validate()
                .unwrap_err()
                .setting(),
            "retry.deadline"
        );
        assert_eq!(
            base.clone()
                .with_attempt_timeout(Duration::ZERO)
                .validate()
                .unwrap_err()
                .setting(),
            "retry.attempt_timeout"
        );
        let e = base
            .clone()
            .with_deadline(MS)
            .with_min_attempt_time(MS)
            .validate()
            .unwrap_err();
        assert_eq!(e.setting(), "retry.min_attempt_time");
        assert!(base.validate().is_ok());
    }
}
