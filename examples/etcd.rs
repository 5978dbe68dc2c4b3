//! etcd discovery and registration, end to end.
//!
//! Three HTTP servers on 127.0.0.1 register themselves under
//! `/services/hello/` with a [`Registrar`] (a key under a lease they keep
//! alive). A channel discovers them through [`Etcd`] and spreads requests
//! over them; then one server stops, leaves etcd, and stops getting traffic.
//!
//! It needs etcd. With `ETCD_ENDPOINTS=host:port[,host:port…]` set it uses
//! that cluster; otherwise it starts a throw-away `etcd` (Debian package
//! `etcd-server`) on free loopback ports with a temporary data directory.
//!
//! Run with `cargo run --example etcd --features etcd`.

#[path = "../tests/support/etcd.rs"]
mod etcd_procs;
#[path = "../tests/support/http.rs"]
mod http;

use std::collections::BTreeMap;
use std::time::Duration;

use tower::{Service, ServiceExt};
use towline::balance::RoundRobin;
use towline::discover::{Etcd, EtcdCluster, Registrar};
use towline::{Channel, Endpoint};

const PREFIX: &str = "/services/hello/";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the throw-away etcd (if any) alive until the end.
    let (endpoints, _etcd) = match std::env::var("ETCD_ENDPOINTS") {
        Ok(list) => (list.split(',').map(str::to_owned).collect(), None),
        Err(_) => {
            let procs = etcd_procs::EtcdProcs::single().await;
            (procs.endpoints(), Some(procs))
        }
    };
    println!("etcd at {endpoints:?}");
    let cluster = EtcdCluster::new(endpoints);

    // Three servers, each registering itself.
    let mut servers = Vec::new();
    for i in 0..3 {
        let backend = http::Backend::start(http::Behavior::default(), i + 1).await;
        let me = Endpoint::new(backend.addr).with_metadata("name", format!("server-{i}"));
        let registrar = Registrar::builder(cluster.clone(), PREFIX, me)
            .ttl(Duration::from_secs(5))
            .build()?;
        tokio::time::timeout(Duration::from_secs(10), registrar.registered()).await??;
        println!(
            "server-{i} at {} registered as {}",
            backend.addr,
            registrar.key()
        );
        servers.push((backend, registrar));
    }

    // A channel that follows the prefix.
    let channel = Channel::builder(http::connector())
        .discover(Etcd::builder(cluster, PREFIX).build()?)
        .balancer(RoundRobin::new())
        .name("hello")
        .build()?;
    wait_for_endpoints(&channel, 3).await?;
    send(&channel, 300).await?;
    report(&servers);

    // server-2 stops: it leaves etcd (the lease is revoked, so the key goes
    // at once) and shuts its listener. Had it crashed instead, the key would
    // go when the lease expired, within the 5 s TTL.
    let (stopped, registrar) = servers.pop().expect("three servers");
    registrar.shutdown().await?;
    stopped.kill();
    wait_for_endpoints(&channel, 2).await?;
    let before = stopped.hits();
    println!("\nserver-2 stopped and left etcd; the channel now has 2 endpoints");
    send(&channel, 300).await?;
    report(&servers);
    println!(
        "server-2 received {} requests after it left",
        stopped.hits() - before
    );
    Ok(())
}

/// Sends `n` requests one after another and fails on the first error.
async fn send(channel: &Channel<String, http::Reply>, n: usize) -> Result<(), towline::Error> {
    let mut channel = channel.clone();
    for _ in 0..n {
        channel.ready().await?.call("/".to_string()).await?;
    }
    println!("sent {n} requests");
    Ok(())
}

fn report(servers: &[(http::Backend, Registrar)]) {
    let hits: BTreeMap<_, _> = servers
        .iter()
        .map(|(backend, _)| (backend.addr, backend.hits()))
        .collect();
    for (addr, n) in hits {
        println!("  {addr}: {n} requests so far");
    }
}

/// Waits (at most 10 s) until the channel holds exactly `n` endpoints.
async fn wait_for_endpoints(
    channel: &Channel<String, http::Reply>,
    n: usize,
) -> Result<(), String> {
    if http::eventually(Duration::from_secs(10), || channel.endpoints().len() == n).await {
        Ok(())
    } else {
        Err(format!(
            "the channel has {} endpoints, expected {n}",
            channel.endpoints().len()
        ))
    }
}
