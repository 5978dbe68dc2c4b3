//! Choosing the endpoint of one attempt under breakers, ejection, panic
//! mode and the call's tried set: a plain function of its inputs.
//!
//! - An endpoint the call has tried is avoided while another is eligible.
//! - Outside panic mode, an ejected endpoint is eligible only when its
//!   breaker would admit a probe now.
//! - With breakers on, the chosen endpoint's breaker must admit the call
//!   (it returns an [`Admission`]); one that refuses is skipped. In panic
//!   mode, or for an endpoint left in rotation by the ejection cap, the
//!   call goes through without the breaker's permission.
//! - With breakers off (never built, or turned off at runtime), breakers
//!   are not asked at all.
//! - With per-endpoint concurrency limits on, only endpoints with room
//!   under their limit are eligible, and the chosen one's place is taken
//!   (an endpoint that filled up meanwhile is skipped like a refusing
//!   breaker).

use std::time::Instant;

use crate::balance::{Balancer, LoadSet, PickContext};
use crate::policy::breaker::{Admission, CircuitBreaker};
use crate::policy::call::Tried;
use crate::policy::limit::Limiter;
use crate::rng::Rng;

/// The endpoints an attempt chooses among.
pub(crate) trait Candidates: LoadSet {
    /// An identity of endpoint `i` that stays the same across endpoint
    /// sets (what the call's tried set holds).
    fn id(&self, i: usize) -> usize;
    /// Whether endpoint `i` is ejected now.
    fn ejected(&self, i: usize) -> bool;
    /// Endpoint `i`'s breaker, if it has one.
    fn breaker(&self, i: usize) -> Option<&CircuitBreaker>;
    /// Endpoint `i`'s concurrency limiter, if it has one.
    fn limiter(&self, i: usize) -> Option<&Limiter> {
        let _ = i;
        None
    }
}

/// How the call chooses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    /// Breakers are on in the current settings.
    pub(crate) breakers: bool,
    /// The channel is in panic mode.
    pub(crate) panic: bool,
    /// No endpoint is ejected (a first attempt then needs no look at each
    /// candidate's ejection and breaker).
    pub(crate) none_ejected: bool,
    /// Per-endpoint concurrency limits are on.
    pub(crate) limits: bool,
}

/// The endpoint an attempt goes to.
#[derive(Debug)]
pub(crate) struct Chosen {
    pub(crate) index: usize,
    /// Its breaker's admission, when breakers are on and it was asked.
    pub(crate) admission: Option<Admission>,
    /// A place under its concurrency limit was taken.
    pub(crate) placed: bool,
}

/// The endpoint for an attempt picked `at` (its time and the request's
/// hash key), with its breaker's admission when breakers are on and its
/// place when limits are; `None` when no endpoint can take it.
pub(crate) fn choose<C: Candidates>(
    set: &C,
    balancer: &dyn Balancer,
    tried: &Tried,
    rules: Rules,
    at: PickContext<'_>,
    rng: &mut Rng,
) -> Option<Chosen> {
    let now = at.now;
    let admits = |i: usize| !set.ejected(i) || set.breaker(i).is_some_and(|b| b.would_admit(now));
    let room = |i: usize| !rules.limits || set.limiter(i).is_none_or(Limiter::has_room);
    if tried.is_empty() && !rules.panic {
        // A first attempt: the usual case, with the least work per candidate.
        let i = match (rules.none_ejected, rules.limits) {
            (true, false) => balancer.pick(&at, set, &|_| true, rng)?,
            (true, true) => balancer.pick(&at, set, &room, rng)?,
            _ => balancer.pick(&at, set, &|i| room(i) && admits(i), rng)?,
        };
        // Its breaker may refuse (half-open without a free probe), or its
        // limit fill up meanwhile: then fall through to the general search.
        if let Some(chosen) = take(set, i, rules, now) {
            return Some(chosen);
        }
    }
    let mut refused = Tried::default();
    for allow_tried in [false, true] {
        loop {
            let eligible = |i: usize| {
                (allow_tried || !tried.contains(set.id(i)))
                    && !refused.contains(i)
                    && (rules.panic || admits(i))
                    && room(i)
            };
            let Some(i) = balancer.pick(&at, set, &eligible, rng) else {
                break;
            };
            match take(set, i, rules, now) {
                Some(chosen) => return Some(chosen),
                None => refused.insert(i),
            }
        }
    }
    None
}

/// Takes endpoint `i` for the attempt: its place under its limit, then its
/// breaker's admission; `None` (with nothing held) when either refuses.
#[inline(always)]
fn take<C: Candidates>(set: &C, i: usize, rules: Rules, now: Instant) -> Option<Chosen> {
    let limiter = set.limiter(i).filter(|_| rules.limits);
    if limiter.is_some_and(|l| !l.try_enter()) {
        return None;
    }
    match admission(set, i, rules, now) {
        Some(admission) => Some(Chosen {
            index: i,
            admission,
            placed: limiter.is_some(),
        }),
        None => {
            if let Some(l) = limiter {
                l.leave();
            }
            None
        }
    }
}

