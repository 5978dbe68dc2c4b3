//! Checks a parsed scenario file and turns it into the simulator's model.
//! Every error names where in the file it is.

use std::time::Duration;

use super::backend::{BackendSpec, Behaviour, Cold, Drift, Phase};
use super::client::{Arrivals, ClientSpec, Keys};
use super::config::{BalancerSpec, ConfigSpec, HashSpec, Stack, TowerLoad};
use super::convert_policy::{breaker, err, hedge, retry};
use super::format::*;
use super::latency::Latency;
use super::{Scenario, ScenarioError};
use crate::balance::{P2c, SlowStartSettings};
use crate::channel::ChannelPolicy;
use crate::policy::throttle::ThrottleSettings;

type Result<T> = std::result::Result<T, ScenarioError>;

fn secs(d: Dur) -> f64 {
    d.0.as_secs_f64()
}

fn share(at: &str, v: f64) -> Result<f64> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        err(at, format!("must be a share between 0 and 1, got {v}"))
    }
}

pub(crate) fn scenario(file: FileScenario, default_name: &str) -> Result<Scenario> {
    let duration = file.duration.0;
    let warmup = file.warmup.map_or(Duration::ZERO, |d| d.0);
    super::check_duration(duration, warmup).or_else(|e| err("duration", e))?;
    let bucket = file.bucket.map_or(Duration::from_millis(100), |d| d.0);
    if bucket < Duration::from_millis(1) || bucket > duration {
        return err("bucket", "must be between 1 ms and the duration");
    }
    if duration.as_nanos() / bucket.as_nanos() > 1_000_000 {
        return err(
            "bucket",
            "gives more than a million buckets: make it longer",
        );
    }
    let loads = file.load.unwrap_or_else(|| vec![1.0]);
    super::check_loads(&loads).or_else(|e| err("load", e))?;
    let backends = each(file.backends, "backends", backend)?;
    if backends.iter().map(|b| b.count as usize).sum::<usize>() > 65_536 {
        return err("backends", "at most 65536 backends in all");
    }
    let clients = each(file.clients, "clients", client)?;
    let configs = each(file.configs, "configs", config)?;
    for (i, c) in configs.iter().enumerate() {
        if configs[..i].iter().any(|o| o.name == c.name) {
            return err(
                &format!("configs[{i}]"),
                format!("the name `{}` is used twice", c.name),
            );
        }
    }
    Ok(Scenario {
        name: file.name.unwrap_or_else(|| default_name.to_string()),
        description: file.description.unwrap_or_default(),
        seed: file.seed,
        duration,
        warmup,
        bucket,
        loads,
        backends,
        clients,
        configs,
    })
}

/// Converts each entry of a `[[table]]` list (at least one), naming it
/// `table[i]` in errors.
fn each<T, U>(
    items: Vec<T>,
    table: &str,
    convert: impl Fn(T, &str) -> Result<U>,
) -> Result<Vec<U>> {
    if items.is_empty() {
        return err(table, format!("at least one [[{table}]] entry is needed"));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| convert(item, &format!("{table}[{i}]")))
        .collect()
}

fn latency(l: FileLatency, at: &str) -> Result<Latency> {
    let made = match l {
        FileLatency::Constant(v) => Ok(Latency::Constant(secs(v))),
        FileLatency::Uniform { low, high } => Ok(Latency::Uniform {
            low: secs(low),
            high: secs(high),
        }),
        FileLatency::Normal { mean, stddev } => Ok(Latency::Normal {
            mean: secs(mean),
            stddev: secs(stddev),
        }),
        FileLatency::Lognormal { p50, p99 } => Latency::lognormal(secs(p50), secs(p99)),
        FileLatency::Exponential { mean } => Ok(Latency::Exponential { mean: secs(mean) }),
        FileLatency::Mixture(parts) => {
            let parts = parts
                .into_iter()
                .enumerate()
                .map(|(i, p)| Ok((p.weight, latency(p.latency, &format!("{at}.mixture[{i}]"))?)))
                .collect::<Result<Vec<_>>>()?;
            Latency::mixture(parts)
        }
        FileLatency::Percentiles(points) => {
            Latency::percentiles(points.into_iter().map(|(p, v)| (p, secs(v))).collect())
        }
    };
    let made = made.or_else(|e| err(at, e))?;
    made.check().or_else(|e| err(at, e))?;
    Ok(made)
}

