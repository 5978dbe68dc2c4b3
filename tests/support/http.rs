//! Real HTTP backends on 127.0.0.1 for tests and examples, and the few
//! helpers tests share to call them through a `towline::http` channel.
//!
//! A [`Backend`] is a hyper HTTP/1 server on an ephemeral port whose
//! behaviour can change at runtime: a delay, a failure ratio (from a seeded
//! generator) or a number of first requests to fail, the failure's status
//! and `Retry-After`, hanging until released, or being killed outright (its
//! listener and every connection closed). It reads each request body (unless
//! told not to), keeps the bodies and arrival times, and names itself in an
//! `x-backend` response header.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tower::{Service, ServiceExt};
use towline::http::{EndpointAddr, EndpointService};
use towline::rng::Rng;
use towline::{Channel, Endpoint, Error};

/// The `Retry-After` a failing backend sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// `Retry-After: <n>` (seconds).
    Seconds(u64),
    /// `Retry-After: <HTTP-date>`, this long after the answer.
    DateIn(Duration),
}

/// How a backend answers.
#[derive(Debug, Clone)]
pub struct Behavior {
    /// Time spent before answering.
    pub delay: Duration,
    /// Share of requests that fail (0.0 to 1.0).
    pub fail_ratio: f64,
    /// The first this-many requests fail, whatever the ratio.
    pub fail_first: u64,
    /// The status of a failure (default 500).
    pub fail_status: StatusCode,
    /// A `Retry-After` header on failures.
    pub retry_after: Option<RetryAfter>,
    /// Hold every request until [`Backend::release`] is called.
    pub hang: bool,
    /// Read the whole request body before answering (default true); when
    /// false the backend answers at once and never reads it.
    pub read_body: bool,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            delay: Duration::ZERO,
            fail_ratio: 0.0,
            fail_first: 0,
            fail_status: StatusCode::INTERNAL_SERVER_ERROR,
            retry_after: None,
            hang: false,
            read_body: true,
        }
    }
}

impl Behavior {
    /// Answers after `delay`.
    pub fn delay(delay: Duration) -> Self {
        Behavior {
            delay,
            ..Default::default()
        }
    }

    /// Every request fails with `status`.
    pub fn failing(status: StatusCode) -> Self {
        Behavior {
            fail_ratio: 1.0,
            fail_status: status,
            ..Default::default()
        }
    }
}

struct State {
    hits: AtomicU64,
    in_flight: AtomicU64,
    completed: AtomicU64,
    behavior: Mutex<Behavior>,
    rng: Mutex<Rng>,
    release: Notify,
    bodies: Mutex<Vec<Bytes>>,
    arrivals: Mutex<Vec<Instant>>,
    name: String,
}

