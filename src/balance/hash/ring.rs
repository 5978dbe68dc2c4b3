//! The hash ring (Karger et al., 1997), with weights scaling virtual nodes.

use super::mix::stream;

/// A built ring: its points in order, each with its owner (an index into
/// the caller's set), and a bucket index that makes finding a key's point
/// O(1) expected.
///
/// Points are the top 32 bits of the members' stream values, so a point and
/// its owner fit in 8 bytes and the ring of 65,536 points in 512 KiB; a key
/// is placed by the top 32 bits of its position. (A 32-bit collision, about
/// one in a ring of 65,536 points, goes to the lower rank.) The key space
/// is cut into `B` equal buckets, `B` a power of two near a quarter of the
/// point count, and `starts[b]` is the first point in or after bucket `b`:
/// a lookup reads its bucket's bounds and binary-searches the few points
/// between them.
#[derive(Debug, Clone, Default)]
pub(super) struct RingIndex {
    entries: Vec<Entry>,
    starts: Vec<u32>,
    shift: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    point: u32,
    owner: u32,
}

impl RingIndex {
    /// The index over `entries`, sorted by point.
    fn new(entries: Vec<Entry>) -> Self {
        let buckets = (entries.len() / 4).next_power_of_two().max(2);
        let shift = 32 - buckets.trailing_zeros();
        let mut starts = Vec::with_capacity(buckets + 1);
        let mut j = 0;
        for b in 0..buckets as u32 {
            while j < entries.len() && entries[j].point >> shift < b {
                j += 1;
            }
            starts.push(j as u32);
        }
        starts.push(entries.len() as u32);
        RingIndex {
            entries,
            starts,
            shift,
        }
    }

    /// How many points.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The index of the point owning `position`: the first point at or after
    /// its top 32 bits, wrapping to the first point. The ring must not be
    /// empty.
    #[inline]
    pub fn slot(&self, position: u64) -> usize {
        let key = (position >> 32) as u32;
        let b = (key >> self.shift) as usize;
        let (lo, hi) = (self.starts[b] as usize, self.starts[b + 1] as usize);
        let s = lo + self.entries[lo..hi].partition_point(|e| e.point < key);
        if s == self.entries.len() { 0 } else { s }
    }

    /// The owner of point `slot`.
    #[inline]
    pub fn owner(&self, slot: usize) -> u32 {
        self.entries[slot].owner
    }

    /// Each point's owner and arc of the key space as a share of it: point
    /// `j` owns the positions after point `j − 1` up to and including its
    /// own.
    pub fn arcs(&self) -> impl Iterator<Item = (u32, f64)> + '_ {
        let e = &self.entries;
        let scale = 1.0 / 2f64.powi(32);
        e.iter().enumerate().map(move |(j, x)| {
            let prev = e[if j == 0 { e.len() - 1 } else { j - 1 }].point;
            let arc = if e.len() == 1 {
                1.0
            } else {
                f64::from(x.point.wrapping_sub(prev)) * scale
            };
            (x.owner, arc)
        })
    }
}

/// The sizes that set a ring's point counts.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sizes {
    /// `k`: points per unit of weight.
    pub points_per_weight: u32,
    /// The smallest ring, for small sets.
    pub min_points: usize,
    /// The largest ring.
    pub max_points: usize,
}

/// How many points each member gets: `w · k` for weight `w` and
/// `points_per_weight = k` while the ring stays between `min_points` and
/// `max_points`; else `max(1, round(w · R / W))` for `R` the bound crossed
/// (W the total weight), so every member of positive weight is on the
/// ring. Members of weight 0 get none.
pub(super) fn replicas(weights: impl Iterator<Item = u32> + Clone, sizes: Sizes) -> Vec<u64> {
    let total: u128 = weights.clone().map(u128::from).sum();
    let natural = total * u128::from(sizes.points_per_weight);
    let scale_to = if natural > sizes.max_points as u128 {
        Some(sizes.max_points as u128)
    } else if natural < sizes.min_points as u128 {
        Some(sizes.min_points as u128)
    } else {
        None
    };
    weights
        .map(|w| {
            let w = u128::from(w);
            match scale_to {
                _ if w == 0 => 0,
                None => (w * u128::from(sizes.points_per_weight)) as u64,
                Some(r) => ((2 * r * w + total) / (2 * total)).max(1) as u64,
            }
        })
        .collect()
}

