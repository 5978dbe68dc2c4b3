//! Heap allocations per call, counted with a counting global allocator:
//! at most one (the boxed call future) when no retry or hedge fires, for
//! the bare channel and for the full policy stack.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::time::Duration;

use tower::{Service, ServiceExt};
use towline::balance::P2c;
use towline::discover::Static;
use towline::policy::breaker::BreakerSettings;
use towline::policy::hedge::{HedgeDelay, HedgeSettings};
use towline::policy::replay::CloneReplay;
use towline::policy::retry::RetrySettings;
use towline::{Channel, Endpoint};

struct Counting;

thread_local! {
    /// Allocations made by this thread (the test's current-thread runtime
    /// runs every call on it), so tests running in parallel do not mix.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the slot may be gone while the thread shuts down.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// An endpoint service that answers at once without allocating.
#[derive(Clone)]
struct Answer(u32);

impl Service<u32> for Answer {
    type Response = u32;
    type Error = Infallible;
    type Future = std::future::Ready<Result<u32, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, x: u32) -> Self::Future {
        std::future::ready(Ok(x + self.0))
    }
}

fn connect(ep: &Endpoint) -> Answer {
    Answer(u32::from(ep.addr.port()))
}

/// Allocations per call over `calls` calls, after a warm-up.
fn allocations_per_call(
    channel: Channel<u32, u32>,
    runtime: &tokio::runtime::Runtime,
    calls: usize,
) -> f64 {
    runtime.block_on(async move {
        let mut channel = channel;
        for i in 0..1_000 {
            channel.ready().await.unwrap().call(i).await.unwrap();
        }
        let before = allocations();
        for i in 0..calls as u32 {
            channel.ready().await.unwrap().call(i).await.unwrap();
        }
        (allocations() - before) as f64 / calls as f64
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn addrs() -> Vec<std::net::SocketAddr> {
    (1..=8)
        .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], p)))
        .collect()
}

#[test]
fn bare_channel_allocates_once_per_call() {
    let rt = runtime();
    let channel = rt.block_on(async {
        Channel::builder(connect)
            .discover(Static::new(addrs()))
            .balancer(P2c::peak_ewma())
            .build()
            .unwrap()
    });
    let per_call = allocations_per_call(channel, &rt, 10_000);
    println!("bare channel: {per_call} allocations per call");
    assert!(per_call <= 1.0, "{per_call} allocations per call");
}

#[test]
fn full_policy_stack_allocates_once_per_call_when_nothing_fires() {
    let rt = runtime();
    let channel = rt.block_on(async {
        Channel::builder(connect)
            .discover(Static::new(addrs()))
            .balancer(P2c::peak_ewma())
            .replayer(CloneReplay)
            .deadline(Duration::from_secs(5))
            .timeout(Duration::from_secs(1))
            .retry(RetrySettings::default())
            .circuit_breaker(BreakerSettings::default())
            .hedge(HedgeSettings::default().with_delay(HedgeDelay::Fixed(Duration::from_secs(1))))
            .build()
            .unwrap()
    });
    let per_call = allocations_per_call(channel, &rt, 10_000);
    println!("full policy stack: {per_call} allocations per call");
    assert!(per_call <= 1.0, "{per_call} allocations per call");
}
