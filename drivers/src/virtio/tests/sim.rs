//! Simulated hardware for the host tests: DMA memory with guard regions, the device side of a
//! split virtqueue, a fake transport with a device status state machine, and a block device.

extern crate std;

use std::alloc::{alloc, Layout};
use std::cell::{Cell, RefCell};
use std::ptr::NonNull;
use std::vec::Vec;

use crate::virtio::queue::VirtqueueMemory;
use crate::virtio::transport::{InterruptStatus, Transport};
use crate::virtio::{status, DeviceType, Error, Result, VirtioDma};

/// Guard bytes on each side of every allocation.
const GUARD: usize = 64;
/// What guard bytes hold; anything else means someone wrote outside an allocation.
const GUARD_BYTE: u8 = 0xa5;

/// Bytes of one arena chunk (bigger allocations get a chunk of their own).
const CHUNK: usize = 1 << 20;
/// Alignment of the standard chunks.
const CHUNK_ALIGN: usize = 4096;

/// A block of host memory that [`SimDma`] hands out allocations from, front to back.
struct Chunk {
    base: NonNull<u8>,
    layout: Layout,
    /// Bytes handed out so far, from `base`.
    used: usize,
}

std::thread_local! {
    /// Standard chunks given back by [`SimDma::release`], for the next `SimDma` on this thread:
    /// a fuzz target builds one per input, and taking fresh zeroed memory from the system
    /// allocator for each (tens of MB for the longest scripts) cost more than the input itself.
    static SPARE_CHUNKS: RefCell<Vec<Chunk>> = const { RefCell::new(Vec::new()) };
    /// The guard list given back by [`SimDma::release`] (empty, its capacity kept: growing it
    /// to a long script's hundreds of thousands of ranges again cost page faults every input).
    static SPARE_GUARDS: RefCell<Vec<(usize, usize)>> = const { RefCell::new(Vec::new()) };
}

/// Host memory standing in for DMA memory: leaked, aligned, `dma_addr == host address`, and
/// fenced by guard regions that [`SimDma::check_guards`] verifies.
///
/// Allocations are carved from 1 MiB chunks front to back, never freed or reused until
/// [`SimDma::release`] (which gives the chunks back for the next `SimDma` on the thread): a
/// `malloc`/`free` and the zeroing of fresh memory for each allocation were most of the fuzz
/// targets' time. Consecutive allocations share guard bytes: allocation B's leading guard is
/// allocation A's trailing guard, plus any bytes B's alignment adds, so every allocation has
/// [`GUARD`] guard bytes on each side and every guard byte is checked once.
#[derive(Default)]
pub struct SimDma {
    /// The guard bytes, as `(start, end)` address ranges in allocation order, each 64 to 128
    /// bytes long ([`GUARD`] to twice that).
    guards: RefCell<Vec<(usize, usize)>>,
    /// The chunks allocations come from; the last one is being filled.
    chunks: RefCell<Vec<Chunk>>,
}

impl SimDma {
    /// A leaked, zeroed allocation with guards on both sides.
    pub fn alloc(&self, size: usize, align: usize) -> NonNull<u8> {
        self.alloc_filled(size, align, 0)
    }

