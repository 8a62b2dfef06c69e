//! Arena (H8): bump allocation of many live values through `&self`, freed all at once.
//!
//! Every allocating method returns `&mut` from `&self`: each allocation is a distinct range of
//! memory that no other allocation overlaps, and all of them live until [`Arena::reset`] (which
//! takes `&mut self`, so no allocation survives it) or the arena's drop. This is the design of
//! `bumpalo` and is why `clippy::mut_from_ref` is allowed in this module.
#![allow(clippy::mut_from_ref)]

use core::alloc::Layout;
use core::cell::{Cell, RefCell};
use core::fmt;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use std::sync::Arc;

use bytemuck::Pod;

use crate::BufferStats;

/// Alignment of every chunk (at least; more when a request needs it).
const CHUNK_ALIGN: usize = 16;
/// Size of the first chunk of an arena made with [`Arena::new`].
const FIRST_CHUNK: usize = 4096;
/// Chunks stop doubling past this size (a larger request still gets a chunk of its size).
const MAX_DOUBLING: usize = 256 << 20;

/// Why an arena allocation failed. The arena and its earlier allocations are unchanged.
///
/// # Example
/// ```
/// use gantry_host::{Arena, ArenaError};
///
/// let arena = Arena::fixed(64);
/// assert!(matches!(arena.try_alloc_bytes(8, 3), Err(ArenaError::InvalidAlignment { .. })));
/// assert!(matches!(arena.try_alloc_bytes(100, 8), Err(ArenaError::Full { .. })));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArenaError {
    /// The alignment is not a power of two.
    #[error("alignment {align} is not a power of two (size {size})")]
    InvalidAlignment {
        /// Requested size in bytes.
        size: usize,
        /// Requested alignment.
        align: usize,
    },
    /// The request (rounded up to its alignment) exceeds `isize::MAX` bytes, the most any
    /// allocation may span.
    #[error("{size} bytes aligned to {align} exceed the largest possible allocation (isize::MAX)")]
    TooLarge {
        /// Requested size in bytes (`usize::MAX` when computing it overflowed).
        size: usize,
        /// Requested alignment.
        align: usize,
    },
    /// A fixed-capacity arena has no room left for the request (reset it).
    #[error(
        "fixed arena full: {size} bytes aligned to {align} do not fit in the {remaining} bytes left of {capacity}"
    )]
    Full {
        /// Requested size in bytes.
        size: usize,
        /// Requested alignment.
        align: usize,
        /// Capacity of the arena.
        capacity: usize,
        /// Bytes still unallocated (some may be lost to alignment).
        remaining: usize,
    },
    /// The system allocator refused a new chunk.
    #[error("out of memory: the system allocator refused a chunk of {chunk_size} bytes")]
    OutOfMemory {
        /// Size of the refused chunk.
        chunk_size: usize,
    },
}

/// A pointer into a chunk (or null, before the first chunk), carrying the chunk's provenance.
#[derive(Clone, Copy)]
struct ChunkPtr(*mut u8);

// SAFETY: a `ChunkPtr` points into a chunk owned by the one `Arena` that holds it; it is only
// dereferenced through that arena, which is `!Sync`, so only one thread uses it at a time, and
// the arena moves to another thread together with every copy of the pointer. The memory has
// no thread affinity (it comes from the global allocator).
unsafe impl Send for ChunkPtr {}

/// A block of memory from the global allocator, owned by an arena.
struct Chunk {
    ptr: ChunkPtr,
    layout: Layout,
}

impl Chunk {
    fn new(layout: Layout) -> Result<Self, ArenaError> {
        debug_assert!(layout.size() > 0);
        // SAFETY: `layout` has a non-zero size (callers never build an empty chunk).
        let raw = unsafe { std::alloc::alloc(layout) };
        let ptr = NonNull::new(raw).ok_or(ArenaError::OutOfMemory {
            chunk_size: layout.size(),
        })?;
        Ok(Self {
            ptr: ChunkPtr(ptr.as_ptr()),
            layout,
        })
    }

    fn start(&self) -> usize {
        self.ptr.0.addr()
    }

    /// One past the last byte, with the chunk's provenance.
    fn end_ptr(&self) -> ChunkPtr {
        ChunkPtr(self.ptr.0.wrapping_add(self.layout.size()))
    }

    fn end(&self) -> usize {
        self.start() + self.layout.size()
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: `ptr` was returned by `std::alloc::alloc(self.layout)` and is freed only here.
        unsafe { std::alloc::dealloc(self.ptr.0, self.layout) }
    }
}

