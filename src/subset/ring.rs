//! The ring arithmetic of deterministic aperture, in exact integers.
//!
//! With `K` clients and `N` servers the ring is `2 × K × N` units long:
//! client `i` starts at `(2i + 1) × N` (the middle of its `1/K` of the
//! ring), server `j` occupies `[2jK, 2(j + 1)K)`. Every boundary is then an
//! integer, so coverage is exact: no floating-point sliver of a server ever
//! turns into a spurious connection, and two clients that compute the same
//! thing get the same answer bit for bit.

use crate::error::BuildError;

/// Where one client stands among its peers: its index in their stable order
/// and how many peers there are (itself included).
///
/// Discovered from etcd by `discover::Peers` (feature `etcd`), or given
/// directly when the deployment knows it (a StatefulSet ordinal, a shard
/// number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Coordinate {
    index: usize,
    count: usize,
}

impl Coordinate {
    /// The client at `index` among `count` peers; `index < count` is
    /// required.
    pub fn new(index: usize, count: usize) -> Result<Self, BuildError> {
        if index >= count {
            return Err(BuildError::new(
                "coordinate",
                format!("index {index} is not below the peer count {count}"),
            ));
        }
        Ok(Coordinate { index, count })
    }

    /// This client's index, `0..count`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The number of peers, at least 1.
    pub fn count(&self) -> usize {
        self.count
    }
}

/// One server of a client's aperture, with how much of it the slice covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// The server's index in the stable order the slice was computed over.
    pub index: usize,
    /// Ring units of this server the slice covers, `1..=unit`.
    pub covered: u64,
    /// Ring units one server occupies (twice the peer count):
    /// `covered == unit` means the server is fully inside the slice.
    pub unit: u64,
}

/// Balancer weight of a fully covered server of weight 1 (partly covered
/// ones get their share of it): enough resolution for a 0.1% share.
pub const WEIGHT_SCALE: u32 = 1000;

impl Member {
    /// The covered share of this server, in `(0, 1]`.
    pub fn fraction(&self) -> f64 {
        self.covered as f64 / self.unit as f64
    }

    /// The balancer weight for a server whose own weight is `base`:
    /// `base × WEIGHT_SCALE × fraction`, rounded, at least 1 unless `base`
    /// is 0, saturating at `u32::MAX`.
    pub fn weight(&self, base: u32) -> u32 {
        if base == 0 {
            return 0;
        }
        let scaled = u128::from(base) * u128::from(WEIGHT_SCALE) * u128::from(self.covered);
        let unit = u128::from(self.unit);
        let rounded = (scaled + unit / 2) / unit;
        u32::try_from(rounded.max(1)).unwrap_or(u32::MAX)
    }
}

