//! The servers of one chaos run: five backend processes, a fault proxy in
//! front of each (the channel only ever talks to proxies), a spare proxy
//! for a backend restarted on a new port, and dnsmasq announcing them.
//!
//! DNS: one SRV record per proxy, `_http._tcp.svc.test` → `s{slot}.svc.test`
//! on the proxy's port. Which slots are announced is decided by the hosts
//! file: a target name that does not resolve yields no endpoint, so moving a
//! backend to the spare slot is a hosts-file change that dnsmasq reloads by
//! itself, with the records' TTL of [`dnsmasq::LOCAL_TTL`] seconds.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::dnsmasq::{Dnsmasq, Srv};
use crate::measure::SLOTS;
use crate::process::{BackendConfig, BackendProcess, Delivered, read_deliveries};
use crate::proxy::{Fault, Proxy};

/// The SRV name the channel resolves (without the final dot).
pub const SRV_NAME: &str = "_http._tcp.svc.test";
/// Backends serving at once.
pub const BACKENDS: usize = 5;
/// How each backend answers: after 10 ms, with 1 KiB.
pub const SERVE: BackendConfig = BackendConfig {
    port: 0,
    delay: Duration::from_millis(10),
    body: 1024,
};

/// The servers of a run.
pub struct Cluster {
    backends: Vec<Option<BackendProcess>>,
    proxies: Vec<Proxy>,
    dns: Dnsmasq,
    /// Slots announced in DNS now.
    live: Vec<usize>,
    dir: PathBuf,
    logs: Vec<PathBuf>,
    /// Runs the proxies, apart from the channel's runtime so that its task
    /// count is the channel's own.
    _proxies_runtime: tokio::runtime::Runtime,
}

/// Starts a backend process logging to a new file in `dir`.
fn spawn_backend(dir: &Path, logs: &mut Vec<PathBuf>, config: BackendConfig) -> BackendProcess {
    let log = dir.join(format!("deliveries-{}.log", logs.len()));
    logs.push(log.clone());
    BackendProcess::spawn(config, &log)
}

fn target(slot: usize) -> String {
    format!("s{slot}.svc.test")
}

/// Host lines that make the targets of `live` resolve to 127.0.0.1.
fn hosts(live: &[usize]) -> Vec<(IpAddr, String)> {
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    live.iter().map(|&s| (localhost, target(s))).collect()
}

fn host_refs(hosts: &[(IpAddr, String)]) -> Vec<(IpAddr, &str)> {
    hosts.iter().map(|(ip, n)| (*ip, n.as_str())).collect()
}

impl Cluster {
    /// Starts everything; `name` names the temp dir.
    pub fn start(name: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!("towline-chaos-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the run's temp dir");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let mut logs = Vec::new();
        let mut backends: Vec<Option<BackendProcess>> = (0..SLOTS).map(|_| None).collect();
        let mut proxies = Vec::new();
        // The spare slot's proxy points at a closed port until it is used.
        let nowhere = SocketAddr::from(([127, 0, 0, 1], 1));
        for (slot, backend) in backends.iter_mut().enumerate() {
            let upstream = if slot < BACKENDS {
                let started = spawn_backend(&dir, &mut logs, SERVE);
                let addr = started.addr;
                *backend = Some(started);
                addr
            } else {
                nowhere
            };
            proxies.push(runtime.block_on(Proxy::start(upstream)));
        }
        let srv: Vec<Srv> = proxies
            .iter()
            .enumerate()
            .map(|(slot, p)| Srv::new(SRV_NAME, &target(slot), p.addr.port(), 1, 1))
            .collect();
        let live: Vec<usize> = (0..BACKENDS).collect();
        let names = hosts(&live);
        let dns = Dnsmasq::start(&host_refs(&names), &srv);
        Cluster {
            backends,
            proxies,
            dns,
            live,
            dir,
            logs,
            _proxies_runtime: runtime,
        }
    }

    fn spawn_backend(&mut self, config: BackendConfig) -> BackendProcess {
        spawn_backend(&self.dir, &mut self.logs, config)
    }

    fn announce(&self) {
        self.dns.set_hosts(&host_refs(&hosts(&self.live)));
    }

    /// Where dnsmasq answers.
    pub fn dns_addr(&self) -> SocketAddr {
        self.dns.addr()
    }

    /// The address the channel sees for each slot (its proxy's).
    pub fn slot_addrs(&self) -> [SocketAddr; SLOTS] {
        std::array::from_fn(|slot| self.proxies[slot].addr)
    }

    /// Slots announced in DNS now, in slot order.
    pub fn live(&self) -> Vec<usize> {
        self.live.clone()
    }

    fn backend(&mut self, slot: usize) -> &mut BackendProcess {
        self.backends[slot]
            .as_mut()
            .unwrap_or_else(|| panic!("no backend in slot {slot}"))
    }

    /// SIGKILL to the backend of `slot`.
    pub fn kill(&mut self, slot: usize) {
        self.backend(slot).kill();
    }

    /// SIGSTOP to the backend of `slot`.
    pub fn freeze(&mut self, slot: usize) {
        self.backend(slot).stop();
    }

    /// SIGCONT to the backend of `slot`.
    pub fn thaw(&mut self, slot: usize) {
        self.backend(slot).resume();
    }

    /// A new backend process for `slot` on the port the old one had (as a
    /// supervisor restarts a crashed server).
    pub fn restart(&mut self, slot: usize) {
        let port = self.backend(slot).addr.port();
        self.backends[slot] = None;
        let backend = self.spawn_backend(BackendConfig { port, ..SERVE });
        self.backends[slot] = Some(backend);
    }

    /// Kills the backend of `old`, starts a new one on a new port behind
    /// the free slot's proxy, and announces that slot in DNS instead of
    /// `old`. Returns the new slot.
    pub fn replace(&mut self, old: usize) -> usize {
        let new = (0..SLOTS)
            .find(|s| !self.live.contains(s))
            .expect("a free slot");
        self.kill(old);
        self.backends[old] = None;
        let backend = self.spawn_backend(SERVE);
        self.proxies[new].set_upstream(backend.addr);
        self.proxies[new].set_fault(Fault::None);
        self.backends[new] = Some(backend);
        self.live.retain(|&s| s != old);
        self.live.push(new);
        self.live.sort_unstable();
        self.announce();
        new
    }

    /// Switches the fault of `slot`'s proxy.
    pub fn set_fault(&self, slot: usize, fault: Fault) {
        self.proxies[slot].set_fault(fault);
    }

    /// Connections open through the proxies.
    pub fn open_connections(&self) -> usize {
        self.proxies.iter().map(Proxy::open_connections).sum()
    }

    /// How often each call reached a backend, from every delivery log so far.
    pub fn deliveries(&self) -> HashMap<u64, Delivered> {
        read_deliveries(&self.logs)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.backends.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
