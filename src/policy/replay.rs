//! Replaying a request: making the copy that a retry or hedge sends.
//!
//! A request is consumed when it is sent, so a policy that may send it again
//! keeps the original and sends copies. A [`Replay`] makes a copy, or says
//! the request cannot be replayed (`None`, for example a streaming body):
//! such a request is sent once and never retried or hedged.
//!
//! - [`CloneReplay`] copies with `Clone`; it is the default of the standalone
//!   [`RetryLayer`](super::RetryLayer) and [`HedgeLayer`](super::HedgeLayer).
//!   A channel has no default: its builder refuses retries and hedging until
//!   it is given a replay.
//! - Any `Fn(&Req) -> Option<Req>` is a replay.
//! - [`NoReplay`] never copies: every request is sent once.
//! - For HTTP requests whose body is not `Clone` (a stream), the `http`
//!   feature's `towline::http::BodyReplay` buffers the body as it is sent, up
//!   to a limit, so that it can be sent again.
//!
//! ```
//! use towline::policy::replay::{CloneReplay, Replay};
//!
//! assert_eq!(CloneReplay.replay(&String::from("a")), Some("a".into()));
//! let only_small = |r: &Vec<u8>| (r.len() < 4).then(|| r.clone());
//! assert_eq!(only_small.replay(&vec![1u8; 8]), None);
//! ```

/// Makes a copy of a request to send again, or refuses.
pub trait Replay<Req>: Send + Sync + 'static {
    /// A copy of `req`, or `None` when it cannot be sent again.
    fn replay(&self, req: &Req) -> Option<Req>;
}

/// Replays requests by cloning them (the default of the standalone retry and
/// hedge layers).
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneReplay;

impl<Req: Clone> Replay<Req> for CloneReplay {
    fn replay(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// Never replays: each request is sent once.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReplay;

impl<Req> Replay<Req> for NoReplay {
    fn replay(&self, _req: &Req) -> Option<Req> {
        None
    }
}

impl<Req, F> Replay<Req> for F
where
    F: Fn(&Req) -> Option<Req> + Send + Sync + 'static,
{
    fn replay(&self, req: &Req) -> Option<Req> {
        self(req)
    }
}