    /// An allocation of `size` bytes holding `fill`, aligned to `align` (and to [`GUARD`]),
    /// with [`GUARD`] guard bytes right before and right after it.
    fn alloc_filled(&self, size: usize, align: usize, fill: u8) -> NonNull<u8> {
        let align = align.max(GUARD);
        assert!(align.is_power_of_two(), "alignment {align} is not a power of two");
        let span = size.checked_add(2 * GUARD).expect("allocation size overflows");
        let mut chunks = self.chunks.borrow_mut();
        // Where the allocation starts in a chunk, if it fits: after the chunk's first guard, or
        // right after the previous allocation's trailing guard (which then leads this one).
        let place = |c: &Chunk| {
            let base = c.base.as_ptr() as usize;
            let start = (base + c.used.max(GUARD)).next_multiple_of(align);
            (start + size + GUARD <= base + c.layout.size()).then_some(start)
        };
        let start = match chunks.last().and_then(place) {
            Some(start) => start,
            None => {
                // Alignment pads by less than `align` before the first guard.
                let chunk = if span + align <= CHUNK {
                    SPARE_CHUNKS.with(|spare| spare.borrow_mut().pop()).unwrap_or_else(|| Chunk::new(CHUNK, CHUNK_ALIGN))
                } else {
                    // A chunk of its own, with room for the padding.
                    Chunk::new(span + align, align)
                };
                chunks.push(chunk);
                place(chunks.last().unwrap()).expect("a fresh chunk holds the allocation")
            }
        };
        let chunk = chunks.last_mut().unwrap();
        let base = chunk.base.as_ptr() as usize;
        // Bytes below `frontier` belong to earlier allocations and their guards: never written
        // again here (a guard someone overwrote must stay overwritten for `check_guards`).
        let frontier = base + chunk.used;
        let lead = (start - GUARD).max(frontier);
        let end = start + size + GUARD;
        chunk.used = end - base;
        // SAFETY: `frontier <= lead <= start` and `end <= base + layout.size()` (`place`): the
        // bytes from `lead` to `end` are inside the chunk and belong to no earlier allocation.
        let bytes = unsafe { std::slice::from_raw_parts_mut(lead as *mut u8, end - lead) };
        let (guard, rest) = bytes.split_at_mut(start - lead);
        let (data, trailing) = rest.split_at_mut(size);
        guard.fill(GUARD_BYTE);
        data.fill(fill);
        trailing.fill(GUARD_BYTE);
        let mut guards = self.guards.borrow_mut();
        if guards.capacity() == 0 {
            *guards = SPARE_GUARDS.with(RefCell::take);
        }
        // The leading guard joins the previous range (the previous trailing guard) if that stays
        // within two guards' length; otherwise it is recorded whole, overlapping that range.
        match guards.last_mut() {
            Some(last) if last.1 == lead && start - last.0 <= 2 * GUARD => last.1 = start,
            _ => guards.push((start - GUARD, start)),
        }
        // The trailing guard joins the leading one if the allocation is empty.
        match guards.last_mut() {
            Some(last) if last.1 == start + size && end - last.0 <= 2 * GUARD => last.1 = end,
            _ => guards.push((start + size, end)),
        }
        NonNull::new(start as *mut u8).unwrap()
    }

    /// A data buffer of `len` bytes filled with `fill`; returns its (dma) address.
    pub fn buffer(&self, len: usize, fill: u8) -> u64 {
        self.alloc_filled(len, 8, fill).as_ptr() as u64
    }

    /// Frees every allocation (long fuzz runs would otherwise leak them all): the standard
    /// chunks go to the thread's spare list for the next `SimDma`, the others back to the system.
    ///
    /// # Safety
    ///
    /// Nothing may use the allocations any more: no queue or device model built on them.
    pub unsafe fn release(&self) {
        let mut guards = self.guards.take();
        guards.clear();
        SPARE_GUARDS.with(|spare| {
            if spare.borrow().capacity() < guards.capacity() {
                *spare.borrow_mut() = guards;
            }
        });
        for mut chunk in self.chunks.borrow_mut().drain(..) {
            if chunk.layout.size() == CHUNK && chunk.layout.align() == CHUNK_ALIGN {
                chunk.used = 0;
                SPARE_CHUNKS.with(|spare| spare.borrow_mut().push(chunk));
            } else {
                // SAFETY: allocated in `Chunk::new` with this layout; the caller promises
                // nothing uses it, and `drain` forgets it so it is freed once.
                unsafe { std::alloc::dealloc(chunk.base.as_ptr(), chunk.layout) };
            }
        }
    }

