//! The split virtqueue, virtio 1.2 §2.7, driver side (Linux: `drivers/virtio/virtio_ring.c`,
//! the `*_split` functions).
//!
//! The rings live in memory shared with the device, so the device can write anything into them
//! at any time. The driver therefore keeps its own state ("shadow" state, like Linux's
//! `desc_state` / `desc_extra`) and only ever *reads* the used ring (idx, elements, flags,
//! avail_event), each value once, validated before use. It never reads back the descriptor table
//! or the available ring, and never follows a descriptor index the device gave it without a
//! range check. A device caught lying latches the queue broken.
//!
//! With INDIRECT_DESC (§2.7.5.3) a chain of several buffers takes one ring descriptor, which
//! points at that head's own indirect table (one per ring descriptor, in the same coherent
//! memory as the rings). The driver writes the tables and never reads them back: what it frees
//! when a chain completes comes from its shadow state, whatever the device wrote into a table.

use core::ptr::NonNull;
use core::sync::atomic::{fence, Ordering};

use super::{BrokenReason, Error, Result, VirtioDma};

/// The largest split queue the spec allows (§2.7: "Queue Size ... maximum 32768").
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// Descriptor flag: the chain continues in `next` (VIRTQ_DESC_F_NEXT).
const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer (VIRTQ_DESC_F_WRITE).
const DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer is a table of descriptors (VIRTQ_DESC_F_INDIRECT, §2.7.5.3).
const DESC_F_INDIRECT: u16 = 4;
/// Bytes of one descriptor, in the ring's table or an indirect table (§2.7.5).
const DESC_SIZE: usize = 16;
/// Used ring flag: the device does not want notifications (VIRTQ_USED_F_NO_NOTIFY, §2.7.10).
const USED_F_NO_NOTIFY: u16 = 1;

/// One buffer of a descriptor chain, as the device sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// DMA address of the buffer (from the caller's DMA API).
    pub dma_addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// True if the device writes the buffer, false if it reads it.
    pub device_writable: bool,
}

impl Buffer {
    /// A buffer the device reads (driver to device).
    pub fn readable(dma_addr: u64, len: u32) -> Self {
        Self { dma_addr, len, device_writable: false }
    }

    /// A buffer the device writes (device to driver).
    pub fn writable(dma_addr: u64, len: u32) -> Self {
        Self { dma_addr, len, device_writable: true }
    }
}

/// A ring's memory: where the CPU and where the device see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingRegion {
    /// The CPU's pointer.
    pub ptr: NonNull<u8>,
    /// The device's address.
    pub dma_addr: u64,
}

/// What the ring was negotiated to do (device-independent features, §6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingFeatures {
    /// RING_EVENT_IDX: notifications are suppressed with `avail_event` / `used_event`.
    pub event_idx: bool,
    /// INDIRECT_DESC: entries of each head's indirect table, i.e. the longest chain that goes
    /// indirect (chains of 2 up to this many buffers take one ring descriptor; longer ones go
    /// direct). 0: no indirect descriptors. At most the queue size (§2.7.5.3.1).
    pub indirect_len: u16,
}

/// The memory of one split virtqueue: descriptor table, available ring, used ring (§2.7), and
/// the indirect tables if there are any.
#[derive(Debug)]
pub struct VirtqueueMemory {
    size: u16,
    desc: RingRegion,
    avail: RingRegion,
    used: RingRegion,
    /// `size` indirect tables of `indirect_len` descriptors each, back to back: head `i`'s
    /// table starts at `16 * indirect_len * i`.
    indirect: Option<RingRegion>,
    indirect_len: u16,
}

// SAFETY: the ring memory is owned by this value alone (the `VirtioDma` / `from_parts` contract)
// and has no affinity to a CPU; the pointers are not tied to the thread that allocated them.
unsafe impl Send for VirtqueueMemory {}

impl VirtqueueMemory {
    /// Bytes and alignment of the descriptor table (§2.7: 16 * size, 16-aligned).
    pub const fn desc_layout(size: u16) -> (usize, usize) {
        (16 * size as usize, 16)
    }

