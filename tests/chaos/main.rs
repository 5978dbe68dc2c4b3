//! The chaos suite (issue 14): real faults while traffic runs.
//!
//! Each row starts five HTTP backends as separate processes (this binary,
//! re-executed in backend mode), a fault-injecting TCP proxy in front of each,
//! and dnsmasq announcing the proxies by SRV; then 64 tasks call through one
//! channel with the full default policy stack while the row's script crashes,
//! freezes, black-holes, resets or moves a backend. Every run checks:
//!
//! - every call returns no later than its deadline + 50 ms;
//! - no request the replay function refuses reaches a backend twice, and
//!   replayed copies stay within the retry and hedge budgets;
//! - traffic is fair again within 10 s after each fault ends;
//! - once the channel and its clones are dropped, none of its tasks is alive
//!   and the heap is back where it was;
//!
//! plus each row's own targets (success rate, a stalled backend's share of
//! new attempts, how soon a moved backend takes traffic). All figures are
//! printed; a missed target fails the run after every row has run.
//!
//! `cargo test --test chaos` runs every row; `-- NAME` runs the rows whose
//! name contains NAME; `-- --soak=SECS` runs the combined sequence in a loop
//! for SECS seconds, sampling memory and tasks (see `scripts/soak`).

#[path = "../support/dnsmasq.rs"]
mod dnsmasq;
#[path = "../support/http.rs"]
mod http;
#[path = "../support/process.rs"]
mod process;
#[path = "../support/proxy.rs"]
mod proxy;

mod cluster;
mod measure;
mod memory;
mod rows;
mod traffic;
mod verdict;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cluster::Cluster;
use measure::Record;
use memory::{Reading, mib};
use rows::Script;
use traffic::Load;
use verdict::{Teardown, Verdict};

/// Command-line options (libtest's own flags are accepted and ignored).
#[derive(Default)]
struct Options {
    filters: Vec<String>,
    skips: Vec<String>,
    list: bool,
    ignored_only: bool,
    soak: Option<Duration>,
}

fn options() -> Options {
    let mut o = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--list" => o.list = true,
            "--ignored" => o.ignored_only = true,
            "--skip" => o.skips.extend(args.next()),
            "--test-threads" | "--color" | "--format" | "--logfile" | "-Z" => {
                args.next();
            }
            _ if a.starts_with("--soak=") => {
                let secs: u64 = a["--soak=".len()..].parse().expect("--soak=SECONDS");
                o.soak = Some(Duration::from_secs(secs));
            }
            _ if a.starts_with('-') => {}
            _ => o.filters.push(a),
        }
    }
    o
}

fn main() -> ExitCode {
    process::serve_if_backend();
    let o = options();
    let scripts: Vec<Script> = match o.soak {
        Some(length) => vec![rows::combined(Some(length))],
        None => rows::all()
            .into_iter()
            .filter(|s| {
                o.filters.is_empty() || o.filters.iter().any(|f| s.name.contains(f.as_str()))
            })
            .filter(|s| !o.skips.iter().any(|f| s.name.contains(f.as_str())))
            .collect(),
    };
    if o.list {
        for s in &scripts {
            println!("{}: test", s.name);
        }
        return ExitCode::SUCCESS;
    }
    if o.ignored_only || scripts.is_empty() {
        println!("chaos: no row selected");
        return ExitCode::SUCCESS;
    }
    dnsmasq::dnsmasq_binary();
    let mut failed = Vec::new();
    for (i, script) in scripts.iter().enumerate() {
        let started = Instant::now();
        let verdict = run(script, 14_000 + i as u64, o.soak.is_some());
        print!("{}", verdict.text);
        for f in &verdict.failures {
            println!("  MISSED: {f}");
        }
        println!(
            "  {} in {:.0} s\n",
            if verdict.failures.is_empty() {
                "ok"
            } else {
                "FAILED"
            },
            started.elapsed().as_secs_f64()
        );
        failed.extend(
            verdict
                .failures
                .iter()
                .map(|f| format!("{}: {f}", script.name)),
        );
    }
    if failed.is_empty() {
        println!("chaos: {} rows ok", scripts.len());
        ExitCode::SUCCESS
    } else {
        println!("chaos: {} targets missed:", failed.len());
        for f in &failed {
            println!("  {f}");
        }
        ExitCode::FAILURE
    }
}

/// Polls `value` until it is zero or `limit` passes; returns the last value.
fn settle(limit: Duration, value: impl Fn() -> usize) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let v = value();
        if v == 0 || Instant::now() >= deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs one script from start to teardown, and judges it.