/// The servers the client at `coordinate` uses out of `servers` (in their
/// stable order) with an aperture of `size` servers, in ring order from the
/// start of its slice.
///
/// The slice starts at `(index + ½) / count` of the ring and is
/// `size / servers` of it, widened to `1 / count` when that is larger so
/// that the peers' slices together cover every server, and the whole ring
/// (every server, fully) when `size >= servers`. A `size` of 0 counts as 1.
/// No servers, no members.
pub fn slice(coordinate: Coordinate, size: usize, servers: usize) -> Vec<Member> {
    if servers == 0 {
        return Vec::new();
    }
    let k = coordinate.count as u128;
    let n = servers as u128;
    let d = (size as u128).clamp(1, n);
    // Units: a server is 2K wide, a client's share of the ring 2N.
    let cell_width = 2 * k;
    let ring = cell_width * n;
    let width = (d * cell_width).max(2 * n).min(ring);
    let start = (2 * coordinate.index as u128 + 1) * n;
    let end = start + width;
    let mut members: Vec<Member> = Vec::with_capacity((width / cell_width) as usize + 2);
    let mut at = start;
    while at < end {
        let cell = at / cell_width;
        let next = ((cell + 1) * cell_width).min(end);
        let index = (cell % n) as usize;
        // Both fit: a piece is at most one server wide, `2K` units.
        let covered = (next - at) as u64;
        match members.first_mut() {
            // A slice as wide as the ring comes back to the server it started
            // in: the two pieces are one member.
            Some(first) if first.index == index && at > start => first.covered += covered,
            _ => members.push(Member {
                index,
                covered,
                unit: cell_width as u64,
            }),
        }
        at = next;
    }
    members
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(index: usize, count: usize) -> Coordinate {
        Coordinate::new(index, count).unwrap()
    }

    fn fractions(members: &[Member]) -> Vec<(usize, f64)> {
        members.iter().map(|m| (m.index, m.fraction())).collect()
    }

    #[test]
    fn coordinate_index_must_be_below_count() {
        assert_eq!(Coordinate::new(3, 3).unwrap_err().setting(), "coordinate");
        assert!(Coordinate::new(0, 0).is_err());
        assert_eq!(c(2, 3).index(), 2);
    }

    #[test]
    fn aligned_slice_takes_whole_servers() {
        // 3 clients, 6 servers, aperture 2: client 1 starts at 1.5/3 of
        // the ring, server 3, and gets servers 3 and 4.
        assert_eq!(fractions(&slice(c(1, 3), 2, 6)), [(3, 1.0), (4, 1.0)]);
    }

    #[test]
    fn unaligned_slice_weighs_partial_servers() {
        // 2 clients, 3 servers, aperture 1: width max(1/3, 1/2) = 1/2 of the
        // ring; client 0 covers [1/4, 3/4): the last quarter of server 0
        // (3/4 of its width), all of 1, the first quarter of 2 (3/4).
        assert_eq!(
            fractions(&slice(c(0, 2), 1, 3)),
            [(0, 0.25), (1, 1.0), (2, 0.25)]
        );
        // Client 1 covers [3/4, 5/4): the rest of server 2, all of 0 up to
        // a quarter of the ring.
        assert_eq!(fractions(&slice(c(1, 2), 1, 3)), [(2, 0.75), (0, 0.75)]);
    }

    #[test]
    fn slices_wrap_around_the_ring() {
        // 4 clients, 5 servers, aperture 3: client 3 starts at 3.5/4.
        let m = slice(c(3, 4), 3, 5);
        let idx: Vec<usize> = m.iter().map(|m| m.index).collect();
        assert_eq!(idx, [4, 0, 1, 2]);
        let total: u64 = m.iter().map(|m| m.covered).sum();
        assert_eq!(total, 3 * 2 * 4, "the slice is 3 servers wide");
    }

    #[test]
    fn full_ring_merges_the_split_first_server() {
        // Aperture >= servers: every server fully, even from an offset.
        let m = slice(c(1, 3), 10, 4);
        assert_eq!(m.len(), 4);
        assert!(m.iter().all(|m| m.covered == m.unit), "{m:?}");
    }

    #[test]
    fn lone_client_and_empty_set() {
        assert!(slice(c(0, 1), 5, 0).is_empty());
        // A lone client must cover every server itself: width 1/K = all.
        let m = slice(c(0, 1), 2, 8);
        assert_eq!(m.len(), 8);
        assert!(m.iter().all(|m| m.covered == m.unit));
        // Size 0 behaves as size 1: client 5 of 8 over 8 servers starts in
        // the middle of server 5.
        assert_eq!(fractions(&slice(c(5, 8), 0, 8)), [(5, 0.5), (6, 0.5)]);
    }

    #[test]
    fn weights_scale_and_round() {
        let half = Member {
            index: 0,
            covered: 1,
            unit: 2,
        };
        assert_eq!(half.weight(1), WEIGHT_SCALE / 2);
        assert_eq!(half.weight(3), 3 * WEIGHT_SCALE / 2);
        assert_eq!(half.weight(0), 0);
        assert_eq!(half.weight(u32::MAX), u32::MAX);
        let sliver = Member {
            index: 0,
            covered: 1,
            unit: 1_000_000,
        };
        assert_eq!(sliver.weight(1), 1, "a covered server keeps a weight");
    }
}