/// A bump arena: many allocations live at once, each through `&self`; all are released
/// together by [`reset`](Self::reset) or when the arena is dropped.
///
/// Allocation is a pointer decrement and a compare in the common case (the arena bumps
/// downward through its current chunk, like `bumpalo`). Any power-of-two alignment is
/// honoured, including page alignment (4096, [`Arena::PAGE_ALIGN`]) for memory that a
/// Vulkan backend imports.
///
/// Two modes:
/// * **growing** ([`Arena::new`], [`Arena::with_capacity`]): when the current chunk is full a
///   new chunk is allocated, double the size of the last one (doubling stops at 256 MiB), or
///   as large as the request if that is larger. Earlier allocations never move.
/// * **fixed** ([`Arena::fixed`]): one chunk of the given capacity; a request that does not
///   fit returns [`ArenaError::Full`] (or panics, in the non-`try_` methods).
///
/// Values are restricted to [`bytemuck::Pod`]: the arena never runs destructors, and `Pod`
/// types have none. An `Arena` is `Send` but not `Sync` (its bump pointer is a [`Cell`]).
///
/// # Example
/// ```
/// use gantry_host::Arena;
///
/// let arena = Arena::new();
/// let a = arena.alloc(1u32);
/// let b = arena.alloc_slice_copy(&[1.0f32, 2.0, 3.0]);
/// let page = arena.alloc_zeroed(8192, Arena::PAGE_ALIGN);
/// *a += 1; // all three are live and writable at once
/// b[0] = 5.0;
/// page[0] = 7;
/// assert_eq!((*a, b[0], page.as_ptr().addr() % 4096), (2, 5.0, 0));
/// ```
///
/// Allocations end with a `reset`, which needs `&mut self`, so none can be used after it:
/// ```compile_fail
/// let mut arena = gantry_host::Arena::new();
/// let x = arena.alloc(1u32);
/// arena.reset();
/// *x = 2; // error: `arena` is still borrowed by `x`
/// ```
/// And an arena cannot be shared between threads (it is not `Sync`):
/// ```compile_fail
/// fn shared<T: Sync>(_: &T) {}
/// shared(&gantry_host::Arena::new());
/// ```
pub struct Arena {
    /// The bump pointer in the current chunk (null before the first chunk); it moves down
    /// towards `start`. A pointer rather than an address, so the fast path hands it out as is.
    cur: Cell<ChunkPtr>,
    /// Address of the current chunk's first byte (1 while there is no chunk, so the fast path
    /// always fails).
    start: Cell<usize>,
    /// One past the current chunk's last byte.
    end: Cell<usize>,
    /// Bytes taken from chunks the arena has moved on from.
    retired: Cell<usize>,
    /// Sum of every chunk's size.
    capacity: Cell<usize>,
    chunks: RefCell<Vec<Chunk>>,
    fixed: bool,
    stats: Option<Arc<BufferStats>>,
}

impl Arena {
    /// Alignment for page-aligned allocations (4096 bytes), as host memory imported into Vulkan
    /// (`VK_EXT_external_memory_host`) needs.
    ///
    /// # Example
    /// ```
    /// use gantry_host::Arena;
    /// let arena = Arena::new();
    /// let staging = arena.alloc_zeroed(1 << 20, Arena::PAGE_ALIGN);
    /// assert_eq!(staging.as_ptr().addr() % 4096, 0);
    /// ```
    pub const PAGE_ALIGN: usize = 4096;

    /// A growing arena; its first chunk (4 KiB, or the first request's size) is allocated on
    /// first use.
    ///
    /// # Example
    /// ```
    /// let arena = gantry_host::Arena::new();
    /// assert_eq!(arena.capacity(), 0);
    /// arena.alloc(0u64);
    /// assert!(arena.capacity() >= 8);
    /// ```
    pub fn new() -> Self {
        Self {
            cur: Cell::new(ChunkPtr(core::ptr::null_mut())),
            start: Cell::new(1),
            end: Cell::new(0),
            retired: Cell::new(0),
            capacity: Cell::new(0),
            chunks: RefCell::new(Vec::new()),
            fixed: false,
            stats: None,
        }
    }