fn rate(at: &str, v: Option<f64>) -> Result<Option<f64>> {
    v.map(|v| share(at, v)).transpose()
}

fn backend(b: FileBackend, at: &str) -> Result<BackendSpec> {
    let count = b.count.unwrap_or(1);
    if count == 0 {
        return err(&format!("{at}.count"), "must be at least 1");
    }
    if b.concurrency == Some(0) {
        return err(
            &format!("{at}.concurrency"),
            "must be at least 1 (omit it for unlimited)",
        );
    }
    let base = Behaviour {
        latency: latency(b.latency, &format!("{at}.latency"))?,
        concurrency: b.concurrency,
        failure_rate: rate(&format!("{at}.failure_rate"), b.failure_rate)?.unwrap_or(0.0),
        failure_latency: match b.failure_latency {
            Some(l) => latency(l, &format!("{at}.failure_latency"))?,
            None => Latency::Constant(0.0),
        },
        stall_rate: rate(&format!("{at}.stall_rate"), b.stall_rate)?.unwrap_or(0.0),
        down: false,
    };
    if base.failure_rate + base.stall_rate > 1.0 {
        return err(at, "failure_rate + stall_rate must not exceed 1");
    }
    let mut phases = Vec::new();
    for (i, p) in b.phases.into_iter().enumerate() {
        let at = format!("{at}.phases[{i}]");
        let to = p.to.map_or(Duration::MAX, |d| d.0);
        if to <= p.from.0 {
            return err(&at, "`to` must be after `from`");
        }
        let concurrency = match p.concurrency {
            None => None,
            Some(FileConcurrency::Servers(0)) => {
                return err(&format!("{at}.concurrency"), "must be at least 1");
            }
            Some(FileConcurrency::Servers(n)) => Some(Some(n)),
            Some(FileConcurrency::Word(w)) if w == "unlimited" => Some(None),
            Some(FileConcurrency::Word(w)) => {
                return err(
                    &format!("{at}.concurrency"),
                    format!("a number of servers or \"unlimited\", got `{w}`"),
                );
            }
        };
        phases.push(Phase {
            from: p.from.0,
            to,
            latency: p
                .latency
                .map(|l| latency(l, &format!("{at}.latency")))
                .transpose()?,
            concurrency,
            failure_rate: rate(&format!("{at}.failure_rate"), p.failure_rate)?,
            failure_latency: p
                .failure_latency
                .map(|l| latency(l, &format!("{at}.failure_latency")))
                .transpose()?,
            stall_rate: rate(&format!("{at}.stall_rate"), p.stall_rate)?,
            down: p.down,
            removed: p.removed,
        });
    }
    let drift = match b.drift {
        None => None,
        Some(d) => {
            if base.latency.mean() <= 0.0 {
                return err(
                    &format!("{at}.drift"),
                    "needs a latency with a mean above zero",
                );
            }
            Some(Drift {
                every: latency(d.every, &format!("{at}.drift.every"))?,
                mean: latency(d.mean, &format!("{at}.drift.mean"))?,
            })
        }
    };
    let cold = match b.cold {
        None => None,
        Some(c) => {
            let at = format!("{at}.cold");
            if !(c.factor.is_finite() && c.factor > 0.0) {
                return err(&at, format!("factor must be above 0, got {}", c.factor));
            }
            if c.warm_by.0 < c.hold.0 {
                return err(&at, "warm_by must not be before hold");
            }
            Some(Cold {
                factor: c.factor,
                hold: c.hold.0,
                warm_by: c.warm_by.0,
            })
        }
    };
    Ok(BackendSpec {
        name: b.name,
        count,
        weight: b.weight.unwrap_or(crate::DEFAULT_WEIGHT),
        base,
        phases,
        drift,
        drop_abandoned: b.drop_abandoned.unwrap_or(false),
        join: b.join.map_or(Duration::ZERO, |d| d.0),
        cold,
    })
}

