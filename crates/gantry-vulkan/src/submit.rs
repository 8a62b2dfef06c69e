//! The transfer path: command recording, batched copies, submission tracked by a timeline
//! semaphore, polling, waiting and completion callbacks (G7, G8, G10).
//!
//! # Synchronization
//! Every command buffer gantry records begins with a global memory barrier (all earlier
//! commands' writes on the queue -> this buffer's transfer reads and writes, and the scatter
//! shader's where the queue has compute) and ends with one (transfer and shader writes -> host
//! reads). Within one batch a barrier between two copies is recorded only when the later copy
//! touches a range an earlier one wrote, or writes a range an earlier one read ([`Hazards`]).
//! A run of scatter dispatches (`crate::scatter`) opens with a barrier (transfer writes ->
//! shader reads and writes) and closes with one (transfer and shader writes -> transfer and
//! shader reads and writes), after which the hazard tracking starts afresh; two dispatches of
//! one run into the same buffer get a shader -> shader barrier between them. Each submission signals the timeline semaphore with the next
//! submission index; the host waits with `vkWaitSemaphores` on that value, never with
//! `vkQueueWaitIdle` or `vkDeviceWaitIdle`. Host writes before a submission are made visible by
//! `vkQueueSubmit`'s implicit host-write dependency.

use std::collections::{BTreeMap, VecDeque};

use ash::vk;
use ash::vk::Handle;

use crate::backend::{VulkanDevice, lock};
use crate::buffer::VulkanBuffer;
use crate::error::{Result, VkResultExt};

/// A completion callback.
pub(crate) type Callback = Box<dyn FnOnce() + Send + 'static>;

/// A submission index: submission `n` is complete when the timeline semaphore reaches `n`.
pub type SubmissionIndex = u64;

/// One buffer-to-buffer copy.
#[derive(Clone, Copy, Debug)]
pub struct CopyRegion<'a> {
    /// Source buffer (created with transfer-source usage; gantry adds it to every buffer).
    pub src: &'a VulkanBuffer,
    /// Byte offset in `src`.
    pub src_offset: u64,
    /// Destination buffer.
    pub dst: &'a VulkanBuffer,
    /// Byte offset in `dst`.
    pub dst_offset: u64,
    /// Bytes to copy (> 0).
    pub size: u64,
}

/// A copy between raw buffer handles, as batches store them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawCopy {
    pub(crate) src: vk::Buffer,
    pub(crate) src_offset: u64,
    pub(crate) dst: vk::Buffer,
    pub(crate) dst_offset: u64,
    pub(crate) size: u64,
}

impl From<&CopyRegion<'_>> for RawCopy {
    fn from(c: &CopyRegion<'_>) -> Self {
        Self {
            src: c.src.raw(),
            src_offset: c.src_offset,
            dst: c.dst.raw(),
            dst_offset: c.dst_offset,
            size: c.size,
        }
    }
}

struct InFlight {
    value: u64,
    cmd: vk::CommandBuffer,
    /// Buffers to destroy once this submission completes (staging).
    retire: Vec<VulkanBuffer>,
    /// New buffers this submission clears (see `VulkanDevice::create_buffer`).
    fills: Vec<vk::Buffer>,
    /// Descriptor pools of its scatter dispatches, reset once it completes.
    pools: Vec<vk::DescriptorPool>,
}

/// The command pool, its recycled command buffers and the submissions in flight, with the
/// queue they go to; one lock, so timeline values are submitted in increasing order.
pub(crate) struct Submitter {
    queue: vk::Queue,
    pool: vk::CommandPool,
    free: Vec<vk::CommandBuffer>,
    in_flight: VecDeque<InFlight>,
    last_submitted: u64,
}

impl Submitter {
    /// # Safety
    /// `family` is a queue family of `device` and `queue` one of its queues.
    pub(crate) unsafe fn new(device: &ash::Device, family: u32, queue: vk::Queue) -> Result<Self> {
        let info = vk::CommandPoolCreateInfo::default()
            .queue_family_index(family)
            .flags(
                vk::CommandPoolCreateFlags::TRANSIENT
                    | vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER,
            );
        // SAFETY: `family` is a family of `device` (contract).
        let pool = unsafe { device.create_command_pool(&info, None) }.vk("vkCreateCommandPool")?;
        Ok(Self {
            queue,
            pool,
            free: Vec::new(),
            in_flight: VecDeque::new(),
            last_submitted: 0,
        })
    }

    pub(crate) fn pool(&self) -> vk::CommandPool {
        self.pool
    }

