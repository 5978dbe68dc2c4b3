//! The shared limiter: admission on atomics, a bounded wait queue, and the
//! algorithm behind a short lock taken for each finished call it asks for
//! (every one, or a random sample of a busy window: [`Limiter::weight`]).

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{
    Core, LIMIT_METRIC, LimitSettings, MIN_RTT_METRIC, QUEUED_METRIC, REJECTED_METRIC, Sample,
    Sampling,
};
use crate::balance::{AttemptEnd, End};
use crate::clock::{later, nanos, nanos_since, now};
use crate::error::BuildError;
use crate::rng::{Rng, with_thread_rng};

/// One limit shared by every service of a layer, or by every call of a
/// channel (or of one of its endpoints).
pub(crate) struct Limiter {
    /// The limit in force, published by the core after each change.
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    /// Calls waiting in the queue.
    waiting: AtomicUsize,
    /// Baseline RTT in nanoseconds; 0 before the first probe ends.
    min_rtt_ns: AtomicU64,
    rejected: AtomicU64,
    queued: AtomicU64,
    core: Mutex<Core>,
    /// Whether the algorithm learns from samples (a fixed limit does not).
    learns: AtomicBool,
    /// The algorithm's [`Sampling`], published after each sample (see
    /// [`weight`](Limiter::weight)); `all_from` in nanoseconds since
    /// `epoch` (`u64::MAX`: none).
    every: AtomicU32,
    peak: AtomicUsize,
    all_from_ns: AtomicU64,
    epoch: Instant,
    /// Queue length and longest wait (in nanoseconds): atomics, so that a
    /// retune changes them under calls in flight.
    queue: AtomicUsize,
    max_wait_ns: AtomicU64,
    room: Notify,
    metrics: Metrics,
}

struct Metrics {
    limit: Gauge,
    min_rtt: Gauge,
    rejected: Counter,
    queued: Counter,
}

/// What a call gets when it asks to start.
pub(crate) enum Admission {
    /// It may start now.
    Now(Permit<Arc<Limiter>>),
    /// It may wait in the queue ([`Limiter::wait`]).
    Wait,
    /// It is refused (already counted).
    Refused,
}

impl Limiter {
    /// A limiter whose metrics carry the label `limiter` (the settings'
    /// name), for the standalone layer.
    pub(crate) fn new(settings: &LimitSettings) -> Result<Self, BuildError> {
        Self::labelled(settings, &[("limiter", settings.name.clone())])
    }

