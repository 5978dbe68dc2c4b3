//! Ring and Maglev tables, with and without bounded loads, picking by key
//! under random churn, ejection, load, exclusions and retries; see
//! `towline_check::keyed` for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use towline_check::keyed::KeyedCase;

fuzz_target!(|case: KeyedCase| {
    if let Err(violation) = case.run() {
        panic!("{violation}\n{case:#?}");
    }
});