    /// Bytes and alignment of the available ring: flags, idx, `ring[size]`, used_event.
    pub const fn avail_layout(size: u16) -> (usize, usize) {
        (6 + 2 * size as usize, 2)
    }

    /// Bytes and alignment of the used ring: flags, idx, `ring[size]` of (id, len), avail_event.
    pub const fn used_layout(size: u16) -> (usize, usize) {
        (6 + 8 * size as usize, 4)
    }

    /// Bytes and alignment of the indirect tables: `size` tables of `indirect_len` descriptors
    /// (§2.7.5.3: 16-byte descriptors; 16-aligned like the ring's table).
    pub const fn indirect_layout(size: u16, indirect_len: u16) -> (usize, usize) {
        (DESC_SIZE * size as usize * indirect_len as usize, 16)
    }

    /// Allocates the three rings of a queue of `size` entries (a power of two) from `dma`, and
    /// one indirect table of `indirect_len` entries per descriptor if `indirect_len` is not 0
    /// (capped at `size`: no chain may be longer than the queue, §2.7.5.3.1).
    pub fn allocate(dma: &impl VirtioDma, size: u16, indirect_len: u16) -> Result<Self> {
        if !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return Err(Error::BadQueueSize(size));
        }
        let region = |(bytes, align): (usize, usize)| {
            dma.alloc_coherent(bytes, align).map(|(ptr, dma_addr)| RingRegion { ptr, dma_addr }).ok_or(Error::OutOfDmaMemory)
        };
        let desc = region(Self::desc_layout(size))?;
        let avail = region(Self::avail_layout(size))?;
        let used = region(Self::used_layout(size))?;
        // SAFETY: `VirtioDma`'s contract gives exactly what `from_parts` asks for.
        let mut mem = unsafe { Self::from_parts(size, desc, avail, used) };
        let indirect_len = indirect_len.min(size);
        if indirect_len > 1 {
            // The same contract, for `indirect_layout(size, indirect_len)`: what the table
            // writes rely on.
            mem.indirect = Some(region(Self::indirect_layout(size, indirect_len))?);
            mem.indirect_len = indirect_len;
        }
        Ok(mem)
    }

    /// Rings the caller allocated itself.
    ///
    /// # Safety
    ///
    /// Each region must satisfy the [`VirtioDma::alloc_coherent`] contract for the size and
    /// alignment given by `desc_layout`, `avail_layout` and `used_layout` for `size`: valid,
    /// aligned, zeroed, coherent, owned by the returned value for the rest of the program, and
    /// reachable by the device at `dma_addr`. `size` must be a power of two, at most 32768.
    pub unsafe fn from_parts(size: u16, desc: RingRegion, avail: RingRegion, used: RingRegion) -> Self {
        Self { size, desc, avail, used, indirect: None, indirect_len: 0 }
    }

    /// The queue size.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// The descriptor table.
    pub fn desc(&self) -> RingRegion {
        self.desc
    }

    /// The available ring (the "driver area").
    pub fn avail(&self) -> RingRegion {
        self.avail
    }

    /// The used ring (the "device area").
    pub fn used(&self) -> RingRegion {
        self.used
    }

    /// The indirect tables and the entries of each, if the queue has them.
    pub fn indirect(&self) -> Option<(RingRegion, u16)> {
        self.indirect.map(|region| (region, self.indirect_len))
    }
}

/// What the driver knows about a descriptor, kept out of the device's reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DescState {
    /// On the free list; `completed` if it was the head of the chain popped last from it.
    Free { completed: bool },
    /// Head of a chain in flight: `chain_len` ring descriptors (1 for an indirect chain, whose
    /// buffers are in the head's table), `writable` device-writable bytes in all.
    Head { chain_len: u16, writable: u32 },
    /// Non-head member of a chain in flight.
    Body,
}

