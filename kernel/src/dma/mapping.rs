//! The streaming DMA API (Linux: `kernel/dma/mapping.c` and `direct.c`): map, unmap and sync a
//! buffer or a scatter-gather list for a device, bouncing only when needed; and coherent
//! allocations.
//!
//! A mapping bounces when the device cannot reach the buffer (its `dma-ranges` limit), when it
//! must (a restricted pool, `swiotlb=force`), or when a non-coherent device would share a cache
//! line of the buffer with other data (Linux `dma_kmalloc_needs_bounce`). Otherwise the DMA
//! address is the physical address and, for a non-coherent device, the caches are maintained.
//!
//! A direct mapping of memory inside the default pool's range (a movable page the page allocator
//! placed in a lent MIGRATE_SWIOTLB pageblock) pins that page until the unmap
//! ([`LockedPageAllocator::pin_frames`]): reclaim must not migrate it and turn its frame into
//! bounce slots while the device writes to it. Pinning rather than refusing: the
//! page cache puts dirty pages in lent blocks, and their writeback maps them directly.
//!
//! Everything here may run in interrupt context except [`DmaApi::alloc_coherent`]: no
//! allocation, no waiting. A bounce that fails (pool full) returns an error the caller can handle
//! by deferring its request, and kicks the pool's worker through `on_pressure`.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use super::debug::{DmaDebug, DmaDebugError};
use super::device::{BouncePolicy, DmaDevice};
use super::swiotlb::mem::SwiotlbMem;
use super::swiotlb::{max_mapping_size as swiotlb_max_mapping_size, FoundPool, SlotLookup, SwiotlbError};
use super::{DmaAddr, DmaAttrs, DmaDirection, SlotAlignment};
use crate::arch::{self, CacheOp};
use crate::mm::page_alloc::{LockedPageAllocator, MigrateType, ZoneType};
use crate::mm::phys::PhysMemory;
use crate::mm::{PhysAddr, PAGE_SIZE};

/// Errors of the DMA API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DmaError {
    /// A zero-length mapping.
    ZeroSize,
    /// The bounce pool refused (full, below the IRQ reserve, too large, not a mapping, ...).
    Swiotlb(SwiotlbError),
    /// The bounce slot itself is beyond the device's reach (a pool placed above its limit).
    PoolUnreachable {
        /// The slot's address.
        tlb: PhysAddr,
        /// The highest address the device reaches.
        limit: PhysAddr,
    },
    /// The debug tracker found misuse; the operation was not done.
    Misuse(DmaDebugError),
    /// A coherent allocation for this device is not supported (why).
    Unsupported(&'static str),
    /// No memory for a coherent allocation.
    NoMemory,
}

impl fmt::Display for DmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DmaError::ZeroSize => write!(f, "DMA mapping of zero bytes"),
            DmaError::Swiotlb(e) => write!(f, "{e}"),
            DmaError::PoolUnreachable { tlb, limit } => write!(f, "bounce slot {tlb:#x} is above the device's DMA limit {limit:#x}"),
            DmaError::Misuse(e) => write!(f, "{e}"),
            DmaError::Unsupported(why) => write!(f, "unsupported: {why}"),
            DmaError::NoMemory => write!(f, "no memory for a coherent DMA allocation"),
        }
    }
}

impl From<SwiotlbError> for DmaError {
    fn from(e: SwiotlbError) -> Self {
        DmaError::Swiotlb(e)
    }
}

/// Counters of the DMA API (the pools keep their own).
#[derive(Default)]
pub struct DmaStats {
    /// Mappings made without bouncing.
    pub maps_direct: AtomicU64,
    /// Mappings bounced.
    pub maps_bounced: AtomicU64,
    /// Mappings made in interrupt context.
    pub maps_in_irq: AtomicU64,
    /// Bounces that failed.
    pub map_failures: AtomicU64,
    /// Bounces that failed in interrupt context (the caller defers those requests).
    pub irq_failures: AtomicU64,
    /// Misuse reports from the debug tracker.
    pub misuse: AtomicU64,
    /// Pages of lent pageblocks pinned by direct mappings (each for the mapping's life).
    pub direct_pins: AtomicU64,
}

impl fmt::Display for DmaStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        write!(
            f,
            "maps: {} direct, {} bounced, {} in IRQ context; failures: {} ({} in IRQ context); misuse reports: {}; lent pages pinned by direct maps: {}",
            g(&self.maps_direct),
            g(&self.maps_bounced),
            g(&self.maps_in_irq),
            g(&self.map_failures),
            g(&self.irq_failures),
            g(&self.misuse),
            g(&self.direct_pins)
        )
    }
}

/// One entry of a scatter-gather list (Linux `struct scatterlist`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScatterEntry {
    /// The buffer's physical address.
    pub addr: PhysAddr,
    /// Its length.
    pub len: usize,
    /// Filled by [`DmaApi::map_sg`]: where the device sees it.
    pub dma_addr: DmaAddr,
}

/// The DMA API over one set of pools.
pub struct DmaApi<'a> {
    /// For coherent allocations from the page allocator (the pools have their own).
    mem: &'a dyn PhysMemory,
    /// The default SWIOTLB (Linux `io_tlb_default_mem`).
    default_mem: &'a SwiotlbMem,
    debug: Option<&'a DmaDebug>,
    on_pressure: Option<fn()>,
    /// The page allocator that holds the default pool's lent pageblocks, to pin what a direct
    /// mapping covers there.
    pages: Option<&'a LockedPageAllocator>,
    /// A CMA area whose borrowed pages a direct mapping pins too (`cma_alloc` migrates them).
    cma_range: core::ops::Range<PhysAddr>,
    /// Counters.
    pub stats: DmaStats,
}