fn run(script: &Script, seed: u64, soak: bool) -> Verdict {
    let mut cluster = Cluster::start(script.name);
    let runtime = http::seeded_runtime(seed);
    let record = Arc::new(Record::new(script.max_length()));
    let mut happened = Vec::with_capacity(4096);
    let sampler = Sampler::start(
        runtime.handle().clone(),
        record.clone(),
        soak,
        script.max_length(),
    );
    let before = Reading::now();
    runtime.block_on(async {
        let channel = traffic::channel(
            cluster.dns_addr(),
            cluster.slot_addrs(),
            record.clone(),
            seed,
        );
        let load = Load::start(&channel, &record);
        drop(channel);
        rows::drive(script, &mut cluster, &record, &mut happened).await;
        load.stop().await;
    });
    let run_end = record.elapsed();
    let samples = sampler.stop();
    let tasks_left = settle(Duration::from_secs(5), || {
        runtime.metrics().num_alive_tasks()
    });
    let connections_left = settle(Duration::from_secs(5), || cluster.open_connections());
    let after = Reading::now();
    let deliveries = cluster.deliveries();
    let teardown = Teardown {
        tasks_left,
        connections_left,
        before,
        after,
        peak_rss: samples.peak_rss,
    };
    let mut verdict = verdict::judge(script, &record, run_end, &happened, &deliveries, &teardown);
    if soak {
        samples.judge(&mut verdict);
    }
    verdict
}

/// Samples resident memory (and, in a soak, prints memory and task counts
/// every 5 s) on its own thread.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Samples>,
}

/// What the sampler saw.
struct Samples {
    peak_rss: u64,
    /// In a soak: resident memory every 5 s.
    every_5s: Vec<(Duration, u64)>,
}

const SOAK_SAMPLE: Duration = Duration::from_secs(5);

impl Sampler {
    /// `length`: the longest the run may take (the samples' room is made
    /// now, so that the heap check does not see it).
    fn start(
        runtime: tokio::runtime::Handle,
        record: Arc<Record>,
        soak: bool,
        length: Duration,
    ) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let room = if soak {
            (length.as_secs() / SOAK_SAMPLE.as_secs()) as usize + 2
        } else {
            0
        };
        let mut samples = Samples {
            peak_rss: 0,
            every_5s: Vec::with_capacity(room),
        };
        let thread = std::thread::spawn(move || {
            let mut next = SOAK_SAMPLE;
            while !flag.load(Ordering::Relaxed) {
                let (rss, _) = memory::rss();
                samples.peak_rss = samples.peak_rss.max(rss);
                let t = record.elapsed();
                if soak && t >= next && samples.every_5s.len() < room {
                    next += SOAK_SAMPLE;
                    samples.every_5s.push((t, rss));
                    println!(
                        "soak t={:>4} s  rss {:>6.1} MiB  heap {:>6.1} MiB  tasks {:>4}  calls {}",
                        t.as_secs(),
                        mib(rss as f64),
                        mib(memory::live_heap() as f64),
                        runtime.metrics().num_alive_tasks(),
                        record.total_calls()
                    );
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            samples
        });
        Sampler { stop, thread }
    }

    fn stop(self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler thread")
    }
}

impl Samples {
    /// Mean resident memory of the samples taken in `[from, to)`.
    fn mean(&self, from: Duration, to: Duration) -> Option<f64> {
        let inside: Vec<f64> = self
            .every_5s
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, rss)| *rss as f64)
            .collect();
        (!inside.is_empty()).then(|| inside.iter().sum::<f64>() / inside.len() as f64)
    }

    /// The soak target: resident memory at the end within 10% of its value
    /// at 1 minute. Resident memory moves by about a megabyte from one
    /// sample to the next as allocator arenas grow and shrink, so each
    /// value is the mean of the samples over 30 s: from 45 s to 75 s, and
    /// the last 30 s.
    fn judge(&self, verdict: &mut Verdict) {
        let second = Duration::from_secs(1);
        let end = self.every_5s.last().map_or(Duration::ZERO, |(t, _)| *t) + second;
        let one = self.mean(45 * second, 75 * second);
        let last = self.mean(end.saturating_sub(30 * second), end);
        let (Some(one), Some(last)) = (one, last) else {
            verdict
                .failures
                .push("the soak ran for less than 75 s".into());
            return;
        };
        if end < 120 * second {
            verdict
                .failures
                .push("the soak ran for less than 2 minutes".into());
        }
        let growth = last / one - 1.0;
        verdict.text.push_str(&format!(
            "soak: RSS {:.1} MiB at 1 min, {:.1} MiB at {} s ({:+.1}%; means over 30 s)\n",
            mib(one),
            mib(last),
            end.as_secs(),
            100.0 * growth
        ));
        if growth > 0.10 {
            verdict.failures.push(format!(
                "RSS grew {:.1}% from 1 min to the end",
                100.0 * growth
            ));
        }
    }
}