    /// A growing arena whose first chunk holds `bytes` bytes, allocated now.
    ///
    /// # Errors
    /// [`ArenaError::TooLarge`] when `bytes` exceeds `isize::MAX` (rounded up to 16),
    /// [`ArenaError::OutOfMemory`] when the system allocator refuses.
    ///
    /// # Example
    /// ```
    /// let arena = gantry_host::Arena::try_with_capacity(1 << 16).unwrap();
    /// assert_eq!(arena.capacity(), 1 << 16);
    /// ```
    pub fn try_with_capacity(bytes: usize) -> Result<Self, ArenaError> {
        let arena = Self::new();
        if bytes > 0 {
            arena.push_chunk(bytes, CHUNK_ALIGN)?;
        }
        Ok(arena)
    }

    /// A growing arena whose first chunk holds `bytes` bytes, allocated now.
    ///
    /// # Panics
    /// When [`try_with_capacity`](Self::try_with_capacity) fails.
    ///
    /// # Example
    /// ```
    /// let arena = gantry_host::Arena::with_capacity(1 << 16);
    /// assert_eq!(arena.capacity(), 1 << 16);
    /// ```
    #[track_caller]
    pub fn with_capacity(bytes: usize) -> Self {
        Self::try_with_capacity(bytes).unwrap_or_else(|e| failed(e))
    }

    /// A fixed-capacity arena of `bytes` bytes (allocated now, aligned to 4096 when `bytes` is
    /// at least a page): it never grows, and a request that does not fit fails with
    /// [`ArenaError::Full`].
    ///
    /// # Errors
    /// [`ArenaError::TooLarge`] when `bytes` exceeds `isize::MAX`,
    /// [`ArenaError::OutOfMemory`] when the system allocator refuses.
    ///
    /// # Example
    /// ```
    /// let arena = gantry_host::Arena::try_fixed(128).unwrap();
    /// assert!(arena.try_alloc_bytes(100, 1).is_ok());
    /// assert!(arena.try_alloc_bytes(100, 1).is_err());
    /// ```
    pub fn try_fixed(bytes: usize) -> Result<Self, ArenaError> {
        let mut arena = Self::new();
        arena.fixed = true;
        if bytes > 0 {
            let align = if bytes >= Self::PAGE_ALIGN {
                Self::PAGE_ALIGN
            } else {
                CHUNK_ALIGN
            };
            arena.push_chunk(bytes, align)?;
        }
        Ok(arena)
    }

    /// A fixed-capacity arena of `bytes` bytes; see [`try_fixed`](Self::try_fixed).
    ///
    /// # Panics
    /// When [`try_fixed`](Self::try_fixed) fails.
    ///
    /// # Example
    /// ```
    /// let arena = gantry_host::Arena::fixed(4096);
    /// let page = arena.alloc_zeroed(4096, gantry_host::Arena::PAGE_ALIGN);
    /// assert_eq!(page.len(), 4096);
    /// ```
    #[track_caller]
    pub fn fixed(bytes: usize) -> Self {
        Self::try_fixed(bytes).unwrap_or_else(|e| failed(e))
    }

    /// Reports the memory the arena takes from the system into `stats`: one allocation per
    /// chunk (not per value, which keeps the allocation path free of atomics) and one
    /// deallocation per chunk released by [`reset`](Self::reset) or the drop.
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use gantry_host::{Arena, BufferStats};
    ///
    /// let stats = Arc::new(BufferStats::new());
    /// let arena = Arena::with_capacity(1024).with_stats(stats.clone());
    /// assert_eq!(stats.snapshot().live_bytes, 1024);
    /// drop(arena);
    /// assert_eq!(stats.snapshot().live_bytes, 0);
    /// ```
    pub fn with_stats(mut self, stats: Arc<BufferStats>) -> Self {
        for chunk in self.chunks.get_mut().iter() {
            stats.record_alloc(chunk.layout.size() as u64);
        }
        self.stats = Some(stats);
        self
    }

    /// True for an arena made by [`fixed`](Self::fixed) or [`try_fixed`](Self::try_fixed).
    ///
    /// # Example
    /// ```
    /// assert!(gantry_host::Arena::fixed(16).is_fixed());
    /// assert!(!gantry_host::Arena::new().is_fixed());
    /// ```
    pub fn is_fixed(&self) -> bool {
        self.fixed
    }

    /// Bytes handed out since creation or the last reset, alignment padding included.
    ///
    /// # Example
    /// ```
    /// let arena = gantry_host::Arena::new();
    /// arena.alloc([0u8; 10]);
    /// arena.alloc(0u64); // 8 bytes, after 6 bytes of padding to reach 8-byte alignment
    /// assert_eq!(arena.allocated_bytes(), 24);
    /// ```
    pub fn allocated_bytes(&self) -> usize {
        self.retired.get() + (self.end.get() - self.cur_addr())
    }

