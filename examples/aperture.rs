//! Deterministic aperture: ten clients share thirty servers, each client
//! holding about six of them, and every server gets the same load.
//!
//! ```sh
//! cargo run --example aperture
//! ```
//!
//! Each client's channel narrows the same discovery source to its own
//! slice of the ring (`Channel::builder(..).aperture(settings, coordinate)`):
//! client `i` of 10 is given its coordinate here; with etcd,
//! `discover::Peers` learns it from the clients' registrations. The
//! servers are in-memory services that count their calls. Then one server
//! leaves discovery, and the example shows which subsets changed.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tower::{Service, ServiceExt};
use towline::balance::P2c;
use towline::discover::Manual;
use towline::subset::{ApertureSettings, Coordinate};
use towline::{Channel, Endpoint};

const CLIENTS: usize = 10;
const SERVERS: u16 = 30;
const CALLS: u64 = 6_000;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let hits: Arc<Vec<AtomicU64>> = Arc::new((0..=SERVERS).map(|_| AtomicU64::new(0)).collect());
    let servers = Manual::with_endpoints((1..=SERVERS).map(addr));
    let settings = ApertureSettings::new(6);
    let mut clients: Vec<Channel<u32, u32>> = Vec::new();
    for i in 0..CLIENTS {
        let hits = hits.clone();
        let connect = move |ep: &Endpoint| {
            let (hits, port) = (hits.clone(), ep.addr.port());
            tower::service_fn(move |x: u32| {
                hits[usize::from(port)].fetch_add(1, Ordering::Relaxed);
                async move { Ok::<_, Infallible>(x) }
            })
        };
        // These servers answer at once and calls go one at a time, so P2C
        // over pending requests sees equal loads and picks each server in
        // proportion to its weight (its two candidates are drawn so).
        let channel = Channel::builder(connect)
            .discover(servers.stream())
            .balancer(P2c::pending())
            .aperture(settings, Coordinate::new(i, CLIENTS)?)
            .name(format!("client-{i}"))
            .build()?;
        clients.push(channel);
    }
    for client in &mut clients {
        for x in 0..CALLS as u32 {
            client.ready().await?.call(x).await?;
        }
    }
    println!("client  servers (port:weight, 1000 = wholly covered)");
    let before = subsets(&clients);
    for (i, client) in clients.iter().enumerate() {
        let held: Vec<String> = client
            .endpoints()
            .iter()
            .map(|e| format!("{}:{}", e.endpoint.addr.port(), e.endpoint.weight))
            .collect();
        println!("{i:>6}  {}", held.join(" "));
    }
    let load: Vec<f64> = (1..=SERVERS)
        .map(|p| hits[usize::from(p)].load(Ordering::Relaxed) as f64)
        .collect();
    let mean = load.iter().sum::<f64>() / load.len() as f64;
    let sd = (load.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / load.len() as f64).sqrt();
    println!(
        "\ncalls per server: {:.0} to {:.0}, mean {mean:.0}, coefficient of variation {:.1}% \
         (each client's {CALLS} calls spread over its slice by weight)",
        load.iter().copied().fold(f64::MAX, f64::min),
        load.iter().copied().fold(0.0, f64::max),
        100.0 * sd / mean
    );

    // Server 15 leaves: only the slices next to it move.
    servers.remove(addr(15));
    while clients
        .iter()
        .any(|c| c.endpoints().iter().any(|e| e.endpoint.addr == addr(15)))
    {
        tokio::task::yield_now().await;
    }
    println!("\nserver 15 left:");
    for (i, (old, new)) in before.iter().zip(subsets(&clients)).enumerate() {
        let gone: Vec<u16> = old.difference(&new).copied().collect();
        let came: Vec<u16> = new.difference(old).copied().collect();
        if !gone.is_empty() || !came.is_empty() {
            println!("  client {i}: dropped {gone:?}, added {came:?}");
        }
    }
    Ok(())
}

/// Each client's servers, by port.
fn subsets(clients: &[Channel<u32, u32>]) -> Vec<BTreeSet<u16>> {
    clients
        .iter()
        .map(|c| {
            c.endpoints()
                .iter()
                .map(|e| e.endpoint.addr.port())
                .collect()
        })
        .collect()
}
