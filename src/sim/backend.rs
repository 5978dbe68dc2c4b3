//! Virtual backends: a `tower::Service` per endpoint whose answers follow a
//! latency distribution, a capacity model, failures, stalls and timed phases.
//!
//! - **Latency**: sampled per request from the backend's distribution and
//!   rounded to the nearest millisecond (tokio's timer tick).
//! - **Capacity**: `concurrency = k` gives k servers behind one FIFO queue;
//!   a request waits for a free server, then holds it for its latency.
//!   Without a concurrency every request is served at once (a pure delay).
//! - **Failures**: a share of requests fails with an error after its own
//!   latency, without queueing or holding a server (a front end refusing).
//! - **Stalls**: a share of requests is never answered; the caller's timeout
//!   or cancellation ends them. They hold no server.
//! - **Down**: every request fails at once, as a refused connection.
//! - **Abandoned work**: a queued request whose caller gave up is still
//!   served, as by a server that does not check deadlines; with
//!   `drop_abandoned` it leaves the queue when its turn comes instead.
//!   Work already started is always finished.
//! - **Phases** override any of these from one time to another; **drift**
//!   redraws the mean of the latency distribution at random intervals.
//! - **Joining** and **cold start**: a backend may join the clients'
//!   endpoint sets at a time after the start; a cold backend's latency is
//!   multiplied by a factor for a while after it starts (at 0 or when it
//!   joins), then warms linearly back to normal.
//! - **In flight**: each backend counts the attempts the channel has in
//!   flight on it (from the call until the answer is taken or the attempt
//!   dropped, as the channel's own count), so that the recorder can check
//!   bounded loads at each arrival.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::latency::Latency;
use super::record::Recorder;
use crate::rng::Rng;

/// What a backend does: the base behaviour, or a phase's overrides.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Behaviour {
    pub(crate) latency: Latency,
    /// Servers behind the queue; `None` serves every request at once.
    pub(crate) concurrency: Option<u32>,
    pub(crate) failure_rate: f64,
    pub(crate) failure_latency: Latency,
    pub(crate) stall_rate: f64,
    pub(crate) down: bool,
}

/// A timed change: each `Some` replaces the base setting from `from` to
/// `to` (later phases win where phases overlap).
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Phase {
    pub(crate) from: Duration,
    pub(crate) to: Duration,
    pub(crate) latency: Option<Latency>,
    pub(crate) concurrency: Option<Option<u32>>,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) failure_latency: Option<Latency>,
    pub(crate) stall_rate: Option<f64>,
    pub(crate) down: Option<bool>,
    /// Out of discovery (clients stop using it); the backend itself is
    /// unchanged.
    pub(crate) removed: Option<bool>,
}

/// Redraws the mean of the base latency distribution: after each interval
/// drawn from `every`, the latency is scaled so its mean is a draw from
/// `mean`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Drift {
    pub(crate) every: Latency,
    pub(crate) mean: Latency,
}

/// A backend cold when it starts: its latency is `factor` times the
/// normal one until `hold` after its start, then the factor falls linearly
/// to 1 at `warm_by`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cold {
    pub(crate) factor: f64,
    pub(crate) hold: Duration,
    pub(crate) warm_by: Duration,
}

impl Cold {
    /// The latency factor `since` the backend started.
    pub(crate) fn at(&self, since: Duration) -> f64 {
        if since < self.hold {
            self.factor
        } else if since < self.warm_by {
            let done = (since - self.hold).as_secs_f64() / (self.warm_by - self.hold).as_secs_f64();
            self.factor + (1.0 - self.factor) * done
        } else {
            1.0
        }
    }
}

/// One group of identical backends, as the scenario declares it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BackendSpec {
    pub(crate) name: String,
    pub(crate) count: u32,
    pub(crate) weight: u32,
    pub(crate) base: Behaviour,
    pub(crate) phases: Vec<Phase>,
    pub(crate) drift: Option<Drift>,
    pub(crate) drop_abandoned: bool,
    /// When the group joins the clients' endpoint sets (zero: from the
    /// start).
    pub(crate) join: Duration,
    pub(crate) cold: Option<Cold>,
}

impl BackendSpec {
    /// The cold-start factor on latency at `t` (1 for a warm backend).
    fn cold_at(&self, t: Duration) -> f64 {
        self.cold.map_or(1.0, |c| c.at(t.saturating_sub(self.join)))
    }