    /// Bytes of every chunk the arena holds.
    ///
    /// # Example
    /// ```
    /// assert_eq!(gantry_host::Arena::fixed(100).capacity(), 100);
    /// ```
    pub fn capacity(&self) -> usize {
        self.capacity.get()
    }

    /// Number of chunks the arena holds.
    ///
    /// # Example
    /// ```
    /// let arena = gantry_host::Arena::with_capacity(64);
    /// arena.alloc_bytes(1000, 8);
    /// assert_eq!(arena.chunk_count(), 2);
    /// ```
    pub fn chunk_count(&self) -> usize {
        self.chunks.borrow().len()
    }

    /// Releases every allocation. A growing arena keeps only its largest chunk, so a program
    /// that allocates about the same each round settles on one chunk and stops calling the
    /// system allocator.
    ///
    /// # Example
    /// ```
    /// let mut arena = gantry_host::Arena::new();
    /// for _ in 0..1000 {
    ///     arena.alloc([0u64; 8]);
    /// }
    /// arena.reset();
    /// assert_eq!((arena.allocated_bytes(), arena.chunk_count()), (0, 1));
    /// ```
    pub fn reset(&mut self) {
        let chunks = self.chunks.get_mut();
        let Some(largest) = (0..chunks.len()).max_by_key(|&i| chunks[i].layout.size()) else {
            return;
        };
        chunks.swap(0, largest);
        for chunk in chunks.drain(1..) {
            if let Some(stats) = &self.stats {
                stats.record_dealloc(chunk.layout.size() as u64);
            }
        }
        let keep = &chunks[0];
        self.capacity.set(keep.layout.size());
        self.retired.set(0);
        self.start.set(keep.start());
        self.end.set(keep.end());
        self.cur.set(keep.end_ptr());
    }

    fn cur_addr(&self) -> usize {
        self.cur.get().0.addr()
    }

    /// Makes `chunk` the current chunk, empty.
    fn use_chunk(&self, chunk: &Chunk) {
        self.start.set(chunk.start());
        self.end.set(chunk.end());
        self.cur.set(chunk.end_ptr());
    }

    /// Allocates a chunk of at least `bytes` bytes aligned to `align` and makes it current.
    fn push_chunk(&self, bytes: usize, align: usize) -> Result<(), ArenaError> {
        let too_large = ArenaError::TooLarge { size: bytes, align };
        // The chunk's start is aligned for the request that caused it, so the request fits
        // (bumping down from the end) whenever `size >= bytes`.
        let layout =
            Layout::from_size_align(bytes, align.max(CHUNK_ALIGN)).map_err(|_| too_large)?;
        let size = layout.size();
        let chunk = Chunk::new(layout)?;
        if let Some(stats) = &self.stats {
            stats.record_alloc(size as u64);
        }
        self.retired
            .set(self.retired.get() + (self.end.get() - self.cur_addr()));
        self.capacity.set(self.capacity.get() + size);
        self.use_chunk(&chunk);
        self.chunks.borrow_mut().push(chunk);
        Ok(())
    }

    /// The fast path: bump down inside the current chunk.
    #[inline(always)]
    fn bump(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        let cur = self.cur.get().0;
        let new = cur.addr().checked_sub(size)? & !(align - 1);
        if new < self.start.get() {
            return None;
        }
        // `start <= new` and `new + size <= cur <= end`: the new pointer stays inside the
        // current chunk, and keeps its provenance.
        let ptr = cur.with_addr(new);
        self.cur.set(ChunkPtr(ptr));
        // SAFETY: `new >= start`, the address of a live allocation, so it is not zero.
        Some(unsafe { NonNull::new_unchecked(ptr) })
    }

