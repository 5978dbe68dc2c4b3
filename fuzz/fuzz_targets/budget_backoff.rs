//! Retry/hedge budgets and backoff delays within their bounds; see
//! `towline_check::budget_backoff` for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use towline_check::budget_backoff::BudgetBackoffCase;

fuzz_target!(|case: BudgetBackoffCase| {
    if let Err(violation) = case.run() {
        panic!("{violation}\n{case:#?}");
    }
});
