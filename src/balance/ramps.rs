//! The slow-start state of one endpoint set: the curve in force, and the
//! latest ramp end, which keeps a pick's cost at one atomic load while
//! nothing ramps.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arc_swap::{ArcSwapOption, Guard};

use super::Load;
use super::slow_start::{SlowStart, SlowStartSettings};
use crate::clock::nanos_since;
use crate::rng::Rng;

/// The slow-start ramps of one endpoint set (see [`slow_start`](super::slow_start)).
///
/// It holds the compiled curve ([`SlowStart`], swapped as a whole when the
/// settings change at runtime; none while slow start is off) and the
/// latest end of any ramp started, in nanoseconds since its `epoch`. Each
/// endpoint's own ramp end is kept on its [`Load`]
/// ([`Load::ramp_end`]), in the same clock.
///
/// A pick asks [`active`](Self::active) once: while no ramp is running
/// that is one atomic load and a comparison with zero (the latest end is
/// reset to zero by the first pick that finds it passed), with no clock
/// arithmetic; during a ramp it returns a [`Ramping`] that gives each
/// candidate's weight factor.
///
/// ```
/// use std::time::{Duration, Instant};
/// use towline::balance::{Load, Ramps, SlowStartSettings};
///
/// let t0 = Instant::now();
/// let ramps = Ramps::new(t0, Some(&SlowStartSettings::default()));
/// let (cold, warm) = (Load::new(1, t0), Load::new(1, t0));
/// assert!(ramps.active(t0).is_none());
/// ramps.start(&cold, t0);
/// let at = ramps.active(t0 + Duration::from_secs(15)).unwrap();
/// assert!(at.factor(&cold) <= 0.5 && at.factor(&warm) == 1.0);
/// // Once the 30 s window is over, nothing ramps.
/// assert!(ramps.active(t0 + Duration::from_secs(30)).is_none());
/// ```
#[derive(Debug)]
pub struct Ramps {
    epoch: Instant,
    /// The latest ramp end (ns since `epoch`); 0 when no ramp may be
    /// running.
    latest: AtomicU64,
    curve: ArcSwapOption<SlowStart>,
}

impl Ramps {
    /// Ramps timed from `epoch` (the epoch of the set's loads), with slow
    /// start on (`Some`) or off.
    pub fn new(epoch: Instant, settings: Option<&SlowStartSettings>) -> Self {
        Ramps {
            epoch,
            latest: AtomicU64::new(0),
            curve: ArcSwapOption::new(settings.map(|s| Arc::new(SlowStart::new(s)))),
        }
    }

    /// The time origin of the ramp ends.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// The settings in force; `None` while slow start is off.
    pub fn settings(&self) -> Option<SlowStartSettings> {
        self.curve.load().as_ref().map(|c| *c.settings())
    }

    /// Changes the settings (runtime tuning). Ramps under way follow the
    /// new curve to their end (see [`SlowStart::factor_at`]); turning slow
    /// start off ends them all at once. Unchanged settings change nothing.
    pub fn configure(&self, settings: Option<&SlowStartSettings>) {
        if self.settings().as_ref() == settings {
            return;
        }
        self.curve
            .store(settings.map(|s| Arc::new(SlowStart::new(s))));
        if settings.is_none() {
            self.latest.store(0, Ordering::Relaxed);
        }
    }

    /// Starts the ramp of the endpoint of `load` at `now` (it was added to
    /// a set that had endpoints, or returns from ejection). Does nothing
    /// and returns false while slow start is off.
    pub fn start(&self, load: &Load, now: Instant) -> bool {
        let curve = self.curve.load();
        let Some(curve) = curve.as_ref() else {
            return false;
        };
        let end = curve.ramp_end(nanos_since(now, self.epoch));
        load.set_ramp_end(end);
        self.latest.fetch_max(end, Ordering::Relaxed);
        true
    }

    /// The ramps running at `now`, or `None` when none is (the steady
    /// state: one atomic load).
    #[inline]
    pub fn active(&self, now: Instant) -> Option<Ramping<'_>> {
        let latest = self.latest.load(Ordering::Relaxed);
        if latest == 0 {
            return None;
        }
        self.running(now, latest)
    }

    #[inline(never)]
    fn running(&self, now: Instant, latest: u64) -> Option<Ramping<'_>> {
        let tick = nanos_since(now, self.epoch);
        if tick >= latest {
            // Every ramp has ended: back to the one-load steady state,
            // unless a ramp started meanwhile (then the exchange fails).
            let _ = self
                .latest
                .compare_exchange(latest, 0, Ordering::Relaxed, Ordering::Relaxed);
            return None;
        }
        let curve = self.curve.load();
        curve.is_some().then(|| Ramping {
            tick,
            curve,
            _ramps: std::marker::PhantomData,
        })
    }
}

