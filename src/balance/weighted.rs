use super::alias::{self, AliasTable};
use super::slow_start::thin;
use super::{Balancer, LoadSet, PickContext, RANDOM_TRIES, Ramping, sample_eligible};
use crate::rng::{Rng, with_thread_rng};
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Weighted balancing: traffic in proportion to each endpoint's weight.
///
/// Two modes:
/// - [`Weighted::random`]: independent random picks, O(1) each through an
///   alias table built when the set changes (Vose's method).
/// - [`Weighted::round_robin`]: a smooth, interleaved weighted round-robin.
///   When the set changes, weights are reduced by their greatest common
///   divisor and an earliest-deadline-first schedule of one full cycle is
///   precomputed (endpoint `i`'s `k`-th turn is due at `(k - ½) / wᵢ`); picks
///   walk it with an atomic cursor. Over a full cycle each endpoint gets
///   exactly its weight in picks. A cycle longer than
///   [`Weighted::MAX_SCHEDULE`] entries (or the endpoint count, if larger) is
///   scaled down proportionally, each weight staying at least 1.
///
/// Weight 0 endpoints get no traffic while any eligible endpoint has a
/// positive weight; when only weight-0 endpoints are eligible, picks are
/// uniform among them.
///
/// With slow start, a ramping endpoint's turn (round-robin) or draw
/// (random) is kept with probability equal to its weight factor, else the
/// pick takes the next turn or draws again, so it gets `factor` times its
/// share with no table rebuilt during the ramp.
#[derive(Debug)]
pub struct Weighted {
    plan: Plan,
}

#[derive(Debug)]
enum Plan {
    RandomMode,
    RoundRobinMode,
    Alias(AliasTable),
    Schedule {
        slots: Vec<u32>,
        cursor: AtomicUsize,
        weights: Vec<u32>,
    },
}

impl Weighted {
    /// The longest precomputed round-robin cycle (unless there are more
    /// endpoints than this): 65,536 entries.
    pub const MAX_SCHEDULE: usize = 1 << 16;

    /// Weighted random choice.
    pub fn random() -> Self {
        Weighted {
            plan: Plan::RandomMode,
        }
    }

    /// Smooth weighted round-robin.
    pub fn round_robin() -> Self {
        Weighted {
            plan: Plan::RoundRobinMode,
        }
    }

    /// The precomputed round-robin cycle (endpoint index per turn); empty for
    /// weighted random or before [`Balancer::rebuild`].
    pub fn schedule(&self) -> &[u32] {
        match &self.plan {
            Plan::Schedule { slots, .. } => slots,
            _ => &[],
        }
    }

    fn weight_of(&self, i: usize) -> u64 {
        match &self.plan {
            Plan::Alias(t) => t.weight(i).into(),
            Plan::Schedule { weights, .. } => weights[i].into(),
            _ => 0,
        }
    }

    /// Exact weighted choice among eligible indices by scanning; uniform when
    /// every eligible weight is 0.
    fn scan(&self, n: usize, eligible: &dyn Fn(usize) -> bool, rng: &mut Rng) -> Option<usize> {
        alias::scan(n, &|i| self.weight_of(i), eligible, rng)
    }
}

impl Balancer for Weighted {
    fn name(&self) -> &'static str {
        match self.plan {
            Plan::RandomMode | Plan::Alias(_) => "weighted_random",
            _ => "weighted_round_robin",
        }
    }

    fn rebuild(&self, weights: &[u32]) -> Box<dyn Balancer> {
        let plan = match self.plan {
            Plan::RandomMode | Plan::Alias(_) => Plan::Alias(AliasTable::new(weights)),
            _ => {
                let slots = schedule(weights, Self::MAX_SCHEDULE.max(weights.len()));
                let start = with_thread_rng(|rng| rng.below(slots.len().max(1)));
                Plan::Schedule {
                    slots,
                    cursor: AtomicUsize::new(start),
                    weights: weights.to_vec(),
                }
            }
        };
        Box::new(Weighted { plan })
    }

    fn pick(
        &self,
        at: &PickContext,
        set: &dyn LoadSet,
        eligible: &dyn Fn(usize) -> bool,
        rng: &mut Rng,
    ) -> Option<usize> {
        let n = set.len();
        if n == 0 {
            return None;
        }
        if let Some(ramping) = at.ramping() {
            return self.pick_ramping(set, eligible, &ramping, rng);
        }
        match &self.plan {
            Plan::Alias(table) if table.len() == n => {
                for _ in 0..RANDOM_TRIES {
                    match table.sample(rng) {
                        Some(i) if eligible(i) => return Some(i),
                        Some(_) => {}
                        None => break,
                    }
                }
                self.scan(n, eligible, rng)
            }
            Plan::Schedule {
                slots,
                cursor,
                weights,
            } if weights.len() == n => {
                if slots.is_empty() {
                    return self.scan(n, eligible, rng);
                }
                let len = slots.len();
                let c = cursor.fetch_add(1, Ordering::Relaxed);
                let first = slots[c % len] as usize;
                if eligible(first) {
                    return Some(first);
                }
                // Walk the schedule past ineligible turns (bounded), moving
                // the cursor with us so the next caller starts after them.
                let limit = len.min(SCHEDULE_WALK);
                match (1..limit).find(|&k| eligible(slots[(c + k) % len] as usize)) {
                    Some(k) => {
                        cursor.fetch_add(k, Ordering::Relaxed);
                        Some(slots[(c + k) % len] as usize)
                    }
                    None => self.scan(n, eligible, rng),
                }
            }
            // Not rebuilt for this set: stay correct, if slower.
            _ => sample_eligible(n, eligible, None, rng),
        }
    }
}

