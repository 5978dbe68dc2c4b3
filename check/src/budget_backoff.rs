//! Retry/hedge budget and backoff bounds.
//!
//! [`run_budget_backoff`] drives one [`Budget`] (the same type serves retries
//! and hedges; the settings differ) next to a reference ledger of every
//! deposit and withdrawal by window slot, and one [`Backoff`], and checks:
//!
//! - the budget's balance equals `ratio × deposits + floor_per_sec × window
//!   − withdrawals` over the slots still inside the window;
//! - a withdrawal is granted exactly when that balance is at least one
//!   token, so the withdrawals inside any window never exceed
//!   [`BudgetSettings::allowance`] of the deposits inside it;
//! - every backoff delay lies in its [`Backoff::bounds`], and those bounds
//!   lie within `[0, cap]` and are the range its [`Jitter`] mode documents
//!   (full: `[0, ceiling]`, equal: `[ceiling / 2, ceiling]`, none: the
//!   ceiling, decorrelated: `[base, max(previous, base) × multiplier]` within
//!   `[base, cap]`); the ceiling is `min(cap, base × multiplier^n)`
//!   and never shrinks from one retry to the next;
//! - settings are validated: out-of-range values give `Err`, never a panic.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;

use super::{Violation, ensure};
use towline::policy::backoff::{Backoff, Jitter};
use towline::policy::budget::{Budget, BudgetSettings};
use towline::rng::Rng;

/// Slots a budget window is cut into (as documented by [`Budget`]).
const BUDGET_SLOTS: u64 = 20;

/// Budget settings in fuzzable form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub struct BudgetConfig {
    /// Ratio in percent, taken modulo 105 (101 to 104 are invalid).
    pub ratio_percent: u8,
    /// Extra attempts per second whatever the traffic.
    pub floor_per_sec: u16,
    /// Window in milliseconds, taken modulo one hour + 100 ms (valid from
    /// 100 ms).
    pub window_ms: u32,
}

impl BudgetConfig {
    fn settings(self) -> Result<BudgetSettings, towline::BuildError> {
        BudgetSettings::new(
            f64::from(self.ratio_percent % 105) / 100.0,
            self.floor_per_sec.into(),
            Duration::from_millis((self.window_ms % 3_600_100).into()),
        )
    }
}

/// Backoff settings in fuzzable form.
#[derive(Debug, Clone, Copy, PartialEq, Arbitrary)]
pub struct BackoffConfig {
    /// First ceiling in microseconds (0 is invalid).
    pub base_us: u32,
    /// Growth per retry.
    pub multiplier: Multiplier,
    /// How far the largest delay lies above the base, in microseconds.
    pub cap_above_base_us: u32,
    /// Jitter mode.
    pub jitter: JitterKind,
}

/// A backoff multiplier.
#[derive(Debug, Clone, Copy, PartialEq, Arbitrary)]
pub enum Multiplier {
    /// `1 + thousandths / 1000`: always valid.
    Growth(u16),
    /// Any float (below 1, NaN or infinite are invalid).
    Raw(f64),
}

impl Multiplier {
    fn value(self) -> f64 {
        match self {
            Multiplier::Growth(t) => 1.0 + f64::from(t) / 1000.0,
            Multiplier::Raw(m) => m,
        }
    }
}

/// [`Jitter`] in fuzzable form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum JitterKind {
    /// [`Jitter::None`].
    None,
    /// [`Jitter::Full`].
    Full,
    /// [`Jitter::Equal`].
    Equal,
    /// [`Jitter::Decorrelated`].
    Decorrelated,
}

impl JitterKind {
    fn jitter(self) -> Jitter {
        match self {
            JitterKind::None => Jitter::None,
            JitterKind::Full => Jitter::Full,
            JitterKind::Equal => Jitter::Equal,
            JitterKind::Decorrelated => Jitter::Decorrelated,
        }
    }
}

/// One step on the budget or the backoff.
#[derive(Debug, Clone, PartialEq, Arbitrary)]
pub enum BudgetBackoffOp {
    /// Records `n` calls.
    Deposit {
        /// How many.
        n: u8,
    },
    /// Asks for `n` retries or hedges, one at a time.
    Withdraw {
        /// How many.
        n: u8,
    },
    /// Moves the clock forward.
    Advance {
        /// Milliseconds.
        ms: u32,
    },
    /// New ratio and floor, keeping the history (invalid ones are refused).
    Retune {
        /// Ratio in percent.
        ratio_percent: u8,
        /// Floor per second.
        floor_per_sec: u16,
    },
    /// One delay for retry `retry` after a previous delay.
    Delay {
        /// Retry number (0 for the first).
        retry: u32,
        /// The previous delay in microseconds.
        previous_us: u64,
    },
    /// The delays of retries `0..n` in order, each after the one before.
    Delays {
        /// How many retries.
        n: u8,
    },
}