    /// Frees the command buffers and the pool; returns the descriptor pools submissions still
    /// held, for the caller to destroy.
    ///
    /// # Safety
    /// No submission of this submitter is pending on the device.
    pub(crate) unsafe fn destroy(&mut self, device: &ash::Device) -> Vec<vk::DescriptorPool> {
        let mut all: Vec<vk::CommandBuffer> = self.free.drain(..).collect();
        all.extend(self.in_flight.iter().map(|f| f.cmd));
        let pools = self
            .in_flight
            .iter_mut()
            .flat_map(|f| std::mem::take(&mut f.pools))
            .collect();
        // SAFETY: no command buffer is pending (contract); all come from `self.pool`.
        unsafe {
            if !all.is_empty() {
                device.free_command_buffers(self.pool, &all);
            }
            device.destroy_command_pool(self.pool, None);
        }
        self.pool = vk::CommandPool::null();
        pools
    }
}

/// A union of byte ranges per buffer: disjoint, non-touching intervals keyed by (buffer,
/// start), so a lookup or an insertion costs `O(log n)` however many copies a batch holds.
#[derive(Default)]
struct RangeSet(BTreeMap<(u64, u64), u64>);

impl RangeSet {
    /// Whether `[start, end)` of `b` overlaps a range in the set.
    fn overlaps(&self, b: u64, start: u64, end: u64) -> bool {
        // The intervals are disjoint, so only the last one starting before `end` can overlap.
        self.0
            .range(..(b, end))
            .next_back()
            .is_some_and(|(&(lb, _), &e)| lb == b && e > start)
    }

    /// Adds `[start, end)` of `b`, merging it with the ranges it overlaps or touches.
    fn insert(&mut self, b: u64, mut start: u64, mut end: u64) {
        if let Some((&(lb, s), &e)) = self.0.range(..=(b, start)).next_back()
            && lb == b
            && e >= start
        {
            start = s;
            end = end.max(e);
            self.0.remove(&(b, s));
        }
        while let Some((&(lb, s), &e)) = self.0.range((b, start)..).next() {
            if lb != b || s > end {
                break;
            }
            end = end.max(e);
            self.0.remove(&(b, s));
        }
        self.0.insert((b, start), end);
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Ranges touched since the last barrier in a batch, to place barriers only where needed.
#[derive(Default)]
pub(crate) struct Hazards {
    reads: RangeSet,
    writes: RangeSet,
}

impl Hazards {
    /// Whether a copy reading `src[s0..s1]` and writing `dst[d0..d1]` needs a barrier before it
    /// (read-after-write, write-after-write, write-after-read).
    pub(crate) fn conflicts(
        &self,
        src: vk::Buffer,
        s: (u64, u64),
        dst: vk::Buffer,
        d: (u64, u64),
    ) -> bool {
        let (src, dst) = (src.as_raw(), dst.as_raw());
        self.writes.overlaps(src, s.0, s.1)
            || self.writes.overlaps(dst, d.0, d.1)
            || self.reads.overlaps(dst, d.0, d.1)
    }

    pub(crate) fn add(&mut self, src: vk::Buffer, s: (u64, u64), dst: vk::Buffer, d: (u64, u64)) {
        self.reads.insert(src.as_raw(), s.0, s.1);
        self.writes.insert(dst.as_raw(), d.0, d.1);
    }

    pub(crate) fn clear(&mut self) {
        self.reads.clear();
        self.writes.clear();
    }
}

fn global_barrier(
    device: &ash::Device,
    cmd: vk::CommandBuffer,
    src: (vk::PipelineStageFlags, vk::AccessFlags),
    dst: (vk::PipelineStageFlags, vk::AccessFlags),
) {
    let barrier = [vk::MemoryBarrier::default()
        .src_access_mask(src.1)
        .dst_access_mask(dst.1)];
    // SAFETY: `cmd` is in the recording state (callers record between begin and end); callers
    // name the compute-shader stage only on compute-capable queue families.
    unsafe {
        device.cmd_pipeline_barrier(
            cmd,
            src.0,
            dst.0,
            vk::DependencyFlags::empty(),
            &barrier,
            &[],
            &[],
        )
    };
}

type Scope = (vk::PipelineStageFlags, vk::AccessFlags);

const fn scope(stages: &[vk::PipelineStageFlags], access: &[vk::AccessFlags]) -> Scope {
    let (mut s, mut a) = (0, 0);
    let mut i = 0;
    while i < stages.len() {
        s |= stages[i].as_raw();
        i += 1;
    }
    i = 0;
    while i < access.len() {
        a |= access[i].as_raw();
        i += 1;
    }
    (
        vk::PipelineStageFlags::from_raw(s),
        vk::AccessFlags::from_raw(a),
    )
}

const TRANSFER_RW: Scope = scope(
    &[vk::PipelineStageFlags::TRANSFER],
    &[
        vk::AccessFlags::TRANSFER_READ,
        vk::AccessFlags::TRANSFER_WRITE,
    ],
);
const TRANSFER_W: Scope = scope(
    &[vk::PipelineStageFlags::TRANSFER],
    &[vk::AccessFlags::TRANSFER_WRITE],
);
/// What the scatter shader does: read records and source, read and write the destination.
const SHADER_RW: Scope = scope(
    &[vk::PipelineStageFlags::COMPUTE_SHADER],
    &[vk::AccessFlags::SHADER_READ, vk::AccessFlags::SHADER_WRITE],
);
/// Transfers and the scatter shader, reading and writing.
const ALL_RW: Scope = scope(
    &[
        vk::PipelineStageFlags::TRANSFER,
        vk::PipelineStageFlags::COMPUTE_SHADER,
    ],
    &[
        vk::AccessFlags::TRANSFER_READ,
        vk::AccessFlags::TRANSFER_WRITE,
        vk::AccessFlags::SHADER_READ,
        vk::AccessFlags::SHADER_WRITE,
    ],
);
/// Writes by transfers and by the scatter shader.
const ALL_W: Scope = scope(
    &[
        vk::PipelineStageFlags::TRANSFER,
        vk::PipelineStageFlags::COMPUTE_SHADER,
    ],
    &[
        vk::AccessFlags::TRANSFER_WRITE,
        vk::AccessFlags::SHADER_WRITE,
    ],
);

/// Small writes to a device-local buffer whose memory the host can reach (a UMA device):
/// `writes` copy `len` bytes from `src + src_offset` to `dst + dst_offset`, on the host, at
/// submission, when nothing on the device can still use the buffer; otherwise the `fallback`
/// ops that follow this one in the list are recorded instead.
pub(crate) struct Direct {
    pub(crate) dst: vk::Buffer,
    /// The destination's mapping.
    pub(crate) dst_ptr: *mut u8,
    /// The source buffers (besides the batch's staging).
    pub(crate) srcs: Vec<vk::Buffer>,
    /// `(source mapping, write)` in program order.
    pub(crate) writes: Vec<(*const u8, gantry_core::scatter::ScatterWrite)>,
    /// How many of the following ops record the same writes on the device.
    pub(crate) fallback: usize,
    /// How many of those are scatter dispatches.
    pub(crate) fallback_dispatches: u64,
}

/// What [`VulkanDevice::submit_with_pools`] tells the recording closure, under the
/// submission lock.
pub(crate) struct SubmitCtx<'a> {
    /// Every submission made before this one has completed.
    pub(crate) idle: bool,
    /// Buffers this submission clears before anything it records.
    pub(crate) fills: &'a [vk::Buffer],
}

/// One command of a batch, as recorded.
pub(crate) enum Op<'a> {
    /// A buffer-to-buffer copy region.
    Copy(RawCopy),
    /// A scatter dispatch with the device's pipeline.
    Scatter(
        &'a crate::scatter::ScatterPipeline,
        crate::scatter::Dispatch,
    ),
    /// Writes carried out on the host when the device is idle, else its fallback ops.
    Direct(Direct),
}

