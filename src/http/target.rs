//! What an endpoint's requests are pointed at, made once per endpoint and
//! copied without counting a reference.
//!
//! Every attempt clones its endpoint's service, and every request gets a
//! copy of the endpoint's `Authority`. Behind an `Arc`, and with an
//! `Authority` made from a `String`, each of those copies and drops is an
//! atomic update. So the targets of the first [`KEPT`] distinct (scheme,
//! address) pairs a process connects to are kept for the process's life
//! (under 256 bytes each, so at most about 256 KiB), their authorities
//! made from `&'static str`: copying one is copying a pointer. Later
//! targets are shared by reference count as usual, so a process whose
//! endpoints keep changing does not grow without bound.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use http::uri::{Authority, Scheme};

/// How many distinct (scheme, address) pairs' targets are kept.
pub(crate) const KEPT: usize = 1024;

/// One endpoint's scheme, authority and address.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    pub(crate) addr: SocketAddr,
}

/// A reference on a [`Target`]: kept for the process's life, or shared.
#[derive(Debug, Clone)]
pub(crate) enum TargetRef {
    /// Kept: copied as a pointer.
    Kept(&'static Target),
    /// Past [`KEPT`] targets: reference-counted.
    Shared(Arc<Target>),
}

impl Deref for TargetRef {
    type Target = Target;

    #[inline]
    fn deref(&self) -> &Target {
        match self {
            TargetRef::Kept(target) => target,
            TargetRef::Shared(target) => target,
        }
    }
}

/// The targets kept so far, up to a limit.
struct Kept {
    targets: HashMap<(Scheme, SocketAddr), &'static Target>,
    limit: usize,
}

impl Kept {
    /// The target for `scheme` and `addr`: the kept one, a new kept one
    /// while there is room, or a shared one.
    fn target(&mut self, scheme: Scheme, addr: SocketAddr) -> TargetRef {
        let key = (scheme, addr);
        if let Some(target) = self.targets.get(&key) {
            return TargetRef::Kept(target);
        }
        let (scheme, addr) = key;
        let text = addr.to_string();
        // A socket address always makes a valid authority; this keeps a bad
        // one (which never happens) from panicking in `from_static`.
        if Authority::try_from(text.as_str()).is_err() || self.targets.len() >= self.limit {
            let authority =
                Authority::try_from(text).unwrap_or_else(|_| Authority::from_static("invalid"));
            return TargetRef::Shared(Arc::new(Target {
                scheme,
                authority,
                addr,
            }));
        }
        let text: &'static str = Box::leak(text.into_boxed_str());
        let target: &'static Target = Box::leak(Box::new(Target {
            scheme: scheme.clone(),
            authority: Authority::from_static(text),
            addr,
        }));
        self.targets.insert((scheme, addr), target);
        TargetRef::Kept(target)
    }
}

/// The process's kept targets.
static KEPT_TARGETS: LazyLock<Mutex<Kept>> = LazyLock::new(|| {
    Mutex::new(Kept {
        targets: HashMap::new(),
        limit: KEPT,
    })
});

/// The target for `scheme` and `addr` ("127.0.0.1:80", "[::1]:80"). Called
/// once per endpoint, when its service is made.
pub(crate) fn target(scheme: Scheme, addr: SocketAddr) -> TargetRef {
    // A poisoned lock only means another thread panicked while inserting:
    // the map itself is whole.
    let mut kept = KEPT_TARGETS.lock().unwrap_or_else(PoisonError::into_inner);
    kept.target(scheme, addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(limit: usize) -> Kept {
        Kept {
            targets: HashMap::new(),
            limit,
        }
    }

    #[test]
    fn targets_are_kept_once_and_read_as_the_address() {
        let mut kept = kept(KEPT);
        for addr in ["127.0.0.1:8080", "[::1]:9090"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let first = kept.target(Scheme::HTTPS, addr);
            assert_eq!(first.authority.as_str(), addr.to_string());
            assert_eq!((first.scheme.as_str(), first.addr), ("https", addr));
            let again = kept.target(Scheme::HTTPS, addr);
            assert!(
                matches!((&first, &again), (TargetRef::Kept(a), TargetRef::Kept(b)) if std::ptr::eq(*a, *b))
            );
            let http = kept.target(Scheme::HTTP, addr);
            assert_eq!(http.scheme, Scheme::HTTP);
            assert!(!std::ptr::eq(&*first, &*http));
        }
        // The process's table answers the same way.
        let addr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(target(Scheme::HTTP, addr).authority, "127.0.0.1:8080");
    }

    #[test]
    fn past_the_limit_targets_are_shared_and_nothing_more_is_kept() {
        let mut kept = kept(2);
        let addr = |i: u8| SocketAddr::from(([10, 0, 0, i], 9));
        assert!(matches!(
            kept.target(Scheme::HTTP, addr(1)),
            TargetRef::Kept(_)
        ));
        assert!(matches!(
            kept.target(Scheme::HTTP, addr(2)),
            TargetRef::Kept(_)
        ));
        let past = kept.target(Scheme::HTTP, addr(3));
        assert!(matches!(past, TargetRef::Shared(_)));
        assert_eq!(
            (past.authority.as_str(), past.addr),
            ("10.0.0.3:9", addr(3))
        );
        assert_eq!(kept.targets.len(), 2);
        // Those kept before stay kept.
        assert!(matches!(
            kept.target(Scheme::HTTP, addr(1)),
            TargetRef::Kept(_)
        ));
    }
}