/// `Some(admission)` when endpoint `i` may take the call: `Some(None)`
/// without asking its breaker; `None` when its breaker refuses.
#[inline(always)]
fn admission<C: Candidates>(
    set: &C,
    i: usize,
    rules: Rules,
    now: Instant,
) -> Option<Option<Admission>> {
    let breaker = match set.breaker(i) {
        Some(b) if rules.breakers => b,
        _ => return Some(None),
    };
    match breaker.try_acquire(now) {
        Some(a) => Some(Some(a)),
        // Panic mode, or an endpoint left in rotation by the ejection cap:
        // send without the breaker's permission.
        None if rules.panic || !set.ejected(i) => Some(None),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::balance::{Load, RoundRobin};
    use crate::classify::Outcome;
    use crate::policy::breaker::{BreakerSettings, BreakerState};

    struct Set {
        loads: Vec<Load>,
        ejected: Vec<bool>,
        breakers: Vec<CircuitBreaker>,
    }

    impl LoadSet for Set {
        fn len(&self) -> usize {
            self.loads.len()
        }
        fn load(&self, i: usize) -> &Load {
            &self.loads[i]
        }
    }

    impl Candidates for Set {
        fn id(&self, i: usize) -> usize {
            i
        }
        fn ejected(&self, i: usize) -> bool {
            self.ejected[i]
        }
        fn breaker(&self, i: usize) -> Option<&CircuitBreaker> {
            self.breakers.get(i)
        }
    }

    fn set(n: usize, now: Instant) -> Set {
        let settings = BreakerSettings::default()
            .with_consecutive_failures(Some(1))
            .with_open_time(Duration::from_secs(1), 2.0, Duration::from_secs(8))
            .with_open_jitter(0.0)
            .with_probes(1);
        Set {
            loads: (0..n).map(|_| Load::new(1, now)).collect(),
            ejected: vec![false; n],
            breakers: (0..n)
                .map(|_| CircuitBreaker::new(settings.clone()).unwrap())
                .collect(),
        }
    }

    fn open(set: &mut Set, i: usize, now: Instant) {
        let b = &set.breakers[i];
        let a = b.try_acquire(now).unwrap();
        b.record(a, Outcome::Failure { retryable: true }, Duration::ZERO, now);
        assert_eq!(b.state(), BreakerState::Open);
        set.ejected[i] = true;
    }

    const ON: Rules = Rules {
        breakers: true,
        panic: false,
        none_ejected: false,
        limits: false,
    };

    #[test]
    fn prefers_untried_endpoints_then_any() {
        let now = Instant::now();
        let s = set(3, now);
        let b = RoundRobin::new().rebuild(&[1, 1, 1]);
        let mut rng = Rng::seeded(1);
        let mut tried = Tried::default();
        for _ in 0..3 {
            let c = choose(&s, &*b, &tried, ON, PickContext::new(now), &mut rng).unwrap();
            assert!(!tried.contains(c.index) && c.admission.is_some());
            tried.insert(c.index);
        }
        // All tried: one is chosen anyway.
        assert!(choose(&s, &*b, &tried, ON, PickContext::new(now), &mut rng).is_some());
    }

    #[test]
    fn ejected_endpoints_get_only_probes_and_panic_mode_ignores_breakers() {
        let now = Instant::now();
        let mut s = set(2, now);
        open(&mut s, 1, now);
        let b = RoundRobin::new().rebuild(&[1, 1]);
        let mut rng = Rng::seeded(2);
        let none = Tried::default();
        for _ in 0..10 {
            assert_eq!(
                choose(&s, &*b, &none, ON, PickContext::new(now), &mut rng)
                    .unwrap()
                    .index,
                0
            );
        }
        // Open time passed: one probe, with an admission, then no more.
        let later = now + Duration::from_secs(1);
        let mut tried = Tried::default();
        tried.insert(0);
        let c = choose(&s, &*b, &tried, ON, PickContext::new(later), &mut rng).unwrap();
        assert!(c.index == 1 && c.admission.is_some_and(|a| a.is_probe()));
        assert_eq!(
            choose(&s, &*b, &tried, ON, PickContext::new(later), &mut rng)
                .unwrap()
                .index,
            0
        );
        // Panic mode: both, the open one without its breaker's permission.
        let panic = Rules { panic: true, ..ON };
        let mut seen = [0; 2];
        for _ in 0..10 {
            let c = choose(&s, &*b, &none, panic, PickContext::new(later), &mut rng).unwrap();
            assert!(c.index == 0 || c.admission.is_none());
            seen[c.index] += 1;
        }
        assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
    }

    #[test]
    fn with_breakers_off_no_breaker_is_asked() {
        let now = Instant::now();
        let mut s = set(2, now);
        open(&mut s, 1, now);
        s.ejected[1] = false;
        let b = RoundRobin::new().rebuild(&[1, 1]);
        let mut rng = Rng::seeded(3);
        let off = Rules {
            breakers: false,
            panic: false,
            none_ejected: false,
            limits: false,
        };
        let mut seen = [0; 2];
        for _ in 0..10 {
            let c = choose(
                &s,
                &*b,
                &Tried::default(),
                off,
                PickContext::new(now),
                &mut rng,
            )
            .unwrap();
            assert!(c.admission.is_none());
            seen[c.index] += 1;
        }
        assert_eq!(seen, [5, 5]);
    }
}
