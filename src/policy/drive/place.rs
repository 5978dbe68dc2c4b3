//! [`Place`]: room for one pinned attempt, written where it lives.
//!
//! An attempt is a few machine words of small fields (numbers, flags, an
//! instant, a span). Built as a value and then moved into its future, it
//! is stored piece by piece on the stack and read back in wide copies,
//! which the processor cannot forward from the narrow stores: each such
//! copy waits for the stores to retire (measured as a fifth of the
//! driver's time per call). A dispatch therefore writes the attempt's
//! fields straight into the place the driver keeps for it.

use std::mem::MaybeUninit;
use std::pin::Pin;

/// Room for one pinned `A`, empty or holding one (an `Option<A>` whose
/// value can be written in place).
pub(crate) struct Place<A> {
    value: MaybeUninit<A>,
    live: bool,
}

impl<A> Place<A> {
    /// An empty place.
    pub(crate) const fn empty() -> Self {
        Place {
            value: MaybeUninit::uninit(),
            live: false,
        }
    }

    /// The value, pinned, if there is one.
    #[inline]
    pub(crate) fn as_pin_mut(self: Pin<&mut Self>) -> Option<Pin<&mut A>> {
        // SAFETY: the value is never moved out of the place: it is dropped
        // where it is (`clear`, `Drop`), so pinning the place pins it.
        unsafe {
            let this = self.get_unchecked_mut();
            if this.live {
                Some(Pin::new_unchecked(this.value.assume_init_mut()))
            } else {
                None
            }
        }
    }

    /// The value, if there is one.
    pub(crate) fn get(&self) -> Option<&A> {
        // SAFETY: `live` says the value is initialized.
        self.live.then(|| unsafe { self.value.assume_init_ref() })
    }

    /// Drops the value, if any, where it is.
    #[inline]
    pub(crate) fn clear(self: Pin<&mut Self>) {
        // SAFETY: the value is dropped in place, never moved; `live` is
        // cleared first so that a panicking drop cannot drop it twice.
        unsafe {
            let this = self.get_unchecked_mut();
            if std::mem::take(&mut this.live) {
                this.value.assume_init_drop();
            }
        }
    }

    /// Puts `value` in the place, dropping what it held.
    pub(crate) fn put(mut self: Pin<&mut Self>, value: A) {
        // SAFETY: `write` initializes the value it is given.
        unsafe { self.as_mut().fill(|at| at.write(value)) }
    }

    /// Drops what the place held, then has `write` write the new value at
    /// the pointer it is given.
    ///
    /// # Safety
    ///
    /// `write` must fully initialize the value at the pointer (or panic,
    /// which leaves the place empty).
    #[inline(always)]
    pub(crate) unsafe fn fill(mut self: Pin<&mut Self>, write: impl FnOnce(*mut A)) {
        self.as_mut().clear();
        // SAFETY: the place is empty, so nothing is overwritten; the
        // caller's `write` initializes the value, and only then is the
        // place marked as holding one.
        unsafe {
            let this = self.get_unchecked_mut();
            write(this.value.as_mut_ptr());
            this.live = true;
        }
    }
}

impl<A> Drop for Place<A> {
    fn drop(&mut self) {
        if self.live {
            // SAFETY: `live` says the value is initialized; it is dropped
            // where it is, as its pin requires.
            unsafe { self.value.assume_init_drop() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn a_place_drops_what_it_holds_once() {
        let counted = Rc::new(());
        let mut place = Box::pin(Place::empty());
        assert!(place.get().is_none() && place.as_mut().as_pin_mut().is_none());
        place.as_mut().put(counted.clone());
        assert_eq!(Rc::strong_count(&counted), 2);
        assert!(place.get().is_some());
        // Replacing drops the old value.
        place.as_mut().put(counted.clone());
        assert_eq!(Rc::strong_count(&counted), 2);
        place.as_mut().clear();
        assert_eq!(Rc::strong_count(&counted), 1);
        assert!(place.get().is_none());
        place.as_mut().clear();
        // SAFETY: the closure writes the value.
        unsafe { place.as_mut().fill(|at| at.write(counted.clone())) };
        drop(place);
        assert_eq!(Rc::strong_count(&counted), 1);
    }
}
