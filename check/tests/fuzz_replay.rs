//! Stable replay of the fuzz targets: every checked-in corpus input
//! (`fuzz/corpus/<target>/`) and a few thousand seeded random op sequences
//! per target go through the same checkers (`towline_check`) the fuzzers
//! run. Faulty balancers show that the balancer checks can fail.

use std::path::PathBuf;

use arbitrary::{Arbitrary, Unstructured};
use towline::balance::{AttemptEnd, Balancer, Load, LoadSet, P2c, PickContext};
use towline::rng::Rng;
use towline_check::Violation;
use towline_check::balancer::{BalancerCase, BalancerKind, BalancerOp, Weight, run_balancer_with};
use towline_check::breaker::{BreakerCase, BreakerOp};
use towline_check::budget_backoff::{BudgetBackoffCase, BudgetBackoffOp};
use towline_check::keyed::{KeyedCase, KeyedKind, run_keyed_with};

/// Seeded random sequences per target.
const RANDOM_CASES: u64 = 3_000;

/// Decodes `bytes` the way `fuzz_target!` does.
fn decode<T: for<'a> Arbitrary<'a>>(bytes: &[u8]) -> T {
    T::arbitrary_take_rest(Unstructured::new(bytes)).expect("arbitrary accepts any input")
}

/// Every file of `fuzz/corpus/<target>/`; fails when there is none, so a
/// lost corpus does not pass silently.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("corpus file");
            (path, bytes)
        })
        .collect()
}