    /// Panics if any guard byte changed, naming the first one (in allocation order).
    ///
    /// The fuzz targets call this at growing intervals and at the end of every input, over up to
    /// hundreds of thousands of guards, and it was most of their time: first a byte-by-byte loop
    /// under their comparison tracing, then one `memcmp` per guard, each waiting on a cache miss
    /// before the next. So the first pass reads the guards eight ranges at a time (an unrolled
    /// loop: the misses overlap, and only the outer loop's bounds are traced), as 8-byte words
    /// whose differences from the pattern it ORs together, with no branch on the data. If any
    /// bit differs, a second pass finds the byte.
    pub fn check_guards(&self) {
        let guards = self.guards.borrow();
        let mut batches = guards.chunks_exact(8);
        let mut differs = 0;
        for (i, batch) in (&mut batches).enumerate() {
            // The ranges two batches on: the hardware does not guess these strides.
            if let Some(ahead) = guards.get(8 * i + 16..8 * i + 24) {
                let a: &[(usize, usize); 8] = ahead.try_into().unwrap();
                prefetch_range(a[0]);
                prefetch_range(a[1]);
                prefetch_range(a[2]);
                prefetch_range(a[3]);
                prefetch_range(a[4]);
                prefetch_range(a[5]);
                prefetch_range(a[6]);
                prefetch_range(a[7]);
            }
            let b: &[(usize, usize); 8] = batch.try_into().unwrap();
            // Written out: iterator adapters are not inlined in the instrumented build.
            differs |= range_diff(b[0]) | range_diff(b[1]) | range_diff(b[2]) | range_diff(b[3]);
            differs |= range_diff(b[4]) | range_diff(b[5]) | range_diff(b[6]) | range_diff(b[7]);
        }
        for &range in batches.remainder() {
            differs |= range_diff(range);
        }
        if differs != 0 {
            for &(start, end) in guards.iter() {
                // SAFETY: as above.
                let bytes = unsafe { std::slice::from_raw_parts(start as *const u8, end - start) };
                if let Some(at) = bytes.iter().position(|&b| b != GUARD_BYTE) {
                    panic!("guard byte at {:#x} overwritten", start + at);
                }
            }
            unreachable!("a guard word differed, yet no guard byte does");
        }
    }
}

/// Asks for the cache line at `addr` (a hint: no fault, no effect on the program's meaning).
#[inline(always)]
fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8)
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a prefetch never faults, whatever the address; it touches no register but its input.
    unsafe {
        std::arch::asm!("prfm pldl1keep, [{0}]", in(reg) addr, options(nostack, preserves_flags, readonly))
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = addr;
}

/// Asks for the cache lines of a guard range (64 to 128 bytes: its first, middle and last byte
/// cover them all).
#[inline(always)]
fn prefetch_range((start, end): (usize, usize)) {
    prefetch(start);
    prefetch(start.wrapping_add(GUARD));
    prefetch(end.wrapping_sub(1));
}

/// The bits in which a guard range of 64 to 128 bytes (its first 64 bytes and its last 64,
/// overlapping) differs from the guard pattern.
#[inline(always)]
fn range_diff((start, end): (usize, usize)) -> u64 {
    const PATTERN: u64 = u64::from_ne_bytes([GUARD_BYTE; 8]);
    // SAFETY: guard bytes of live (leaked) allocations, `start + GUARD <= end`, read unaligned.
    let (a, b) = unsafe { ((start as *const [u64; 8]).read_unaligned(), (end.wrapping_sub(GUARD) as *const [u64; 8]).read_unaligned()) };
    // Written out (no `map`, no iterators): those are not inlined in the instrumented build.
    let [a0, a1, a2, a3, a4, a5, a6, a7] = a;
    let [b0, b1, b2, b3, b4, b5, b6, b7] = b;
    let a = (a0 ^ PATTERN)
        | (a1 ^ PATTERN)
        | (a2 ^ PATTERN)
        | (a3 ^ PATTERN)
        | (a4 ^ PATTERN)
        | (a5 ^ PATTERN)
        | (a6 ^ PATTERN)
        | (a7 ^ PATTERN);
    let b = (b0 ^ PATTERN)
        | (b1 ^ PATTERN)
        | (b2 ^ PATTERN)
        | (b3 ^ PATTERN)
        | (b4 ^ PATTERN)
        | (b5 ^ PATTERN)
        | (b6 ^ PATTERN)
        | (b7 ^ PATTERN);
    a | b
}

