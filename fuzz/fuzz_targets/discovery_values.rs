//! etcd values and DNS answers from arbitrary bytes and generated records;
//! see `towline_check::discovery` for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use towline_check::discovery::DiscoveryCase;

fuzz_target!(|case: DiscoveryCase| {
    if let Err(violation) = case.run() {
        panic!("{violation}\n{case:#?}");
    }
});
