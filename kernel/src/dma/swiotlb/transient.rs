//! Transient pools: Linux 6.6 `CONFIG_SWIOTLB_DYNAMIC`'s answer to a mapping that finds every pool
//! full. `swiotlb_find_slots` then allocates a pool of just the needed size with `GFP_NOWAIT` (no
//! sleeping, no compaction, so in any context), uses it for that one mapping, and frees it at its
//! unmap (`swiotlb_del_transient`). A failure to allocate is the mapping's failure.
//!
//! Where we differ from Linux, and why:
//! - Linux `kmalloc`s an `io_tlb_pool` per transient pool and puts it on the device's RCU list.
//!   Interrupt handlers here never use the heap, so the records live in a fixed table
//!   ([`MAX_TRANSIENT_POOLS`]); a full table fails the mapping as an allocation failure would.
//!   Lookups walk the table up to its highest entry ever used, as Linux walks its list.
//! - The record keeps the one mapping's geometry (Linux keeps a whole slot array of one area): a
//!   transient pool serves exactly one mapping, in both kernels.

use core::ops::Range;
use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

use super::slots::SlotRequest;
use super::{DmaAttrs, DmaDirection, SlotAlignment, SwiotlbError, IO_TLB_SHIFT};
use crate::mm::page_alloc::{LockedPageAllocator, MigrateType, ZoneType, MAX_PAGE_ORDER};
use crate::mm::phys::PhysMemory;
use crate::mm::{PhysAddr, PAGE_SIZE};

/// Transient pools alive at once (Linux: unbounded).
pub const MAX_TRANSIENT_POOLS: usize = 64;

const FREE: u8 = 0;
/// Being set up or torn down by one caller: nobody else touches it.
const BUSY: u8 = 1;
const LIVE: u8 = 2;

/// One transient pool: pages from the page allocator holding one bounce buffer.
struct Entry {
    state: AtomicU8,
    /// The pages' first byte.
    start: AtomicU64,
    order: AtomicU8,
    tlb_addr: AtomicU64,
    orig_addr: AtomicU64,
    size: AtomicUsize,
    dir: AtomicU8,
}

impl Entry {
    const fn new() -> Self {
        Self {
            state: AtomicU8::new(FREE),
            start: AtomicU64::new(0),
            order: AtomicU8::new(0),
            tlb_addr: AtomicU64::new(0),
            orig_addr: AtomicU64::new(0),
            size: AtomicUsize::new(0),
            dir: AtomicU8::new(0),
        }
    }

    fn pages(&self) -> Range<PhysAddr> {
        let start = self.start.load(Ordering::Relaxed);
        start..start + (PAGE_SIZE << self.order.load(Ordering::Relaxed))
    }

    fn dir(&self) -> DmaDirection {
        DIRS[self.dir.load(Ordering::Relaxed) as usize]
    }
}

const DIRS: [DmaDirection; 3] = [DmaDirection::ToDevice, DmaDirection::FromDevice, DmaDirection::Bidirectional];

fn dir_index(dir: DmaDirection) -> u8 {
    DIRS.iter().position(|d| *d == dir).unwrap_or(2) as u8
}

/// Counters of the transient pools.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransientStats {
    /// Transient pools allocated (mappings served by one).
    pub allocated: u64,
    /// Of those, allocated in interrupt context.
    pub allocated_in_irq: u64,
    /// Mappings that missed every pool and got no transient pool either.
    pub failed: u64,
    /// Transient pools freed at unmap.
    pub freed: u64,
    /// Most transient pools alive at once.
    pub hiwater: u64,
}

/// The table of transient pools and where their pages come from.
pub struct TransientPools {
    /// Where the pages are filled and the bounce copies made.
    mem: &'static dyn PhysMemory,
    entries: [Entry; MAX_TRANSIENT_POOLS],
    /// One past the highest entry ever used: lookups walk this far.
    high: AtomicUsize,
    live: AtomicUsize,
    pages: spin::Once<&'static LockedPageAllocator>,
    allocated: AtomicU64,
    allocated_in_irq: AtomicU64,
    failed: AtomicU64,
    freed: AtomicU64,
    hiwater: AtomicU64,
}

impl TransientPools {
    /// An empty table with no page source: [`map`](Self::map) fails until
    /// [`enable`](Self::enable). `mem` reaches the pages and the original buffers.
    pub const fn new(mem: &'static dyn PhysMemory) -> Self {
        Self {
            mem,
            entries: [const { Entry::new() }; MAX_TRANSIENT_POOLS],
            high: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            pages: spin::Once::new(),
            allocated: AtomicU64::new(0),
            allocated_in_irq: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            freed: AtomicU64::new(0),
            hiwater: AtomicU64::new(0),
        }
    }

