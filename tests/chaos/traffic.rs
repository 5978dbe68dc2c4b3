//! The channel under test and the traffic through it.
//!
//! The channel has the full default policy stack: an attempt timeout, a
//! call deadline, retries ([`RetrySettings::default`]: 3 attempts, budget
//! 20% + 10/s), hedging ([`HedgeSettings::default`]: one hedge at the p95,
//! budget 10%), a circuit breaker per endpoint ([`BreakerSettings::default`])
//! and the default P2C peak-EWMA balancer, over DNS SRV discovery.
//!
//! Calls are `GET /c/{id}/{r}` with a unique `id` per logical call. One task
//! in [`NOT_REPLAYABLE_EVERY`] sends requests the replay function refuses
//! (`r` = 0): those must never reach a backend twice, whatever happens.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use tokio::task::JoinSet;
use tower::{Service, ServiceExt};
use towline::discover::{Dns, RefreshHint};
use towline::http::{EndpointService, StatusClassify};
use towline::policy::breaker::BreakerSettings;
use towline::policy::hedge::HedgeSettings;
use towline::policy::retry::RetrySettings;
use towline::{BoxError, Channel, Endpoint};

use crate::cluster::SRV_NAME;
use crate::http::{self, HttpClient};
use crate::measure::{Record, SLOTS, error_kind};

/// Concurrent tasks, each calling in a loop.
pub const TASKS: usize = 64;
/// One task in this many sends requests that cannot be replayed.
pub const NOT_REPLAYABLE_EVERY: usize = 8;
/// The call deadline: shorter than three attempt timeouts, so that a call
/// meeting a stall on every attempt is cut by the deadline, not by its
/// retries running out.
pub const DEADLINE: Duration = Duration::from_millis(600);
/// The per-attempt timeout.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(250);
/// How late past its deadline a call may return (scheduling).
pub const MARGIN: Duration = Duration::from_millis(50);

/// The per-endpoint service: `towline::http` over the HTTP client,
/// counting each attempt it starts in the run's record. It reads the whole
/// response body within the attempt, so the attempt timeout and the call
/// deadline cover a backend that stalls mid-body.
#[derive(Clone)]
pub struct Counted {
    inner: EndpointService<HttpClient>,
    slot: usize,
    record: Arc<Record>,
}

/// A request of the traffic: `GET /c/{id}/{r}`, no body.
pub type Req = Request<Full<Bytes>>;

impl Service<Req> for Counted {
    type Response = Response<Bytes>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Bytes>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        self.record.attempt(self.slot);
        let response = self.inner.call(request);
        Box::pin(async move {
            let (head, body) = response.await?.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok(Response::from_parts(head, body))
        })
    }
}

/// The channel type under test.
pub type Chan = Channel<Req, Response<Bytes>>;

/// Builds the channel: DNS discovery from `dns`, slot addresses to count
/// attempts by, generators seeded from `seed`.
pub fn channel(
    dns: std::net::SocketAddr,
    slots: [std::net::SocketAddr; SLOTS],
    record: Arc<Record>,
    seed: u64,
) -> Chan {
    let hint = RefreshHint::new();
    let source = Dns::srv(format!("{SRV_NAME}."))
        .name_servers([dns])
        .timeout(Duration::from_millis(500))
        .attempts(1)
        .backoff(Duration::from_millis(200), Duration::from_secs(1))
        .refresh_hint(hint.clone())
        .jitter_seed(seed)
        .build()
        .expect("DNS settings");
    let connect = http::connector();
    let counted = move |ep: &Endpoint| Counted {
        inner: connect(ep),
        slot: slots
            .iter()
            .position(|a| *a == ep.addr)
            .unwrap_or_else(|| panic!("discovered {} that no slot has", ep.addr)),
        record: record.clone(),
    };
    Channel::builder(counted)
        .discover(source)
        .refresh_hint(hint)
        .name("chaos")
        .classifier(StatusClassify::new())
        .timeout(ATTEMPT_TIMEOUT)
        .deadline(DEADLINE)
        .retry(RetrySettings::default())
        .hedge(HedgeSettings::default())
        .circuit_breaker(BreakerSettings::default())
        .replay(|request: &Req| {
            request
                .uri()
                .path()
                .ends_with("/1")
                .then(|| request.clone())
        })
        .build()
        .expect("channel settings")
}

/// Call ids, unique in the process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Traffic running on the current runtime.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: JoinSet<()>,
}

impl Load {
    /// Starts [`TASKS`] tasks, each with its own clone of `channel`.
    pub fn start(channel: &Chan, record: &Arc<Record>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        for i in 0..TASKS {
            let mut channel = channel.clone();
            let record = record.clone();
            let stop = stop.clone();
            let replayable = i % NOT_REPLAYABLE_EVERY != NOT_REPLAYABLE_EVERY - 1;
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                    let path = format!("/c/{id}/{}", u8::from(replayable));
                    let request = Request::get(path)
                        .body(Full::default())
                        .expect("a valid path");
                    let start = Instant::now();
                    let result = match channel.ready().await {
                        Ok(ready) => ready.call(request).await,
                        Err(e) => Err(e),
                    };
                    let took = start.elapsed();
                    let error = match &result {
                        Ok(reply) if reply.status() == 200 => None,
                        Ok(_) => Some(crate::measure::HTTP_STATUS),
                        Err(e) => Some(error_kind(e)),
                    };
                    record.call(replayable, error, took, DEADLINE, MARGIN);
                }
            });
        }
        Load { stop, tasks }
    }

    /// Stops the tasks after their current call and waits for them.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        while let Some(done) = self.tasks.join_next().await {
            done.expect("a traffic task panicked");
        }
    }
}
