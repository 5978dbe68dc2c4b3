//! The hash ring (Karger et al., 1997), with weights scaling virtual nodes.

use super::mix::stream;

/// A ring: sorted points and, for each, the rank of the member owning it.
pub(super) struct Points {
    pub points: Vec<u64>,
    pub owners: Vec<u32>,
}

/// How many points each member gets: `w · k` for weight `w` and
/// `points_per_weight = k`, unless the ring would exceed `max_points`; then
/// `max(1, round(w · max_points / W))` (W the total weight), so every member
/// of positive weight is on the ring. Members of weight 0 get none.
pub(super) fn replicas(
    weights: impl Iterator<Item = u32> + Clone,
    points_per_weight: u32,
    max_points: usize,
) -> Vec<u64> {
    let total: u128 = weights.clone().map(u128::from).sum();
    let fits = total * u128::from(points_per_weight) <= max_points as u128;
    weights
        .map(|w| {
            let w = u128::from(w);
            if w == 0 {
                0
            } else if fits {
                (w * u128::from(points_per_weight)) as u64
            } else {
                ((2 * max_points as u128 * w + total) / (2 * total)).max(1) as u64
            }
        })
        .collect()
}

/// Builds the ring for `members`, given as `(identity hash, weight)` in
/// canonical order ([`replicas`] points each). Member `i`'s `r`-th point is
/// the `r`-th value of the stream seeded by its identity, so its points
/// depend only on its identity and its point count: while the ring is under
/// `max_points`, adding or removing a member moves only the keys of the arcs
/// it gains or loses. Equal points (a 64-bit collision) go to the lower rank.
pub(super) fn build(members: &[(u64, u32)], points_per_weight: u32, max_points: usize) -> Points {
    let counts = replicas(
        members.iter().map(|&(_, w)| w),
        points_per_weight,
        max_points,
    );
    let total: u64 = counts.iter().sum();
    let mut all: Vec<(u64, u32)> = Vec::with_capacity(total as usize);
    for (rank, (&(id, _), &count)) in members.iter().zip(&counts).enumerate() {
        all.extend((0..count).map(|r| (stream(id, r), rank as u32)));
    }
    all.sort_unstable();
    let (points, owners) = all.into_iter().unzip();
    Points { points, owners }
}

/// The index of the point owning `position`: the first point at or after it,
/// wrapping to the first point. `points` must not be empty.
#[inline]
pub(super) fn slot(points: &[u64], position: u64) -> usize {
    let s = points.partition_point(|&p| p < position);
    if s == points.len() { 0 } else { s }
}

/// Each point's arc of the key space as a share of 2⁶⁴: point `j` owns the
/// positions after point `j − 1` up to and including its own.
pub(super) fn arc_shares(points: &[u64]) -> impl Iterator<Item = f64> + '_ {
    let scale = 1.0 / 2f64.powi(64);
    points.iter().enumerate().map(move |(j, &p)| {
        let prev = if j == 0 {
            points[points.len() - 1]
        } else {
            points[j - 1]
        };
        let arc = if points.len() == 1 {
            u64::MAX as f64 + 1.0
        } else {
            p.wrapping_sub(prev) as f64
        };
        arc * scale
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_scale_with_weight_and_keep_every_positive_member() {
        // Under the cap: k points per unit of weight, whatever the others.
        assert_eq!(
            replicas([1u32, 2, 0, 1].into_iter(), 10, 1_000),
            [10, 20, 0, 10]
        );
        // Over it: shares of the cap, at least one point each.
        let r = replicas([1u32, 2, 0, 1].into_iter(), 1_000, 1_000);
        assert_eq!(r, [250, 500, 0, 250]);
        let r = replicas([u32::MAX, 1].into_iter(), 512, 100);
        assert_eq!(r, [100, 1]);
    }

    #[test]
    fn arcs_cover_the_key_space_once() {
        let ring = build(&[(1, 1), (2, 3), (3, 2)], 100, 1 << 20);
        assert_eq!(ring.points.len(), 600);
        assert!(ring.points.windows(2).all(|w| w[0] <= w[1]));
        let sum: f64 = arc_shares(&ring.points).sum();
        assert!((sum - 1.0).abs() < 1e-9, "{sum}");
        let one = build(&[(5, 1)], 1, 1);
        assert_eq!(arc_shares(&one.points).collect::<Vec<_>>(), [1.0]);
    }

    #[test]
    fn a_position_goes_to_the_next_point_clockwise() {
        let points = [10, 20, 30];
        assert_eq!(slot(&points, 0), 0);
        assert_eq!(slot(&points, 10), 0);
        assert_eq!(slot(&points, 11), 1);
        assert_eq!(slot(&points, 30), 2);
        assert_eq!(slot(&points, 31), 0);
    }
}
