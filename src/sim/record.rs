//! What one run records as it goes: requests by arrival time, attempts by
//! backend and time, latencies, ejections, the backends each client uses.

use std::collections::BTreeSet;
use std::time::Duration;

/// Why a request was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// It was sent (or tried to be).
    None,
    /// The caller's adaptive throttle refused it.
    Throttle,
    /// The channel's concurrency limits refused it.
    Limit,
}

/// How a client's set of backends changed, seen at one sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsetChange {
    /// When it was first seen (sampled once per time bucket).
    pub at: Duration,
    /// The client.
    pub client: usize,
    /// Backends it started using, by index.
    pub added: Vec<usize>,
    /// Backends it stopped using, by index.
    pub dropped: Vec<usize>,
}

/// The recorder of one run, shared by its clients and backends.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    bucket_ns: u64,
    backends: usize,
    warmup: Duration,
    /// Per time bucket (by arrival): requests, successes, refused by the
    /// caller's throttle, refused by the channel's concurrency limits.
    pub(crate) requests: Vec<u32>,
    pub(crate) successes: Vec<u32>,
    pub(crate) refused: Vec<u32>,
    pub(crate) limited: Vec<u32>,
    /// Per time bucket (by arrival): each request that was sent, as its
    /// time in microseconds (at most 2³¹ − 1) with the top bit set when it
    /// succeeded.
    pub(crate) sent: Vec<Vec<u32>>,
    /// Each client's backends as first seen (empty until then), and as
    /// last seen.
    pub(crate) first_subsets: Vec<BTreeSet<usize>>,
    pub(crate) subsets: Vec<BTreeSet<usize>>,
    /// Each change of a client's backends after the first sample.
    pub(crate) subset_changes: Vec<SubsetChange>,
    /// Per time bucket (by arrival): the summed latency of the successes,
    /// in microseconds.
    pub(crate) latency_sums_us: Vec<u64>,
    /// Per time bucket: attempts on each backend (`bucket × backends + i`).
    pub(crate) attempts: Vec<u32>,
    /// Latencies of the requests that succeeded within their budget and
    /// arrived after the warm-up, in microseconds.
    pub(crate) latencies_us: Vec<u64>,
    /// Requests that arrived after the warm-up, and attempts made after it.
    pub(crate) measured_requests: u64,
    pub(crate) measured_attempts: u64,
    /// Times each endpoint of each client was seen ejected, and since when.
    pub(crate) ejections: Vec<Ejection>,
    ejected_now: Vec<bool>,
    /// Requests started and not yet finished.
    pub(crate) outstanding: u64,
    /// Every request by arrival: when it arrived (ms) and how long it took
    /// to succeed (µs), [`FAILED`] if it did not.
    pub(crate) timed: Vec<(u32, u32)>,
    /// Attempts in flight on each backend now, and in all.
    in_flight: Vec<u32>,
    in_flight_total: u32,
    /// After the warm-up, for each in-flight total seen when an attempt
    /// arrived (that attempt included), the most its backend then held.
    pub(crate) peak_by_total: Vec<u32>,
    /// After the warm-up, the most attempts each backend held at once.
    pub(crate) peak_in_flight: Vec<u32>,
    /// Attempts after the warm-up that carried a home (keyed), and of
    /// those the ones that reached it.
    pub(crate) keyed_attempts: u64,
    pub(crate) home_attempts: u64,
}

/// A request that did not succeed, in [`Recorder::timed`].
pub(crate) const FAILED: u32 = u32::MAX;

/// One endpoint leaving a client's rotation (its breaker opened).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// When it was first seen ejected (sampled once per time bucket).
    pub at: Duration,
    /// The backend's index in the scenario's order.
    pub backend: usize,
    /// The client whose channel ejected it.
    pub client: usize,
}

impl Recorder {
    pub(crate) fn new(bucket: Duration, backends: usize, clients: usize, warmup: Duration) -> Self {
        Recorder {
            bucket_ns: (bucket.as_nanos() as u64).max(1),
            backends,
            warmup,
            requests: Vec::new(),
            successes: Vec::new(),
            refused: Vec::new(),
            limited: Vec::new(),
            sent: Vec::new(),
            first_subsets: vec![BTreeSet::new(); clients],
            subsets: vec![BTreeSet::new(); clients],
            subset_changes: Vec::new(),
            latency_sums_us: Vec::new(),
            attempts: Vec::new(),
            latencies_us: Vec::new(),
            measured_requests: 0,
            measured_attempts: 0,
            ejections: Vec::new(),
            ejected_now: vec![false; backends * clients],
            outstanding: 0,
            timed: Vec::new(),
            in_flight: vec![0; backends],
            in_flight_total: 0,
            peak_by_total: Vec::new(),
            peak_in_flight: vec![0; backends],
            keyed_attempts: 0,
            home_attempts: 0,
        }
    }