fn client(c: FileClient, at: &str) -> Result<ClientSpec> {
    let count = c.count.unwrap_or(1);
    if count == 0 {
        return err(&format!("{at}.count"), "must be at least 1");
    }
    let arrivals = match (c.arrivals, c.rate, c.concurrency) {
        (FileArrivals::Poisson | FileArrivals::Fixed, Some(rate), None) => {
            if !(rate.is_finite() && rate > 0.0) {
                return err(
                    &format!("{at}.rate"),
                    "must be a positive number of requests per second",
                );
            }
            if c.arrivals == FileArrivals::Poisson {
                Arrivals::Poisson { rate }
            } else {
                Arrivals::Fixed { rate }
            }
        }
        (FileArrivals::Closed, None, Some(concurrency)) if concurrency > 0 => {
            Arrivals::Closed { concurrency }
        }
        (FileArrivals::Closed, _, _) => {
            return err(
                at,
                "closed-loop arrivals take a `concurrency` of at least 1 and no `rate`",
            );
        }
        _ => return err(at, "open-loop arrivals take a `rate` and no `concurrency`"),
    };
    let keys = match c.keys {
        None => None,
        Some(k) => {
            let zipf = k.zipf.unwrap_or(0.0);
            if !(1..=10_000_000).contains(&k.count) {
                return err(&format!("{at}.keys.count"), "must be from 1 to 10,000,000");
            }
            if !(zipf.is_finite() && zipf >= 0.0) {
                return err(
                    &format!("{at}.keys.zipf"),
                    format!("must be a finite exponent of at least 0, got {zipf}"),
                );
            }
            Some(Keys {
                count: k.count,
                zipf,
            })
        }
    };
    let ramp = match c.ramp {
        None => None,
        Some(points) => {
            if matches!(arrivals, Arrivals::Closed { .. }) {
                return err(&format!("{at}.ramp"), "applies to open-loop arrivals only");
            }
            let points = points.into_iter().map(|(t, f)| (t.0, f)).collect();
            Some(super::limits::ramp(points, &format!("{at}.ramp"))?)
        }
    };
    Ok(ClientSpec {
        count,
        arrivals,
        budget: c.budget.map(|b| b.0),
        keys,
        ramp,
    })
}

fn config(c: FileConfig, at: &str) -> Result<ConfigSpec> {
    let at = format!("{at} ({})", c.name);
    let caller_throttle = c
        .caller_throttle
        .as_ref()
        .map(|t| throttle(t, &at))
        .transpose()?;
    let stack = if let Some(tower) = c.tower {
        let towline_only = c.balancer.is_some()
            || c.default_rtt.is_some()
            || c.decay.is_some()
            || c.timeout.is_some()
            || c.deadline.is_some()
            || c.retry.is_some()
            || c.hedge.is_some()
            || c.breaker.is_some()
            || c.max_ejected_share.is_some()
            || c.panic_threshold.is_some()
            || c.throttle.is_some()
            || c.slow_start.is_some()
            || c.hash.is_some()
            || c.subset.is_some()
            || c.concurrency_limit.is_some()
            || c.endpoint_concurrency_limit.is_some();
        if towline_only {
            return err(&at, "a tower baseline takes no balancer or policy settings");
        }
        Stack::Tower(match tower {
            FileTower::PeakEwma => TowerLoad::PeakEwma,
            FileTower::Pending => TowerLoad::Pending,
        })
    } else {
        towline(&c, &at)?
    };
    Ok(ConfigSpec {
        name: c.name.clone(),
        stack,
        caller_throttle,
    })
}

