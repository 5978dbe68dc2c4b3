//! Budgets: how many retries (or hedges) recent traffic can pay for.
//!
//! Retrying every failure doubles or triples the load on a backend that is
//! already failing. A [`Budget`] caps the extra attempts: every call
//! deposits `ratio` of a token, every retry or hedge withdraws one whole
//! token, and a floor of `floor_per_sec × window` tokens is always available
//! so that a quiet client can still retry. Deposits and withdrawals older
//! than the window are forgotten. Over any window the extra attempts are
//! therefore at most `ratio × calls + floor_per_sec × window_seconds`.
//!
//! Defaults: retries 20% + 10/s over 10 s ([`BudgetSettings::retry_default`],
//! as Finagle); hedges 10% + 0/s over 10 s
//! ([`BudgetSettings::hedge_default`]).
//!
//! The window is kept as 20 slots of packed atomic counters: recording is
//! one atomic update, with no lock. A withdrawal checks the balance and then
//! takes a token, so tasks racing on the last token can overdraw by at most
//! their number. A channel clone counts its own calls in a tally and adds
//! them a few at a time (the first call of each slot at once): a budget
//! can miss up to 7 of one clone's most recent calls, and only from a clone
//! making more than one call per slot (`tally` has the bounds).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use towline::policy::budget::{Budget, BudgetSettings};
//!
//! let now = Instant::now();
//! let settings = BudgetSettings::new(0.5, 0, Duration::from_secs(10)).unwrap();
//! let budget = Budget::new(&settings, now);
//! assert!(!budget.try_withdraw(now)); // nothing deposited, no floor
//! budget.deposit(now);
//! budget.deposit(now);
//! assert!(budget.try_withdraw(now)); // 2 × 0.5 = one token
//! assert!(!budget.try_withdraw(now));
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::BuildError;

mod tally;

pub(crate) use tally::Tallies;

/// How many slots the window is cut into.
const SLOTS: u64 = 20;
const COUNT_BITS: u32 = 32;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// Budget settings: a share of recent calls, a floor per second, a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetSettings {
    ratio: f64,
    floor_per_sec: u32,
    window: Duration,
}

impl BudgetSettings {
    /// `ratio` of recent calls (0 to 1) plus `floor_per_sec` per second,
    /// counted over `window` (100 ms to 1 hour).
    pub fn new(ratio: f64, floor_per_sec: u32, window: Duration) -> Result<Self, BuildError> {
        let s = BudgetSettings {
            ratio,
            floor_per_sec,
            window,
        };
        s.validate()?;
        Ok(s)
    }

    /// The retry default: 20% of calls + 10 per second over 10 s.
    pub fn retry_default() -> Self {
        BudgetSettings {
            ratio: 0.2,
            floor_per_sec: 10,
            window: Duration::from_secs(10),
        }
    }

    /// The hedge default: 10% extra load, no floor, over 10 s.
    pub fn hedge_default() -> Self {
        BudgetSettings {
            ratio: 0.1,
            floor_per_sec: 0,
            window: Duration::from_secs(10),
        }
    }

    /// Checks the settings (as [`BudgetSettings::new`] does).
    pub fn validate(&self) -> Result<(), BuildError> {
        if !(0.0..=1.0).contains(&self.ratio) {
            return Err(BuildError::new(
                "budget.ratio",
                format!(
                    "must be between 0 and 1 (a share of calls), got {}",
                    self.ratio
                ),
            ));
        }
        if self.window < Duration::from_millis(100) || self.window > Duration::from_secs(3600) {
            return Err(BuildError::new(
                "budget.window",
                format!("must be between 100 ms and 1 hour, got {:?}", self.window),
            ));
        }
        Ok(())
    }

    /// The share of calls that may be retried.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Extra attempts per second allowed whatever the traffic.
    pub fn floor_per_sec(&self) -> u32 {
        self.floor_per_sec
    }

    /// How far back deposits and withdrawals count.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The most extra attempts `calls` calls within one window may make.
    pub fn allowance(&self, calls: u64) -> f64 {
        self.ratio * calls as f64 + f64::from(self.floor_per_sec) * self.window.as_secs_f64()
    }
}

/// A shared budget: deposits per call, withdrawals per retry or hedge.
#[derive(Debug)]
pub struct Budget {
    /// Shared with another budget of the same window and epoch that counts
    /// the same calls (a channel's retry and hedge budgets): one deposit
    /// per call serves both.
    deposits: Arc<[AtomicU64; SLOTS as usize]>,
    withdrawals: [AtomicU64; SLOTS as usize],
    slot: SlotLength,
    epoch: Instant,
    ratio_bits: AtomicU64,
    floor_per_sec: AtomicU32,
    window_secs: f64,
}

