use std::net::SocketAddr;

use super::*;

const S: Duration = Duration::from_secs(1);

fn ep(last: u8) -> Endpoint {
    Endpoint::new(SocketAddr::from(([10, 0, 0, last], 80)))
}

fn found(endpoints: Vec<Endpoint>, ttl_secs: u64) -> Answer {
    Answer::Endpoints {
        endpoints,
        ttl: Duration::from_secs(ttl_secs),
    }
}

fn failed() -> Answer {
    Answer::Failed(DiscoverError::new("timed out"))
}

fn refresher(seed: u64) -> Refresher {
    Refresher::new(RefreshPolicy::default(), Rng::seeded(seed))
}

#[test]
fn first_lookup_is_immediate() {
    let r = refresher(1);
    let t0 = Instant::now();
    assert_eq!(r.next_at(t0), t0);
}

#[test]
fn refresh_follows_ttl_inside_clamps_with_downward_jitter() {
    // (answer TTL, the clamped TTL the refresh must follow)
    let cases = [(0, 1), (1, 1), (7, 7), (60, 60), (300, 300), (86_400, 300)];
    for (ttl, clamped) in cases {
        let mut r = refresher(ttl);
        let t0 = Instant::now();
        let mut delays = Vec::new();
        for i in 0..200u32 {
            let now = t0 + S * (i * 1000);
            // Alternate two sets so that every answer is a change.
            let set = vec![ep(1 + (i % 2) as u8)];
            let step = r.on_answer(now, found(set, ttl));
            delays.push(step.next_at - now);
        }
        let hi = Duration::from_secs(clamped);
        let lo = hi.mul_f64(0.9);
        for d in &delays {
            assert!(
                *d >= lo && *d <= hi,
                "ttl {ttl}: delay {d:?} not in [{lo:?}, {hi:?}]"
            );
        }
        // Jittered: the delays are spread over the window, not all equal.
        let min = delays.iter().min().unwrap();
        let max = delays.iter().max().unwrap();
        assert!(*max - *min > hi.mul_f64(0.05), "ttl {ttl}: no spread");
    }
}

#[test]
fn clamps_are_configurable() {
    let policy = RefreshPolicy {
        min_ttl: 5 * S,
        max_ttl: 20 * S,
        jitter: 0.0,
        ..RefreshPolicy::default()
    };
    let mut r = Refresher::new(policy, Rng::seeded(3));
    let t0 = Instant::now();
    assert_eq!(r.on_answer(t0, found(vec![ep(1)], 1)).next_at, t0 + 5 * S);
    assert_eq!(r.on_answer(t0, found(vec![ep(1)], 12)).next_at, t0 + 12 * S);
    assert_eq!(
        r.on_answer(t0, found(vec![ep(1)], 999)).next_at,
        t0 + 20 * S
    );
}

#[test]
fn backoff_grows_is_capped_and_jittered() {
    let policy = RefreshPolicy::default(); // 1 s doubling to 30 s
    let t0 = Instant::now();
    let runs = 100;
    // delays[n][run] = wait after the (n+1)-th failure in a row.
    let mut delays = vec![Vec::new(); 8];
    for seed in 0..runs {
        let mut r = Refresher::new(policy.clone(), Rng::seeded(seed));
        r.on_answer(t0, found(vec![ep(1)], 30));
        for (n, row) in delays.iter_mut().enumerate() {
            let step = r.on_answer(t0, failed());
            assert!(step.error.is_some());
            assert_eq!(step.update, None, "a failure never changes the set");
            assert_eq!(
                step.note,
                Note::Failed {
                    consecutive: n as u32 + 1
                }
            );
            row.push(step.next_at - t0);
        }
    }
    let mut previous_mean = Duration::ZERO;
    for (n, row) in delays.iter().enumerate() {
        let ceiling = (S * (1u32 << n)).min(30 * S);
        for d in row {
            assert!(
                *d >= ceiling / 2 && *d <= ceiling,
                "failure {}: {d:?}",
                n + 1
            );
        }
        let distinct: std::collections::BTreeSet<_> = row.iter().collect();
        assert!(
            distinct.len() > runs as usize / 2,
            "failure {}: not jittered",
            n + 1
        );
        let mean = row.iter().sum::<Duration>() / runs as u32;
        if ceiling < 30 * S {
            assert!(
                mean > previous_mean,
                "failure {}: backoff did not grow",
                n + 1
            );
        }
        previous_mean = mean;
    }
}