    /// Lets mappings allocate transient pools from `pages` (ZONE_DMA, unmovable, never waiting).
    pub fn enable(&self, pages: &'static LockedPageAllocator) {
        self.pages.call_once(|| pages);
    }

    /// Whether transient pools may be allocated.
    pub fn enabled(&self) -> bool {
        self.pages.get().is_some()
    }

    /// Transient pools alive now.
    #[inline]
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// The counters.
    pub fn stats(&self) -> TransientStats {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransientStats {
            allocated: l(&self.allocated),
            allocated_in_irq: l(&self.allocated_in_irq),
            failed: l(&self.failed),
            freed: l(&self.freed),
            hiwater: l(&self.hiwater),
        }
    }

    /// Bounces `size` bytes at `orig_addr` through a new transient pool (Linux: the
    /// `swiotlb_alloc_pool(dev, nslabs, nslabs, 1, phys_limit, GFP_NOWAIT)` branch of
    /// `swiotlb_find_slots`). Any context: the page allocator's lock is IRQ-safe and the
    /// allocation neither waits nor compacts. Same copy rules as a pool mapping: the original is
    /// copied in whatever `dir` says, and the rest of the pages is zeroed.
    ///
    /// # Safety
    ///
    /// As [`SwiotlbPool::map`](super::SwiotlbPool::map): the caller owns `[orig_addr, orig_addr
    /// + size)` until the matching unmap and does not touch it meanwhile.
    #[allow(unsafe_code)]
    pub unsafe fn map(&self, orig_addr: PhysAddr, size: usize, dir: DmaDirection, align: SlotAlignment) -> Result<PhysAddr, SwiotlbError> {
        let req = SlotRequest::new(orig_addr, size, align)?;
        let full = || SwiotlbError::BufferFull { size: req.alloc_size, total: 0, used: 0 };
        let Some(pages) = self.pages.get() else { return Err(full()) };
        let Some((index, entry)) = self.claim() else {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return Err(full());
        };
        let run_bytes = (req.nslots as u64) << IO_TLB_SHIFT;
        let placed = (0..=MAX_PAGE_ORDER).find_map(|order| {
            let block = PAGE_SIZE << order;
            let offset = req.run_offset_in_block(block)?;
            (offset + run_bytes <= block).then_some((order, offset))
        });
        let allocated = placed.and_then(|(order, offset)| {
            let start = pages.lock().alloc_pages(order, ZoneType::Dma, MigrateType::Unmovable).ok()?;
            Some((start, order, offset))
        });
        let Some((start, order, run_offset)) = allocated else {
            entry.state.store(FREE, Ordering::Release);
            self.failed.fetch_add(1, Ordering::Relaxed);
            return Err(full());
        };
        let head_addr = start + run_offset + ((req.pad_slots as u64) << IO_TLB_SHIFT);
        let tlb_addr = head_addr + req.offset as u64;
        let block_end = start + (PAGE_SIZE << order);
        // Whatever the pages' last owner left must not reach the device.
        let mem = self.mem;
        mem.fill(start, 0, (tlb_addr - start) as usize);
        mem.copy(tlb_addr, orig_addr, size);
        let end = tlb_addr + size as u64;
        mem.fill(end, 0, (block_end - end) as usize);
        entry.start.store(start, Ordering::Relaxed);
        entry.order.store(order, Ordering::Relaxed);
        entry.tlb_addr.store(tlb_addr, Ordering::Relaxed);
        entry.orig_addr.store(orig_addr, Ordering::Relaxed);
        entry.size.store(size, Ordering::Relaxed);
        entry.dir.store(dir_index(dir), Ordering::Relaxed);
        entry.state.store(LIVE, Ordering::Release);
        self.high.fetch_max(index + 1, Ordering::AcqRel);
        let live = self.live.fetch_add(1, Ordering::Relaxed) + 1;
        self.hiwater.fetch_max(live as u64, Ordering::Relaxed);
        self.allocated.fetch_add(1, Ordering::Relaxed);
        if crate::arch::in_interrupt() {
            self.allocated_in_irq.fetch_add(1, Ordering::Relaxed);
        }
        Ok(tlb_addr)
    }

    /// Whether `tlb_addr` lies in a live transient pool (its pages).
    pub fn contains(&self, tlb_addr: PhysAddr) -> bool {
        self.find(tlb_addr).is_some()
    }

