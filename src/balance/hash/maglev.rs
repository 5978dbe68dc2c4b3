//! The Maglev lookup table (Eisenbud et al., NSDI 2016), with weights.

use super::mix::{reduce, stream};

/// Which slot of a table of `size` entries a key position falls in.
#[inline]
pub(super) fn slot(position: u64, size: usize) -> usize {
    reduce(position, size)
}

/// Fills a table of `size` entries (a prime) for `members`, given as
/// `(identity hash, weight)` in canonical order. Each entry holds a member's
/// rank in that order; members of weight 0 get none.
///
/// Member `i` prefers the slots `offset, offset + skip, offset + 2·skip, …`
/// (mod `size`), with `offset = ⌊s₀·size/2⁶⁴⌋` and
/// `skip = 1 + ⌊s₁·(size − 1)/2⁶⁴⌋`, where `s₀, s₁` are the first two values
/// of the stream seeded by its identity. As `size` is prime, this visits
/// every slot.
///
/// Each member's number of entries, its quota, is fixed first: its share of
/// `size` by weight, rounded by largest remainder (ties to the lower rank),
/// so every quota is within one entry of exact. Then in round `j = 0, 1, …`
/// every member still under quota looks at its `j`-th preferred slot and
/// takes it if it is free. This differs from the paper's loop, where a
/// member takes its next *free* preferred slot at each turn: there a removed
/// member shifts the turns of all the others, while here a slot goes to the
/// member that prefers it most among those still under quota, which (with
/// 100 members and 65,537 entries, measured) moves about half as many of
/// the other members' entries when one member leaves.
pub(super) fn populate(members: &[(u64, u32)], size: usize) -> Vec<u32> {
    debug_assert!(size >= 2);
    let mut quota = quotas(members.iter().map(|&(_, w)| w), size);
    if quota.iter().all(|&q| q == 0) {
        return Vec::new();
    }
    let size64 = size as u64;
    let mut next: Vec<u64> = Vec::with_capacity(members.len());
    let mut skip: Vec<u64> = Vec::with_capacity(members.len());
    for &(id, _) in members {
        next.push(reduce(stream(id, 0), size) as u64);
        skip.push(1 + reduce(stream(id, 1), size - 1) as u64);
    }
    let mut entries = vec![EMPTY; size];
    let mut active: Vec<u32> = (0..members.len() as u32)
        .filter(|&r| quota[r as usize] > 0)
        .collect();
    // Ends: the quotas sum to `size`, so a free slot exists while a member
    // is under quota, and every member's preferences cover every slot.
    while !active.is_empty() {
        active.retain(|&rank| {
            let r = rank as usize;
            let c = next[r];
            next[r] = if c + skip[r] >= size64 {
                c + skip[r] - size64
            } else {
                c + skip[r]
            };
            if entries[c as usize] == EMPTY {
                entries[c as usize] = rank;
                quota[r] -= 1;
            }
            quota[r] > 0
        });
    }
    entries
}

const EMPTY: u32 = u32::MAX;

/// Apportions `size` entries by weight, largest remainder first (ties to
/// the lower rank): each quota is `⌊size·w/W⌋` or one more, and they sum to
/// `size` (all zero when every weight is 0).
pub(super) fn quotas(weights: impl Iterator<Item = u32> + Clone, size: usize) -> Vec<usize> {
    let total: u128 = weights.clone().map(u128::from).sum();
    if total == 0 {
        return weights.map(|_| 0).collect();
    }
    let exact: Vec<u128> = weights.map(|w| size as u128 * u128::from(w)).collect();
    let mut quota: Vec<usize> = exact.iter().map(|&e| (e / total) as usize).collect();
    let left = size - quota.iter().sum::<usize>();
    let mut by_remainder: Vec<usize> = (0..quota.len()).collect();
    by_remainder.sort_by_key(|&r| (std::cmp::Reverse(exact[r] % total), r));
    for &r in &by_remainder[..left] {
        quota[r] += 1;
    }
    quota
}

/// True when `n` is prime (trial division; `n` is at most a few million).
pub(super) fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(entries: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &e in entries {
            c[e as usize] += 1;
        }
        c
    }

    #[test]
    fn every_slot_is_filled_and_equal_weights_differ_by_one_at_most() {
        let members: Vec<(u64, u32)> = (0..7).map(|i| (stream(99, i), 1)).collect();
        let entries = populate(&members, 101);
        assert!(entries.iter().all(|&e| (e as usize) < members.len()));
        let c = counts(&entries, 7);
        let (lo, hi) = (c.iter().min().unwrap(), c.iter().max().unwrap());
        assert!(hi - lo <= 1, "{c:?}");
    }

    #[test]
    fn weights_share_the_table_in_proportion_up_to_rounding() {
        let weights = [1u32, 2, 3, 0, 10];
        let members: Vec<(u64, u32)> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| (stream(7, i as u64), w))
            .collect();
        let size = 1_009;
        let c = counts(&populate(&members, size), weights.len());
        assert_eq!(c, quotas(weights.iter().copied(), size));
        let total: u32 = weights.iter().sum();
        for (i, &w) in weights.iter().enumerate() {
            let exact = size as f64 * f64::from(w) / f64::from(total);
            assert!(
                (c[i] as f64 - exact).abs() < 1.0,
                "{i}: {} vs {exact}",
                c[i]
            );
        }
    }

    #[test]
    fn quotas_sum_to_the_size_and_round_by_largest_remainder() {
        assert_eq!(quotas([1u32, 1, 1].into_iter(), 11), [4, 4, 3]);
        assert_eq!(quotas([1u32, 0, 2].into_iter(), 10), [3, 0, 7]);
        assert_eq!(quotas([u32::MAX, 1].into_iter(), 1_021), [1_021, 0]);
        assert_eq!(quotas([0u32, 0].into_iter(), 7), [0, 0]);
        let q = quotas((1..=50u32).map(|w| w * 7_919), 65_537);
        assert_eq!(q.iter().sum::<usize>(), 65_537);
    }

    #[test]
    fn no_positive_weight_gives_an_empty_table() {
        assert!(populate(&[(1, 0), (2, 0)], 13).is_empty());
        assert!(populate(&[], 13).is_empty());
    }

    #[test]
    fn primes() {
        let small: Vec<usize> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65_537));
        assert!(!is_prime(65_535));
        assert!(!is_prime(1_021 * 1_031));
    }
}
