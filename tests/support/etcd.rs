//! Real etcd servers for tests and examples: one member or a cluster, on free
//! loopback ports, each with its own temporary data directory.
//!
//! Members are `etcd` processes (Debian package `etcd-server`); a missing
//! binary is a test failure that names the package. Members can be killed
//! (SIGKILL, like a crash) and started again on the same ports and data.
#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

/// How long a member may take to answer after it starts.
const START_LIMIT: Duration = Duration::from_secs(20);

/// One etcd member.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running etcd: one member, or a cluster of several.
pub struct EtcdProcs {
    root: PathBuf,
    members: Vec<Member>,
    initial_cluster: String,
    tls: Option<TlsFiles>,
}

/// A test CA and a server certificate for 127.0.0.1 that it signed.
pub struct TlsFiles {
    /// The CA certificate, PEM: what clients trust.
    pub ca_pem: String,
    cert: PathBuf,
    key: PathBuf,
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    // Ports are taken below the kernel's ephemeral range (32768 and up): an
    // ephemeral port can be grabbed by any outgoing connection of a parallel
    // test between this probe and etcd's bind, or while a killed member is
    // down before it restarts on the same port.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let port = (LOW + (start + NEXT.fetch_add(1, Ordering::SeqCst)) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 127.0.0.1:{LOW}..{}", LOW + SPAN)
}

fn temp_root() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "towline-etcd-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

impl EtcdProcs {
    /// Starts a single-member etcd and waits until it answers.
    pub async fn single() -> EtcdProcs {
        EtcdProcs::cluster(1).await
    }

    /// Starts an `n`-member cluster and waits until every member answers.
    pub async fn cluster(n: usize) -> EtcdProcs {
        EtcdProcs::start(n, temp_root(), None).await
    }

    /// Starts a single member that serves clients over TLS only, with a
    /// certificate from a fresh test CA (made with the `openssl` tool).
    pub async fn single_tls() -> EtcdProcs {
        let root = temp_root();
        let tls = make_certs(&root);
        EtcdProcs::start(1, root, Some(tls)).await
    }

    /// The TLS files, for a member started with [`EtcdProcs::single_tls`].
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    async fn start(n: usize, root: PathBuf, tls: Option<TlsFiles>) -> EtcdProcs {
        let members: Vec<Member> = (0..n)
            .map(|i| {
                let name = format!("m{i}");
                Member {
                    data_dir: root.join(format!("{name}.etcd")),
                    log: root.join(format!("{name}.log")),
                    name,
                    client_port: free_port(),
                    peer_port: free_port(),
                    child: None,
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut procs = EtcdProcs {
            root,
            members,
            initial_cluster,
            tls,
        };
        for i in 0..n {
            procs.spawn(i);
        }
        for i in 0..n {
            procs.wait_ready(i).await;
        }
        procs
    }

    fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "member {} already runs", m.name);
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{}", m.client_port);
        let peer_url = format!("http://127.0.0.1:{}", m.peer_port);
        let tls_args: Vec<&Path> = match &self.tls {
            Some(tls) => vec![
                Path::new("--cert-file"),
                &tls.cert,
                Path::new("--key-file"),
                &tls.key,
            ],
            None => Vec::new(),
        };
        let log = File::options()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("open etcd log");
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "towline-test"])
            // etcd's default timing, spelled out: elections after 1 s
            // without a heartbeat, and so a 1.5 s minimum lease TTL.
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .args(["--log-level", "warn", "--logger", "zap"])
            .args(tls_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn();
        match child {
            Ok(child) => m.child = Some(child),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "the `etcd` binary was not found on PATH: install the Debian package \
                 `etcd-server` (scripts/test installs it)"
            ),
            Err(e) => panic!("cannot start etcd: {e}"),
        }
    }

    /// Waits until member `i` serves a linearizable read (so it has a
    /// leader), or fails with its log.
    async fn wait_ready(&mut self, i: usize) {
        let endpoint = self.endpoint(i);
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = self.members[i]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "etcd {} exited with {status} while starting:\n{}",
                    self.members[i].name,
                    self.log_of(i)
                );
            }
            if probe(&endpoint, self.connect_options()).await {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "etcd {} did not answer within {START_LIMIT:?}:\n{}",
                    self.members[i].name,
                    self.log_of(i)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_of(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }

    /// The client endpoint of member `i`, as `127.0.0.1:port`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_port)
    }

    /// Every member's client endpoint.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Kills member `i` with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its ports and data, and waits until it
    /// serves.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_ready(i).await;
    }

    /// A client for the test's own reads and writes, to the given members.
    pub async fn client_to(&self, members: &[usize]) -> Client {
        let endpoints: Vec<String> = members.iter().map(|&i| self.endpoint(i)).collect();
        let options = self
            .connect_options()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(5));
        Client::connect(endpoints, Some(options))
            .await
            .expect("etcd client")
    }

    /// A client to every member.
    pub async fn client(&self) -> Client {
        let all: Vec<usize> = (0..self.members.len()).collect();
        self.client_to(&all).await
    }

    /// The index of the member that is the raft leader now.
    pub async fn leader(&self) -> usize {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                continue;
            }
            let mut c = self.client_to(&[i]).await;
            if let Ok(status) = c.status().await
                && status.leader() != 0
                && status.header().map(|h| h.member_id()) == Some(status.leader())
            {
                return i;
            }
        }
        panic!("no member reports itself as leader");
    }

    /// The data directory root (removed on drop).
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl EtcdProcs {
    /// Client options for these members: TLS trusting the test CA when they
    /// serve TLS.
    fn connect_options(&self) -> ConnectOptions {
        #[cfg(feature = "etcd-tls")]
        if let Some(tls) = &self.tls {
            let trust = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(&tls.ca_pem))
                .domain_name("127.0.0.1");
            return ConnectOptions::new().with_tls(trust);
        }
        assert!(self.tls.is_none(), "TLS members need the etcd-tls feature");
        ConnectOptions::new()
    }
}

/// Makes a CA and a server certificate for `127.0.0.1` under `dir` with the
/// `openssl` command-line tool (Debian package `openssl`).
fn make_certs(dir: &Path) -> TlsFiles {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run `openssl` ({e}): install the Debian package `openssl`")
            });
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write san.ext");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=towline test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ]);
    TlsFiles {
        ca_pem: std::fs::read_to_string(dir.join("ca.crt")).expect("read ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    }
}

async fn probe(endpoint: &str, options: ConnectOptions) -> bool {
    let options = options
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_millis(1000))
        .with_require_leader(true);
    let Ok(mut client) = Client::connect([endpoint], Some(options)).await else {
        return false;
    };
    client.get("towline-probe", None).await.is_ok()
}

impl Drop for EtcdProcs {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