impl Chunk {
    fn new(size: usize, align: usize) -> Self {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: the layout has a non-zero size.
        let base = NonNull::new(unsafe { alloc(layout) }).expect("out of host memory");
        Self { base, layout, used: 0 }
    }
}

// SAFETY: allocations are leaked (never freed or reused before `release`, whose caller promises
// nothing uses them any more), zeroed, aligned as asked, and the
// "device" (the simulation) reaches them at the same address; host memory is coherent.
unsafe impl VirtioDma for SimDma {
    fn alloc_coherent(&self, size: usize, align: usize) -> Option<(NonNull<u8>, u64)> {
        let ptr = self.alloc(size, align);
        Some((ptr, ptr.as_ptr() as u64))
    }
}

/// Reads `len` bytes at a simulated DMA address.
pub fn read_bytes(addr: u64, len: usize) -> Vec<u8> {
    // SAFETY: tests only pass addresses of live `SimDma` buffers of at least `len` bytes.
    unsafe { std::slice::from_raw_parts(addr as *const u8, len) }.to_vec()
}

/// Writes bytes at a simulated DMA address.
pub fn write_bytes(addr: u64, bytes: &[u8]) {
    // SAFETY: tests only pass addresses of live `SimDma` buffers of at least `bytes.len()` bytes.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) };
}

/// Writes `len` copies of `byte` at a simulated DMA address.
pub fn fill_bytes(addr: u64, byte: u8, len: usize) {
    // SAFETY: tests only pass addresses of live `SimDma` buffers of at least `len` bytes.
    unsafe { (addr as *mut u8).write_bytes(byte, len) };
}

/// Reads the byte at a simulated DMA address.
pub fn read_byte(addr: u64) -> u8 {
    // SAFETY: tests only pass addresses of live `SimDma` buffers.
    unsafe { (addr as *const u8).read() }
}

/// One descriptor as the device sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimDesc {
    /// The buffer's address.
    pub addr: u64,
    /// Its length in bytes.
    pub len: u32,
    /// VIRTQ_DESC_F_WRITE: the device writes it.
    pub writable: bool,
}

/// A chain taken off the available ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimChain {
    /// The head descriptor's index (the id the device returns it by).
    pub head: u16,
    /// The buffers, in chain order (from the indirect table for an indirect chain).
    pub descs: Vec<SimDesc>,
    /// Each buffer's descriptor `(flags, next)` as the driver wrote it.
    pub links: Vec<(u16, u16)>,
    /// For an indirect chain: the ring descriptor `(table address, table length in bytes,
    /// flags)`.
    pub indirect: Option<(u64, u32, u16)>,
}

impl SimChain {
    /// Device-writable bytes of the chain.
    pub fn writable_len(&self) -> u32 {
        self.descs.iter().filter(|d| d.writable).map(|d| d.len).sum()
    }
}

/// The device side of a split virtqueue, over the same ring memory as the driver.
pub struct RingDevice {
    size: u16,
    desc: *mut u8,
    avail: *mut u8,
    used: *mut u8,
    last_avail_idx: u16,
    used_idx: u16,
}

impl RingDevice {
    /// The device side of the queue in `mem`, from index 0.
    pub fn new(mem: &VirtqueueMemory) -> Self {
        Self {
            size: mem.size(),
            desc: mem.desc().ptr.as_ptr(),
            avail: mem.avail().ptr.as_ptr(),
            used: mem.used().ptr.as_ptr(),
            last_avail_idx: 0,
            used_idx: 0,
        }
    }

    fn read_u16(base: *mut u8, offset: usize) -> u16 {
        // SAFETY: offsets used below are inside the ring allocations.
        unsafe { base.add(offset).cast::<u16>().read_volatile() }
    }

