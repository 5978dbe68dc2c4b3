//! Balancer invariants under endpoint churn, ejection, load and exclusions.
//!
//! [`run_balancer`] keeps a model of an endpoint set the way the channel's
//! table does (a [`Load`](towline::balance::Load) per endpoint, an ejected
//! flag, the weights the balancer was last rebuilt with), applies
//! [`BalancerOp`]s to it and checks, after every pick:
//!
//! - a pick is `Some` exactly when some endpoint is eligible (in the set, not
//!   ejected, not excluded by the pick), and then it is an eligible index;
//! - the balancer never asks the eligibility filter about an index outside
//!   the set (a removed endpoint);
//! - weighted balancers never pick a weight-0 endpoint while an eligible
//!   endpoint with a positive weight exists;
//! - P2C returns the cheaper of the two candidates [`P2c::sample_pair`]
//!   draws (two distinct eligible indices, one only when one is eligible),
//!   and no cost is NaN;
//!
//! and over a [`BalancerOp::Cycle`] (consecutive picks with one filter on a
//! stable set):
//!
//! - round-robin visits each eligible endpoint exactly once;
//! - smooth weighted round-robin gives each eligible endpoint exactly its
//!   gcd-reduced weight over one cycle of the eligible turns, when the
//!   reduced weights fit the precomputed schedule
//!   ([`Weighted::MAX_SCHEDULE`]) and at most [`WRR_SKIPPED_TURNS`]
//!   turns of the schedule belong to ineligible endpoints.
//!
//! In-flight counts ([`Load::pending`](towline::balance::Load::pending)) must
//! equal the model's count of open calls after every operation (also on
//! removed endpoints whose calls are still draining), must not go below zero
//! when a call ends twice, and must all be zero once every call has ended.
//!
//! Panic mode (picking among all endpoints when too few are healthy) is the
//! channel's decision, made through the filter it passes; it is not part of
//! these checks.

mod eligible;
mod model;

use std::time::Duration;

use arbitrary::Arbitrary;

use super::Violation;
use model::Model;
use towline::balance::{Balancer, P2c, Random, RoundRobin, Weighted};

/// The largest endpoint set the checker builds (exclusion masks are 64 bits).
pub const MAX_ENDPOINTS: usize = 64;

/// Smooth weighted round-robin exactness is checked with exclusions only
/// while at most this many schedule turns are ineligible: a pick walks a
/// bounded number of turns past ineligible ones before it falls back to a
/// weighted random scan, which is correct but not exact.
pub const WRR_SKIPPED_TURNS: u64 = 128;

/// The balancer under test, with its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum BalancerKind {
    /// [`RoundRobin`].
    RoundRobin,
    /// [`Random`].
    Random,
    /// [`Weighted::random`].
    WeightedRandom,
    /// [`Weighted::round_robin`].
    WeightedRoundRobin,
    /// [`P2c::pending`].
    P2cPending,
    /// [`P2c::peak_ewma`] with these settings.
    P2cPeakEwma {
        /// Default RTT in microseconds.
        default_rtt_us: u16,
        /// EWMA decay in milliseconds (0 is allowed: no memory).
        decay_ms: u16,
    },
}

impl BalancerKind {
    /// Every kind, with default P2C settings.
    pub const ALL: [BalancerKind; 6] = [
        BalancerKind::RoundRobin,
        BalancerKind::Random,
        BalancerKind::WeightedRandom,
        BalancerKind::WeightedRoundRobin,
        BalancerKind::P2cPending,
        BalancerKind::P2cPeakEwma {
            default_rtt_us: 30_000,
            decay_ms: 10_000,
        },
    ];

    /// A fresh balancer of this kind (to be rebuilt for a set).
    pub fn build(self) -> Box<dyn Balancer> {
        match self {
            BalancerKind::RoundRobin => Box::new(RoundRobin::new()),
            BalancerKind::Random => Box::new(Random::new()),
            BalancerKind::WeightedRandom => Box::new(Weighted::random()),
            BalancerKind::WeightedRoundRobin => Box::new(Weighted::round_robin()),
            BalancerKind::P2cPending | BalancerKind::P2cPeakEwma { .. } => {
                Box::new(self.p2c().expect("a P2C kind"))
            }
        }
    }

    /// The P2C configuration, for P2C kinds.
    pub fn p2c(self) -> Option<P2c> {
        match self {
            BalancerKind::P2cPending => Some(P2c::pending()),
            BalancerKind::P2cPeakEwma {
                default_rtt_us,
                decay_ms,
            } => Some(
                P2c::peak_ewma()
                    .default_rtt(Duration::from_micros(default_rtt_us.into()))
                    .decay(Duration::from_millis(decay_ms.into())),
            ),
            _ => None,
        }
    }

    pub(crate) fn is_weighted(self) -> bool {
        matches!(
            self,
            BalancerKind::WeightedRandom | BalancerKind::WeightedRoundRobin
        )
    }
}

