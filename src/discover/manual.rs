use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::{DiscoverError, Update};
use crate::Endpoint;

/// A discovery source changed by hand at runtime.
///
/// `Manual` is a cloneable handle: [`insert`](Manual::insert),
/// [`remove`](Manual::remove) and [`reset`](Manual::reset) change the set, and
/// every stream made by [`stream`](Manual::stream) (one per channel) first
/// receives the current set as a [`Update::Reset`], then every change in order.
///
/// ```
/// use towline::{Endpoint, discover::Manual};
///
/// let manual = Manual::new();
/// let stream = manual.stream(); // give this to Channel::builder(..).discover(..)
/// manual.insert(Endpoint::new("127.0.0.1:8080".parse().unwrap()));
/// manual.remove("127.0.0.1:8080".parse().unwrap());
/// assert!(manual.endpoints().is_empty());
/// # drop(stream);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Manual {
    shared: Arc<Mutex<Shared>>,
}

#[derive(Debug, Default)]
struct Shared {
    current: BTreeMap<SocketAddr, Endpoint>,
    subscribers: Vec<mpsc::UnboundedSender<Update>>,
}

impl Shared {
    fn publish(&mut self, update: Update) {
        // A subscriber whose stream was dropped is forgotten here.
        self.subscribers
            .retain(|tx| tx.send(update.clone()).is_ok());
    }
}

impl Manual {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// A source that starts with these endpoints.
    pub fn with_endpoints<I, E>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = E>,
        E: Into<Endpoint>,
    {
        let manual = Manual::new();
        manual.reset(endpoints);
        manual
    }

    /// A stream of this source's updates, starting with the current set.
    pub fn stream(&self) -> ManualStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut shared = self.shared.lock();
        // The receiver is alive, so this send cannot fail.
        let _ = tx.send(Update::Reset(shared.current.values().cloned().collect()));
        shared.subscribers.push(tx);
        ManualStream { rx }
    }

    /// Adds `endpoint`, or updates the one with the same address.
    pub fn insert(&self, endpoint: impl Into<Endpoint>) {
        let endpoint = endpoint.into();
        let mut shared = self.shared.lock();
        shared.current.insert(endpoint.addr, endpoint.clone());
        shared.publish(Update::Insert(endpoint));
    }

    /// Removes the endpoint at `addr`; returns whether it was present.
    pub fn remove(&self, addr: SocketAddr) -> bool {
        let mut shared = self.shared.lock();
        let present = shared.current.remove(&addr).is_some();
        if present {
            shared.publish(Update::Remove(addr));
        }
        present
    }

    /// Replaces the whole set.
    pub fn reset<I, E>(&self, endpoints: I)
    where
        I: IntoIterator<Item = E>,
        E: Into<Endpoint>,
    {
        let mut shared = self.shared.lock();
        shared.current = endpoints
            .into_iter()
            .map(|e| {
                let e = e.into();
                (e.addr, e)
            })
            .collect();
        let set = shared.current.values().cloned().collect();
        shared.publish(Update::Reset(set));
    }

    /// The current set, ordered by address.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.shared.lock().current.values().cloned().collect()
    }
}

/// The stream of one [`Manual`] subscriber. Ends when every `Manual` handle
/// is dropped.
#[derive(Debug)]
pub struct ManualStream {
    rx: mpsc::UnboundedReceiver<Update>,
}

impl Stream for ManualStream {
    type Item = Result<Update, DiscoverError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|u| u.map(Ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn ep(port: u16) -> Endpoint {
        Endpoint::new(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[tokio::test]
    async fn stream_starts_with_current_set_then_follows_changes() {
        let manual = Manual::with_endpoints([ep(1)]);
        let mut s = manual.stream();
        manual.insert(ep(2));
        assert!(manual.remove(ep(1).addr));
        assert!(!manual.remove(ep(9).addr));
        assert_eq!(s.next().await.unwrap().unwrap(), Update::Reset(vec![ep(1)]));
        assert_eq!(s.next().await.unwrap().unwrap(), Update::Insert(ep(2)));
        assert_eq!(s.next().await.unwrap().unwrap(), Update::Remove(ep(1).addr));
        drop(manual);
        assert!(s.next().await.is_none());
    }
}
