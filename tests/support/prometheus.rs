//! Serving towline's metrics to Prometheus, as the quickstart does with
//! `--prometheus ADDR` and as tests/prometheus.rs checks with a real scrape.
#![allow(dead_code)]

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusBuilder;

/// Installs a Prometheus recorder as the global `metrics` recorder, serving
/// the text exposition format over HTTP on `addr` (any path answers), and
/// returns the scrape URL. Call it before building channels: handles are
/// registered when a channel is built.
pub fn serve(addr: SocketAddr) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()?;
    Ok(format!("http://{addr}/metrics"))
}

/// A loopback address with a port that was free a moment ago (the exporter
/// binds it itself and does not report an ephemeral port back).
pub fn free_local_addr() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    probe.local_addr().expect("local address")
}
