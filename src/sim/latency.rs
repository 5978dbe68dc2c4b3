//! Latency distributions of virtual backends, sampled from a seeded
//! generator.

use std::time::Duration;

use crate::rng::Rng;

/// A latency distribution. Values are in seconds internally; samples below
/// zero (a normal's left tail) are taken as zero.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Latency {
    Constant(f64),
    Uniform {
        low: f64,
        high: f64,
    },
    /// Truncated at zero.
    Normal {
        mean: f64,
        stddev: f64,
    },
    /// `exp(N(mu, sigma²))`.
    LogNormal {
        mu: f64,
        sigma: f64,
    },
    Exponential {
        mean: f64,
    },
    /// Components with cumulative weights that end at 1.
    Mixture(Vec<(f64, Latency)>),
    /// A quantile function through `(q, value)` points, linear between them,
    /// from q = 0 to q = 1.
    Percentiles(Vec<(f64, f64)>),
}

/// The standard normal quantile at 0.99.
const Z99: f64 = 2.326_347_874_040_841;

impl Latency {
    /// A log-normal through a median and a 99th percentile.
    pub(crate) fn lognormal(p50: f64, p99: f64) -> Result<Self, String> {
        if !(p50 > 0.0 && p99 > p50) {
            return Err(format!(
                "a log-normal needs 0 < p50 < p99, got p50 {p50} s and p99 {p99} s"
            ));
        }
        Ok(Latency::LogNormal {
            mu: p50.ln(),
            sigma: (p99.ln() - p50.ln()) / Z99,
        })
    }

    /// A mixture of `(weight, component)`; weights are positive and are
    /// normalised to sum to 1.
    pub(crate) fn mixture(parts: Vec<(f64, Latency)>) -> Result<Self, String> {
        if parts.is_empty() {
            return Err("a mixture needs at least one component".into());
        }
        if let Some((w, _)) = parts.iter().find(|(w, _)| !(w.is_finite() && *w > 0.0)) {
            return Err(format!("mixture weights must be positive, got {w}"));
        }
        let total: f64 = parts.iter().map(|(w, _)| w).sum();
        let mut acc = 0.0;
        let n = parts.len();
        let parts = parts
            .into_iter()
            .enumerate()
            .map(|(i, (w, l))| {
                acc += w / total;
                (if i + 1 == n { 1.0 } else { acc }, l)
            })
            .collect();
        Ok(Latency::Mixture(parts))
    }

    /// A percentile table: `(percentile 0..=100, value)` points, starting at
    /// 0 and ending at 100, percentiles increasing and values not
    /// decreasing.
    pub(crate) fn percentiles(points: Vec<(f64, f64)>) -> Result<Self, String> {
        if points.len() < 2 {
            return Err("a percentile table needs at least the 0th and 100th percentiles".into());
        }
        if points[0].0 != 0.0 || points[points.len() - 1].0 != 100.0 {
            return Err("a percentile table must start at percentile 0 and end at 100".into());
        }
        for pair in points.windows(2) {
            let ((p0, v0), (p1, v1)) = (pair[0], pair[1]);
            if p1 <= p0 {
                return Err(format!("percentiles must increase, got {p1} after {p0}"));
            }
            if v1 < v0 {
                return Err(format!(
                    "latencies must not decrease with the percentile, got {v1} s at p{p1} after {v0} s at p{p0}"
                ));
            }
        }
        Ok(Latency::Percentiles(
            points.into_iter().map(|(p, v)| (p / 100.0, v)).collect(),
        ))
    }

    /// Checks the parameters of a non-composite distribution.
    pub(crate) fn check(&self) -> Result<(), String> {
        let finite = |name: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "{name} must be a finite, non-negative time, got {v}"
                ))
            }
        };
        match self {
            Latency::Constant(v) => finite("constant", *v),
            Latency::Uniform { low, high } => {
                finite("low", *low)?;
                finite("high", *high)?;
                if high < low {
                    return Err(format!("uniform needs low <= high, got {low} > {high}"));
                }
                Ok(())
            }
            Latency::Normal { mean, stddev } => {
                finite("mean", *mean)?;
                finite("stddev", *stddev)
            }
            Latency::Exponential { mean } => {
                finite("mean", *mean)?;
                if *mean == 0.0 {
                    return Err("an exponential's mean must be above zero".into());
                }
                Ok(())
            }
            Latency::LogNormal { .. } | Latency::Mixture(_) | Latency::Percentiles(_) => Ok(()),
        }
    }

    /// One sample, in seconds (never negative).
    pub(crate) fn sample_secs(&self, rng: &mut Rng) -> f64 {
        let v = match self {
            Latency::Constant(v) => *v,
            Latency::Uniform { low, high } => low + (high - low) * rng.unit(),
            Latency::Normal { mean, stddev } => mean + stddev * standard_normal(rng),
            Latency::LogNormal { mu, sigma } => (mu + sigma * standard_normal(rng)).exp(),
            Latency::Exponential { mean } => -mean * (1.0 - rng.unit()).ln(),
            Latency::Mixture(parts) => {
                let u = rng.unit();
                let (_, part) = parts
                    .iter()
                    .find(|(cum, _)| u < *cum)
                    .unwrap_or(&parts[parts.len() - 1]);
                part.sample_secs(rng)
            }
            Latency::Percentiles(points) => quantile(points, rng.unit()),
        };
        v.max(0.0)
    }

    /// One sample scaled by `factor`, rounded to the simulator's resolution
    /// (1 ms, tokio's timer tick) to the nearest millisecond, so that the
    /// mean is kept rather than biased up by the timer's rounding.
    pub(crate) fn sample(&self, rng: &mut Rng, factor: f64) -> Duration {
        let ms = (self.sample_secs(rng) * factor * 1_000.0).round();
        Duration::from_millis(ms.min(1e12) as u64)
    }

    /// The mean in seconds (a normal's truncation at zero is ignored).
    pub(crate) fn mean(&self) -> f64 {
        match self {
            Latency::Constant(v) => *v,
            Latency::Uniform { low, high } => (low + high) / 2.0,
            Latency::Normal { mean, .. } => *mean,
            Latency::LogNormal { mu, sigma } => (mu + sigma * sigma / 2.0).exp(),
            Latency::Exponential { mean } => *mean,
            Latency::Mixture(parts) => {
                let mut prev = 0.0;
                parts
                    .iter()
                    .map(|(cum, l)| {
                        let w = cum - prev;
                        prev = *cum;
                        w * l.mean()
                    })
                    .sum()
            }
            Latency::Percentiles(points) => points
                .windows(2)
                .map(|p| (p[1].0 - p[0].0) * (p[0].1 + p[1].1) / 2.0)
                .sum(),
        }
    }
}

