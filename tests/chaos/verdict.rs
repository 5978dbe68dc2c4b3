//! The figures of a finished run, checked against the targets of issue 14,
//! and printed.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::Duration;

use crate::cluster::BACKENDS;
use crate::dnsmasq::LOCAL_TTL;
use crate::measure::{BUCKET, Record};
use crate::memory::{Reading, mib};
use crate::process::Delivered;
use crate::rows::{Happened, Script};
use crate::traffic::{ATTEMPT_TIMEOUT, DEADLINE, MARGIN, TASKS};

/// A stalled backend's share of new attempts must fall below this...
const STALL_SHARE: f64 = 0.02;
/// ...within this time of the stall's start.
const STALL_REACTION: Duration = Duration::from_secs(1);
/// Traffic must be fair again this soon after a fault ends.
const FAIR_WITHIN: Duration = Duration::from_secs(10);
/// Attempts a call may make: 3 retry rounds, each with one hedge.
const MAX_DELIVERIES: u32 = 3 * 2;
/// Heap growth over a run that is not a leak: one-time initialisation in
/// libraries and the run's own bookkeeping. Measured: 0.2 to 8.2 KiB per
/// row (the most in the first row of a process), 15.5 KiB over the
/// 10-minute soak. A leak of one byte per call would exceed it.
const HEAP_SLACK: i64 = 64 * 1024;
/// Growth of anonymous resident memory over a run that is not a leak: the
/// allocator keeps pages of the runtime threads' arenas even after a trim.
/// Measured: 0.6 to 2.6 MiB per row, not growing from row to row.
const ANON_RSS_SLACK: u64 = 8 * 1024 * 1024;

/// What was measured after the traffic stopped and the channel was dropped.
pub struct Teardown {
    pub tasks_left: usize,
    pub connections_left: usize,
    pub before: Reading,
    pub after: Reading,
    pub peak_rss: u64,
}

/// The report of one run: lines to print and the targets it missed.
#[derive(Default)]
pub struct Verdict {
    pub text: String,
    pub failures: Vec<String>,
}