/// A split virtqueue of up to `MAX` entries, with no allocation after construction.
///
/// `add` from task context and `pop_used` from the interrupt handler need an IRQ-safe lock
/// around the queue, as in Linux (the virtqueue itself is not synchronised).
pub struct Virtqueue<const MAX: usize> {
    mem: VirtqueueMemory,
    /// `size - 1`: ring slots are indices masked with it (sizes are powers of two).
    mask: u16,
    /// RING_EVENT_IDX negotiated: notifications are suppressed with `avail_event`/`used_event`.
    event_idx: bool,
    /// Chains of 2..=this many buffers go through the head's indirect table; 0: none do.
    indirect_len: u16,
    /// Free list of descriptors, linked through `next`.
    free_head: u16,
    num_free: u16,
    /// Shadow of the descriptors' `next` fields: free-list links and chain links.
    next: [u16; MAX],
    state: [DescState; MAX],
    /// Shadow of `avail.idx`: the next available ring slot we fill.
    avail_idx: u16,
    /// Chains added since the last `kick_prepare`.
    added_since_kick: u16,
    /// Used ring entries we consumed.
    last_used_idx: u16,
    /// The last `used.idx` we read, to catch it moving backwards.
    used_idx_seen: u16,
    /// Chains added and not popped yet.
    in_flight: u16,
    broken: Option<BrokenReason>,
}

impl<const MAX: usize> Virtqueue<MAX> {
    /// A queue over `mem`; `event_idx` says whether RING_EVENT_IDX was negotiated. Chains go
    /// indirect if `mem` has indirect tables (allocate them only if INDIRECT_DESC was).
    pub fn new(mem: VirtqueueMemory, event_idx: bool) -> Result<Self> {
        let size = mem.size;
        if !size.is_power_of_two() || usize::from(size) > MAX || size > MAX_QUEUE_SIZE {
            return Err(Error::BadQueueSize(size));
        }
        let mut next = [0; MAX];
        for (i, link) in next.iter_mut().enumerate().take(usize::from(size)) {
            *link = (i + 1) as u16; // the last link is never followed: num_free bounds walks
        }
        let indirect_len = if mem.indirect.is_some() { mem.indirect_len } else { 0 };
        Ok(Self {
            mem,
            mask: size - 1,
            event_idx,
            indirect_len,
            free_head: 0,
            num_free: size,
            next,
            state: [DescState::Free { completed: false }; MAX],
            avail_idx: 0,
            added_since_kick: 0,
            last_used_idx: 0,
            used_idx_seen: 0,
            in_flight: 0,
            broken: None,
        })
    }

    /// Rebuilds the queue over the same memory after a device reset, as a fresh one: rings
    /// zeroed (indices back to 0), every descriptor free, nothing in flight, not broken (Linux
    /// `virtqueue_reset` / `virtqueue_reinit_split`). The chains that were in flight are
    /// forgotten: their buffers belong to the caller, which takes them back from its own
    /// records (the device, reset, touches none of them, §2.1.2). Only call it while the device
    /// is reset and before the queue is handed to it again (`DeviceInit::setup_queue`).
    pub fn reset(&mut self) {
        self.zero_rings();
        let size = self.mem.size;
        for (i, link) in self.next.iter_mut().enumerate().take(usize::from(size)) {
            *link = (i + 1) as u16;
        }
        self.state = [DescState::Free { completed: false }; MAX];
        self.free_head = 0;
        self.num_free = size;
        self.avail_idx = 0;
        self.added_since_kick = 0;
        self.last_used_idx = 0;
        self.used_idx_seen = 0;
        self.in_flight = 0;
        self.broken = None;
    }

    /// Allocates the rings (and the indirect tables if `features` asks for them) from `dma`
    /// and builds the queue.
    pub fn allocate(dma: &impl VirtioDma, size: u16, features: RingFeatures) -> Result<Self> {
        if usize::from(size) > MAX {
            return Err(Error::BadQueueSize(size));
        }
        let mem = VirtqueueMemory::allocate(dma, size, features.indirect_len)?;
        Self::new(mem, features.event_idx)
    }

    /// Entries of each indirect table: chains of 2 up to this many buffers take one ring
    /// descriptor. 0 if the queue does not use indirect descriptors.
    pub fn indirect_len(&self) -> u16 {
        self.indirect_len
    }

    /// The queue size.
    pub fn size(&self) -> u16 {
        self.mem.size
    }

    /// The ring memory (for the transport, and for simulated devices in tests).
    pub fn memory(&self) -> &VirtqueueMemory {
        &self.mem
    }