    /// The setting in force at `t`: the last phase covering `t` that sets
    /// it, else the base.
    fn at<'a, T>(
        &'a self,
        t: Duration,
        base: &'a T,
        get: impl Fn(&'a Phase) -> Option<&'a T>,
    ) -> &'a T {
        self.phases
            .iter()
            .rev()
            .filter(|p| p.from <= t && t < p.to)
            .find_map(get)
            .unwrap_or(base)
    }

    /// Whether the latency at `t` is the base one (which drift scales).
    fn base_latency_at(&self, t: Duration) -> bool {
        !self
            .phases
            .iter()
            .any(|p| p.from <= t && t < p.to && p.latency.is_some())
    }
}

/// A request as the simulated clients send it: its hash key, if the
/// client draws keys, and the index of the backend that key's table puts
/// it on (its home), when the configuration picks by key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Call {
    pub(crate) key: Option<u64>,
    pub(crate) home: Option<usize>,
}

/// A successful answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reply;

/// Why a backend failed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackendError {
    /// The backend answered with an error (a fast failure).
    Failed,
    /// The backend is down: the connection was refused.
    Down,
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendError::Failed => "the backend answered with an error",
            BackendError::Down => "the backend is down",
        })
    }
}

impl std::error::Error for BackendError {}

type Answer = Result<Reply, BackendError>;

/// A request waiting for a server.
struct Job {
    answer: oneshot::Sender<Answer>,
}

struct State {
    busy: u32,
    queue: VecDeque<Job>,
    service: Rng,
    outcome: Rng,
    /// The drift factor applied to the base latency.
    scale: f64,
}

struct Inner {
    index: usize,
    spec: Arc<BackendSpec>,
    epoch: Instant,
    record: Arc<Mutex<Recorder>>,
    state: Mutex<State>,
}

/// One virtual backend; clones share it.
#[derive(Clone)]
pub(crate) struct Backend {
    inner: Arc<Inner>,
}

impl Backend {
    /// Backend `index` of the run, following `spec`; `seed` fixes its
    /// random streams. Starts its phase and drift timers on the current
    /// runtime.
    pub(crate) fn start(
        index: usize,
        spec: Arc<BackendSpec>,
        seed: u64,
        epoch: Instant,
        record: Arc<Mutex<Recorder>>,
    ) -> Self {
        let inner = Arc::new(Inner {
            index,
            epoch,
            record,
            state: Mutex::new(State {
                busy: 0,
                queue: VecDeque::new(),
                service: Rng::seeded(super::mix(seed, 1)),
                outcome: Rng::seeded(super::mix(seed, 2)),
                scale: 1.0,
            }),
            spec,
        });
        let backend = Backend { inner };
        backend.start_timers(seed);
        backend
    }

    fn start_timers(&self, seed: u64) {
        let spec = &self.inner.spec;
        if spec.base.concurrency.is_some() || spec.phases.iter().any(|p| p.concurrency.is_some()) {
            // A phase that adds servers must start queued work when it
            // begins (or ends), not only when a request comes or goes.
            let mut edges: Vec<Duration> =
                spec.phases.iter().flat_map(|p| [p.from, p.to]).collect();
            edges.sort();
            edges.dedup();
            let weak = Arc::downgrade(&self.inner);
            let epoch = self.inner.epoch;
            tokio::spawn(async move {
                for edge in edges {
                    // A phase without an end has no edge to wait for.
                    let Some(when) = epoch.checked_add(edge) else {
                        return;
                    };
                    tokio::time::sleep_until(when).await;
                    let Some(inner) = weak.upgrade() else { return };
                    dispatch(&inner);
                }
            });
        }
        if let Some(drift) = spec.drift.clone() {
            let weak = Arc::downgrade(&self.inner);
            let base_mean = spec.base.latency.mean();
            let mut rng = Rng::seeded(super::mix(seed, 3));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(
                        drift
                            .every
                            .sample(&mut rng, 1.0)
                            .max(Duration::from_millis(1)),
                    )
                    .await;
                    let Some(inner) = weak.upgrade() else { return };
                    let mean = drift.mean.sample_secs(&mut rng);
                    inner.state.lock().scale = if base_mean > 0.0 {
                        mean / base_mean
                    } else {
                        1.0
                    };
                }
            });
        }
    }
}

