//! Simulated clients: arrival processes, the per-call budget, and the
//! caller each client sends through (a towline channel or a tower stack).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tower::ServiceExt;

use super::backend::{Call, Reply};
use super::limits::Ramp;
use super::record::{Recorder, Refusal};
use crate::Channel;
use crate::policy::throttle::{Decision, Throttle, ThrottleSettings};
use crate::rng::Rng;
use crate::{BoxError, Error};

/// How a client's requests arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Arrivals {
    /// Open loop, exponential gaps: `rate` requests per second on average.
    Poisson { rate: f64 },
    /// Open loop, evenly spaced: `rate` requests per second.
    Fixed { rate: f64 },
    /// Closed loop: `concurrency` callers, each sending its next request as
    /// soon as the previous one ends (a tick, 1 ms, later if it ended at
    /// once).
    Closed { concurrency: u32 },
}

/// One group of identical clients, each with its own channel.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClientSpec {
    pub(crate) count: u32,
    pub(crate) arrivals: Arrivals,
    /// The caller's timeout: a call not answered by then is dropped
    /// (cancelled) and counts as failed. `None`: no limit.
    pub(crate) budget: Option<Duration>,
    /// The hash keys requests carry, if any.
    pub(crate) keys: Option<Keys>,
    /// Factors on the rate over time (open loop); `None`: constant.
    pub(crate) ramp: Option<Ramp>,
}

/// Request keys: `count` keys, the `r`-th most popular (from 0) drawn with
/// probability proportional to `1 / (r + 1)^zipf` (0: uniform).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Keys {
    pub(crate) count: u32,
    pub(crate) zipf: f64,
}

/// Draws request keys: a rank by the cumulative distribution, then a key
/// that is the rank mixed with a salt (so each seed places keys anew).
pub(crate) struct KeyDraw {
    cumulative: Vec<f64>,
    salt: u64,
    rng: Rng,
    /// Where each key's table puts it (its home backend), for
    /// configurations that pick by key.
    homes: Option<Arc<crate::balance::ConsistentHash>>,
}

impl KeyDraw {
    pub(crate) fn new(
        keys: Keys,
        salt: u64,
        rng: Rng,
        homes: Option<Arc<crate::balance::ConsistentHash>>,
    ) -> Self {
        let mut sum = 0.0;
        let mut cumulative: Vec<f64> = (0..keys.count)
            .map(|r| {
                sum += (f64::from(r) + 1.0).powf(-keys.zipf);
                sum
            })
            .collect();
        cumulative.iter_mut().for_each(|c| *c /= sum);
        KeyDraw {
            cumulative,
            salt,
            rng,
            homes,
        }
    }

    /// The next request's key and home.
    fn draw(&mut self) -> Call {
        let u = self.rng.unit();
        let rank = self.cumulative.partition_point(|&c| c <= u);
        let rank = rank.min(self.cumulative.len() - 1) as u64;
        let key = super::mix(self.salt, rank);
        Call {
            key: Some(key),
            home: self.homes.as_ref().and_then(|h| h.home(key)),
        }
    }
}

/// tower's balancer behind its `Buffer`, type-erased.
pub(crate) type TowerService = tower::buffer::Buffer<
    Call,
    Pin<Box<dyn Future<Output = Result<Reply, BoxError>> + Send + 'static>>,
>;

/// What a client sends its calls through.
#[derive(Clone)]
pub(crate) enum Caller {
    Towline(Channel<Call, Reply>),
    Tower(TowerService),
}

/// How one call ended, as the caller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Success,
    /// Refused by the channel's concurrency limits, without being sent.
    Refused,
    Failure,
}

impl Caller {
    /// One call. (Boxed here, where the future's type is known: spawning
    /// tower's `Buffer` future through further `async` layers trips the
    /// compiler's `Send` inference on `BoxError`.)
    fn call(self, req: Call) -> Pin<Box<dyn Future<Output = Answer> + Send>> {
        match self {
            Caller::Towline(channel) => Box::pin(async move {
                match channel.oneshot(req).await {
                    Ok(_) => Answer::Success,
                    Err(Error::Overloaded) => Answer::Refused,
                    Err(_) => Answer::Failure,
                }
            }),
            Caller::Tower(service) => {
                let call: Pin<Box<dyn Future<Output = Result<Reply, BoxError>> + Send>> =
                    Box::pin(service.oneshot(req));
                Box::pin(async move {
                    match call.await {
                        Ok(_) => Answer::Success,
                        Err(_) => Answer::Failure,
                    }
                })
            }
        }
    }
}

/// A client's adaptive throttle with the generator of its draws.
type SharedThrottle = Arc<Mutex<(Throttle, Rng)>>;

/// Everything the requests of one client share.
#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) caller: Caller,
    pub(crate) budget: Option<Duration>,
    pub(crate) epoch: Instant,
    pub(crate) record: Arc<Mutex<Recorder>>,
    throttle: Option<SharedThrottle>,
    keys: Option<Arc<Mutex<KeyDraw>>>,
    ramp: Option<Ramp>,
}

