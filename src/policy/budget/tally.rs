//! A caller's own count of its deposits, added to a budget a few at a time.
//!
//! Every call deposits into its channel's budget, and a deposit is one
//! atomic update of a counter that every task of the channel updates: the
//! dearest step of a call that retries nothing. A [`Tally`] belongs to one
//! caller (a channel clone, which one task owns): it deposits the first
//! call of each of the budget's slots at once, counts the next ones in
//! plain memory and adds them in one update every [`BATCH`] calls, when a
//! call falls in a later slot, and when the caller goes away.
//!
//! What a budget does not see yet is therefore at most `BATCH - 1` calls
//! per caller, and only for callers making more than one call in a slot: of
//! the calls one caller made within a window (20 slots) the budget misses
//! at most one in 20, and none of a caller that makes at most one call per
//! slot. Deposits always land in the slot of the calls they count, so they
//! expire when those calls leave the window.

use std::time::{Duration, Instant};

use super::{Budget, SLOTS};

/// Calls counted in a tally before they are added to the budget.
pub(crate) const BATCH: u32 = 8;

/// One caller's deposits into one budget not yet added to it (see the
/// [module docs](self)).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// The end of the slot being counted; `None` before the first call.
    until: Option<Instant>,
    /// The slot being counted.
    tick: u64,
    /// Calls of that slot counted here and not yet in the budget.
    count: u32,
}

impl Tally {
    /// Counts a call starting at `now` in `budget`.
    #[inline]
    pub(crate) fn deposit(&mut self, budget: &Budget, now: Instant) {
        match self.until {
            Some(until) if now < until => {
                if self.count + 1 < BATCH {
                    self.count += 1;
                } else {
                    budget.add(self.tick, self.count + 1);
                    self.count = 0;
                }
            }
            _ => self.next_slot(budget, now),
        }
    }

    /// A call in a later slot than the one counted (or the first call):
    /// the old slot's calls go in (if that slot is still in the window),
    /// this one at once.
    #[cold]
    fn next_slot(&mut self, budget: &Budget, now: Instant) {
        let tick = budget.tick(now);
        self.flush_at(budget, tick);
        budget.add(tick, 1);
        let slot = budget.slot.ns;
        // Saturates: a tally whose slot end cannot be represented counts
        // every call at once.
        let end = tick
            .checked_add(1)
            .and_then(|t| t.checked_mul(slot))
            .and_then(|ns| budget.epoch.checked_add(Duration::from_nanos(ns)));
        self.until = end;
        self.tick = tick;
    }

    /// Adds the calls counted and not yet in `budget`, when their slot is
    /// still in the window at `now`.
    pub(crate) fn flush(&mut self, budget: &Budget, now: Instant) {
        if self.count > 0 {
            self.flush_at(budget, budget.tick(now));
        }
    }

    /// [`flush`](Self::flush) at the budget's slot `tick`: calls of a slot
    /// that has left the window are dropped (they would no longer count,
    /// and that slot's place now holds a later one).
    fn flush_at(&mut self, budget: &Budget, tick: u64) {
        if self.count > 0 && tick.saturating_sub(self.tick) < SLOTS {
            budget.add(self.tick, self.count);
        }
        self.count = 0;
    }
}

/// A caller's tallies for the budgets a call deposits into: its retry
/// budget's and, when they do not share deposits, its hedge budget's.
#[derive(Debug, Default)]
pub(crate) struct Tallies {
    /// Deposits into the retry budget.
    pub(crate) retry: Tally,
    /// Deposits into the hedge budget.
    pub(crate) hedge: Tally,
}

