//! Simulated hardware for the host tests: DMA memory with guard regions, the device side of a
//! split virtqueue, a fake transport with a device status state machine, and a block device.

extern crate std;

use std::alloc::{alloc_zeroed, Layout};
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

/// Host memory standing in for DMA memory: leaked, aligned, `dma_addr == host address`, and
/// fenced by guard regions that [`SimDma::check_guards`] verifies.
#[derive(Default)]
pub struct SimDma {
    /// (start, size, align) of each allocation, guards excluded.
    allocations: RefCell<Vec<(usize, usize, usize)>>,
}

impl SimDma {
    /// A leaked, zeroed allocation with guards on both sides.
    pub fn alloc(&self, size: usize, align: usize) -> NonNull<u8> {
        let align = align.max(GUARD);
        let layout = Layout::from_size_align(size + 2 * GUARD, align).unwrap();
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { alloc_zeroed(layout) };
        assert!(!base.is_null());
        // SAFETY: `base` is valid for `size + 2 * GUARD` bytes, freshly allocated.
        let bytes = unsafe { std::slice::from_raw_parts_mut(base, size + 2 * GUARD) };
        bytes[..GUARD].fill(GUARD_BYTE);
        bytes[GUARD + size..].fill(GUARD_BYTE);
        let start = base as usize + GUARD;
        self.allocations.borrow_mut().push((start, size, align));
        NonNull::new(start as *mut u8).unwrap()
    }

    /// A data buffer of `len` bytes filled with `fill`; returns its (dma) address.
    pub fn buffer(&self, len: usize, fill: u8) -> u64 {
        let ptr = self.alloc(len, 8);
        // SAFETY: `ptr` is a fresh allocation of `len` bytes.
        unsafe { ptr.as_ptr().write_bytes(fill, len) };
        ptr.as_ptr() as u64
    }

    /// Frees every allocation (long fuzz runs would otherwise leak them all).
    ///
    /// # Safety
    ///
    /// Nothing may use the allocations any more: no queue or device model built on them.
    pub unsafe fn release(&self) {
        for (start, size, align) in self.allocations.borrow_mut().drain(..) {
            let layout = Layout::from_size_align(size + 2 * GUARD, align).unwrap();
            // SAFETY: allocated in `alloc` with this layout at `start - GUARD`; the caller
            // promises nothing uses it, and `drain` forgets it so it is freed once.
            unsafe { std::alloc::dealloc((start - GUARD) as *mut u8, layout) };
        }
    }

    /// Panics if any guard byte changed. Each guard is compared whole (one `memcmp`): the fuzz
    /// targets call this after every step, and a byte-by-byte loop under their comparison
    /// tracing took most of their time.
    pub fn check_guards(&self) {
        const INTACT: [u8; GUARD] = [GUARD_BYTE; GUARD];
        for &(start, size, _) in self.allocations.borrow().iter() {
            for guard in [start - GUARD, start + size] {
                // SAFETY: the guard bytes of a live (leaked) allocation.
                let bytes = unsafe { std::slice::from_raw_parts(guard as *const u8, GUARD) };
                if bytes != INTACT {
                    let at = bytes.iter().position(|&b| b != GUARD_BYTE).unwrap_or(0);
                    panic!("guard byte at {:#x} overwritten", guard + at);
                }
            }
        }
    }
}

// SAFETY: allocations are leaked (never freed or reused), zeroed, aligned as asked, and the
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
        let mut chain = SimChain { head, descs: Vec::new(), links: Vec::new(), indirect: None };
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
            let raw = read_bytes(table + 16 * u64::from(entry), 16);
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
