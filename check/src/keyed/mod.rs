//! Keyed balancers ([`ConsistentHash`] ring and Maglev, with and without
//! bounded loads) under endpoint churn, ejection, load and exclusions.
//!
//! [`run_keyed`] keeps an endpoint set as the channel does (an address,
//! a [`Load`] and an ejected flag per endpoint; a table rebuilt through
//! [`Balancer::rebuild_set`], or left stale), applies [`KeyedOp`]s and
//! checks, at every pick by key:
//!
//! - a pick is `Some` exactly when some endpoint is eligible (in the set,
//!   not ejected, not excluded), and then it is an eligible index;
//! - the same key and the same set give the same endpoint: a second table
//!   built from the same `(address, weight)` pairs given in another order,
//!   asked with the same key, loads and filter, picks the same address
//!   (checked when the table is fresh);
//! - with bounded loads, the endpoint picked is within its bound
//!   (`pending + 1 ≤ ⌈c · (P + 1) · w / W⌉`, `P` in flight over the set,
//!   `w` its weight, `W` the total weight, all weights 1 if all are 0;
//!   computed here from the formula) whenever some eligible endpoint is;
//!
//! and over a [`KeyedOp::Walk`] (a call's retries: each pick excludes the
//! endpoints already tried), every pick is a new eligible endpoint, until
//! every eligible endpoint has been tried.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use crate::{Violation, ensure};
use towline::balance::{Balancer, EndpointSet, Load, LoadSet, PickContext};
use towline::rng::Rng;

mod input;
pub use input::*;

/// A fuzz input: a keyed balancer and the operations to run on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedCase {
    /// The balancer under test.
    pub kind: KeyedKind,
    /// Its operations, in order.
    pub ops: Vec<KeyedOp>,
}

crate::fuzz_case!(KeyedCase { kind; ops });

impl KeyedCase {
    /// Runs [`run_keyed`] on this case.
    pub fn run(&self) -> Result<(), Violation> {
        run_keyed(self.kind, &self.ops)
    }
}

/// Runs `ops` on a table of `kind` and checks its invariants.
pub fn run_keyed(kind: KeyedKind, ops: &[KeyedOp]) -> Result<(), Violation> {
    run_keyed_with(&kind.build(), kind, ops)
}

/// Runs `ops` on `balancer` (rebuilt for each set with
/// [`Balancer::rebuild_set`]) and checks the invariants promised by
/// `kind`; this is how a test feeds a faulty keyed balancer.
pub fn run_keyed_with(
    balancer: &dyn Balancer,
    kind: KeyedKind,
    ops: &[KeyedOp],
) -> Result<(), Violation> {
    let mut model = Model::new(balancer, kind);
    for (step, op) in ops.iter().enumerate() {
        model.step = step;
        model.apply(op)?;
    }
    Ok(())
}

struct Endpoint {
    addr: SocketAddr,
    load: Rc<Load>,
    ejected: bool,
}

struct Model<'a> {
    proto: &'a dyn Balancer,
    kind: KeyedKind,
    table: Box<dyn Balancer>,
    /// The same set given in reverse order, and its table (built when
    /// first needed after a change).
    twin: Option<Box<dyn Balancer>>,
    /// The table was rebuilt for the current set.
    fresh: bool,
    endpoints: Vec<Endpoint>,
    calls: Vec<Rc<Load>>,
    next_addr: u32,
    epoch: Instant,
    step: usize,
}

/// The set as a pick sees it, with or without its in-flight total.
struct Set<'a> {
    endpoints: &'a [Endpoint],
    /// Positions in `endpoints`, by index of this view.
    order: &'a [usize],
    kept: bool,
}

impl LoadSet for Set<'_> {
    fn len(&self) -> usize {
        self.order.len()
    }
    fn load(&self, index: usize) -> &Load {
        &self.endpoints[self.order[index]].load
    }
    fn in_flight(&self) -> Option<u64> {
        self.kept.then(|| in_flight(self.endpoints))
    }
}

fn in_flight(endpoints: &[Endpoint]) -> u64 {
    endpoints.iter().map(|e| u64::from(e.load.pending())).sum()
}

fn eligible(endpoints: &[Endpoint], exclude: u64, i: usize) -> bool {
    i < endpoints.len() && !endpoints[i].ejected && (i >= 64 || exclude & (1 << i) == 0)
}