/// Records copies and scatter dispatches in order: copies merged into few `vkCmdCopyBuffer`
/// calls with barriers only where [`Hazards`] finds one is needed; dispatches with the
/// barriers around them.
struct Recorder<'a> {
    device: &'a ash::Device,
    cmd: vk::CommandBuffer,
    hazards: Hazards,
    pending: Vec<vk::BufferCopy>,
    pair: (vk::Buffer, vk::Buffer),
    /// `(destination, source)` of the dispatches since the barrier that opened the current
    /// run of dispatches; `None` outside such a run.
    scatter_run: Option<Vec<(vk::Buffer, vk::Buffer)>>,
}

impl<'a> Recorder<'a> {
    fn new(device: &'a ash::Device, cmd: vk::CommandBuffer) -> Self {
        Self {
            device,
            cmd,
            hazards: Hazards::default(),
            pending: Vec::new(),
            pair: (vk::Buffer::null(), vk::Buffer::null()),
            scatter_run: None,
        }
    }

    /// Records the pending regions.
    ///
    /// # Safety
    /// As for [`record_copies`].
    unsafe fn flush(&mut self) {
        if !self.pending.is_empty() {
            // SAFETY: recording state and in-bounds regions (contract).
            unsafe {
                self.device
                    .cmd_copy_buffer(self.cmd, self.pair.0, self.pair.1, &self.pending)
            };
            self.pending.clear();
        }
    }

    /// Closes a run of dispatches: their writes (and the transfers' before them) -> every
    /// later transfer or dispatch. Everything touched so far is ordered, so the hazard
    /// tracking starts afresh.
    fn end_scatter_run(&mut self) {
        if self.scatter_run.take().is_some() {
            global_barrier(self.device, self.cmd, ALL_W, ALL_RW);
            self.hazards.clear();
        }
    }

