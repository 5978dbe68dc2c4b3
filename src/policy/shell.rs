//! What the retry and hedging layers hand to each service they make.

use std::sync::Arc;

/// Tuning state `T` shared by every service of one layer (settings,
/// budget, metrics), with the layer's classifier and replay.
pub(crate) struct Parts<T, C, R> {
    pub(crate) tuning: Arc<T>,
    pub(crate) classify: C,
    pub(crate) replay: R,
}

impl<T, C, R> Parts<T, C, R> {
    pub(crate) fn new(tuning: T, classify: C, replay: R) -> Self {
        Parts {
            tuning: Arc::new(tuning),
            classify,
            replay,
        }
    }

    /// The same parts with another classifier.
    pub(crate) fn with_classify<C2>(self, classify: C2) -> Parts<T, C2, R> {
        Parts {
            tuning: self.tuning,
            classify,
            replay: self.replay,
        }
    }

    /// The same parts with another replay.
    pub(crate) fn with_replay<R2>(self, replay: R2) -> Parts<T, C, R2> {
        Parts {
            tuning: self.tuning,
            classify: self.classify,
            replay,
        }
    }
}

impl<T, C: Clone, R: Clone> Clone for Parts<T, C, R> {
    fn clone(&self) -> Self {
        Parts {
            tuning: self.tuning.clone(),
            classify: self.classify.clone(),
            replay: self.replay.clone(),
        }
    }
}