impl Tallies {
    /// Adds every call counted and not yet in the budgets (reading the
    /// clock only if there is any).
    pub(crate) fn flush(&mut self, retry: &Budget, hedge: &Budget) {
        if self.retry.count > 0 || self.hedge.count > 0 {
            let now = crate::clock::now();
            self.retry.flush(retry, now);
            self.hedge.flush(hedge, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::budget::BudgetSettings;

    /// The most calls a budget can miss from one caller at any time.
    const fn most_missed() -> u64 {
        BATCH as u64 - 1
    }

    /// A budget of ratio 1, no floor, 20 slots of 100 ms.
    fn budget(t0: Instant) -> Budget {
        let settings = BudgetSettings::new(1.0, 0, Duration::from_secs(2)).unwrap();
        Budget::new(&settings, t0)
    }

    #[test]
    fn first_call_of_a_slot_counts_at_once() {
        let t0 = Instant::now();
        let b = budget(t0);
        let mut tally = Tally::default();
        tally.deposit(&b, t0);
        assert_eq!(b.balance(t0), 1.0);
        // One call per slot: each is seen at once.
        for i in 1..10u64 {
            let now = t0 + Duration::from_millis(100 * i + 1);
            tally.deposit(&b, now);
            assert_eq!(b.balance(now), (i + 1) as f64);
        }
    }

    #[test]
    fn a_busy_slot_is_added_every_batch_and_by_the_next_slot() {
        let t0 = Instant::now();
        let b = budget(t0);
        let mut tally = Tally::default();
        let calls = 3 * BATCH + 2;
        for i in 0..calls {
            let now = t0 + Duration::from_micros(u64::from(i));
            tally.deposit(&b, now);
            let seen = b.balance(now) as u64;
            assert!(seen <= u64::from(i) + 1, "call {i}: {seen} seen");
            assert!(
                u64::from(i) + 1 - seen <= most_missed(),
                "call {i}: only {seen} seen"
            );
        }
        // A call in the next slot adds the rest.
        let later = t0 + Duration::from_millis(150);
        tally.deposit(&b, later);
        assert_eq!(b.balance(later), f64::from(calls + 1));
    }

    #[test]
    fn flushed_calls_land_in_their_own_slot_and_expire_with_it() {
        let t0 = Instant::now();
        let b = budget(t0);
        let mut tally = Tally::default();
        for _ in 0..5 {
            tally.deposit(&b, t0);
        }
        tally.flush(&b, t0 + Duration::from_millis(50));
        assert_eq!(b.balance(t0), 5.0);
        // Still in the window at 1.95 s; gone once its slot leaves it.
        assert_eq!(b.balance(t0 + Duration::from_millis(1950)), 5.0);
        assert_eq!(b.balance(t0 + Duration::from_millis(2050)), 0.0);
        // Flushing again adds nothing.
        tally.flush(&b, t0 + Duration::from_millis(50));
        assert_eq!(b.balance(t0), 5.0);
    }

    #[test]
    fn calls_of_a_slot_that_left_the_window_are_dropped() {
        let t0 = Instant::now();
        let b = budget(t0);
        let mut tally = Tally::default();
        for _ in 0..5 {
            tally.deposit(&b, t0);
        }
        // Another caller's deposit at 2.01 s takes the first slot's place.
        let late = t0 + Duration::from_millis(2010);
        b.deposit(late);
        // The tally's 4 held calls (of a slot 2 s old) are dropped, not
        // added over the newer slot's count.
        tally.deposit(&b, late);
        assert_eq!(b.balance(late), 2.0);
        // And at the end, the same: nothing held from a gone slot is added.
        for _ in 0..3 {
            tally.deposit(&b, late);
        }
        tally.flush(&b, t0 + Duration::from_millis(4100));
        assert_eq!(b.balance(t0 + Duration::from_millis(4100)), 0.0);
    }

    #[test]
    fn tallied_deposits_equal_direct_ones_once_flushed() {
        let t0 = Instant::now();
        let (direct, tallied) = (budget(t0), budget(t0));
        let mut tally = Tally::default();
        let mut rng = crate::rng::Rng::seeded(5);
        let mut now = t0;
        for _ in 0..2_000 {
            now += Duration::from_micros(rng.below(40_000) as u64);
            direct.deposit(now);
            tally.deposit(&tallied, now);
        }
        tally.flush(&tallied, now);
        assert_eq!(direct.balance(now), tallied.balance(now));
    }
}
