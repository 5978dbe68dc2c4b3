//! Which endpoints are ejected, as a pure plan.
//!
//! From each endpoint's health (is its breaker letting every call through?)
//! and whether it is ejected now, the ejection cap and the panic threshold,
//! [`plan`] computes which endpoints are ejected and whether the channel is
//! in panic mode. The table applies the plan; nothing here touches shared
//! state, so the rules are tested on plain slices.
//!
//! The rules:
//!
//! - only an unhealthy endpoint is ejected, so an endpoint whose breaker is
//!   gone or turned off (or closed again) always returns to rotation;
//! - at most `⌊max_share × n⌋` endpoints are ejected; those already ejected
//!   keep their place first, so the set does not flap;
//! - panic mode is on when fewer than `panic_threshold × n` endpoints are
//!   healthy (with `n > 0`).

/// One endpoint as the plan sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Health {
    /// Its breaker is on and not letting every call through.
    pub(crate) unhealthy: bool,
    /// It is ejected now.
    pub(crate) ejected: bool,
}

/// What the table should make true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Per endpoint, in the order given: ejected after the plan.
    pub(crate) ejected: Vec<bool>,
    /// How many are ejected.
    pub(crate) count: usize,
    /// How many are unhealthy.
    pub(crate) unhealthy: usize,
    /// Whether panic mode is on.
    pub(crate) panic: bool,
}

/// The plan for `health` under the cap and threshold (shares in 0..=1).
pub(crate) fn plan(health: &[Health], max_share: f64, panic_threshold: f64) -> Plan {
    let n = health.len();
    let cap = (max_share * n as f64).floor() as usize;
    let mut ejected = vec![false; n];
    let mut count = 0;
    // Endpoints already ejected keep their place first.
    for (i, h) in health.iter().enumerate() {
        if h.ejected && h.unhealthy && count < cap {
            ejected[i] = true;
            count += 1;
        }
    }
    let mut unhealthy = 0;
    for (i, h) in health.iter().enumerate() {
        if h.unhealthy {
            unhealthy += 1;
            if !ejected[i] && count < cap {
                ejected[i] = true;
                count += 1;
            }
        }
    }
    let healthy = n - unhealthy;
    Plan {
        ejected,
        count,
        unhealthy,
        panic: n > 0 && (healthy as f64) < panic_threshold * n as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(spec: &str) -> Vec<Health> {
        // 'u': unhealthy, 'E': unhealthy and ejected, 'e': healthy but
        // ejected (a breaker turned off), '.': healthy.
        spec.chars()
            .map(|c| Health {
                unhealthy: matches!(c, 'u' | 'E'),
                ejected: matches!(c, 'E' | 'e'),
            })
            .collect()
    }

    fn ejected(p: &Plan) -> String {
        p.ejected
            .iter()
            .map(|&e| if e { 'x' } else { '.' })
            .collect()
    }

    #[test]
    fn healthy_endpoints_are_never_ejected() {
        // Breakers turned off at runtime: every endpoint counts as healthy,
        // so every ejected one returns to rotation.
        let p = plan(&health("ee.e"), 0.5, 0.5);
        assert_eq!(ejected(&p), "....");
        assert_eq!((p.count, p.unhealthy, p.panic), (0, 0, false));
    }

    #[test]
    fn the_cap_keeps_those_already_ejected_first() {
        let p = plan(&health("u.uE"), 0.5, 0.0);
        assert_eq!(ejected(&p), "x..x");
        let p = plan(&health("uuuu"), 0.5, 0.0);
        assert_eq!(ejected(&p), "xx..");
        assert_eq!(plan(&health("uuu"), 0.34, 0.0).count, 1);
        assert_eq!(plan(&health("u"), 0.5, 0.0).count, 0);
    }

    #[test]
    fn panic_mode_when_too_few_are_healthy() {
        assert!(plan(&health("uuu."), 0.5, 0.5).panic);
        assert!(!plan(&health("uu.."), 0.5, 0.5).panic);
        assert!(!plan(&health("uuuu"), 1.0, 0.0).panic);
        assert!(!plan(&[], 0.5, 1.0).panic);
    }
}
