//! The in-memory backend the benchmarks call: always ready, answers with its
//! request and allocates nothing, so a benchmark measures towline alone.

use std::convert::Infallible;
use std::task::{Context, Poll};

use tower::Service;

/// An always-ready service that answers with its request.
#[derive(Debug, Clone, Copy)]
pub struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = Infallible;
    type Future = std::future::Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        std::future::ready(Ok(req))
    }
}
