//! The outcome window behind the failure-rate and slow-call triggers.

use std::time::Instant;

use super::settings::Window;

/// Calls, failures and slow calls in the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Totals {
    pub calls: u32,
    pub failures: u32,
    pub slow: u32,
}

const FAILED: u8 = 1;
const SLOW: u8 = 2;
/// Slices of a time window.
const SLICES: u64 = 10;

/// The last `n` calls or the calls of the last duration.
#[derive(Debug, Clone)]
pub(super) enum OutcomeWindow {
    Count {
        ring: Vec<u8>,
        size: usize,
        next: usize,
        totals: Totals,
    },
    Time {
        /// Per slice: its tick and its totals.
        slices: Vec<(u64, Totals)>,
        slice_ns: u64,
        epoch: Option<Instant>,
    },
}

impl OutcomeWindow {
    pub fn new(window: Window) -> Self {
        match window {
            Window::Count(n) => OutcomeWindow::Count {
                ring: Vec::with_capacity(n as usize),
                size: n as usize,
                next: 0,
                totals: Totals::default(),
            },
            Window::Time(d) => OutcomeWindow::Time {
                slices: vec![(u64::MAX, Totals::default()); SLICES as usize],
                slice_ns: (d.as_nanos() as u64 / SLICES).max(1),
                epoch: None,
            },
        }
    }

    /// Whether this window has the shape `window` asks for.
    pub fn matches(&self, window: Window) -> bool {
        match (self, window) {
            (OutcomeWindow::Count { size, .. }, Window::Count(n)) => *size == n as usize,
            (OutcomeWindow::Time { slice_ns, .. }, Window::Time(d)) => {
                *slice_ns == (d.as_nanos() as u64 / SLICES).max(1)
            }
            _ => false,
        }
    }

    /// True when one more call that neither failed nor was slow would
    /// leave the window as it is: a count window that is full and holds
    /// only such calls (its ring then reads the same from any position).
    /// A time window counts each call in its slice, so never.
    pub fn full_of_successes(&self) -> bool {
        match self {
            OutcomeWindow::Count {
                ring, size, totals, ..
            } => ring.len() == *size && totals.failures == 0 && totals.slow == 0,
            OutcomeWindow::Time { .. } => false,
        }
    }

    pub fn clear(&mut self) {
        match self {
            OutcomeWindow::Count {
                ring, next, totals, ..
            } => {
                ring.clear();
                *next = 0;
                *totals = Totals::default();
            }
            OutcomeWindow::Time { slices, epoch, .. } => {
                slices.fill((u64::MAX, Totals::default()));
                *epoch = None;
            }
        }
    }

    pub fn push(&mut self, failed: bool, slow: bool, now: Instant) {
        let bits = if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        match self {
            OutcomeWindow::Count {
                ring,
                size,
                next,
                totals,
            } => {
                if ring.len() < *size {
                    ring.push(bits);
                } else {
                    let old = std::mem::replace(&mut ring[*next], bits);
                    totals.calls -= 1;
                    totals.failures -= u32::from(old & FAILED != 0);
                    totals.slow -= u32::from(old & SLOW != 0);
                    *next = (*next + 1) % ring.len();
                }
                totals.calls += 1;
                totals.failures += u32::from(failed);
                totals.slow += u32::from(slow);
            }
            OutcomeWindow::Time {
                slices,
                slice_ns,
                epoch,
            } => {
                let start = *epoch.get_or_insert(now);
                let tick = tick_of(start, now, *slice_ns);
                let slot = &mut slices[(tick % SLICES) as usize];
                if slot.0 != tick {
                    *slot = (tick, Totals::default());
                }
                slot.1.calls += 1;
                slot.1.failures += u32::from(failed);
                slot.1.slow += u32::from(slow);
            }
        }
    }

    pub fn totals(&self, now: Instant) -> Totals {
        match self {
            OutcomeWindow::Count { totals, .. } => *totals,
            OutcomeWindow::Time {
                slices,
                slice_ns,
                epoch,
            } => {
                let Some(start) = *epoch else {
                    return Totals::default();
                };
                let tick = tick_of(start, now, *slice_ns);
                let oldest = tick.saturating_sub(SLICES - 1);
                slices
                    .iter()
                    .filter(|(t, _)| *t != u64::MAX && *t >= oldest && *t <= tick)
                    .fold(Totals::default(), |a, (_, s)| Totals {
                        calls: a.calls + s.calls,
                        failures: a.failures + s.failures,
                        slow: a.slow + s.slow,
                    })
            }
        }
    }
}

fn tick_of(epoch: Instant, now: Instant, slice_ns: u64) -> u64 {
    crate::clock::nanos_since(now, epoch) / slice_ns
}