/// The ramps running at one pick ([`Ramps::active`]): each candidate's
/// weight factor.
pub struct Ramping<'a> {
    tick: u64,
    curve: Guard<Option<Arc<SlowStart>>>,
    _ramps: std::marker::PhantomData<&'a Ramps>,
}

impl Ramping<'_> {
    fn curve(&self) -> &SlowStart {
        self.curve
            .as_ref()
            .expect("a Ramping is only made with a curve")
    }

    /// The weight factor of the endpoint of `load`: 1 unless it is
    /// ramping, else its point on the curve (see [`SlowStart::factor_at`]).
    #[inline]
    pub fn factor(&self, load: &Load) -> f64 {
        let end = load.ramp_end();
        if self.tick >= end {
            return 1.0;
        }
        self.curve().factor_at(self.tick, end)
    }

    /// Thinning for turn-based picks: true with probability
    /// [`factor`](Self::factor), always (with no draw) for an endpoint
    /// that is not ramping.
    #[inline]
    pub fn admit(&self, load: &Load, rng: &mut Rng) -> bool {
        let end = load.ramp_end();
        self.tick >= end || self.curve().admit(self.tick, end, rng)
    }
}

impl std::fmt::Debug for Ramping<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ramping")
            .field("tick", &self.tick)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::balance::{Balancer, LoadSet, P2c, PickContext, RoundRobin, Weighted};

    fn settings() -> SlowStartSettings {
        SlowStartSettings::new(Duration::from_secs(10), 1.0, 0.1).unwrap()
    }

    #[test]
    fn off_nothing_ramps_and_starting_does_nothing() {
        let t0 = Instant::now();
        let ramps = Ramps::new(t0, None);
        let load = Load::new(1, t0);
        assert!(!ramps.start(&load, t0));
        assert_eq!(load.ramp_end(), 0);
        assert!(ramps.active(t0).is_none());
    }

    #[test]
    fn a_ramp_runs_for_its_window_then_the_steady_state_returns() {
        let t0 = Instant::now();
        let ramps = Ramps::new(t0, Some(&settings()));
        let (a, b) = (Load::new(1, t0), Load::new(1, t0));
        let s = Duration::from_secs(1);
        ramps.start(&a, t0 + s);
        ramps.start(&b, t0 + 5 * s);
        let at = ramps.active(t0 + 6 * s).unwrap();
        let (fa, fb) = (at.factor(&a), at.factor(&b));
        assert!(fa > fb && fa <= 0.5 && 0.5 - fa <= 0.015, "{fa} {fb}");
        drop(at);
        // a has ended, b still ramps.
        let at = ramps.active(t0 + 12 * s).unwrap();
        assert_eq!(at.factor(&a), 1.0);
        assert!(at.factor(&b) < 1.0);
        drop(at);
        assert!(ramps.active(t0 + 15 * s).is_none());
        assert_eq!(ramps.latest.load(Ordering::Relaxed), 0, "reset to 0");
        // A ramp started later runs again.
        ramps.start(&a, t0 + 20 * s);
        assert!(ramps.active(t0 + 21 * s).is_some());
    }

    #[test]
    fn turning_slow_start_off_ends_every_ramp_and_retuning_keeps_them() {
        let t0 = Instant::now();
        let ramps = Ramps::new(t0, Some(&settings()));
        let load = Load::new(1, t0);
        ramps.start(&load, t0);
        let longer = SlowStartSettings::new(Duration::from_secs(20), 1.0, 0.1).unwrap();
        ramps.configure(Some(&longer));
        assert_eq!(ramps.settings(), Some(longer));
        // The ramp keeps its end (10 s); the new curve shapes what is left.
        let s = Duration::from_secs(1);
        assert!(ramps.active(t0 + 9 * s).unwrap().factor(&load) < 1.0);
        ramps.configure(None);
        assert!(ramps.active(t0 + 9 * s).is_none());
        assert_eq!(ramps.settings(), None);
    }

    /// A set of equal endpoints with ramps.
    struct Ramped {
        loads: Vec<Load>,
        ramps: Ramps,
    }

    impl LoadSet for Ramped {
        fn len(&self) -> usize {
            self.loads.len()
        }
        fn load(&self, i: usize) -> &Load {
            &self.loads[i]
        }
    }

    fn ramped(n: usize, t0: Instant) -> Ramped {
        Ramped {
            loads: (0..n).map(|_| Load::new(1, t0)).collect(),
            ramps: Ramps::new(t0, Some(&settings())),
        }
    }

    /// Round-robin, both weighted modes and P2C give a ramping endpoint its
    /// factor times its share (P2C: never on a tie of loads), and the
    /// others share the rest evenly.
    #[test]
    fn balancers_thin_a_ramping_endpoint_by_its_factor() {
        crate::rng::seed_thread_rng(71);
        let t0 = Instant::now();
        let n = 10;
        let set = ramped(n, t0);
        set.ramps.start(&set.loads[3], t0);
        let at = PickContext::new(t0 + Duration::from_secs(3)).with_ramps(&set.ramps);
        let f = at.ramping().unwrap().factor(&set.loads[3]);
        assert!((0.28..=0.3).contains(&f), "{f}");
        let picks = 60_000;
        let share = f / (n as f64 - 1.0 + f);
        let sigma = crate::test_bounds::binomial_sd(picks as f64, share);
        let others = (1.0 - share) / (n as f64 - 1.0);
        let sigma_others = crate::test_bounds::binomial_sd(picks as f64, others);
        let turns: [Box<dyn Balancer>; 3] = [
            Box::new(RoundRobin::new()),
            Box::new(Weighted::round_robin()),
            Box::new(Weighted::random()),
        ];
        for proto in turns {
            let b = proto.rebuild(&vec![1; n]);
            let mut rng = Rng::seeded(8);
            let mut counts = vec![0f64; n];
            for _ in 0..picks {
                counts[b.pick(&at, &set, &|_| true, &mut rng).unwrap()] += 1.0;
            }
            let name = b.name();
            let expected = picks as f64 * share;
            assert!(
                (counts[3] - expected).abs() <= 5.0 * sigma,
                "{name}: {} vs {expected}",
                counts[3]
            );
            for (i, c) in counts.iter().enumerate().filter(|&(i, _)| i != 3) {
                let expected = picks as f64 * others;
                assert!(
                    (c - expected).abs() <= 5.0 * sigma_others,
                    "{name}: endpoint {i} got {c}, expected {expected}"
                );
            }
        }
        // P2C: equal loads, so the ramping endpoint always loses its pair,
        // unless the other is loaded more than 1/f times over. Every
        // endpoint is measured first: peak-EWMA tries an endpoint it has
        // never measured at cost 0, whatever its weight.
        let decay = crate::balance::Decay::new(P2c::DEFAULT_DECAY);
        for load in &set.loads {
            load.observe(Duration::from_millis(10), t0, &decay);
        }
        // Unequal weights build the weighted form, which must ramp too.
        let mut uneven = vec![1; n];
        uneven[0] = 2;
        let p2cs: Vec<Box<dyn Balancer>> = vec![
            Box::new(P2c::pending()),
            Box::new(P2c::peak_ewma()),
            P2c::pending().rebuild(&uneven),
            P2c::peak_ewma().rebuild(&uneven),
        ];
        for p2c in p2cs {
            let mut rng = Rng::seeded(9);
            for _ in 0..2_000 {
                assert_ne!(p2c.pick(&at, &set, &|_| true, &mut rng), Some(3));
            }
            for _ in 0..4 {
                set.loads[5].start();
            }
            let pair = |i| i == 3 || i == 5;
            assert_eq!(p2c.pick(&at, &set, &pair, &mut rng), Some(3));
            (0..4).for_each(|_| set.loads[5].end());
        }
    }

    /// With ramps but none running, every balancer picks exactly as it
    /// does without them (same generator, same picks).
    #[test]
    fn with_nothing_ramping_picks_are_unchanged() {
        let t0 = Instant::now();
        let set = ramped(7, t0);
        let plain: Vec<Load> = (0..7).map(|_| Load::new(1, t0)).collect();
        let at = PickContext::new(t0);
        let with_ramps = at.with_ramps(&set.ramps);
        let all: [Box<dyn Balancer>; 5] = [
            Box::new(RoundRobin::new()),
            Box::new(Weighted::round_robin()),
            Box::new(Weighted::random()),
            Box::new(P2c::pending()),
            Box::new(P2c::peak_ewma()),
        ];
        for proto in all {
            crate::rng::seed_thread_rng(72);
            let a = proto.rebuild(&[1; 7]);
            crate::rng::seed_thread_rng(72);
            let b = proto.rebuild(&[1; 7]);
            let (mut ra, mut rb) = (Rng::seeded(1), Rng::seeded(1));
            for _ in 0..500 {
                assert_eq!(
                    a.pick(&with_ramps, &set, &|i| i != 2, &mut ra),
                    b.pick(&at, &plain, &|i| i != 2, &mut rb),
                    "{}",
                    a.name()
                );
            }
        }
    }

    #[test]
    fn admit_thins_a_ramping_endpoint_only() {
        let t0 = Instant::now();
        let ramps = Ramps::new(t0, Some(&settings()));
        let (cold, warm) = (Load::new(1, t0), Load::new(1, t0));
        ramps.start(&cold, t0);
        let at = ramps.active(t0 + Duration::from_secs(3)).unwrap();
        let mut rng = Rng::seeded(5);
        let trials = 20_000;
        let kept = (0..trials).filter(|_| at.admit(&cold, &mut rng)).count() as f64;
        let p = at.factor(&cold);
        let sigma = crate::test_bounds::binomial_sd(trials as f64, p);
        assert!(
            (kept - trials as f64 * p).abs() <= 5.0 * sigma,
            "{kept} {p}"
        );
        assert!((0..100).all(|_| at.admit(&warm, &mut rng)));
    }
}
