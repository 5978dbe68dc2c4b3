use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use super::{DiscoverError, Update};
use crate::Endpoint;

/// A fixed list of endpoints: yields one [`Update::Reset`], then ends.
///
/// ```
/// use towline::{Endpoint, discover::Static};
///
/// let source = Static::new([Endpoint::new("127.0.0.1:8080".parse().unwrap()).with_weight(2)]);
/// assert_eq!(source.endpoints().len(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct Static {
    endpoints: Option<Vec<Endpoint>>,
}

impl Static {
    /// A source of exactly these endpoints (anything convertible into an
    /// [`Endpoint`], such as a `SocketAddr`).
    pub fn new<I, E>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = E>,
        E: Into<Endpoint>,
    {
        Static {
            endpoints: Some(endpoints.into_iter().map(Into::into).collect()),
        }
    }

    /// The endpoints not yet sent (all of them before the first poll).
    pub fn endpoints(&self) -> &[Endpoint] {
        self.endpoints.as_deref().unwrap_or(&[])
    }
}

impl Stream for Static {
    type Item = Result<Update, DiscoverError>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.endpoints.take().map(|set| Ok(Update::Reset(set))))
    }
}
