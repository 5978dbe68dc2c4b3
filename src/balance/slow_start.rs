//! Slow start: ramping a new endpoint's share of traffic up over a window.
//!
//! A new endpoint, or one back from ejection, is often cold: empty caches,
//! code not yet compiled, no pooled connections. A least-loaded balancer
//! sees it idle and sends it a burst; P2C peak-EWMA even assumes the
//! default RTT until its first answers come back. Slow start scales the
//! endpoint's weight by a factor that grows over a window instead.
//!
//! **Formula** (as Envoy's `slow_start_config`). With window `W`,
//! aggression `a` and minimum weight share `m`, an endpoint whose ramp
//! started `t` ago has the weight factor
//!
//! `f(t) = max(m, (t / W)^(1/a))` for `t < W`, and `1` from `W` on.
//!
//! `a = 1` ramps linearly; `a > 1` gives more traffic early (the curve is
//! concave), `a < 1` holds traffic back longer. Unlike Envoy, `t` is not
//! rounded up to a whole second.
//!
//! | setting | default | Envoy |
//! |---|---|---|
//! | window `W` | 30 s: long enough for JIT compilation, connection pools and caches to warm, as in the cold-start scenario (10× slower at first, warm by 30 s) | `slow_start_window`, no default |
//! | aggression `a` | 1.0 (linear) | `aggression`, default 1.0 |
//! | minimum share `m` | 0.1 (10% of the weight at once) | `min_weight_percent`, default 10% |
//!
//! Slow start is off unless configured; [`SlowStartSettings::default`]
//! gives the values above.
//!
//! # Staying cheap at pick time
//!
//! [`SlowStart`] compiles the settings once (they are swapped as a whole
//! when tuned at runtime) into a step curve, so that a pick never calls
//! `powf` or divides: the factor is rounded *down* to one of
//! [`SlowStart::STEPS`] + 1 levels `Lₖ = m + (1 − m)·k/K`, reached at the
//! precomputed times `tₖ = W · Lₖ^a`, found by a binary search over 65
//! integers. The result is never above the exact factor and at most
//! `(1 − m)/K` below it (1.4% of the weight with the defaults).
//!
//! How it is wired in (the set-level state is [`Ramps`](super::Ramps)):
//!
//! - **Per endpoint, a ramp end**: one `AtomicU64` in the endpoint's
//!   `Load`, the tick (nanoseconds of the channel's clock) when its ramp
//!   ends, 0 for none, set by [`SlowStart::ramp_end`] when the endpoint is
//!   inserted into a set that already had endpoints (the first set does not
//!   ramp: everyone is equally cold) and when it returns from ejection.
//!   Storing the end rather than the start makes the steady state one
//!   comparison, and a window shortened at runtime never lengthens a ramp in
//!   progress (a ramp longer than the new window restarts its curve at `m`).
//! - **Per table, a latest ramp end**: the maximum over the endpoints,
//!   raised atomically (`fetch_max`) whenever a ramp starts. A pick first
//!   compares the time it already has with it; in the steady state that is
//!   the only cost: one load of a read-mostly atomic and one comparison, no
//!   clock arithmetic. Only picks during a ramp read a candidate's ramp end
//!   and call [`SlowStart::factor_at`].
//! - **P2C** (pending or peak-EWMA): the cost already divides by the
//!   weight; it divides by `weight × factor` instead, so a cold endpoint
//!   with the default RTT looks `1/m` times costlier at first.
//! - **Round-robin and weighted round-robin**: when the cursor lands on a
//!   ramping endpoint, its turn is kept with probability `factor`
//!   ([`SlowStart::admit`]), else the pick moves on to the next turn. A
//!   ramping endpoint so gets `factor` times its share, the others absorb
//!   the rest in their usual proportions, and the precomputed schedule is
//!   never rebuilt during a ramp. The walk is bounded like the existing
//!   skip over ineligible turns: after a few refusals the candidate is
//!   taken anyway, so slow start never makes a pick fail.
//! - **Weighted random** (alias table): the same thinning by rejection, a
//!   draw kept with probability `factor` and redrawn otherwise, gives each
//!   endpoint a share proportional to `weight × factor` exactly, again with
//!   no table rebuild (a rebuild per step would cost O(n) each of
//!   `K` times per ramping endpoint).
//! - **Consistent hashing**: ownership of keys does not ramp (moving keys
//!   back and forth would defeat affinity); with bounded loads, a ramping
//!   endpoint's bound can use `weight × factor`, so it takes its own keys
//!   only up to a ramped share and the rest walk on.
//!
//! ```
//! use std::time::Duration;
//! use towline::balance::{SlowStart, SlowStartSettings};
//!
//! let settings = SlowStartSettings::new(Duration::from_secs(30), 1.0, 0.1)?;
//! assert_eq!(settings.factor(Duration::ZERO), 0.1);
//! assert_eq!(settings.factor(Duration::from_secs(15)), 0.5);
//! assert_eq!(settings.factor(Duration::from_secs(30)), 1.0);
//!
//! // At pick time: ticks of the channel clock (nanoseconds).
//! let ramp = SlowStart::new(&settings);
//! let end = ramp.ramp_end(1_000);
//! let halfway = 1_000 + 15_000_000_000;
//! let f = ramp.factor_at(halfway, end);
//! assert!(f <= 0.5 && 0.5 - f <= ramp.max_error());
//! assert_eq!(ramp.factor_at(end, end), 1.0);
//! # Ok::<(), towline::BuildError>(())
//! ```

