use super::super::test_util::*;
use super::*;

#[test]
fn picks_the_lower_loaded_of_two_distinct_samples() {
    crate::rng::seed_thread_rng(401);
    let now = Instant::now();
    for b in [P2c::pending(), P2c::peak_ewma()] {
        let set = loads(6);
        // Distinct loads: endpoint i has i requests in flight and, for
        // peak-EWMA, an RTT growing with i.
        for (i, l) in set.iter().enumerate() {
            for _ in 0..i {
                l.start();
            }
            b.observe(l, &answered(Duration::from_millis(1 + i as u64), now));
        }
        for seed in 0..2_000 {
            let mut sampler = Rng::seeded(seed);
            let (x, y) = b.sample_pair(set.len(), &all, &mut sampler).unwrap();
            let y = y.unwrap();
            assert_ne!(x, y, "seed {seed}: same index twice");
            let mut picker = Rng::seeded(seed);
            let got = b.pick(&at(), &set, &all, &mut picker).unwrap();
            assert_eq!(got, x.min(y), "seed {seed}: not the lower-loaded");
        }
    }
}

#[test]
fn single_eligible_is_returned() {
    crate::rng::seed_thread_rng(402);
    let mut rng = Rng::seeded(1);
    let set = loads(4);
    assert_eq!(
        P2c::pending().pick(&at(), &set, &|i| i == 2, &mut rng),
        Some(2)
    );
    assert_eq!(
        P2c::pending().pick(&at(), &loads(1), &all, &mut rng),
        Some(0)
    );
}

#[test]
fn weight_divides_cost() {
    crate::rng::seed_thread_rng(403);
    let now = Instant::now();
    let heavy = Load::new(4, now);
    let light = Load::new(1, now);
    for _ in 0..2 {
        heavy.start();
    }
    let b = P2c::pending();
    assert!(b.cost(&heavy, now) < b.cost(&light, now));
}

fn answered(rtt: Duration, at: Instant) -> AttemptEnd {
    AttemptEnd::new(End::Response(Outcome::Success), rtt, at)
}

#[test]
fn every_kind_of_end_is_a_latency_sample() {
    let now = Instant::now();
    let b = P2c::peak_ewma();
    for end in [
        End::Response(Outcome::Success),
        End::Response(Outcome::Failure { retryable: true }),
        End::TimedOut,
        End::Cancelled,
        End::Superseded,
    ] {
        let load = Load::new(1, now);
        b.observe(&load, &AttemptEnd::new(end, Duration::from_secs(2), now));
        assert_eq!(load.rtt_estimate(), Some(Duration::from_secs(2)), "{end:?}");
    }
    // Pending ignores latency.
    let load = Load::new(1, now);
    P2c::pending().observe(&load, &answered(Duration::from_secs(2), now));
    assert_eq!(load.rtt_estimate(), None);
}

#[test]
fn a_stalled_endpoint_loses_picks_once_its_cancelled_attempts_are_seen() {
    let now = Instant::now();
    let b = P2c::peak_ewma();
    let set = loads(2);
    for l in &set {
        b.observe(l, &answered(Duration::from_millis(10), now));
    }
    // Endpoint 1 stalls: its callers give up after 1 s.
    b.observe(
        &set[1],
        &AttemptEnd::new(End::Cancelled, Duration::from_secs(1), now),
    );
    let mut rng = Rng::seeded(7);
    for _ in 0..100 {
        assert_eq!(
            b.pick(&PickContext::new(now), &set, &all, &mut rng),
            Some(0)
        );
    }
}

const MS: Duration = Duration::from_millis(1);

fn ended(end: End, elapsed: Duration, at: Instant) -> AttemptEnd {
    AttemptEnd::new(end, elapsed, at)
}

fn failed(at: Instant) -> AttemptEnd {
    ended(End::Response(Outcome::Failure { retryable: true }), MS, at)
}

/// Picks over `set` at `now` until `picks`, counting each index's.
fn count_picks(b: &P2c, set: &dyn LoadSet, now: Instant, picks: usize) -> Vec<usize> {
    let mut rng = Rng::seeded(9);
    let mut seen = vec![0; set.len()];
    for _ in 0..picks {
        seen[b.pick(&PickContext::new(now), set, &all, &mut rng).unwrap()] += 1;
    }
    seen
}

