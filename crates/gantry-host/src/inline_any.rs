//! A value of any type, stored inline when it fits, whose downcast costs one inline
//! comparison.
//!
//! `Box<dyn Any>::downcast_mut` asks the value for its type through the vtable (a call that
//! cannot be inlined) and compares the answer: in a per-thread cache hit on every acquire and
//! release of a pooled buffer, that call was about a tenth of the time (perf on lavapipe:
//! `<T as Any>::type_id` 9% of an acquire and release). [`InlineAny`] records the type when it
//! is made, so a downcast compares a stored value against a constant; and it keeps the value
//! in place, so reaching it follows no pointer (on the pool's hit path, each pointer followed
//! is a dependent load: about a nanosecond).

use std::any::{Any, TypeId};
use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::mem::{MaybeUninit, align_of, size_of};

/// A value of a type fixed when it is made, kept in `WORDS` machine words in place when it fits
/// (its size at most `WORDS` words, its alignment at most a word's), boxed otherwise; its
/// downcast compares the stored type against a constant and does not call through a vtable.
///
/// ```
/// use gantry_host::InlineAny;
/// let mut b = InlineAny::<2>::new(41u32);
/// *b.downcast_mut::<u32>().unwrap() += 1;
/// assert_eq!(b.downcast_ref::<u32>(), Some(&42));
/// assert!(b.downcast_ref::<u64>().is_none());
/// assert!(b.is::<u32>());
/// // Kept in place when it fits; a larger value is boxed, and works the same.
/// assert!(InlineAny::<2>::fits::<[u64; 2]>());
/// assert!(!InlineAny::<2>::fits::<[u64; 3]>());
/// let big = InlineAny::<2>::new([7u64; 3]);
/// assert_eq!(big.downcast_ref::<[u64; 3]>(), Some(&[7; 3]));
/// ```
pub struct InlineAny<const WORDS: usize> {
    /// The type of the value, from [`InlineAny::new`]; neither it nor `drop` changes after.
    type_id: TypeId,
    /// Drops the value in `data` (in place, or its box).
    drop: unsafe fn(*mut MaybeUninit<usize>),
    /// The value when [`InlineAny::fits`] its type, else a `Box` of it. In an `UnsafeCell`:
    /// the value may have interior mutability, used through a shared borrow of `self`.
    data: UnsafeCell<[MaybeUninit<usize>; WORDS]>,
    /// The value need not be `Send` or `Sync`.
    _not_send: PhantomData<*mut ()>,
}

impl<const WORDS: usize> InlineAny<WORDS> {
    /// Whether a `T` is kept in place (else it is boxed).
    #[inline]
    #[must_use]
    pub const fn fits<T>() -> bool {
        size_of::<T>() <= WORDS * size_of::<usize>() && align_of::<T>() <= align_of::<usize>()
    }

    /// Stores `value` (in place when it [fits](Self::fits)).
    ///
    /// A `WORDS` of 0 is refused at compile time (a box needs one word).
    #[must_use]
    pub fn new<T: Any>(value: T) -> Self {
        const { assert!(WORDS >= 1, "InlineAny needs at least one word") };
        let data = UnsafeCell::new([MaybeUninit::<usize>::uninit(); WORDS]);
        let slot = data.get().cast::<MaybeUninit<usize>>();
        let drop: unsafe fn(*mut MaybeUninit<usize>) = if Self::fits::<T>() {
            // SAFETY: `data` holds at least `size_of::<T>()` bytes and its alignment (a
            // word's) is at least `T`'s, as `fits` checked.
            unsafe { slot.cast::<T>().write(value) };
            drop_in_place::<T>
        } else {
            // SAFETY: a `Box<T>` is one word, word-aligned, and `WORDS >= 1`.
            unsafe { slot.cast::<Box<T>>().write(Box::new(value)) };
            drop_boxed::<T>
        };
        Self {
            type_id: TypeId::of::<T>(),
            drop,
            data,
            _not_send: PhantomData,
        }
    }

    /// Whether the value is a `T`.
    #[inline]
    #[must_use]
    pub fn is<T: Any>(&self) -> bool {
        self.type_id == TypeId::of::<T>()
    }