impl<'a> Model<'a> {
    fn new(proto: &'a dyn Balancer, kind: KeyedKind) -> Self {
        Model {
            proto,
            kind,
            table: proto.rebuild_set(&EndpointSet::new(&[], &[])),
            twin: None,
            fresh: true,
            endpoints: Vec::new(),
            calls: Vec::new(),
            next_addr: 0,
            epoch: Instant::now(),
            step: 0,
        }
    }

    fn members(&self) -> (Vec<SocketAddr>, Vec<u32>) {
        self.endpoints
            .iter()
            .map(|e| (e.addr, e.load.weight()))
            .unzip()
    }

    fn rebuild(&mut self, rebuild: bool) {
        self.twin = None;
        if rebuild {
            let (addrs, weights) = self.members();
            self.table = self.proto.rebuild_set(&EndpointSet::new(&addrs, &weights));
        }
        self.fresh = rebuild;
    }

    fn endpoint(&mut self, weight: u32) -> Endpoint {
        self.next_addr += 1;
        let n = self.next_addr;
        Endpoint {
            addr: SocketAddr::from(([10, (n >> 16) as u8, (n >> 8) as u8, n as u8], 8080)),
            load: Rc::new(Load::new(weight, self.epoch)),
            ejected: false,
        }
    }

    fn index(&self, raw: u8) -> Option<usize> {
        (!self.endpoints.is_empty()).then(|| usize::from(raw) % self.endpoints.len())
    }

    fn apply(&mut self, op: &KeyedOp) -> Result<(), Violation> {
        match *op {
            KeyedOp::Reset { len, ref weights } => {
                let len = usize::from(len) % (MAX_ENDPOINTS + 1);
                let weight = |i: usize| {
                    weights
                        .get(i % weights.len().max(1))
                        .map_or(1, |w| w.value())
                };
                self.endpoints.truncate(len);
                for (i, e) in self.endpoints.iter().enumerate() {
                    e.load.set_weight(weight(i));
                }
                for i in self.endpoints.len()..len {
                    let e = self.endpoint(weight(i));
                    self.endpoints.push(e);
                }
                self.rebuild(true);
            }
            KeyedOp::Insert { weight, rebuild } => {
                if self.endpoints.len() < MAX_ENDPOINTS {
                    let e = self.endpoint(weight.value());
                    self.endpoints.push(e);
                    self.rebuild(rebuild);
                }
            }
            KeyedOp::Remove { index, rebuild } => {
                if let Some(i) = self.index(index) {
                    self.endpoints.swap_remove(i);
                    self.rebuild(rebuild);
                }
            }
            KeyedOp::SetWeight { index, weight } => {
                if let Some(i) = self.index(index) {
                    self.endpoints[i].load.set_weight(weight.value());
                    self.rebuild(true);
                }
            }
            KeyedOp::Eject { index } | KeyedOp::Readmit { index } => {
                if let Some(i) = self.index(index) {
                    self.endpoints[i].ejected = matches!(op, KeyedOp::Eject { .. });
                }
            }
            KeyedOp::Begin { index } => {
                if let Some(i) = self.index(index) {
                    self.begin(i);
                }
            }
            KeyedOp::End { call } => {
                if !self.calls.is_empty() {
                    let call = self.calls.swap_remove(usize::from(call) % self.calls.len());
                    call.end();
                }
            }
            KeyedOp::Pick { key, exclude, kept } => {
                self.pick(key, exclude, kept)?;
            }
            KeyedOp::PickAndBegin { key, exclude } => {
                if let Some(i) = self.pick(key, exclude, true)? {
                    self.begin(i);
                }
            }
            KeyedOp::Walk { key, exclude } => self.walk(key, exclude)?,
        }
        Ok(())
    }

    fn begin(&mut self, i: usize) {
        let load = self.endpoints[i].load.clone();
        load.start();
        self.calls.push(load);
    }

    /// The pick of `table` by `key` over the endpoints in `order`, with
    /// `exclude` (a mask over the model's indices).
    fn ask(
        &self,
        table: &dyn Balancer,
        order: &[usize],
        key: u64,
        exclude: u64,
        kept: bool,
    ) -> Option<usize> {
        let set = Set {
            endpoints: &self.endpoints,
            order,
            kept,
        };
        let at = PickContext::new(self.epoch).with_key(Some(key));
        let filter = |i: usize| eligible(&self.endpoints, exclude, order[i]);
        // No generator is drawn from when the pick has a key.
        let mut rng = Rng::seeded(0);
        table.pick(&at, &set, &filter, &mut rng).map(|i| order[i])
    }

