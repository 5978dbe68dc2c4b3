//! A small, fast, seedable random number generator.
//!
//! Balancers and policies need a few random numbers per call. A shared
//! generator would be a point of contention and an OS call per number would
//! be slow, so each thread keeps its own [`Rng`] (wyrand: one multiply per
//! number), seeded once from the operating system through `rand`. Tests and
//! fuzz targets construct an [`Rng`] with [`Rng::seeded`] to be reproducible.
//!
//! ```
//! use towline::rng::Rng;
//!
//! let mut a = Rng::seeded(7);
//! let mut b = Rng::seeded(7);
//! assert_eq!(a.next_u64(), b.next_u64());
//! assert!(a.below(10) < 10);
//! ```

use std::cell::Cell;

/// A wyrand generator: not cryptographic, fast, and reproducible from a seed.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose sequence is fixed by `seed`.
    pub fn seeded(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// A generator seeded from the operating system.
    pub fn from_entropy() -> Self {
        Rng::seeded(rand::random::<u64>())
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.state) * u128::from(self.state ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// A uniform integer in `0..n`; 0 when `n` is 0.
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        // Lemire's multiply-shift: the bias is below 2^-32 for any n this
        // crate uses (endpoint counts), which is far under sampling noise.
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// A uniform float in `[0, 1)`.
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

thread_local! {
    static THREAD_RNG: Cell<Option<Rng>> = const { Cell::new(None) };
}

/// Runs `f` with this thread's generator (seeded from the OS on first use).
#[inline]
pub fn with_thread_rng<R>(f: impl FnOnce(&mut Rng) -> R) -> R {
    THREAD_RNG.with(|cell| {
        let mut rng = cell.take().unwrap_or_else(Rng::from_entropy);
        let out = f(&mut rng);
        cell.set(Some(rng));
        out
    })
}

/// Replaces this thread's generator with one seeded by `seed`, so that the
/// random choices made on this thread (backoff jitter, balancer picks) are
/// reproducible, e.g. in a test on a current-thread runtime.
pub fn seed_thread_rng(seed: u64) {
    THREAD_RNG.with(|cell| cell.set(Some(Rng::seeded(seed))));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = Rng::seeded(1);
        let mut seen = [0u32; 7];
        for _ in 0..7_000 {
            seen[rng.below(7)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 0));
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn unit_is_in_half_open_interval() {
        let mut rng = Rng::seeded(2);
        for _ in 0..10_000 {
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