/// The value at quantile `u` of a piecewise-linear quantile function.
fn quantile(points: &[(f64, f64)], u: f64) -> f64 {
    let i = points
        .partition_point(|(q, _)| *q <= u)
        .clamp(1, points.len() - 1);
    let ((q0, v0), (q1, v1)) = (points[i - 1], points[i]);
    v0 + (v1 - v0) * ((u - q0) / (q1 - q0)).clamp(0.0, 1.0)
}

/// A standard normal draw (Box–Muller; one of the pair is used, which keeps
/// the generator's use per sample fixed).
fn standard_normal(rng: &mut Rng) -> f64 {
    let u1 = 1.0 - rng.unit();
    let u2 = rng.unit();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted_samples(l: &Latency, n: usize) -> Vec<f64> {
        let mut rng = Rng::seeded(9);
        let mut v: Vec<f64> = (0..n).map(|_| l.sample_secs(&mut rng)).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    fn at(v: &[f64], q: f64) -> f64 {
        v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
    }

    #[test]
    fn sample_means_match_the_declared_means() {
        let cases = [
            Latency::Constant(0.01),
            Latency::Uniform {
                low: 0.004,
                high: 0.024,
            },
            Latency::Normal {
                mean: 0.167,
                stddev: 0.005,
            },
            Latency::lognormal(0.02, 0.08).unwrap(),
            Latency::Exponential { mean: 0.004 },
            Latency::mixture(vec![
                (9.0, Latency::Constant(0.01)),
                (1.0, Latency::Constant(0.11)),
            ])
            .unwrap(),
            Latency::percentiles(vec![(0.0, 0.001), (50.0, 0.01), (100.0, 0.1)]).unwrap(),
        ];
        let n = 200_000;
        for l in cases {
            let v = sorted_samples(&l, n);
            let mean = v.iter().sum::<f64>() / n as f64;
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            // Six standard errors of the sample mean.
            let bound = 6.0 * (var / n as f64).sqrt() + 1e-12;
            assert!(
                (mean - l.mean()).abs() <= bound,
                "{l:?}: {mean} vs {}",
                l.mean()
            );
        }
    }

    #[test]
    fn lognormal_and_table_hit_their_percentiles() {
        let v = sorted_samples(&Latency::lognormal(0.02, 0.08).unwrap(), 400_000);
        assert!((at(&v, 0.5) / 0.02 - 1.0).abs() < 0.01);
        assert!((at(&v, 0.99) / 0.08 - 1.0).abs() < 0.02);
        let table =
            Latency::percentiles(vec![(0.0, 0.0), (90.0, 0.01), (99.0, 0.05), (100.0, 1.0)])
                .unwrap();
        let v = sorted_samples(&table, 400_000);
        assert!((at(&v, 0.9) / 0.01 - 1.0).abs() < 0.01);
        assert!((at(&v, 0.99) / 0.05 - 1.0).abs() < 0.02);
        assert!(v[v.len() - 1] <= 1.0);
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(Latency::lognormal(0.0, 1.0).is_err());
        assert!(Latency::lognormal(0.05, 0.01).is_err());
        assert!(Latency::mixture(vec![]).is_err());
        assert!(Latency::mixture(vec![(0.0, Latency::Constant(1.0))]).is_err());
        assert!(Latency::percentiles(vec![(0.0, 1.0)]).is_err());
        assert!(Latency::percentiles(vec![(1.0, 1.0), (100.0, 2.0)]).is_err());
        assert!(Latency::percentiles(vec![(0.0, 2.0), (100.0, 1.0)]).is_err());
        assert!(
            Latency::percentiles(vec![(0.0, 1.0), (50.0, 1.0), (50.0, 2.0), (100.0, 3.0)]).is_err()
        );
        assert!(
            Latency::Uniform {
                low: 2.0,
                high: 1.0
            }
            .check()
            .is_err()
        );
        assert!(Latency::Exponential { mean: 0.0 }.check().is_err());
        assert!(Latency::Constant(f64::NAN).check().is_err());
    }

    #[test]
    fn samples_round_to_the_nearest_millisecond() {
        let mut rng = Rng::seeded(1);
        assert_eq!(
            Latency::Constant(0.0024).sample(&mut rng, 1.0),
            Duration::from_millis(2)
        );
        assert_eq!(
            Latency::Constant(0.0026).sample(&mut rng, 1.0),
            Duration::from_millis(3)
        );
        assert_eq!(
            Latency::Constant(0.002).sample(&mut rng, 3.0),
            Duration::from_millis(6)
        );
    }
}
