//! Adaptive throttling: shedding load at the client while the backends
//! refuse it.
//!
//! When backends are saturated, every request a client sends adds to their
//! queues and most of them fail anyway; a retry budget caps the extra
//! attempts but not the first ones. Adaptive throttling (Google SRE book,
//! "Handling Overload") lets each client refuse some requests itself,
//! without sending them, in proportion to how many the backends have been
//! refusing. Over a rolling window it counts
//!
//! - **requests**: every call the application asked for, including the ones
//!   this throttle refused;
//! - **accepts**: the calls a backend accepted (answered with a success).
//!
//! and refuses a new call with probability
//!
//! ```text
//! max(0, (requests − K × accepts) / (requests + 1))
//! ```
//!
//! While backends accept everything the probability is 0. When they accept
//! less than `1/K` of the traffic, the client sends about `K` times what they
//! accept: enough to notice when they recover, little enough to let their
//! queues drain. A smaller `K` sheds more aggressively.
//!
//! Defaults ([`ThrottleSettings::default`]): `K` = 2, a window of 60 s,
//! kept as 20 slots of 3 s (so counts leave the window 57 to 60 s after they
//! were made).
//!
//! [`Throttle`] is the decision core: plain synchronous state given the time
//! and a random draw, with no I/O and no clock of its own. The code that
//! sends calls asks [`Throttle::admit`] before each call and reports the
//! outcome of each admitted one with [`Throttle::record`].
//!
//! A call counts as a request once its outcome is known: at once when it is
//! refused, when it ends when it is sent. Counting it when it is sent would
//! make every call in flight look refused by the backends; in a steady
//! stream that is a few calls against a minute of history, but a client
//! that has just started would refuse about half of its second call.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use towline::policy::throttle::{Decision, Throttle, ThrottleSettings};
//!
//! let now = Instant::now();
//! let mut throttle = Throttle::new(&ThrottleSettings::default(), now);
//! // Backends accept everything: nothing is refused.
//! for _ in 0..100 {
//!     assert_eq!(throttle.admit(now, 0.0), Decision::Admit);
//!     throttle.record(now, true);
//! }
//! // Backends start refusing everything: the refusal probability grows
//! // once the requests outnumber K × accepts.
//! for _ in 0..300 {
//!     throttle.record(now, false);
//! }
//! let p = throttle.reject_probability(now);
//! assert!((p - (400.0 - 2.0 * 100.0) / 401.0).abs() < 1e-12);
//! assert_eq!(throttle.admit(now, p / 2.0), Decision::Reject);
//! // Once the window has passed, the history is forgotten.
//! assert_eq!(throttle.reject_probability(now + Duration::from_secs(60)), 0.0);
//! ```

use std::time::{Duration, Instant};

use crate::error::BuildError;

/// How many slots the window is cut into.
const SLOTS: usize = 20;

/// Adaptive-throttling settings; checked by [`ThrottleSettings::new`] and
/// [`ThrottleSettings::validate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleSettings {
    k: f64,
    window: Duration,
}

impl Default for ThrottleSettings {
    /// `K` = 2 over a 60 s window.
    fn default() -> Self {
        ThrottleSettings {
            k: 2.0,
            window: Duration::from_secs(60),
        }
    }
}

impl ThrottleSettings {
    /// `k`: how many requests a client may send per accepted one before it
    /// starts refusing (at least 1, finite); `window`: how far back requests
    /// and accepts count (1 s to 1 hour).
    pub fn new(k: f64, window: Duration) -> Result<Self, BuildError> {
        let s = ThrottleSettings { k, window };
        s.validate()?;
        Ok(s)
    }

    /// Checks the settings (as [`ThrottleSettings::new`] does).
    pub fn validate(&self) -> Result<(), BuildError> {
        // Below 1 a client would refuse calls even while every one of them
        // is accepted.
        if !self.k.is_finite() || self.k < 1.0 {
            return Err(BuildError::new(
                "throttle.k",
                format!("must be a finite number of at least 1, got {}", self.k),
            ));
        }
        if self.window < Duration::from_secs(1) || self.window > Duration::from_secs(3600) {
            return Err(BuildError::new(
                "throttle.window",
                format!("must be between 1 s and 1 hour, got {:?}", self.window),
            ));
        }
        Ok(())
    }

    /// The multiplier `K` (default 2).
    pub fn k(&self) -> f64 {
        self.k
    }

    /// The rolling window (default 60 s).
    pub fn window(&self) -> Duration {
        self.window
    }
}

/// Whether a call may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send the call.
    Admit,
    /// Refuse it locally, without sending it.
    Reject,
}