    /// The DMA addresses of descriptor table, driver area and device area (§4.2.3.2).
    pub fn ring_dma_addresses(&self) -> (u64, u64, u64) {
        (self.mem.desc.dma_addr, self.mem.avail.dma_addr, self.mem.used.dma_addr)
    }

    /// Free descriptors.
    pub fn num_free(&self) -> u16 {
        self.num_free
    }

    /// Chains made available and not popped yet.
    pub fn in_flight(&self) -> u16 {
        self.in_flight
    }

    /// Chains made available since the last [`Self::kick_prepare`]: the device may not know
    /// of them until the caller notifies it (a batch published with one notification, Linux's
    /// `num_added`).
    pub fn added_since_kick(&self) -> u16 {
        self.added_since_kick
    }

    /// Why the queue is broken, if it is.
    pub fn broken(&self) -> Option<BrokenReason> {
        self.broken
    }

    /// Latches the queue broken: every later call fails with `DeviceBroken(reason)`. The first
    /// reason is kept. For protocol violations found above the queue (e.g. a block status byte).
    pub fn mark_broken(&mut self, reason: BrokenReason) -> Error {
        let reason = *self.broken.get_or_insert(reason);
        Error::DeviceBroken(reason)
    }

    /// Replaces the reason the queue is latched broken with `reason` (once a reset completed
    /// after one that was ignored: [`BrokenReason::ResetIgnored`] no longer holds).
    pub fn relatch_broken(&mut self, reason: BrokenReason) -> Error {
        self.broken = Some(reason);
        Error::DeviceBroken(reason)
    }

    fn check_broken(&self) -> Result<()> {
        match self.broken {
            Some(reason) => Err(Error::DeviceBroken(reason)),
            None => Ok(()),
        }
    }

    /// Makes a chain available to the device and returns its head descriptor (the token to
    /// match in [`Self::pop_used`]). Device-readable buffers must come first (§2.7.4.2).
    ///
    /// The driver never dereferences the buffer addresses; the caller's DMA API keeps each
    /// mapping alive until the chain is popped (that is where the unsafety of DMA lives).
    pub fn add(&mut self, chain: &[Buffer]) -> Result<u16> {
        self.add_chain(chain.iter().copied())
    }

    /// [`Self::add`] for a chain given as an iterator (walked twice: validate, then write), so
    /// that protocol layers build chains without a buffer array (Linux `virtqueue_add_split`).
    pub fn add_chain<I>(&mut self, chain: I) -> Result<u16>
    where
        I: Iterator<Item = Buffer> + Clone,
    {
        self.check_broken()?;
        let (count, writable) = validate_chain(chain.clone())?;
        if count > usize::from(self.mem.size) {
            return Err(Error::BadChain);
        }
        let indirect = count > 1 && count <= usize::from(self.indirect_len);
        let ring_descs = if indirect { 1 } else { count as u16 };
        if ring_descs > self.num_free {
            return Err(Error::QueueFull);
        }
        // §2.7.13.1: place the buffers in free descriptors (or in the head's indirect table).
        let head = if indirect {
            self.place_indirect(chain.take(count), count as u16)
        } else {
            self.place_direct(chain.take(count), count as u16)
        };
        self.state[usize::from(head)] = DescState::Head { chain_len: ring_descs, writable };

        // §2.7.13.2: the head goes into the next available ring slot.
        self.write_avail_ring(self.avail_idx & self.mask, head);
        // §2.7.13.3.1: descriptors and ring entry visible before the new idx (virtio_wmb).
        fence(Ordering::Release);
        // §2.7.13.3: publish.
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.write_avail_idx(self.avail_idx);
        self.in_flight += 1;
        self.added_since_kick = self.added_since_kick.wrapping_add(1);
        Ok(head)
    }

