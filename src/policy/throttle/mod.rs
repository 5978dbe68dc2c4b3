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
//! min(max_reject, max(0, (requests − K × accepts) / (requests + 1)))
//! ```
//!
//! While backends accept everything the probability is 0. When they accept
//! less than `1/K` of the traffic, the client sends about `K` times what they
//! accept: enough to notice when they recover, little enough to let their
//! queues drain. A smaller `K` sheds more aggressively.
//!
//! # Defaults, and where they depart from the book
//!
//! [`ThrottleSettings::default`]: `K` = 2 (the book's), a window of **10 s**
//! kept as 20 slots of 500 ms, and a refusal probability of at most **0.8**.
//!
//! The book counts over two minutes and caps nothing. Measured in the
//! simulator's retry-storm scenario (`scenarios/s5-retry-storm.toml`:
//! capacity halved for 10 s, the work of callers who gave up still served,
//! the default retry policy), that throttle does not bring goodput back:
//!
//! - a long window remembers the full service before the overload, so the
//!   throttle starts refusing only after the backends' queues are long,
//!   and then remembers the overload's failures for as long: at 60 s the
//!   goodput had crept back to 80%, 40 s after capacity returned;
//! - once nearly every recent request failed, the probability is close to
//!   1; the few calls let through succeed once the queues drain, but each
//!   window the client only sends `K` times what was accepted in the last,
//!   so from a 0.1% admission it takes about ten windows to send everything
//!   again: with a 5 s window and no cap, 33 s after capacity returned.
//!
//! A short window notices both the overload and the recovery within
//! seconds, and the cap keeps at least a fifth of the calls flowing, so the
//! climb back starts from 20%, not from 0.1%: with the defaults, goodput is
//! back to 95% 17 s after capacity returns (the book's settings: never
//! within the 40 s measured). Envoy's admission control filter, built on
//! the same throttle, also caps its refusal probability. The price of a
//! short window is noise on a quiet client: a client making one call per
//! second judges its backends on its last ten calls.
//!
//! # Use
//!
//! [`Throttle`] is the decision core: plain synchronous state given the time
//! and a random draw, with no I/O and no clock of its own. The code that
//! sends calls asks [`Throttle::admit`] before each call and reports the
//! outcome of each admitted one with [`Throttle::record`]. [`SharedThrottle`]
//! is the core for many tasks at once; a channel's throttle (the
//! [`ChannelPolicy::with_throttle`](crate::channel::ChannelPolicy::with_throttle)
//! option) is one, asked before each attempt.
//!
//! A call counts as a request once its outcome is known: at once when it is
//! refused, when it ends when it is sent. Counting it when it is sent would
//! make every call in flight look refused by the backends; in a steady
//! stream that is a few calls against seconds of history, but a client that
//! has just started would refuse about half of its second call.
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
//! // However bad it gets, a fifth of the calls still go out.
//! for _ in 0..10_000 {
//!     throttle.record(now, false);
//! }
//! assert_eq!(throttle.reject_probability(now), 0.8);
//! // Once the window has passed, the history is forgotten.
//! assert_eq!(throttle.reject_probability(now + Duration::from_secs(10)), 0.0);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
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
    max_reject: f64,
}

impl Default for ThrottleSettings {
    /// `K` = 2 over a 10 s window, refusing at most 80% of calls (see the
    /// [module docs](self) for why).
    fn default() -> Self {
        ThrottleSettings {
            k: 2.0,
            window: Duration::from_secs(10),
            max_reject: 0.8,
        }
    }
}

impl ThrottleSettings {
    /// `k`: how many requests a client may send per accepted one before it
    /// starts refusing (at least 1, finite); `window`: how far back requests
    /// and accepts count (1 s to 1 hour). The largest refusal probability
    /// is the default's (0.8): see [`with_max_reject`](Self::with_max_reject).
    pub fn new(k: f64, window: Duration) -> Result<Self, BuildError> {
        let s = ThrottleSettings {
            k,
            window,
            ..ThrottleSettings::default()
        };
        s.validate()?;
        Ok(s)
    }