    /// The value, if it is a `T`.
    #[inline]
    #[must_use]
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        if !self.is::<T>() {
            return None;
        }
        let slot = self.data.get().cast::<MaybeUninit<usize>>();
        // SAFETY: the value is a `T` (`type_id` was recorded from the same type parameter in
        // `new`, and no field is replaced after), stored in place when `fits::<T>()` (a
        // constant, the same as in `new`) and else as a `Box<T>` in the first word; it is
        // initialized until `drop`, and borrowed from `self` for the returned lifetime. Only
        // shared borrows of it exist while `self` is borrowed shared (`downcast_mut` needs
        // `&mut self`), and any mutation through them is the value's own interior mutability,
        // which the `UnsafeCell` around `data` permits.
        Some(unsafe {
            if Self::fits::<T>() {
                &*slot.cast::<T>()
            } else {
                &**slot.cast::<Box<T>>()
            }
        })
    }

    /// The value, mutably, if it is a `T`.
    #[inline]
    #[must_use]
    pub fn downcast_mut<T: Any>(&mut self) -> Option<&mut T> {
        if !self.is::<T>() {
            return None;
        }
        let slot = self.data.get_mut().as_mut_ptr();
        // SAFETY: as in `downcast_ref`; the borrow is unique because `self` is borrowed
        // mutably for the returned lifetime.
        Some(unsafe {
            if Self::fits::<T>() {
                &mut *slot.cast::<T>()
            } else {
                &mut **slot.cast::<Box<T>>()
            }
        })
    }
}

/// Drops the `T` stored in place at `slot`.
///
/// # Safety
/// `slot` holds an initialized `T`, aligned, that is not used after.
unsafe fn drop_in_place<T>(slot: *mut MaybeUninit<usize>) {
    // SAFETY: the caller's contract.
    unsafe { std::ptr::drop_in_place(slot.cast::<T>()) }
}

/// Drops the `Box<T>` stored at `slot`.
///
/// # Safety
/// `slot` holds an initialized `Box<T>`, aligned, that is not used after.
unsafe fn drop_boxed<T>(slot: *mut MaybeUninit<usize>) {
    // SAFETY: the caller's contract.
    unsafe { std::ptr::drop_in_place(slot.cast::<Box<T>>()) }
}

impl<const WORDS: usize> Drop for InlineAny<WORDS> {
    fn drop(&mut self) {
        // SAFETY: `drop` was chosen in `new` for how the value of `data` is stored; the value
        // is initialized (only this drops it) and is not used after.
        unsafe { (self.drop)(self.data.get_mut().as_mut_ptr()) }
    }
}

impl<const WORDS: usize> std::fmt::Debug for InlineAny<WORDS> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineAny")
            .field("type_id", &self.type_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::InlineAny;
    use std::cell::Cell;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its drops (through a shared counter).
    struct Probe(Arc<AtomicUsize>, [u64; 3]);
    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Downcasts to the stored type only, reads and writes it, and drops it once, with
    /// `WORDS` words in place.
    fn probe<const WORDS: usize>(inline: bool) {
        let drops = Arc::new(AtomicUsize::new(0));
        assert_eq!(InlineAny::<WORDS>::fits::<Probe>(), inline);
        let mut b = InlineAny::<WORDS>::new(Probe(drops.clone(), [1, 2, 3]));
        assert!(b.downcast_ref::<u64>().is_none());
        assert!(b.downcast_mut::<[u64; 3]>().is_none());
        b.downcast_mut::<Probe>().unwrap().1[2] = 9;
        assert_eq!(b.downcast_ref::<Probe>().unwrap().1, [1, 2, 9]);
        // Moved (as a vector's elements are when it grows): still the same value.
        let mut v = vec![b];
        v.reserve(64);
        assert_eq!(v[0].downcast_ref::<Probe>().unwrap().1, [1, 2, 9]);
        assert_eq!(drops.load(Ordering::Relaxed), 0);
        drop(v);
        assert_eq!(drops.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn downcasts_to_the_stored_type_only_and_drops_the_value_once() {
        probe::<4>(true);
        probe::<8>(true);
        probe::<3>(false);
        probe::<1>(false);
        // Zero-sized, pointer-holding and interior-mutable values.
        let mut unit = InlineAny::<1>::new(());
        assert!(unit.downcast_mut::<()>().is_some());
        let s = InlineAny::<3>::new(String::from("gantry"));
        assert_eq!(
            s.downcast_ref::<String>().map(String::as_str),
            Some("gantry")
        );
        let c = InlineAny::<1>::new(Cell::new(5u8));
        assert_eq!(c.downcast_ref::<Cell<u8>>().map(Cell::get), Some(5));
        c.downcast_ref::<Cell<u8>>().unwrap().set(6);
        assert_eq!(c.downcast_ref::<Cell<u8>>().map(Cell::get), Some(6));
        // Over-aligned: boxed, whatever the room.
        #[repr(align(32))]
        struct Wide(u8);
        assert!(!InlineAny::<8>::fits::<Wide>());
        let w = InlineAny::<8>::new(Wide(3));
        let r = w.downcast_ref::<Wide>().unwrap();
        assert_eq!(r.0, 3);
        assert_eq!(std::ptr::from_ref(r).addr() % 32, 0);
    }
}
