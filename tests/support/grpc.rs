//! Real tonic gRPC servers on 127.0.0.1 for tests and examples, with
//! hand-written prost messages (no build script, no protoc).
//!
//! The service has a unary method, `Greeter/SayHello`, and a
//! server-streaming one, `Greeter/SayHellos` (three replies, then the
//! status in the trailers). How a server misbehaves is its [`Behaviour`];
//! it counts its calls and keeps, for each, when it arrived and the
//! `grpc-timeout` it carried.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

/// The unary method's path.
pub const SAY_HELLO: &str = "/towline.example.Greeter/SayHello";
/// The server-streaming method's path.
pub const SAY_HELLOS: &str = "/towline.example.Greeter/SayHellos";
/// Replies a `SayHellos` call streams before its status.
pub const STREAMED_REPLIES: usize = 3;

/// The unary method's path as a tonic client wants it.
pub fn say_hello() -> PathAndQuery {
    PathAndQuery::from_static(SAY_HELLO)
}

/// The streaming method's path as a tonic client wants it.
pub fn say_hellos() -> PathAndQuery {
    PathAndQuery::from_static(SAY_HELLOS)
}

/// The codec of the methods' messages.
pub fn codec() -> ProstCodec<HelloRequest, HelloReply> {
    ProstCodec::default()
}

/// How a server answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Behaviour {
    /// `SayHello` answers `UNAVAILABLE` to every other call (the first,
    /// the third, …).
    pub flaky: bool,
    /// `SayHello` always answers `UNAVAILABLE`.
    pub down: bool,
    /// The server's first call, when it is a `SayHello`, waits this long,
    /// then answers `UNAVAILABLE`.
    pub slow_first_failure: Option<Duration>,
    /// `SayHellos` ends with this status in its trailers instead of `OK`.
    pub stream_status: Option<tonic::Code>,
}

/// One call a server received.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// Its `grpc-timeout`, read as a server reads it.
    pub timeout: Option<Duration>,
}

#[derive(Default)]
struct Stats {
    calls: AtomicU64,
    unavailable: AtomicU64,
    received: Mutex<Vec<Received>>,
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
        Self::start_with(Behaviour {
            flaky,
            ..Behaviour::default()
        })
        .await
    }

    /// Starts a server that behaves as `behaviour` says.
    pub async fn start_with(behaviour: Behaviour) -> GrpcServer {
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
                stats.received.lock().push(Received {
                    at: Instant::now(),
                    timeout,
                });
                let n = stats.calls.fetch_add(1, Ordering::SeqCst);
                let mut grpc =
                    tonic::server::Grpc::new(ProstCodec::<HelloReply, HelloRequest>::default());
                if req.uri().path() == SAY_HELLOS {
                    let method = streaming(addr, behaviour.stream_status);
                    return Ok::<_, Infallible>(grpc.server_streaming(method, req).await);
                }
                let fail = match behaviour.slow_first_failure {
                    Some(wait) if n == 0 => {
                        tokio::time::sleep(wait).await;
                        true
                    }
                    _ => behaviour.down || (behaviour.flaky && n % 2 == 0),
                };
                if fail {
                    stats.unavailable.fetch_add(1, Ordering::SeqCst);
                }
                let response = grpc.unary(unary(addr, fail), req).await;
                Ok::<_, Infallible>(response)
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

    /// Every call received, in order.
    pub fn received(&self) -> Vec<Received> {
        self.stats.received.lock().clone()
    }
}

/// `SayHello`: a greeting, or `UNAVAILABLE` (Trailers-Only, as tonic
/// answers every unary error).
fn unary(
    addr: SocketAddr,
    fail: bool,
) -> impl tonic::server::UnaryService<
    HelloRequest,
    Response = HelloReply,
    Future = impl Future<Output = Result<tonic::Response<HelloReply>, tonic::Status>> + Send,
> {
    tower::service_fn(move |req: tonic::Request<HelloRequest>| async move {
        if fail {
            return Err(tonic::Status::unavailable("this call fails"));
        }
        Ok(tonic::Response::new(HelloReply {
            message: format!("hello {}", req.into_inner().name),
            server: addr.to_string(),
        }))
    })
}

type Replies = futures_util::stream::Iter<std::vec::IntoIter<Result<HelloReply, tonic::Status>>>;

/// `SayHellos`: [`STREAMED_REPLIES`] greetings, then `status` (or `OK`) in
/// the trailers.
fn streaming(
    addr: SocketAddr,
    status: Option<tonic::Code>,
) -> impl tonic::server::ServerStreamingService<
    HelloRequest,
    Response = HelloReply,
    ResponseStream = Replies,
    Future = impl Future<Output = Result<tonic::Response<Replies>, tonic::Status>> + Send,
> {
    tower::service_fn(move |req: tonic::Request<HelloRequest>| async move {
        let name = req.into_inner().name;
        let mut replies: Vec<Result<HelloReply, tonic::Status>> = (0..STREAMED_REPLIES)
            .map(|i| {
                Ok(HelloReply {
                    message: format!("hello {name} #{i}"),
                    server: addr.to_string(),
                })
            })
            .collect();
        if let Some(code) = status {
            replies.push(Err(tonic::Status::new(code, "the stream ends badly")));
        }
        Ok(tonic::Response::new(futures_util::stream::iter(replies)))
    })
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