    /// The largest refusal probability, above 0 and at most 1 (default
    /// 0.8): however badly the backends do, `1 − max` of the calls are
    /// still sent, so that the client sees them recover. 1 is the SRE
    /// book's throttle, which may refuse all but a few.
    pub fn with_max_reject(mut self, max: f64) -> Self {
        self.max_reject = max;
        self
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
        if !(self.max_reject > 0.0 && self.max_reject <= 1.0) {
            return Err(BuildError::new(
                "throttle.max_reject",
                format!(
                    "must be a probability above 0 and at most 1, got {}",
                    self.max_reject
                ),
            ));
        }
        Ok(())
    }

    /// The multiplier `K` (default 2).
    pub fn k(&self) -> f64 {
        self.k
    }

    /// The rolling window (default 10 s).
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The largest refusal probability (default 0.8).
    pub fn max_reject(&self) -> f64 {
        self.max_reject
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
    max_reject: f64,
    slots: [Slot; SLOTS],
    slot_ns: u64,
    epoch: Instant,
    /// The latest tick seen: time is never taken to run backwards, so a
    /// late `now` cannot wipe newer counts.
    latest: u64,
    /// Requests and accepts in the window ending at `latest` (kept as
    /// totals, so that a decision is O(1)).
    requests: u64,
    accepts: u64,
}

impl Throttle {
    /// An empty window with these settings (validate them first: the
    /// settings are used as given); `epoch` is any instant not after the
    /// first `now`.
    pub fn new(settings: &ThrottleSettings, epoch: Instant) -> Self {
        Throttle {
            k: settings.k,
            max_reject: settings.max_reject,
            slots: [Slot::default(); SLOTS],
            slot_ns: (crate::clock::nanos(settings.window) / SLOTS as u64).max(1),
            epoch,
            latest: 0,
            requests: 0,
            accepts: 0,
        }
    }

    /// Applies a new `K` and largest refusal probability; the window
    /// length stays what it was when the throttle was made, and so do the
    /// counts.
    pub fn retune(&mut self, settings: &ThrottleSettings) {
        self.k = settings.k;
        self.max_reject = settings.max_reject;
    }

    /// The tick of `now`, never before the latest one seen.
    fn tick_of(&self, now: Instant) -> u64 {
        (crate::clock::nanos_since(now, self.epoch) / self.slot_ns).max(self.latest)
    }

    /// Moves the window to `now`: slots that leave it are taken out of the
    /// totals and emptied.
    fn tick(&mut self, now: Instant) -> u64 {
        let tick = self.tick_of(now);
        if tick > self.latest {
            self.latest = tick;
            for slot in &mut self.slots {
                if tick - slot.tick >= SLOTS as u64 && (slot.requests | slot.accepts) != 0 {
                    self.requests -= slot.requests;
                    self.accepts -= slot.accepts;
                    slot.requests = 0;
                    slot.accepts = 0;
                }
            }
        }
        tick
    }

    /// The slot for `tick` (a tick of the window), emptied first if it held
    /// an older tick (whose counts have left the totals already).
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

    /// Requests and accepts inside the window ending at `tick` (not before
    /// `latest`).
    fn totals(&self, tick: u64) -> (u64, u64) {
        if tick == self.latest {
            return (self.requests, self.accepts);
        }
        // Later than any count: leave out the slots that have left.
        self.slots
            .iter()
            .filter(|s| tick - s.tick < SLOTS as u64)
            .fold((0, 0), |(r, a), s| (r + s.requests, a + s.accepts))
    }

    /// The refusal probability at the latest tick seen, from the kept
    /// totals (no clock arithmetic).
    fn latest_probability(&self) -> f64 {
        let excess = self.requests as f64 - self.k * self.accepts as f64;
        (excess / (self.requests as f64 + 1.0)).clamp(0.0, self.max_reject)
    }

    /// The probability that a call made at `now` is refused:
    /// `max(0, (requests − K × accepts) / (requests + 1))` over the window,
    /// at most the largest refusal probability.
    pub fn reject_probability(&self, now: Instant) -> f64 {
        let tick = self.tick_of(now);
        if tick == self.latest {
            return self.latest_probability();
        }
        let (requests, accepts) = self.totals(tick);
        let excess = requests as f64 - self.k * accepts as f64;
        (excess / (requests as f64 + 1.0)).clamp(0.0, self.max_reject)
    }