    /// # Safety
    /// As for [`record_copies`].
    unsafe fn copy(&mut self, c: RawCopy) {
        self.end_scatter_run();
        let (s, d) = (c.src, c.dst);
        let sr = (c.src_offset, c.src_offset + c.size);
        let dr = (c.dst_offset, c.dst_offset + c.size);
        if self.hazards.conflicts(s, sr, d, dr) {
            // SAFETY: forwarded.
            unsafe { self.flush() };
            global_barrier(self.device, self.cmd, TRANSFER_W, TRANSFER_RW);
            self.hazards.clear();
        }
        if (s, d) != self.pair {
            // SAFETY: forwarded.
            unsafe { self.flush() };
            self.pair = (s, d);
        }
        // Adjacent in both buffers: one region (each region costs GPU time of its own).
        match self.pending.last_mut() {
            Some(last)
                if last.src_offset + last.size == c.src_offset
                    && last.dst_offset + last.size == c.dst_offset =>
            {
                last.size += c.size;
            }
            _ => self.pending.push(vk::BufferCopy {
                src_offset: c.src_offset,
                dst_offset: c.dst_offset,
                size: c.size,
            }),
        }
        self.hazards.add(s, sr, d, dr);
    }

    /// # Safety
    /// As for [`record_ops`].
    unsafe fn scatter(
        &mut self,
        p: &crate::scatter::ScatterPipeline,
        d: &crate::scatter::Dispatch,
    ) {
        // SAFETY: forwarded.
        unsafe { self.flush() };
        match &mut self.scatter_run {
            None => {
                // Earlier transfers (copies, clears) -> the shader's reads and writes; the
                // staging bytes are host writes, visible through vkQueueSubmit.
                global_barrier(self.device, self.cmd, TRANSFER_W, SHADER_RW);
                self.scatter_run = Some(Vec::new());
            }
            Some(run)
                if run.iter().any(|&(dst, src)| {
                    dst == d.dst.buffer || dst == d.src.buffer || src == d.dst.buffer
                }) =>
            {
                // A dispatch into a buffer an earlier dispatch of the run wrote (one batch's
                // writes spanning two sources) or read (a deferred copy's source), or reading
                // one it wrote: order them.
                global_barrier(self.device, self.cmd, SHADER_RW, SHADER_RW);
                run.clear();
            }
            Some(_) => {}
        }
        if let Some(run) = &mut self.scatter_run {
            run.push((d.dst.buffer, d.src.buffer));
        }
        // SAFETY: forwarded (`record` binds the dispatch's pipeline).
        unsafe { p.record(self.device, self.cmd, d) };
    }

    /// # Safety
    /// As for [`record_copies`].
    unsafe fn finish(mut self) {
        // SAFETY: forwarded.
        unsafe { self.flush() };
        self.end_scatter_run();
    }
}

/// Records the copies, merging consecutive regions between the same pair of buffers into one
/// `vkCmdCopyBuffer`, with barriers only where [`Hazards`] finds one is needed.
///
/// # Safety
/// `cmd` is recording; every region lies inside its buffers and no region's source and
/// destination ranges overlap within one buffer.
pub(crate) unsafe fn record_copies(
    device: &ash::Device,
    cmd: vk::CommandBuffer,
    copies: impl IntoIterator<Item = RawCopy>,
) {
    let mut r = Recorder::new(device, cmd);
    for c in copies {
        // SAFETY: forwarded.
        unsafe { r.copy(c) };
    }
    // SAFETY: forwarded.
    unsafe { r.finish() };
}