#[test]
fn an_answer_resets_the_backoff() {
    let mut r = refresher(4);
    let t0 = Instant::now();
    for _ in 0..6 {
        r.on_answer(t0, failed());
    }
    r.on_answer(t0, found(vec![ep(1)], 30));
    let step = r.on_answer(t0, failed());
    assert_eq!(step.note, Note::Failed { consecutive: 1 });
    assert!(step.next_at - t0 <= S);
}

#[test]
fn unchanged_answers_emit_nothing_in_any_order() {
    let mut r = refresher(5);
    let t0 = Instant::now();
    let first = r.on_answer(t0, found(vec![ep(2), ep(1)], 5));
    assert_eq!(first.update, Some(vec![ep(1), ep(2)]));
    let again = r.on_answer(t0 + 5 * S, found(vec![ep(1), ep(2), ep(2)], 5));
    assert_eq!(again.update, None);
    assert_eq!(again.note, Note::Unchanged);
    let reweighted = r.on_answer(t0 + 10 * S, found(vec![ep(1).with_weight(3), ep(2)], 5));
    assert_eq!(reweighted.update, Some(vec![ep(1).with_weight(3), ep(2)]));
}

#[test]
fn failure_keeps_the_set() {
    let mut r = refresher(6);
    let t0 = Instant::now();
    r.on_answer(t0, found(vec![ep(1)], 5));
    r.on_answer(t0 + S, failed());
    // The same set after the failure is not a change.
    let step = r.on_answer(t0 + 2 * S, found(vec![ep(1)], 5));
    assert_eq!(step.update, None);
}

#[test]
fn empty_answers_drop_the_set_only_after_the_grace_period() {
    let mut r = refresher(7); // grace 30 s
    let t0 = Instant::now();
    r.on_answer(t0, found(vec![ep(1)], 1));
    let grace_end = t0 + 10 * S + 30 * S;
    let mut now = t0 + 10 * S;
    loop {
        let step = r.on_answer(now, Answer::Empty { ttl: None });
        if now < grace_end {
            assert_eq!(step.update, None, "dropped at {:?}", now - t0);
            let first = now == t0 + 10 * S;
            assert_eq!(
                step.note,
                Note::EmptyWithinGrace {
                    until: grace_end,
                    first
                }
            );
            assert!(
                step.next_at <= grace_end,
                "must look again when the grace ends"
            );
            now = step.next_at;
        } else {
            assert_eq!(step.update, Some(Vec::new()));
            assert_eq!(step.note, Note::Emptied);
            break;
        }
    }
    assert_eq!(now, grace_end, "removal happens right when the grace ends");
    let step = r.on_answer(now + S, Answer::Empty { ttl: None });
    assert_eq!(step.update, None, "already empty: nothing to emit");
}

#[test]
fn records_during_grace_cancel_it() {
    let mut r = refresher(8);
    let t0 = Instant::now();
    r.on_answer(t0, found(vec![ep(1)], 1));
    r.on_answer(t0 + S, Answer::Empty { ttl: None });
    r.on_answer(t0 + 20 * S, found(vec![ep(1)], 1));
    // A new empty spell starts its own grace period.
    let step = r.on_answer(t0 + 40 * S, Answer::Empty { ttl: None });
    assert_eq!(step.update, None);
    assert_eq!(
        step.note,
        Note::EmptyWithinGrace {
            until: t0 + 70 * S,
            first: true
        }
    );
    // Failures during a grace period neither extend nor end it.
    r.on_answer(t0 + 50 * S, failed());
    let step = r.on_answer(t0 + 70 * S, Answer::Empty { ttl: None });
    assert_eq!(step.update, Some(Vec::new()));
}

