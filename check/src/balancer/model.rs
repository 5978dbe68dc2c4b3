//! The reference endpoint set and the per-pick and per-cycle checks.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::eligible::{Eligible, gcd};
use super::{BalancerKind, BalancerOp, MAX_ENDPOINTS, WRR_SKIPPED_TURNS};
use crate::{Violation, ensure};
use towline::balance::{
    AttemptEnd, Balancer, End, Load, LoadSet, P2c, P2cLoad, PickContext, Weighted,
};
use towline::classify::Outcome;
use towline::rng::Rng;

struct Slot {
    id: u64,
    load: Rc<Load>,
    ejected: bool,
}

/// An endpoint with open calls, live or removed.
struct Tracked {
    load: Rc<Load>,
    calls: u32,
}

pub(super) struct Model<'a> {
    proto: &'a dyn Balancer,
    kind: BalancerKind,
    balancer: Box<dyn Balancer>,
    /// Weights the balancer was last rebuilt with; `None` when the set has
    /// changed since (a stale balancer).
    built_for: Option<Vec<u32>>,
    /// Weights of the last rebuild, stale or not (a weighted table's).
    last_built: Vec<u32>,
    slots: Vec<Slot>,
    tracked: BTreeMap<u64, Tracked>,
    /// Endpoint id per open call.
    calls: Vec<u64>,
    next_id: u64,
    epoch: Instant,
    now: Instant,
    rng: Rng,
    pub(super) step: usize,
}

struct Loads<'a>(&'a [Slot]);

impl LoadSet for Loads<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn load(&self, index: usize) -> &Load {
        &self.0[index].load
    }
}

impl<'a> Model<'a> {
    pub(super) fn new(proto: &'a dyn Balancer, kind: BalancerKind) -> Self {
        let epoch = Instant::now();
        Model {
            proto,
            kind,
            balancer: proto.rebuild(&[]),
            built_for: Some(Vec::new()),
            last_built: Vec::new(),
            slots: Vec::new(),
            tracked: BTreeMap::new(),
            calls: Vec::new(),
            next_id: 0,
            epoch,
            now: epoch,
            rng: Rng::seeded(0x5eed),
            step: 0,
        }
    }

    fn weights(&self) -> Vec<u32> {
        self.slots.iter().map(|s| s.load.weight()).collect()
    }

    fn rebuild(&mut self, rebuild: bool) {
        if rebuild {
            let weights = self.weights();
            self.balancer = self.proto.rebuild(&weights);
            self.last_built = weights.clone();
            self.built_for = Some(weights);
        } else {
            self.built_for = None;
        }
    }

    fn new_slot(&mut self, weight: u32) -> Slot {
        self.next_id += 1;
        Slot {
            id: self.next_id,
            load: Rc::new(Load::new(weight, self.epoch)),
            ejected: false,
        }
    }

    /// Forgets a removed endpoint unless calls on it are still open.
    fn retire(&mut self, slot: Slot) {
        if self.tracked.get(&slot.id).is_some_and(|t| t.calls == 0) {
            self.tracked.remove(&slot.id);
        }
    }

    fn index(&self, raw: u8) -> Option<usize> {
        (!self.slots.is_empty()).then(|| usize::from(raw) % self.slots.len())
    }

    fn begin(&mut self, i: usize) {
        let slot = &self.slots[i];
        slot.load.start();
        self.tracked
            .entry(slot.id)
            .or_insert_with(|| Tracked {
                load: slot.load.clone(),
                calls: 0,
            })
            .calls += 1;
        self.calls.push(slot.id);
    }

    fn end(&mut self, call: usize) {
        let id = self.calls.swap_remove(call);
        let live = self.slots.iter().any(|s| s.id == id);
        let t = self.tracked.get_mut(&id).expect("an open call is tracked");
        t.load.end();
        t.calls -= 1;
        if t.calls == 0 && !live {
            self.tracked.remove(&id);
        }
    }

