//! A real `dnsmasq` (Debian package `dnsmasq-base`) for the DNS tests: its
//! own free port on 127.0.0.1, its own temp dir, records for `svc.test`.
//!
//! Host records live in a file under `--hostsdir`, which dnsmasq reloads by
//! itself when the file changes. SRV records are command-line options, so
//! changing them means a restart on the same port. Names outside the hosts
//! file get NXDOMAIN (`--local=/svc.test/`), and the server never forwards a
//! query anywhere.
#![allow(dead_code)] // each test binary uses a different part

use std::fs;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The TTL dnsmasq gives its local records, in seconds.
pub const LOCAL_TTL: u64 = 2;

/// One SRV record: `_http._tcp.svc.test` → `target:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    /// The SRV owner name, e.g. `_http._tcp.svc.test`.
    pub name: String,
    /// The target host, e.g. `a1.svc.test`.
    pub target: String,
    /// The port the record points at.
    pub port: u16,
    /// Lower is preferred.
    pub priority: u16,
    /// Share within one priority.
    pub weight: u16,
}

impl Srv {
    pub fn new(name: &str, target: &str, port: u16, priority: u16, weight: u16) -> Self {
        Srv {
            name: name.into(),
            target: target.into(),
            port,
            priority,
            weight,
        }
    }
}

/// A running (or killed) dnsmasq; killed and its dir removed on drop.
pub struct Dnsmasq {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    srv: Vec<Srv>,
    /// Names answered by `--address`: dnsmasq gives them no glue in SRV
    /// answers, so a client must look them up itself.
    addresses: Vec<(String, IpAddr)>,
}

/// Where dnsmasq is: on PATH, else in /usr/sbin or /sbin.
pub fn find_dnsmasq() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join("dnsmasq"))
        .find(|p| p.is_file())
}

/// What to tell someone who lacks dnsmasq.
pub const MISSING_DNSMASQ: &str = "dnsmasq not found on PATH, /usr/sbin or /sbin: install the \
    Debian package `dnsmasq-base` (apt-get install -y dnsmasq-base); scripts/test does this";

/// Where dnsmasq is, or a panic that names the package to install.
pub fn dnsmasq_binary() -> PathBuf {
    find_dnsmasq().unwrap_or_else(|| panic!("{MISSING_DNSMASQ}"))
}

impl Dnsmasq {
    /// Starts dnsmasq with these host lines (`(ip, name)`) and SRV records.
    pub fn start(hosts: &[(IpAddr, &str)], srv: &[Srv]) -> Dnsmasq {
        Dnsmasq::start_with_addresses(hosts, srv, &[])
    }

    /// Like [`start`](Self::start), plus names answered by `--address`
    /// (never sent as SRV glue).
    pub fn start_with_addresses(
        hosts: &[(IpAddr, &str)],
        srv: &[Srv],
        addresses: &[(&str, IpAddr)],
    ) -> Dnsmasq {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "towline-dnsmasq-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("hosts")).expect("create dnsmasq temp dir");
        let mut server = Dnsmasq {
            child: None,
            port: 0,
            dir,
            srv: srv.to_vec(),
            addresses: addresses
                .iter()
                .map(|(n, ip)| (n.to_string(), *ip))
                .collect(),
        };
        server.set_hosts(hosts);
        // A free port can be taken between the probe and dnsmasq's bind:
        // try a few.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!("dnsmasq did not start; log:\n{}", server.log());
    }

    /// The address to send queries to.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Replaces every host line; dnsmasq notices the change by itself.
    pub fn set_hosts(&self, hosts: &[(IpAddr, &str)]) {
        let text: String = hosts
            .iter()
            .map(|(ip, name)| format!("{ip} {name}\n"))
            .collect();
        // Write beside the watched dir, then move in: dnsmasq never reads a
        // half-written file.
        let staging = self.dir.join("hosts.new");
        fs::write(&staging, text).expect("write hosts file");
        fs::rename(&staging, self.dir.join("hosts").join("records")).expect("move hosts file");
    }

    /// Kills the server (the port stays reserved for [`restart`](Self::restart)).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and with the same records.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not restart; log:\n{}",
                self.log()
            );
        }
    }

    /// Restarts with other SRV records (dnsmasq cannot reload them).
    pub fn restart_with_srv(&mut self, srv: &[Srv]) {
        self.srv = srv.to_vec();
        self.restart();
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("dnsmasq.log")
    }

    /// Starts dnsmasq and waits until it answers; false if it exited (e.g.
    /// the port was taken).
    fn spawn(&mut self) -> bool {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open dnsmasq log");
        let mut cmd = Command::new(dnsmasq_binary());
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--pid-file=",
            "--local=/svc.test/",
            "--log-facility=-",
        ])
        .arg(format!("--port={}", self.port))
        .arg(format!("--hostsdir={}", self.dir.join("hosts").display()))
        .arg(format!("--local-ttl={LOCAL_TTL}"));
        if is_root() {
            cmd.arg("--user=root");
        }
        for (name, ip) in &self.addresses {
            cmd.arg(format!("--address=/{name}/{ip}"));
        }
        for s in &self.srv {
            cmd.arg(format!(
                "--srv-host={},{},{},{},{}",
                s.name, s.target, s.port, s.priority, s.weight
            ));
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run dnsmasq (Debian package `dnsmasq-base`): {e}"));
        self.child = Some(child);
        self.wait_until_answering()
    }

    fn wait_until_answering(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind probe socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("probe timeout");
        while Instant::now() < deadline {
            let child = self.child.as_mut().expect("spawned");
            if child.try_wait().expect("dnsmasq status").is_some() {
                self.child = None;
                return false;
            }
            let _ = socket.send_to(&probe_query(), self.addr());
            let mut buf = [0u8; 512];
            match socket.recv_from(&mut buf) {
                Ok((n, _)) if n >= 12 && buf[..2] == probe_query()[..2] => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(10)), // refused: not up yet
            }
        }
        panic!("dnsmasq did not answer within 5 s; log:\n{}", self.log());
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A DNS query for `probe.svc.test. A`, id 0x7470.
fn probe_query() -> Vec<u8> {
    let mut q = vec![0x74, 0x70, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["probe", "svc", "test"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn free_port() -> u16 {
    // A port free for both UDP and TCP, as dnsmasq binds both.
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind probe socket");
        let port = udp.local_addr().expect("probe addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn is_root() -> bool {
    // /proc/self is owned by the effective user.
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}