/// A fuzz input: budget and backoff settings and the steps to run.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetBackoffCase {
    /// The budget's settings.
    pub budget: BudgetConfig,
    /// The backoff's settings.
    pub backoff: BackoffConfig,
    /// The steps, in order.
    pub ops: Vec<BudgetBackoffOp>,
}

super::fuzz_case!(BudgetBackoffCase { budget, backoff; ops });

impl BudgetBackoffCase {
    /// Runs [`run_budget_backoff`] on this case.
    pub fn run(&self) -> Result<(), Violation> {
        run_budget_backoff(self.budget, self.backoff, &self.ops)
    }
}

/// Runs `ops` and checks the budget and backoff bounds.
pub fn run_budget_backoff(
    budget: BudgetConfig,
    backoff: BackoffConfig,
    ops: &[BudgetBackoffOp],
) -> Result<(), Violation> {
    let base = Duration::from_micros(backoff.base_us.into());
    let backoff = Backoff::new(
        base,
        backoff.multiplier.value(),
        base + Duration::from_micros(backoff.cap_above_base_us.into()),
    )
    .map(|b| b.with_jitter(backoff.jitter.jitter()))
    .ok();
    // Invalid budget settings are refused by `BudgetSettings::new`: nothing
    // more to check for them (an invalid backoff only skips backoff steps).
    let Ok(settings) = budget.settings() else {
        return Ok(());
    };
    let mut ledger = Ledger::new(settings);
    let mut rng = Rng::seeded(0xb0ff);
    for (step, op) in ops.iter().enumerate() {
        match *op {
            BudgetBackoffOp::Deposit { n } => {
                for _ in 0..n {
                    ledger.deposit();
                }
            }
            BudgetBackoffOp::Withdraw { n } => {
                for _ in 0..n {
                    ledger.withdraw(step)?;
                }
            }
            BudgetBackoffOp::Advance { ms } => {
                ledger.now += Duration::from_millis(ms.into());
            }
            BudgetBackoffOp::Retune {
                ratio_percent,
                floor_per_sec,
            } => {
                let config = BudgetConfig {
                    ratio_percent,
                    floor_per_sec,
                    window_ms: budget.window_ms,
                };
                if let Ok(s) = config.settings() {
                    ledger.budget.retune(&s);
                    ledger.settings = s;
                }
            }
            BudgetBackoffOp::Delay { retry, previous_us } => {
                if let Some(b) = &backoff {
                    check_delay(b, retry, Duration::from_micros(previous_us), &mut rng, step)?;
                }
            }
            BudgetBackoffOp::Delays { n } => {
                if let Some(b) = &backoff {
                    let mut previous = Duration::ZERO;
                    for retry in 0..u32::from(n) {
                        previous = check_delay(b, retry, previous, &mut rng, step)?;
                        ensure!(
                            b.ceiling(retry + 1) >= b.ceiling(retry),
                            step,
                            "backoff ceiling shrank from retry {retry} ({:?}) to the next ({:?})",
                            b.ceiling(retry),
                            b.ceiling(retry + 1)
                        );
                    }
                }
            }
        }
        ledger.check_balance(step)?;
    }
    Ok(())
}

/// The budget under test and every deposit and withdrawal by slot.
struct Ledger {
    budget: Budget,
    settings: BudgetSettings,
    epoch: Instant,
    now: Instant,
    slot_ns: u64,
    deposits: BTreeMap<u64, u64>,
    withdrawals: BTreeMap<u64, u64>,
}

impl Ledger {
    fn new(settings: BudgetSettings) -> Self {
        let epoch = Instant::now();
        Ledger {
            budget: Budget::new(&settings, epoch),
            settings,
            epoch,
            now: epoch,
            slot_ns: (settings.window().as_nanos() as u64 / BUDGET_SLOTS).max(1),
            deposits: BTreeMap::new(),
            withdrawals: BTreeMap::new(),
        }
    }