/// An endpoint weight, biased toward the edge cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum Weight {
    /// 0: no traffic while a positive weight is eligible.
    Zero,
    /// 1, the default.
    One,
    /// A small weight.
    Small(u8),
    /// Any weight.
    Large(u32),
    /// `u32::MAX`.
    Max,
}

impl Weight {
    /// The weight as a number.
    pub fn value(self) -> u32 {
        match self {
            Weight::Zero => 0,
            Weight::One => 1,
            Weight::Small(w) => w.into(),
            Weight::Large(w) => w,
            Weight::Max => u32::MAX,
        }
    }
}

/// One step applied to the endpoint set or the balancer. Indices are taken
/// modulo the current set (or call) count; operations on an empty set do
/// nothing. Bit `i` of an `exclude` mask excludes endpoint `i` from the pick
/// (as a retry excludes endpoints already tried).
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
pub enum BalancerOp {
    /// Replaces the set with `len % 65` endpoints; endpoint `i` gets
    /// `weights[i % weights.len()]` (1 when empty). The first endpoints keep
    /// their load and ejection (as endpoints that stay across a reset do);
    /// the rest are removed and their open calls drain.
    Reset {
        /// New set size (taken modulo 65).
        len: u8,
        /// Weights, repeated over the set.
        weights: Vec<Weight>,
    },
    /// Appends an endpoint (ignored at [`MAX_ENDPOINTS`]).
    Insert {
        /// Its weight.
        weight: Weight,
        /// Whether the balancer is rebuilt for the new set (the channel
        /// always does; a stale balancer must still pick correctly).
        rebuild: bool,
    },
    /// Removes an endpoint; its open calls still end later.
    Remove {
        /// Which endpoint.
        index: u8,
        /// Whether the balancer is rebuilt.
        rebuild: bool,
    },
    /// Changes a weight in place.
    SetWeight {
        /// Which endpoint.
        index: u8,
        /// The new weight.
        weight: Weight,
        /// Whether the balancer is rebuilt.
        rebuild: bool,
    },
    /// Ejects an endpoint (e.g. its breaker opened): no picks.
    Eject {
        /// Which endpoint.
        index: u8,
    },
    /// Takes an endpoint back after ejection.
    Readmit {
        /// Which endpoint.
        index: u8,
    },
    /// Starts a call on an endpoint.
    Begin {
        /// Which endpoint.
        index: u8,
    },
    /// Ends one open call (possibly on a removed endpoint).
    End {
        /// Which open call.
        call: u8,
    },
    /// Ends a call that was never started on an endpoint with no open call:
    /// the in-flight count must stay at zero.
    EndUnmatched {
        /// Which endpoint.
        index: u8,
    },
    /// Feeds a round-trip time to the balancer for an endpoint.
    Observe {
        /// Which endpoint.
        index: u8,
        /// The RTT in microseconds.
        rtt_us: u32,
    },
    /// Moves the clock forward.
    Advance {
        /// Milliseconds.
        ms: u16,
    },
    /// One pick.
    Pick {
        /// Excluded indices.
        exclude: u64,
    },
    /// One pick, then a call started on the endpoint picked.
    PickAndBegin {
        /// Excluded indices.
        exclude: u64,
    },
    /// Consecutive picks with one filter: a full round-robin cycle (checked
    /// for exact counts where the balancer promises them), or one pick per
    /// endpoint for the other balancers.
    Cycle {
        /// Excluded indices.
        exclude: u64,
    },
}

/// A fuzz input: a balancer and the operations to run on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancerCase {
    /// The balancer under test.
    pub kind: BalancerKind,
    /// Its operations, in order.
    pub ops: Vec<BalancerOp>,
}

crate::fuzz_case!(BalancerCase { kind; ops });

impl BalancerCase {
    /// Runs [`run_balancer`] on this case.
    pub fn run(&self) -> Result<(), Violation> {
        run_balancer(self.kind, &self.ops)
    }
}

/// Runs `ops` on a balancer of `kind` and checks its invariants.
pub fn run_balancer(kind: BalancerKind, ops: &[BalancerOp]) -> Result<(), Violation> {
    run_balancer_with(&*kind.build(), kind, ops)
}

/// Runs `ops` on `balancer` and checks the invariants promised by `kind`.
/// `balancer` is rebuilt for each endpoint set; this is how a test feeds a
/// faulty balancer to show that the checks fail.
pub fn run_balancer_with(
    balancer: &dyn Balancer,
    kind: BalancerKind,
    ops: &[BalancerOp],
) -> Result<(), Violation> {
    // Rebuilds take round-robin start positions from the thread's generator:
    // seed it so that the same input replays the same picks.
    towline::rng::seed_thread_rng(0x7011_11e5);
    let mut model = Model::new(balancer, kind);
    for (step, op) in ops.iter().enumerate() {
        model.step = step;
        model.apply(op)?;
        model.check_pending()?;
    }
    model.step = ops.len();
    model.drain()
}