/// A running HTTP backend.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Backend {
    /// Starts a backend with `behavior`; `seed` drives its failure draws.
    pub async fn start(behavior: Behavior, seed: u64) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            hits: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            behavior: Mutex::new(behavior),
            rng: Mutex::new(Rng::seeded(seed)),
            release: Notify::new(),
            bodies: Mutex::new(Vec::new()),
            arrivals: Mutex::new(Vec::new()),
            name: addr.to_string(),
        });
        let server_state = state.clone();
        let server = tokio::spawn(async move {
            // Connection tasks live in this set: aborting the server task
            // drops it and so closes every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = server_state.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Backend {
            addr,
            state,
            server: Mutex::new(Some(server)),
        }
    }

    /// Requests received so far.
    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Requests being handled now.
    pub fn in_flight(&self) -> u64 {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    /// Requests answered so far.
    pub fn completed(&self) -> u64 {
        self.state.completed.load(Ordering::SeqCst)
    }

    /// The bodies of the requests it read, in arrival order.
    pub fn bodies(&self) -> Vec<Bytes> {
        self.state.bodies.lock().clone()
    }

    /// When each request arrived.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.state.arrivals.lock().clone()
    }

    /// Changes how the backend answers from now on.
    pub fn set_behavior(&self, behavior: Behavior) {
        *self.state.behavior.lock() = behavior;
    }

    /// Lets every hanging request go on.
    pub fn release(&self) {
        self.state.behavior.lock().hang = false;
        self.state.release.notify_waiters();
    }

    /// Stops the server: the listener and all connections close.
    pub fn kill(&self) {
        if let Some(server) = self.server.lock().take() {
            server.abort();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    state.arrivals.lock().push(Instant::now());
    let hit = state.hits.fetch_add(1, Ordering::SeqCst);
    state.in_flight.fetch_add(1, Ordering::SeqCst);
    let behavior = state.behavior.lock().clone();
    if behavior.read_body {
        // A body cut short (the client gave up on it) is kept as far as
        // it came, so tests can tell.
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::from_static(b"<body cut short>"),
        };
        state.bodies.lock().push(body);
    }
    if behavior.hang {
        let released = state.release.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        if state.behavior.lock().hang {
            released.await;
        }
    }
    if !behavior.delay.is_zero() {
        tokio::time::sleep(behavior.delay).await;
    }
    let fail = hit < behavior.fail_first
        || (behavior.fail_ratio > 0.0 && state.rng.lock().unit() < behavior.fail_ratio);
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    state.completed.fetch_add(1, Ordering::SeqCst);
    let mut response = Response::builder().header("x-backend", &state.name);
    let body = if fail {
        response = response.status(behavior.fail_status);
        match behavior.retry_after {
            Some(RetryAfter::Seconds(n)) => response = response.header("retry-after", n),
            Some(RetryAfter::DateIn(d)) => {
                let date = httpdate::fmt_http_date(SystemTime::now() + d);
                response = response.header("retry-after", date);
            }
            None => {}
        }
        "fail"
    } else {
        "ok"
    };
    Ok(response
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap())
}

/// Starts `n` backends with the same behaviour (seeds 1..=n).
pub async fn start_many(n: usize, behavior: Behavior) -> Vec<Backend> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(Backend::start(behavior.clone(), i as u64 + 1).await);
    }
    out
}

/// The hyper client every test channel sends through (one pool for all
/// endpoints).
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A towline channel of `http::Request`s over [`HttpClient`].
pub type HttpChannel = Channel<Request<Full<Bytes>>, Response<Incoming>>;

/// The connector for `Channel::builder`: `towline::http` over a hyper client.
pub fn connector() -> impl Fn(&Endpoint) -> EndpointService<HttpClient> + Send + Sync + 'static {
    towline::http::connect(Client::builder(TokioExecutor::new()).build_http())
}

/// An HTTP answer, with the endpoint that gave it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The response body.
    pub body: Bytes,
    /// The endpoint that answered (from the response's extensions).
    pub from: SocketAddr,
}

/// Sends `GET /` through `channel` and reads the whole answer.
pub async fn get<S>(channel: &mut S) -> Result<Reply, Error>
where
    S: Service<Request<Full<Bytes>>, Response = Response<Incoming>, Error = Error>,
{
    let request = Request::get("/").body(Full::new(Bytes::new())).unwrap();
    let response = channel.ready().await?.call(request).await?;
    let status = response.status().as_u16();
    let from = response
        .extensions()
        .get::<EndpointAddr>()
        .expect("towline::http puts the endpoint in the extensions")
        .0;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(Error::inner)?
        .to_bytes();
    Ok(Reply { status, body, from })
}

/// Polls `cond` every millisecond until it holds or `limit` passes; returns
/// whether it held.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A 2-worker multi-thread runtime whose worker threads' random generators
/// (balancer picks, jitter) are seeded from `seed`, one seed per thread.
/// Which task runs on which worker is still the scheduler's choice; the
/// tests' assertions do not depend on it.
pub fn seeded_runtime(seed: u64) -> tokio::runtime::Runtime {
    let next = std::sync::atomic::AtomicU64::new(seed);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            towline::rng::seed_thread_rng(next.fetch_add(1, Ordering::Relaxed))
        })
        .build()
        .expect("tokio runtime")
}
