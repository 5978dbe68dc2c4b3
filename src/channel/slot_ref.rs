//! A counted reference on an endpoint's slot whose count shares a cache
//! line with the endpoint's load.
//!
//! Every call takes a reference on the slot it picked (the call future
//! keeps the endpoint alive, not the set) and starts, ends and measures an
//! attempt on the slot's [`Load`](crate::balance::Load). With an `Arc`, the
//! count sits in the allocation's header, a line apart from the load: under
//! two cores a call then pulls two lines the other core wrote last. Here
//! the count is the first word of a 64-byte-aligned cell and the load's hot
//! fields follow it in the same line, so a call moves one line.
//!
//! Only what the channel needs of an `Arc`: clone, drop, deref, pointer
//! identity and a raw form for deferred outcomes (no weak references).

use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering, fence};

/// The allocation: the count, then the slot (whose first field is its
/// load), from the start of a cache line.
#[repr(C, align(64))]
struct Cell<T> {
    refs: AtomicUsize,
    slot: T,
}

/// A counted reference on a slot `T` (a [`Slot`](super::slot::Slot); generic
/// so that tests can count drops), see the [module docs](self).
pub(crate) struct SlotRef<T> {
    cell: NonNull<Cell<T>>,
}

// SAFETY: a `SlotRef` gives shared access to its slot from any thread and
// may drop it on any thread, as `Arc<T>` would: it needs the same bounds.
unsafe impl<T: Send + Sync> Send for SlotRef<T> {}
// SAFETY: as for `Send`.
unsafe impl<T: Send + Sync> Sync for SlotRef<T> {}

/// Past this many references the process aborts, as `Arc` does, rather
/// than let the count wrap.
const MAX_REFS: usize = isize::MAX as usize;

impl<T> SlotRef<T> {
    /// The one reference on a new slot.
    pub(crate) fn new(slot: T) -> Self {
        let cell = Box::new(Cell {
            refs: AtomicUsize::new(1),
            slot,
        });
        SlotRef {
            cell: NonNull::from(Box::leak(cell)),
        }
    }

    /// The slot's address: an identity for the slot while it lives.
    pub(crate) fn as_ptr(this: &Self) -> *const T {
        &this.cell().slot
    }

    /// The reference as a plain pointer, still counted: give it back to
    /// [`from_raw`](Self::from_raw) once.
    pub(crate) fn into_raw(this: Self) -> NonNull<()> {
        let raw = this.cell.cast();
        std::mem::forget(this);
        raw
    }

    /// The reference [`into_raw`](Self::into_raw) gave.
    ///
    /// # Safety
    ///
    /// `raw` comes from `into_raw` on a `SlotRef<T>` and is taken back
    /// once.
    pub(crate) unsafe fn from_raw(raw: NonNull<()>) -> Self {
        SlotRef { cell: raw.cast() }
    }

    /// Whether `a` and `b` refer to the same slot.
    #[cfg(test)]
    pub(crate) fn ptr_eq(a: &Self, b: &Self) -> bool {
        a.cell == b.cell
    }

    fn cell(&self) -> &Cell<T> {
        // SAFETY: the cell lives while any reference does, and this is one.
        unsafe { self.cell.as_ref() }
    }
}

impl<T> Clone for SlotRef<T> {
    #[inline]
    fn clone(&self) -> Self {
        // Relaxed, as `Arc`: a new reference is made from an existing one,
        // which already keeps the cell alive.
        if self.cell().refs.fetch_add(1, Ordering::Relaxed) > MAX_REFS {
            std::process::abort();
        }
        SlotRef { cell: self.cell }
    }
}

impl<T> Drop for SlotRef<T> {
    #[inline]
    fn drop(&mut self) {
        // Release, then Acquire before freeing, as `Arc`: every use of the
        // slot through another reference happens before it is dropped.
        if self.cell().refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        // SAFETY: this was the last reference; the cell came from a `Box`.
        drop(unsafe { Box::from_raw(self.cell.as_ptr()) });
    }
}

impl<T> Deref for SlotRef<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.cell().slot
    }
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;
    use std::sync::Arc;

    use super::*;
    use crate::balance::Load;
    use crate::channel::slot::Slot;

    #[test]
    fn the_count_and_the_loads_hot_fields_share_a_line() {
        assert_eq!(std::mem::align_of::<Cell<Slot<()>>>(), 64);
        let load = offset_of!(Cell<Slot<()>>, slot) + offset_of!(Slot<()>, load);
        assert_eq!(offset_of!(Cell<Slot<()>>, refs), 0);
        assert!(load + Load::HOT_BYTES <= 64, "the load starts at {load}");
    }

    /// Counts its drops.
    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn the_slot_is_dropped_once_with_its_last_reference_from_any_thread() {
        let drops = Arc::new(AtomicUsize::new(0));
        let first = SlotRef::new(Counted(drops.clone()));
        let copies: Vec<_> = (0..64).map(|_| first.clone()).collect();
        assert!(copies.iter().all(|c| SlotRef::ptr_eq(c, &first)));
        let other = SlotRef::new(Counted(drops.clone()));
        assert!(!SlotRef::ptr_eq(&other, &first));
        drop(other);
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        drop(first);
        let threads: Vec<_> = copies
            .chunks(16)
            .map(|c| c.to_vec())
            .map(|c| std::thread::spawn(move || drop(c)))
            .collect();
        drop(copies);
        assert_eq!(drops.load(Ordering::Relaxed), 1, "still referenced");
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(drops.load(Ordering::Relaxed), 2);
    }
}