    fn slot(&self) -> u64 {
        self.now.duration_since(self.epoch).as_nanos() as u64 / self.slot_ns
    }

    /// Deposits and withdrawals in the slots still inside the window.
    fn in_window(&self) -> (u64, u64) {
        let slot = self.slot();
        let oldest = slot.saturating_sub(BUDGET_SLOTS - 1);
        let sum = |m: &BTreeMap<u64, u64>| m.range(oldest..=slot).map(|(_, n)| n).sum::<u64>();
        (sum(&self.deposits), sum(&self.withdrawals))
    }

    fn expected_balance(&self) -> f64 {
        let (d, w) = self.in_window();
        let floor = f64::from(self.settings.floor_per_sec()) * self.settings.window().as_secs_f64();
        self.settings.ratio() * d as f64 + floor - w as f64
    }

    fn deposit(&mut self) {
        self.budget.deposit(self.now);
        *self.deposits.entry(self.slot()).or_default() += 1;
    }

    fn withdraw(&mut self, step: usize) -> Result<(), Violation> {
        let expected = self.expected_balance();
        let granted = self.budget.try_withdraw(self.now);
        // Away from the one-token edge the decision is exact; at it, float
        // rounding may go either way.
        ensure!(
            granted == (expected >= 1.0) || (expected - 1.0).abs() < 1e-6,
            step,
            "withdrawal {} with a balance of {expected} tokens",
            if granted { "granted" } else { "refused" }
        );
        if granted {
            *self.withdrawals.entry(self.slot()).or_default() += 1;
            let (d, w) = self.in_window();
            let allowance = self.settings.allowance(d);
            ensure!(
                w as f64 <= allowance + 1e-6,
                step,
                "{w} withdrawals in one window with {d} calls: allowance {allowance}"
            );
        }
        Ok(())
    }

    fn check_balance(&self, step: usize) -> Result<(), Violation> {
        let expected = self.expected_balance();
        let got = self.budget.balance(self.now);
        ensure!(
            (got - expected).abs() <= 1e-6 * expected.abs().max(1.0),
            step,
            "budget balance {got}, expected {expected}"
        );
        Ok(())
    }
}

/// Draws one delay and checks it and its bounds; returns it.
fn check_delay(
    b: &Backoff,
    retry: u32,
    previous: Duration,
    rng: &mut Rng,
    step: usize,
) -> Result<Duration, Violation> {
    let cap = b.cap();
    let ceiling = b.ceiling(retry);
    let exact = b.base().as_secs_f64() * b.multiplier().powi(retry.min(i32::MAX as u32) as i32);
    let expected = if exact.is_finite() {
        exact.min(cap.as_secs_f64())
    } else {
        cap.as_secs_f64()
    };
    ensure!(
        ceiling <= cap && (ceiling.as_secs_f64() - expected).abs() <= 1e-9 * expected.max(1.0),
        step,
        "ceiling of retry {retry} is {ceiling:?}, expected {expected} s (cap {cap:?})"
    );
    let (low, high) = b.bounds(retry, previous);
    ensure!(
        low <= high && high <= cap,
        step,
        "bounds [{low:?}, {high:?}] of retry {retry} outside [0, {cap:?}]"
    );
    // The range each jitter mode documents (to within float rounding).
    let (want_low, want_high) = match b.jitter() {
        Jitter::None => (ceiling, ceiling),
        Jitter::Full => (Duration::ZERO, ceiling),
        Jitter::Equal => (ceiling / 2, ceiling),
        Jitter::Decorrelated => {
            let grown = previous.max(b.base()).as_secs_f64() * b.multiplier();
            let high = grown.clamp(b.base().as_secs_f64(), cap.as_secs_f64());
            (b.base(), Duration::from_secs_f64(high))
        }
    };
    let near = |a: Duration, b: Duration| a.abs_diff(b) <= Duration::from_micros(1);
    ensure!(
        near(low, want_low) && near(high, want_high),
        step,
        "{:?} bounds of retry {retry} after {previous:?} are [{low:?}, {high:?}], \
         documented [{want_low:?}, {want_high:?}]",
        b.jitter()
    );
    let delay = b.delay(retry, previous, rng);
    ensure!(
        low <= delay && delay <= high,
        step,
        "delay {delay:?} of retry {retry} outside [{low:?}, {high:?}]"
    );
    Ok(delay)
}
