//! Zeroed host buffers with a chosen alignment, such as page-aligned (4096) memory that a
//! Vulkan backend can import (`VK_EXT_external_memory_host`) instead of copying.

use core::alloc::Layout;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use crate::PAGE_SIZE;

/// Why an [`AlignedBuf`] could not be created.
///
/// # Example
/// ```
/// use gantry_host::{AlignedBuf, AlignedBufError};
///
/// assert!(matches!(AlignedBuf::new(8, 3), Err(AlignedBufError::NotPowerOfTwo { align: 3 })));
/// assert!(matches!(AlignedBuf::new(usize::MAX, 8), Err(AlignedBufError::TooLarge { .. })));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AlignedBufError {
    /// The alignment is not a power of two.
    #[error("alignment {align} is not a power of two")]
    NotPowerOfTwo {
        /// The alignment asked for.
        align: usize,
    },
    /// `len` rounded up to `align` would exceed `isize::MAX`.
    #[error("{len} bytes aligned to {align} exceed isize::MAX")]
    TooLarge {
        /// The length asked for.
        len: usize,
        /// The alignment asked for.
        align: usize,
    },
    /// The global allocator returned no memory.
    #[error("the allocator could not provide {len} bytes aligned to {align}")]
    OutOfMemory {
        /// The length asked for.
        len: usize,
        /// The alignment asked for.
        align: usize,
    },
}

/// A heap buffer of `len` zeroed bytes whose start is aligned to `align`; derefs to
/// `[u8]`. Owns its memory like a `Box<[u8]>`.
///
/// # Example
/// ```
/// use gantry_host::AlignedBuf;
///
/// let mut buf = AlignedBuf::page_aligned(3 * 4096)?;
/// assert_eq!(buf.as_ptr() as usize % 4096, 0);
/// buf[..4].copy_from_slice(b"data");
/// assert_eq!(&buf[..4], b"data");
/// assert_eq!(buf.len(), 3 * 4096);
/// # Ok::<(), gantry_host::AlignedBufError>(())
/// ```
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    align: usize,
}

// SAFETY: `AlignedBuf` uniquely owns its allocation, like `Box<[u8]>`, which is `Send`.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads through `&[u8]`, like `Box<[u8]>`, which is `Sync`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `len` zeroed bytes aligned to `align` (a power of two). A zero length allocates
    /// nothing (the pointer is still aligned).
    ///
    /// # Errors
    /// [`AlignedBufError::NotPowerOfTwo`], [`AlignedBufError::TooLarge`], or
    /// [`AlignedBufError::OutOfMemory`] when the allocator fails.
    ///
    /// # Example
    /// ```
    /// use gantry_host::{AlignedBuf, AlignedBufError};
    ///
    /// let buf = AlignedBuf::new(100, 64)?;
    /// assert_eq!(buf.as_ptr() as usize % 64, 0);
    /// assert!(buf.iter().all(|&b| b == 0));
    /// assert_eq!(
    ///     AlignedBuf::new(100, 48).unwrap_err(),
    ///     AlignedBufError::NotPowerOfTwo { align: 48 }
    /// );
    /// # Ok::<(), AlignedBufError>(())
    /// ```
    pub fn new(len: usize, align: usize) -> Result<Self, AlignedBufError> {
        if !align.is_power_of_two() {
            return Err(AlignedBufError::NotPowerOfTwo { align });
        }
        let layout = Layout::from_size_align(len, align)
            .map_err(|_| AlignedBufError::TooLarge { len, align })?;
        let ptr = if len == 0 {
            // An aligned, dangling pointer with no provenance: never read or written.
            NonNull::new(core::ptr::without_provenance_mut::<u8>(align))
        } else {
            // SAFETY: `layout` has a non-zero size.
            NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })
        };
        let ptr = ptr.ok_or(AlignedBufError::OutOfMemory { len, align })?;
        Ok(Self { ptr, len, align })
    }

    /// `len` zeroed bytes aligned to [`PAGE_SIZE`] (4096).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    ///
    /// # Example
    /// ```
    /// let buf = gantry_host::AlignedBuf::page_aligned(8192)?;
    /// assert_eq!(buf.align(), 4096);
    /// # Ok::<(), gantry_host::AlignedBufError>(())
    /// ```
    pub fn page_aligned(len: usize) -> Result<Self, AlignedBufError> {
        Self::new(len, PAGE_SIZE)
    }

    /// The alignment of the start.
    ///
    /// # Example
    /// ```
    /// assert_eq!(gantry_host::AlignedBuf::new(8, 256)?.align(), 256);
    /// # Ok::<(), gantry_host::AlignedBufError>(())
    /// ```
    pub fn align(&self) -> usize {
        self.align
    }

    /// The start of the bytes, for FFI (e.g. importing the memory into a GPU API).
    ///
    /// # Example
    /// ```
    /// let buf = gantry_host::AlignedBuf::new(16, 16)?;
    /// assert_eq!(buf.as_ptr(), buf[..].as_ptr());
    /// # Ok::<(), gantry_host::AlignedBufError>(())
    /// ```
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The start of the bytes, writable, for FFI.
    ///
    /// # Example
    /// ```
    /// let mut buf = gantry_host::AlignedBuf::new(16, 16)?;
    /// assert_eq!(buf.as_mut_ptr() as usize % 16, 0);
    /// # Ok::<(), gantry_host::AlignedBufError>(())
    /// ```
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `len` initialised (zeroed) bytes owned by `self`, or
        // dangling and aligned with `len == 0`, which `from_raw_parts` allows.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only access.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: allocated in `new` with exactly this size and alignment (checked
            // valid there), and freed only here.
            unsafe {
                std::alloc::dealloc(
                    self.ptr.as_ptr(),
                    Layout::from_size_align_unchecked(self.len, self.align),
                );
            }
        }
    }
}

impl Clone for AlignedBuf {
    fn clone(&self) -> Self {
        let mut copy = Self::new(self.len, self.align)
            .unwrap_or_else(|_| std::alloc::handle_alloc_error(self.layout()));
        copy.copy_from_slice(self);
        copy
    }
}

impl AlignedBuf {
    fn layout(&self) -> Layout {
        Layout::from_size_align(self.len, self.align).expect("checked in new")
    }
}

impl core::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("align", &self.align)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignments_and_zero_length() {
        for align in [1, 2, 64, 4096, 1 << 16] {
            for len in [0, 1, 4095, 4096, 10_000] {
                let mut b = AlignedBuf::new(len, align).unwrap();
                assert_eq!(b.as_ptr() as usize % align, 0);
                assert_eq!(b.len(), len);
                assert!(b.iter().all(|&x| x == 0));
                b.fill(7);
                let c = b.clone();
                assert_eq!(&c[..], &b[..]);
            }
        }
        assert!(matches!(
            AlignedBuf::new(usize::MAX - 10, 4096),
            Err(AlignedBufError::TooLarge { .. })
        ));
        assert!(matches!(
            AlignedBuf::new(1, 0),
            Err(AlignedBufError::NotPowerOfTwo { align: 0 })
        ));
    }
}
