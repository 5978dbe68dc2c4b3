//! The circuit breaker against its reference model; see
//! `towline::check::breaker` for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use towline::check::breaker::BreakerCase;

fuzz_target!(|case: BreakerCase| {
    if let Err(violation) = case.run() {
        panic!("{violation}\n{case:#?}");
    }
});