impl Budget {
    /// An empty budget; `epoch` is any instant not after the first `now`.
    pub fn new(settings: &BudgetSettings, epoch: Instant) -> Self {
        Budget {
            deposits: Default::default(),
            withdrawals: Default::default(),
            slot: SlotLength::new(settings.window.as_nanos() as u64 / SLOTS),
            epoch,
            ratio_bits: AtomicU64::new(settings.ratio.to_bits()),
            floor_per_sec: AtomicU32::new(settings.floor_per_sec),
            window_secs: settings.window.as_secs_f64(),
        }
    }

    /// A budget that counts its deposits with `other` (same calls, same
    /// window): `None` when their windows or epochs differ.
    pub(crate) fn sharing_deposits(settings: &BudgetSettings, other: &Budget) -> Option<Self> {
        let mut budget = Budget::new(settings, other.epoch);
        if budget.slot.ns != other.slot.ns {
            return None;
        }
        budget.deposits = other.deposits.clone();
        Some(budget)
    }

    /// True when one deposit in `self` counts in `other` too.
    #[inline]
    pub(crate) fn shares_deposits(&self, other: &Budget) -> bool {
        Arc::ptr_eq(&self.deposits, &other.deposits)
    }

    /// Applies new ratio and floor; the window stays what it was when the
    /// budget was made, and so do the recorded deposits and withdrawals.
    pub fn retune(&self, settings: &BudgetSettings) {
        self.ratio_bits
            .store(settings.ratio.to_bits(), Ordering::Relaxed);
        self.floor_per_sec
            .store(settings.floor_per_sec, Ordering::Relaxed);
    }

    fn tick(&self, now: Instant) -> u64 {
        self.slot.count(crate::clock::nanos_since(now, self.epoch))
    }

    /// Records one call.
    pub fn deposit(&self, now: Instant) {
        add(&self.deposits, self.tick(now), 1);
    }

    /// The time origin of this budget's window.
    pub(crate) fn epoch(&self) -> Instant {
        self.epoch
    }

    /// [`deposit`](Self::deposit) at `since_epoch` nanoseconds after the
    /// epoch (to share one clock subtraction between budgets).
    pub(crate) fn deposit_at(&self, since_epoch: u64) {
        add(&self.deposits, self.slot.count(since_epoch), 1);
    }

    /// Records `calls` calls in the slot of `tick` (a tally's).
    fn add(&self, tick: u64, calls: u32) {
        add(&self.deposits, tick, calls);
    }

    /// Takes one token for a retry or hedge; false (and nothing taken) when
    /// the balance is below one token.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let tick = self.tick(now);
        if self.balance_at(tick) < 1.0 {
            return false;
        }
        add(&self.withdrawals, tick, 1);
        true
    }

    /// Tokens available at `now` (may be fractional).
    pub fn balance(&self, now: Instant) -> f64 {
        self.balance_at(self.tick(now))
    }

    fn balance_at(&self, tick: u64) -> f64 {
        let ratio = f64::from_bits(self.ratio_bits.load(Ordering::Relaxed));
        let floor = f64::from(self.floor_per_sec.load(Ordering::Relaxed)) * self.window_secs;
        ratio * sum(&self.deposits, tick) as f64 + floor - sum(&self.withdrawals, tick) as f64
    }
}

/// The length of a budget's slot, and a division by it that costs a
/// multiplication: every call divides its time by the slot length, and a
/// 64-bit division is the slowest instruction on its path.
#[derive(Debug, Clone, Copy)]
struct SlotLength {
    /// Nanoseconds, at least 1.
    ns: u64,
    /// ⌊(2⁶⁴ − 1) / ns⌋: the quotient estimated with it is at most two
    /// below the true one.
    inverse: u64,
}

impl SlotLength {
    fn new(ns: u64) -> Self {
        let ns = ns.max(1);
        SlotLength {
            ns,
            inverse: u64::MAX / ns,
        }
    }

    /// ⌊`nanos` / the length⌋, exactly.
    #[inline]
    fn count(self, nanos: u64) -> u64 {
        let mut q = ((u128::from(nanos) * u128::from(self.inverse)) >> 64) as u64;
        // q ≤ the quotient < q + 3: at most two steps up.
        while nanos - q * self.ns >= self.ns {
            q += 1;
        }
        q
    }
}

