use super::*;
use crate::policy::limit::{GradientSettings, LimitAlgorithm};

const MS: Duration = Duration::from_millis(1);

/// A busy window reports a sample of its calls, each weighted by the
/// rate it was drawn at: 128 calls at 20 ms, then 10,000 at 10 ms
/// (mean 10.1 ms) give a limit of 20 × 12.5 / 10.1 + √20 = 29 (the
/// same samples unweighted, a mean near 13 ms, would give 24); and
/// once its time is up, the window closes although its calls are
/// sampled one in hundreds.
#[test]
fn a_busy_window_reports_weighted_samples() {
    crate::rng::seed_thread_rng(11);
    let gradient = GradientSettings::default().with_smoothing(1.0);
    let settings = LimitSettings::new(LimitAlgorithm::Gradient(gradient)).with_jitter_seed(1);
    let limiter = Limiter::new(&settings).unwrap();
    let mut now = crate::clock::now();
    let call = |rtt: Duration, now: Instant| {
        assert!(limiter.try_enter());
        limiter.leave_after(false, rtt, now);
    };
    while limiter.limit.load(Ordering::Relaxed) == 3 {
        now += 10 * MS;
        call(10 * MS, now);
    }
    // Busy enough for the limit to grow: 15 more calls in flight.
    for _ in 0..15 {
        assert!(limiter.try_enter());
    }
    for i in 0..10_128 {
        now += Duration::from_micros(5);
        call(if i < 128 { 20 * MS } else { 10 * MS }, now);
    }
    assert!(limiter.every.load(Ordering::Relaxed) > 100, "sampled");
    // Its time is up: one of the next few calls closes the window
    // (each does with probability at least 1/8; all 64 miss it with
    // probability 2e-4, and the seed is fixed).
    let late = (1..=64).find(|i| {
        call(10 * MS, now + 100 * MS + *i * MS);
        limiter.limit.load(Ordering::Relaxed) != 20
    });
    assert!(late.is_some(), "the window stayed open");
    assert_eq!(limiter.limit.load(Ordering::Relaxed), 29);
}

/// What each way a call ends teaches the limit: the one rule the channel's
/// places, its endpoints' places and the standalone layer all follow.
#[test]
fn a_call_end_teaches_a_sample_a_drop_or_nothing() {
    use crate::classify::Outcome;
    let cases = [
        (End::Response(Outcome::Success), Some(false)),
        (
            End::Response(Outcome::Overloaded { retry_after: None }),
            Some(true),
        ),
        (End::TimedOut, Some(true)),
        (End::Response(Outcome::Failure { retryable: true }), None),
        (End::Response(Outcome::Failure { retryable: false }), None),
        (End::Cancelled, None),
        (End::Superseded, None),
    ];
    for (end, lesson) in cases {
        assert_eq!(teaches(end), lesson, "{end:?}");
    }
    // A drop lowers the limit at once; the place is given back either way.
    let limiter = Arc::new(
        Limiter::new(&LimitSettings::new(
            LimitAlgorithm::Aimd(Default::default()),
        ))
        .unwrap(),
    );
    let view = limiter.handle();
    let before = view.limit();
    let now = crate::clock::now();
    assert!(limiter.try_enter());
    limiter.leave_for(&AttemptEnd::new(End::TimedOut, MS, now));
    assert!(view.limit() < before, "{} vs {before}", view.limit());
    assert_eq!(view.in_flight(), 0);
}