    /// Writes a chain of `count` buffers into free ring descriptors linked by NEXT; returns the
    /// head.
    fn place_direct(&mut self, chain: impl Iterator<Item = Buffer>, count: u16) -> u16 {
        let head = self.free_head;
        let mut index = head;
        let mut remaining = count;
        for buffer in chain {
            remaining -= 1;
            let mut flags = if buffer.device_writable { DESC_F_WRITE } else { 0 };
            let next = if remaining > 0 {
                flags |= DESC_F_NEXT;
                self.next[usize::from(index)]
            } else {
                0
            };
            self.write_desc(index, buffer.dma_addr, buffer.len, flags, next);
            self.state[usize::from(index)] = DescState::Body;
            index = self.next[usize::from(index)];
        }
        self.free_head = index;
        self.num_free -= count;
        head
    }

    /// Writes a chain of `count` (2..=`indirect_len`) buffers into the indirect table of the
    /// first free descriptor, entries 0.. linked by NEXT (§2.7.5.3.1: the first is entry 0),
    /// and makes that descriptor point at the table with INDIRECT alone (not NEXT, not WRITE:
    /// §2.7.5.3.1, the device ignores WRITE there). Returns the head.
    fn place_indirect(&mut self, chain: impl Iterator<Item = Buffer>, count: u16) -> u16 {
        let head = self.free_head;
        for (entry, buffer) in (0..count).zip(chain) {
            let mut flags = if buffer.device_writable { DESC_F_WRITE } else { 0 };
            let next = if entry + 1 < count {
                flags |= DESC_F_NEXT;
                entry + 1
            } else {
                0
            };
            self.write_indirect_desc(head, entry, buffer.dma_addr, buffer.len, flags, next);
        }
        let table = self.indirect_table_dma(head);
        self.write_desc(head, table, u32::from(count) * DESC_SIZE as u32, DESC_F_INDIRECT, 0);
        self.free_head = self.next[usize::from(head)];
        self.num_free -= 1;
        head
    }

