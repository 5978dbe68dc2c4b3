//! What a scenario configures: the stack a configuration sends its calls
//! through (a towline balancer and policy, or a tower baseline), as read
//! from the scenario file and used by the runner and the report.

use std::time::Duration;

use super::subset::SubsetSpec;
use crate::BuildError;
use crate::balance::ConsistentHash;
use crate::channel::ChannelPolicy;
use crate::policy::throttle::ThrottleSettings;

/// A towline balancer, as a scenario names it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum BalancerSpec {
    P2cPeakEwma {
        default_rtt: Duration,
        decay: Duration,
    },
    P2cPending,
    RoundRobin,
    Random,
    WeightedRandom,
    WeightedRoundRobin,
}

/// tower's balancer load measure, for the baselines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TowerLoad {
    PeakEwma,
    Pending,
}

/// A keyed balancer, as a scenario names it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HashSpec {
    pub(crate) maglev: bool,
    pub(crate) bounded_load: Option<f64>,
}

impl HashSpec {
    /// The consistent-hash settings (the factor was checked when read).
    pub(crate) fn build(&self) -> Result<ConsistentHash, BuildError> {
        let hash = if self.maglev {
            ConsistentHash::maglev()
        } else {
            ConsistentHash::ring()
        };
        match self.bounded_load {
            Some(c) => hash.bounded_load(c),
            None => Ok(hash),
        }
    }
}

/// What a configuration sends its calls through.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Stack {
    Towline {
        balancer: BalancerSpec,
        policy: Box<ChannelPolicy>,
        /// Picking by the requests' keys, when they have them.
        hash: Option<HashSpec>,
        /// Which backends each client uses (all when `None`).
        subset: Option<SubsetSpec>,
    },
    Tower(TowerLoad),
}

/// One configuration of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConfigSpec {
    pub(crate) name: String,
    pub(crate) stack: Stack,
    /// Adaptive throttling applied by the simulated caller in front of the
    /// channel or tower stack.
    pub(crate) caller_throttle: Option<ThrottleSettings>,
}