    /// Allocates `size` bytes aligned to `align` (a power of two, not checked here).
    #[inline(always)]
    fn alloc_raw(&self, size: usize, align: usize) -> Result<NonNull<u8>, ArenaError> {
        match self.bump(size, align) {
            Some(ptr) => Ok(ptr),
            None => self.alloc_slow(size, align),
        }
    }

    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, size: usize, align: usize) -> Result<NonNull<u8>, ArenaError> {
        debug_assert!(align.is_power_of_two());
        if size == 0 {
            // No chunk yet (or no aligned spot left in it): any non-null aligned address
            // serves for zero bytes.
            return Ok(NonNull::<u8>::dangling().with_addr(
                core::num::NonZeroUsize::new(align).expect("alignment is a power of two"),
            ));
        }
        if size > isize::MAX as usize - (align - 1) {
            return Err(ArenaError::TooLarge { size, align });
        }
        if self.fixed {
            return Err(ArenaError::Full {
                size,
                align,
                capacity: self.capacity(),
                remaining: self.cur_addr().saturating_sub(self.start.get()),
            });
        }
        let last = self.end.get() - self.start.get().min(self.end.get());
        let grown = last.saturating_mul(2).clamp(FIRST_CHUNK, MAX_DOUBLING);
        self.push_chunk(grown.max(size), align)?;
        self.bump(size, align)
            .ok_or(ArenaError::TooLarge { size, align })
    }

    /// Allocates `size` uninitialised bytes aligned to `align` (any power of two).
    ///
    /// # Errors
    /// [`ArenaError::InvalidAlignment`] when `align` is not a power of two,
    /// [`ArenaError::TooLarge`] beyond `isize::MAX` bytes, [`ArenaError::Full`] in a full
    /// fixed arena, [`ArenaError::OutOfMemory`] when a new chunk cannot be had.
    ///
    /// # Example
    /// ```
    /// let arena = gantry_host::Arena::new();
    /// let raw = arena.try_alloc_bytes(100, 4096).unwrap();
    /// assert_eq!(raw.len(), 100);
    /// assert_eq!(raw.as_ptr().addr() % 4096, 0);
    /// ```
    #[inline]
    pub fn try_alloc_bytes(
        &self,
        size: usize,
        align: usize,
    ) -> Result<&mut [MaybeUninit<u8>], ArenaError> {
        if !align.is_power_of_two() {
            return Err(ArenaError::InvalidAlignment { size, align });
        }
        let ptr = self.alloc_raw(size, align)?;
        // SAFETY: `ptr` is valid for `size` bytes that no other allocation overlaps, for as
        // long as `&self` is borrowed (only `reset(&mut self)` and drop release it), and
        // `MaybeUninit<u8>` needs no initialisation. For `size == 0` it is non-null and aligned.
        Ok(unsafe { core::slice::from_raw_parts_mut(ptr.as_ptr().cast(), size) })
    }

    /// Allocates `size` uninitialised bytes aligned to `align`.
    ///
    /// # Panics
    /// When [`try_alloc_bytes`](Self::try_alloc_bytes) fails.
    ///
    /// # Example
    /// ```
    /// use std::mem::MaybeUninit;
    /// let arena = gantry_host::Arena::new();
    /// let raw = arena.alloc_bytes(4, 4);
    /// raw.copy_from_slice(&[MaybeUninit::new(1u8); 4]);
    /// ```
    #[inline]
    #[track_caller]
    pub fn alloc_bytes(&self, size: usize, align: usize) -> &mut [MaybeUninit<u8>] {
        self.try_alloc_bytes(size, align)
            .unwrap_or_else(|e| failed(e))
    }

    /// Allocates `size` zeroed bytes aligned to `align` (any power of two).
    ///
    /// # Errors
    /// As [`try_alloc_bytes`](Self::try_alloc_bytes).
    ///
    /// # Example
    /// ```
    /// let arena = gantry_host::Arena::new();
    /// let page = arena.try_alloc_zeroed(4096, 4096).unwrap();
    /// assert!(page.iter().all(|&b| b == 0));
    /// ```
    #[inline]
    pub fn try_alloc_zeroed(&self, size: usize, align: usize) -> Result<&mut [u8], ArenaError> {
        let bytes = self.try_alloc_bytes(size, align)?;
        let ptr = bytes.as_mut_ptr().cast::<u8>();
        // SAFETY: `ptr` is valid for writes of `size` bytes (just allocated, see
        // `try_alloc_bytes`); after the write they are initialised, so viewing them as `[u8]`
        // for the same lifetime is sound.
        unsafe {
            ptr.write_bytes(0, size);
            Ok(core::slice::from_raw_parts_mut(ptr, size))
        }
    }

    /// Allocates `size` zeroed bytes aligned to `align`.
    ///
    /// # Panics
    /// When [`try_alloc_zeroed`](Self::try_alloc_zeroed) fails.
    ///
    /// # Example
    /// ```
    /// let arena = gantry_host::Arena::new();
    /// assert_eq!(arena.alloc_zeroed(3, 1), &[0, 0, 0]);
    /// ```
    #[inline]
    #[track_caller]
    pub fn alloc_zeroed(&self, size: usize, align: usize) -> &mut [u8] {
        self.try_alloc_zeroed(size, align)
            .unwrap_or_else(|e| failed(e))
    }

    /// Moves `value` into the arena.
    ///
    /// # Errors
    /// [`ArenaError::Full`] in a full fixed arena, [`ArenaError::OutOfMemory`] when a new
    /// chunk cannot be had.
    ///
    /// # Example
    /// ```
    /// let arena = gantry_host::Arena::fixed(16);
    /// assert_eq!(*arena.try_alloc(7u64).unwrap(), 7);
    /// assert_eq!(*arena.try_alloc(8u64).unwrap(), 8);
    /// assert!(arena.try_alloc(9u64).is_err());
    /// ```
    #[inline(always)]
    pub fn try_alloc<T: Pod>(&self, value: T) -> Result<&mut T, ArenaError> {
        let ptr = self.alloc_raw(size_of::<T>(), align_of::<T>())?.cast::<T>();
        // SAFETY: `ptr` is aligned for `T` and valid for `size_of::<T>()` bytes that no other
        // allocation overlaps, for as long as `&self` is borrowed; writing `value` initialises
        // them, so the `&mut T` is valid.
        unsafe {
            ptr.write(value);
            Ok(&mut *ptr.as_ptr())
        }
    }

    /// Moves `value` into the arena.
    ///
    /// # Panics
    /// When [`try_alloc`](Self::try_alloc) fails.
    ///
    /// # Example
    /// ```
    /// let arena = gantry_host::Arena::new();
    /// let x = arena.alloc([1u16, 2, 3]);
    /// x[0] = 9;
    /// assert_eq!(*x, [9, 2, 3]);
    /// ```
    #[inline(always)]
    #[track_caller]
    pub fn alloc<T: Pod>(&self, value: T) -> &mut T {
        match self.try_alloc(value) {
            Ok(r) => r,
            Err(e) => failed(e),
        }
    }

    /// Copies `values` into the arena.
    ///
    /// # Errors
    /// [`ArenaError::TooLarge`] when the slice's byte size overflows, otherwise as
    /// [`try_alloc`](Self::try_alloc).
    ///
    /// # Example
    /// ```
    /// let arena = gantry_host::Arena::new();
    /// let v = arena.try_alloc_slice_copy(&[1u32, 2, 3]).unwrap();
    /// v[1] = 20;
    /// assert_eq!(v, &[1, 20, 3]);
    /// ```
    #[inline]
    pub fn try_alloc_slice_copy<T: Pod>(&self, values: &[T]) -> Result<&mut [T], ArenaError> {
        // A slice that exists never spans more than isize::MAX bytes, so this cannot overflow.
        let size = size_of_val(values);
        let ptr = self.alloc_raw(size, align_of::<T>())?.cast::<T>();
        // SAFETY: `ptr` is aligned for `T` and valid for `size` bytes that no other allocation
        // (and so not `values`) overlaps, for as long as `&self` is borrowed; the copy
        // initialises all `values.len()` elements.
        unsafe {
            core::ptr::copy_nonoverlapping(values.as_ptr(), ptr.as_ptr(), values.len());
            Ok(core::slice::from_raw_parts_mut(ptr.as_ptr(), values.len()))
        }
    }

    /// Copies `values` into the arena.
    ///
    /// # Panics
    /// When [`try_alloc_slice_copy`](Self::try_alloc_slice_copy) fails.
    ///
    /// # Example
    /// ```
    /// let arena = gantry_host::Arena::new();
    /// assert_eq!(arena.alloc_slice_copy(b"hello"), b"hello");
    /// ```
    #[inline]
    #[track_caller]
    pub fn alloc_slice_copy<T: Pod>(&self, values: &[T]) -> &mut [T] {
        self.try_alloc_slice_copy(values)
            .unwrap_or_else(|e| failed(e))
    }
}

impl Default for Arena {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Arena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Arena")
            .field("fixed", &self.fixed)
            .field("allocated_bytes", &self.allocated_bytes())
            .field("capacity", &self.capacity())
            .field("chunks", &self.chunk_count())
            .finish()
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        if let Some(stats) = &self.stats {
            for chunk in self.chunks.get_mut().iter() {
                stats.record_dealloc(chunk.layout.size() as u64);
            }
        }
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn failed(error: ArenaError) -> ! {
    panic!("arena allocation failed: {error}")
}

#[cfg(test)]
mod tests;