use std::time::Duration;

use crate::error::BuildError;
use crate::rng::Rng;

/// Slow-start settings: a window, an aggression and a minimum weight share
/// (defaults 30 s, 1.0, 0.1).
///
/// ```
/// use std::time::Duration;
/// use towline::balance::SlowStartSettings;
///
/// // Aggression 2: the weight follows the square root of time.
/// let s = SlowStartSettings::new(Duration::from_secs(40), 2.0, 0.05)?;
/// assert_eq!(s.factor(Duration::from_secs(10)), 0.5);
/// assert!(SlowStartSettings::new(Duration::from_secs(40), 0.0, 0.05).is_err());
/// # Ok::<(), towline::BuildError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowStartSettings {
    window: Duration,
    aggression: f64,
    min_weight: f64,
}

impl SlowStartSettings {
    /// The default window: 30 s.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
    /// The default aggression: 1.0 (linear).
    pub const DEFAULT_AGGRESSION: f64 = 1.0;
    /// The default minimum weight share: 0.1.
    pub const DEFAULT_MIN_WEIGHT: f64 = 0.1;
    /// The longest window accepted: one hour.
    pub const MAX_WINDOW: Duration = Duration::from_secs(3600);

    /// A ramp over `window` (1 ms to 1 hour) with `aggression` (above 0, at
    /// most 100) starting at `min_weight` of the weight (above 0, at most 1).
    pub fn new(window: Duration, aggression: f64, min_weight: f64) -> Result<Self, BuildError> {
        let s = SlowStartSettings {
            window,
            aggression,
            min_weight,
        };
        s.validate()?;
        Ok(s)
    }

    /// Checks the settings (as [`SlowStartSettings::new`] does).
    pub fn validate(&self) -> Result<(), BuildError> {
        if self.window < Duration::from_millis(1) || self.window > Self::MAX_WINDOW {
            return Err(BuildError::new(
                "slow_start.window",
                format!("must be between 1 ms and 1 hour, got {:?}", self.window),
            ));
        }
        if !(self.aggression > 0.0 && self.aggression <= 100.0) {
            return Err(BuildError::new(
                "slow_start.aggression",
                format!("must be above 0 and at most 100, got {}", self.aggression),
            ));
        }
        if !(self.min_weight > 0.0 && self.min_weight <= 1.0) {
            return Err(BuildError::new(
                "slow_start.min_weight",
                format!(
                    "must be a share above 0 and at most 1, got {}",
                    self.min_weight
                ),
            ));
        }
        Ok(())
    }

    /// How long a ramp lasts.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// How fast traffic grows over the window (1 is linear).
    pub fn aggression(&self) -> f64 {
        self.aggression
    }

    /// The share of its weight an endpoint gets when its ramp starts.
    pub fn min_weight(&self) -> f64 {
        self.min_weight
    }

    /// The exact weight factor `elapsed` after a ramp started:
    /// `max(m, (elapsed / window)^(1/aggression))`, 1 from the window on.
    pub fn factor(&self, elapsed: Duration) -> f64 {
        if elapsed >= self.window {
            return 1.0;
        }
        let x = elapsed.as_secs_f64() / self.window.as_secs_f64();
        x.powf(1.0 / self.aggression).max(self.min_weight)
    }
}

impl Default for SlowStartSettings {
    /// 30 s, aggression 1.0, minimum share 0.1.
    fn default() -> Self {
        SlowStartSettings {
            window: Self::DEFAULT_WINDOW,
            aggression: Self::DEFAULT_AGGRESSION,
            min_weight: Self::DEFAULT_MIN_WEIGHT,
        }
    }
}

