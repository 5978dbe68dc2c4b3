//! Metric names of the policies (see the table in [the module docs](super)).
//!
//! Handles are registered once, when a layer or breaker is built; nothing is
//! looked up by label on the call path.

use metrics::Counter;

/// Attempts sent: first tries, retries and hedges.
pub const ATTEMPTS: &str = "towline_attempts_total";
/// Retries sent.
pub const RETRIES: &str = "towline_retries_total";
/// Extra (hedged) attempts sent.
pub const HEDGES_SENT: &str = "towline_hedges_sent_total";
/// Calls answered by a hedged attempt.
pub const HEDGES_WON: &str = "towline_hedges_won_total";
/// Retries or hedges refused by their budget; label `budget`.
pub const BUDGET_EXHAUSTED: &str = "towline_budget_exhausted_total";
/// Circuit-breaker state changes; labels `to` and `breaker`.
pub const BREAKER_TRANSITIONS: &str = "towline_breaker_transitions_total";

/// Counter handles of a retry policy.
#[derive(Clone)]
pub(crate) struct RetryMetrics {
    pub attempts: Counter,
    pub retries: Counter,
    pub budget_exhausted: Counter,
}

impl RetryMetrics {
    pub fn register() -> Self {
        RetryMetrics {
            attempts: metrics::counter!(ATTEMPTS),
            retries: metrics::counter!(RETRIES),
            budget_exhausted: metrics::counter!(BUDGET_EXHAUSTED, "budget" => "retry"),
        }
    }
}

/// Counter handles of a hedging policy.
#[derive(Clone)]
pub(crate) struct HedgeMetrics {
    pub attempts: Counter,
    pub sent: Counter,
    pub won: Counter,
    pub budget_exhausted: Counter,
}

impl HedgeMetrics {
    pub fn register() -> Self {
        HedgeMetrics {
            attempts: metrics::counter!(ATTEMPTS),
            sent: metrics::counter!(HEDGES_SENT),
            won: metrics::counter!(HEDGES_WON),
            budget_exhausted: metrics::counter!(BUDGET_EXHAUSTED, "budget" => "hedge"),
        }
    }
}