/// The counts of one slot of the window, stamped with the slot's tick.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    tick: u64,
    requests: u64,
    accepts: u64,
}

/// The adaptive-throttling state of one client: a rolling window of request
/// and accept counts. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Throttle {
    k: f64,
    slots: [Slot; SLOTS],
    slot_ns: u64,
    epoch: Instant,
    /// The latest tick seen: time is never taken to run backwards, so a
    /// late `now` cannot wipe newer counts.
    latest: u64,
}

impl Throttle {
    /// An empty window with these settings (validate them first: the
    /// settings are used as given); `epoch` is any instant not after the
    /// first `now`.
    pub fn new(settings: &ThrottleSettings, epoch: Instant) -> Self {
        Throttle {
            k: settings.k,
            slots: [Slot::default(); SLOTS],
            slot_ns: (settings.window.as_nanos() as u64 / SLOTS as u64).max(1),
            epoch,
            latest: 0,
        }
    }

    /// Applies a new `K`; the window length stays what it was when the
    /// throttle was made, and so do the counts.
    pub fn retune(&mut self, settings: &ThrottleSettings) {
        self.k = settings.k;
    }

    fn tick(&mut self, now: Instant) -> u64 {
        let tick = now.saturating_duration_since(self.epoch).as_nanos() as u64 / self.slot_ns;
        self.latest = self.latest.max(tick);
        self.latest
    }

    /// The slot for `tick`, emptied first if it held an older tick.
    fn slot(&mut self, tick: u64) -> &mut Slot {
        let slot = &mut self.slots[(tick % SLOTS as u64) as usize];
        if slot.tick != tick {
            *slot = Slot {
                tick,
                ..Slot::default()
            };
        }
        slot
    }

    /// Requests and accepts inside the window ending at `tick`.
    fn totals(&self, tick: u64) -> (u64, u64) {
        self.slots
            .iter()
            .filter(|s| s.tick <= tick && tick - s.tick < SLOTS as u64)
            .fold((0, 0), |(r, a), s| (r + s.requests, a + s.accepts))
    }

    /// The probability that a call made at `now` is refused:
    /// `max(0, (requests − K × accepts) / (requests + 1))` over the window.
    pub fn reject_probability(&self, now: Instant) -> f64 {
        let tick = (now.saturating_duration_since(self.epoch).as_nanos() as u64 / self.slot_ns)
            .max(self.latest);
        let (requests, accepts) = self.totals(tick);
        let excess = requests as f64 - self.k * accepts as f64;
        (excess / (requests as f64 + 1.0)).max(0.0)
    }

    /// Decides whether a call made at `now` may be sent: refused when
    /// `draw` (uniform in `[0, 1)`) is below the refusal probability. A
    /// refused call is counted as a request at once; an admitted one is
    /// counted when its outcome is [`record`](Self::record)ed.
    pub fn admit(&mut self, now: Instant, draw: f64) -> Decision {
        if draw < self.reject_probability(now) {
            let tick = self.tick(now);
            self.slot(tick).requests += 1;
            Decision::Reject
        } else {
            Decision::Admit
        }
    }

    /// Counts an admitted call that ended at `now`; `accepted` when a
    /// backend accepted it (answered it with a success).
    pub fn record(&mut self, now: Instant, accepted: bool) {
        let tick = self.tick(now);
        let slot = self.slot(tick);
        slot.requests += 1;
        slot.accepts += u64::from(accepted);
    }

