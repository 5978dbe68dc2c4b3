//! The circuit breaker against its reference model; see
//! `towline_check::breaker` for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use towline_check::breaker::BreakerCase;

fuzz_target!(|case: BreakerCase| {
    if let Err(violation) = case.run() {
        panic!("{violation}\n{case:#?}");
    }
});
