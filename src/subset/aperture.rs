//! [`Aperture`]: a discovery source that narrows another one to this
//! client's slice.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::{ApertureSettings, Coordinate};
use crate::Endpoint;
use crate::discover::{Discover, DiscoverError, Update};
use crate::error::BuildError;

/// Positions on the ring a client without a coordinate picks from: fine
/// enough that its random slice is about `d` servers wide.
const FALLBACK_GRID: usize = 1 << 16;

/// Wraps a discovery source and yields only this client's deterministic
/// aperture of it (see the [module docs](super)).
///
/// Every change of the inner set or of the coordinate yields an
/// [`Update::Reset`] of the subset, when the subset (or a weight in it)
/// changed. Errors of the inner source pass through unchanged. The stream
/// ends when the inner source has ended and the coordinate can no longer
/// change.
pub struct Aperture {
    inner: Pin<Box<dyn Stream<Item = Result<Update, DiscoverError>> + Send>>,
}

/// Where a client's coordinate comes from: a fixed [`Coordinate`], or a
/// `watch` receiver that follows it (`discover::Peers::watch`, or your
/// own). Made with `From`, so either can be passed where this is asked.
#[derive(Debug, Clone)]
pub struct Coordinates(watch::Receiver<Option<Coordinate>>);

impl From<Coordinate> for Coordinates {
    fn from(coordinate: Coordinate) -> Self {
        let (_, rx) = watch::channel(Some(coordinate));
        Coordinates(rx)
    }
}

impl From<watch::Receiver<Option<Coordinate>>> for Coordinates {
    fn from(rx: watch::Receiver<Option<Coordinate>>) -> Self {
        Coordinates(rx)
    }
}

impl Aperture {
    /// Narrows `source` to the aperture of the coordinate `coordinates`
    /// holds, following it as it changes (for example
    /// `discover::Peers::watch`, or a fixed [`Coordinate`]). While it holds
    /// `None`, a random position is used.
    pub fn new<D: Discover>(
        source: D,
        settings: ApertureSettings,
        coordinates: impl Into<Coordinates>,
    ) -> Result<Self, BuildError> {
        settings.validate()?;
        let Coordinates(coordinates) = coordinates.into();
        let fallback = crate::rng::with_thread_rng(|rng| rng.below(FALLBACK_GRID));
        let state = Narrow {
            source: Some(Box::pin(source)),
            coordinates: Some(coordinates),
            settings,
            coordinate: None,
            fallback: Coordinate::new(fallback, FALLBACK_GRID)?,
            universe: BTreeMap::new(),
            heard: false,
            emitted: None,
        };
        let stream = futures_util::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        });
        Ok(Aperture {
            inner: Box::pin(stream),
        })
    }

    /// Narrows `source` to the aperture of a fixed coordinate.
    pub fn fixed<D: Discover>(
        source: D,
        settings: ApertureSettings,
        coordinate: Coordinate,
    ) -> Result<Self, BuildError> {
        Self::new(source, settings, coordinate)
    }
}

impl fmt::Debug for Aperture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aperture").finish_non_exhaustive()
    }
}

impl Stream for Aperture {
    type Item = Result<Update, DiscoverError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

type Source = Pin<Box<dyn Stream<Item = Result<Update, DiscoverError>> + Send>>;

/// The adapter's state: the full set, the coordinate, what was last said.
struct Narrow {
    source: Option<Source>,
    coordinates: Option<watch::Receiver<Option<Coordinate>>>,
    settings: ApertureSettings,
    coordinate: Option<Coordinate>,
    fallback: Coordinate,
    universe: BTreeMap<SocketAddr, Endpoint>,
    /// Whether the inner source has given a set yet: until then there is
    /// nothing to narrow, and an empty reset would be a lie.
    heard: bool,
    emitted: Option<Vec<Endpoint>>,
}

impl Narrow {
    async fn next(&mut self) -> Option<Result<Update, DiscoverError>> {
        if let Some(rx) = &mut self.coordinates {
            self.coordinate = *rx.borrow_and_update();
        }
        loop {
            if self.heard {
                let subset = self
                    .settings
                    .subset(self.coordinate.unwrap_or(self.fallback), &self.endpoints());
                if self.emitted.as_ref() != Some(&subset) {
                    self.emitted = Some(subset.clone());
                    return Some(Ok(Update::Reset(subset)));
                }
            }
            if self.source.is_none() && self.coordinates.is_none() {
                return None;
            }
            tokio::select! {
                item = next_update(&mut self.source) => match item {
                    Some(Ok(update)) => self.apply(update),
                    Some(Err(error)) => return Some(Err(error)),
                    None => self.source = None,
                },
                changed = coordinate_change(&mut self.coordinates) => match changed {
                    // Keep the last coordinate when its sender is gone.
                    Some(coordinate) => self.coordinate = coordinate.or(self.coordinate),
                    None => self.coordinates = None,
                },
            }
        }
    }

    fn apply(&mut self, update: Update) {
        self.heard = true;
        match update {
            Update::Reset(set) => {
                self.universe = set.into_iter().map(|e| (e.addr, e)).collect();
            }
            Update::Insert(endpoint) => {
                self.universe.insert(endpoint.addr, endpoint);
            }
            Update::Remove(addr) => {
                self.universe.remove(&addr);
            }
        }
    }

    fn endpoints(&self) -> Vec<Endpoint> {
        self.universe.values().cloned().collect()
    }
}

/// The next item of the source, or never when there is none.
async fn next_update(source: &mut Option<Source>) -> Option<Result<Update, DiscoverError>> {
    match source {
        Some(source) => source.next().await,
        None => std::future::pending().await,
    }
}

/// The next coordinate (`Some`), `None` when the sender is gone, or never
/// when there is no receiver.
async fn coordinate_change(
    coordinates: &mut Option<watch::Receiver<Option<Coordinate>>>,
) -> Option<Option<Coordinate>> {
    match coordinates {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(*rx.borrow_and_update()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}