    fn write_u16(base: *mut u8, offset: usize, value: u16) {
        // SAFETY: offsets used below are inside the ring allocations.
        unsafe { base.add(offset).cast::<u16>().write_volatile(value) }
    }

    /// The available ring's idx as the driver last published it.
    pub fn avail_idx(&self) -> u16 {
        Self::read_u16(self.avail, 2)
    }

    fn desc(&self, index: u16) -> (SimDesc, u16, u16) {
        assert!(index < self.size, "driver gave a descriptor index out of range");
        // SAFETY: `index < size` and the table holds `size` 16-byte descriptors.
        let raw = unsafe { self.desc.add(16 * usize::from(index)).cast::<[u8; 16]>().read_volatile() };
        let addr = u64::from_le_bytes(raw[0..8].try_into().unwrap());
        let len = u32::from_le_bytes(raw[8..12].try_into().unwrap());
        let flags = u16::from_le_bytes(raw[12..14].try_into().unwrap());
        let next = u16::from_le_bytes(raw[14..16].try_into().unwrap());
        (SimDesc { addr, len, writable: flags & 2 != 0 }, flags, next)
    }

    /// Takes the next chain the driver made available, walking the descriptor table, and the
    /// head's indirect table if it points at one (§2.7.5.3). Panics where the driver broke a
    /// rule the device would have to reject (indices out of range, INDIRECT with NEXT, a table
    /// that is empty or not whole descriptors, INDIRECT inside a table, a loop).
    pub fn pop_avail(&mut self) -> Option<SimChain> {
        if self.last_avail_idx == self.avail_idx() {
            return None;
        }
        let slot = usize::from(self.last_avail_idx % self.size);
        let head = Self::read_u16(self.avail, 4 + 2 * slot);
        self.last_avail_idx = self.last_avail_idx.wrapping_add(1);
        let (descs, links) = (Vec::with_capacity(8), Vec::with_capacity(8));
        let mut chain = SimChain { head, descs, links, indirect: None };
        let mut index = head;
        loop {
            let (desc, flags, next) = self.desc(index);
            if flags & 4 != 0 {
                assert_eq!(flags & 1, 0, "INDIRECT and NEXT in one descriptor (2.7.5.3.1)");
                assert!(chain.descs.is_empty(), "the driver puts an indirect table alone");
                chain.indirect = Some((desc.addr, desc.len, flags));
                Self::walk_table(&mut chain, desc.addr, desc.len);
                break;
            }
            chain.descs.push(desc);
            chain.links.push((flags, next));
            assert!(chain.descs.len() <= usize::from(self.size), "descriptor loop");
            if flags & 1 == 0 {
                break;
            }
            index = next;
        }
        Some(chain)
    }

    /// Follows an indirect table from entry 0 (§2.7.5.3.2).
    fn walk_table(chain: &mut SimChain, table: u64, len: u32) {
        assert!(len > 0 && len.is_multiple_of(16), "indirect table of {len} bytes");
        let entries = (len / 16) as u16;
        let mut entry = 0;
        loop {
            assert!(entry < entries, "indirect next {entry} outside a table of {entries}");
            // SAFETY: `entry < entries`: inside the table the driver published (a live
            // `SimDma` allocation of at least `len` bytes).
            let raw = unsafe { ((table + 16 * u64::from(entry)) as *const [u8; 16]).read_unaligned() };
            let addr = u64::from_le_bytes(raw[0..8].try_into().unwrap());
            let dlen = u32::from_le_bytes(raw[8..12].try_into().unwrap());
            let flags = u16::from_le_bytes(raw[12..14].try_into().unwrap());
            let next = u16::from_le_bytes(raw[14..16].try_into().unwrap());
            assert_eq!(flags & 4, 0, "INDIRECT inside an indirect table (2.7.5.3.1)");
            chain.descs.push(SimDesc { addr, len: dlen, writable: flags & 2 != 0 });
            chain.links.push((flags, next));
            assert!(chain.descs.len() <= usize::from(entries), "indirect descriptor loop");
            if flags & 1 == 0 {
                break;
            }
            entry = next;
        }
    }