    pub(super) fn apply(&mut self, op: &BalancerOp) -> Result<(), Violation> {
        match *op {
            BalancerOp::Reset { len, ref weights } => {
                let len = usize::from(len) % (MAX_ENDPOINTS + 1);
                let weight = |i: usize| {
                    if weights.is_empty() {
                        1
                    } else {
                        weights[i % weights.len()].value()
                    }
                };
                let old = std::mem::take(&mut self.slots);
                let mut kept = Vec::with_capacity(len);
                for (i, slot) in old.into_iter().enumerate() {
                    if i < len {
                        slot.load.set_weight(weight(i));
                        kept.push(slot);
                    } else {
                        self.retire(slot);
                    }
                }
                for i in kept.len()..len {
                    let slot = self.new_slot(weight(i));
                    kept.push(slot);
                }
                self.slots = kept;
                self.rebuild(true);
            }
            BalancerOp::Insert { weight, rebuild } => {
                if self.slots.len() < MAX_ENDPOINTS {
                    let slot = self.new_slot(weight.value());
                    self.slots.push(slot);
                    self.rebuild(rebuild);
                }
            }
            BalancerOp::Remove { index, rebuild } => {
                if let Some(i) = self.index(index) {
                    let slot = self.slots.remove(i);
                    self.retire(slot);
                    self.rebuild(rebuild);
                }
            }
            BalancerOp::SetWeight {
                index,
                weight,
                rebuild,
            } => {
                if let Some(i) = self.index(index) {
                    self.slots[i].load.set_weight(weight.value());
                    self.rebuild(rebuild);
                }
            }
            BalancerOp::Eject { index } => {
                if let Some(i) = self.index(index) {
                    self.slots[i].ejected = true;
                }
            }
            BalancerOp::Readmit { index } => {
                if let Some(i) = self.index(index) {
                    self.slots[i].ejected = false;
                }
            }
            BalancerOp::Begin { index } => {
                if let Some(i) = self.index(index) {
                    self.begin(i);
                }
            }
            BalancerOp::End { call } => {
                if !self.calls.is_empty() {
                    self.end(usize::from(call) % self.calls.len());
                }
            }
            BalancerOp::EndUnmatched { index } => {
                if let Some(i) = self.index(index) {
                    let slot = &self.slots[i];
                    if self.tracked.get(&slot.id).is_none_or(|t| t.calls == 0) {
                        slot.load.end();
                    }
                }
            }
            BalancerOp::Observe { index, rtt_us } => {
                if let Some(i) = self.index(index) {
                    let rtt = Duration::from_micros(rtt_us.into());
                    let end = AttemptEnd::new(End::Response(Outcome::Success), rtt, self.now);
                    self.balancer.observe(&self.slots[i].load, &end);
                }
            }
            BalancerOp::Advance { ms } => {
                self.now += Duration::from_millis(ms.into());
            }
            BalancerOp::Pick { exclude } => {
                self.pick(exclude)?;
            }
            BalancerOp::PickAndBegin { exclude } => {
                if let Some(i) = self.pick(exclude)? {
                    self.begin(i);
                }
            }
            BalancerOp::Cycle { exclude } => self.cycle(exclude)?,
        }
        Ok(())
    }

    /// One pick with every per-pick check.
    fn pick(&mut self, exclude: u64) -> Result<Option<usize>, Violation> {
        let step = self.step;
        let n = self.slots.len();
        let stray = Cell::new(None);
        let filter = |i: usize| {
            if i >= n {
                stray.set(Some(i));
            }
            eligible(&self.slots, exclude, i)
        };
        // P2C built with unequal weights draws its pair by weight, not as
        // the uniform `sample_pair`: only the checks for any pick apply.
        let w = &self.last_built;
        let by_weight =
            self.kind.p2c().is_some() && w.len() == n && w.windows(2).any(|p| p[0] != p[1]);
        let p2c = self.kind.p2c().filter(|_| !by_weight);
        let pair = p2c.map(|p| p.sample_pair(n, &filter, &mut self.rng.clone()));
        let set = Loads(&self.slots);
        let at = PickContext::new(self.now);
        let got = self.balancer.pick(&at, &set, &filter, &mut self.rng);
        let eligible = eligible_indices(&self.slots, exclude);
        let name = self.balancer.name();

        ensure!(
            stray.get().is_none(),
            step,
            "{name} asked about index {:?} outside a set of {n}",
            stray.get()
        );
        ensure!(
            got.is_some() != eligible.is_empty(),
            step,
            "{name} picked {got:?} with eligible {eligible:?} of {n}"
        );
        let Some(i) = got else { return Ok(None) };
        ensure!(
            eligible.contains(&i),
            step,
            "{name} picked {i}, which is removed, ejected or excluded (eligible {eligible:?} of {n})"
        );
        // Weighted balancers, and P2C drawing by weight, never pick weight 0
        // while a positive weight is eligible.
        if (self.kind.is_weighted() || by_weight)
            && let Some(weights) = &self.built_for
        {
            let positive = eligible.iter().any(|e| weights[e] > 0);
            ensure!(
                weights[i] > 0 || !positive,
                step,
                "{name} picked weight-0 endpoint {i} while a positive weight was eligible \
                 (weights {weights:?}, eligible {eligible:?})"
            );
        }
        if let (Some(p2c), Some(pair)) = (p2c, pair) {
            self.check_p2c(p2c, pair, i, eligible)?;
        }
        Ok(Some(i))
    }

