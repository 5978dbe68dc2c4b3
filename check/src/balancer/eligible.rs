//! A set of eligible indices as a bit mask, and small arithmetic the model
//! shares.

/// The eligible indices as a bit set (sets hold at most 64 endpoints).
#[derive(Clone, Copy)]
pub(super) struct Eligible(pub(super) u64);

impl Eligible {
    pub(super) fn contains(self, i: &usize) -> bool {
        *i < 64 && self.0 & (1 << i) != 0
    }
    pub(super) fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub(super) fn len(self) -> usize {
        self.0.count_ones() as usize
    }
    pub(super) fn iter(self) -> impl Iterator<Item = usize> {
        (0..64).filter(move |i| self.contains(i))
    }
}

impl std::fmt::Debug for Eligible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

pub(super) fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}