impl Client {
    pub(crate) fn new(
        caller: Caller,
        spec: &ClientSpec,
        epoch: Instant,
        record: Arc<Mutex<Recorder>>,
        throttle: Option<ThrottleSettings>,
        seed: u64,
        keys: Option<KeyDraw>,
    ) -> Self {
        let throttle = throttle.map(|settings| {
            let state = Throttle::new(&settings, epoch.into_std());
            Arc::new(Mutex::new((state, Rng::seeded(seed))))
        });
        Client {
            caller,
            budget: spec.budget,
            epoch,
            record,
            throttle,
            keys: keys.map(|k| Arc::new(Mutex::new(k))),
            ramp: spec.ramp.clone(),
        }
    }

    /// Sends requests as `arrivals` (scaled by `load`) says until `end`,
    /// with `rng` drawing the gaps; returns once the last request is sent
    /// (open loop) or has ended (closed loop).
    pub(crate) async fn run(self, arrivals: Arrivals, load: f64, end: Duration, mut rng: Rng) {
        match arrivals {
            Arrivals::Poisson { rate } | Arrivals::Fixed { rate } => {
                let rate = rate * load;
                if rate <= 0.0 {
                    return;
                }
                let poisson = matches!(arrivals, Arrivals::Poisson { .. });
                let (mut at, mut k) = (0.0, 0u64);
                loop {
                    // Fixed: the k-th arrival at k / rate exactly, not a
                    // sum of gaps that drifts with rounding. With a ramp,
                    // each gap follows the rate where it starts.
                    k += 1;
                    let now = self.ramp.as_ref().map_or(rate, |r| rate * r.at(at));
                    at = match (poisson, &self.ramp) {
                        (true, _) => at - (1.0 - rng.unit()).ln() / now,
                        (false, None) => k as f64 / rate,
                        (false, Some(_)) => at + 1.0 / now,
                    };
                    if at >= end.as_secs_f64() {
                        break;
                    }
                    tokio::time::sleep_until(self.epoch + Duration::from_secs_f64(at)).await;
                    tokio::spawn(self.clone().request());
                }
            }
            Arrivals::Closed { concurrency } => {
                let callers = (f64::from(concurrency) * load).round() as usize;
                let loops: Vec<_> = (0..callers)
                    .map(|_| {
                        let client = self.clone();
                        tokio::spawn(async move {
                            while client.epoch.elapsed() < end {
                                let started = Instant::now();
                                client.clone().request().await;
                                // A call that ended at once (refused, or a
                                // backend down) must not spin without
                                // letting the clock move: wait a tick.
                                if started.elapsed().is_zero() {
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                }
                            }
                        })
                    })
                    .collect();
                for l in loops {
                    let _ = l.await;
                }
            }
        }
    }

    /// One request: the throttle's decision, then the call under the
    /// budget, recorded by arrival time.
    async fn request(self) {
        let arrived = self.epoch.elapsed();
        let ticket = Ticket::new(self.record.clone(), arrived);
        if let Some(throttle) = &self.throttle {
            let mut guard = throttle.lock();
            let (state, rng) = &mut *guard;
            let draw = rng.unit();
            if state.admit(Instant::now().into_std(), draw) == Decision::Reject {
                ticket.done(Duration::ZERO, false, Refusal::Throttle);
                return;
            }
        }
        let req = match &self.keys {
            Some(keys) => keys.lock().draw(),
            None => Call::default(),
        };
        let started = Instant::now();
        let call = self.caller.call(req);
        let answer = match self.budget {
            Some(budget) => tokio::time::timeout(budget, call)
                .await
                .unwrap_or(Answer::Failure),
            None => call.await,
        };
        let ok = answer == Answer::Success;
        if let Some(throttle) = &self.throttle {
            throttle.lock().0.record(Instant::now().into_std(), ok);
        }
        let refusal = match answer {
            Answer::Refused => Refusal::Limit,
            _ => Refusal::None,
        };
        ticket.done(started.elapsed(), ok, refusal);
    }
}

/// A request in progress: recorded as failed if it is dropped unfinished
/// (the run ended before it did).
struct Ticket {
    record: Arc<Mutex<Recorder>>,
    arrived: Duration,
    done: bool,
}

impl Ticket {
    fn new(record: Arc<Mutex<Recorder>>, arrived: Duration) -> Self {
        record.lock().start();
        Ticket {
            record,
            arrived,
            done: false,
        }
    }

    fn done(mut self, took: Duration, ok: bool, refusal: Refusal) {
        self.done = true;
        self.record.lock().finish(self.arrived, took, ok, refusal);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            self.record
                .lock()
                .finish(self.arrived, Duration::ZERO, false, Refusal::None);
        }
    }
}
