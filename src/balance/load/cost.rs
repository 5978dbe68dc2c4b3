//! What a [`Load`] costs a balancer: the latency estimate decayed over idle
//! time, the failure estimate as a health factor, and the costs P2C
//! compares (peak-EWMA and pending).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Decay, Load, UNSET, failure_weight};
use crate::clock::nanos;

impl Load {
    /// The latency estimate in ns at `now_ns` (since the epoch), decayed
    /// over idle time, with that decay weight; `None` before any sample.
    #[inline]
    fn rtt_ns(&self, now_ns: u64, decay: &Decay) -> Option<(f64, f64)> {
        let bits = self.rtt_ns.load(Ordering::Relaxed);
        if bits == UNSET {
            return None;
        }
        let idle = now_ns.saturating_sub(self.stamp_ns.load(Ordering::Relaxed));
        let w = decay.weight(idle);
        Some((f64::from_bits(bits) * w, w))
    }

    /// The current latency estimate (censored raises included), decayed
    /// over idle time; `None` before the first sample.
    pub fn rtt(&self, now: Instant, decay: &Decay) -> Option<Duration> {
        self.rtt_ns(self.since_epoch(now), decay)
            .map(|(ns, _)| Duration::from_nanos(ns as u64))
    }

    /// The last latency estimate as recorded, without idle decay; `None`
    /// before the first sample.
    pub fn rtt_estimate(&self) -> Option<Duration> {
        let bits = self.rtt_ns.load(Ordering::Relaxed);
        (bits != UNSET).then(|| Duration::from_nanos(f64::from_bits(bits) as u64))
    }

    /// The failure estimate at `now`, decayed over idle time: 0 for an
    /// endpoint that has not failed lately, toward 1 for one that fails
    /// everything.
    pub fn failure_rate(&self, now: Instant, decay: &Decay) -> f64 {
        let idle = self
            .since_epoch(now)
            .saturating_sub(self.stamp_ns.load(Ordering::Relaxed));
        f64::from_bits(self.failure.load(Ordering::Relaxed)) * failure_weight(decay.weight(idle))
    }

    /// The peak-EWMA cost (see the [cost function](Load#the-peak-ewma-cost)), using
    /// `default_rtt` for an endpoint never measured with attempts in
    /// flight. Weight 0 costs the most.
    #[inline]
    pub fn ewma_cost(&self, now: Instant, decay: &Decay, default_rtt: Duration) -> f64 {
        self.ewma_cost_at(self.since_epoch(now), decay, default_rtt)
    }

    /// [`ewma_cost`](Self::ewma_cost) at `now_ns` since the epoch.
    #[inline]
    pub(crate) fn ewma_cost_at(&self, now_ns: u64, decay: &Decay, default_rtt: Duration) -> f64 {
        let (load, weight) = self.ewma_parts(now_ns, decay, default_rtt);
        if weight == 0.0 {
            return f64::MAX;
        }
        load / weight
    }

    /// The peak-EWMA cost as `(rtt × (pending + 1), weight × health)`, so
    /// that two costs compare without a division: `a` costs less than `b`
    /// when `a.0 × b.1 < b.0 × a.1`. Weight 0 gives `(1, 0)`, which every
    /// endpoint with a weight beats.
    #[inline]
    pub(crate) fn ewma_parts(
        &self,
        now_ns: u64,
        decay: &Decay,
        default_rtt: Duration,
    ) -> (f64, f64) {
        let weight = self.weight();
        if weight == 0 {
            return (1.0, 0.0);
        }
        let pending = self.pending();
        let Some((rtt, w)) = self.rtt_ns(now_ns, decay) else {
            // Never measured: tried once, then the default while in flight.
            let load = if pending == 0 {
                0.0
            } else {
                nanos(default_rtt) as f64 * f64::from(pending + 1)
            };
            return (load, f64::from(weight));
        };
        let f = self.failure.load(Ordering::Relaxed);
        let weight = if f == 0 {
            f64::from(weight)
        } else {
            f64::from(weight) * self.health(f64::from_bits(f) * failure_weight(w), now_ns)
        };
        // A decayed RTT near zero must not hide the pending count.
        (rtt.max(1.0) * f64::from(pending + 1), weight)
    }

    /// The health factor of a failure estimate `f` (see the [module
    /// docs](self)).
    #[inline(never)]
    fn health(&self, f: f64, now_ns: u64) -> f64 {
        if now_ns < self.avoid_until_ns.load(Ordering::Relaxed) {
            Self::HEALTH_FLOOR
        } else {
            Self::HEALTH_FLOOR + (1.0 - Self::HEALTH_FLOOR) * (1.0 - f) * (1.0 - f)
        }
    }

    /// The pending-requests cost: `(pending + 1) / weight`.
    #[inline]
    pub fn pending_cost(&self) -> f64 {
        let weight = self.weight();
        if weight == 0 {
            return f64::MAX;
        }
        f64::from(self.pending() + 1) / f64::from(weight)
    }
}
