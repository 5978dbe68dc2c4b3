//! Bounded loads (Mirrokni, Thorup and Zadimoghaddam, SODA 2018).

use crate::error::BuildError;

/// A load bound with factor `c`, kept in thousandths so that the test is
/// exact integer arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Bound {
    milli: u64,
}

impl Bound {
    /// The largest factor accepted: 100 (beyond it the bound never binds in
    /// practice; leave bounded loads off instead).
    pub const MAX_FACTOR: f64 = 100.0;

    /// A bound with factor `c`, rounded to a thousandth; `c` must be above 1.
    pub fn new(c: f64) -> Result<Self, BuildError> {
        let invalid = |why: &str| {
            Err(BuildError::new(
                "hash.bounded_load",
                format!("the factor {why}, got {c}"),
            ))
        };
        if !c.is_finite() || c > Self::MAX_FACTOR {
            return invalid("must be a finite number up to 100");
        }
        let milli = (c * 1000.0).round();
        if milli <= 1000.0 {
            return invalid("must be above 1 (by at least 0.001)");
        }
        Ok(Bound {
            milli: milli as u64,
        })
    }

    /// The factor `c`.
    pub fn factor(&self) -> f64 {
        self.milli as f64 / 1000.0
    }

    /// The most requests an endpoint of weight `weight` may have in flight
    /// after taking a new one: `⌈c · (in_flight + 1) · weight / total⌉`.
    pub fn limit(&self, weight: u32, in_flight: u64, total: u64) -> u64 {
        let num = u128::from(self.milli) * (u128::from(in_flight) + 1) * u128::from(weight);
        let den = 1000 * u128::from(total.max(1));
        num.div_ceil(den).min(u128::from(u64::MAX)) as u64
    }

    /// True when an endpoint with `pending` requests in flight stays within
    /// its [`limit`](Bound::limit) after one more:
    /// `pending + 1 ≤ ⌈x⌉ ⟺ pending < x`, tested as
    /// `pending · 1000 · total < c·1000 · (in_flight + 1) · weight`.
    #[inline]
    pub fn admits(&self, pending: u32, weight: u32, in_flight: u64, total: u64) -> bool {
        let lhs = u128::from(pending) * 1000 * u128::from(total.max(1));
        let rhs = u128::from(self.milli) * (u128::from(in_flight) + 1) * u128::from(weight);
        lhs < rhs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_is_validated() {
        for c in [1.0, 1.0004, 0.5, -2.0, f64::NAN, f64::INFINITY, 101.0] {
            let e = Bound::new(c).unwrap_err();
            assert_eq!(e.setting(), "hash.bounded_load", "{c}");
        }
        assert_eq!(Bound::new(1.25).unwrap().factor(), 1.25);
        assert_eq!(Bound::new(1.0006).unwrap().factor(), 1.001);
    }

    #[test]
    fn admits_agrees_with_the_limit() {
        let b = Bound::new(1.25).unwrap();
        // 10 equal endpoints, 39 in flight: the average with the new request
        // is 4, so the limit is ⌈1.25 × 4⌉ = 5.
        assert_eq!(b.limit(1, 39, 10), 5);
        assert!(b.admits(4, 1, 39, 10));
        assert!(!b.admits(5, 1, 39, 10));
        // A factor whose float product is not exact: 1.1 × 100 / 10.
        let b = Bound::new(1.1).unwrap();
        assert_eq!(b.limit(1, 99, 10), 11);
        assert!(b.admits(10, 1, 99, 10) && !b.admits(11, 1, 99, 10));
        for pending in 0..40 {
            for in_flight in [0u64, 1, 7, 99, 1_000] {
                for (w, total) in [(1, 1), (1, 10), (3, 7), (0, 5)] {
                    let lim = b.limit(w, in_flight, total);
                    let ok = u64::from(pending) < lim;
                    assert_eq!(b.admits(pending, w, in_flight, total), ok);
                }
            }
        }
    }
}