    /// Writes a used element at the next slot without publishing it.
    pub fn write_used_elem(&mut self, slot_idx: u16, id: u32, len: u32) {
        let slot = usize::from(slot_idx % self.size);
        // SAFETY: `slot < size`, the used ring holds `size` 8-byte elements after 4 bytes.
        unsafe { self.used.add(4 + 8 * slot).cast::<[u32; 2]>().write_volatile([id, len]) };
    }

    /// Returns a buffer: element, then idx, as a device does.
    pub fn push_used(&mut self, id: u32, len: u32) {
        self.write_used_elem(self.used_idx, id, len);
        self.used_idx = self.used_idx.wrapping_add(1);
        Self::write_u16(self.used, 2, self.used_idx);
    }

    /// Sets the used idx to anything (hostile devices).
    pub fn set_used_idx(&mut self, idx: u16) {
        self.used_idx = idx;
        Self::write_u16(self.used, 2, idx);
    }

    /// The used idx the device published last.
    pub fn used_idx(&self) -> u16 {
        self.used_idx
    }

    /// VIRTQ_USED_F_NO_NOTIFY.
    pub fn set_no_notify(&mut self, no_notify: bool) {
        Self::write_u16(self.used, 0, u16::from(no_notify));
    }

    /// The `avail_event` field (RING_EVENT_IDX).
    pub fn set_avail_event(&mut self, idx: u16) {
        Self::write_u16(self.used, 4 + 8 * usize::from(self.size), idx);
    }

    /// The `used_event` field the driver writes (RING_EVENT_IDX).
    pub fn used_event(&self) -> u16 {
        Self::read_u16(self.avail, 4 + 2 * usize::from(self.size))
    }
}

/// (queue, size, desc, driver, device) from the last `activate_queue`.
pub type ActivatedQueue = (u16, u16, u64, u64, u64);

/// A transport whose device follows the status state machine of §2.1 / §3.1.1, with knobs for
/// hostile or unusual behaviour. Every status write is logged.
pub struct FakeTransport {
    /// The device ID (§5).
    pub device_type: u32,
    /// The features the device offers.
    pub device_features: u64,
    /// The device clears FEATURES_OK when the driver accepts features outside this mask.
    pub acceptable_features: u64,
    /// The device never reads back 0 after a reset.
    pub ignores_reset: bool,
    /// The same, switched on while the device runs (a reset that starts failing later).
    pub ignores_reset_now: Cell<bool>,
    /// QueueNumMax of queue 0 (other queues do not exist).
    pub queue_max: u16,
    /// QueueReady of queue 0.
    pub queue_ready: Cell<bool>,
    /// The last queue the driver activated.
    pub activated: Cell<Option<ActivatedQueue>>,
    /// The device status register.
    pub status: Cell<u32>,
    /// Every value written to the status register, in order.
    pub status_log: RefCell<Vec<u32>>,
    /// The features the driver accepted.
    pub driver_features: Cell<u64>,
    /// Queue notifications (kicks) received.
    pub notifications: Cell<usize>,
    /// The interrupt status bits the next ack returns (and clears).
    pub interrupt: Cell<u32>,
    /// The device-specific configuration space.
    pub config: RefCell<Vec<u8>>,
    /// ConfigGeneration.
    pub generation: Cell<u32>,
    /// How many times the driver read ConfigGeneration.
    pub generation_reads: Cell<usize>,
    /// Config reads that change the config (and the generation) under the driver.
    pub config_changes: Cell<u32>,
}