/// Records a batch's copies and scatter dispatches in order (see [`Recorder`]).
///
/// # Safety
/// As for [`record_copies`] for the copies; with a dispatch, `cmd` records for a
/// compute-capable queue family and the dispatch's bindings are valid (as for
/// `ScatterPipeline::record`).
///
/// Every [`Op::Direct`] is carried out on the host when `ctx` says no earlier submission can
/// still be running and this one clears none of their buffers (their fallback ops are then
/// skipped); otherwise none is (direct ops may read what earlier direct ops wrote, so they
/// go all together or not at all). Returns the writes carried out so and the scatter
/// dispatches skipped.
///
/// For a direct op: its pointers are mappings of live, host-coherent memory (the
/// destination's and the sources'), every write lies inside them, no op before it in `ops`
/// touches its destination or sources, and no host code touches the destination while the
/// submission lock is held (the caller holds it).
pub(crate) unsafe fn record_ops(
    device: &ash::Device,
    cmd: vk::CommandBuffer,
    ops: &[Op<'_>],
    ctx: &SubmitCtx<'_>,
) -> (u64, u64) {
    let mut r = Recorder::new(device, cmd);
    let mut skip = 0usize;
    let (mut direct, mut skipped) = (0u64, 0u64);
    let go = ctx.idle
        && ops.iter().all(|op| match op {
            Op::Direct(d) => {
                !ctx.fills.contains(&d.dst) && !d.srcs.iter().any(|b| ctx.fills.contains(b))
            }
            _ => true,
        });
    for op in ops {
        if skip > 0 {
            skip -= 1;
            continue;
        }
        match op {
            // SAFETY: forwarded.
            Op::Copy(c) => unsafe { r.copy(*c) },
            // SAFETY: forwarded.
            Op::Scatter(p, d) => unsafe { r.scatter(p, d) },
            Op::Direct(d) => {
                if go {
                    for (src, w) in &d.writes {
                        // SAFETY: both mappings are live and host-coherent, the ranges lie
                        // inside them (contract); the device uses neither: every earlier
                        // submission completed (`idle`), this one has not been made and
                        // does not clear the destination, and no earlier op of this batch
                        // touches them; other host access to the destination waits for the
                        // submission lock the caller holds. Source and destination are
                        // different buffers.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                src.add(w.src_offset as usize),
                                d.dst_ptr.add(w.dst_offset as usize),
                                w.len as usize,
                            );
                        }
                    }
                    direct += d.writes.len() as u64;
                    skipped += d.fallback_dispatches;
                    skip = d.fallback;
                }
            }
        }
    }
    // SAFETY: forwarded.
    unsafe { r.finish() };
    (direct, skipped)
}

impl VulkanDevice {
    /// Records a command buffer with `record` between the leading and trailing barriers,
    /// submits it signalling the next timeline value, and returns that value. `retire` is
    /// destroyed once the submission completes.
    ///
    /// # Safety
    /// What `record` records is valid for the buffers it uses, and those buffers stay alive
    /// until the returned submission completes.
    pub(crate) unsafe fn submit_with(
        &self,
        retire: Vec<VulkanBuffer>,
        record: impl FnOnce(&ash::Device, vk::CommandBuffer),
    ) -> Result<SubmissionIndex> {
        // SAFETY: forwarded.
        unsafe { self.submit_with_pools(retire, Vec::new(), |d, cmd, _| record(d, cmd)) }
    }

