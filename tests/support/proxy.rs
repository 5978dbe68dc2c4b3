//! A fault-injecting TCP proxy for tests: it listens on 127.0.0.1 and relays
//! each connection to an upstream address, with a [`Fault`] that can be
//! switched while traffic runs.
//!
//! - [`Fault::Latency`]: every chunk from upstream waits this long first.
//! - [`Fault::BlackHole`]: connections are accepted and never answered; what
//!   either side sends is read and dropped. A connection caught by a black
//!   hole stays one until the client closes it, even after the fault ends.
//! - [`Fault::Reset`]: new connections are reset at once (RST), and a
//!   connection already open is reset in the middle of the next response
//!   chunk (half of it is sent first).
//! - [`Fault::Bandwidth`]: upstream chunks are sent on at most this many
//!   bytes per second per connection.
//! - [`Fault::HalfClose`]: once a request is relayed, the proxy closes its
//!   sending side toward the client when the response arrives (the client
//!   reads end-of-stream where the response should be) and drops the
//!   response, while still relaying what the client sends.
//!
//! An upstream that refuses the connection gets the client reset, as a
//! direct connection would be refused. Either side's end-of-stream ends the
//! connection (HTTP/1 clients and servers never half-close on purpose).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy does to the traffic it relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Relay faithfully.
    None,
    /// Delay every upstream chunk by this much.
    Latency(Duration),
    /// Accept, never answer.
    BlackHole,
    /// Reset on connect, and mid-response on open connections.
    Reset,
    /// At most this many bytes per second per connection, upstream to client.
    Bandwidth(u32),
    /// Close the client's receiving direction after relaying a request.
    HalfClose,
}

impl Fault {
    fn encode(self) -> u64 {
        match self {
            Fault::None => 0,
            Fault::Latency(d) => 1 | (d.as_micros() as u64) << 8,
            Fault::BlackHole => 2,
            Fault::Reset => 3,
            Fault::Bandwidth(b) => 4 | u64::from(b) << 8,
            Fault::HalfClose => 5,
        }
    }

    fn decode(bits: u64) -> Fault {
        match bits & 0xff {
            1 => Fault::Latency(Duration::from_micros(bits >> 8)),
            2 => Fault::BlackHole,
            3 => Fault::Reset,
            4 => Fault::Bandwidth((bits >> 8) as u32),
            5 => Fault::HalfClose,
            _ => Fault::None,
        }
    }
}

struct State {
    upstream: Mutex<SocketAddr>,
    fault: AtomicU64,
    open: AtomicUsize,
    accepted: AtomicU64,
}

impl State {
    fn fault(&self) -> Fault {
        Fault::decode(self.fault.load(Ordering::Relaxed))
    }
}

/// A running proxy; stops accepting on drop (open connections end when
/// their peers close).
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `upstream` on the current tokio runtime.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(State {
            upstream: Mutex::new(upstream),
            fault: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
        });
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                state.open.fetch_add(1, Ordering::SeqCst);
                let n = state.accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    connection(client, &state, n).await;
                    state.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Proxy {
            addr,
            state,
            accept,
        }
    }

    /// Switches the fault, for open connections too.
    pub fn set_fault(&self, fault: Fault) {
        self.state.fault.store(fault.encode(), Ordering::Relaxed);
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        self.state.fault()
    }

    /// Relays new connections to `upstream` from now on.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.state.upstream.lock() = upstream;
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// How one direction of a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// End-of-stream or an error: close normally.
    Closed,
    /// Reset both sides.
    Reset,
}

async fn connection(mut client: TcpStream, state: &State, n: u64) {
    let fault = state.fault();
    // Every other connection of a reset storm is reset on connect; the rest
    // get through and are reset mid-response.
    if fault == Fault::Reset && n.is_multiple_of(2) {
        return reset(&client);
    }
    let upstream = *state.upstream.lock();
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return reset(&client);
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mode = AtomicU8::new(if fault == Fault::BlackHole {
        HOLED
    } else {
        NORMAL
    });
    let end = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let up = requests(client_read, server_write, state, &mode);
        let down = responses(server_read, client_write, state, &mode);
        tokio::select! {
            end = up => end,
            end = down => end,
        }
    };
    if end == End::Reset {
        reset(&client);
        reset(&server);
    }
}

fn reset(stream: &TcpStream) {
    // Closing with a zero linger time sends RST instead of FIN.
    let _ = stream.set_zero_linger();
}

/// What has happened to one connection (once set, it stays).
const NORMAL: u8 = 0;
const HOLED: u8 = 1;
const HALF_CLOSED: u8 = 2;

/// Client to upstream.
async fn requests(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    state: &State,
    mode: &AtomicU8,
) -> End {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return End::Closed,
            Ok(n) => n,
        };
        if mode.load(Ordering::Relaxed) == HOLED {
            continue;
        }
        match state.fault() {
            Fault::BlackHole => {
                mode.store(HOLED, Ordering::Relaxed);
                continue;
            }
            Fault::HalfClose => mode.store(HALF_CLOSED, Ordering::Relaxed),
            _ => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return End::Closed;
        }
    }
}

/// Upstream to client.
async fn responses(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    state: &State,
    mode: &AtomicU8,
) -> End {
    let mut buf = vec![0u8; 16 * 1024];
    let mut shut = false;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return End::Closed,
            Ok(n) => n,
        };
        match mode.load(Ordering::Relaxed) {
            HOLED => continue,
            HALF_CLOSED => {
                // The client reads end-of-stream where the response should
                // be; what it sends still goes up.
                if !shut {
                    let _ = to.shutdown().await;
                    shut = true;
                }
                continue;
            }
            _ => {}
        }
        let chunk = &buf[..n];
        let sent = match state.fault() {
            Fault::BlackHole => {
                mode.store(HOLED, Ordering::Relaxed);
                continue;
            }
            Fault::Reset => {
                let _ = to.write_all(&chunk[..n.div_ceil(2)]).await;
                return End::Reset;
            }
            Fault::Latency(d) => {
                tokio::time::sleep(d).await;
                to.write_all(chunk).await
            }
            Fault::Bandwidth(rate) => throttled(&mut to, chunk, rate).await,
            Fault::None | Fault::HalfClose => to.write_all(chunk).await,
        };
        if sent.is_err() {
            return End::Closed;
        }
    }
}

/// Writes `chunk` at `rate` bytes per second, in 10 ms slices.
async fn throttled(to: &mut WriteHalf<'_>, chunk: &[u8], rate: u32) -> std::io::Result<()> {
    let slice = (rate as usize / 100).max(1);
    for part in chunk.chunks(slice) {
        to.write_all(part).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