/// Random input bytes of a random length up to `max_len`.
fn random_bytes(rng: &mut Rng, max_len: usize) -> Vec<u8> {
    let len = rng.below(max_len + 1);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

fn replay<T>(target: &str, run: impl Fn(&T) -> Result<(), Violation>)
where
    T: for<'a> Arbitrary<'a> + std::fmt::Debug,
{
    for (path, bytes) in corpus(target) {
        let case: T = decode(&bytes);
        if let Err(v) = run(&case) {
            panic!("{}: {v}\n{case:#?}", path.display());
        }
    }
}

fn random<T>(seed: u64, max_len: usize, run: impl Fn(&T) -> Result<(), Violation>)
where
    T: for<'a> Arbitrary<'a> + std::fmt::Debug,
{
    random_shaped(seed, max_len, |_| {}, run);
}

/// [`random`], with each decoded case adjusted by `shape` before it runs
/// (to steer raw random bytes toward the states a check is about).
fn random_shaped<T>(
    seed: u64,
    max_len: usize,
    shape: impl Fn(&mut T),
    run: impl Fn(&T) -> Result<(), Violation>,
) where
    T: for<'a> Arbitrary<'a> + std::fmt::Debug,
{
    let mut rng = Rng::seeded(seed);
    for i in 0..RANDOM_CASES {
        let mut case: T = decode(&random_bytes(&mut rng, max_len));
        shape(&mut case);
        if let Err(v) = run(&case) {
            panic!("seed {seed}, case {i}: {v}\n{case:#?}");
        }
    }
}

#[test]
fn balancer_corpus() {
    replay("balancer", BalancerCase::run);
}

#[test]
fn balancer_random_sequences() {
    // Raw random `Large` weights sum past `Weighted::MAX_SCHEDULE`, where
    // smooth weighted round-robin is only approximate (no exact cycle check)
    // and every rebuild fills the whole schedule (slow in a debug build).
    // Smaller ones keep the exact check in play.
    let small = |w: &mut Weight| {
        if let Weight::Large(v) = w {
            *v %= 256;
        }
    };
    random_shaped(
        0xba1a,
        512,
        |case: &mut BalancerCase| {
            for op in &mut case.ops {
                match op {
                    BalancerOp::Reset { weights, .. } => weights.iter_mut().for_each(small),
                    BalancerOp::Insert { weight, .. } | BalancerOp::SetWeight { weight, .. } => {
                        small(weight)
                    }
                    _ => {}
                }
            }
        },
        BalancerCase::run,
    );
}

#[test]
fn keyed_corpus() {
    replay("keyed", KeyedCase::run);
}

#[test]
fn keyed_random_sequences() {
    random(0x6e1d, 512, KeyedCase::run);
}

#[test]
fn breaker_corpus() {
    replay("breaker", BreakerCase::run);
}

#[test]
fn breaker_random_sequences() {
    // Forced states last until a reset, and raw random bytes force one
    // within a few steps: without them the breaker gets to open, probe and
    // close (the corpus covers forcing).
    random_shaped(
        0xb4ea,
        1_024,
        |case: &mut BreakerCase| {
            case.ops
                .retain(|op| !matches!(op, BreakerOp::ForceOpen | BreakerOp::ForceClose));
        },
        BreakerCase::run,
    );
}

#[test]
fn budget_backoff_corpus() {
    replay("budget_backoff", BudgetBackoffCase::run);
}

#[test]
fn budget_backoff_random_sequences() {
    // Raw random bytes give floors of thousands of tokens per second over
    // windows of minutes, so a withdrawal is almost never refused; small
    // floors and windows bring the balance to the one-token edge.
    random_shaped(
        0xb0d6,
        1_024,
        |case: &mut BudgetBackoffCase| {
            case.budget.floor_per_sec %= 4;
            case.budget.window_ms %= 20_000;
            for op in &mut case.ops {
                if let BudgetBackoffOp::Retune { floor_per_sec, .. } = op {
                    *floor_per_sec %= 4;
                }
            }
        },
        BudgetBackoffCase::run,
    );
}

#[cfg(all(feature = "dns", feature = "etcd"))]
#[test]
fn discovery_values_corpus() {
    replay(
        "discovery_values",
        towline_check::discovery::DiscoveryCase::run,
    );
}

#[cfg(all(feature = "dns", feature = "etcd"))]
#[test]
fn discovery_values_random_inputs() {
    random(0xd15c, 512, towline_check::discovery::DiscoveryCase::run);
}

/// Random cases run against `faulty` with the promises of `kind`: the first
/// violation.
fn first_violation(faulty: &dyn Balancer, kind: BalancerKind) -> Option<Violation> {
    let mut rng = Rng::seeded(0xfa17);
    (0..RANDOM_CASES).find_map(|_| {
        let case: BalancerCase = decode(&random_bytes(&mut rng, 2_048));
        run_balancer_with(faulty, kind, &case.ops).err()
    })
}

/// Wraps a real balancer and breaks one promise.
#[derive(Debug)]
struct Faulty {
    inner: Box<dyn Balancer>,
    fault: Fault,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Picks as if every endpoint were eligible.
    IgnoresExclusions,
    /// Returns the other P2C candidate: the more loaded one.
    PrefersMoreLoaded,
    /// Skips a turn now and then.
    DropsTurns,
}

impl Balancer for Faulty {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn rebuild(&self, weights: &[u32]) -> Box<dyn Balancer> {
        Box::new(Faulty {
            inner: self.inner.rebuild(weights),
            fault: self.fault,
        })
    }

    fn pick(
        &self,
        at: &PickContext,
        set: &dyn LoadSet,
        eligible: &dyn Fn(usize) -> bool,
        rng: &mut Rng,
    ) -> Option<usize> {
        let now = at.now;
        match self.fault {
            Fault::IgnoresExclusions => self.inner.pick(at, set, &|_| true, rng),
            Fault::PrefersMoreLoaded => {
                let p2c = P2c::pending();
                match p2c.sample_pair(set.len(), eligible, rng)? {
                    (a, None) => Some(a),
                    (a, Some(b)) => {
                        let (ca, cb) = (p2c.cost(set.load(a), now), p2c.cost(set.load(b), now));
                        Some(if ca > cb { a } else { b })
                    }
                }
            }
            Fault::DropsTurns => {
                if rng.below(97) == 0 {
                    self.inner.pick(at, set, eligible, rng);
                }
                self.inner.pick(at, set, eligible, rng)
            }
        }
    }

    fn observe(&self, load: &Load, end: &AttemptEnd) {
        self.inner.observe(load, end);
    }
}

#[test]
fn checker_catches_a_balancer_that_ignores_exclusions() {
    for kind in BalancerKind::ALL {
        let faulty = Faulty {
            inner: kind.build(),
            fault: Fault::IgnoresExclusions,
        };
        let v = first_violation(&faulty, kind)
            .unwrap_or_else(|| panic!("{kind:?} ignoring exclusions passed every check"));
        // Either a pick with nothing eligible, or of an ineligible index.
        assert!(
            v.message.contains("with eligible []")
                || v.message.contains("removed, ejected or excluded"),
            "{kind:?}: {v}"
        );
    }
}

#[test]
fn checker_catches_p2c_taking_the_more_loaded_candidate() {
    let faulty = Faulty {
        inner: Box::new(P2c::pending()),
        fault: Fault::PrefersMoreLoaded,
    };
    let v = first_violation(&faulty, BalancerKind::P2cPending).expect("a violation");
    assert!(v.message.starts_with("P2C picked"), "{v}");
}

#[test]
fn checker_catches_round_robin_that_skips_turns() {
    for kind in [BalancerKind::RoundRobin, BalancerKind::WeightedRoundRobin] {
        let faulty = Faulty {
            inner: kind.build(),
            fault: Fault::DropsTurns,
        };
        let v = first_violation(&faulty, kind).expect("a violation");
        assert!(v.message.contains("over one cycle"), "{kind:?}: {v}");
    }
}

/// Random keyed cases run against `faulty` with the promises of `kind`:
/// the first violation.
fn first_keyed_violation(faulty: &dyn Balancer, kind: KeyedKind) -> Option<Violation> {
    let mut rng = Rng::seeded(0x6e1f);
    (0..RANDOM_CASES).find_map(|_| {
        let case: KeyedCase = decode(&random_bytes(&mut rng, 1_024));
        run_keyed_with(faulty, kind, &case.ops).err()
    })
}

/// Wraps a keyed balancer and breaks one of its promises.
#[derive(Debug)]
struct FaultyKeyed {
    inner: Box<dyn Balancer>,
    fault: KeyedFault,
    picks: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Clone, Copy)]
