//! towline's invariant checkers: op sequences run against towline's state
//! machines and compared with what towline promises.
//!
//! They live in this workspace crate, not in towline's published API; the
//! fuzz targets (`fuzz/`) and the replay test (`check/tests/fuzz_replay.rs`)
//! depend on it.
//!
//! Each checker takes a sequence of operations (derived with
//! [`arbitrary::Arbitrary`], so a fuzzer can generate them from raw bytes),
//! applies them to the real implementation next to a small reference model,
//! and returns the first broken promise as a [`Violation`]. The same functions
//! serve three callers:
//!
//! - the cargo-fuzz targets in `fuzz/` (nightly, coverage-guided);
//! - `check/tests/fuzz_replay.rs` on stable, which replays the checked-in corpus
//!   (`fuzz/corpus/<target>/`) and a few thousand seeded random sequences;
//! - tests that feed a deliberately faulty balancer and expect a
//!   violation, so the balancer checks are known to be able to fail (the
//!   other checkers drive concrete types, which a test cannot swap for a
//!   faulty one).
//!
//! Features `dns` and `etcd` add the discovery checker (and turn on the
//! same features of towline).
//!
//! | checker | what it exercises |
//! |---|---|
//! | [`balancer`] | every balancer under set churn, ejection, load and exclusions |
//! | [`keyed`] | ring and Maglev tables, with and without bounded loads: picks by key under churn, ejection, load, exclusions and retries |
//! | [`breaker`] | the circuit breaker against a reference model |
//! | [`budget_backoff`] | retry/hedge budgets and backoff delays within their bounds |
//! | `discovery` | etcd values and DNS answers to endpoints (features `etcd`, `dns`) |
//!
//! ```
//! use towline_check::balancer::{BalancerKind, BalancerOp, Weight, run_balancer};
//!
//! let ops = [
//!     BalancerOp::Reset { len: 4, weights: vec![Weight::One] },
//!     BalancerOp::Eject { index: 2 },
//!     BalancerOp::Cycle { exclude: 0b1 },
//! ];
//! assert!(run_balancer(BalancerKind::RoundRobin, &ops).is_ok());
//! ```

#![deny(missing_docs)]

pub mod balancer;
pub mod breaker;
pub mod budget_backoff;
#[cfg(any(feature = "dns", feature = "etcd"))]
pub mod discovery;
pub mod keyed;

use std::fmt;

/// A broken invariant: which operation exposed it and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Index of the operation in the sequence (the sequence length for a
    /// check made after the last operation).
    pub step: usize,
    /// What was expected and what happened.
    pub message: String,
}

impl Violation {
    pub(crate) fn new(step: usize, message: impl Into<String>) -> Self {
        Violation {
            step,
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invariant violated at step {}: {}",
            self.step, self.message
        )
    }
}

impl std::error::Error for Violation {}

/// Implements `Arbitrary` for a fuzz case: its settings fields, then its
/// operations. Decoded from a whole input (`arbitrary_take_rest`, what
/// `fuzz_target!` and the replay use), operations are read one after another
/// until the input is used up, with no length or continuation bytes, so
/// every input byte goes into an operation and random inputs give long
/// sequences.
macro_rules! fuzz_case {
    ($case:ident { $($field:ident),* ; $ops:ident }) => {
        impl<'a> arbitrary::Arbitrary<'a> for $case {
            fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
                Ok($case {
                    $($field: u.arbitrary()?,)*
                    $ops: u.arbitrary()?,
                })
            }

            fn arbitrary_take_rest(
                mut u: arbitrary::Unstructured<'a>,
            ) -> arbitrary::Result<Self> {
                let case = $case {
                    $($field: u.arbitrary()?,)*
                    $ops: Vec::new(),
                };
                let mut ops = Vec::new();
                while !u.is_empty() {
                    ops.push(u.arbitrary()?);
                }
                Ok($case { $ops: ops, ..case })
            }
        }
    };
}
pub(crate) use fuzz_case;

/// Returns a violation at `step` with the formatted message unless `cond`.
macro_rules! ensure {
    ($cond:expr, $step:expr, $($fmt:tt)+) => {
        // A NaN comparison is false, so it counts as a violation.
        let holds: bool = $cond;
        if !holds {
            return Err($crate::Violation::new($step, format!($($fmt)+)));
        }
    };
}
pub(crate) use ensure;
