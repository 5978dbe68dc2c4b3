//! Real tonic gRPC servers on 127.0.0.1 for tests and examples, with
//! hand-written prost messages (no build script, no protoc).
//!
//! The service is one unary method, `Greeter/SayHello`. A server can answer
//! `UNAVAILABLE` to every other call; it counts its calls and keeps the
//! `grpc-timeout` each request carried.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::uri::PathAndQuery;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;
use tonic_prost::ProstCodec;

/// The request message (`message HelloRequest { string name = 1; }`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    /// Who to greet.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// The reply message (`message HelloReply { string message = 1; string
/// server = 2; }`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    /// The greeting.
    #[prost(string, tag = "1")]
    pub message: String,
    /// The address of the server that answered.
    #[prost(string, tag = "2")]
    pub server: String,
}

/// The method's path.
pub const SAY_HELLO: &str = "/towline.example.Greeter/SayHello";

/// The path as a tonic client wants it.
pub fn say_hello() -> PathAndQuery {
    PathAndQuery::from_static(SAY_HELLO)
}

/// The codec of the method's messages.
pub fn codec() -> ProstCodec<HelloRequest, HelloReply> {
    ProstCodec::default()
}

#[derive(Default)]
struct Stats {
    calls: AtomicU64,
    unavailable: AtomicU64,
    timeouts: Mutex<Vec<Option<Duration>>>,
}

/// A running tonic server.
pub struct GrpcServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stats: Arc<Stats>,
    stop: Option<oneshot::Sender<()>>,
}

impl GrpcServer {
    /// Starts a server; with `flaky` it answers `UNAVAILABLE` to every other
    /// call (the first, the third, …).
    pub async fn start(flaky: bool) -> GrpcServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let served = stats.clone();
        let service = tower::service_fn(move |req: http::Request<tonic::body::Body>| {
            let stats = served.clone();
            async move {
                let timeout = req
                    .headers()
                    .get("grpc-timeout")
                    .and_then(towline::http::grpc::parse_grpc_timeout);
                stats.timeouts.lock().push(timeout);
                let n = stats.calls.fetch_add(1, Ordering::SeqCst);
                let handler = tower::service_fn(move |req: tonic::Request<HelloRequest>| {
                    let stats = stats.clone();
                    async move {
                        if flaky && n % 2 == 0 {
                            stats.unavailable.fetch_add(1, Ordering::SeqCst);
                            return Err(tonic::Status::unavailable("every other call fails"));
                        }
                        Ok(tonic::Response::new(HelloReply {
                            message: format!("hello {}", req.into_inner().name),
                            server: addr.to_string(),
                        }))
                    }
                });
                let mut grpc =
                    tonic::server::Grpc::new(ProstCodec::<HelloReply, HelloRequest>::default());
                Ok::<_, Infallible>(grpc.unary(handler, req).await)
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(
                    service,
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
        });
        GrpcServer {
            addr,
            stats,
            stop: Some(stop),
        }
    }

    /// Calls received so far.
    pub fn calls(&self) -> u64 {
        self.stats.calls.load(Ordering::SeqCst)
    }

    /// Calls answered `UNAVAILABLE` so far.
    pub fn unavailable(&self) -> u64 {
        self.stats.unavailable.load(Ordering::SeqCst)
    }

    /// The `grpc-timeout` of each call received, in order.
    pub fn timeouts(&self) -> Vec<Option<Duration>> {
        self.stats.timeouts.lock().clone()
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