enum KeyedFault {
    /// Picks as if every endpoint were eligible.
    IgnoresExclusions,
    /// Picks by a key that changes from one pick to the next.
    ForgetsKey,
}

impl Balancer for FaultyKeyed {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn rebuild(&self, weights: &[u32]) -> Box<dyn Balancer> {
        self.wrap(self.inner.rebuild(weights))
    }

    fn rebuild_set(&self, set: &towline::balance::EndpointSet<'_>) -> Box<dyn Balancer> {
        self.wrap(self.inner.rebuild_set(set))
    }

    fn pick(
        &self,
        at: &PickContext,
        set: &dyn LoadSet,
        eligible: &dyn Fn(usize) -> bool,
        rng: &mut Rng,
    ) -> Option<usize> {
        match self.fault {
            KeyedFault::IgnoresExclusions => self.inner.pick(at, set, &|_| true, rng),
            KeyedFault::ForgetsKey => {
                let n = self
                    .picks
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let at = at.with_key(at.key.map(|k| k ^ n.wrapping_mul(0x9e37_79b9)));
                self.inner.pick(&at, set, eligible, rng)
            }
        }
    }
}

impl FaultyKeyed {
    fn new(inner: Box<dyn Balancer>, fault: KeyedFault) -> Self {
        FaultyKeyed {
            inner,
            fault,
            picks: Default::default(),
        }
    }

    fn wrap(&self, inner: Box<dyn Balancer>) -> Box<dyn Balancer> {
        Box::new(FaultyKeyed::new(inner, self.fault))
    }
}

#[test]
fn keyed_checker_catches_ignored_exclusions_a_forgotten_key_and_ignored_bounds() {
    for kind in KeyedKind::ALL {
        let faulty = FaultyKeyed::new(Box::new(kind.build()), KeyedFault::IgnoresExclusions);
        let v = first_keyed_violation(&faulty, kind).expect("a violation");
        assert!(
            v.message.contains("eligible") || v.message.contains("ejected or excluded"),
            "{kind:?}: {v}"
        );
        let faulty = FaultyKeyed::new(Box::new(kind.build()), KeyedFault::ForgetsKey);
        let v = first_keyed_violation(&faulty, kind).expect("a violation");
        assert!(v.message.contains("in another"), "{kind:?}: {v}");
    }
    // An unbounded table checked against the promises of a bounded one.
    let (plain, bounded) = (KeyedKind::Maglev, KeyedKind::MaglevBounded(24));
    let v = first_keyed_violation(&plain.build(), bounded).expect("a violation");
    assert!(v.message.contains("over its bound"), "{v}");
}