/// Builds the ring for `members`, given as `(identity hash, weight)` in
/// canonical order ([`replicas`] points each); `index[rank]` is the caller's
/// index of the member of that rank. Member `i`'s `r`-th point is the top
/// half of the `r`-th value of the stream seeded by its identity, so its
/// points depend only on its identity and its point count: while the ring
/// is between its minimum and maximum sizes, adding or removing a member
/// moves only the keys of the arcs it gains or loses.
pub(super) fn build(members: &[(u64, u32)], index: &[u32], sizes: Sizes) -> RingIndex {
    let counts = replicas(members.iter().map(|&(_, w)| w), sizes);
    let total: u64 = counts.iter().sum();
    // Point and rank packed in one integer, so the sort compares once.
    let mut all: Vec<u64> = Vec::with_capacity(total as usize);
    for (rank, (&(id, _), &count)) in members.iter().zip(&counts).enumerate() {
        all.extend((0..count).map(|r| stream(id, r) & !0xffff_ffff | rank as u64));
    }
    // By point, then rank; then ranks become the caller's indices.
    all.sort_unstable();
    let all = all
        .into_iter()
        .map(|x| Entry {
            point: (x >> 32) as u32,
            owner: index[x as u32 as usize],
        })
        .collect();
    RingIndex::new(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(points_per_weight: u32, min_points: usize, max_points: usize) -> Sizes {
        Sizes {
            points_per_weight,
            min_points,
            max_points,
        }
    }

    #[test]
    fn replicas_scale_with_weight_and_keep_every_positive_member() {
        // Between the bounds: k points per unit of weight, whatever the
        // others.
        assert_eq!(
            replicas([1u32, 2, 0, 1].into_iter(), sizes(10, 1, 1_000)),
            [10, 20, 0, 10]
        );
        // Over the cap: shares of the cap, at least one point each.
        let r = replicas([1u32, 2, 0, 1].into_iter(), sizes(1_000, 1, 1_000));
        assert_eq!(r, [250, 500, 0, 250]);
        let r = replicas([u32::MAX, 1].into_iter(), sizes(512, 1, 100));
        assert_eq!(r, [100, 1]);
        // Under the minimum: shares of the minimum.
        let r = replicas([1u32, 3].into_iter(), sizes(10, 1_000, 2_000));
        assert_eq!(r, [250, 750]);
        // The defaults: the minimum binds for a total weight of 1 only.
        let d = sizes(512, 1_024, 1 << 16);
        assert_eq!(replicas([1u32].into_iter(), d), [1_024]);
        assert_eq!(replicas([1u32, 1].into_iter(), d), [512, 512]);
    }

    #[test]
    fn arcs_cover_the_key_space_once() {
        let ring = build(
            &[(1, 1), (2, 3), (3, 2)],
            &[7, 8, 9],
            sizes(100, 1, 1 << 20),
        );
        assert_eq!(ring.len(), 600);
        assert!(ring.entries.windows(2).all(|w| w[0].point <= w[1].point));
        let mut shares = [0.0; 3];
        ring.arcs()
            .for_each(|(o, arc)| shares[o as usize - 7] += arc);
        let sum: f64 = shares.iter().sum();
        assert!((sum - 1.0).abs() < 1e-9, "{sum}");
        let one = build(&[(5, 1)], &[0], sizes(1, 1, 1));
        assert_eq!(one.arcs().collect::<Vec<_>>(), [(0, 1.0)]);
    }

    fn entries(points: &[u32]) -> Vec<Entry> {
        let owner = 0;
        points.iter().map(|&point| Entry { point, owner }).collect()
    }

    #[test]
    fn a_position_goes_to_the_next_point_clockwise() {
        let top = 1u32 << 31;
        let points = [10, 20, top + 5, top + 5, u32::MAX - 1];
        let ring = RingIndex::new(entries(&points));
        let at = |p: u32| u64::from(p) << 32;
        let cases = [
            (0, 0),
            (at(10), 0),
            (at(10) + 1, 0),
            (at(11), 1),
            (at(21), 2),
            (at(top), 2),
            (at(top + 5), 2),
            (at(top + 6), 4),
            (u64::MAX, 0),
        ];
        for (position, slot) in cases {
            assert_eq!(ring.slot(position), slot, "{position:#x}");
        }
    }

    #[test]
    fn the_bucket_index_agrees_with_a_plain_binary_search() {
        let mut rng = crate::rng::Rng::seeded(12);
        for n in [1usize, 2, 3, 100, 1_000] {
            let mut points: Vec<u32> = (0..n).map(|_| rng.next_u64() as u32).collect();
            points.sort_unstable();
            let ring = RingIndex::new(entries(&points));
            for _ in 0..5_000 {
                let p = rng.next_u64();
                let s = points.partition_point(|&x| x < (p >> 32) as u32);
                assert_eq!(ring.slot(p), if s == n { 0 } else { s });
            }
        }
    }
}
