//! A DNS relay for tests: it listens on a UDP port of 127.0.0.1, passes each
//! query on to an upstream server (dnsmasq) and the answer back, and can
//! drop every query of one type (as resolvers behind some middleboxes drop
//! AAAA queries), switchable while traffic runs. It notes the type of every
//! query it sees. UDP only: a client that tries TCP on its port is refused.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// The query type of an A query.
pub const A: u16 = 1;
/// The query type of an AAAA query.
pub const AAAA: u16 = 28;

/// A running relay; stops when dropped.
pub struct DnsRelay {
    addr: SocketAddr,
    /// The query type dropped; 0 for none.
    dropped: Arc<AtomicU16>,
    seen: Arc<Mutex<Vec<u16>>>,
    task: JoinHandle<()>,
}

impl DnsRelay {
    /// Starts a relay to `upstream` that drops nothing yet.
    pub async fn start(upstream: SocketAddr) -> DnsRelay {
        let socket = Arc::new(
            UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind the relay's UDP socket"),
        );
        let addr = socket.local_addr().unwrap();
        let dropped = Arc::new(AtomicU16::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(relay(socket, upstream, dropped.clone(), seen.clone()));
        DnsRelay {
            addr,
            dropped,
            seen,
            task,
        }
    }

    /// Where clients send their queries.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every query of type `qtype` from now on (`None`: none).
    pub fn drop_queries(&self, qtype: Option<u16>) {
        self.dropped.store(qtype.unwrap_or(0), Ordering::SeqCst);
    }

    /// The types of the queries seen so far, dropped ones included.
    pub fn seen(&self) -> Vec<u16> {
        self.seen.lock().clone()
    }
}

impl Drop for DnsRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    socket: Arc<UdpSocket>,
    upstream: SocketAddr,
    dropped: Arc<AtomicU16>,
    seen: Arc<Mutex<Vec<u16>>>,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, client)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let query = buf[..n].to_vec();
        let Some(qtype) = query_type(&query) else {
            continue;
        };
        seen.lock().push(qtype);
        if dropped.load(Ordering::SeqCst) == qtype {
            continue;
        }
        let socket = socket.clone();
        tokio::spawn(async move {
            let out = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            if out.send_to(&query, upstream).await.is_err() {
                return;
            }
            let mut answer = vec![0u8; 4096];
            // An upstream that does not answer: the client times out.
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(5), out.recv(&mut answer)).await
            {
                let _ = socket.send_to(&answer[..n], client).await;
            }
        });
    }
}

/// The type of the first question of a DNS query: after the 12-byte header
/// and the question's name (labels, no compression in a query).
fn query_type(msg: &[u8]) -> Option<u16> {
    let mut at = 12;
    loop {
        let len = usize::from(*msg.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        at += len;
    }
    Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]))
}
