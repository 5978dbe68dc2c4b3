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

/// The targets kept so far.
static KEPT_TARGETS: LazyLock<Mutex<HashMap<(Scheme, SocketAddr), &'static Target>>> =
    LazyLock::new(Mutex::default);

/// The target for `scheme` and `addr` ("127.0.0.1:80", "[::1]:80"). Called
/// once per endpoint, when its service is made.
pub(crate) fn target(scheme: Scheme, addr: SocketAddr) -> TargetRef {
    // A poisoned lock only means another thread panicked while inserting:
    // the map itself is whole.
    let mut kept = KEPT_TARGETS.lock().unwrap_or_else(PoisonError::into_inner);
    let key = (scheme, addr);
    if let Some(target) = kept.get(&key) {
        return TargetRef::Kept(target);
    }
    let (scheme, addr) = key;
    let text = addr.to_string();
    // A socket address always makes a valid authority; this keeps a bad one
    // (which never happens) from panicking in `from_static`.
    if Authority::try_from(text.as_str()).is_err() || kept.len() >= KEPT {
        drop(kept);
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
    kept.insert((scheme, addr), target);
    TargetRef::Kept(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_kept_once_and_read_as_the_address() {
        for addr in ["127.0.0.1:8080", "[::1]:9090"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let first = target(Scheme::HTTPS, addr);
            assert_eq!(first.authority.as_str(), addr.to_string());
            assert_eq!((first.scheme.as_str(), first.addr), ("https", addr));
            let again = target(Scheme::HTTPS, addr);
            assert!(
                matches!((&first, &again), (TargetRef::Kept(a), TargetRef::Kept(b)) if std::ptr::eq(*a, *b))
            );
            let http = target(Scheme::HTTP, addr);
            assert_eq!(http.scheme, Scheme::HTTP);
            assert!(!std::ptr::eq(&*first, &*http));
        }
    }
}