    fn check_p2c(
        &self,
        p2c: P2c,
        pair: Option<(usize, Option<usize>)>,
        got: usize,
        eligible: Eligible,
    ) -> Result<(), Violation> {
        let step = self.step;
        let Some((a, b)) = pair else {
            return Err(Violation::new(
                step,
                format!("sample_pair found no candidate but {eligible:?} are eligible"),
            ));
        };
        ensure!(eligible.contains(&a), step, "P2C sampled ineligible {a}");
        let Some(b) = b else {
            ensure!(
                eligible.len() == 1 && got == a,
                step,
                "P2C drew one candidate {a} (picked {got}) with eligible {eligible:?}"
            );
            return Ok(());
        };
        ensure!(
            b != a && eligible.contains(&b),
            step,
            "P2C second candidate {b} (first {a}) is a repeat or ineligible: {eligible:?}"
        );
        let cost = |i: usize| p2c.cost(&self.slots[i].load, self.now);
        let (ca, cb) = (cost(a), cost(b));
        ensure!(
            !ca.is_nan() && !cb.is_nan() && ca >= 0.0 && cb >= 0.0,
            step,
            "P2C cost is NaN or negative: {a} → {ca}, {b} → {cb}"
        );
        let (mine, other) = if got == a { (ca, cb) } else { (cb, ca) };
        // Costs within rounding of each other are a tie (P2C compares them
        // multiplied out, not divided).
        ensure!(
            (got == a || got == b) && mine <= other * (1.0 + 1e-12),
            step,
            "P2C picked {got} from candidates {a} (cost {ca}) and {b} (cost {cb})"
        );
        if p2c.load() == P2cLoad::Pending {
            for i in [a, b] {
                let load = &self.slots[i].load;
                let expected = match load.weight() {
                    0 => f64::MAX,
                    w => f64::from(load.pending() + 1) / f64::from(w),
                };
                ensure!(
                    cost(i) == expected,
                    step,
                    "pending cost of {i} is {}, expected {expected}",
                    cost(i)
                );
            }
        }
        Ok(())
    }

    /// Consecutive picks with one filter.
    fn cycle(&mut self, exclude: u64) -> Result<(), Violation> {
        let n = self.slots.len();
        let eligible = eligible_indices(&self.slots, exclude);
        let expected: Option<Vec<u64>> = match self.kind {
            BalancerKind::RoundRobin => {
                Some((0..n).map(|i| eligible.contains(&i).into()).collect())
            }
            BalancerKind::WeightedRoundRobin => self.wrr_turns(eligible),
            _ => None,
        };
        let Some(expected) = expected else {
            for _ in 0..n {
                self.pick(exclude)?;
            }
            return Ok(());
        };
        let turns: u64 = expected.iter().sum();
        let mut counts = vec![0u64; n];
        for _ in 0..turns {
            if let Some(i) = self.pick(exclude)? {
                counts[i] += 1;
            }
        }
        ensure!(
            counts == expected,
            self.step,
            "{} over one cycle of {turns} picks gave {counts:?}, expected {expected:?} \
             (eligible {eligible:?}, weights {:?})",
            self.balancer.name(),
            self.weights()
        );
        Ok(())
    }

    /// Picks per endpoint over one cycle of smooth weighted round-robin, when
    /// exactness is promised: the balancer is fresh, some eligible weight is
    /// positive, the reduced weights fit the schedule, and few turns are
    /// skipped.
    fn wrr_turns(&self, eligible: Eligible) -> Option<Vec<u64>> {
        let weights = self.built_for.as_ref()?;
        let g = weights.iter().fold(0u64, |g, &w| gcd(g, w.into()));
        if g == 0 {
            return None;
        }
        let reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w) / g).collect();
        let total: u64 = reduced.iter().sum();
        if total > Weighted::MAX_SCHEDULE.max(weights.len()) as u64 {
            return None;
        }
        let turns: Vec<u64> = (0..reduced.len())
            .map(|i| if eligible.contains(&i) { reduced[i] } else { 0 })
            .collect();
        let live: u64 = turns.iter().sum();
        (live > 0 && total - live <= WRR_SKIPPED_TURNS).then_some(turns)
    }

    pub(super) fn check_pending(&self) -> Result<(), Violation> {
        for (id, t) in &self.tracked {
            ensure!(
                t.load.pending() == t.calls,
                self.step,
                "endpoint #{id}: pending {} with {} open calls",
                t.load.pending(),
                t.calls
            );
        }
        for slot in &self.slots {
            let open = self.tracked.get(&slot.id).map_or(0, |t| t.calls);
            ensure!(
                slot.load.pending() == open,
                self.step,
                "endpoint #{}: pending {} with {open} open calls",
                slot.id,
                slot.load.pending()
            );
        }
        Ok(())
    }

    /// Ends every open call; every in-flight count must return to zero.
    pub(super) fn drain(mut self) -> Result<(), Violation> {
        let loads: Vec<(u64, Rc<Load>)> = self
            .tracked
            .iter()
            .map(|(&id, t)| (id, t.load.clone()))
            .chain(self.slots.iter().map(|s| (s.id, s.load.clone())))
            .collect();
        while !self.calls.is_empty() {
            self.end(self.calls.len() - 1);
        }
        for (id, load) in loads {
            ensure!(
                load.pending() == 0,
                self.step,
                "endpoint #{id}: pending {} after every call ended",
                load.pending()
            );
        }
        Ok(())
    }
}

/// In the set, not ejected, not excluded by the pick.
fn eligible(slots: &[Slot], exclude: u64, i: usize) -> bool {
    i < slots.len() && !slots[i].ejected && (i >= 64 || exclude & (1 << i) == 0)
}

fn eligible_indices(slots: &[Slot], exclude: u64) -> Eligible {
    Eligible(
        (0..slots.len())
            .filter(|&i| eligible(slots, exclude, i))
            .fold(0, |m, i| m | (1 << i)),
    )
}