    /// Whether `pa` is inside a live transient bounce buffer (Linux `is_swiotlb_buffer` finds the
    /// transient pool on the device's list).
    pub fn is_swiotlb_buffer(&self, pa: PhysAddr) -> bool {
        self.find(pa).is_some_and(|e| {
            let tlb = e.tlb_addr.load(Ordering::Relaxed);
            (tlb..tlb + e.size.load(Ordering::Relaxed) as u64).contains(&pa)
        })
    }

    /// Ends the mapping at `tlb_addr`: copies back for `FromDevice`/`Bidirectional` unless
    /// `attrs.skip_cpu_sync`, then frees the pages (Linux `swiotlb_del_transient` +
    /// `swiotlb_dyn_free`). All or nothing, with the pool mapping's checks.
    pub fn unmap(&self, tlb_addr: PhysAddr, size: usize, dir: DmaDirection, attrs: DmaAttrs) -> Result<(), SwiotlbError> {
        let entry = self.find(tlb_addr).ok_or(SwiotlbError::NotMapped { tlb_addr })?;
        // Exactly one unmap tears it down.
        if entry.state.compare_exchange(LIVE, BUSY, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return Err(SwiotlbError::NotMapped { tlb_addr });
        }
        let restore = |e: SwiotlbError| {
            entry.state.store(LIVE, Ordering::Release);
            Err(e)
        };
        if entry.tlb_addr.load(Ordering::Relaxed) != tlb_addr {
            return restore(SwiotlbError::NotMapped { tlb_addr });
        }
        if entry.dir() != dir {
            return restore(SwiotlbError::DirectionMismatch { mapped: entry.dir(), requested: dir });
        }
        let available = entry.size.load(Ordering::Relaxed);
        if size > available {
            return restore(SwiotlbError::Overflow { tlb_addr, size, available });
        }
        if !attrs.skip_cpu_sync && dir.from_device() {
            self.mem.copy(entry.orig_addr.load(Ordering::Relaxed), tlb_addr, size);
        }
        let pages = entry.pages();
        if let Some(allocator) = self.pages.get() {
            // Cannot fail: these pages came from `alloc_pages` with this order.
            let _ = allocator.lock().free_pages(pages.start, entry.order.load(Ordering::Relaxed));
        }
        entry.state.store(FREE, Ordering::Release);
        self.live.fetch_sub(1, Ordering::Relaxed);
        self.freed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Copies part of a transient mapping between the buffer and the original (Linux
    /// `swiotlb_bounce` on a transient pool): `to_device` copies the original in.
    pub fn sync(&self, tlb_addr: PhysAddr, size: usize, dir: DmaDirection, to_device: bool) -> Result<(), SwiotlbError> {
        let entry = self.find(tlb_addr).ok_or(SwiotlbError::NotMapped { tlb_addr })?;
        let (head, mapped) = (entry.tlb_addr.load(Ordering::Relaxed), entry.dir());
        if mapped != dir && mapped != DmaDirection::Bidirectional {
            return Err(SwiotlbError::DirectionMismatch { mapped, requested: dir });
        }
        let Some(position) = tlb_addr.checked_sub(head) else { return Err(SwiotlbError::AccessBeforeStart { tlb_addr }) };
        let available = (entry.size.load(Ordering::Relaxed) as u64).saturating_sub(position) as usize;
        if size > available {
            return Err(SwiotlbError::Overflow { tlb_addr, size, available });
        }
        let orig = entry.orig_addr.load(Ordering::Relaxed) + position;
        match (to_device, dir.to_device(), dir.from_device()) {
            (true, true, _) => self.mem.copy(tlb_addr, orig, size),
            (false, _, true) => self.mem.copy(orig, tlb_addr, size),
            _ => {}
        }
        Ok(())
    }

    /// Takes a free entry (lowest first, so the walked part of the table stays short).
    fn claim(&self) -> Option<(usize, &Entry)> {
        self.entries.iter().enumerate().find(|(_, e)| e.state.compare_exchange(FREE, BUSY, Ordering::Acquire, Ordering::Relaxed).is_ok())
    }

    /// The live entry whose pages hold `pa`.
    fn find(&self, pa: PhysAddr) -> Option<&Entry> {
        let high = self.high.load(Ordering::Acquire);
        self.entries[..high].iter().find(|e| e.state.load(Ordering::Acquire) == LIVE && e.pages().contains(&pa))
    }
}