impl FakeTransport {
    /// A device of `device_type` offering `device_features`, reset, with 64 bytes of zeroed config.
    pub fn new(device_type: DeviceType, device_features: u64) -> Self {
        Self {
            device_type: device_type.0,
            device_features,
            acceptable_features: u64::MAX,
            ignores_reset: false,
            ignores_reset_now: Cell::new(false),
            queue_max: 256,
            queue_ready: Cell::new(false),
            activated: Cell::new(None),
            status: Cell::new(0),
            status_log: RefCell::new(Vec::new()),
            driver_features: Cell::new(0),
            notifications: Cell::new(0),
            interrupt: Cell::new(0),
            config: RefCell::new(std::vec![0; 64]),
            generation: Cell::new(0),
            generation_reads: Cell::new(0),
            config_changes: Cell::new(0),
        }
    }

    /// True if the driver set FAILED.
    pub fn failed(&self) -> bool {
        self.status.get() & status::FAILED != 0
    }

    /// Writes a little-endian u64 into the config space.
    pub fn set_config_u64(&self, offset: usize, value: u64) {
        self.config.borrow_mut()[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
    }

    /// Writes a little-endian u32 into the config space.
    pub fn set_config_u32(&self, offset: usize, value: u32) {
        self.config.borrow_mut()[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }

    fn config_bytes<const N: usize>(&self, offset: usize) -> Result<[u8; N]> {
        let bytes: [u8; N] = {
            let config = self.config.borrow();
            let bytes = config.get(offset..offset + N).ok_or(Error::ConfigOutOfRange { offset })?;
            bytes.try_into().unwrap()
        };
        if self.config_changes.get() > 0 {
            // The host rewrites the config right after this read: every byte and the
            // generation move.
            self.config_changes.set(self.config_changes.get() - 1);
            self.config.borrow_mut().iter_mut().for_each(|b| *b = b.wrapping_add(1));
            self.generation.set(self.generation.get() + 1);
        }
        Ok(bytes)
    }
}

impl Transport for FakeTransport {
    fn device_type(&self) -> DeviceType {
        DeviceType(self.device_type)
    }

    fn device_features(&self) -> u64 {
        self.device_features
    }

    fn set_driver_features(&self, features: u64) {
        self.driver_features.set(features);
    }

    fn status(&self) -> u32 {
        self.status.get()
    }

    fn set_status(&self, value: u32) {
        self.status_log.borrow_mut().push(value);
        if value == 0 {
            self.driver_features.set(0);
            self.queue_ready.set(false);
            if self.ignores_reset || self.ignores_reset_now.get() {
                return;
            }
        }
        let mut value = value;
        let newly_features_ok = value & status::FEATURES_OK != 0 && self.status.get() & status::FEATURES_OK == 0;
        if newly_features_ok && self.driver_features.get() & !self.acceptable_features != 0 {
            value &= !status::FEATURES_OK;
        }
        self.status.set(value);
    }

    fn max_queue_size(&self, queue: u16) -> u16 {
        if queue == 0 {
            self.queue_max
        } else {
            0
        }
    }

    fn queue_ready(&self, _queue: u16) -> bool {
        self.queue_ready.get()
    }

    fn activate_queue(&self, queue: u16, size: u16, desc: u64, driver: u64, device: u64) {
        self.activated.set(Some((queue, size, desc, driver, device)));
        self.queue_ready.set(true);
    }

    fn notify(&self, _queue: u16) {
        self.notifications.set(self.notifications.get() + 1);
    }

    fn ack_interrupt(&self) -> InterruptStatus {
        InterruptStatus(self.interrupt.replace(0))
    }

    fn config_generation(&self) -> u32 {
        self.generation_reads.set(self.generation_reads.get() + 1);
        self.generation.get()
    }

    fn read_config_u8(&self, offset: usize) -> Result<u8> {
        Ok(self.config_bytes::<1>(offset)?[0])
    }

    fn read_config_u16(&self, offset: usize) -> Result<u16> {
        Ok(u16::from_le_bytes(self.config_bytes(offset)?))
    }

    fn read_config_u32(&self, offset: usize) -> Result<u32> {
        Ok(u32::from_le_bytes(self.config_bytes(offset)?))
    }
}

/// The guards catch a write just past an allocation and just before it, and name the byte.
#[test]
fn guards_catch_a_write_outside_an_allocation() {
    for (offset, past) in [(0usize, true), (GUARD - 1, true), (0, false), (GUARD - 1, false)] {
        let dma = SimDma::default();
        let addr = dma.buffer(100, 0x11);
        dma.check_guards();
        let target = if past { addr + 100 + offset as u64 } else { addr - 1 - offset as u64 };
        write_bytes(target, &[0]);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dma.check_guards()));
        let message = caught.expect_err("an overwritten guard byte passed");
        let text = message.downcast_ref::<std::string::String>().cloned().unwrap_or_default();
        assert!(text.contains(&std::format!("{target:#x}")), "{text}");
    }
}