    /// The requests and accepts counted in the window at `now`.
    pub fn counts(&self, now: Instant) -> (u64, u64) {
        let tick = (now.saturating_duration_since(self.epoch).as_nanos() as u64 / self.slot_ns)
            .max(self.latest);
        self.totals(tick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    const S: Duration = Duration::from_secs(1);

    fn throttle(k: f64) -> (Throttle, Instant) {
        let now = Instant::now();
        let settings = ThrottleSettings::new(k, 60 * S).unwrap();
        (Throttle::new(&settings, now), now)
    }

    #[test]
    fn nothing_is_refused_while_every_call_is_accepted() {
        let (mut t, now) = throttle(2.0);
        for i in 0..1_000u64 {
            let at = now + Duration::from_millis(i * 50);
            // The lowest draw is refused whenever the probability is above 0.
            assert_eq!(t.admit(at, 0.0), Decision::Admit, "call {i}");
            t.record(at, true);
        }
        assert_eq!(t.reject_probability(now + 50 * S), 0.0);
    }

    #[test]
    fn calls_in_flight_do_not_count_as_refused() {
        // A client that has just started sends its first calls before any
        // answer came back: none of them may be refused.
        let (mut t, now) = throttle(2.0);
        for _ in 0..50 {
            assert_eq!(t.admit(now, 0.0), Decision::Admit);
        }
        assert_eq!(t.counts(now), (0, 0));
    }

    #[test]
    fn probability_follows_the_formula() {
        for k in [1.0, 1.5, 2.0, 3.0] {
            let (mut t, now) = throttle(k);
            for i in 0..100 {
                t.record(now, i < 30);
            }
            assert_eq!(t.counts(now), (100, 30));
            let want = ((100.0 - k * 30.0) / 101.0_f64).max(0.0);
            assert!((t.reject_probability(now) - want).abs() < 1e-12, "k {k}");
        }
    }

    #[test]
    fn no_accepts_refuses_nearly_everything_but_not_everything() {
        let (mut t, now) = throttle(2.0);
        for _ in 0..99 {
            t.record(now, false);
        }
        assert!((t.reject_probability(now) - 0.99).abs() < 1e-12);
        // A draw above the probability is still admitted (and not counted
        // until its outcome is known): the client keeps probing.
        assert_eq!(t.admit(now, 0.995), Decision::Admit);
        assert_eq!(t.counts(now), (99, 0));
        // A refused call counts at once.
        assert_eq!(t.admit(now, 0.5), Decision::Reject);
        assert_eq!(t.counts(now), (100, 0));
    }

    #[test]
    fn a_saturated_backend_gets_about_k_times_what_it_accepts() {
        // 100 requests/s against a backend that accepts at most 20/s: once
        // the window is full, a client with K = 2 should send about 40/s.
        let (mut t, start) = throttle(2.0);
        let mut rng = Rng::seeded(17);
        let (mut sent_late, mut accepted_this_second) = (0u64, 0u32);
        for i in 0..12_000u64 {
            let at = start + Duration::from_millis(10 * i);
            if i % 100 == 0 {
                accepted_this_second = 0;
            }
            if t.admit(at, rng.unit()) == Decision::Admit {
                sent_late += u64::from(i >= 6_000);
                let accepted = accepted_this_second < 20;
                accepted_this_second += u32::from(accepted);
                t.record(at, accepted);
            }
        }
        // Over the second minute, 6,000 requests each sent with probability
        // about 0.4: five binomial standard deviations are under 190.
        let expected = 6_000.0 * 0.4;
        let sd = (6_000.0 * 0.4 * 0.6_f64).sqrt();
        assert!(
            (sent_late as f64 - expected).abs() < 5.0 * sd,
            "sent {sent_late} in the second minute, expected about {expected}"
        );
    }

    #[test]
    fn counts_leave_the_window() {
        let (mut t, now) = throttle(2.0);
        for _ in 0..100 {
            t.record(now, false);
        }
        // Slots are 3 s long: counts made in the first slot are still in the
        // window 57 s later and gone at 60 s.
        assert_eq!(t.counts(now + 59 * S), (100, 0));
        assert_eq!(t.counts(now + 60 * S), (0, 0));
        assert_eq!(t.reject_probability(now + 60 * S), 0.0);
        // A new request lands in a fresh slot, not on the old counts.
        t.record(now + 61 * S, false);
        assert_eq!(t.counts(now + 61 * S), (1, 0));
    }

    #[test]
    fn a_late_clock_reading_does_not_wipe_newer_counts() {
        let (mut t, now) = throttle(2.0);
        t.record(now + 10 * S, true);
        // An outcome reported with an older time lands in the newest slot.
        t.record(now, true);
        assert_eq!(t.counts(now + 10 * S), (2, 2));
        assert_eq!(t.counts(now), (2, 2));
    }

    #[test]
    fn retune_keeps_the_history() {
        let (mut t, now) = throttle(2.0);
        for i in 0..100 {
            t.record(now, i < 40);
        }
        assert!((t.reject_probability(now) - 20.0 / 101.0).abs() < 1e-12);
        t.retune(&ThrottleSettings::new(1.0, 60 * S).unwrap());
        assert!((t.reject_probability(now) - 60.0 / 101.0).abs() < 1e-12);
    }

    #[test]
    fn invalid_settings_are_refused() {
        for k in [0.5, 0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = ThrottleSettings::new(k, 60 * S).unwrap_err();
            assert_eq!(e.setting(), "throttle.k", "k {k}");
        }
        for w in [Duration::ZERO, Duration::from_millis(999), 3601 * S] {
            let e = ThrottleSettings::new(2.0, w).unwrap_err();
            assert_eq!(e.setting(), "throttle.window", "window {w:?}");
        }
        let d = ThrottleSettings::default();
        assert_eq!((d.k(), d.window()), (2.0, 60 * S));
        assert!(d.validate().is_ok());
    }
}