    /// One pick with every per-pick check.
    fn pick(&mut self, key: u64, exclude: u64, kept: bool) -> Result<Option<usize>, Violation> {
        let step = self.step;
        let n = self.endpoints.len();
        let identity: Vec<usize> = (0..n).collect();
        let got = self.ask(&*self.table, &identity, key, exclude, kept);
        let any = (0..n).any(|i| eligible(&self.endpoints, exclude, i));
        let name = self.table.name();
        ensure!(
            got.is_some() == any,
            step,
            "{name} picked {got:?} for key {key} with {} eligible of {n}",
            if any { "some" } else { "none" }
        );
        let Some(i) = got else { return Ok(None) };
        ensure!(
            eligible(&self.endpoints, exclude, i),
            step,
            "{name} picked {i}, which is ejected or excluded (mask {exclude:#x}, n {n})"
        );
        if !self.fresh {
            return Ok(Some(i));
        }
        // The same key and set, given in reverse order, to a second table.
        let reversed: Vec<usize> = (0..n).rev().collect();
        if self.twin.is_none() {
            let (addrs, weights): (Vec<SocketAddr>, Vec<u32>) = reversed
                .iter()
                .map(|&j| (self.endpoints[j].addr, self.endpoints[j].load.weight()))
                .unzip();
            self.twin = Some(self.proto.rebuild_set(&EndpointSet::new(&addrs, &weights)));
        }
        let twin = self.twin.as_deref().expect("built above");
        let again = self.ask(twin, &reversed, key, exclude, kept);
        ensure!(
            again == Some(i),
            step,
            "{name}: key {key} went to {} in one order of the set and to {:?} in another",
            self.endpoints[i].addr,
            again.map(|j| self.endpoints[j].addr)
        );
        self.check_bound(i, exclude)?;
        Ok(Some(i))
    }

    /// A bounded pick is within its bound whenever an eligible endpoint is.
    fn check_bound(&self, i: usize, exclude: u64) -> Result<(), Violation> {
        let Some(milli) = self.kind.factor_milli() else {
            return Ok(());
        };
        let total = in_flight(&self.endpoints);
        let all_zero = self.endpoints.iter().all(|e| e.load.weight() == 0);
        let weight = |j: usize| match all_zero {
            true => 1,
            false => u128::from(self.endpoints[j].load.weight()),
        };
        let weights: u128 = (0..self.endpoints.len()).map(weight).sum();
        // ⌈c · (P + 1) · w / W⌉, exactly.
        let limit = |j: usize| {
            (milli * (u128::from(total) + 1) * weight(j)).div_ceil(1_000 * weights.max(1))
        };
        let under = |j: usize| u128::from(self.endpoints[j].load.pending()) < limit(j);
        let n = self.endpoints.len();
        let some_under = (0..n).any(|j| eligible(&self.endpoints, exclude, j) && under(j));
        ensure!(
            under(i) || !some_under,
            self.step,
            "{}: picked {i} with {} in flight, over its bound {} (total {total}), while an \
             eligible endpoint was under its own",
            self.table.name(),
            self.endpoints[i].load.pending(),
            limit(i)
        );
        Ok(())
    }

    /// A call's attempts by one key: each a new eligible endpoint, until
    /// every eligible one has been tried.
    fn walk(&mut self, key: u64, exclude: u64) -> Result<(), Violation> {
        let n = self.endpoints.len();
        let mut tried = exclude;
        let mut seen = 0;
        while let Some(i) = self.pick(key, tried, true)? {
            ensure!(
                i < 64 && tried & (1 << i) == 0,
                self.step,
                "a retry by key {key} went back to {i}"
            );
            tried |= 1 << i;
            seen += 1;
            ensure!(seen <= n, self.step, "the walk by key {key} does not end");
        }
        let left = (0..n)
            .filter(|&i| eligible(&self.endpoints, tried, i))
            .count();
        ensure!(
            left == 0,
            self.step,
            "the walk by key {key} missed {left} endpoints"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests;