    /// Decides whether a call made at `now` may be sent: refused when
    /// `draw` (uniform in `[0, 1)`) is below the refusal probability. A
    /// refused call is counted as a request at once; an admitted one is
    /// counted when its outcome is [`record`](Self::record)ed.
    pub fn admit(&mut self, now: Instant, draw: f64) -> Decision {
        let tick = self.tick(now);
        if draw < self.latest_probability() {
            self.slot(tick).requests += 1;
            self.requests += 1;
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
        self.requests += 1;
        self.accepts += u64::from(accepted);
    }

    /// The requests and accepts counted in the window at `now`.
    pub fn counts(&self, now: Instant) -> (u64, u64) {
        self.totals(self.tick_of(now))
    }
}

/// A [`Throttle`] shared by every task of a channel.
///
/// The core behind a lock, with the refusal probability published after
/// each change: while it is 0 (backends accept enough) a decision is one
/// atomic load, with no lock and no random draw. Otherwise a decision and
/// every recorded outcome take the lock for a few dozen instructions
/// (the core's work is O(1); only moving to a new slot, every
/// `window / 20`, walks the 20 slots).
///
/// The published probability is the one after the last decision or
/// outcome: when traffic stops while the backends were accepting, counts
/// that leave the window are noticed by the first outcome after it
/// resumes, so the first calls then are admitted.
///
/// ```
/// use std::time::Instant;
/// use towline::policy::throttle::{Decision, SharedThrottle, ThrottleSettings};
///
/// let now = Instant::now();
/// let throttle = SharedThrottle::new(&ThrottleSettings::default(), now);
/// for _ in 0..10 {
///     throttle.record(now, false);
/// }
/// // Every recent call failed: about 10 in 11 are refused.
/// assert_eq!(throttle.admit(now, || 0.5), Decision::Reject);
/// assert_eq!(throttle.counts(now), (11, 0));
/// ```
#[derive(Debug)]
pub struct SharedThrottle {
    core: parking_lot::Mutex<Throttle>,
    /// The refusal probability after the last change, as `f64` bits.
    probability: AtomicU64,
}

impl SharedThrottle {
    /// An empty window with these settings (validated first by the
    /// caller); `epoch` as for [`Throttle::new`].
    pub fn new(settings: &ThrottleSettings, epoch: Instant) -> Self {
        SharedThrottle {
            core: parking_lot::Mutex::new(Throttle::new(settings, epoch)),
            probability: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Decides whether a call made at `now` may be sent, drawing a uniform
    /// number in `[0, 1)` from `draw` only when a refusal is possible.
    #[inline]
    pub fn admit(&self, now: Instant, draw: impl FnOnce() -> f64) -> Decision {
        if self.probability.load(Ordering::Relaxed) == 0 {
            return Decision::Admit;
        }
        let draw = draw();
        let mut core = self.core.lock();
        let decision = core.admit(now, draw);
        self.publish(&core);
        decision
    }

    /// Counts an admitted call that ended at `now` (see [`Throttle::record`]).
    pub fn record(&self, now: Instant, accepted: bool) {
        let mut core = self.core.lock();
        core.record(now, accepted);
        self.publish(&core);
    }

    /// Publishes the probability after a change at the core's latest tick
    /// (the time of the change, or later).
    fn publish(&self, core: &Throttle) {
        let p = core.latest_probability();
        self.probability.store(p.to_bits(), Ordering::Relaxed);
    }

    /// Applies a new `K` and cap (see [`Throttle::retune`]).
    pub fn retune(&self, settings: &ThrottleSettings, now: Instant) {
        let mut core = self.core.lock();
        core.retune(settings);
        let p = core.reject_probability(now);
        self.probability.store(p.to_bits(), Ordering::Relaxed);
    }

    /// The refusal probability at `now`.
    pub fn reject_probability(&self, now: Instant) -> f64 {
        self.core.lock().reject_probability(now)
    }

    /// The requests and accepts counted in the window at `now`.
    pub fn counts(&self, now: Instant) -> (u64, u64) {
        self.core.lock().counts(now)
    }
}

#[cfg(test)]
mod tests;
