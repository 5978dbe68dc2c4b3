//! SVG plots of a report: latency CDF per configuration, success over time,
//! and each endpoint's share of attempts over time per configuration.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::report::{Report, Run};

const SIZE: (u32, u32) = (960, 540);
/// At most this many points per line (buckets are merged to fit).
const POINTS: usize = 400;
/// The deepest percentile the CDF shows: 99.99%.
const NINES: f64 = 4.0;

fn failed<E: std::fmt::Display>(e: E) -> io::Error {
    io::Error::other(e.to_string())
}

/// A file-name-safe form of a configuration name.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

impl Report {
    /// Writes the plots into `dir` (created if missing) and returns their
    /// paths: `cdf.svg` (time to success by percentile, one line per
    /// configuration), `success.svg` (share of requests succeeding, by
    /// arrival time), `share-<configuration>.svg` (each endpoint's share
    /// of attempts over time; left out above 50 backends, where one line
    /// per backend says nothing) and, when a concurrency limit refused
    /// calls, `sent-p99.svg` (the p99 time of the calls that were sent, by
    /// arrival time). With several loads each file name ends in
    /// `-load<percent>`.
    pub fn write_plots(&self, dir: impl AsRef<Path>) -> io::Result<Vec<PathBuf>> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)?;
        let mut loads: Vec<f64> = Vec::new();
        for r in &self.runs {
            if !loads.iter().any(|l| (l - r.load()).abs() < 1e-9) {
                loads.push(r.load());
            }
        }
        let mut written = Vec::new();
        for &load in &loads {
            let suffix = if loads.len() > 1 {
                format!("-load{:.0}", load * 100.0)
            } else {
                String::new()
            };
            let runs: Vec<&Run> = self
                .runs
                .iter()
                .filter(|r| (r.load() - load).abs() < 1e-9)
                .collect();
            let title = |what: &str| {
                if suffix.is_empty() {
                    format!("{}: {what}", self.scenario)
                } else {
                    format!("{} at {:.0}% load: {what}", self.scenario, load * 100.0)
                }
            };
            let path = dir.join(format!("cdf{suffix}.svg"));
            cdf(&path, &title("time to a successful answer"), &runs)?;
            written.push(path);
            let path = dir.join(format!("success{suffix}.svg"));
            success(
                &path,
                &title("share of requests answered within budget"),
                &runs,
            )?;
            written.push(path);
            if runs.iter().any(|r| r.refused_by_limit() > 0) {
                let path = dir.join(format!("sent-p99{suffix}.svg"));
                sent_p99(&path, &title("p99 time of the calls sent"), &runs)?;
                written.push(path);
            }
            for run in runs.iter().filter(|r| r.backends().len() <= 50) {
                let path = dir.join(format!("share-{}{suffix}.svg", slug(run.config())));
                share(
                    &path,
                    &title(&format!("{}: share of attempts", run.config())),
                    run,
                )?;
                written.push(path);
            }
        }
        Ok(written)
    }
}

fn canvas(path: &Path) -> io::Result<DrawingArea<SVGBackend<'_>, Shift>> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(failed)?;
    Ok(root)
}

/// Time to success against percentile: x is latency (log scale, drawn as
/// log10 on a linear axis so that short ranges still get labels), y is the
/// share of requests answered successfully by then, as "nines" (90%, 99%,
/// …) so the tail is visible. A line stops at the run's success share.
fn cdf(path: &Path, title: &str, runs: &[&Run]) -> io::Result<()> {
    let root = canvas(path)?;
    let ms = |us: u64| (us as f64 / 1e3).max(0.5);
    let max = runs
        .iter()
        .filter_map(|r| r.latencies_us().last().copied())
        .map(ms)
        .fold(1.0, f64::max);
    let min = runs
        .iter()
        .filter_map(|r| r.latencies_us().first().copied())
        .map(ms)
        .fold(max, f64::min);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((min / 1.25).log10()..(max * 1.25).log10(), 0f64..NINES)
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms)")
        .x_labels(12)
        .x_label_formatter(&|v| {
            let ms = 10f64.powf(*v);
            if ms < 10.0 {
                format!("{ms:.1}")
            } else {
                format!("{ms:.0}")
            }
        })
        .y_desc("answered successfully")
        .y_labels(NINES as usize + 1)
        .y_label_formatter(&|n| {
            let p = 100.0 * (1.0 - 10f64.powf(-n));
            format!(
                "{}%",
                format!("{p:.2}")
                    .trim_end_matches('0')
                    .trim_end_matches('.')
            )
        })
        .draw()
        .map_err(failed)?;
    for (i, run) in runs.iter().enumerate() {
        let lat = run.latencies_us();
        let n = run.requests().max(1) as f64;
        // Sample ranks evenly in "nines", where the plot has its detail.
        let mut points = Vec::new();
        for k in 0..=POINTS {
            let nines = NINES * k as f64 / POINTS as f64;
            let rank = ((1.0 - 10f64.powf(-nines)) * n).ceil() as usize;
            let Some(&us) = lat.get(rank.saturating_sub(1)) else {
                break;
            };
            points.push((ms(us).log10(), nines));
        }
        line(&mut chart, i, run.config(), points)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(failed)
}