/// Slow-start settings compiled for pick time: the ramp as a step curve
/// over ticks (nanoseconds of the channel's clock). See the
/// [module docs](self).
///
/// ```
/// use towline::balance::{SlowStart, SlowStartSettings};
///
/// let ramp = SlowStart::new(&SlowStartSettings::default());
/// let end = ramp.ramp_end(0);
/// assert_eq!(ramp.factor_at(0, end), 0.1); // starts at the minimum share
/// assert_eq!(ramp.factor_at(0, 0), 1.0); // 0: not ramping
/// ```
#[derive(Debug, Clone)]
pub struct SlowStart {
    settings: SlowStartSettings,
    window_ns: u64,
    /// `tₖ` in ns for `k = 1..=STEPS` (non-decreasing; the last is the
    /// window).
    steps: [u64; SlowStart::STEPS],
}

impl SlowStart {
    /// How many steps the curve has: 64.
    pub const STEPS: usize = 64;

    /// The curve for `settings`.
    pub fn new(settings: &SlowStartSettings) -> Self {
        let window_ns = settings.window.as_nanos() as u64;
        let mut steps = [window_ns; Self::STEPS];
        for (k, t) in steps.iter_mut().enumerate() {
            let level = Self::level(settings.min_weight, k + 1);
            let at = window_ns as f64 * level.powf(settings.aggression);
            *t = (at.ceil() as u64).min(window_ns);
        }
        SlowStart {
            settings: *settings,
            window_ns,
            steps,
        }
    }

    /// `Lₖ = m + (1 − m)·k/K`.
    fn level(min_weight: f64, k: usize) -> f64 {
        min_weight + (1.0 - min_weight) * k as f64 / Self::STEPS as f64
    }

    /// The settings this curve was compiled from.
    pub fn settings(&self) -> &SlowStartSettings {
        &self.settings
    }

    /// How far below the exact factor [`factor_at`](Self::factor_at) may be:
    /// `(1 − m) / STEPS`.
    pub fn max_error(&self) -> f64 {
        (1.0 - self.settings.min_weight) / Self::STEPS as f64
    }

    /// The tick at which a ramp starting at tick `start` ends (saturating;
    /// never 0, which stands for "no ramp").
    pub fn ramp_end(&self, start: u64) -> u64 {
        start.saturating_add(self.window_ns).max(1)
    }

    /// The weight factor at tick `now` of a ramp ending at tick `end`
    /// (0: no ramp). 1 once `now ≥ end`, with no other work; otherwise the
    /// exact factor rounded down to a step.
    #[inline]
    pub fn factor_at(&self, now: u64, end: u64) -> f64 {
        if now >= end {
            return 1.0;
        }
        self.ramping_factor(end - now)
    }

    #[cold]
    fn ramping_factor(&self, remaining: u64) -> f64 {
        let elapsed = self.window_ns.saturating_sub(remaining);
        let k = self.steps.partition_point(|&t| t <= elapsed);
        Self::level(self.settings.min_weight, k)
    }

    /// Thinning for round-robin and weighted picks: true with probability
    /// [`factor_at`](Self::factor_at), always (with no random draw) when not
    /// ramping.
    #[inline]
    pub fn admit(&self, now: u64, end: u64, rng: &mut Rng) -> bool {
        now >= end || rng.unit() < self.ramping_factor(end - now)
    }
}

/// How many turns of ramping endpoints one round-robin or weighted pick
/// refuses at most before it takes the next eligible endpoint anyway: 4.
/// (With a factor of at least 0.1, the bound binds on fewer than 66% of
/// the picks that meet 4 ramping endpoints in a row, which takes a set
/// where most endpoints ramp at once.)
pub const MAX_REFUSALS: usize = 4;

