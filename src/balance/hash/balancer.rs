//! [`ConsistentHash`] as a [`Balancer`]: the key comes with the pick.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

use super::ConsistentHash;
use crate::balance::{Balancer, EndpointSet, LoadSet, PickContext};
use crate::rng::Rng;

/// As a [`Balancer`], a consistent-hash table picks by
/// [`PickContext::key`]; a pick without a key takes a random one, so
/// requests without a key spread over the endpoints by their shares of the
/// table. (The channel sends requests without a key to its ordinary
/// balancer instead; see
/// [`Builder::keyed`](crate::channel::Builder::keyed).) With bounded
/// loads, the in-flight total comes from [`LoadSet::in_flight`] when the
/// set keeps it, else it is summed.
///
/// [`rebuild_set`](Balancer::rebuild_set) places endpoints by address, as
/// [`ConsistentHash::rebuild`] does; [`rebuild`](Balancer::rebuild), which
/// has only weights, identifies endpoint `i` by its index (as the address
/// `[::i]:0`), so keys then stay put only while indices do.
///
/// ```
/// use std::net::SocketAddr;
/// use std::time::Instant;
/// use towline::balance::{Balancer, ConsistentHash, EndpointSet, Load, PickContext};
/// use towline::rng::Rng;
///
/// let addrs: Vec<SocketAddr> = (1..=5)
///     .map(|i| format!("10.0.0.{i}:80").parse().unwrap())
///     .collect();
/// let table = ConsistentHash::ring().rebuild_set(&EndpointSet::new(&addrs, &[1; 5]));
/// let now = Instant::now();
/// let loads: Vec<Load> = addrs.iter().map(|_| Load::new(1, now)).collect();
/// let at = PickContext::new(now).with_key(Some(42));
/// let mut rng = Rng::seeded(1);
/// let home = table.pick(&at, &loads, &|_| true, &mut rng).unwrap();
/// assert_eq!(table.pick(&at, &loads, &|_| true, &mut rng), Some(home));
/// ```
impl Balancer for ConsistentHash {
    fn name(&self) -> &'static str {
        ConsistentHash::name(self)
    }

    fn rebuild(&self, weights: &[u32]) -> Box<dyn Balancer> {
        let by_index = weights.iter().enumerate().map(|(i, &w)| {
            let ip = Ipv6Addr::from(i as u128);
            (SocketAddr::V6(SocketAddrV6::new(ip, 0, 0, 0)), w)
        });
        Box::new(ConsistentHash::rebuild(self, by_index))
    }

    fn rebuild_set(&self, set: &EndpointSet<'_>) -> Box<dyn Balancer> {
        let members = set
            .addrs()
            .iter()
            .copied()
            .zip(set.weights().iter().copied());
        Box::new(ConsistentHash::rebuild(self, members))
    }

    fn pick(
        &self,
        at: &PickContext,
        set: &dyn LoadSet,
        eligible: &dyn Fn(usize) -> bool,
        rng: &mut Rng,
    ) -> Option<usize> {
        let key = at.key.unwrap_or_else(|| rng.next_u64());
        ConsistentHash::pick(self, key, set, eligible)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::balance::Load;
    use crate::balance::test_util::{all, check_exclusions, loads};

    #[test]
    fn exclusions() {
        for proto in [
            ConsistentHash::ring(),
            ConsistentHash::maglev(),
            ConsistentHash::maglev().bounded_load(1.25).unwrap(),
        ] {
            check_exclusions(&proto);
        }
    }

    /// The set's own in-flight total is used when it keeps one.
    #[test]
    fn a_bounded_pick_uses_the_sets_in_flight_total() {
        struct Kept(Vec<Load>, u64);
        impl LoadSet for Kept {
            fn len(&self) -> usize {
                self.0.len()
            }
            fn load(&self, i: usize) -> &Load {
                &self.0[i]
            }
            fn in_flight(&self) -> Option<u64> {
                Some(self.1)
            }
        }
        let addrs: Vec<SocketAddr> = (1..=4)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 80)))
            .collect();
        let proto = ConsistentHash::maglev().bounded_load(1.25).unwrap();
        let table = proto.rebuild_set(&EndpointSet::new(&addrs, &[1; 4]));
        let key = 7;
        let at = PickContext::new(Instant::now()).with_key(Some(key));
        let mut rng = Rng::seeded(2);
        let home = table.pick(&at, &loads(4), &all, &mut rng).unwrap();
        // Home holds 2: over the bound ⌈1.25 × 1/4⌉ = 1 when nothing else is
        // in flight, under it when the set says 40 more are.
        let set = Kept((0..4).map(|_| Load::new(1, Instant::now())).collect(), 2);
        set.0[home].start();
        set.0[home].start();
        assert_ne!(table.pick(&at, &set, &all, &mut rng), Some(home));
        let busy = Kept(set.0, 42);
        assert_eq!(table.pick(&at, &busy, &all, &mut rng), Some(home));
    }

    #[test]
    fn without_addresses_endpoints_are_identified_by_index() {
        let proto = ConsistentHash::maglev();
        let a = Balancer::rebuild(&proto, &[1, 1, 1]);
        let b = Balancer::rebuild(&proto, &[1, 1, 1]);
        let set = loads(3);
        let mut rng = Rng::seeded(3);
        for key in 0..100 {
            let at = PickContext::new(Instant::now()).with_key(Some(key));
            assert_eq!(
                a.pick(&at, &set, &all, &mut rng),
                b.pick(&at, &set, &all, &mut rng)
            );
        }
    }
}
