//! The per-frame streaming ring (M13) and dynamic uniform buffers (M6).

use std::sync::Mutex;

use gantry_core::{
    Backend, Buffer, BufferDesc, BufferUsage, Device, MapMode, MemoryLocation, SubmissionIndex,
};
use gantry_host::BumpAllocator;

use crate::error::{Error, Result};
use crate::transfer::lock;

/// A range of a streaming ring written this frame: bind `buffer` at `offset`.
#[derive(Clone, Debug)]
pub struct StreamAllocation<B: Backend> {
    /// The frame slot's buffer.
    pub buffer: Buffer<B>,
    /// Where the data starts; a multiple of the ring's alignment.
    pub offset: u64,
    /// Bytes written.
    pub size: u64,
}

struct Slot<B: Backend> {
    buffer: Buffer<B>,
    bump: BumpAllocator,
    /// Everything submitted while this slot's frame was current or after it ended, up to
    /// the next frame's start: the GPU may read the slot until this completes.
    fence: SubmissionIndex,
    mapped: bool,
}

struct RingState<B: Backend> {
    slots: Vec<Slot<B>>,
    current: Option<usize>,
    /// The slot whose fence is set at the next `begin_frame`.
    ended: Option<usize>,
    frame: u64,
}

/// Per-frame streaming memory for data rewritten every frame (uniforms, dynamic vertices):
/// one upload buffer per frame in flight, each written through a persistent mapping during
/// its frame and bump-allocated at aligned offsets. A slot is written again only after
/// every submission made up to the start of the following frame has completed (and after
/// gantry-core's own tracking of the buffer), so no region the GPU may still read is
/// overwritten. With `frames_in_flight` slots the ring wraps every `frames_in_flight`
/// frames.
pub struct StreamingRing<B: Backend> {
    device: Device<B>,
    state: Mutex<RingState<B>>,
    alignment: u64,
    bytes_per_frame: u64,
}

impl<B: Backend> core::fmt::Debug for StreamingRing<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StreamingRing")
            .field("alignment", &self.alignment)
            .field("bytes_per_frame", &self.bytes_per_frame)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> StreamingRing<B> {
    /// A ring of `frames_in_flight` slots of `bytes_per_frame` bytes with `usage` (besides
    /// the automatic flags), handing out offsets aligned to `alignment` (raised to the copy
    /// alignment; a power of two).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for zero frames or a non-power-of-two alignment; the errors
    /// of [`Device::create_buffer`].
    pub fn new(
        device: &Device<B>,
        label: &str,
        bytes_per_frame: u64,
        usage: BufferUsage,
        frames_in_flight: usize,
        alignment: u64,
    ) -> Result<Self> {
        if frames_in_flight == 0 {
            return Err(Error::InvalidConfig {
                field: "frames_in_flight",
                value: 0,
                reason: "must be at least 1",
            });
        }
        let alignment = alignment.max(device.limits().copy_alignment).max(1);
        if !alignment.is_power_of_two() {
            return Err(Error::InvalidConfig {
                field: "alignment",
                value: alignment,
                reason: "must be a power of two",
            });
        }
        let mut slots = Vec::with_capacity(frames_in_flight);
        for i in 0..frames_in_flight {
            let name = format!("{label} [frame slot {i}]");
            let buffer = device.create_buffer(
                &BufferDesc::new(bytes_per_frame, usage, MemoryLocation::Upload).with_label(&name),
            )?;
            let cap = buffer.size();
            slots.push(Slot {
                buffer,
                bump: BumpAllocator::new(cap),
                fence: SubmissionIndex::NONE,
                mapped: false,
            });
        }
        Ok(Self {
            device: device.clone(),
            state: Mutex::new(RingState {
                slots,
                current: None,
                ended: None,
                frame: 0,
            }),
            alignment,
            bytes_per_frame,
        })
    }

    /// Offsets returned are multiples of this.
    #[must_use]
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Frames begun so far.
    #[must_use]
    pub fn frame(&self) -> u64 {
        lock(&self.state).frame
    }

    /// Starts a frame: takes the next slot, waiting until the GPU is done with what it held
    /// `frames_in_flight` frames ago, and maps it. Ends the current frame first if needed.
    ///
    /// # Errors
    /// Device loss.
    pub fn begin_frame(&self) -> Result<u64> {
        let mut st = lock(&self.state);
        if st.current.is_some() {
            Self::end_locked(&mut st, &self.device)?;
        }
        let last = self.device.last_submitted();
        if let Some(prev) = st.ended.take() {
            st.slots[prev].fence = last;
        }
        let n = st.slots.len() as u64;
        let index = (st.frame % n) as usize;
        let slot = &mut st.slots[index];
        if slot.fence != SubmissionIndex::NONE {
            self.device.wait(slot.fence, None)?;
        }
        // `map` also waits for gantry submissions that used the buffer.
        self.device.map(&slot.buffer, MapMode::Write)?;
        slot.mapped = true;
        slot.bump.reset();
        st.current = Some(index);
        st.frame += 1;
        Ok(st.frame - 1)
    }

    /// Writes `data` into this frame's slot and returns where it lies.
    ///
    /// # Errors
    /// [`Error::NotInFrame`]; [`Error::RingFull`] when the frame's bytes are used up.
    pub fn push(&self, data: &[u8]) -> Result<StreamAllocation<B>> {
        let mut st = lock(&self.state);
        let Some(index) = st.current else {
            return Err(Error::NotInFrame);
        };
        let slot = &mut st.slots[index];
        let size = data.len() as u64;
        if size == 0 {
            return Ok(StreamAllocation {
                buffer: slot.buffer.clone(),
                offset: 0,
                size: 0,
            });
        }
        let allocation = slot
            .bump
            .allocate(size, self.alignment)
            .map_err(Error::RingFull)?;
        self.device
            .write_mapped(&slot.buffer, allocation.offset(), data)?;
        Ok(StreamAllocation {
            buffer: slot.buffer.clone(),
            offset: allocation.offset(),
            size,
        })
    }

    /// Writes a value (or slice) of `T`; see [`StreamingRing::push`].
    ///
    /// # Errors
    /// As [`StreamingRing::push`].
    pub fn push_pod<T: bytemuck::Pod>(&self, data: &[T]) -> Result<StreamAllocation<B>> {
        self.push(bytemuck::cast_slice(data))
    }

    /// Ends the frame: unmaps the slot so GPU work can read it. Submit the work that reads
    /// it before the next [`StreamingRing::begin_frame`].
    ///
    /// # Errors
    /// [`Error::NotInFrame`]; device loss.
    pub fn end_frame(&self) -> Result<()> {
        let mut st = lock(&self.state);
        if st.current.is_none() {
            return Err(Error::NotInFrame);
        }
        Self::end_locked(&mut st, &self.device)
    }

    fn end_locked(st: &mut RingState<B>, device: &Device<B>) -> Result<()> {
        if let Some(index) = st.current.take() {
            let slot = &mut st.slots[index];
            if slot.mapped {
                device.unmap(&slot.buffer)?;
                slot.mapped = false;
            }
            st.ended = Some(index);
        }
        Ok(())
    }
}
