//! The fault rows: what each chaos run does to the servers, and when; and
//! the driver that carries a script out while traffic runs.

use std::time::Duration;

use crate::cluster::Cluster;
use crate::measure::{BUCKET, Record};
use crate::proxy::Fault;

/// What is done to one backend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// SIGKILL; at the end of the episode a new process on the same port.
    Kill,
    /// SIGSTOP; SIGCONT at the end.
    Freeze,
    /// A proxy fault; switched off at the end.
    Proxy(Fault),
    /// SIGKILL and a new process on a new port, announced in DNS in place
    /// of the old one (the episode has no length).
    Replace,
    /// A black hole on every backend at once: every call meets stalls only,
    /// and the deadline cuts it.
    Outage,
}

impl Kind {
    /// A short name for reports.
    pub fn name(self) -> String {
        match self {
            Kind::Kill => "SIGKILL, restart on the same port".into(),
            Kind::Freeze => "SIGSTOP, then SIGCONT".into(),
            Kind::Proxy(Fault::BlackHole) => "black hole".into(),
            Kind::Proxy(Fault::Reset) => "reset storm".into(),
            Kind::Proxy(Fault::HalfClose) => "half-close".into(),
            Kind::Proxy(Fault::Latency(d)) => format!("latency +{} ms", d.as_millis()),
            Kind::Proxy(Fault::Bandwidth(b)) => format!("bandwidth {} KB/s", b / 1000),
            Kind::Proxy(Fault::None) => "no fault".into(),
            Kind::Replace => "restart on a new port, via DNS".into(),
            Kind::Outage => "black hole on every backend".into(),
        }
    }

    /// A stall: the backend takes connections and answers nothing, so
    /// only timeouts tell.
    pub fn is_stall(self) -> bool {
        matches!(self, Kind::Freeze | Kind::Proxy(Fault::BlackHole))
    }
}

/// After an episode's fault ends: keep going for a fixed time, or until
/// the traffic is fair again (at most the given time).
#[derive(Debug, Clone, Copy)]
pub enum Then {
    /// Go on after this long.
    Wait(Duration),
    /// Go on once traffic is fair again, or after this long.
    Fair(Duration),
}

/// One fault on one backend.
#[derive(Debug, Clone, Copy)]
pub struct Episode {
    /// Position of the backend in the announced set (in slot order).
    pub target: usize,
    pub kind: Kind,
    /// How long the fault lasts.
    pub length: Duration,
    pub then: Then,
}

/// A chaos run.
#[derive(Debug, Clone)]
pub struct Script {
    pub name: &'static str,
    /// Fault-free traffic first.
    pub warmup: Duration,
    pub episodes: Vec<Episode>,
    /// Repeat the episodes until this time has passed (soak), else once.
    pub repeat_until: Option<Duration>,
    /// The lowest success rate of replayable calls to assert, if any.
    pub success_target: Option<f64>,
}

impl Script {
    /// The longest the run can take.
    pub fn max_length(&self) -> Duration {
        let once: Duration = self
            .episodes
            .iter()
            .map(|e| {
                e.length
                    + match e.then {
                        Then::Wait(d) | Then::Fair(d) => d,
                    }
            })
            .sum();
        self.warmup + self.repeat_until.unwrap_or_default().max(once) + once
    }
}

const SECOND: Duration = Duration::from_secs(1);

fn single(name: &'static str, kind: Kind, length: Duration, after: Duration) -> Script {
    Script {
        name,
        warmup: 5 * SECOND,
        episodes: vec![Episode {
            target: 1,
            kind,
            length,
            then: Then::Wait(after),
        }],
        repeat_until: None,
        success_target: Some(0.999),
    }
}

/// The rows of the issue, each 30 s, and the combined sequence.
pub fn all() -> Vec<Script> {
    let mut replace = single(
        "restart-new-port",
        Kind::Replace,
        Duration::ZERO,
        25 * SECOND,
    );
    replace.success_target = None;
    vec![
        single("sigkill", Kind::Kill, 10 * SECOND, 15 * SECOND),
        single("sigstop", Kind::Freeze, 10 * SECOND, 15 * SECOND),
        single(
            "blackhole",
            Kind::Proxy(Fault::BlackHole),
            10 * SECOND,
            15 * SECOND,
        ),
        single("reset", Kind::Proxy(Fault::Reset), 10 * SECOND, 15 * SECOND),
        replace,
        combined(None),
    ]
}

