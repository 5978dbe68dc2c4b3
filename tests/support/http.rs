//! Real HTTP backends on 127.0.0.1 for tests and examples, and a per-endpoint
//! client service for a towline channel.
//!
//! A [`Backend`] is a hyper HTTP/1 server on an ephemeral port whose
//! behaviour can change at runtime: a delay, a failure ratio (HTTP 500, from a
//! seeded generator), hanging until released, or being killed outright (its
//! listener and every connection closed).
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

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
use towline::BoxError;
use towline::rng::Rng;

/// How a backend answers.
#[derive(Debug, Clone, Default)]
pub struct Behavior {
    /// Time spent before answering.
    pub delay: Duration,
    /// Share of requests answered with HTTP 500 (0.0 to 1.0).
    pub fail_ratio: f64,
    /// Hold every request until [`Backend::release`] is called.
    pub hang: bool,
}

impl Behavior {
    /// Answers after `delay`.
    pub fn delay(delay: Duration) -> Self {
        Behavior {
            delay,
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
    _req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    state.in_flight.fetch_add(1, Ordering::SeqCst);
    let behavior = state.behavior.lock().clone();
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
    let fail = behavior.fail_ratio > 0.0 && state.rng.lock().unit() < behavior.fail_ratio;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    state.completed.fetch_add(1, Ordering::SeqCst);
    let (status, body) = if fail {
        (StatusCode::INTERNAL_SERVER_ERROR, "fail")
    } else {
        (StatusCode::OK, "ok")
    };
    Ok(Response::builder()
        .status(status)
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

/// An HTTP answer, with the endpoint that gave it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The response body.
    pub body: Bytes,
    /// The endpoint that answered.
    pub from: SocketAddr,
}

/// The per-endpoint client service: sends `GET <path>` to one endpoint. All
/// endpoints share one hyper connection pool.
#[derive(Clone)]
pub struct HttpEndpoint {
    client: Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
}

impl tower::Service<String> for HttpEndpoint {
    type Response = Reply;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, path: String) -> Self::Future {
        let client = self.client.clone();
        let addr = self.addr;
        Box::pin(async move {
            let uri: hyper::Uri = format!("http://{addr}{path}").parse()?;
            let req = Request::get(uri).body(Full::new(Bytes::new()))?;
            let resp = client.request(req).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok(Reply {
                status,
                body,
                from: addr,
            })
        })
    }
}

/// A connector for `Channel::builder`: one [`HttpEndpoint`] per endpoint.
pub fn connector() -> impl Fn(&towline::Endpoint) -> HttpEndpoint + Send + Sync + 'static {
    let client = Client::builder(TokioExecutor::new()).build_http();
    move |ep| HttpEndpoint {
        client: client.clone(),
        addr: ep.addr,
    }
}

/// Classifies HTTP 5xx as a retryable failure.
pub fn classify(result: &Result<Reply, BoxError>) -> towline::classify::Outcome {
    use towline::classify::Outcome;
    match result {
        Ok(r) if r.status >= 500 => Outcome::Failure { retryable: true },
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure { retryable: true },
    }
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
