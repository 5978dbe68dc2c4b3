//! The hash functions behind the consistent-hash tables.
//!
//! They are fixed by this crate, not taken from `std` (whose hasher may
//! change between releases), so that every client process, whatever its
//! version or platform, maps a key to the same endpoint for the same set.
//! A test pins their values.

use std::net::SocketAddr;

/// The golden-ratio increment of SplitMix64.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The seed of the endpoint identity hash ("towline" and a version byte).
const IDENTITY_SEED: u64 = 0x746f_776c_696e_6501;

/// The SplitMix64 finalizer (Stafford's "Mix13"): a bijection on `u64` that
/// spreads every input bit over every output bit.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The identity hash of an endpoint: its address folded 64 bits at a time,
/// `h ← mix64(h ⊕ word)` from [`IDENTITY_SEED`]. IPv4 is one word
/// `4·2⁴⁸ | port·2³² | ip`; IPv6 is `6·2⁴⁸ | port·2³² | scope_id`, then the
/// high and the low 64 bits of the address. (IPv6 flow labels are not part
/// of an endpoint's identity.)
pub(crate) fn identity(addr: &SocketAddr) -> u64 {
    let fold = |h: u64, word: u64| mix64(h ^ word);
    let port = u64::from(addr.port()) << 32;
    match addr {
        SocketAddr::V4(a) => fold(IDENTITY_SEED, 4 << 48 | port | u64::from(a.ip().to_bits())),
        SocketAddr::V6(a) => {
            let ip = a.ip().to_bits();
            let h = fold(IDENTITY_SEED, 6 << 48 | port | u64::from(a.scope_id()));
            fold(fold(h, (ip >> 64) as u64), ip as u64)
        }
    }
}

/// The `r`-th value (from 0) of the SplitMix64 stream seeded by `seed`:
/// `mix64(seed + (r + 1)·γ)`. An endpoint's ring points and Maglev
/// permutation are drawn from the stream seeded by its identity hash.
#[inline]
pub(crate) fn stream(seed: u64, r: u64) -> u64 {
    mix64(seed.wrapping_add(r.wrapping_add(1).wrapping_mul(GAMMA)))
}

/// The position of a request key: `mix64(key)`. A bijection, so distinct
/// keys stay distinct, and structured keys (sequential ids) spread evenly.
#[inline]
pub(crate) fn key_position(key: u64) -> u64 {
    mix64(key)
}

/// `⌊x · n / 2⁶⁴⌋`: maps a uniform 64-bit value onto `0..n` with one
/// multiplication instead of a division.
#[inline]
pub(crate) fn reduce(x: u64, n: usize) -> usize {
    ((u128::from(x) * n as u128) >> 64) as usize
}

/// The rendezvous (highest-random-weight) score of an endpoint for a key
/// position, used by the exact fallback: `mix64(position ⊕ identity)`.
#[inline]
pub(crate) fn rendezvous(position: u64, identity: u64) -> u64 {
    mix64(position ^ identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// These values are part of the crate's behaviour: clients of different
    /// versions must agree on them. Change them only with a new seed byte and
    /// a release note.
    #[test]
    fn hashes_are_pinned() {
        // The stream is SplitMix64's: its published outputs from seed 0.
        assert_eq!(stream(0, 0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(stream(0, 1), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(stream(0, 2), 0x06c4_5d18_8009_454f);
        let v4: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        assert_eq!(identity(&v4), 0xd2b6_bb74_6554_e9ad);
        assert_eq!(identity(&v6), 0x76cf_352e_a865_bc1b);
        assert_eq!(stream(identity(&v4), 0), 0x2bea_2ce8_4a72_dbe3);
    }

    #[test]
    fn identity_separates_families_ports_and_scopes() {
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:81".parse().unwrap();
        let c: SocketAddr = "[::ffff:10.0.0.1]:80".parse().unwrap();
        let d: SocketAddr = "[fe80::1%1]:80".parse().unwrap();
        let e: SocketAddr = "[fe80::1%2]:80".parse().unwrap();
        let ids = [a, b, c, d, e].map(|x| identity(&x));
        for i in 0..ids.len() {
            for j in 0..i {
                assert_ne!(ids[i], ids[j], "{i} and {j} collide");
            }
        }
    }

    #[test]
    fn reduce_stays_in_range() {
        for n in [1usize, 2, 7, 65_537] {
            assert_eq!(reduce(0, n), 0);
            assert_eq!(reduce(u64::MAX, n), n - 1);
        }
    }
}