    /// Decides whether the device needs a notification for the chains added since the last
    /// call (§2.7.13.4; Linux `virtqueue_kick_prepare_split`). The caller then notifies through
    /// the transport. Several [`Self::add`]s then one call publish a batch with at most one
    /// notification: under RING_EVENT_IDX the whole batch `[old, new)` is checked against
    /// `avail_event` (§2.7.10), so a device that asked for a notification at any chain of the
    /// batch gets one.
    pub fn kick_prepare(&mut self) -> Result<bool> {
        self.check_broken()?;
        // The new avail idx must be visible before we read the device's suppression state, a
        // store-to-load order only a full barrier gives (virtio_mb).
        fence(Ordering::SeqCst);
        let new = self.avail_idx;
        let old = new.wrapping_sub(self.added_since_kick);
        self.added_since_kick = 0;
        if self.event_idx {
            // §2.7.10: notify if avail_event lies in [old, new) (vring_need_event).
            let event = self.read_avail_event();
            Ok(new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old))
        } else {
            Ok(self.read_used_flags() & USED_F_NO_NOTIFY == 0)
        }
    }

    /// Takes the next completed chain off the used ring: `(head, bytes written by the device)`,
    /// or `None` if there is none (Linux `virtqueue_get_buf_ctx_split`). Everything the device
    /// wrote is validated first (§2.7.8); a violation breaks the queue.
    pub fn pop_used(&mut self) -> Result<Option<(u16, u32)>> {
        self.check_broken()?;
        let now = self.read_used_idx();
        // §2.7.13 / Linux virtio_rmb: read the elements only after seeing idx move.
        fence(Ordering::Acquire);

        if (now.wrapping_sub(self.used_idx_seen) as i16) < 0 {
            let seen = self.used_idx_seen;
            return Err(self.mark_broken(BrokenReason::UsedIdxBackwards { seen, now }));
        }
        let pending = now.wrapping_sub(self.last_used_idx);
        if pending > self.in_flight {
            let (last_used, in_flight) = (self.last_used_idx, self.in_flight);
            return Err(self.mark_broken(BrokenReason::UsedIdxAhead { last_used, now, in_flight }));
        }
        self.used_idx_seen = now;
        if pending == 0 {
            return Ok(None);
        }

        let (id, len) = self.read_used_elem(self.last_used_idx & self.mask);
        let head = self.validate_used(id, len)?;
        self.detach_chain(head);
        self.last_used_idx = self.last_used_idx.wrapping_add(1);
        self.in_flight -= 1;
        if self.event_idx {
            // Ask for an interrupt at the next completion (Linux: vring_used_event store + mb).
            self.write_used_event(self.last_used_idx);
            fence(Ordering::SeqCst);
        }
        Ok(Some((head, len)))
    }

    /// Checks a used element against our shadow state: an in-range id that heads a chain in
    /// flight, and no more bytes written than the chain can hold.
    fn validate_used(&mut self, id: u32, len: u32) -> Result<u16> {
        if id >= u32::from(self.mem.size) {
            return Err(self.mark_broken(BrokenReason::UsedIdOutOfRange { id }));
        }
        let id = id as u16;
        let reason = match self.state[usize::from(id)] {
            DescState::Head { writable, .. } if len <= writable => return Ok(id),
            DescState::Head { writable, .. } => BrokenReason::UsedLenTooLong { id, len, writable },
            DescState::Free { completed: true } => BrokenReason::UsedIdAlreadyCompleted { id },
            DescState::Free { completed: false } | DescState::Body => BrokenReason::UsedIdNotInFlight { id },
        };
        Err(self.mark_broken(reason))
    }

    /// Returns the chain headed by `head` to the free list, following our shadow links only
    /// (Linux `detach_buf_split`).
    fn detach_chain(&mut self, head: u16) {
        let DescState::Head { chain_len, .. } = self.state[usize::from(head)] else {
            unreachable!("validate_used only accepts heads");
        };
        let mut index = head;
        for _ in 1..chain_len {
            self.state[usize::from(index)] = DescState::Free { completed: false };
            index = self.next[usize::from(index)];
        }
        self.state[usize::from(index)] = DescState::Free { completed: false };
        self.next[usize::from(index)] = self.free_head;
        self.state[usize::from(head)] = DescState::Free { completed: true };
        self.free_head = head;
        self.num_free += chain_len;
    }

    // Ring memory access. The only unsafe code of the queue: volatile accesses, because the
    // device reads and writes this memory behind the compiler's back. Every index is below
    // `size` (masked or range-checked by the callers), so every access stays inside the rings.

    /// Zeroes the descriptor table, both rings and the indirect tables (as `alloc_coherent`
    /// gave them), so that a rebuilt queue starts from the state the spec assumes (§2.7).
    fn zero_rings(&mut self) {
        let size = self.mem.size;
        let mut regions = [
            Some((self.mem.desc, VirtqueueMemory::desc_layout(size).0)),
            Some((self.mem.avail, VirtqueueMemory::avail_layout(size).0)),
            Some((self.mem.used, VirtqueueMemory::used_layout(size).0)),
            self.mem.indirect.map(|r| (r, VirtqueueMemory::indirect_layout(size, self.mem.indirect_len).0)),
        ];
        for (region, bytes) in regions.iter_mut().flatten() {
            for offset in 0..*bytes {
                // SAFETY: `offset` is inside the region, which `VirtqueueMemory` owns with
                // exactly this layout's size; volatile because the device may read it.
                unsafe { region.ptr.as_ptr().add(offset).write_volatile(0) };
            }
        }
    }

    fn write_desc(&mut self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        debug_assert!(index < self.mem.size);
        let desc = self.mem.desc.ptr.as_ptr().cast::<[u8; 16]>();
        // SAFETY: `index < size`, and the descriptor table holds `size` 16-byte entries
        // (`VirtqueueMemory` invariant).
        unsafe { desc.add(usize::from(index)).write_volatile(desc_bytes(addr, len, flags, next)) };
    }

    /// Where the device finds `head`'s indirect table.
    fn indirect_table_dma(&self, head: u16) -> u64 {
        let region = self.mem.indirect.expect("indirect chains only with indirect tables");
        let offset = DESC_SIZE * usize::from(self.indirect_len) * usize::from(head);
        region.dma_addr + offset as u64
    }

    fn write_indirect_desc(&mut self, head: u16, entry: u16, addr: u64, len: u32, flags: u16, next: u16) {
        debug_assert!(head < self.mem.size && entry < self.indirect_len);
        let region = self.mem.indirect.expect("indirect chains only with indirect tables");
        let table = region.ptr.as_ptr().cast::<[u8; 16]>();
        let index = usize::from(self.indirect_len) * usize::from(head) + usize::from(entry);
        // SAFETY: `head < size` and `entry < indirect_len`: the tables hold `size` tables of
        // `indirect_len` 16-byte entries (`VirtqueueMemory::allocate`), 16-aligned.
        unsafe { table.add(index).write_volatile(desc_bytes(addr, len, flags, next)) };
    }

    fn avail_u16(&self, offset: usize) -> *mut u16 {
        // Offsets in u16 units: 0 flags, 1 idx, 2.. ring, 2 + size used_event.
        debug_assert!(offset < 3 + usize::from(self.mem.size));
        self.mem.avail.ptr.as_ptr().cast::<u16>().wrapping_add(offset)
    }

    fn write_avail_ring(&mut self, slot: u16, head: u16) {
        let entry = self.avail_u16(2 + usize::from(slot));
        // SAFETY: `slot < size`: inside the available ring, 2-aligned (`VirtqueueMemory`).
        unsafe { entry.write_volatile(head.to_le()) };
    }

    fn write_avail_idx(&mut self, idx: u16) {
        let field = self.avail_u16(1);
        // SAFETY: the idx field of the available ring.
        unsafe { field.write_volatile(idx.to_le()) };
    }

    fn write_used_event(&mut self, idx: u16) {
        let field = self.avail_u16(2 + usize::from(self.mem.size));
        // SAFETY: the used_event field, last of the available ring.
        unsafe { field.write_volatile(idx.to_le()) };
    }

    fn used_u16(&self, byte_offset: usize) -> u16 {
        debug_assert!(byte_offset + 2 <= VirtqueueMemory::used_layout(self.mem.size).0);
        let field = self.mem.used.ptr.as_ptr().wrapping_add(byte_offset).cast::<u16>();
        // SAFETY: callers pass the offset of flags, idx or avail_event, 2-aligned fields inside
        // the used ring.
        u16::from_le(unsafe { field.read_volatile() })
    }

    fn read_used_flags(&self) -> u16 {
        self.used_u16(0)
    }

    fn read_used_idx(&self) -> u16 {
        self.used_u16(2)
    }

    fn read_avail_event(&self) -> u16 {
        self.used_u16(4 + 8 * usize::from(self.mem.size))
    }

    fn read_used_elem(&self, slot: u16) -> (u32, u32) {
        debug_assert!(slot < self.mem.size);
        let elem = self.mem.used.ptr.as_ptr().wrapping_add(4 + 8 * usize::from(slot)).cast::<[u32; 2]>();
        // SAFETY: `slot < size`: the element is inside the used ring, 4-aligned.
        let [id, len] = unsafe { elem.read_volatile() };
        (u32::from_le(id), u32::from_le(len))
    }
}

