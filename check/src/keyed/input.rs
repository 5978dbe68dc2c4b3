//! What the keyed checker is given: the balancer under test and its
//! operations.

use arbitrary::Arbitrary;

use crate::balancer::Weight;
use towline::balance::ConsistentHash;

/// The largest endpoint set the checker builds (exclusion masks are 64
/// bits).
pub const MAX_ENDPOINTS: usize = 64;

/// The keyed balancer under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum KeyedKind {
    /// [`ConsistentHash::ring`].
    Ring,
    /// [`ConsistentHash::maglev`].
    Maglev,
    /// A ring with bounded loads of factor `1 + (f + 1) / 100`.
    RingBounded(u8),
    /// A Maglev table with bounded loads of factor `1 + (f + 1) / 100`.
    MaglevBounded(u8),
}

impl KeyedKind {
    /// Every kind, bounded ones with factor 1.25.
    pub const ALL: [KeyedKind; 4] = [
        KeyedKind::Ring,
        KeyedKind::Maglev,
        KeyedKind::RingBounded(24),
        KeyedKind::MaglevBounded(24),
    ];

    /// A table of this kind, with the smallest sizes (fast to rebuild; the
    /// invariants do not depend on size).
    pub fn build(self) -> ConsistentHash {
        let ring = || ConsistentHash::ring_with_points(16, 4_096).expect("valid ring sizes");
        let maglev = || {
            ConsistentHash::maglev_with_table_size(ConsistentHash::MIN_TABLE_SIZE)
                .expect("a valid table size")
        };
        let bounded = |hash: ConsistentHash, f: u8| {
            hash.bounded_load(self.factor(f))
                .expect("factors from 1.01 to 3.56 are valid")
        };
        match self {
            KeyedKind::Ring => ring(),
            KeyedKind::Maglev => maglev(),
            KeyedKind::RingBounded(f) => bounded(ring(), f),
            KeyedKind::MaglevBounded(f) => bounded(maglev(), f),
        }
    }

    fn factor(self, f: u8) -> f64 {
        1.0 + (f64::from(f) + 1.0) / 100.0
    }

    /// The bounded-load factor in thousandths, for bounded kinds.
    pub(super) fn factor_milli(self) -> Option<u128> {
        match self {
            KeyedKind::RingBounded(f) | KeyedKind::MaglevBounded(f) => {
                Some(1_000 + 10 * (u128::from(f) + 1))
            }
            _ => None,
        }
    }
}

/// One step. Indices are taken modulo the current set (or open calls);
/// operations on an empty set do nothing. Bit `i` of `exclude` excludes
/// endpoint `i` from the pick.
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
pub enum KeyedOp {
    /// Replaces the set with `len % 65` endpoints (the first ones keep
    /// their address and load); endpoint `i` gets `weights[i % len]`.
    Reset {
        /// New set size (taken modulo 65).
        len: u8,
        /// Weights, repeated over the set (1 when empty).
        weights: Vec<Weight>,
    },
    /// Appends an endpoint at a new address.
    Insert {
        /// Its weight.
        weight: Weight,
        /// Whether the table is rebuilt (else a stale table picks).
        rebuild: bool,
    },
    /// Removes an endpoint: the last one moves into its place, as in the
    /// channel's table; its open calls still end later.
    Remove {
        /// Which endpoint.
        index: u8,
        /// Whether the table is rebuilt.
        rebuild: bool,
    },
    /// Changes a weight.
    SetWeight {
        /// Which endpoint.
        index: u8,
        /// The new weight.
        weight: Weight,
    },
    /// Ejects an endpoint.
    Eject {
        /// Which endpoint.
        index: u8,
    },
    /// Takes an endpoint back.
    Readmit {
        /// Which endpoint.
        index: u8,
    },
    /// Starts a call on an endpoint.
    Begin {
        /// Which endpoint.
        index: u8,
    },
    /// Ends one open call.
    End {
        /// Which open call.
        call: u8,
    },
    /// One pick by key; the set keeps its in-flight total when `kept` (as
    /// the channel's does), else the table sums it.
    Pick {
        /// The request key.
        key: u64,
        /// Excluded indices.
        exclude: u64,
        /// Whether the set reports its in-flight total.
        kept: bool,
    },
    /// One pick by key, then a call started on the endpoint picked.
    PickAndBegin {
        /// The request key.
        key: u64,
        /// Excluded indices.
        exclude: u64,
    },
    /// A call's attempts: picks by one key, each excluding the endpoints
    /// already tried.
    Walk {
        /// The request key.
        key: u64,
        /// Indices excluded from the start.
        exclude: u64,
    },
}
