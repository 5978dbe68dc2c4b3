//! Every balancer under random churn, ejection, load and exclusions; see
//! `towline::check::balancer` for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use towline::check::balancer::BalancerCase;

fuzz_target!(|case: BalancerCase| {
    if let Err(violation) = case.run() {
        panic!("{violation}\n{case:#?}");
    }
});