    fn bucket(&self, t: Duration) -> usize {
        (t.as_nanos() as u64 / self.bucket_ns) as usize
    }

    fn grow(&mut self, b: usize) {
        if self.requests.len() <= b {
            self.requests.resize(b + 1, 0);
            self.successes.resize(b + 1, 0);
            self.refused.resize(b + 1, 0);
            self.limited.resize(b + 1, 0);
            self.sent.resize(b + 1, Vec::new());
            self.latency_sums_us.resize(b + 1, 0);
            self.attempts.resize((b + 1) * self.backends, 0);
        }
    }

    /// An attempt reached backend `backend` at `t`; `home` says whether
    /// it is its key's home, when it has one.
    pub(crate) fn attempt(&mut self, t: Duration, backend: usize, home: Option<bool>) {
        let b = self.bucket(t);
        self.grow(b);
        self.attempts[b * self.backends + backend] += 1;
        self.in_flight[backend] += 1;
        self.in_flight_total += 1;
        if t >= self.warmup {
            self.measured_attempts += 1;
            let total = self.in_flight_total as usize;
            if self.peak_by_total.len() <= total {
                self.peak_by_total.resize(total + 1, 0);
            }
            let held = self.in_flight[backend];
            let peak = &mut self.peak_by_total[total];
            *peak = (*peak).max(held);
            let peak = &mut self.peak_in_flight[backend];
            *peak = (*peak).max(held);
            if let Some(at_home) = home {
                self.keyed_attempts += 1;
                self.home_attempts += u64::from(at_home);
            }
        }
    }

    /// An attempt on `backend` is no longer in flight.
    pub(crate) fn attempt_done(&mut self, backend: usize) {
        self.in_flight[backend] = self.in_flight[backend].saturating_sub(1);
        self.in_flight_total = self.in_flight_total.saturating_sub(1);
    }

    /// A request arrived (it is now outstanding).
    pub(crate) fn start(&mut self) {
        self.outstanding += 1;
    }

    /// The request that arrived at `arrived` ended after `took`; `ok` when
    /// it succeeded within its budget; `refusal` says whether the caller's
    /// throttle or the channel's limits refused it.
    pub(crate) fn finish(&mut self, arrived: Duration, took: Duration, ok: bool, refusal: Refusal) {
        self.outstanding -= 1;
        let b = self.bucket(arrived);
        self.grow(b);
        self.requests[b] += 1;
        self.successes[b] += u32::from(ok);
        match refusal {
            Refusal::Throttle => self.refused[b] += 1,
            Refusal::Limit => self.limited[b] += 1,
            Refusal::None => {
                let us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX) & !(1 << 31);
                self.sent[b].push(us | (u32::from(ok) << 31));
            }
        }
        if ok {
            self.latency_sums_us[b] += took.as_micros() as u64;
        }
        let us = if ok {
            took.as_micros().min(u128::from(FAILED - 1)) as u32
        } else {
            FAILED
        };
        self.timed.push((arrived.as_millis() as u32, us));
        if arrived >= self.warmup {
            self.measured_requests += 1;
            if ok {
                self.latencies_us.push(took.as_micros() as u64);
            }
        }
    }

    /// The backends `client`'s channel uses, seen at `t`: the first
    /// non-empty set is its start, each later difference a change.
    pub(crate) fn subset(&mut self, t: Duration, client: usize, now: BTreeSet<usize>) {
        if self.first_subsets[client].is_empty() {
            self.first_subsets[client] = now.clone();
        } else if now != self.subsets[client] {
            let last = &self.subsets[client];
            self.subset_changes.push(SubsetChange {
                at: t,
                client,
                added: now.difference(last).copied().collect(),
                dropped: last.difference(&now).copied().collect(),
            });
        }
        self.subsets[client] = now;
    }

    /// Which backends `client`'s channel has ejected, seen at `t` (as
    /// `(backend, ejected)` for the backends it uses; the others are not).
    pub(crate) fn ejected(&mut self, t: Duration, client: usize, seen: &[(usize, bool)]) {
        let mut ejected = vec![false; self.backends];
        for &(backend, now) in seen {
            ejected[backend] = now;
        }
        for (backend, &now) in ejected.iter().enumerate() {
            let was = &mut self.ejected_now[client * self.backends + backend];
            if now && !*was {
                self.ejections.push(Ejection {
                    at: t,
                    backend,
                    client,
                });
            }
            *was = now;
        }
    }
}