#[test]
fn empty_first_answer_is_published_at_once() {
    let mut r = refresher(9);
    let t0 = Instant::now();
    let step = r.on_answer(t0, Answer::Empty { ttl: Some(4 * S) });
    assert_eq!(step.update, Some(Vec::new()));
    assert!(step.next_at - t0 <= 4 * S && step.next_at - t0 >= (4 * S).mul_f64(0.9));
}

#[test]
fn the_cap_keeps_a_stable_salted_subset() {
    let policy = RefreshPolicy {
        max_endpoints: 1024,
        ..RefreshPolicy::default()
    };
    let all: Vec<Endpoint> = (0..3000u32)
        .map(|i| {
            Endpoint::new(SocketAddr::from((
                [10, 1, (i / 256) as u8, (i % 256) as u8],
                80,
            )))
        })
        .collect();
    let t0 = Instant::now();
    let mut r = Refresher::new(policy.clone(), Rng::seeded(10));
    let step = r.on_answer(t0, found(all.clone(), 5));
    let kept = step.update.expect("first answer is a change");
    assert_eq!(kept.len(), 1024);
    assert_eq!(
        step.note,
        Note::Changed {
            cut_from: Some(3000)
        }
    );
    assert!(kept.windows(2).all(|w| w[0].addr < w[1].addr), "sorted");

    // The same answer in another order keeps the same subset: no update.
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(r.on_answer(t0 + 5 * S, found(reversed, 5)).update, None);

    // Another client (another salt) keeps a different subset.
    let mut other = Refresher::new(policy, Rng::seeded(11));
    let theirs = other.on_answer(t0, found(all, 5)).update.unwrap();
    assert_eq!(theirs.len(), 1024);
    assert_ne!(kept, theirs);
}

#[test]
fn hints_refresh_early_but_rate_limited() {
    let mut r = refresher(12); // min hint interval 1 s
    let t0 = Instant::now();
    r.on_lookup_started(t0);
    let step = r.on_answer(t0, found(vec![ep(1)], 60));
    assert!(step.next_at - t0 >= 54 * S);
    // Asked 200 ms after the last lookup started: waits for the 1 s limit.
    assert_eq!(r.on_hint(t0 + S / 5), t0 + S);
    // Asked later: at once.
    assert_eq!(r.on_hint(t0 + 3 * S), t0 + S, "never pushed back");
    r.on_lookup_started(t0 + S);
    r.on_answer(t0 + S, found(vec![ep(1)], 60));
    assert_eq!(r.on_hint(t0 + 5 * S), t0 + 5 * S);
    // A hint never delays a lookup that is due sooner.
    r.on_lookup_started(t0 + 5 * S);
    r.on_answer(t0 + 5 * S, failed()); // backoff: due within 1 s
    let due = r.next_at(t0);
    assert!(r.on_hint(t0 + 5 * S) <= due);
}

#[test]
fn huge_settings_mean_never_and_do_not_panic() {
    let policy = RefreshPolicy {
        max_ttl: Duration::MAX,
        backoff_max: Duration::MAX,
        backoff_initial: Duration::MAX / 2,
        empty_grace: Duration::MAX,
        min_hint_interval: Duration::MAX,
        ..RefreshPolicy::default()
    };
    let mut r = Refresher::new(policy, Rng::seeded(11));
    let t0 = Instant::now();
    let year = 365 * 24 * 3600 * S;
    r.on_lookup_started(t0);
    r.on_answer(t0, found(vec![ep(1)], u64::from(u32::MAX)));
    let step = r.on_answer(t0, Answer::Empty { ttl: None });
    assert_eq!(step.update, None, "an endless grace never drops the set");
    assert!(matches!(step.note, Note::EmptyWithinGrace { until, .. } if until > t0 + year));
    for _ in 0..3 {
        assert!(r.on_answer(t0, failed()).next_at > t0 + year);
    }
    assert!(r.on_hint(t0) > t0 + year, "the hint waits out the interval");
}

fn ep6(last: u16) -> Endpoint {
    Endpoint::new(SocketAddr::from(([0xfd00, 0, 0, 0, 0, 0, 0, last], 80)))
}