impl Verdict {
    fn line(&mut self, s: impl AsRef<str>) {
        self.text.push_str(s.as_ref());
        self.text.push('\n');
    }

    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failures.push(what.into());
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn pct(x: f64) -> String {
    format!("{:.3}%", 100.0 * x)
}

/// Judges a run.
pub fn judge(
    script: &Script,
    record: &Record,
    run_end: Duration,
    happened: &[Happened],
    deliveries: &HashMap<u64, Delivered>,
    teardown: &Teardown,
) -> Verdict {
    let mut v = Verdict::default();
    v.line(format!(
        "== {}: {} s, {TASKS} tasks, deadline {} ms, attempt timeout {} ms",
        script.name,
        run_end.as_secs(),
        DEADLINE.as_millis(),
        ATTEMPT_TIMEOUT.as_millis()
    ));
    calls(&mut v, script, record, run_end);
    duplicates(&mut v, record, run_end, deliveries);
    let first_fault = happened.first().map_or(run_end, |h| h.start);
    let all: Vec<usize> = (0..BACKENDS).collect();
    let warm = record.time_to_fair(&all, Duration::ZERO, first_fault);
    v.line(format!(
        "before any fault: fair share after {}",
        warm.map_or("never".into(), secs)
    ));
    v.check(warm.is_some(), "traffic was not fair before any fault");
    for h in happened {
        episode(&mut v, record, h);
    }
    let t = teardown;
    v.line(format!(
        "after drop: {} live tasks, {} proxy connections; heap {:+.1} KiB; RSS {:.1} MiB before, {:.1} MiB peak, {:.1} MiB after (anonymous {:.1} -> {:.1} MiB)",
        t.tasks_left,
        t.connections_left,
        (t.after.heap - t.before.heap) as f64 / 1024.0,
        mib(t.before.rss as f64),
        mib(t.peak_rss as f64),
        mib(t.after.rss as f64),
        mib(t.before.anon as f64),
        mib(t.after.anon as f64),
    ));
    v.check(
        t.tasks_left == 0,
        format!("{} tasks alive after drop", t.tasks_left),
    );
    v.check(
        t.connections_left == 0,
        format!("{} connections still open after drop", t.connections_left),
    );
    v.check(
        t.after.anon <= t.before.anon + ANON_RSS_SLACK,
        format!(
            "anonymous resident memory grew by {:.1} MiB (slack {:.0} MiB)",
            mib(t.after.anon as f64 - t.before.anon as f64),
            mib(ANON_RSS_SLACK as f64)
        ),
    );
    v.check(
        t.after.heap - t.before.heap <= HEAP_SLACK,
        format!(
            "heap grew by {} bytes over the run (slack {HEAP_SLACK})",
            t.after.heap - t.before.heap
        ),
    );
    v
}

fn calls(v: &mut Verdict, script: &Script, record: &Record, run_end: Duration) {
    let all = Duration::ZERO..run_end + BUCKET;
    let (ok, bad) = record.calls(true, all.start, all.end);
    let (ok_once, bad_once) = record.calls(false, all.start, all.end);
    let rate = ok as f64 / (ok + bad).max(1) as f64;
    v.line(format!(
        "calls: {} replayable, {} ok ({}); {} not replayable, {} ok ({})",
        ok + bad,
        ok,
        pct(rate),
        ok_once + bad_once,
        ok_once,
        pct(ok_once as f64 / (ok_once + bad_once).max(1) as f64)
    ));
    let errors: Vec<String> = record
        .errors()
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    v.line(format!(
        "errors: {}",
        if errors.is_empty() {
            "none".into()
        } else {
            errors.join(", ")
        }
    ));
    if let Some(target) = script.success_target {
        v.check(
            rate >= target,
            format!(
                "success of replayable calls {} < {}",
                pct(rate),
                pct(target)
            ),
        );
    }
    let late = record.late.load(std::sync::atomic::Ordering::Relaxed);
    let over = record
        .max_over_deadline_us
        .load(std::sync::atomic::Ordering::Relaxed);
    v.line(format!(
        "latency: p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms; latest past the deadline {:.1} ms; {} calls past deadline + {} ms",
        record.latency_ms(0.5),
        record.latency_ms(0.99),
        record.latency_ms(0.999),
        record.latency_ms(1.0),
        over as f64 / 1000.0,
        late,
        MARGIN.as_millis()
    ));
    v.check(
        late == 0,
        format!("{late} calls returned past deadline + margin"),
    );
}

fn duplicates(
    v: &mut Verdict,
    record: &Record,
    run_end: Duration,
    deliveries: &HashMap<u64, Delivered>,
) {
    let twice = deliveries
        .values()
        .filter(|d| !d.replayable && d.times > 1)
        .count();
    let extra: u64 = deliveries
        .values()
        .filter(|d| d.replayable)
        .map(|d| u64::from(d.times - 1))
        .sum();
    let most = deliveries.values().map(|d| d.times).max().unwrap_or(0);
    // Budgets: retries 20% of calls + 10/s, hedges 10% of calls, each over
    // 10 s windows, plus at most one overdraw per racing task per window.
    let calls = record.total_calls() as f64;
    let windows = (run_end.as_secs_f64() / 10.0).ceil() + 1.0;
    let bound = (0.3 * calls + windows * (100.0 + 2.0 * TASKS as f64)) as u64;
    v.line(format!(
        "deliveries: {} calls received; not replayable received twice: {twice}; replayable extra copies: {extra} (budget bound {bound}); most copies of one call: {most}",
        deliveries.len()
    ));
    v.check(
        twice == 0,
        format!("{twice} non-replayable calls were received twice"),
    );
    v.check(
        extra <= bound,
        format!("{extra} extra copies exceed the budgets' {bound}"),
    );
    v.check(
        most <= MAX_DELIVERIES,
        format!("a call was received {most} times (at most {MAX_DELIVERIES})"),
    );
}

fn episode(v: &mut Verdict, record: &Record, h: &Happened) {
    let mut line = format!(
        "fault {} on slot {} at {} for {}",
        h.kind.name(),
        h.slot,
        secs(h.start),
        secs(h.end - h.start)
    );
    // The faulty slot's share of new attempts, per 500 ms, from 1 s before
    // the fault to 3 s after it (among the slots announced then).
    let step = Duration::from_millis(500);
    let mut around: Vec<usize> = h.live.clone();
    if !around.contains(&h.slot) {
        around.push(h.slot);
    }
    let from = h.start.saturating_sub(Duration::from_secs(1));
    let to = (h.end + Duration::from_secs(3)).min(h.next);
    let series = record.share_series(h.slot, &around, from, to, step);
    let (ok, bad) = record.calls(true, h.start, h.next);
    let (ok_once, bad_once) = record.calls(false, h.start, h.next);
    let _ = write!(
        line,
        "\n  failed calls until the next fault: {bad} of {} replayable, {bad_once} of {} not",
        ok + bad,
        ok_once + bad_once
    );
    let _ = write!(line, "\n  share of attempts per 500 ms:");
    for (_, share, _) in &series {
        let _ = write!(line, " {:.1}", 100.0 * share);
    }
    v.line(line);
    if h.kind.is_stall() {
        let judged: Vec<_> = series
            .iter()
            .filter(|(t, _, _)| *t >= h.start + STALL_REACTION && *t + step <= h.end)
            .collect();
        let worst = judged.iter().map(|(_, s, _)| *s).fold(0.0, f64::max);
        let fewest = judged.iter().map(|(_, _, n)| *n).min().unwrap_or(0);
        v.line(format!(
            "  from {} after the start: largest share {} (target < {}; fewest attempts in a window {fewest})",
            secs(STALL_REACTION),
            pct(worst),
            pct(STALL_SHARE)
        ));
        v.check(
            !judged.is_empty() && worst < STALL_SHARE,
            format!(
                "{}: stalled slot's share {} >= {} after {}",
                h.kind.name(),
                pct(worst),
                pct(STALL_SHARE),
                secs(STALL_REACTION)
            ),
        );
    }
    if let Some(new) = h.new_slot {
        let first = (h.end.as_millis() / BUCKET.as_millis()) as u32;
        let taken = (first..)
            .map(|b| BUCKET * b)
            .take_while(|t| *t < h.next)
            .find(|t| record.attempts(new, *t, *t + BUCKET) > 0)
            .map(|t| t + BUCKET - h.end);
        let limit = Duration::from_secs(LOCAL_TTL + 1);
        v.line(format!(
            "  new slot {new} took its first attempt {} after the announcement (target {})",
            taken.map_or("never".into(), secs),
            secs(limit)
        ));
        v.check(
            taken.is_some_and(|t| t <= limit),
            format!(
                "the announced backend took no traffic within {}",
                secs(limit)
            ),
        );
    }
    let until = (h.end + FAIR_WITHIN).min(h.next);
    let fair = record.time_to_fair(&h.live, h.end, until);
    v.line(format!(
        "  fair share back {} after the fault ended (target {})",
        fair.map_or(format!("not within {}", secs(until - h.end)), secs),
        secs(FAIR_WITHIN)
    ));
    v.check(
        fair.is_some(),
        format!(
            "{}: no fair share within {}",
            h.kind.name(),
            secs(until - h.end)
        ),
    );
}