/// Adds `n` to the slot of `tick` (saturating), restarting it if it held
/// another tick. Callers add to a tick still inside the window (a tally
/// drops what it counted for a slot that has left it), so the tick a slot
/// holds is never newer.
fn add(slots: &[AtomicU64; SLOTS as usize], tick: u64, n: u32) {
    let stamp = tick & COUNT_MASK;
    let cell = &slots[(tick % SLOTS) as usize];
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(if v >> COUNT_BITS == stamp {
            (stamp << COUNT_BITS)
                | (v & COUNT_MASK)
                    .saturating_add(u64::from(n))
                    .min(COUNT_MASK)
        } else {
            (stamp << COUNT_BITS) | u64::from(n)
        })
    });
}

/// The total of the slots still inside the window ending at `tick`.
fn sum(slots: &[AtomicU64; SLOTS as usize], tick: u64) -> u64 {
    (0..SLOTS.min(tick + 1))
        .map(|back| {
            let t = tick - back;
            let v = slots[(t % SLOTS) as usize].load(Ordering::Relaxed);
            if v >> COUNT_BITS == t & COUNT_MASK {
                v & COUNT_MASK
            } else {
                0
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn slot_counts_divide_exactly() {
        let mut rng = crate::rng::Rng::seeded(17);
        let lengths = [
            1,
            2,
            3,
            7,
            1_000,
            500_000_000,
            999_999_937,
            u64::MAX / 3,
            u64::MAX,
        ];
        for ns in lengths {
            let slot = SlotLength::new(ns);
            let check = |n: u64| assert_eq!(slot.count(n), n / ns, "{n} / {ns}");
            for n in [
                0,
                1,
                ns - 1,
                ns,
                ns.saturating_add(1),
                u64::MAX - 1,
                u64::MAX,
            ] {
                check(n);
            }
            for _ in 0..10_000 {
                let n = rng.next_u64();
                check(n);
                // Multiples and their neighbours, where an estimate is off.
                let k = n / ns;
                check(k * ns);
                check((k * ns).saturating_sub(1));
            }
        }
    }

    #[test]
    fn floor_allows_retries_without_traffic_and_is_bounded() {
        let now = Instant::now();
        let b = Budget::new(&BudgetSettings::retry_default(), now);
        let granted = (0..1_000).filter(|_| b.try_withdraw(now)).count();
        assert_eq!(granted, 100); // 10/s × 10 s
    }

    #[test]
    fn deposits_earn_their_share() {
        let now = Instant::now();
        let s = BudgetSettings::new(0.2, 0, 10 * S).unwrap();
        let b = Budget::new(&s, now);
        for _ in 0..1_000 {
            b.deposit(now);
        }
        let granted = (0..1_000).filter(|_| b.try_withdraw(now)).count();
        assert_eq!(granted, 200);
    }

    #[test]
    fn old_activity_leaves_the_window() {
        let t0 = Instant::now();
        let s = BudgetSettings::new(1.0, 0, 10 * S).unwrap();
        let b = Budget::new(&s, t0);
        for _ in 0..10 {
            b.deposit(t0);
        }
        assert!((b.balance(t0 + 9 * S) - 10.0).abs() < 1e-9);
        assert_eq!(b.balance(t0 + 10 * S), 0.0);
        // Withdrawals also expire, so the budget refills.
        let t1 = t0 + 20 * S;
        b.deposit(t1);
        assert!(b.try_withdraw(t1));
        assert!(!b.try_withdraw(t1));
        b.deposit(t1 + 11 * S);
        assert!(b.try_withdraw(t1 + 11 * S));
    }

    #[test]
    fn retune_keeps_the_history() {
        let now = Instant::now();
        let b = Budget::new(&BudgetSettings::new(0.1, 0, 10 * S).unwrap(), now);
        for _ in 0..100 {
            b.deposit(now);
        }
        assert!((b.balance(now) - 10.0).abs() < 1e-9);
        b.retune(&BudgetSettings::new(0.5, 0, 10 * S).unwrap());
        assert!((b.balance(now) - 50.0).abs() < 1e-9);
    }

    #[test]
    fn invalid_settings_are_refused() {
        let e = BudgetSettings::new(1.5, 0, 10 * S).unwrap_err();
        assert_eq!(e.setting(), "budget.ratio");
        assert!(e.reason().contains("between 0 and 1"));
        assert_eq!(
            BudgetSettings::new(f64::NAN, 0, 10 * S)
                .unwrap_err()
                .setting(),
            "budget.ratio"
        );
        assert_eq!(
            BudgetSettings::new(-0.1, 0, 10 * S).unwrap_err().setting(),
            "budget.ratio"
        );
        let e = BudgetSettings::new(0.2, 10, Duration::from_millis(10)).unwrap_err();
        assert_eq!(e.setting(), "budget.window");
    }
}