impl Weighted {
    /// A pick while endpoints ramp: draws and turns of ramping endpoints
    /// are thinned (see the type's docs).
    #[cold]
    fn pick_ramping(
        &self,
        set: &dyn LoadSet,
        eligible: &dyn Fn(usize) -> bool,
        ramping: &Ramping<'_>,
        rng: &mut Rng,
    ) -> Option<usize> {
        let n = set.len();
        match &self.plan {
            Plan::Alias(table) if table.len() == n => {
                for _ in 0..RANDOM_TRIES + super::slow_start::MAX_REFUSALS {
                    match table.sample(rng) {
                        Some(i) if eligible(i) && ramping.admit(set.load(i), rng) => {
                            return Some(i);
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
                self.scan(n, eligible, rng)
            }
            Plan::Schedule {
                slots,
                cursor,
                weights,
            } if weights.len() == n && !slots.is_empty() => {
                let len = slots.len();
                let c = cursor.fetch_add(1, Ordering::Relaxed);
                let turn = |k: usize| slots[(c + k) % len] as usize;
                let limit = len.min(SCHEDULE_WALK);
                match thin(
                    limit,
                    |k| eligible(turn(k)),
                    |k| ramping.admit(set.load(turn(k)), rng),
                ) {
                    Some(k) => {
                        if k > 0 {
                            cursor.fetch_add(k, Ordering::Relaxed);
                        }
                        Some(turn(k))
                    }
                    None => self.scan(n, eligible, rng),
                }
            }
            // Every weight 0: uniform, as without ramps.
            Plan::Schedule { weights, .. } if weights.len() == n => self.scan(n, eligible, rng),
            // Not rebuilt for this set.
            _ => sample_eligible(n, eligible, None, rng),
        }
    }
}

/// How far a round-robin pick walks the schedule before scanning instead.
const SCHEDULE_WALK: usize = 256;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// One full earliest-deadline-first cycle for `weights`, at most `cap` long.
fn schedule(weights: &[u32], cap: usize) -> Vec<u32> {
    let g = weights.iter().fold(0u64, |g, &w| gcd(g, w.into()));
    if g == 0 {
        return Vec::new();
    }
    let mut reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w) / g).collect();
    let total: u64 = reduced.iter().sum();
    if total > cap as u64 {
        for w in reduced.iter_mut().filter(|w| **w > 0) {
            *w = (u128::from(*w) * cap as u128 / u128::from(total)).max(1) as u64;
        }
    }
    // Turn k (1-based) of endpoint i is due at (2k - 1) / (2 wᵢ).
    #[derive(PartialEq, Eq)]
    struct Turn {
        num: u64,
        den: u64,
        index: u32,
        k: u64,
    }
    impl Ord for Turn {
        fn cmp(&self, other: &Self) -> CmpOrdering {
            // Reversed for a min-heap: earliest deadline, then lowest index.
            let a = u128::from(self.num) * u128::from(other.den);
            let b = u128::from(other.num) * u128::from(self.den);
            b.cmp(&a).then_with(|| other.index.cmp(&self.index))
        }
    }
    impl PartialOrd for Turn {
        fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
            Some(self.cmp(other))
        }
    }
    let mut heap: BinaryHeap<Turn> = reduced
        .iter()
        .enumerate()
        .filter(|(_, w)| **w > 0)
        .map(|(i, &w)| Turn {
            num: 1,
            den: 2 * w,
            index: i as u32,
            k: 1,
        })
        .collect();
    let len: u64 = reduced.iter().sum();
    let mut out = Vec::with_capacity(len as usize);
    while let Some(t) = heap.pop() {
        out.push(t.index);
        let w = reduced[t.index as usize];
        if t.k < w {
            heap.push(Turn {
                num: 2 * (t.k + 1) - 1,
                den: 2 * w,
                index: t.index,
                k: t.k + 1,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    fn assert_shares(b: &dyn Balancer, weights: &[u32], picks: usize, seed: u64) {
        let now = at();
        let mut rng = Rng::seeded(seed);
        let b = b.rebuild(weights);
        let set = loads(weights.len());
        let mut counts = vec![0f64; weights.len()];
        for _ in 0..picks {
            counts[b.pick(&now, &set, &all, &mut rng).unwrap()] += 1.0;
        }
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        for (i, &w) in weights.iter().enumerate() {
            let p = f64::from(w) / total;
            let sigma = crate::test_bounds::binomial_sd(picks as f64, p);
            let expected = picks as f64 * p;
            assert!(
                (counts[i] - expected).abs() <= 4.0 * sigma,
                "endpoint {i}: {} picks, expected {expected} ± {}",
                counts[i],
                4.0 * sigma
            );
        }
    }

    #[test]
    fn weighted_random_shares_within_four_sigma() {
        crate::rng::seed_thread_rng(201);
        assert_shares(&Weighted::random(), &[1, 2, 3, 10, 0, 7], 100_000, 21);
        assert_shares(&Weighted::random(), &[5, 5, 5], 30_000, 22);
    }

    #[test]
    fn weighted_round_robin_is_exact_per_cycle_and_interleaved() {
        crate::rng::seed_thread_rng(202);
        let weights = [5u32, 1, 3, 0, 1];
        let b = Weighted::round_robin().rebuild(&weights);
        let now = at();
        let mut rng = Rng::seeded(1);
        let set = loads(weights.len());
        for _cycle in 0..3 {
            let mut counts = [0u32; 5];
            for _ in 0..10 {
                counts[b.pick(&now, &set, &all, &mut rng).unwrap()] += 1;
            }
            assert_eq!(counts, weights);
        }
        // Smooth: the heavy endpoint never takes more than 2 turns in a row.
        let sched = schedule(&weights, Weighted::MAX_SCHEDULE);
        assert_eq!(sched.len(), 10);
        let longest = sched
            .chunk_by(|a, b| a == b)
            .map(<[u32]>::len)
            .max()
            .unwrap();
        assert!(longest <= 2, "{sched:?}");
    }

    #[test]
    fn schedule_reduces_by_gcd_and_caps_length() {
        crate::rng::seed_thread_rng(203);
        assert_eq!(schedule(&[100, 200], 1 << 16).len(), 3);
        let s = schedule(&[u32::MAX, 1, u32::MAX], 1000);
        assert!(s.len() <= 1002, "{}", s.len());
        assert!(s.contains(&1));
        assert!(schedule(&[0, 0], 10).is_empty());
    }

    #[test]
    fn all_zero_weights_are_uniform_among_eligible() {
        crate::rng::seed_thread_rng(204);
        for b in [Weighted::random(), Weighted::round_robin()] {
            let b = b.rebuild(&[0, 0, 0]);
            let now = at();
            let mut rng = Rng::seeded(9);
            let set = loads(3);
            let mut seen = [0; 3];
            for _ in 0..300 {
                seen[b.pick(&now, &set, &all, &mut rng).unwrap()] += 1;
            }
            assert!(seen.iter().all(|&c| c > 50), "{seen:?}");
        }
    }

    #[test]
    fn zero_weight_only_when_nothing_else_is_eligible() {
        crate::rng::seed_thread_rng(205);
        for b in [Weighted::random(), Weighted::round_robin()] {
            let b = b.rebuild(&[0, 3, 0]);
            let now = at();
            let mut rng = Rng::seeded(10);
            let set = loads(3);
            for _ in 0..200 {
                assert_eq!(b.pick(&now, &set, &all, &mut rng), Some(1));
            }
            let i = b.pick(&now, &set, &|i| i != 1, &mut rng).unwrap();
            assert!(i == 0 || i == 2);
        }
    }

    #[test]
    fn exclusions() {
        crate::rng::seed_thread_rng(206);
        check_exclusions(&Weighted::random());
        check_exclusions(&Weighted::round_robin());
    }
}