/// Merges the buckets of a series into at most `points` groups.
fn groups(len: usize, points: usize) -> impl Iterator<Item = Range<usize>> {
    let per = len.div_ceil(points.max(1)).max(1);
    (0..len.div_ceil(per)).map(move |g| g * per..((g + 1) * per).min(len))
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn success(path: &Path, title: &str, runs: &[&Run]) -> io::Result<()> {
    let root = canvas(path)?;
    let end = runs
        .iter()
        .map(|r| seconds(r.bucket()) * r.success_over_time().len() as f64)
        .fold(1.0, f64::max);
    let series: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|run| {
            let (requests, successes) = run.counts_over_time();
            groups(requests.len(), POINTS)
                .filter_map(|g| {
                    let n: u64 = requests[g.clone()].iter().map(|&x| u64::from(x)).sum();
                    let ok: u64 = successes[g.clone()].iter().map(|&x| u64::from(x)).sum();
                    (n > 0).then(|| {
                        (
                            seconds(run.bucket()) * g.start as f64,
                            100.0 * ok as f64 / n as f64,
                        )
                    })
                })
                .collect()
        })
        .collect();
    // The y axis starts at the lowest tens below the data, for detail.
    let low = series.iter().flatten().map(|p| p.1).fold(100.0, f64::min);
    let low = ((low - 1.0) / 10.0).floor().max(0.0) * 10.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end, low..100.5)
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc("arrival time (s)")
        .y_desc("succeeded (%)")
        .draw()
        .map_err(failed)?;
    for (i, (run, points)) in runs.iter().zip(series).enumerate() {
        line(&mut chart, i, run.config(), points)?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerLeft)?;
    root.present().map_err(failed)
}

/// The p99 time of the calls that were sent (refused ones left out), per
/// time bucket by arrival, one line per configuration.
fn sent_p99(path: &Path, title: &str, runs: &[&Run]) -> io::Result<()> {
    let root = canvas(path)?;
    let series: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|run| {
            let b = run.bucket();
            (0..run.success_over_time().len())
                .filter_map(|i| {
                    let from = b * i as u32;
                    let p99 = run.sent_latency_between(0.99, from, from + b)?;
                    Some((seconds(from), p99.as_secs_f64() * 1e3))
                })
                .collect()
        })
        .collect();
    let end = series.iter().flatten().map(|p| p.0).fold(1.0, f64::max);
    let top = series.iter().flatten().map(|p| p.1).fold(1.0, f64::max) * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end, 0f64..top)
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc("arrival time (s)")
        .y_desc("p99 of the calls sent (ms)")
        .draw()
        .map_err(failed)?;
    for (i, (run, points)) in runs.iter().zip(series).enumerate() {
        line(&mut chart, i, run.config(), points)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(failed)
}

fn share(path: &Path, title: &str, run: &Run) -> io::Result<()> {
    let root = canvas(path)?;
    let names = run.backends();
    let buckets = run.success_over_time().len();
    let end = (seconds(run.bucket()) * buckets as f64).max(1.0);
    // Fewer points per line when there are many lines, to keep files small.
    let points = (8_000 / names.len().max(1)).clamp(50, POINTS);
    let series: Vec<Vec<(f64, f64)>> = (0..names.len())
        .map(|b| {
            let attempts = run.attempts_over_time(b);
            groups(buckets, points)
                .filter_map(|g| {
                    let (mine, all) = g.clone().fold((0u64, 0u64), |(m, a), i| {
                        (m + u64::from(attempts[i].0), a + u64::from(attempts[i].1))
                    });
                    (all > 0).then(|| {
                        (
                            seconds(run.bucket()) * g.start as f64,
                            100.0 * mine as f64 / all as f64,
                        )
                    })
                })
                .collect()
        })
        .collect();
    let top = series
        .iter()
        .flatten()
        .map(|p| p.1)
        .fold(1.0, f64::max)
        .min(100.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end, 0f64..top * 1.05)
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("share of attempts (%)")
        .draw()
        .map_err(failed)?;
    // One color per backend group, one line per endpoint; the legend names
    // each group once.
    let mut groups_seen: Vec<&str> = Vec::new();
    for (b, points) in series.into_iter().enumerate() {
        let group = names[b].as_str();
        let g = match groups_seen.iter().position(|s| *s == group) {
            Some(g) => g,
            None => {
                groups_seen.push(group);
                groups_seen.len() - 1
            }
        };
        let first = groups_seen.len() - 1 == g && names[..b].iter().all(|n| n != group);
        let color = Palette99::pick(g).to_rgba();
        let drawn = chart
            .draw_series(LineSeries::new(points, color.stroke_width(1)))
            .map_err(failed)?;
        if first {
            drawn.label(group).legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(failed)
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One configuration's line, in the palette's `i`-th colour, with its
/// legend entry.
fn line(
    chart: &mut Chart<'_, '_>,
    i: usize,
    label: &str,
    points: Vec<(f64, f64)>,
) -> io::Result<()> {
    let color = Palette99::pick(i).to_rgba();
    chart
        .draw_series(LineSeries::new(points, color.stroke_width(2)))
        .map_err(failed)?
        .label(label)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    Ok(())
}

fn legend<'a, DB: DrawingBackend + 'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> io::Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(position)
        .draw()
        .map_err(failed)
}
