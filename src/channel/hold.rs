//! A call's hold on its channel clone's handle, taken without an atomic
//! update in the usual case.
//!
//! A call under a policy needs its clone's [`Handle`] (settings, table,
//! replay) until it ends, also when the clone is dropped first: the handle
//! is counted. Counting each call with the handle's `Arc` costs two atomic
//! updates, one when the call starts and one when it ends. Here the clone
//! takes holds in batches of [`BATCH`] with one update ([`Credits`]), hands
//! one to each call without any ([`Hold`]), and each call gives its hold
//! back with one update as it ends ([`Holds`]).
//!
//! The handle is owned by its clone's `Arc` (the only one). When the clone
//! goes and no hold is out, that `Arc` is dropped as usual; when holds are
//! out, the clone's strong count is left to the last of them, which drops
//! it.

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering, fence};

/// Holds a clone takes at a time.
const BATCH: usize = 64;

/// Set in [`Holds`] once the clone that owns the handle is gone.
const OWNER_GONE: usize = 1 << (usize::BITS - 1);

/// How many holds on a handle are out: taken by its clone, given to calls
/// or not yet, and not given back (see the [module docs](self)).
#[derive(Debug, Default)]
pub(crate) struct Holds {
    out: AtomicUsize,
}

impl Holds {
    /// The owning clone lets go of its `unused` holds; true when no hold
    /// is out, so that the clone drops the handle, false when the last
    /// hold will.
    pub(crate) fn let_go(&self, unused: Credits) -> bool {
        let unused = unused.0 as usize;
        // out - unused + OWNER_GONE, in one update.
        let before = self
            .out
            .fetch_add(OWNER_GONE.wrapping_sub(unused), Ordering::AcqRel);
        before == unused
    }

    /// A call gives its hold back; true when it was the last one out and
    /// the owning clone is gone.
    #[inline]
    fn give_back(&self) -> bool {
        if self.out.fetch_sub(1, Ordering::Release) == OWNER_GONE + 1 {
            // Everything done through other holds happens before the drop.
            fence(Ordering::Acquire);
            return true;
        }
        false
    }
}

/// The holds a channel clone has taken and not yet given to a call (plain
/// memory: only the clone's own `call`, which has it mutably, touches it).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Credits(u32);

/// A value that holds are taken on (a channel clone's handle): it keeps
/// the count of its holds.
pub(crate) trait Counted {
    /// The holds out on this value.
    fn holds(&self) -> &Holds;
}

/// One call's hold on its handle: derefs to it, and gives the hold back
/// when dropped.
pub(crate) struct Hold<T: Counted> {
    handle: NonNull<T>,
}

// SAFETY: a hold is a shared reference to the handle that outlives the
// borrow it was made from; sending or sharing it is sending or sharing
// `&T`.
unsafe impl<T: Counted + Sync> Send for Hold<T> {}
// SAFETY: as above.
unsafe impl<T: Counted + Sync> Sync for Hold<T> {}

impl<T: Counted> Hold<T> {
    /// A hold on the handle at `this`, from `credits` (taking a new batch
    /// when they are used up).
    ///
    /// # Safety
    ///
    /// `this` must be `Arc::as_ptr` of the one `Arc<T>` (possibly unsized
    /// to a trait object) that owns the handle: that of
    /// the clone whose `credits` these are (a pointer made from a reference
    /// to the handle would not reach the counts beside it). That clone must
    /// end with [`Holds::let_go`] and leave its `Arc`'s count to the last
    /// hold when that returns false.
    #[inline]
    pub(crate) unsafe fn take(this: *const T, credits: &mut Credits) -> Self {
        // SAFETY: the clone's `Arc` keeps the handle alive meanwhile.
        let handle = unsafe { &*this };
        if credits.0 == 0 {
            handle.holds().out.fetch_add(BATCH, Ordering::Relaxed);
            credits.0 = BATCH as u32;
        }
        credits.0 -= 1;
        Hold {
            // SAFETY: an `Arc`'s pointer is not null.
            handle: unsafe { NonNull::new_unchecked(this.cast_mut()) },
        }
    }
}

impl<T: Counted> std::ops::Deref for Hold<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the handle lives while a hold is out (see `take`).
        unsafe { self.handle.as_ref() }
    }
}

impl<T: Counted> Drop for Hold<T> {
    #[inline]
    fn drop(&mut self) {
        if self.holds().give_back() {
            // SAFETY: the owning clone left its `Arc`'s count to the last
            // hold, this one (see `take`); the handle is that `Arc`'s value.
            unsafe { Arc::decrement_strong_count(self.handle.as_ptr().cast_const()) }
        }
    }
}
