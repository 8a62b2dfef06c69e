//! A boxed value of any type whose downcast costs one inline comparison.
//!
//! `Box<dyn Any>::downcast_mut` asks the value for its type through the vtable (a call that
//! cannot be inlined) and compares the answer: in a per-thread cache hit on every acquire and
//! release of a pooled buffer, that call was about a tenth of the time (perf on lavapipe:
//! `<T as Any>::type_id` 9% of an acquire and release). [`AnyBox`] records the type beside
//! the box when it is made, so a downcast compares a stored value against a constant.

use std::any::{Any, TypeId};

/// A boxed value of a type fixed when the box is made, with a downcast that does not call
/// through the vtable.
///
/// ```
/// use gantry_host::AnyBox;
/// let mut b = AnyBox::new(41u32);
/// *b.downcast_mut::<u32>().unwrap() += 1;
/// assert_eq!(b.downcast_ref::<u32>(), Some(&42));
/// assert!(b.downcast_ref::<u64>().is_none());
/// assert!(b.is::<u32>());
/// ```
pub struct AnyBox {
    /// The type of the value in `value`, from [`AnyBox::new`]; neither field changes after.
    type_id: TypeId,
    value: Box<dyn Any>,
}

impl AnyBox {
    /// Boxes `value`.
    #[must_use]
    pub fn new<T: Any>(value: T) -> Self {
        Self {
            type_id: TypeId::of::<T>(),
            value: Box::new(value),
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
        let ptr: *const dyn Any = &*self.value;
        // SAFETY: `value` was boxed from a `T` (`type_id` was recorded from the same type
        // parameter in `new`, and neither field is ever replaced), so the data pointer of the
        // trait object points to a live, initialized `T`, borrowed from `self` for the
        // returned lifetime.
        Some(unsafe { &*ptr.cast::<T>() })
    }

    /// The value, mutably, if it is a `T`.
    #[inline]
    #[must_use]
    pub fn downcast_mut<T: Any>(&mut self) -> Option<&mut T> {
        if !self.is::<T>() {
            return None;
        }
        let ptr: *mut dyn Any = &mut *self.value;
        // SAFETY: as in `downcast_ref`; the borrow is unique because `self` is borrowed
        // mutably for the returned lifetime.
        Some(unsafe { &mut *ptr.cast::<T>() })
    }
}

impl std::fmt::Debug for AnyBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnyBox")
            .field("type_id", &self.type_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::AnyBox;
    use std::cell::Cell;

    /// Counts its drops (through a shared cell).
    struct Probe(std::sync::Arc<std::sync::atomic::AtomicUsize>, [u64; 3]);
    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn downcasts_to_the_boxed_type_only_and_drops_the_value_once() {
        let drops = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut b = AnyBox::new(Probe(drops.clone(), [1, 2, 3]));
        assert!(b.downcast_ref::<u64>().is_none());
        assert!(b.downcast_mut::<[u64; 3]>().is_none());
        b.downcast_mut::<Probe>().unwrap().1[2] = 9;
        assert_eq!(b.downcast_ref::<Probe>().unwrap().1, [1, 2, 9]);
        drop(b);
        assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), 1);
        // Zero-sized and unsized-behind-pointer values.
        let mut unit = AnyBox::new(());
        assert!(unit.downcast_mut::<()>().is_some());
        let s = AnyBox::new(String::from("gantry"));
        assert_eq!(
            s.downcast_ref::<String>().map(String::as_str),
            Some("gantry")
        );
        let c = AnyBox::new(Cell::new(5u8));
        assert_eq!(c.downcast_ref::<Cell<u8>>().map(Cell::get), Some(5));
    }
}