    /// A limiter whose metrics carry `labels` (a channel's: `channel`, and
    /// `endpoint` for a per-endpoint limit).
    pub(crate) fn labelled(
        settings: &LimitSettings,
        labels: &[(&'static str, String)],
    ) -> Result<Self, BuildError> {
        settings.validate()?;
        let core = Core::new(settings, now());
        crate::metrics::describe();
        let metrics = Metrics {
            limit: metrics::gauge!(LIMIT_METRIC, labels),
            min_rtt: metrics::gauge!(MIN_RTT_METRIC, labels),
            rejected: metrics::counter!(REJECTED_METRIC, labels),
            queued: metrics::counter!(QUEUED_METRIC, labels),
        };
        metrics.limit.set(core.limit() as f64);
        Ok(Limiter {
            limit: AtomicUsize::new(core.limit()),
            in_flight: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            min_rtt_ns: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            learns: AtomicBool::new(!matches!(core, Core::Fixed(_))),
            every: AtomicU32::new(1),
            peak: AtomicUsize::new(0),
            all_from_ns: AtomicU64::new(u64::MAX),
            epoch: now(),
            core: Mutex::new(core),
            queue: AtomicUsize::new(settings.queue),
            max_wait_ns: AtomicU64::new(nanos(settings.max_wait)),
            room: Notify::new(),
            metrics,
        })
    }

    /// Applies new settings to calls from now on, keeping the state: the
    /// limit in force (within the new bounds) and, when the algorithm stays
    /// the gradient, its baseline. Another algorithm starts from the limit
    /// in force (the gradient then probes for a baseline first). The
    /// metrics' labels stay as they were.
    pub(crate) fn retune(&self, settings: &LimitSettings) -> Result<(), BuildError> {
        settings.validate()?;
        let mut core = self.core.lock();
        core.retune(settings, now());
        self.learns
            .store(!matches!(*core, Core::Fixed(_)), Ordering::Relaxed);
        self.queue.store(settings.queue, Ordering::Relaxed);
        self.max_wait_ns
            .store(nanos(settings.max_wait), Ordering::Relaxed);
        self.publish(&core);
        self.publish_sampling(&core);
        Ok(())
    }

    /// The queue's length (0: no queue).
    #[inline]
    pub(crate) fn queue_length(&self) -> usize {
        self.queue.load(Ordering::Relaxed)
    }

    /// Whether calls wait in the queue now.
    #[inline]
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Whether a call would be admitted now (two loads, no write).
    #[inline]
    pub(crate) fn has_room(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) < self.limit.load(Ordering::Relaxed)
    }

    /// Takes a place if the limit allows, as a bare token: the caller must
    /// give it back with [`leave`](Self::leave) or
    /// [`leave_after`](Self::leave_after).
    #[inline]
    pub(crate) fn try_enter(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        self.in_flight
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Takes a place if the limit allows.
    pub(crate) fn try_acquire<B: Deref<Target = Limiter> + Clone>(this: &B) -> Option<Permit<B>> {
        this.try_enter().then(|| Permit {
            limiter: Some(this.clone()),
        })
    }

    /// Decides for a new call: start, wait, or be refused. With a queue,
    /// a new call does not pass calls already waiting.
    pub(crate) fn admit(this: &Arc<Limiter>) -> Admission {
        let queue = this.queue_length();
        if (queue == 0 || !this.has_waiters())
            && let Some(permit) = Limiter::try_acquire(this)
        {
            return Admission::Now(permit);
        }
        if queue > 0 {
            Admission::Wait
        } else {
            this.refuse();
            Admission::Refused
        }
    }

    /// Waits in the queue for a place, at most `max_wait`; `None` (counted
    /// as refused) when the queue is full or the wait runs out.
    pub(crate) async fn wait(self: Arc<Self>) -> Option<Permit<Arc<Limiter>>> {
        let entered = self.wait_for_room().await;
        entered.then(|| Permit {
            limiter: Some(self),
        })
    }

    /// Waits in the queue for a place, at most `max_wait`: `true` when it
    /// took one (give it back with [`leave`](Self::leave) or
    /// [`leave_after`](Self::leave_after)), `false` (counted as refused)
    /// when the queue is full or the wait runs out.
    pub(crate) async fn wait_for_room(&self) -> bool {
        let queue = self.queue.load(Ordering::Relaxed);
        let reserved = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < queue).then_some(n + 1)
            });
        if reserved.is_err() {
            // Full, but the waiters may just have been woken into room
            // that is still free: take it rather than refuse.
            let room = self.try_enter();
            if !room {
                self.refuse();
            }
            return room;
        }
        let _place = Place(self);
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.metrics.queued.increment(1);
        let max_wait = Duration::from_nanos(self.max_wait_ns.load(Ordering::Relaxed));
        let deadline = tokio::time::Instant::from_std(later(now(), max_wait));
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            // Registered before trying, so a place freed in between wakes us.
            notified.as_mut().enable();
            if self.try_enter() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let last_chance = self.try_enter();
                if !last_chance {
                    self.refuse();
                }
                return last_chance;
            }
        }
    }

    /// Counts a call refused (at once, queue full, or waited too long).
    pub(crate) fn refuse(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.metrics.rejected.increment(1);
    }

    /// Whether finished calls should be reported (else skip the clock).
    #[inline]
    pub(crate) fn learns(&self) -> bool {
        self.learns.load(Ordering::Relaxed)
    }

    /// The weight of the sample of a call that finished at `now` with
    /// `in_flight` calls in flight when it is to be reported, `None` when
    /// it is not: the algorithm needs only so many samples per window, so
    /// that a busy limiter takes its lock for one call in many. A call is
    /// reported at random with probability `1 / every`, standing for
    /// `every` calls (the window's mean stays unbiased); always when it
    /// sees more calls in flight than any reported one (the window's peak
    /// stays exact); and, once the window's time is up, one in 8 of the
    /// others, standing for itself, so that a window whose calls became
    /// rare still closes within a few calls.
    #[inline]
    fn weight(&self, in_flight: usize, now: Instant) -> Option<u32> {
        let every = self.every.load(Ordering::Relaxed);
        if every <= 1 || in_flight > self.peak.load(Ordering::Relaxed) {
            return Some(1);
        }
        let draw = with_thread_rng(Rng::next_u64);
        if (u128::from(draw) * u128::from(every)) >> 64 == 0 {
            return Some(every);
        }
        // The clock arithmetic costs as much as the rest: looked at for one
        // call in 8 (the draw's low bits, independent of its high ones).
        let late = draw & 7 == 0
            && nanos_since(now, self.epoch) >= self.all_from_ns.load(Ordering::Relaxed);
        late.then_some(1)
    }

    /// Feeds a finished call standing for `weight` calls to the algorithm
    /// and publishes a new limit.
    fn record(&self, sample: Sample, weight: u32, now: Instant) {
        // Samples are statistics: when another thread is feeding one, this
        // one is skipped rather than queued behind it.
        let Some(mut core) = self.core.try_lock() else {
            return;
        };
        if core.on_sample(sample, weight, now) {
            self.publish(&core);
        }
        self.publish_sampling(&core);
    }

    /// Publishes the core's sampling (under the core's lock).
    fn publish_sampling(&self, core: &Core) {
        let Sampling {
            every,
            peak,
            all_from,
        } = core.sampling();
        let all_from = all_from.map_or(u64::MAX, |t| nanos_since(t, self.epoch));
        if self.every.load(Ordering::Relaxed) != every {
            self.every.store(every, Ordering::Relaxed);
        }
        if self.peak.load(Ordering::Relaxed) != peak {
            self.peak.store(peak, Ordering::Relaxed);
        }
        if self.all_from_ns.load(Ordering::Relaxed) != all_from {
            self.all_from_ns.store(all_from, Ordering::Relaxed);
        }
    }

    /// Publishes the core's limit and baseline (under the core's lock, so
    /// that two publishers cannot interleave).
    fn publish(&self, core: &Core) {
        let (limit, min_rtt) = (core.limit(), core.min_rtt());
        let before = self.limit.load(Ordering::Relaxed);
        if before != limit {
            self.limit.store(limit, Ordering::Relaxed);
            self.metrics.limit.set(limit as f64);
            if limit > before && self.waiting.load(Ordering::Relaxed) > 0 {
                self.room.notify_waiters();
            }
        }
        let ns = min_rtt.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        if self.min_rtt_ns.load(Ordering::Relaxed) != ns {
            self.min_rtt_ns.store(ns, Ordering::Relaxed);
            let secs = Duration::from_nanos(ns).as_secs_f64();
            self.metrics.min_rtt.set(secs);
        }
    }

    /// Gives a place back without a sample (a call that teaches nothing:
    /// cancelled, or failed in a way that says nothing about overload).
    #[inline]
    pub(crate) fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::Release);
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.room.notify_one();
        }
    }

    /// Gives a place back after a call that ended in a response
    /// (`dropped: false`) or a sign of overload (`true`) after `rtt`, at
    /// `now`.
    #[inline]
    pub(crate) fn leave_after(&self, dropped: bool, rtt: Duration, now: Instant) {
        if self.learns() {
            let in_flight = self.in_flight.load(Ordering::Relaxed);
            // A drop is always reported.
            let weight = if dropped {
                Some(1)
            } else {
                self.weight(in_flight, now)
            };
            if let Some(weight) = weight {
                let sample = Sample {
                    rtt,
                    in_flight,
                    dropped,
                };
                self.record(sample, weight, now);
            }
        }
        self.leave();
    }

    /// Gives a place back after a call that ended as `end` says (see
    /// [`teaches`]).
    #[inline(always)]
    pub(crate) fn leave_for(&self, end: &AttemptEnd) {
        match teaches(end.end) {
            Some(dropped) => self.leave_after(dropped, end.elapsed, end.at),
            None => self.leave(),
        }
    }

    /// A view of this limiter's state.
    pub(crate) fn handle(self: &Arc<Self>) -> LimitHandle {
        LimitHandle {
            limiter: self.clone(),
        }
    }
}

