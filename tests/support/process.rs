//! HTTP backends as separate OS processes, so that a test can crash one
//! (SIGKILL), freeze it (SIGSTOP, then SIGCONT) or restart it.
//!
//! The backend is the test binary itself, re-executed with
//! [`BACKEND_ENV`] set: its `main` calls [`serve_if_backend`] first, which
//! serves HTTP/1 on 127.0.0.1 and never returns. The parent side is
//! [`BackendProcess`].
//!
//! A backend answers `GET /c/{id}/{r}` with 200 and a body of the configured
//! size after the configured delay. Before answering, it appends the line
//! `{id} {r}\n` to its delivery log with one `write(2)`, so a record
//! survives a SIGKILL that comes right after; the parent reads the logs when
//! the run is over ([`read_deliveries`]) to count how often each logical
//! call reached a backend. The backend exits when its stdin closes, so none
//! outlives the test process.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// Set (to the backend's settings) in the environment of a backend process.
pub const BACKEND_ENV: &str = "TOWLINE_CHAOS_BACKEND";

/// How a backend process serves.
#[derive(Debug, Clone, Copy)]
pub struct BackendConfig {
    /// The port to listen on (0: any free port).
    pub port: u16,
    /// Time spent before answering each request.
    pub delay: Duration,
    /// Size of each response body in bytes.
    pub body: usize,
}

/// A running backend process; killed (SIGKILL) and reaped on drop.
pub struct BackendProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its delivery log.
    pub log: PathBuf,
}

impl BackendProcess {
    /// Starts the current executable as a backend and waits until it
    /// listens (it gives up binding its port after 5 s). `log` is created
    /// (or appended to).
    pub fn spawn(config: BackendConfig, log: &Path) -> BackendProcess {
        let exe = std::env::current_exe().expect("path of the test executable");
        let settings = format!(
            "{};{};{};{}",
            config.port,
            config.delay.as_micros(),
            config.body,
            log.display()
        );
        let mut child = Command::new(exe)
            .env(BACKEND_ENV, settings)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a backend process");
        // The first stdout line is `listening PORT`; then stdout is unused.
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let port = match (read, line.strip_prefix("listening ")) {
            (Ok(_), Some(port)) => port.trim().parse::<u16>().expect("port number"),
            _ => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "backend process did not start (port {}): {status:?}",
                    config.port
                );
            }
        };
        BackendProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log: log.to_path_buf(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and waits until the process is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: the process freezes; the kernel still accepts connections
    /// into its backlog and buffers what they send.
    pub fn stop(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT: a frozen process goes on.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("a pid fits pid_t");
        // SAFETY: kill(2) takes plain integers; the pid is our own child,
        // not yet reaped (reaping happens only in `kill`, which takes `&mut`).
        let status = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            status,
            0,
            "signal {signal} to {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the delivery logs say about one logical call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    /// How many times a backend received it.
    pub times: u32,
    /// Whether the call was replayable (retries and hedges allowed).
    pub replayable: bool,
}

/// Reads delivery logs: call id → how often it was received.
pub fn read_deliveries(logs: &[PathBuf]) -> HashMap<u64, Delivered> {
    let mut out: HashMap<u64, Delivered> = HashMap::new();
    for path in logs {
        let mut text = String::new();
        if let Ok(mut f) = File::open(path) {
            f.read_to_string(&mut text).expect("read a delivery log");
        }
        for line in text.lines() {
            let mut parts = line.split(' ');
            let (Some(id), Some(r)) = (parts.next(), parts.next()) else {
                panic!("malformed delivery line {line:?} in {}", path.display());
            };
            let entry = out.entry(id.parse().expect("call id")).or_default();
            entry.times += 1;
            entry.replayable = r == "1";
        }
    }
    out
}

/// When this process was started as a backend: serves and never returns.
/// Otherwise returns at once.
pub fn serve_if_backend() {
    let Ok(settings) = std::env::var(BACKEND_ENV) else {
        return;
    };
    let mut parts = settings.splitn(4, ';');
    let mut next = || {
        parts
            .next()
            .expect("backend settings: port;delay_us;body;log")
    };
    let port: u16 = next().parse().expect("port");
    let delay = Duration::from_micros(next().parse().expect("delay"));
    let body: usize = next().parse().expect("body size");
    let log = PathBuf::from(next());
    // Exit when the parent goes away (its end of our stdin closes).
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("backend runtime");
    runtime.block_on(serve(port, delay, body, &log));
    std::process::exit(0);
}

async fn serve(port: u16, delay: Duration, body: usize, log: &Path) {
    let listener = bind(port).await;
    let port = listener.local_addr().expect("local addr").port();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the delivery log");
    let state = Arc::new((log, delay, Bytes::from(vec![b'x'; body])));
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {port}").expect("announce the port");
        out.flush().expect("flush stdout");
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds 127.0.0.1:`port`, retrying for a while when a restart finds the
/// port still taken.
async fn bind(port: u16) -> tokio::net::TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                eprintln!("backend: bind {port}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("backend: bind 127.0.0.1:{port}: {e}"),
        }
    }
}

async fn answer(
    state: Arc<(File, Duration, Bytes)>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (log, delay, body) = &*state;
    // `/c/{id}/{r}`: record the delivery before anything else.
    if let Some(rest) = req.uri().path().strip_prefix("/c/") {
        let line = format!("{}\n", rest.replace('/', " "));
        (&*log)
            .write_all(line.as_bytes())
            .expect("write a delivery");
    }
    if !delay.is_zero() {
        tokio::time::sleep(*delay).await;
    }
    Ok(Response::new(Full::new(body.clone())))
}
