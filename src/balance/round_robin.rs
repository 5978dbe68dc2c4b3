use super::{Balancer, LoadSet, PickContext, Ramping};
use crate::rng::{Rng, with_thread_rng};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Round-robin: each eligible endpoint in turn.
///
/// One atomic cursor shared by all callers, starting at a random position for
/// each new set so that many clients do not all start on the same endpoint.
/// On a stable set, every `n` picks visit each of the `n` eligible endpoints
/// exactly once (from one thread; concurrent callers interleave).
///
/// With slow start, a ramping endpoint's turn is kept with probability
/// equal to its weight factor, else the pick takes the next turn (which
/// moves the cursor past it, so the others still get one turn each); after
/// [`MAX_REFUSALS`](super::slow_start::MAX_REFUSALS) refusals in one pick
/// the next eligible endpoint is taken anyway.
#[derive(Debug, Default)]
pub struct RoundRobin {
    cursor: AtomicUsize,
}

impl RoundRobin {
    /// A round-robin balancer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Balancer for RoundRobin {
    fn name(&self) -> &'static str {
        "round_robin"
    }

    fn rebuild(&self, weights: &[u32]) -> Box<dyn Balancer> {
        let start = with_thread_rng(|rng| rng.below(weights.len().max(1)));
        Box::new(RoundRobin {
            cursor: AtomicUsize::new(start),
        })
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
        let c = self.cursor.fetch_add(1, Ordering::Relaxed);
        if let Some(ramping) = at.ramping() {
            return self.pick_ramping(c, set, eligible, &ramping, rng);
        }
        let first = c % n;
        if eligible(first) {
            return Some(first);
        }
        // Skip the ineligible run and move the cursor past it, so the next
        // caller does not land on the endpoint we are about to return.
        let skip = (1..n).find(|&k| eligible((c + k) % n))?;
        self.cursor.fetch_add(skip, Ordering::Relaxed);
        Some((c + skip) % n)
    }
}

impl RoundRobin {
    /// A pick from cursor `c` while endpoints ramp: turns of ramping
    /// endpoints are thinned (see the type's docs).
    #[cold]
    fn pick_ramping(
        &self,
        c: usize,
        set: &dyn LoadSet,
        eligible: &dyn Fn(usize) -> bool,
        ramping: &Ramping<'_>,
        rng: &mut Rng,
    ) -> Option<usize> {
        let n = set.len();
        let turn = |k: usize| (c + k) % n;
        let k = super::slow_start::thin(
            n,
            |k| eligible(turn(k)),
            |k| ramping.admit(set.load(turn(k)), rng),
        )?;
        if k > 0 {
            self.cursor.fetch_add(k, Ordering::Relaxed);
        }
        Some(turn(k))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    #[test]
    fn visits_each_endpoint_once_per_cycle() {
        crate::rng::seed_thread_rng(101);
        let now = at();
        let mut rng = Rng::seeded(3);
        for n in [1, 2, 5, 17] {
            let rr = RoundRobin::new().rebuild(&vec![1; n]);
            let set = loads(n);
            for _cycle in 0..4 {
                let mut seen = vec![0; n];
                for _ in 0..n {
                    seen[rr.pick(&now, &set, &all, &mut rng).unwrap()] += 1;
                }
                assert!(seen.iter().all(|&c| c == 1), "n={n}: {seen:?}");
            }
        }
    }

    #[test]
    fn skips_ineligible_without_doubling_the_next() {
        crate::rng::seed_thread_rng(102);
        let now = at();
        let mut rng = Rng::seeded(4);
        let rr = RoundRobin::new().rebuild(&[1; 5]);
        let set = loads(5);
        let eligible = |i: usize| i != 1 && i != 2;
        for _cycle in 0..5 {
            let mut seen = [0; 5];
            for _ in 0..3 {
                seen[rr.pick(&now, &set, &eligible, &mut rng).unwrap()] += 1;
            }
            assert_eq!(seen, [1, 0, 0, 1, 1]);
        }
    }

    #[test]
    fn exclusions() {
        crate::rng::seed_thread_rng(103);
        check_exclusions(&RoundRobin::new());
    }
}