fn partial(endpoints: Vec<Endpoint>, ttl_secs: u64, kept: Family) -> Answer {
    Answer::Partial {
        endpoints,
        ttl: Duration::from_secs(ttl_secs),
        kept,
        error: DiscoverError::new("AAAA timed out"),
    }
}

#[test]
fn a_partial_answer_keeps_the_failed_familys_endpoints() {
    let mut r = refresher(11);
    let t0 = Instant::now();
    let step = r.on_answer(t0, found(vec![ep(1), ep(2), ep6(1)], 60));
    assert_eq!(step.update, Some(vec![ep(1), ep(2), ep6(1)]));
    // A answered with a new address, AAAA failed: the IPv6 endpoint stays.
    let step = r.on_answer(t0 + S, partial(vec![ep(3)], 60, Family::V6));
    assert_eq!(step.update, Some(vec![ep(3), ep6(1)]));
    assert!(step.error.is_some(), "the failure is reported");
    assert!(matches!(
        step.note,
        Note::Partial {
            kept: Family::V6,
            consecutive: 1,
            changed: true
        }
    ));
    // The same again: nothing to publish, still reported.
    let step = r.on_answer(t0 + 2 * S, partial(vec![ep(3)], 60, Family::V6));
    assert_eq!(step.update, None);
    assert!(step.error.is_some());
    assert!(matches!(
        step.note,
        Note::Partial {
            consecutive: 2,
            changed: false,
            ..
        }
    ));
    // The other way round: AAAA answered, A failed; the IPv4 one stays.
    let step = r.on_answer(t0 + 3 * S, partial(vec![ep6(2)], 60, Family::V4));
    assert_eq!(step.update, Some(vec![ep(3), ep6(2)]));
}

#[test]
fn a_first_answer_that_is_partial_publishes_the_family_that_answered() {
    let mut r = refresher(12);
    let step = r.on_answer(Instant::now(), partial(vec![ep(2), ep(1)], 60, Family::V6));
    assert_eq!(step.update, Some(vec![ep(1), ep(2)]));
    assert!(step.error.is_some());
}

#[test]
fn a_partial_answer_with_no_endpoints_is_a_failure_that_keeps_the_set() {
    let mut r = refresher(13);
    let t0 = Instant::now();
    r.on_answer(t0, found(vec![ep(1), ep6(1)], 60));
    let step = r.on_answer(t0 + S, partial(Vec::new(), 60, Family::V4));
    assert_eq!(step.update, None);
    assert!(matches!(step.note, Note::Failed { consecutive: 1 }));
    assert!(step.error.is_some());
}

#[test]
fn partial_answers_look_again_at_the_earlier_of_ttl_and_backoff() {
    let policy = RefreshPolicy {
        jitter: 0.0,
        ..RefreshPolicy::default()
    };
    let mut r = Refresher::new(policy, Rng::seeded(14));
    let t0 = Instant::now();
    // Backoff 1 s doubling (upper half of each step, equal jitter) to 30 s;
    // a TTL of 5 s caps it from the fourth failure on.
    let mut delays = Vec::new();
    for i in 0..6u32 {
        let now = t0 + S * (i * 100);
        let step = r.on_answer(now, partial(vec![ep(1)], 5, Family::V6));
        delays.push(step.next_at - now);
    }
    for (i, d) in delays.iter().enumerate() {
        let step = S * (1 << i);
        let (lo, hi) = ((step / 2).min(5 * S), step.min(5 * S));
        assert!(
            *d >= lo && *d <= hi,
            "partial {}: delay {d:?} not in [{lo:?}, {hi:?}]",
            i + 1
        );
    }
    // A full answer ends the failure run: the next failure backs off 1 s.
    r.on_answer(t0 + S * 1000, found(vec![ep(1), ep6(1)], 60));
    let now = t0 + S * 1001;
    let step = r.on_answer(now, failed());
    assert!(step.next_at - now <= S);
    assert!(matches!(step.note, Note::Failed { consecutive: 1 }));
}