/// Every fault in turn, each for 3 s on a different backend (a 2 s outage
/// of all of them), the next one starting as soon as traffic is fair again
/// (at most 10 s later).
/// `repeat_until` makes it the soak.
pub fn combined(repeat_until: Option<Duration>) -> Script {
    let kinds = [
        Kind::Freeze,
        Kind::Proxy(Fault::BlackHole),
        Kind::Proxy(Fault::Reset),
        Kind::Kill,
        Kind::Proxy(Fault::Latency(Duration::from_millis(100))),
        Kind::Proxy(Fault::Bandwidth(8_000)),
        Kind::Proxy(Fault::HalfClose),
        Kind::Outage,
        Kind::Replace,
    ];
    Script {
        name: if repeat_until.is_some() {
            "soak"
        } else {
            "combined"
        },
        warmup: 5 * SECOND,
        episodes: kinds
            .iter()
            .enumerate()
            .map(|(i, &kind)| Episode {
                target: i % 5,
                kind,
                length: match kind {
                    Kind::Replace => Duration::ZERO,
                    Kind::Outage => 2 * SECOND,
                    _ => 3 * SECOND,
                },
                then: Then::Fair(10 * SECOND),
            })
            .collect(),
        repeat_until,
        success_target: None,
    }
}

/// What happened in one episode, in run time.
#[derive(Debug, Clone)]
pub struct Happened {
    pub kind: Kind,
    pub slot: usize,
    pub start: Duration,
    pub end: Duration,
    /// The announced slots after the fault ended.
    pub live: Vec<usize>,
    /// For a replacement: the new slot.
    pub new_slot: Option<usize>,
    /// When the next episode started (or the traffic stopped).
    pub next: Duration,
}

/// Carries out `script` on `cluster`; `happened` gets one entry per
/// episode (reserve its capacity beforehand: the memory check counts it).
pub async fn drive(
    script: &Script,
    cluster: &mut Cluster,
    record: &Record,
    happened: &mut Vec<Happened>,
) {
    let at = |t: Duration| tokio::time::sleep_until((record.origin + t).into());
    at(script.warmup).await;
    'runs: loop {
        for episode in &script.episodes {
            let slot = cluster.live()[episode.target];
            let start = record.elapsed();
            let mut new_slot = None;
            match episode.kind {
                Kind::Kill => cluster.kill(slot),
                Kind::Freeze => cluster.freeze(slot),
                Kind::Proxy(fault) => cluster.set_fault(slot, fault),
                Kind::Replace => new_slot = Some(cluster.replace(slot)),
                Kind::Outage => {
                    for s in cluster.live() {
                        cluster.set_fault(s, Fault::BlackHole);
                    }
                }
            }
            at(start + episode.length).await;
            match episode.kind {
                Kind::Kill => cluster.restart(slot),
                Kind::Freeze => cluster.thaw(slot),
                Kind::Proxy(_) => cluster.set_fault(slot, Fault::None),
                Kind::Outage => {
                    for s in cluster.live() {
                        cluster.set_fault(s, Fault::None);
                    }
                }
                Kind::Replace => {}
            }
            let end = record.elapsed();
            let live = cluster.live();
            match episode.then {
                Then::Wait(d) => at(end + d).await,
                Then::Fair(limit) => {
                    let mut poll = tokio::time::interval(BUCKET);
                    while record.elapsed() < end + limit
                        && record.time_to_fair(&live, end, record.elapsed()).is_none()
                    {
                        poll.tick().await;
                    }
                }
            }
            happened.push(Happened {
                kind: episode.kind,
                slot,
                start,
                end,
                live,
                new_slot,
                next: record.elapsed(),
            });
            if script
                .repeat_until
                .is_some_and(|until| record.elapsed() >= until)
            {
                break 'runs;
            }
        }
        if script.repeat_until.is_none() {
            break;
        }
    }
    at(record.elapsed() + SECOND).await;
}
