//! Metric names of the policies (see the table in [the module docs](super)).
//!
//! Handles are registered once, when a layer, breaker or channel is built;
//! nothing is looked up by label on the call path. A channel's handles carry
//! its `channel` label; a standalone layer's carry none. Descriptions and
//! units are given with [`crate::metrics::describe`], which every layer and
//! breaker calls when it is built.

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
/// Attempts refused by a channel's adaptive throttling (never sent).
pub const THROTTLED: &str = "towline_throttled_total";
/// Circuit-breaker state, one gauge per breaker (labels `channel` and
/// `endpoint` for a channel's endpoint, `breaker` otherwise): 0
/// closed, 1 half-open, 2 open.
pub const BREAKER_STATE: &str = "towline_breaker_state";

/// Counter handles of a retry policy.
#[derive(Clone)]
pub(crate) struct RetryMetrics {
    pub attempts: Counter,
    pub retries: Counter,
    pub budget_exhausted: Counter,
}

impl RetryMetrics {
    /// Handles with the given labels (none for a layer; `channel` for a
    /// channel).
    pub fn register(labels: &[(&'static str, String)]) -> Self {
        crate::metrics::describe();
        RetryMetrics {
            attempts: metrics::counter!(ATTEMPTS, labels),
            retries: metrics::counter!(RETRIES, labels),
            budget_exhausted: metrics::counter!(BUDGET_EXHAUSTED, &with(labels, "retry")),
        }
    }
}

/// `labels` plus `budget = which`.
fn with(labels: &[(&'static str, String)], which: &str) -> Vec<(&'static str, String)> {
    crate::metrics::with_label(labels, "budget", which)
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
    /// Handles with the given labels (as [`RetryMetrics::register`]).
    pub fn register(labels: &[(&'static str, String)]) -> Self {
        crate::metrics::describe();
        HedgeMetrics {
            attempts: metrics::counter!(ATTEMPTS, labels),
            sent: metrics::counter!(HEDGES_SENT, labels),
            won: metrics::counter!(HEDGES_WON, labels),
            budget_exhausted: metrics::counter!(BUDGET_EXHAUSTED, &with(labels, "hedge")),
        }
    }
}
