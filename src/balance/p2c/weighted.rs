//! P2C over endpoints of unequal weight: the two candidates are drawn in
//! proportion to weight, and the less loaded one is taken.
//!
//! Drawing by weight is what gives each endpoint its share: with equal
//! loads, an endpoint of weight `w` is a candidate `w` times as often and
//! wins half its comparisons, like any other. So the loads are compared as
//! they are; dividing them by weight as well would count the weight twice
//! and starve a light endpoint (an aperture's partly covered servers, say)
//! whenever loads are even. With all weights equal, [`P2c`] is rebuilt as
//! itself: this type and its alias table exist only when weights differ.

use super::super::alias::AliasTable;
use super::super::{AttemptEnd, Balancer, Load, LoadSet, PickContext, RANDOM_TRIES};
use super::P2c;
use crate::rng::Rng;

/// [`P2c`] rebuilt for unequal weights (see the [module docs](self)).
#[derive(Debug)]
pub(super) struct WeightedP2c {
    p2c: P2c,
    table: AliasTable,
}

impl WeightedP2c {
    pub(super) fn new(p2c: P2c, weights: &[u32]) -> Self {
        WeightedP2c {
            p2c,
            table: AliasTable::new(weights),
        }
    }

    /// An eligible index drawn by weight, other than `avoid`: a few draws
    /// from the table, then an exact scan.
    fn draw(
        &self,
        eligible: &dyn Fn(usize) -> bool,
        avoid: Option<usize>,
        rng: &mut Rng,
    ) -> Option<usize> {
        let ok = |i: usize| Some(i) != avoid && eligible(i);
        for _ in 0..RANDOM_TRIES {
            match self.table.sample(rng) {
                Some(i) if ok(i) => return Some(i),
                Some(_) => {}
                None => break,
            }
        }
        self.table.scan(&ok, rng)
    }
}

impl Balancer for WeightedP2c {
    fn name(&self) -> &'static str {
        self.p2c.name()
    }

    fn rebuild(&self, weights: &[u32]) -> Box<dyn Balancer> {
        self.p2c.rebuild(weights)
    }

    fn pick(
        &self,
        at: &PickContext,
        set: &dyn LoadSet,
        eligible: &dyn Fn(usize) -> bool,
        rng: &mut Rng,
    ) -> Option<usize> {
        if set.len() != self.table.len() {
            // Not rebuilt for this set: stay correct, if unweighted.
            return self.p2c.pick(at, set, eligible, rng);
        }
        let a = self.draw(eligible, None, rng)?;
        let Some(b) = self.draw(eligible, Some(a), rng) else {
            return Some(a);
        };
        // The draw falls back to weight-0 endpoints only when no other is
        // eligible; one of those never beats an endpoint with a weight.
        match (set.load(a).weight(), set.load(b).weight()) {
            (0, wb) if wb > 0 => return Some(b),
            (wa, 0) if wa > 0 => return Some(a),
            _ => {}
        }
        if let Some(ramping) = at.ramping() {
            // Slow start, as in `P2c::pick`: the cost (without the weight,
            // which the draw applied) over the ramp's weight factor.
            let cost =
                |l: &Load| self.p2c.cost(l, at.now) * f64::from(l.weight()) / ramping.factor(l);
            let (la, lb) = (set.load(a), set.load(b));
            return Some(if cost(lb) < cost(la) { b } else { a });
        }
        // `a` on a tie: both were drawn the same way. The weight is not
        // applied again.
        if self.p2c.compare(set.load(a), set.load(b), at.now, false) {
            Some(b)
        } else {
            Some(a)
        }
    }

    fn observe(&self, load: &Load, end: &AttemptEnd) {
        self.p2c.observe(load, end);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::super::test_util::*;
    use super::*;

    /// With even loads, each endpoint's share of picks is its weight's,
    /// within 4.5 binomial standard deviations.
    #[test]
    fn even_loads_give_each_endpoint_its_weights_share() {
        let weights = [1000, 500, 1000, 250, 1000];
        for p2c in [P2c::pending(), P2c::peak_ewma()] {
            let b = p2c.rebuild(&weights);
            let set: Vec<Load> = weights
                .iter()
                .map(|&w| Load::new(w, Instant::now()))
                .collect();
            let mut rng = Rng::seeded(31);
            let picks = 100_000;
            let mut counts = [0u64; 5];
            for _ in 0..picks {
                counts[b.pick(&at(), &set, &all, &mut rng).unwrap()] += 1;
            }
            let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
            for (i, &w) in weights.iter().enumerate() {
                let p = f64::from(w) / total;
                let sigma = crate::test_bounds::binomial_sd(picks as f64, p);
                let expected = picks as f64 * p;
                assert!(
                    (counts[i] as f64 - expected).abs() <= 4.5 * sigma,
                    "{}: endpoint {i} picked {} times, expected {expected:.0} ± {:.0}",
                    p2c.name(),
                    counts[i],
                    4.5 * sigma
                );
            }
        }
    }

    #[test]
    fn the_less_loaded_candidate_still_wins() {
        let b = P2c::pending().rebuild(&[2, 1]);
        let set = vec![Load::new(2, Instant::now()), Load::new(1, Instant::now())];
        for _ in 0..10 {
            set[0].start();
        }
        let mut rng = Rng::seeded(32);
        // Two endpoints: every pick compares both, and the idle one wins
        // although it weighs half.
        for _ in 0..100 {
            assert_eq!(b.pick(&at(), &set, &all, &mut rng), Some(1));
        }
    }

    #[test]
    fn only_unequal_weights_build_the_weighted_form() {
        let weighted = |w: &[u32]| format!("{:?}", P2c::peak_ewma().rebuild(w)).contains("table");
        assert!(weighted(&[1000, 500]));
        assert!(!weighted(&[7, 7, 7]));
        assert!(!weighted(&[]));
        assert!(!weighted(&[0, 0]));
        // `check_exclusions` (p2c.rs) rebuilds with weights 1 to 5: it
        // covers this form's exclusions.
    }

    #[test]
    fn zero_weights_are_picked_only_when_nothing_else_is_eligible() {
        let b = P2c::pending().rebuild(&[0, 5, 0, 5]);
        let set = loads(4);
        let mut rng = Rng::seeded(33);
        for _ in 0..200 {
            let i = b.pick(&at(), &set, &all, &mut rng).unwrap();
            assert!(i == 1 || i == 3);
        }
        let i = b
            .pick(&at(), &set, &|i| i == 0 || i == 2, &mut rng)
            .unwrap();
        assert!(i == 0 || i == 2);
        // A loaded endpoint with a weight still beats an idle one without.
        let b = P2c::pending().rebuild(&[0, 5]);
        let set = vec![Load::new(0, Instant::now()), Load::new(5, Instant::now())];
        for _ in 0..10 {
            set[1].start();
        }
        for _ in 0..200 {
            assert_eq!(b.pick(&at(), &set, &all, &mut rng), Some(1));
        }
    }
}
