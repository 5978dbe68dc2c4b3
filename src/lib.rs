//! towline: a discovery-aware, load-balancing, resilient client channel.
#![deny(missing_docs)]

pub mod balance;
pub mod classify;
pub mod discover;
mod endpoint;
pub mod error;
pub mod rng;

pub use endpoint::{DEFAULT_WEIGHT, Endpoint};
pub use error::{BoxError, BuildError, Error};
pub mod channel;
pub mod metrics;

pub use channel::{Channel, EndpointInfo};
