//! Cost of one endpoint-set change, at 100, 1,000 and 10,000 endpoints:
//! applying it, rebuilding the balancer and publishing the new set, as the
//! channel's discovery task does it.
//!
//! The discovery stream hands the channel one change at a time and waits
//! until the task has published it before the next (it answers "pending"
//! once between changes, so nothing is batched): each change pays for a
//! whole publish. Changes alternate between removing an endpoint and
//! inserting it back (a rolling deploy), over P2C peak-EWMA (the default),
//! smooth weighted round-robin (whose schedule is rebuilt per change), and
//! P2C with a keyed Maglev balancer (whose table is rebuilt off the
//! discovery task; each change publishes the old table through an index
//! remap, and each finished build publishes once more).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use futures_core::Stream;
use parking_lot::Mutex;
use tokio::sync::Notify;
use towline::balance::{Balancer, ConsistentHash, P2c, Weighted};
use towline::discover::{DiscoverError, Update};
use towline::{Channel, Endpoint};

#[path = "support/echo.rs"]
mod echo;
use echo::Echo;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 80))
}

/// The timing of one run: set when the first change is handed over and
/// when the task asks for more after the last one.
#[derive(Default)]
struct Timing {
    first: Option<Instant>,
    done: Option<Instant>,
}

/// A reset to `n` endpoints, then `changes` changes, one per publish.
struct OneAtATime {
    n: usize,
    next: usize,
    changes: usize,
    /// Whether the next poll answers pending (to end the task's batch).
    pause: bool,
    timing: Arc<Mutex<Timing>>,
    finished: Arc<Notify>,
}

impl Stream for OneAtATime {
    type Item = Result<Update, DiscoverError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.pause {
            self.pause = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.pause = true;
        let k = self.next;
        self.next += 1;
        if k == 0 {
            let set = (0..self.n).map(|i| Endpoint::new(addr(i))).collect();
            return Poll::Ready(Some(Ok(Update::Reset(set))));
        }
        let change = k - 1;
        if change == 0 {
            self.timing.lock().first = Some(Instant::now());
        }
        if change == self.changes {
            self.timing.lock().done = Some(Instant::now());
            self.finished.notify_one();
            return Poll::Pending;
        }
        // Remove endpoint j, then insert it back, walking the set.
        let j = (change / 2 * 7919) % self.n;
        let update = if change.is_multiple_of(2) {
            Update::Remove(addr(j))
        } else {
            Update::Insert(Endpoint::new(addr(j)))
        };
        Poll::Ready(Some(Ok(update)))
    }
}

/// Time per change for `changes` changes on a set of `n` endpoints, with a
/// keyed balancer if `keyed` is given.
async fn run(
    n: usize,
    changes: usize,
    balancer: impl Balancer,
    keyed: Option<ConsistentHash>,
) -> Duration {
    let timing = Arc::new(Mutex::new(Timing::default()));
    let finished = Arc::new(Notify::new());
    let stream = OneAtATime {
        n,
        next: 0,
        changes,
        pause: false,
        timing: timing.clone(),
        finished: finished.clone(),
    };
    let builder = Channel::builder(|_: &Endpoint| Echo)
        .discover(stream)
        .balancer(balancer);
    let builder = match keyed {
        Some(hash) => builder.keyed(hash, |r| Some(*r)),
        None => builder,
    };
    let channel: Channel<u64, u64> = builder.build().expect("valid channel");
    finished.notified().await;
    drop(channel);
    let t = timing.lock();
    let (first, done) = (t.first.expect("changes ran"), t.done.expect("done"));
    done.duration_since(first)
}

fn set_change(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("set_change");
    for n in [100usize, 1_000, 10_000] {
        group.bench_with_input(BenchmarkId::new("p2c_peak_ewma", n), &n, |b, &n| {
            b.iter_custom(|iters| rt.block_on(run(n, iters as usize, P2c::peak_ewma(), None)));
        });
        group.bench_with_input(BenchmarkId::new("weighted_round_robin", n), &n, |b, &n| {
            let wrr = || Weighted::round_robin();
            b.iter_custom(|iters| rt.block_on(run(n, iters as usize, wrr(), None)));
        });
        group.bench_with_input(BenchmarkId::new("p2c_and_keyed_maglev", n), &n, |b, &n| {
            let maglev = || Some(ConsistentHash::maglev());
            b.iter_custom(|iters| rt.block_on(run(n, iters as usize, P2c::peak_ewma(), maglev())));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = set_change
}
criterion_main!(benches);