    /// [`Self::submit_with`], also resetting descriptor pools `pools` (of the scatter
    /// pipeline) once the submission completes, or at once if it fails. `record` also gets
    /// a [`SubmitCtx`], with the submission lock held.
    ///
    /// # Safety
    /// As for [`Self::submit_with`]; `pools` come from the scatter pipeline and are used by
    /// nothing but this submission.
    pub(crate) unsafe fn submit_with_pools(
        &self,
        retire: Vec<VulkanBuffer>,
        pools: Vec<vk::DescriptorPool>,
        record: impl FnOnce(&ash::Device, vk::CommandBuffer, &SubmitCtx<'_>),
    ) -> Result<SubmissionIndex> {
        let release_pools = |pools: Vec<vk::DescriptorPool>| {
            if let Some(Some(p)) = self.scatter.get() {
                // SAFETY: never submitted, so unused by the device.
                unsafe { p.release_pools(&self.device, pools) };
            }
        };
        let destroy_retired = |retire: Vec<VulkanBuffer>| {
            for b in retire {
                // SAFETY: never submitted, so unused by the device.
                unsafe { self.destroy_buffer(b) };
            }
        };
        if let Err(e) = self.maintain() {
            release_pools(pools);
            destroy_retired(retire);
            return Err(e);
        }
        let mut s = lock(&self.submitter);
        let cmd = match s.free.pop() {
            Some(c) => c,
            None => {
                let info = vk::CommandBufferAllocateInfo::default()
                    .command_pool(s.pool)
                    .level(vk::CommandBufferLevel::PRIMARY)
                    .command_buffer_count(1);
                // SAFETY: the pool is ours and externally synchronized by the submitter lock.
                match unsafe { self.device.allocate_command_buffers(&info) } {
                    Ok(cmds) => {
                        self.set_name(cmds[0], "gantry transfer commands");
                        cmds[0]
                    }
                    Err(e) => {
                        drop(s);
                        release_pools(pools);
                        destroy_retired(retire);
                        return Err(crate::error::map_vk("vkAllocateCommandBuffers", e));
                    }
                }
            }
        };
        // New device-local buffers are cleared first (see `create_buffer`).
        let fills: Vec<vk::Buffer> = std::mem::take(&mut *lock(&self.pending_fills));
        let result = (|| {
            let begin = vk::CommandBufferBeginInfo::default()
                .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
            // SAFETY: `cmd` is not pending (fresh, or recycled after its submission completed);
            // its pool is externally synchronized by the submitter lock held here.
            unsafe { self.device.begin_command_buffer(cmd, &begin) }.vk("vkBeginCommandBuffer")?;
            // With compute on the queue, batches may dispatch the scatter shader, so earlier
            // work is made visible to it too.
            let (ours_rw, ours_w) = if self.submit_compute {
                (ALL_RW, ALL_W)
            } else {
                (TRANSFER_RW, TRANSFER_W)
            };
            global_barrier(
                &self.device,
                cmd,
                (
                    vk::PipelineStageFlags::ALL_COMMANDS,
                    vk::AccessFlags::MEMORY_WRITE,
                ),
                ours_rw,
            );
            if !fills.is_empty() {
                for &buffer in &fills {
                    // SAFETY: a live buffer of this device with TRANSFER_DST: `destroy_buffer`
                    // takes the submitter lock held here and defers destruction of a buffer
                    // whose clear was taken (`defer_if_clearing`).
                    unsafe {
                        self.device
                            .cmd_fill_buffer(cmd, buffer, 0, vk::WHOLE_SIZE, 0)
                    };
                }
                global_barrier(&self.device, cmd, TRANSFER_W, TRANSFER_RW);
            }
            // Under the lock: nothing can be submitted between this check and the submission.
            let idle = self.completed_index()? >= s.last_submitted;
            record(
                &self.device,
                cmd,
                &SubmitCtx {
                    idle,
                    fills: &fills,
                },
            );
            global_barrier(
                &self.device,
                cmd,
                ours_w,
                (vk::PipelineStageFlags::HOST, vk::AccessFlags::HOST_READ),
            );
            // SAFETY: `cmd` is recording.
            unsafe { self.device.end_command_buffer(cmd) }.vk("vkEndCommandBuffer")?;
            let value = s.last_submitted + 1;
            let values = [value];
            let mut timeline_info =
                vk::TimelineSemaphoreSubmitInfo::default().signal_semaphore_values(&values);
            let cmds = [cmd];
            let sems = [self.timeline];
            let submit = vk::SubmitInfo::default()
                .command_buffers(&cmds)
                .signal_semaphores(&sems)
                .push_next(&mut timeline_info);
            // SAFETY: the queue is externally synchronized by the submitter lock (and by the
            // from_raw contract against the engine); `value` is greater than every value
            // signalled before, submitted in order under this lock.
            unsafe {
                self.device
                    .queue_submit(s.queue, &[submit], vk::Fence::null())
            }
            .vk("vkQueueSubmit")?;
            Ok(value)
        })();
        match result {
            Ok(value) => {
                s.last_submitted = value;
                s.in_flight.push_back(InFlight {
                    value,
                    cmd,
                    retire,
                    fills,
                    pools,
                });
                Ok(value)
            }
            Err(e) => {
                // Not submitted: the clears are still due.
                lock(&self.pending_fills).extend(fills);
                // SAFETY: `cmd` was not submitted; resetting returns it to the initial state.
                let _ = unsafe {
                    self.device
                        .reset_command_buffer(cmd, vk::CommandBufferResetFlags::empty())
                };
                s.free.push(cmd);
                drop(s);
                release_pools(pools);
                destroy_retired(retire);
                Err(e)
            }
        }
    }

    /// Records `copies` into one command buffer and submits it (G7).
    ///
    /// Wraps [`vkCmdCopyBuffer`](https://registry.khronos.org/vulkan/specs/1.3-extensions/man/html/vkCmdCopyBuffer.html).
    ///
    /// # Safety
    /// Every region lies inside both buffers (`offset + size <= buffer size`), sizes are
    /// non-zero, source and destination ranges in the same buffer do not overlap, and all
    /// buffers stay alive until the returned submission completes. Host access to the
    /// written ranges waits for completion.
    pub unsafe fn submit_copies(&self, copies: &[CopyRegion<'_>]) -> Result<SubmissionIndex> {
        // SAFETY: forwarded from the contract; `cmd` is recording inside `submit_with`.
        unsafe {
            self.submit_with(Vec::new(), |d, cmd| {
                record_copies(d, cmd, copies.iter().map(RawCopy::from))
            })
        }
    }

    /// The highest submission index known to be complete.
    ///
    /// Wraps [`vkGetSemaphoreCounterValue`](https://registry.khronos.org/vulkan/specs/1.3-extensions/man/html/vkGetSemaphoreCounterValue.html).
    ///
    /// # Errors
    /// [`crate::Error::DeviceLost`].
    pub fn completed_index(&self) -> Result<SubmissionIndex> {
        // SAFETY: the semaphore is a timeline semaphore of this device.
        unsafe { self.device.get_semaphore_counter_value(self.timeline) }
            .vk("vkGetSemaphoreCounterValue")
    }

    /// The last submission index handed out (0 before any submission).
    pub fn last_submitted_index(&self) -> SubmissionIndex {
        lock(&self.submitter).last_submitted
    }

    /// Recycles finished command buffers, destroys finished staging buffers and runs the
    /// callbacks of completed submissions (G10). Returns the completed index.
    ///
    /// # Errors
    /// [`crate::Error::DeviceLost`].
    pub fn poll(&self) -> Result<SubmissionIndex> {
        let done = self.maintain()?;
        self.run_callbacks(done);
        Ok(done)
    }

    /// [`Self::poll`] without running callbacks: for submissions and reads, which the facade
    /// makes while holding buffer locks that a callback might take.
    pub(crate) fn maintain(&self) -> Result<SubmissionIndex> {
        let done = self.completed_index()?;
        let mut retired = Vec::new();
        let mut pools = Vec::new();
        {
            let mut s = lock(&self.submitter);
            while s.in_flight.front().is_some_and(|f| f.value <= done) {
                let Some(f) = s.in_flight.pop_front() else {
                    break;
                };
                // SAFETY: the submission completed, so `cmd` is not pending; the pool is
                // synchronized by the lock held.
                unsafe {
                    self.device
                        .reset_command_buffer(f.cmd, vk::CommandBufferResetFlags::empty())
                }
                .vk("vkResetCommandBuffer")?;
                s.free.push(f.cmd);
                retired.extend(f.retire);
                pools.extend(f.pools);
            }
        }
        if !pools.is_empty()
            && let Some(Some(p)) = self.scatter.get()
        {
            // SAFETY: their submissions completed.
            unsafe { p.release_pools(&self.device, pools) };
        }
        let orphans: Vec<VulkanBuffer> = std::mem::take(&mut *lock(&self.orphans));
        for b in retired.into_iter().chain(orphans) {
            // SAFETY: the submission using the buffer completed (or, for orphans, never
            // happened).
            unsafe { self.recycle_staging(b) };
        }
        self.completed_cache
            .fetch_max(done, std::sync::atomic::Ordering::Relaxed);
        Ok(done)
    }

    /// For [`VulkanDevice::destroy_buffer`]: a device-local buffer whose clear is still pending
    /// loses it (it was never used); one whose clear is in a submission in flight is retired
    /// with that submission (`None`). Otherwise the buffer comes back, to destroy now.
    pub(crate) fn defer_if_clearing(&self, buffer: VulkanBuffer) -> Option<VulkanBuffer> {
        if buffer.mapped_ptr().is_some() {
            return Some(buffer);
        }
        // Under the submitter lock, so no submission takes the clear meanwhile.
        let mut s = lock(&self.submitter);
        let mut fills = lock(&self.pending_fills);
        if let Some(i) = fills.iter().position(|&b| b == buffer.raw()) {
            fills.swap_remove(i);
            return Some(buffer);
        }
        drop(fills);
        match s
            .in_flight
            .iter_mut()
            .find(|f| f.fills.contains(&buffer.raw()))
        {
            Some(f) => {
                f.retire.push(buffer);
                None
            }
            None => Some(buffer),
        }
    }

    /// Destroys `buffer` once submission `index` has completed (now if it has).
    pub(crate) fn retire_after(&self, index: SubmissionIndex, buffer: VulkanBuffer) {
        let mut s = lock(&self.submitter);
        if let Some(f) = s.in_flight.iter_mut().find(|f| f.value >= index) {
            f.retire.push(buffer);
        } else {
            drop(s);
            lock(&self.orphans).push(buffer);
        }
    }

    /// Runs, in submission order and outside every lock (a callback may call back into the
    /// backend), the callbacks of submissions up to `done`.
    fn run_callbacks(&self, done: SubmissionIndex) {
        let ready: Vec<Callback> = {
            let mut cbs = lock(&self.callbacks);
            if cbs.is_empty() {
                return;
            }
            let (mut ready, pending): (Vec<_>, Vec<_>) =
                cbs.drain(..).partition(|(v, _)| *v <= done);
            *cbs = pending;
            // In submission order, whatever the registration order (stable within an index).
            ready.sort_by_key(|(v, _)| *v);
            ready.into_iter().map(|(_, f)| f).collect()
        };
        for f in ready {
            f();
        }
    }

    /// Blocks until `index` completes or `timeout_ns` passes, without maintenance; `Ok(false)`
    /// on timeout.
    pub(crate) fn wait_raw(&self, index: SubmissionIndex, timeout_ns: u64) -> Result<bool> {
        // Poll first (`VulkanOptions::wait_spin`): a blocking wait wakes up late.
        let spin = self.wait_spin_ns.min(timeout_ns);
        let mut timeout_ns = timeout_ns;
        if self.completed_index()? >= index {
            return Ok(true);
        }
        if spin > 0 {
            let start = std::time::Instant::now();
            loop {
                for _ in 0..64 {
                    std::hint::spin_loop();
                }
                if self.completed_index()? >= index {
                    return Ok(true);
                }
                let spent = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                if spent >= spin {
                    timeout_ns = timeout_ns.saturating_sub(spent);
                    break;
                }
            }
        }
        let sems = [self.timeline];
        let values = [index];
        let info = vk::SemaphoreWaitInfo::default()
            .semaphores(&sems)
            .values(&values);
        // SAFETY: a timeline semaphore of this device; waiting needs no external sync.
        match unsafe { self.device.wait_semaphores(&info, timeout_ns) } {
            Ok(()) => Ok(true),
            Err(vk::Result::TIMEOUT) => Ok(false),
            Err(e) => Err(crate::error::map_vk("vkWaitSemaphores", e)),
        }
    }

    /// Blocks until submission `index` completes or `timeout_ns` passes, then polls.
    ///
    /// Wraps [`vkWaitSemaphores`](https://registry.khronos.org/vulkan/specs/1.3-extensions/man/html/vkWaitSemaphores.html).
    ///
    /// # Errors
    /// [`crate::Error::Timeout`], [`crate::Error::DeviceLost`].
    pub fn wait(&self, index: SubmissionIndex, timeout_ns: u64) -> Result<()> {
        if !self.wait_raw(index, timeout_ns)? {
            return Err(crate::Error::Timeout);
        }
        self.poll()?;
        Ok(())
    }

    /// Blocks until `index` completes, then does maintenance without running callbacks.
    pub(crate) fn wait_quiet(&self, index: SubmissionIndex) -> Result<()> {
        if !self.wait_raw(index, u64::MAX)? {
            return Err(crate::Error::Timeout);
        }
        self.maintain()?;
        Ok(())
    }

    /// Runs `callback` once submission `index` is complete: at once if the backend already
    /// saw it complete, else from a later [`Self::poll`] or [`Self::wait`] (never from
    /// submissions or reads). Callbacks run in submission order.
    pub fn on_completed(&self, index: SubmissionIndex, callback: impl FnOnce() + Send + 'static) {
        lock(&self.callbacks).push((index, Box::new(callback)));
        self.run_callbacks(
            self.completed_cache
                .load(std::sync::atomic::Ordering::Relaxed),
        );
    }

    /// Waits for every submission of this backend (not for other work on the device).
    pub(crate) fn wait_idle_own(&self) -> Result<()> {
        let last = self.last_submitted_index();
        if last > 0 {
            self.wait_quiet(last)?;
        }
        Ok(())
    }

    /// Waits for every submission this backend made.
    ///
    /// # Errors
    /// [`crate::Error::DeviceLost`].
    pub fn wait_idle(&self) -> Result<()> {
        self.wait_idle_own()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hazards() {
        let a = vk::Buffer::from_raw(1);
        let b = vk::Buffer::from_raw(2);
        let mut h = Hazards::default();
        h.add(a, (0, 16), b, (0, 16));
        // Disjoint: no barrier.
        assert!(!h.conflicts(a, (16, 32), b, (16, 32)));
        // Reading what was written: barrier.
        assert!(h.conflicts(b, (8, 9), a, (100, 101)));
        // Writing what was written: barrier.
        assert!(h.conflicts(a, (64, 65), b, (15, 16)));
        // Writing what was read: barrier.
        assert!(h.conflicts(b, (64, 65), a, (0, 1)));
        // Reading again what was read: none.
        assert!(!h.conflicts(a, (0, 16), b, (32, 48)));
        h.clear();
        assert!(!h.conflicts(b, (0, 16), a, (0, 16)));
    }

    #[test]
    fn range_set_merges() {
        let mut r = RangeSet::default();
        r.insert(1, 10, 20);
        r.insert(1, 30, 40);
        r.insert(2, 0, 100);
        assert!(!r.overlaps(1, 20, 30));
        assert!(!r.overlaps(1, 0, 10));
        assert!(r.overlaps(1, 19, 21));
        assert!(r.overlaps(1, 0, 100));
        assert!(!r.overlaps(3, 0, 100));
        assert!(!r.overlaps(0, 0, 100));
        r.insert(1, 20, 30);
        assert_eq!(r.0.len(), 2);
        assert!(r.overlaps(1, 25, 26));
        r.insert(1, 5, 45);
        assert_eq!(r.0.len(), 2);
        assert!(r.overlaps(1, 44, 50));
        assert!(!r.overlaps(1, 45, 50));
    }
}