/// What a call's end teaches a limiter: a success is a latency sample
/// (`Some(false)`), an overloaded answer or a timeout a drop (`Some(true)`);
/// any other failure, a cancellation or a superseded attempt says nothing
/// about overload (`None`).
#[inline(always)]
pub(crate) fn teaches(end: End) -> Option<bool> {
    match end {
        End::Response(o) if o.is_overloaded() => Some(true),
        End::Response(o) if o.is_success() => Some(false),
        End::TimedOut => Some(true),
        _ => None,
    }
}

/// A queue place, given back when the wait ends however it ends.
struct Place<'a>(&'a Limiter);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A call's place under the limit, given back when dropped; `B` is how the
/// limiter is held (an `Arc` in the layer, a reference in a channel slot).
pub(crate) struct Permit<B: Deref<Target = Limiter>> {
    limiter: Option<B>,
}

impl<B: Deref<Target = Limiter>> Permit<B> {
    /// Reports a call that ended in a response (`dropped: false`) or a
    /// sign of overload (`true`), and gives the place back. A call that
    /// teaches nothing (another failure) just drops its permit.
    pub(crate) fn finish(mut self, dropped: bool, rtt: Duration, now: Instant) {
        if let Some(limiter) = self.limiter.take() {
            limiter.leave_after(dropped, rtt, now);
        }
    }
}

