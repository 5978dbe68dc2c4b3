use super::{Balancer, LoadSet, PickContext, sample_eligible};
use crate::rng::Rng;

/// Uniformly random choice among the eligible endpoints.
#[derive(Debug, Default, Clone, Copy)]
pub struct Random;

impl Random {
    /// A random balancer.
    pub fn new() -> Self {
        Random
    }
}

impl Balancer for Random {
    fn name(&self) -> &'static str {
        "random"
    }

    fn rebuild(&self, _weights: &[u32]) -> Box<dyn Balancer> {
        Box::new(Random)
    }

    fn pick(
        &self,
        _at: &PickContext,
        set: &dyn LoadSet,
        eligible: &dyn Fn(usize) -> bool,
        rng: &mut Rng,
    ) -> Option<usize> {
        sample_eligible(set.len(), eligible, None, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    #[test]
    fn exclusions() {
        crate::rng::seed_thread_rng(301);
        check_exclusions(&Random);
    }

    #[test]
    fn shares_are_uniform_within_four_sigma() {
        crate::rng::seed_thread_rng(302);
        let now = at();
        let mut rng = Rng::seeded(5);
        let (n, picks) = (8usize, 80_000usize);
        let set = loads(n);
        let mut counts = vec![0f64; n];
        for _ in 0..picks {
            counts[Random.pick(&now, &set, &all, &mut rng).unwrap()] += 1.0;
        }
        let p = 1.0 / n as f64;
        let sigma = (picks as f64 * p * (1.0 - p)).sqrt();
        for c in counts {
            assert!((c - picks as f64 * p).abs() < 4.0 * sigma, "{c}");
        }
    }
}