/// Guards shared by consecutive allocations: a write just past the first or just before the
/// second is caught, and so is one into the first's trailing guard made before the second was
/// allocated (the second allocation does not rewrite it). Allocations keep their alignment.
#[test]
fn shared_guards_are_checked_and_never_repaired() {
    for (first_len, align, offset) in [(512usize, 8usize, 0usize), (16, 8, 63), (1, 64, 10), (100, 4096, 63), (0, 8, 0)] {
        for write_before_second in [false, true] {
            let dma = SimDma::default();
            let first = dma.alloc(first_len, 8).as_ptr() as u64;
            let target = first + (first_len + offset) as u64;
            if write_before_second {
                write_bytes(target, &[0]);
            }
            let second = dma.alloc(32, align).as_ptr() as u64;
            assert_eq!(second % align.max(GUARD) as u64, 0);
            assert!(second >= first + (first_len + GUARD) as u64, "the second allocation overlaps the first's guard");
            if !write_before_second {
                dma.check_guards();
                write_bytes(target, &[0]);
            }
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dma.check_guards()));
            let message = caught.expect_err("an overwritten guard byte passed");
            let text = message.downcast_ref::<std::string::String>().cloned().unwrap_or_default();
            assert!(text.contains(&std::format!("{target:#x}")), "{text}");
            // SAFETY: nothing uses the allocations.
            unsafe { dma.release() };
        }
        // Just before the second allocation, and its leading guard's first byte.
        for back in [1, GUARD as u64] {
            let dma = SimDma::default();
            dma.alloc(first_len, 8);
            let second = dma.alloc(32, align).as_ptr() as u64;
            dma.check_guards();
            write_bytes(second - back, &[0]);
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dma.check_guards()));
            let text = caught.expect_err("an overwritten guard byte passed").downcast_ref::<std::string::String>().cloned();
            assert!(text.unwrap_or_default().contains(&std::format!("{:#x}", second - back)));
            // SAFETY: nothing uses the allocations.
            unsafe { dma.release() };
        }
    }
}

/// Every single guard byte, before and after allocations of many sizes and alignments (the
/// guard ranges of 64 to 128 bytes and their overlaps), is checked.
#[test]
fn every_guard_byte_is_checked() {
    for (len, align) in [(0usize, 8usize), (1, 8), (16, 8), (63, 64), (64, 8), (65, 16), (512, 8), (20, 4096)] {
        for side in 0..2 {
            for offset in 0..GUARD as u64 {
                let dma = SimDma::default();
                let before = dma.buffer(len, 1);
                let addr = dma.alloc(len, align).as_ptr() as u64;
                let after = dma.buffer(3, 2);
                let target = if side == 0 { addr - 1 - offset } else { addr + len as u64 + offset };
                dma.check_guards();
                write_bytes(target, &[GUARD_BYTE ^ 1]);
                let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dma.check_guards()));
                let text = caught.expect_err("an overwritten guard byte passed").downcast_ref::<std::string::String>().cloned();
                assert!(text.unwrap_or_default().contains(&std::format!("{target:#x}")), "{len} {align} {side} {offset}");
                assert!(before + len as u64 + GUARD as u64 <= addr && addr + (len + GUARD) as u64 <= after);
                // SAFETY: nothing uses the allocations.
                unsafe { dma.release() };
            }
        }
    }
}