/// Starts queued requests while a server is free.
fn dispatch(inner: &Arc<Inner>) {
    let t = inner.epoch.elapsed();
    let spec = &inner.spec;
    let servers = *spec.at(t, &spec.base.concurrency, |p| p.concurrency.as_ref());
    let latency = spec.at(t, &spec.base.latency, |p| p.latency.as_ref());
    let drifted = spec.base_latency_at(t);
    let cold = spec.cold_at(t);
    let mut state = inner.state.lock();
    while servers.is_none_or(|k| state.busy < k) {
        let Some(job) = state.queue.pop_front() else {
            break;
        };
        if spec.drop_abandoned && job.answer.is_closed() {
            continue;
        }
        state.busy += 1;
        let scale = cold * if drifted { state.scale } else { 1.0 };
        let took = latency.sample(&mut state.service, scale);
        let inner = inner.clone();
        tokio::spawn(async move {
            tokio::time::sleep(took).await;
            let _ = job.answer.send(Ok(Reply));
            inner.state.lock().busy -= 1;
            dispatch(&inner);
        });
    }
}

/// The future of one request to a backend. The attempt counts as in
/// flight on the backend until the answer is taken or the future dropped.
pub(crate) struct Answering {
    inner: Pin<Box<dyn Future<Output = Answer> + Send>>,
    in_flight: Option<(Arc<Mutex<Recorder>>, usize)>,
}

impl Answering {
    fn settle(&mut self) {
        if let Some((record, backend)) = self.in_flight.take() {
            record.lock().attempt_done(backend);
        }
    }
}

impl Future for Answering {
    type Output = Answer;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let answer = self.inner.as_mut().poll(cx);
        if answer.is_ready() {
            self.settle();
        }
        answer
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.settle();
    }
}

impl tower::Service<Call> for Backend {
    type Response = Reply;
    type Error = BackendError;
    type Future = Answering;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BackendError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Call) -> Answering {
        let inner = &self.inner;
        let t = inner.epoch.elapsed();
        let home = req.home.map(|h| h == inner.index);
        inner.record.lock().attempt(t, inner.index, home);
        let spec = &inner.spec;
        let answer: Pin<Box<dyn Future<Output = Answer> + Send>> =
            if *spec.at(t, &spec.base.down, |p| p.down.as_ref()) {
                Box::pin(std::future::ready(Err(BackendError::Down)))
            } else {
                let fail = *spec.at(t, &spec.base.failure_rate, |p| p.failure_rate.as_ref());
                let stall = *spec.at(t, &spec.base.stall_rate, |p| p.stall_rate.as_ref());
                let mut state = inner.state.lock();
                let draw = state.outcome.unit();
                if draw < fail {
                    let latency = spec.at(t, &spec.base.failure_latency, |p| {
                        p.failure_latency.as_ref()
                    });
                    let took = latency.sample(&mut state.outcome, 1.0);
                    Box::pin(async move {
                        tokio::time::sleep(took).await;
                        Err(BackendError::Failed)
                    })
                } else if draw < fail + stall {
                    Box::pin(std::future::pending())
                } else if spec
                    .at(t, &spec.base.concurrency, |p| p.concurrency.as_ref())
                    .is_none()
                {
                    // No queue: the request is served at once, and nothing is
                    // left to do for it if its caller goes away.
                    let latency = spec.at(t, &spec.base.latency, |p| p.latency.as_ref());
                    let scale = spec.cold_at(t)
                        * if spec.base_latency_at(t) {
                            state.scale
                        } else {
                            1.0
                        };
                    let took = latency.sample(&mut state.service, scale);
                    Box::pin(async move {
                        tokio::time::sleep(took).await;
                        Ok(Reply)
                    })
                } else {
                    let (tx, rx) = oneshot::channel();
                    state.queue.push_back(Job { answer: tx });
                    drop(state);
                    dispatch(inner);
                    Box::pin(async move {
                        match rx.await {
                            Ok(answer) => answer,
                            // The runtime is shutting down: no answer comes.
                            Err(_) => std::future::pending().await,
                        }
                    })
                }
            };
        Answering {
            inner: answer,
            in_flight: Some((inner.record.clone(), inner.index)),
        }
    }
}