/// A descriptor as the device reads it (struct virtq_desc, little-endian, §2.7.5).
fn desc_bytes(addr: u64, len: u32, flags: u16, next: u16) -> [u8; DESC_SIZE] {
    let mut bytes = [0; DESC_SIZE];
    bytes[0..8].copy_from_slice(&addr.to_le_bytes());
    bytes[8..12].copy_from_slice(&len.to_le_bytes());
    bytes[12..14].copy_from_slice(&flags.to_le_bytes());
    bytes[14..16].copy_from_slice(&next.to_le_bytes());
    bytes
}

/// Counts the buffers of a chain and its device-writable bytes, and checks §2.7.4.2: not empty,
/// readable before writable, at most 4 GiB in total.
fn validate_chain(chain: impl Iterator<Item = Buffer>) -> Result<(usize, u32)> {
    let (mut count, mut total, mut writable, mut seen_writable) = (0usize, 0u32, 0u32, false);
    for buffer in chain {
        if seen_writable && !buffer.device_writable {
            return Err(Error::BadChain);
        }
        seen_writable |= buffer.device_writable;
        total = total.checked_add(buffer.len).ok_or(Error::BadChain)?;
        if buffer.device_writable {
            writable += buffer.len;
        }
        count += 1;
    }
    if count == 0 {
        return Err(Error::BadChain);
    }
    Ok((count, writable))
}