impl<B: Deref<Target = Limiter>> Drop for Permit<B> {
    fn drop(&mut self) {
        if let Some(limiter) = self.limiter.take() {
            limiter.leave();
        }
    }
}

/// A view of a limiter's state: limit, baseline, calls in flight, counts.
/// Cheap to clone.
#[derive(Clone)]
pub struct LimitHandle {
    pub(crate) limiter: Arc<Limiter>,
}

impl LimitHandle {
    /// The limit in force.
    pub fn limit(&self) -> usize {
        self.limiter.limit.load(Ordering::Relaxed)
    }

    /// The gradient algorithm's baseline RTT, once its first probe ended
    /// (`None` for the other algorithms).
    pub fn min_rtt(&self) -> Option<Duration> {
        match self.limiter.min_rtt_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.limiter.in_flight.load(Ordering::Relaxed)
    }

    /// Calls refused so far (at once, with the queue full, or after
    /// waiting too long).
    pub fn rejected(&self) -> u64 {
        self.limiter.rejected.load(Ordering::Relaxed)
    }

    /// Calls that have waited in the queue so far.
    pub fn queued(&self) -> u64 {
        self.limiter.queued.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for LimitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitHandle")
            .field("limit", &self.limit())
            .field("min_rtt", &self.min_rtt())
            .field("in_flight", &self.in_flight())
            .field("rejected", &self.rejected())
            .finish()
    }
}

#[cfg(test)]
#[path = "limiter_tests.rs"]
mod tests;