fn towline(c: &FileConfig, at: &str) -> Result<Stack> {
    let balancer = match c.balancer.unwrap_or(FileBalancer::P2cPeakEwma) {
        FileBalancer::P2cPeakEwma => BalancerSpec::P2cPeakEwma {
            default_rtt: c.default_rtt.map_or(P2c::DEFAULT_RTT, |d| d.0),
            decay: c.decay.map_or(P2c::DEFAULT_DECAY, |d| d.0),
        },
        _ if c.default_rtt.is_some() || c.decay.is_some() => {
            return err(
                at,
                "default_rtt and decay apply to the p2c_peak_ewma balancer only",
            );
        }
        FileBalancer::P2cPending => BalancerSpec::P2cPending,
        FileBalancer::RoundRobin => BalancerSpec::RoundRobin,
        FileBalancer::Random => BalancerSpec::Random,
        FileBalancer::WeightedRandom => BalancerSpec::WeightedRandom,
        FileBalancer::WeightedRoundRobin => BalancerSpec::WeightedRoundRobin,
    };
    let mut policy = ChannelPolicy::default()
        .with_timeout(c.timeout.map(|d| d.0))
        .with_deadline(c.deadline.map(|d| d.0));
    if let Some(r) = &c.retry {
        policy = policy.with_retry(Some(retry(r, at)?));
    }
    if let Some(h) = &c.hedge {
        policy = policy.with_hedge(Some(hedge(h, at)?));
    }
    if let Some(b) = &c.breaker {
        policy = policy.with_breaker(Some(breaker(b, at)?));
    }
    if let Some(s) = c.max_ejected_share {
        policy = policy.with_max_ejected_share(s);
    }
    if let Some(s) = c.panic_threshold {
        policy = policy.with_panic_threshold(s);
    }
    if let Some(t) = &c.throttle {
        policy = policy.with_throttle(Some(throttle(t, at)?));
    }
    if let Some(s) = &c.slow_start {
        let d = SlowStartSettings::default();
        let settings = SlowStartSettings::new(
            s.window.map_or(d.window(), |w| w.0),
            s.aggression.unwrap_or(d.aggression()),
            s.min_weight.unwrap_or(d.min_weight()),
        )
        .or_else(|e| err(at, e))?;
        policy = policy.with_slow_start(Some(settings));
    }
    if let Some(l) = &c.concurrency_limit {
        let settings = super::limits::limit(l, &format!("{at}: concurrency_limit"))?;
        policy = policy.with_concurrency_limit(Some(settings));
    }
    if let Some(l) = &c.endpoint_concurrency_limit {
        let settings = super::limits::limit(l, &format!("{at}: endpoint_concurrency_limit"))?;
        policy = policy.with_endpoint_concurrency_limit(Some(settings));
    }
    policy.validate().or_else(|e| err(at, e))?;
    let hash = match &c.hash {
        None => None,
        Some(h) => {
            let spec = HashSpec {
                maglev: h.table == FileHashTable::Maglev,
                bounded_load: h.bounded_load,
            };
            spec.build().or_else(|e| err(at, e))?;
            Some(spec)
        }
    };
    let subset = c
        .subset
        .as_ref()
        .map(|s| super::subset::subset(s, at))
        .transpose()?;
    Ok(Stack::Towline {
        balancer,
        policy: Box::new(policy),
        hash,
        subset,
    })
}

fn throttle(t: &FileThrottle, at: &str) -> Result<ThrottleSettings> {
    let d = ThrottleSettings::default();
    let s = ThrottleSettings::new(t.k.unwrap_or(d.k()), t.window.map_or(d.window(), |w| w.0))
        .map(|s| s.with_max_reject(t.max_reject.unwrap_or(d.max_reject())))
        .or_else(|e| err(at, e))?;
    s.validate().or_else(|e| err(at, e))?;
    Ok(s)
}
