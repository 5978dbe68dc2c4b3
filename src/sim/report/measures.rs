//! What a run says about subsets (which backends each client uses, and how
//! evenly load spreads over them) and about local refusals and the latency
//! of the requests that were sent (concurrency limits).

use std::collections::BTreeSet;
use std::time::Duration;

use super::Run;
use crate::sim::SubsetChange;

impl Run {
    /// Requests refused by the channel's concurrency limits (never sent),
    /// over the whole run.
    pub fn refused_by_limit(&self) -> u64 {
        self.record.limited.iter().map(|&r| u64::from(r)).sum()
    }

    /// Requests arriving from `from` to `to` that the channel's concurrency
    /// limits refused.
    pub fn refused_by_limit_between(&self, from: Duration, to: Duration) -> u64 {
        let range = self.buckets(from, to);
        self.record.limited[range]
            .iter()
            .map(|&r| u64::from(r))
            .sum()
    }

    /// Requests arriving from `from` to `to`.
    pub fn requests_between(&self, from: Duration, to: Duration) -> u64 {
        let range = self.buckets(from, to);
        self.record.requests[range]
            .iter()
            .map(|&r| u64::from(r))
            .sum()
    }

    /// Successes per second among the requests arriving from `from` to `to`
    /// (bucket-aligned).
    pub fn goodput_between(&self, from: Duration, to: Duration) -> f64 {
        let range = self.buckets(from, to);
        let seconds = self.bucket.as_secs_f64() * range.len() as f64;
        let ok: u64 = self.record.successes[range]
            .iter()
            .map(|&r| u64::from(r))
            .sum();
        if seconds > 0.0 {
            ok as f64 / seconds
        } else {
            0.0
        }
    }

    /// The `q`-quantile (0 to 1) of the time taken by the requests arriving
    /// from `from` to `to` that were sent, not refused locally: whatever
    /// their outcome, so a request that ran out of budget counts as its
    /// budget. `None` when none was sent.
    pub fn sent_latency_between(&self, q: f64, from: Duration, to: Duration) -> Option<Duration> {
        let range = self.buckets(from, to);
        let mut times: Vec<u32> = self.record.sent[range]
            .iter()
            .flatten()
            .map(|&t| t & !(1 << 31))
            .collect();
        quantile(&mut times, q)
    }

    /// The first time at or after `after` from which, in every following
    /// window of length `window` until arrivals stop, the `q`-quantile of
    /// the sent requests' time is at most `limit`; `None` if that never
    /// holds to the end.
    pub fn settled_at(
        &self,
        after: Duration,
        window: Duration,
        q: f64,
        limit: Duration,
    ) -> Option<Duration> {
        let step = self.bucket;
        let mut since = None;
        let mut t = after;
        while t + window <= self.duration {
            let ok = self
                .sent_latency_between(q, t, t + window)
                .is_none_or(|l| l <= limit);
            match (ok, since) {
                (true, None) => since = Some(t),
                (false, _) => since = None,
                _ => {}
            }
            t += step;
        }
        since
    }

    /// Each client's backends (by index) as last sampled at or before `t`:
    /// the first non-empty sample, then every change (towline
    /// configurations; sampled once per bucket).
    pub fn subsets_at(&self, t: Duration) -> Vec<BTreeSet<usize>> {
        let mut sets = self.record.first_subsets.clone();
        for change in self.record.subset_changes.iter().filter(|c| c.at <= t) {
            let set = &mut sets[change.client];
            set.extend(&change.added);
            for b in &change.dropped {
                set.remove(b);
            }
        }
        sets
    }

    /// Every change of a client's backends after its first sample.
    pub fn subset_changes(&self) -> &[SubsetChange] {
        &self.record.subset_changes
    }

    /// Attempts on each backend (by index) sent from `from` to `to`.
    pub fn attempts_between(&self, from: Duration, to: Duration) -> Vec<u64> {
        let mut out = vec![0u64; self.backends.len()];
        for b in self.buckets(from, to) {
            for (i, a) in self.attempts_in(b).enumerate() {
                out[i] += u64::from(a);
            }
        }
        out
    }

    /// Whether each backend is in discovery when arrivals stop.
    pub fn listed_at_end(&self) -> &[bool] {
        &self.listed
    }

    /// The subset figures for [`Report::table`](super::Report::table): the
    /// most backends a client uses, the fewest and most clients a listed
    /// backend has, and the coefficient of variation of the attempts on
    /// listed backends after the warm-up. `None` without subset samples.
    pub(crate) fn subset_summary(&self) -> Option<(usize, usize, usize, f64)> {
        let sets = self.subsets_at(Duration::MAX);
        if sets.iter().all(BTreeSet::is_empty) {
            return None;
        }
        let connections = sets.iter().map(BTreeSet::len).max().unwrap_or(0);
        let mut clients = vec![0usize; self.backends.len()];
        for b in sets.iter().flatten() {
            clients[*b] += 1;
        }
        let listed = |i: &usize| self.listed.get(*i).copied().unwrap_or(true);
        let per: Vec<usize> = (0..clients.len())
            .filter(listed)
            .map(|i| clients[i])
            .collect();
        let attempts = self.attempts_between(self.warmup, Duration::MAX);
        let load: Vec<f64> = (0..attempts.len())
            .filter(listed)
            .map(|i| attempts[i] as f64)
            .collect();
        Some((
            connections,
            per.iter().copied().min().unwrap_or(0),
            per.iter().copied().max().unwrap_or(0),
            cov(&load),
        ))
    }
}

/// The coefficient of variation (population standard deviation over the
/// mean) of `xs`; 0 for an empty or all-zero sample.
pub(crate) fn cov(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if mean.is_nan() || mean <= 0.0 {
        return 0.0;
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    var.sqrt() / mean
}

/// The nearest-rank `q`-quantile of `times` (microseconds), sorted in
/// place.
fn quantile(times: &mut [u32], q: f64) -> Option<Duration> {
    if times.is_empty() {
        return None;
    }
    times.sort_unstable();
    let n = times.len() as u64;
    let rank = ((q * n as f64).ceil() as u64).clamp(1, n) - 1;
    Some(Duration::from_micros(u64::from(times[rank as usize])))
}