#[test]
fn a_fast_failing_endpoint_is_avoided_and_probed_again_later() {
    let now = Instant::now();
    let b = P2c::peak_ewma();
    let set = loads(3);
    for l in &set {
        b.observe(l, &answered(20 * MS, now));
    }
    // Endpoint 2 answers every call with an error in 1 ms: it looks
    // fastest, but a few failures make it the costliest.
    for _ in 0..8 {
        b.observe(&set[2], &failed(now));
    }
    assert_eq!(count_picks(&b, &set, now, 300)[2], 0);
    // Unheard from, its penalty decays: within a few decay constants it
    // is tried again (a probe), and not in the first second.
    let probe_after = (1..60)
        .map(|s| now + Duration::from_secs(s))
        .find(|&at| {
            for l in &set[..2] {
                b.observe(l, &answered(20 * MS, at));
            }
            count_picks(&b, &set, at, 50)[2] > 0
        })
        .expect("the failing endpoint is probed again");
    let waited = probe_after - now;
    assert!(
        waited > Duration::from_secs(1) && waited < Duration::from_secs(30),
        "{waited:?}"
    );
}

#[test]
fn a_lost_hedge_race_is_a_latency_bound_not_a_failure() {
    let now = Instant::now();
    let b = P2c::peak_ewma();
    let load = Load::new(1, now);
    b.observe(&load, &answered(10 * MS, now));
    b.observe(&load, &ended(End::Superseded, 80 * MS, now));
    assert_eq!(load.rtt_estimate(), Some(80 * MS));
    assert_eq!(load.failure_rate(now, &b.decay), 0.0);
}

#[test]
fn a_caller_giving_up_is_a_failure_only_past_the_usual_latency() {
    let now = Instant::now();
    let b = P2c::peak_ewma();
    let load = Load::new(1, now);
    b.observe(&load, &answered(167 * MS, now));
    // The caller's own budget was shorter than the endpoint's latency.
    b.observe(&load, &ended(End::Cancelled, 100 * MS, now));
    assert_eq!(load.failure_rate(now, &b.decay), 0.0);
    // It waited 1 s for an endpoint that answers in 167 ms.
    b.observe(&load, &ended(End::Cancelled, 1000 * MS, now));
    assert_eq!(load.failure_rate(now, &b.decay), Load::FAILURE_GAIN);
    // A timeout always is.
    let cut = Load::new(1, now);
    b.observe(&cut, &ended(End::TimedOut, 100 * MS, now));
    assert_eq!(cut.failure_rate(now, &b.decay), Load::FAILURE_GAIN);
}

#[test]
fn retry_after_keeps_picks_away_until_it_has_passed() {
    let now = Instant::now();
    let b = P2c::peak_ewma();
    let set = loads(2);
    for l in &set {
        b.observe(l, &answered(20 * MS, now));
    }
    // Endpoint 0 is the faster, but asks for 5 s of rest.
    b.observe(&set[0], &answered(MS, now));
    let overloaded = Outcome::Overloaded {
        retry_after: Some(Duration::from_secs(5)),
    };
    b.observe(&set[0], &ended(End::Response(overloaded), MS, now));
    for l in &set {
        l.start();
    }
    let at = now + Duration::from_millis(4_900);
    assert_eq!(count_picks(&b, &set, at, 100), [0, 100]);
    let after = now + Duration::from_secs(5);
    b.observe(&set[0], &answered(MS, after));
    b.observe(&set[1], &answered(20 * MS, after));
    assert_eq!(count_picks(&b, &set, after, 100), [100, 0]);
}

#[test]
fn an_endpoint_never_measured_is_tried_one_attempt_at_a_time() {
    // Next to endpoints far faster than the 30 ms default, a new one is
    // still tried (a single attempt until it answers)...
    let now = Instant::now();
    let b = P2c::peak_ewma();
    let set = loads(3);
    for l in &set[..2] {
        b.observe(l, &answered(Duration::from_micros(200), now));
    }
    let mut rng = Rng::seeded(5);
    let mut tried = 0;
    for _ in 0..100 {
        let i = b
            .pick(&PickContext::new(now), &set, &all, &mut rng)
            .unwrap();
        if i == 2 {
            tried += 1;
            set[2].start();
        }
    }
    assert_eq!(tried, 1);
    // ...and once it has answered like the others, it is one of them.
    set[2].end();
    b.observe(&set[2], &answered(Duration::from_micros(200), now));
    let least = crate::test_bounds::at_least(300.0, 1.0 / 3.0);
    assert!(count_picks(&b, &set, now, 300)[2] as f64 >= least);
}

#[test]
fn exclusions() {
    crate::rng::seed_thread_rng(404);
    check_exclusions(&P2c::pending());
    check_exclusions(&P2c::peak_ewma());
}