/// Thinning over turns `0..len`: the first turn `k` with `eligible(k)`
/// that `admit(k)` keeps, or that comes after [`MAX_REFUSALS`] refusals;
/// the first eligible turn if every one was refused; `None` when none is
/// eligible.
pub(crate) fn thin(
    len: usize,
    mut eligible: impl FnMut(usize) -> bool,
    mut admit: impl FnMut(usize) -> bool,
) -> Option<usize> {
    let mut first = None;
    let mut refused = 0;
    for k in 0..len {
        if !eligible(k) {
            continue;
        }
        first.get_or_insert(k);
        if refused >= MAX_REFUSALS || admit(k) {
            return Some(k);
        }
        refused += 1;
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_takes_the_first_kept_turn_and_never_fails() {
        let none = |_| false;
        assert_eq!(thin(5, |_| true, |k| k == 2), Some(2));
        assert_eq!(thin(5, |k| k != 2, |k| k >= 2), Some(3));
        // Every turn refused: the first eligible one.
        assert_eq!(thin(3, |k| k > 0, none), Some(1));
        // After MAX_REFUSALS refusals, the next eligible turn is taken.
        assert_eq!(thin(10, |_| true, none), Some(MAX_REFUSALS));
        assert_eq!(thin(10, none, |_| true), None);
        assert_eq!(thin(0, |_| true, |_| true), None);
    }

    #[test]
    fn settings_are_validated() {
        let err = |w, a, m| SlowStartSettings::new(w, a, m).unwrap_err().setting();
        let s = Duration::from_secs(1);
        assert_eq!(err(Duration::ZERO, 1.0, 0.1), "slow_start.window");
        assert_eq!(
            err(Duration::from_secs(3601), 1.0, 0.1),
            "slow_start.window"
        );
        for a in [0.0, -1.0, f64::NAN, f64::INFINITY, 101.0] {
            assert_eq!(err(s, a, 0.1), "slow_start.aggression", "{a}");
        }
        for m in [0.0, -0.1, 1.5, f64::NAN] {
            assert_eq!(err(s, 1.0, m), "slow_start.min_weight", "{m}");
        }
        assert_eq!(SlowStartSettings::default().validate(), Ok(()));
    }

    #[test]
    fn exact_factor_follows_the_formula() {
        let w = Duration::from_secs(100);
        let linear = SlowStartSettings::new(w, 1.0, 0.1).unwrap();
        assert_eq!(linear.factor(Duration::from_secs(5)), 0.1);
        assert!((linear.factor(Duration::from_secs(40)) - 0.4).abs() < 1e-12);
        assert_eq!(linear.factor(Duration::from_secs(500)), 1.0);
        // Aggression 2: the square root, so a quarter of the way is half.
        let eager = SlowStartSettings::new(w, 2.0, 0.1).unwrap();
        assert!((eager.factor(Duration::from_secs(25)) - 0.5).abs() < 1e-12);
        let shy = SlowStartSettings::new(w, 0.5, 0.1).unwrap();
        assert!((shy.factor(Duration::from_secs(50)) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn the_step_curve_is_never_above_and_within_one_step_below() {
        let mut rng = Rng::seeded(31);
        for a in [0.1, 0.5, 1.0, 1.5, 3.0, 10.0, 100.0] {
            for m in [0.01, 0.1, 0.5, 1.0] {
                let window = Duration::from_millis(1 + rng.below(60_000) as u64);
                let settings = SlowStartSettings::new(window, a, m).unwrap();
                let ramp = SlowStart::new(&settings);
                let end = ramp.ramp_end(5_000);
                for _ in 0..2_000 {
                    let elapsed = rng.below(window.as_nanos() as usize + 10) as u64;
                    let got = ramp.factor_at(5_000 + elapsed, end);
                    let exact = settings.factor(Duration::from_nanos(elapsed));
                    // The thresholds are rounded up to whole nanoseconds.
                    let slack = 1e-9;
                    assert!(
                        got <= exact + slack,
                        "a={a} m={m} t={elapsed}: {got} > {exact}"
                    );
                    assert!(
                        exact - got <= ramp.max_error() + slack,
                        "a={a} m={m} t={elapsed}"
                    );
                }
            }
        }
    }

    #[test]
    fn no_ramp_and_ended_ramps_are_full_weight() {
        let ramp = SlowStart::new(&SlowStartSettings::default());
        assert_eq!(ramp.factor_at(0, 0), 1.0);
        assert_eq!(ramp.factor_at(123, 0), 1.0);
        let end = ramp.ramp_end(0);
        assert_eq!(end, 30_000_000_000);
        assert_eq!(ramp.factor_at(0, end), 0.1);
        assert_eq!(ramp.factor_at(end, end), 1.0);
        assert_eq!(ramp.ramp_end(u64::MAX), u64::MAX);
    }

    #[test]
    fn a_ramp_longer_than_a_retuned_window_restarts_at_the_minimum() {
        let long = SlowStart::new(&SlowStartSettings::default());
        let end = long.ramp_end(0);
        let short =
            SlowStart::new(&SlowStartSettings::new(Duration::from_secs(10), 1.0, 0.2).unwrap());
        assert_eq!(short.factor_at(1_000_000_000, end), 0.2);
        // Within the new window of its end, it follows the new curve.
        let f = short.factor_at(end - 5_000_000_000, end);
        assert!(f <= 0.5 && 0.5 - f <= short.max_error() + 1e-9, "{f}");
    }

    #[test]
    fn admit_keeps_a_share_equal_to_the_factor() {
        let ramp = SlowStart::new(&SlowStartSettings::default());
        let end = ramp.ramp_end(0);
        let mut rng = Rng::seeded(32);
        let now = 9_000_000_000; // 30% of the window
        let p = ramp.factor_at(now, end);
        let trials = 100_000;
        let kept = (0..trials)
            .filter(|_| ramp.admit(now, end, &mut rng))
            .count() as f64;
        let sigma = crate::test_bounds::binomial_sd(trials as f64, p);
        assert!(
            (kept - trials as f64 * p).abs() <= 5.0 * sigma,
            "{kept} vs {p}"
        );
        assert!((0..100).all(|_| ramp.admit(end, end, &mut rng)));
    }
}