impl<'a> DmaApi<'a> {
    /// The API over the default SWIOTLB `default_mem`; `debug` enables DMA-API debugging
    /// (bootarg `dma_debug=on`); `on_pressure` is called (in any context) when a bounce fails, to
    /// kick the pool's worker.
    pub fn new(default_mem: &'a SwiotlbMem, debug: Option<&'a DmaDebug>, on_pressure: Option<fn()>) -> Self {
        let mem = default_mem.phys();
        Self { mem, default_mem, debug, on_pressure, pages: None, cma_range: 0..0, stats: DmaStats::default() }
    }

    /// Direct mappings of pages in the default pool's lent pageblocks (held by `pages`) pin them
    /// for the mapping's life.
    pub fn with_lent_page_pins(self, pages: &'a LockedPageAllocator) -> Self {
        Self { pages: Some(pages), ..self }
    }

    /// Direct mappings of pages borrowed from the CMA area `range` pin them too (with
    /// [`with_lent_page_pins`](Self::with_lent_page_pins)).
    pub fn with_cma_range(self, range: core::ops::Range<PhysAddr>) -> Self {
        Self { cma_range: range, ..self }
    }

    /// The page allocator to pin in, if `[addr, addr + size)` may hold lent or CMA pages: only
    /// the default pool's range is ever lent and only the CMA area is MIGRATE_CMA, so other
    /// direct mappings take no allocator lock.
    fn lent_pages(&self, addr: PhysAddr, size: usize) -> Option<&'a LockedPageAllocator> {
        let end = addr.saturating_add(size as u64);
        let overlaps = |r: core::ops::Range<PhysAddr>| addr < r.end && end > r.start;
        self.pages.filter(|_| overlaps(self.default_mem.default_pool().range()) || overlaps(self.cma_range.clone()))
    }

    /// The debug tracker, if debugging is on.
    pub fn debug(&self) -> Option<&'a DmaDebug> {
        self.debug
    }

    /// True if a mapping of `[addr, addr+size)` for `dev` must bounce (Linux: the checks of
    /// `dma_direct_map_page`).
    pub fn needs_bounce(&self, dev: &DmaDevice, addr: PhysAddr, size: usize) -> bool {
        match dev.policy {
            BouncePolicy::Restricted(_) | BouncePolicy::Forced => true,
            BouncePolicy::WhenNeeded => {
                let line = arch::dma_alignment() as u64;
                let shares_lines = !addr.is_multiple_of(line) || !(size as u64).is_multiple_of(line);
                !dev.dma_capable(addr, size) || (!dev.coherent && shares_lines)
            }
        }
    }

    /// The largest mapping `dev` may make in one piece (Linux `dma_max_mapping_size`).
    pub fn max_mapping_size(&self, dev: &DmaDevice) -> usize {
        let may_bounce = !matches!(dev.policy, BouncePolicy::WhenNeeded) || dev.dma_limit.is_some() || !dev.coherent;
        if may_bounce {
            swiotlb_max_mapping_size(dev.min_align_mask)
        } else {
            usize::MAX
        }
    }

    fn misuse(&self, e: DmaDebugError) -> DmaError {
        self.stats.misuse.fetch_add(1, Ordering::Relaxed);
        log::error!("{e}");
        DmaError::Misuse(e)
    }

    fn cache(&self, dev: &DmaDevice, op: CacheOp, addr: PhysAddr, size: usize) {
        if !dev.coherent {
            arch::dcache_range(op, addr, size);
        }
    }

    /// Maps `[addr, addr + size)` for `dev` (Linux `dma_map_single` / `dma_map_page`). The
    /// returned address is what the device must use; the buffer belongs to the device until
    /// [`unmap_single`](Self::unmap_single) (or a `sync_for_cpu`).
    ///
    /// # Safety
    ///
    /// The caller owns `[addr, addr + size)` until the matching unmap: the device (directly) or
    /// the unmap's copy-back (for a bounce) writes it. Meanwhile the caller does not touch it
    /// (for `FromDevice` and `Bidirectional` neither reads nor writes it; for `ToDevice` does not
    /// write it), and the memory stays allocated until the unmap. (virtio-drivers' `unsafe fn
    /// share` asks the same.)
    #[allow(unsafe_code)]
    pub unsafe fn map_single(&self, dev: &DmaDevice, addr: PhysAddr, size: usize, dir: DmaDirection, attrs: DmaAttrs) -> Result<DmaAddr, DmaError> {
        if size == 0 {
            return Err(DmaError::ZeroSize);
        }
        if arch::in_interrupt() {
            self.stats.maps_in_irq.fetch_add(1, Ordering::Relaxed);
        }
        let dma = if self.needs_bounce(dev, addr, size) {
            // SAFETY: the caller owns the buffer until the unmap (this function's contract).
            let tlb = unsafe { self.bounce(dev, addr, size, dir, attrs) }?;
            self.cache(dev, CacheOp::Clean, tlb, size); // the slot's new contents reach memory
            self.stats.maps_bounced.fetch_add(1, Ordering::Relaxed);
            tlb
        } else {
            if let Some(pages) = self.lent_pages(addr, size) {
                let pinned = pages.pin_frames(addr, size);
                self.stats.direct_pins.fetch_add(pinned as u64, Ordering::Relaxed);
            }
            if !attrs.skip_cpu_sync {
                self.cache(dev, CacheOp::Clean, addr, size);
            }
            self.stats.maps_direct.fetch_add(1, Ordering::Relaxed);
            addr
        };
        if let Some(debug) = self.debug {
            match debug.map(dev.id, dma, size, dir) {
                // A `Result` cannot be used without looking at it: the Rust API checks for you
                // what Linux's `dma_mapping_error()` asks drivers to check.
                Ok(()) => debug.mapping_error_checked(dev.id, dma),
                Err(e) => log::warn!("{e}"),
            }
        }
        Ok(dma)
    }

    /// Bounces through the device's SWIOTLB (Linux `swiotlb_map` with `dev->dma_io_tlb_mem`): its
    /// restricted pool, or its carved pool then the default SWIOTLB, which picks a pool and may
    /// grow.
    ///
    /// # Safety
    ///
    /// As [`map_single`](Self::map_single).
    #[allow(unsafe_code)]
    unsafe fn bounce(&self, dev: &DmaDevice, addr: PhysAddr, size: usize, dir: DmaDirection, attrs: DmaAttrs) -> Result<PhysAddr, DmaError> {
        let align = SlotAlignment::min_align(dev.min_align_mask);
        // SAFETY: the caller owns the buffer until the unmap (this function's contract, handed
        // on unchanged to whichever pool maps it, here and below).
        let to_default = || unsafe { self.default_mem.map_attrs(addr, size, dir, align, attrs) };
        let result = match dev.policy {
            // SAFETY: as above.
            BouncePolicy::Restricted(pool) => unsafe { pool.map_attrs(addr, size, dir, align, attrs) },
            _ => match dev.device_pool() {
                // SAFETY: as above.
                Some(slot) => unsafe { slot.map_attrs(addr, size, dir, align, attrs) }.or_else(|_| to_default()),
                None => to_default(),
            },
        };
        let tlb = result.inspect_err(|_| {
            self.stats.map_failures.fetch_add(1, Ordering::Relaxed);
            if arch::in_interrupt() {
                self.stats.irq_failures.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(kick) = self.on_pressure {
                kick();
            }
        })?;
        if let Some(limit) = dev.dma_limit.filter(|_| !dev.dma_capable(tlb, size)) {
            // A pool above the device's limit is a configuration error: undo, report.
            if let SlotLookup::Live(pool) = self.lookup(dev, tlb) {
                let _ = pool.unmap(tlb, size, dir, DmaAttrs { skip_cpu_sync: true, no_copy_in: false });
            }
            return Err(DmaError::PoolUnreachable { tlb, limit });
        }
        Ok(tlb)
    }

    /// Which of `dev`'s pools holds `dma`, in one look at each (Linux `swiotlb_find_pool(dev,
    /// paddr)`): its restricted pool; or its carved pool, then the default SWIOTLB. The first
    /// live slot answers; a free slot in one of them answers `Free` if no other has it live.
    fn lookup(&self, dev: &DmaDevice, dma: DmaAddr) -> SlotLookup<'a> {
        match dev.policy {
            BouncePolicy::Restricted(pool) => pool.lookup(dma),
            _ => match dev.device_pool().map(|slot| slot.find_pool(dma)) {
                Some(live @ SlotLookup::Live(_)) => live,
                Some(SlotLookup::Free) => match self.default_mem.find_pool(dma) {
                    live @ SlotLookup::Live(_) => live,
                    _ => SlotLookup::Free,
                },
                Some(SlotLookup::Outside) | None => self.default_mem.find_pool(dma),
            },
        }
    }

    /// [`lookup`](Self::lookup) for the unmap and sync paths: `Ok(Some(pool))` for a live bounce
    /// slot; `Ok(None)` for memory no pool holds (a direct mapping); and for a *free* slot of one
    /// of its pools an error, counted with the misuse reports: a second unmap or a stale address,
    /// which would otherwise look like a direct mapping and succeed. Checked whether or not
    /// `dma_debug` is on (which catches it earlier, and more: once the slot is lent again or was
    /// a freed transient pool, only the debug tracker knows).
    fn find_pool(&self, dev: &DmaDevice, dma: DmaAddr) -> Result<Option<FoundPool<'a>>, DmaError> {
        match self.lookup(dev, dma) {
            SlotLookup::Live(pool) => Ok(Some(pool)),
            SlotLookup::Free => {
                self.stats.misuse.fetch_add(1, Ordering::Relaxed);
                Err(DmaError::Swiotlb(SwiotlbError::NotMapped { tlb_addr: dma }))
            }
            SlotLookup::Outside => Ok(None),
        }
    }

    /// True if `dma` is a live bounce slot of one of `dev`'s pools: the O(1) check on every
    /// unmap and sync. A lent page inside a pool's range, mapped directly, is not.
    pub fn is_swiotlb_buffer(&self, dev: &DmaDevice, dma: DmaAddr) -> bool {
        match dev.policy {
            BouncePolicy::Restricted(pool) => pool.is_swiotlb_buffer(dma),
            _ => dev.device_pool().is_some_and(|slot| slot.is_swiotlb_buffer(dma)) || self.default_mem.is_swiotlb_buffer(dma),
        }
    }

    /// Ends a mapping (Linux `dma_unmap_single`): for a bounce, copies back what the device
    /// wrote (unless `skip_cpu_sync`) and frees the slots.
    pub fn unmap_single(&self, dev: &DmaDevice, dma: DmaAddr, size: usize, dir: DmaDirection, attrs: DmaAttrs) -> Result<(), DmaError> {
        if let Some(debug) = self.debug {
            debug.unmap(dev.id, dma, size, dir).map_err(|e| self.misuse(e))?;
        }
        match self.find_pool(dev, dma)? {
            Some(pool) => {
                if dir.from_device() {
                    self.cache(dev, CacheOp::Invalidate, dma, size);
                }
                pool.unmap(dma, size, dir, attrs)?;
            }
            None => {
                if dir.from_device() && !attrs.skip_cpu_sync {
                    self.cache(dev, CacheOp::Invalidate, dma, size);
                }
                // The device is done with the pages: reclaim may move them again.
                if let Some(pages) = self.lent_pages(dma, size) {
                    pages.unpin_frames(dma, size);
                }
            }
        }
        Ok(())
    }

    /// Gives the CPU a (part of a) mapping the device wrote (Linux `dma_sync_single_for_cpu`).
    pub fn sync_single_for_cpu(&self, dev: &DmaDevice, dma: DmaAddr, size: usize, dir: DmaDirection) -> Result<(), DmaError> {
        if let Some(debug) = self.debug {
            debug.sync(dev.id, dma, size, dir).map_err(|e| self.misuse(e))?;
        }
        let pool = self.find_pool(dev, dma)?;
        if dir.from_device() {
            self.cache(dev, CacheOp::Invalidate, dma, size);
        }
        if let Some(pool) = pool {
            pool.sync_for_cpu(dma, size, dir)?;
        }
        Ok(())
    }

    /// Gives the device (a part of) a mapping the CPU wrote (Linux `dma_sync_single_for_device`).
    pub fn sync_single_for_device(&self, dev: &DmaDevice, dma: DmaAddr, size: usize, dir: DmaDirection) -> Result<(), DmaError> {
        if let Some(debug) = self.debug {
            debug.sync(dev.id, dma, size, dir).map_err(|e| self.misuse(e))?;
        }
        if let Some(pool) = self.find_pool(dev, dma)? {
            pool.sync_for_device(dma, size, dir)?;
        }
        self.cache(dev, CacheOp::Clean, dma, size);
        Ok(())
    }

    /// Maps every entry of `sg` (Linux `dma_map_sg`), all or nothing: on failure the entries
    /// mapped so far are unmapped and the error returned.
    ///
    /// # Safety
    ///
    /// As [`map_single`](Self::map_single), for every entry's `[addr, addr + len)`, until the
    /// matching [`unmap_sg`](Self::unmap_sg).
    #[allow(unsafe_code)]
    pub unsafe fn map_sg(&self, dev: &DmaDevice, sg: &mut [ScatterEntry], dir: DmaDirection, attrs: DmaAttrs) -> Result<(), DmaError> {
        for i in 0..sg.len() {
            // SAFETY: the caller owns every entry's buffer until the unmap (this function's contract).
            match unsafe { self.map_single(dev, sg[i].addr, sg[i].len, dir, attrs) } {
                Ok(dma) => sg[i].dma_addr = dma,
                Err(e) => {
                    let _ = self.unmap_sg(dev, &sg[..i], dir, DmaAttrs { skip_cpu_sync: true, no_copy_in: false });
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Unmaps every entry of `sg` (Linux `dma_unmap_sg`); returns the first error after trying all.
    pub fn unmap_sg(&self, dev: &DmaDevice, sg: &[ScatterEntry], dir: DmaDirection, attrs: DmaAttrs) -> Result<(), DmaError> {
        let mut first = Ok(());
        for e in sg {
            let r = self.unmap_single(dev, e.dma_addr, e.len, dir, attrs);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// Allocates zeroed DMA-coherent memory of `size` bytes for `dev` (Linux `dma_alloc_coherent`):
    /// whole unmovable pages in ZONE_DMA if the device is limited. Task context only.
    ///
    /// A device behind a restricted pool gets it from the pool's slots (Linux `swiotlb_alloc`):
    /// nothing of its DMA may live outside the pool. Not supported (an error, not a silent wrong
    /// answer): non-coherent devices, which would need a non-cacheable mapping.
    pub fn alloc_coherent(&self, dev: &DmaDevice, pages: &LockedPageAllocator, size: usize) -> Result<(PhysAddr, DmaAddr), DmaError> {
        assert!(!arch::in_interrupt(), "dma_alloc_coherent may not be called in interrupt context");
        if size == 0 {
            return Err(DmaError::ZeroSize);
        }
        if !dev.coherent {
            return Err(DmaError::Unsupported("coherent memory for a non-coherent device needs a non-cacheable mapping"));
        }
        if let BouncePolicy::Restricted(pool) = dev.policy {
            let addr = pool.alloc_coherent(size)?;
            return Ok((addr, addr));
        }
        let order = (size as u64).div_ceil(PAGE_SIZE).next_power_of_two().trailing_zeros() as u8;
        let zone = if dev.dma_limit.is_some() { ZoneType::Dma } else { ZoneType::Normal };
        let addr = pages.lock().alloc_pages(order, zone, MigrateType::Unmovable).map_err(|_| DmaError::NoMemory)?;
        let len = (PAGE_SIZE as usize) << order;
        if !dev.dma_capable(addr, len) {
            let _ = pages.lock().free_pages(addr, order);
            return Err(DmaError::PoolUnreachable { tlb: addr, limit: dev.dma_limit.unwrap_or(0) });
        }
        self.mem.fill(addr, 0, len);
        Ok((addr, addr))
    }

    /// Frees memory from [`alloc_coherent`](Self::alloc_coherent) with the same device and size.
    pub fn free_coherent(&self, dev: &DmaDevice, pages: &LockedPageAllocator, addr: PhysAddr, size: usize) -> Result<(), DmaError> {
        if let BouncePolicy::Restricted(pool) = dev.policy {
            return pool.free_coherent(addr).map_err(DmaError::Swiotlb);
        }
        let order = (size as u64).div_ceil(PAGE_SIZE).next_power_of_two().trailing_zeros() as u8;
        pages.lock().free_pages(addr, order).map_err(|_| DmaError::Unsupported("free of memory not from alloc_coherent"))
    }
}

#[cfg(test)]
// The page allocator takes a list of free ranges; these tests give it one.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use crate::dma::sim_maps::SimApiMaps;
    use crate::arch::host::{take_cache_ops, IrqContextGuard};
    use crate::dma::pools::DevicePoolSlot;
    use crate::dma::swiotlb::mem::DevicePool;
    use crate::dma::swiotlb::SwiotlbPool;
    use crate::mm::phys::SimMemory;
    use std::boxed::Box;
    use std::sync::atomic::AtomicUsize;

    const RAM: PhysAddr = 0x4000_0000;
    const POOL: PhysAddr = 0x4080_0000; // 2 MiB of slots, below the device limit
    const LIMIT: PhysAddr = 0x40ff_ffff; // the device reaches the first 16 MiB
    const HIGH: PhysAddr = 0x4100_0000; // a buffer beyond the limit

    struct Setup {
        mem: &'static SimMemory,
        /// A `static` SWIOTLB of one pool, `pool`.
        swiotlb: &'static SwiotlbMem,
        pool: &'static SwiotlbPool,
    }

    fn setup() -> Setup {
        let mem: &'static SimMemory = Box::leak(Box::new(SimMemory::new(RAM, 32 << 20)));
        let swiotlb: &'static SwiotlbMem = Box::leak(Box::new(SwiotlbMem::static_for_test(POOL, 1024, 1, mem)));
        take_cache_ops();
        Setup { mem, swiotlb, pool: swiotlb.default_pool() }
    }

    fn dev(policy: BouncePolicy, coherent: bool) -> DmaDevice {
        DmaDevice::new(1, "disk0", Some(LIMIT), coherent, policy)
    }

    const TO: DmaDirection = DmaDirection::ToDevice;
    const FROM: DmaDirection = DmaDirection::FromDevice;
    const NOATTR: DmaAttrs = DmaAttrs { skip_cpu_sync: false, no_copy_in: false };

    #[test]
    fn reachable_buffers_of_a_coherent_device_are_not_bounced() {
        let s = setup();
        let api = DmaApi::new(s.swiotlb, None, None);
        let d = dev(BouncePolicy::WhenNeeded, true);
        let dma = api.sim_map_single(&d, RAM + 0x1000, 4096, TO, NOATTR).unwrap();
        assert_eq!(dma, RAM + 0x1000);
        assert!(!api.is_swiotlb_buffer(&d, dma));
        api.unmap_single(&d, dma, 4096, TO, NOATTR).unwrap();
        assert_eq!(s.pool.used_slots(), 0);
        assert_eq!(api.stats.maps_direct.load(Ordering::Relaxed), 1);
        assert!(take_cache_ops().is_empty(), "a coherent device needs no cache maintenance");
    }

    #[test]
    fn buffers_beyond_the_limit_bounce_and_come_back() {
        let s = setup();
        let api = DmaApi::new(s.swiotlb, None, None);
        let d = dev(BouncePolicy::WhenNeeded, true);
        s.mem.write(HIGH, &[7u8; 3000]);
        let dma = api.sim_map_single(&d, HIGH, 3000, DmaDirection::Bidirectional, NOATTR).unwrap();
        assert!((POOL..POOL + (2 << 20)).contains(&dma) && d.dma_capable(dma, 3000));
        assert!(api.is_swiotlb_buffer(&d, dma));
        let mut seen = [0u8; 3000];
        s.mem.read(dma, &mut seen);
        assert_eq!(seen, [7u8; 3000], "copy-in on map");
        s.mem.write(dma, &[9u8; 3000]); // the device writes
        api.unmap_single(&d, dma, 3000, DmaDirection::Bidirectional, NOATTR).unwrap();
        s.mem.read(HIGH, &mut seen);
        assert_eq!(seen, [9u8; 3000], "copy-back on unmap");
        assert!(!api.is_swiotlb_buffer(&d, dma));
        assert_eq!(s.pool.used_slots(), 0);
    }

    /// A second unmap of a bounce, or a sync after the unmap, is refused and counted with
    /// `dma_debug` off: the slot is free, so it is no direct mapping either.
    #[test]
    fn unmap_or_sync_of_a_free_slot_is_refused_without_debug() {
        let s = setup();
        let api = DmaApi::new(s.swiotlb, None, None);
        let d = dev(BouncePolicy::WhenNeeded, true);
        let dma = api.sim_map_single(&d, HIGH, 3000, DmaDirection::Bidirectional, NOATTR).unwrap();
        api.unmap_single(&d, dma, 3000, DmaDirection::Bidirectional, NOATTR).unwrap();
        let refused = Err(DmaError::Swiotlb(SwiotlbError::NotMapped { tlb_addr: dma }));
        assert_eq!(api.unmap_single(&d, dma, 3000, DmaDirection::Bidirectional, NOATTR), refused);
        assert_eq!(api.sync_single_for_cpu(&d, dma, 3000, FROM), refused);
        assert_eq!(api.sync_single_for_device(&d, dma, 3000, TO), refused);
        assert_eq!(api.stats.misuse.load(Ordering::Relaxed), 3);
        assert_eq!(s.pool.used_slots(), 0);
        // A direct mapping beside the pool is still served.
        let direct = api.sim_map_single(&d, RAM + 0x1000, 4096, TO, NOATTR).unwrap();
        api.unmap_single(&d, direct, 4096, TO, NOATTR).unwrap();
        assert_eq!(api.stats.misuse.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn non_coherent_devices_get_cache_maintenance_and_bounce_shared_lines() {
        let s = setup();
        let api = DmaApi::new(s.swiotlb, None, None);
        let d = dev(BouncePolicy::WhenNeeded, false);
        // Cache-line aligned: direct, clean on map, invalidate on unmap.
        let dma = api.sim_map_single(&d, RAM + 0x2000, 256, FROM, NOATTR).unwrap();
        assert_eq!(dma, RAM + 0x2000);
        api.unmap_single(&d, dma, 256, FROM, NOATTR).unwrap();
        assert_eq!(take_cache_ops(), [(CacheOp::Clean, RAM + 0x2000, 256), (CacheOp::Invalidate, RAM + 0x2000, 256)]);
        // Sharing a cache line with other data: bounced, and the slot maintained instead.
        let dma = api.sim_map_single(&d, RAM + 0x2010, 100, FROM, NOATTR).unwrap();
        assert!(api.is_swiotlb_buffer(&d, dma));
        api.unmap_single(&d, dma, 100, FROM, NOATTR).unwrap();
        assert_eq!(take_cache_ops(), [(CacheOp::Clean, dma, 100), (CacheOp::Invalidate, dma, 100)]);
    }

    #[test]
    fn forced_and_restricted_devices_always_bounce_restricted_never_falls_back() {
        let s = setup();
        let api = DmaApi::new(s.swiotlb, None, None);
        let forced = dev(BouncePolicy::Forced, true);
        let dma = api.sim_map_single(&forced, RAM, 512, TO, NOATTR).unwrap();
        assert!(api.is_swiotlb_buffer(&forced, dma));
        api.unmap_single(&forced, dma, 512, TO, NOATTR).unwrap();

        let restricted_pool: &'static SwiotlbPool = Box::leak(Box::new(SwiotlbPool::new(0x40c0_0000, 128, 1, s.mem).unwrap()));
        let r = dev(BouncePolicy::Restricted(restricted_pool), true);
        let mut maps = Vec::new();
        loop {
            match api.sim_map_single(&r, RAM, 64 * 1024, TO, NOATTR) {
                Ok(dma) => {
                    assert!((0x40c0_0000..0x40c0_0000 + 128 * 2048).contains(&dma), "outside the restricted pool");
                    maps.push(dma);
                }
                Err(e) => {
                    assert!(matches!(e, DmaError::Swiotlb(SwiotlbError::BufferFull { .. })), "{e}");
                    break;
                }
            }
        }
        assert_eq!(maps.len(), 4, "128 slots hold four 64 KiB mappings");
        assert_eq!(s.pool.used_slots(), 0, "no fallback to the default pool");
        for dma in maps {
            api.unmap_single(&r, dma, 64 * 1024, TO, NOATTR).unwrap();
        }
    }

    #[test]
    fn the_device_pool_is_tried_first_then_the_default_pool() {
        let s = setup();
        let api = DmaApi::new(s.swiotlb, None, None);
        let d = dev(BouncePolicy::WhenNeeded, true);
        let own: &'static DevicePoolSlot = Box::leak(Box::new(DevicePoolSlot::new()));
        assert!(own.attach(DevicePool::for_test(SwiotlbPool::new(0x40c0_0000, 128, 1, s.mem).unwrap())).is_ok());
        assert!(d.set_device_pool(Some(own)).is_none());
        let a = api.sim_map_single(&d, HIGH, 200 * 1024, TO, NOATTR).unwrap();
        assert!(own.is_swiotlb_buffer(a));
        let b = api.sim_map_single(&d, HIGH, 200 * 1024, TO, NOATTR).unwrap();
        assert!(s.pool.is_swiotlb_buffer(b), "the device pool is full: the default pool serves");
        api.unmap_single(&d, a, 200 * 1024, TO, NOATTR).unwrap();
        api.unmap_single(&d, b, 200 * 1024, TO, NOATTR).unwrap();
        assert_eq!(s.pool.used_slots(), 0);
        assert!(own.detach().is_ok_and(|p| p.is_some_and(|p| p.pool().used_slots() == 0)), "the device pool is empty");
    }

    static KICKS: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn a_failed_bounce_in_irq_context_is_counted_and_kicks_the_worker() {
        let s = setup();
        let api = DmaApi::new(s.swiotlb, None, Some(|| {
            KICKS.fetch_add(1, Ordering::SeqCst);
        }));
        let d = dev(BouncePolicy::WhenNeeded, true);
        let mut live = Vec::new();
        let _irq = IrqContextGuard::enter();
        let err = loop {
            match api.sim_map_single(&d, HIGH, 256 * 1024, TO, NOATTR) {
                Ok(dma) => live.push(dma),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, DmaError::Swiotlb(SwiotlbError::BufferFull { .. })), "{err}");
        assert_eq!(live.len(), 8);
        assert_eq!(api.stats.irq_failures.load(Ordering::Relaxed), 1);
        assert_eq!(api.stats.maps_in_irq.load(Ordering::Relaxed), 9);
        assert_eq!(KICKS.load(Ordering::SeqCst), 1);
        assert!(matches!(api.sim_map_single(&d, RAM, 0, TO, NOATTR), Err(DmaError::ZeroSize)));
        for dma in live {
            api.unmap_single(&d, dma, 256 * 1024, TO, NOATTR).unwrap();
        }
    }

    #[test]
    fn debug_mode_refuses_misuse_without_touching_the_pool() {
        let s = setup();
        let debug: &'static DmaDebug = Box::leak(Box::new(DmaDebug::new()));
        let api = DmaApi::new(s.swiotlb, Some(debug), None);
        let d = dev(BouncePolicy::WhenNeeded, true);
        let dma = api.sim_map_single(&d, HIGH, 4096, FROM, NOATTR).unwrap();
        assert!(matches!(api.sync_single_for_cpu(&d, dma + 4000, 200, FROM), Err(DmaError::Misuse(DmaDebugError::SyncOutOfRange { .. }))));
        assert!(matches!(api.sync_single_for_device(&d, dma, 16, TO), Err(DmaError::Misuse(DmaDebugError::SyncWrongDirection { .. }))));
        api.sync_single_for_cpu(&d, dma, 16, FROM).unwrap();
        api.unmap_single(&d, dma, 4096, FROM, NOATTR).unwrap();
        assert!(matches!(api.unmap_single(&d, dma, 4096, FROM, NOATTR), Err(DmaError::Misuse(DmaDebugError::DoubleUnmap { .. }))));
        assert!(matches!(api.unmap_single(&d, 0x4123_0000, 64, FROM, NOATTR), Err(DmaError::Misuse(DmaDebugError::UnmapUnknown { .. }))));
        assert_eq!(api.stats.misuse.load(Ordering::Relaxed), 4);
        assert_eq!(debug.live(), 0);
        assert_eq!(s.pool.used_slots(), 0);
    }

    #[test]
    fn map_sg_is_all_or_nothing() {
        let s = setup();
        let api = DmaApi::new(s.swiotlb, None, None);
        let d = dev(BouncePolicy::WhenNeeded, true);
        let mut sg: Vec<ScatterEntry> = (0..10).map(|i| ScatterEntry { addr: HIGH + i * 0x40000, len: 240 * 1024, dma_addr: 0 }).collect();
        let err = api.sim_map_sg(&d, &mut sg, TO, NOATTR).unwrap_err();
        assert!(matches!(err, DmaError::Swiotlb(SwiotlbError::BufferFull { .. })));
        assert_eq!(s.pool.used_slots(), 0, "the entries mapped before the failure were unmapped");
        sg.truncate(4);
        api.sim_map_sg(&d, &mut sg, TO, NOATTR).unwrap();
        assert!(sg.iter().all(|e| api.is_swiotlb_buffer(&d, e.dma_addr)));
        api.unmap_sg(&d, &sg, TO, NOATTR).unwrap();
        assert_eq!(s.pool.used_slots(), 0);
    }

    #[test]
    fn a_lent_page_in_the_pool_range_mapped_directly_is_not_a_bounce_buffer() {
        let s = setup();
        s.pool.lend(0..1024).unwrap(); // the whole pool lent to the page allocator
        let api = DmaApi::new(s.swiotlb, None, None);
        let d = dev(BouncePolicy::WhenNeeded, true);
        // A movable page the page allocator placed in the lent range, DMA-mapped directly.
        let page = POOL + 0x3000;
        s.mem.write(page, &[1u8; 4096]);
        let dma = api.sim_map_single(&d, page, 4096, FROM, NOATTR).unwrap();
        assert_eq!(dma, page);
        assert!(!api.is_swiotlb_buffer(&d, dma));
        s.mem.write(dma, &[2u8; 4096]);
        api.unmap_single(&d, dma, 4096, FROM, NOATTR).unwrap();
        let mut buf = [0u8; 4096];
        s.mem.read(page, &mut buf);
        assert_eq!(buf, [2u8; 4096]);
    }

    /// Allocates movable pages in ZONE_DMA until one lands in `range` (they fill MOVABLE blocks
    /// first, then borrow lent or CMA ones): that page, and the others, still allocated.
    fn first_movable_page_in(
        pages: &LockedPageAllocator,
        range: &core::ops::Range<PhysAddr>,
    ) -> (crate::mm::page_alloc::MovablePage, Vec<crate::mm::page_alloc::MovablePage>) {
        use crate::mm::page_alloc::{OwnerKind, PageOwner};
        let owner = PageOwner { kind: OwnerKind::Dirty, cookie: 0 };
        let mut others = Vec::new();
        loop {
            let p = pages.lock().alloc_movable(0, ZoneType::Dma, owner).unwrap();
            if range.contains(&pages.lock().movable_info(p).unwrap().addr) {
                return (p, others);
            }
            others.push(p);
        }
    }

    /// Regression: a movable page of a lent pageblock, mapped directly, is pinned until the
    /// unmap: reclaim reports its block busy and does not move it; after the unmap it does.
    #[test]
    fn a_direct_mapping_pins_a_page_of_a_lent_block_until_unmap() {
        use crate::mm::page_alloc::{PageAllocator, ReclaimError, ReclaimMode};
        let s = setup();
        s.pool.lend(0..1024).unwrap(); // the whole pool lent to the page allocator
        let lent = POOL..POOL + (2 << 20);
        let pages = LockedPageAllocator::new(PageAllocator::new(RAM..RAM + (32 << 20), &[RAM + (12 << 20)..RAM + (32 << 20)], Some(LIMIT + 1)).unwrap());
        pages.lock().lend_swiotlb_pageblocks(lent.clone()).unwrap();
        let api = DmaApi::new(s.swiotlb, None, None).with_lent_page_pins(&pages);
        let d = dev(BouncePolicy::WhenNeeded, true);
        // Movable pages fill ZONE_DMA's movable blocks, then spill into the lent one.
        let addr_of = |p| pages.lock().movable_info(p).unwrap().addr;
        let (page, others) = first_movable_page_in(&pages, &lent);
        // A page outside the lent block, mapped directly, is not pinned.
        let outside = others[0];
        let dma = api.sim_map_single(&d, addr_of(outside), 4096, FROM, NOATTR).unwrap();
        assert_eq!(pages.lock().movable_info(outside).unwrap().pins, 0);
        api.unmap_single(&d, dma, 4096, FROM, NOATTR).unwrap();
        others.into_iter().for_each(|p| pages.lock().free_movable(p).unwrap()); // migration targets

        let addr = addr_of(page);
        let dma = api.sim_map_single(&d, addr, 4096, FROM, NOATTR).unwrap();
        assert_eq!(dma, addr, "mapped directly");
        assert_eq!(pages.lock().movable_info(page).unwrap().pins, 1);
        assert_eq!(api.stats.direct_pins.load(Ordering::Relaxed), 1);
        s.mem.write(dma, &[6u8; 4096]); // the device writes
        let reclaim = || pages.reclaim_swiotlb_pageblocks(lent.clone(), s.mem, ReclaimMode { drop_clean: true }, &mut |_| {});
        match reclaim() {
            Err(ReclaimError::Busy(report)) => assert_eq!(report.pinned, [page]),
            other => panic!("reclaim took the block of a page mapped for DMA: {other:?}"),
        }
        assert_eq!(addr_of(page), addr, "not moved during DMA");
        api.unmap_single(&d, dma, 4096, FROM, NOATTR).unwrap();
        assert_eq!(pages.lock().movable_info(page).unwrap().pins, 0, "unpinned by the unmap");
        reclaim().unwrap();
        assert!(!lent.contains(&addr_of(page)), "migrated out once unmapped");
        let mut buf = [0u8; 4096];
        s.mem.read(addr_of(page), &mut buf);
        assert_eq!(buf, [6u8; 4096], "what the device wrote moved with the page");
    }

    /// The same for a movable page borrowed from a CMA area: `cma_alloc` must not migrate it
    /// while a device writes to it.
    #[test]
    fn a_direct_mapping_pins_a_page_borrowed_from_the_cma_area_until_unmap() {
        use crate::mm::cma::{CmaArea, CmaError};
        use crate::mm::page_alloc::{PageAllocator, ReclaimMode};
        let s = setup();
        let area_range = RAM + (10 << 20)..RAM + (12 << 20);
        let pages = LockedPageAllocator::new(PageAllocator::new(RAM..RAM + (32 << 20), &[RAM + (12 << 20)..RAM + (32 << 20)], Some(LIMIT + 1)).unwrap());
        let area = CmaArea::activate("test", &pages, area_range.clone()).unwrap();
        let api = DmaApi::new(s.swiotlb, None, None).with_lent_page_pins(&pages).with_cma_range(area_range.clone());
        let d = dev(BouncePolicy::WhenNeeded, true);
        let addr_of = |p| pages.lock().movable_info(p).unwrap().addr;
        let (page, others) = first_movable_page_in(&pages, &area_range);
        others.into_iter().for_each(|p| pages.lock().free_movable(p).unwrap()); // migration targets
        let addr = addr_of(page);
        let dma = api.sim_map_single(&d, addr, 4096, FROM, NOATTR).unwrap();
        assert_eq!((dma, pages.lock().movable_info(page).unwrap().pins), (addr, 1), "mapped directly and pinned");
        s.mem.write(dma, &[9u8; 4096]);
        let alloc = || area.cma_alloc(&pages, s.mem, 1, ReclaimMode { drop_clean: true }, &mut |_| {});
        assert!(matches!(alloc(), Err(CmaError::Busy { .. })), "cma_alloc took the block of a page mapped for DMA");
        assert_eq!(addr_of(page), addr, "not moved during DMA");
        api.unmap_single(&d, dma, 4096, FROM, NOATTR).unwrap();
        assert_eq!(pages.lock().movable_info(page).unwrap().pins, 0, "unpinned by the unmap");
        alloc().unwrap();
        let mut buf = [0u8; 4096];
        s.mem.read(addr_of(page), &mut buf);
        assert_eq!(buf, [9u8; 4096], "what the device wrote moved with the page");
    }

    #[test]
    fn coherent_memory_of_a_restricted_device_comes_from_its_pool() {
        let s = setup();
        let api = DmaApi::new(s.swiotlb, None, None);
        let restricted_pool: &'static SwiotlbPool = Box::leak(Box::new(SwiotlbPool::new(0x40c0_0000, 128, 1, s.mem).unwrap()));
        let r = dev(BouncePolicy::Restricted(restricted_pool), true);
        let pages = crate::mm::page_alloc::LockedPageAllocator::new(
            crate::mm::page_alloc::PageAllocator::new(RAM..RAM + (32 << 20), &[RAM + (12 << 20)..RAM + (32 << 20)], Some(LIMIT + 1)).unwrap(),
        );
        s.mem.fill(0x40c0_0000, 0xee, 128 * 2048);
        let (cpu, dma) = api.alloc_coherent(&r, &pages, 5000).unwrap();
        assert_eq!(cpu, dma);
        assert!((0x40c0_0000..0x40c4_0000).contains(&cpu) && cpu % 4096 == 0);
        let mut buf = vec![1u8; 5000];
        s.mem.read(cpu, &mut buf);
        assert!(buf.iter().all(|&b| b == 0), "coherent memory is zeroed");
        assert_eq!(restricted_pool.used_slots(), 4, "two whole pages of slots");
        api.free_coherent(&r, &pages, cpu, 5000).unwrap();
        assert_eq!(restricted_pool.used_slots(), 0);
        assert!(api.free_coherent(&r, &pages, cpu, 5000).is_err(), "double free refused");
        // Other devices get pages.
        let d = dev(BouncePolicy::WhenNeeded, true);
        let (cpu, _) = api.alloc_coherent(&d, &pages, 5000).unwrap();
        assert!(cpu >= RAM + (12 << 20) && d.dma_capable(cpu, 8192), "from ZONE_DMA: {cpu:#x}");
        api.free_coherent(&d, &pages, cpu, 5000).unwrap();
    }

    #[test]
    fn max_mapping_size_follows_the_bounce_limit() {
        let s = setup();
        let api = DmaApi::new(s.swiotlb, None, None);
        assert_eq!(api.max_mapping_size(&dev(BouncePolicy::WhenNeeded, true)), 256 * 1024);
        let mut unlimited = DmaDevice::new(2, "x", None, true, BouncePolicy::WhenNeeded);
        assert_eq!(api.max_mapping_size(&unlimited), usize::MAX);
        unlimited.min_align_mask = 0xfff;
        unlimited.policy = BouncePolicy::Forced;
        assert_eq!(api.max_mapping_size(&unlimited), 256 * 1024 - 4096);
    }
}
