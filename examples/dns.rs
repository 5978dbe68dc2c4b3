//! A channel over HTTP backends found by a DNS name.
//!
//! Starts three local hyper backends and a dnsmasq of its own (Debian package
//! `dnsmasq-base`) that serves `_http._tcp.svc.test` SRV records for them,
//! then sends traffic through a towline channel that discovers the backends
//! by that name. Halfway, a fourth backend's name is added to dnsmasq's hosts
//! dir and the channel starts using it within the record TTL (2 s).
//!
//! Run with `cargo run --example dns`.

#[path = "../tests/support/dnsmasq.rs"]
mod dnsmasq;
#[path = "../tests/support/http.rs"]
mod http;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tower::{Service, ServiceExt};
use towline::Channel;
use towline::balance::RoundRobin;
use towline::discover::{Dns, RefreshHint};

use dnsmasq::{Dnsmasq, MISSING_DNSMASQ, Srv, find_dnsmasq};
use http::{Behavior, connector, start_many};

const SRV_NAME: &str = "_http._tcp.svc.test";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if find_dnsmasq().is_none() {
        eprintln!("error: {MISSING_DNSMASQ}");
        std::process::exit(1);
    }

    // Four backends on 127.0.0.1; SRV records give each its own port and a
    // name b0..b3.svc.test. Only b0..b2 resolve at first.
    let backends = start_many(4, Behavior::default()).await;
    let srv: Vec<Srv> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| Srv::new(SRV_NAME, &format!("b{i}.svc.test"), b.addr.port(), 1, 1))
        .collect();
    let names: Vec<String> = (0..backends.len())
        .map(|i| format!("b{i}.svc.test"))
        .collect();
    let hosts = |count: usize| -> Vec<(IpAddr, &str)> {
        names[..count]
            .iter()
            .map(|n| (IpAddr::V4(Ipv4Addr::LOCALHOST), n.as_str()))
            .collect()
    };
    let server = Dnsmasq::start(&hosts(3), &srv);
    println!("dnsmasq serving {SRV_NAME} on {}", server.addr());

    // The channel: DNS discovery on that server, round-robin over what it finds.
    let hint = RefreshHint::new();
    let dns = Dns::srv(format!("{SRV_NAME}."))
        .name_servers([server.addr()])
        .timeout(Duration::from_millis(500))
        .refresh_hint(hint.clone())
        .build()?;
    let mut channel = Channel::builder(connector())
        .discover(dns)
        .refresh_hint(hint)
        .balancer(RoundRobin::new())
        .name("dns-example")
        .build()?;

    send(&mut channel, 30).await?;
    print_endpoints(&channel);

    println!("adding b3.svc.test to dnsmasq's hosts dir");
    server.set_hosts(&hosts(4));
    let added = Instant::now();
    while channel.endpoints().len() < 4 {
        if added.elapsed() > Duration::from_secs(10) {
            return Err("the fourth backend did not show up within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("channel saw it after {:?}", added.elapsed());
    send(&mut channel, 40).await?;
    print_endpoints(&channel);

    let by_port: BTreeMap<u16, u64> = backends.iter().map(|b| (b.addr.port(), b.hits())).collect();
    println!("requests per backend port: {by_port:?}");
    Ok(())
}

/// Sends `count` GET requests and tallies which backend answered.
async fn send<S>(channel: &mut S, count: usize) -> Result<(), Box<dyn std::error::Error>>
where
    S: Service<String, Response = http::Reply, Error = towline::Error>,
{
    let mut from: BTreeMap<SocketAddr, usize> = BTreeMap::new();
    for _ in 0..count {
        let reply = channel.ready().await?.call("/".to_string()).await?;
        *from.entry(reply.from).or_default() += 1;
    }
    println!("{count} requests answered by: {from:?}");
    Ok(())
}

fn print_endpoints<Resp>(channel: &Channel<String, Resp>) {
    for info in channel.endpoints() {
        println!(
            "  endpoint {} weight {} target {}",
            info.endpoint.addr,
            info.endpoint.weight,
            info.endpoint
                .metadata
                .get(towline::discover::SRV_TARGET_KEY)
                .map_or("?", String::as_str)
        );
    }
}
