//! Every balancer under random churn, ejection, load and exclusions; see
//! `towline_check::balancer` for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use towline_check::balancer::BalancerCase;

fuzz_target!(|case: BalancerCase| {
    if let Err(violation) = case.run() {
        panic!("{violation}\n{case:#?}");
    }
});
