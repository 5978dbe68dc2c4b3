//! Tests of the policy layers on tokio's paused (virtual) clock.

mod hedge;
mod limits;
mod retry;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tower::Service;

use crate::error::BoxError;

/// Counts how many times something happened.
#[derive(Clone, Default, Debug)]
pub(crate) struct Count(Arc<AtomicUsize>);

impl Count {
    pub fn bump(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst)
    }
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Counts a future dropped before it finished.
pub(super) struct CancelGuard {
    cancelled: Count,
    finished: bool,
}

impl CancelGuard {
    pub fn new(cancelled: &Count) -> Self {
        CancelGuard {
            cancelled: cancelled.clone(),
            finished: false,
        }
    }
    pub fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.cancelled.bump();
        }
    }
}

/// A backend whose first `fail_first` calls fail, then succeed.
pub(super) fn flaky(
    fail_first: usize,
    calls: &Count,
) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send {
    let calls = calls.clone();
    tower::service_fn(move |x: u32| {
        let n = calls.bump();
        async move {
            if n < fail_first {
                Err::<u32, BoxError>("boom".into())
            } else {
                Ok(x)
            }
        }
    })
}
