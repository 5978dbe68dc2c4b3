//! Walker's alias method (Vose's construction): an index drawn in
//! proportion to its weight in O(1), from one 64-bit random number.
//!
//! Built in O(n) when the endpoint set changes, never on the pick path.
//! Each column `i` keeps a threshold and an alias: a draw picks a column
//! uniformly with the high 32 bits of the random number (multiply-shift)
//! and flips the column's biased coin with the low 32 bits. Column
//! probabilities are held to 2⁻³² and the column choice is uniform to
//! `n / 2³²`, both far under any sampling noise a balancer can see.

use crate::rng::Rng;

/// One column of the table.
#[derive(Debug, Clone, Copy)]
struct Column {
    /// The column keeps its own index when the low 32 bits are below this
    /// (out of 2³²; 2³² keeps it always).
    threshold: u64,
    /// The index the column gives otherwise.
    alias: u32,
}

/// An alias table over `n` weights (see the [module docs](self)).
#[derive(Debug, Clone)]
pub(crate) struct AliasTable {
    columns: Vec<Column>,
    weights: Vec<u32>,
    total: u64,
}

const ONE: f64 = (1u64 << 32) as f64;

impl AliasTable {
    /// The table for `weights` (at most `u32::MAX` of them). Weight-0
    /// entries are never drawn unless every weight is 0, and then
    /// [`sample`](Self::sample) returns `None`.
    pub(crate) fn new(weights: &[u32]) -> Self {
        let n = weights.len();
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut columns: Vec<Column> = (0..n as u32)
            .map(|i| Column {
                threshold: 1 << 32,
                alias: i,
            })
            .collect();
        if total > 0 {
            let mut scaled: Vec<f64> = weights
                .iter()
                .map(|&w| f64::from(w) * n as f64 / total as f64)
                .collect();
            let (mut small, mut large): (Vec<usize>, Vec<usize>) =
                (0..n).partition(|&i| scaled[i] < 1.0);
            while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
                columns[s] = Column {
                    threshold: (scaled[s] * ONE).round() as u64,
                    alias: l as u32,
                };
                scaled[l] -= 1.0 - scaled[s];
                if scaled[l] < 1.0 {
                    large.pop();
                    small.push(l);
                }
            }
            // Columns left in either list are 1 up to rounding: they keep
            // their index. A zero weight must never be drawn, so its column
            // always defers to an alias of positive weight.
            let positive = weights.iter().position(|&w| w > 0).unwrap_or(0) as u32;
            for (i, &w) in weights.iter().enumerate() {
                if w == 0 {
                    let column = &mut columns[i];
                    column.threshold = 0;
                    if weights[column.alias as usize] == 0 {
                        column.alias = positive;
                    }
                }
            }
        }
        AliasTable {
            columns,
            weights: weights.to_vec(),
            total,
        }
    }

    /// The number of weights.
    pub(crate) fn len(&self) -> usize {
        self.columns.len()
    }

    /// Weight `i` as given.
    #[inline]
    pub(crate) fn weight(&self, i: usize) -> u32 {
        self.weights[i]
    }

    /// An index drawn in proportion to its weight, or `None` when every
    /// weight is 0 (or there are none).
    #[inline]
    pub(crate) fn sample(&self, rng: &mut Rng) -> Option<usize> {
        if self.total == 0 {
            return None;
        }
        let r = rng.next_u64();
        let i = (((r >> 32) * self.columns.len() as u64) >> 32) as usize;
        let column = self.columns[i];
        Some(if (r & 0xffff_ffff) < column.threshold {
            i
        } else {
            column.alias as usize
        })
    }

    /// An index among those `eligible` accepts, drawn in proportion to
    /// weight by a scan ([`scan`]).
    pub(crate) fn scan(&self, eligible: &dyn Fn(usize) -> bool, rng: &mut Rng) -> Option<usize> {
        scan(self.len(), &|i| u64::from(self.weights[i]), eligible, rng)
    }
}

/// An index below `n` among those `eligible` accepts, drawn in proportion
/// to `weight` by a scan (O(n)); uniform among them when all their weights
/// are 0; `None` when none is eligible.
pub(crate) fn scan(
    n: usize,
    weight: &dyn Fn(usize) -> u64,
    eligible: &dyn Fn(usize) -> bool,
    rng: &mut Rng,
) -> Option<usize> {
    let total: u64 = (0..n).filter(|&i| eligible(i)).map(weight).sum();
    if total == 0 {
        return super::sample_eligible(n, eligible, None, rng);
    }
    let mut r = ((u128::from(rng.next_u64()) * u128::from(total)) >> 64) as u64;
    for i in (0..n).filter(|&i| eligible(i)) {
        let w = weight(i);
        if r < w {
            return Some(i);
        }
        r -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Draw counts within 4.5 binomial standard deviations of the weights.
    #[test]
    fn draws_follow_the_weights() {
        for (weights, seed) in [
            (vec![1u32, 2, 3, 10, 0, 7], 1),
            (vec![5, 5, 5], 2),
            (vec![1000, 500, 1000, 1, 1000], 3),
            (vec![0, 0, 9], 4),
        ] {
            let table = AliasTable::new(&weights);
            let mut rng = Rng::seeded(seed);
            let draws = 200_000;
            let mut counts = vec![0u64; weights.len()];
            for _ in 0..draws {
                counts[table.sample(&mut rng).unwrap()] += 1;
            }
            let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
            for (i, &w) in weights.iter().enumerate() {
                let p = f64::from(w) / total;
                let sigma = crate::test_bounds::binomial_sd(draws as f64, p);
                let expected = draws as f64 * p;
                assert!(
                    (counts[i] as f64 - expected).abs() <= 4.5 * sigma,
                    "{weights:?}: index {i} drawn {} times, expected {expected} ± {}",
                    counts[i],
                    4.5 * sigma
                );
                if w == 0 {
                    assert_eq!(counts[i], 0, "a zero weight was drawn");
                }
            }
        }
    }

    #[test]
    fn all_zero_or_empty_draws_nothing_and_scan_is_uniform() {
        let mut rng = Rng::seeded(5);
        assert_eq!(AliasTable::new(&[]).sample(&mut rng), None);
        let zeros = AliasTable::new(&[0, 0, 0]);
        assert_eq!(zeros.sample(&mut rng), None);
        let mut seen = [0; 3];
        let draws = 300;
        for _ in 0..draws {
            seen[zeros.scan(&|_| true, &mut rng).unwrap()] += 1;
        }
        let least = crate::test_bounds::at_least(f64::from(draws), 1.0 / 3.0);
        assert!(seen.iter().all(|&c| f64::from(c) >= least), "{seen:?}");
        let table = AliasTable::new(&[3, 0, 1]);
        assert_eq!(table.scan(&|i| i != 0, &mut rng), Some(2));
        assert_eq!(table.scan(&|_| false, &mut rng), None);
    }
}
