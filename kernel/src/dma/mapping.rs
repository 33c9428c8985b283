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
use super::swiotlb::{max_mapping_size as swiotlb_max_mapping_size, may_take_cached_run, FoundPool, SlotLookup, SwiotlbError};
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
    /// The smallest range holding the default pool and the CMA area, empty without `pages`: a
    /// direct mapping outside it pins nothing, which the inline direct path checks in two compares.
    pin_hull: core::ops::Range<PhysAddr>,
    /// Counters.
    pub stats: DmaStats,
}

impl<'a> DmaApi<'a> {
    /// The API over the default SWIOTLB `default_mem`; `debug` enables DMA-API debugging
    /// (bootarg `dma_debug=on`); `on_pressure` is called (in any context) when a bounce fails, to
    /// kick the pool's worker.
    pub fn new(default_mem: &'a SwiotlbMem, debug: Option<&'a DmaDebug>, on_pressure: Option<fn()>) -> Self {
        let mem = default_mem.phys();
        Self { mem, default_mem, debug, on_pressure, pages: None, cma_range: 0..0, pin_hull: 0..0, stats: DmaStats::default() }
    }

    /// [`pin_hull`](Self::pin_hull) of this API's pools and CMA area.
    fn with_pin_hull(self) -> Self {
        let pool = self.default_mem.default_pool().range();
        let hull = match (&self.pages, self.cma_range.is_empty()) {
            (None, _) => 0..0,
            (Some(_), true) => pool,
            (Some(_), false) => pool.start.min(self.cma_range.start)..pool.end.max(self.cma_range.end),
        };
        Self { pin_hull: hull, ..self }
    }

    /// Direct mappings of pages in the default pool's lent pageblocks (held by `pages`) pin them
    /// for the mapping's life.
    pub fn with_lent_page_pins(self, pages: &'a LockedPageAllocator) -> Self {
        Self { pages: Some(pages), ..self }.with_pin_hull()
    }

    /// Direct mappings of pages borrowed from the CMA area `range` pin them too (with
    /// [`with_lent_page_pins`](Self::with_lent_page_pins)).
    pub fn with_cma_range(self, range: core::ops::Range<PhysAddr>) -> Self {
        Self { cma_range: range, ..self }.with_pin_hull()
    }

    /// The page allocator to pin in, if `[addr, addr + size)` may hold lent or CMA pages: only
    /// the default pool's range is ever lent and only the CMA area is MIGRATE_CMA, so other
    /// direct mappings take no allocator lock.
    fn lent_pages(&self, addr: PhysAddr, size: usize) -> Option<&'a LockedPageAllocator> {
        let end = addr.saturating_add(size as u64);
        let overlaps = |r: core::ops::Range<PhysAddr>| addr < r.end && end > r.start;
        self.pages.filter(|_| overlaps(self.default_mem.default_pool().range()) || overlaps(self.cma_range.clone()))
    }

    /// False if a direct mapping of `[addr, addr + size)` certainly pins nothing (outside
    /// [`pin_hull`](Self::pin_hull)); true sends it to [`lent_pages`](Self::lent_pages).
    #[inline]
    fn may_pin(&self, addr: PhysAddr, size: usize) -> bool {
        // The end first: buffers mostly lie below the pools (which sit at the top of the window).
        addr.saturating_add(size as u64) > self.pin_hull.start && addr < self.pin_hull.end
    }

    /// The debug tracker, if debugging is on.
    pub fn debug(&self) -> Option<&'a DmaDebug> {
        self.debug
    }

    /// True if a mapping of `[addr, addr+size)` for `dev` must bounce (Linux: the checks of
    /// `dma_direct_map_page`).
    #[inline]
    pub fn needs_bounce(&self, dev: &DmaDevice, addr: PhysAddr, size: usize) -> bool {
        match dev.policy() {
            BouncePolicy::Restricted(_) | BouncePolicy::Forced => true,
            BouncePolicy::WhenNeeded => {
                let shares_lines = || {
                    let line = arch::dma_alignment() as u64;
                    !addr.is_multiple_of(line) || !(size as u64).is_multiple_of(line)
                };
                !dev.dma_capable(addr, size) || (!dev.coherent() && shares_lines())
            }
        }
    }

    /// The largest mapping `dev` may make in one piece (Linux `dma_max_mapping_size`).
    pub fn max_mapping_size(&self, dev: &DmaDevice) -> usize {
        let may_bounce = !matches!(dev.policy(), BouncePolicy::WhenNeeded) || dev.dma_limit().is_some() || !dev.coherent();
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
        if !dev.coherent() {
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
    #[inline]
    pub unsafe fn map_single(
        &self,
        dev: &DmaDevice,
        addr: PhysAddr,
        size: usize,
        dir: DmaDirection,
        attrs: DmaAttrs,
    ) -> Result<DmaAddr, DmaError> {
        // The direct path's common case (Linux `dma_direct_map_page` when it neither bounces nor
        // syncs), inline and in registers: a coherent device that bounces only what it cannot
        // reach, the buffer within its reach (one compare, `DmaDevice::direct_as_is`), nothing
        // to pin, no tracker, task context. Such a device's buffer beyond its reach goes to
        // `map_cached_beyond_reach` if it may take a run of the slot cache (more than a slot,
        // at most a page, not a read that may skip its copy-in), then to `map_beyond_reach`,
        // which need not ask again what was asked here; everything else takes the full path.
        if size != 0 && self.debug.is_none() {
            if dev.direct_as_is(addr, size) {
                if !self.may_pin(addr, size) && !arch::in_interrupt() {
                    self.stats.maps_direct.fetch_add(1, Ordering::Relaxed);
                    return Ok(addr);
                }
            } else if dev.maps_direct_as_is() {
                if may_take_cached_run(size, dir, attrs) {
                    // SAFETY: this function's contract, handed on unchanged; and
                    // `may_take_cached_run` holds, as `map_cached_beyond_reach` asks.
                    if let Some(tlb) = unsafe { self.map_cached_beyond_reach(dev, addr, size, dir, attrs) } {
                        return Ok(tlb);
                    }
                }
                // SAFETY: this function's contract, handed on unchanged.
                return unsafe { self.map_beyond_reach(dev, addr, size, dir, attrs) };
            }
        }
        // SAFETY: this function's contract, handed on unchanged.
        unsafe { self.map_single_slow(dev, addr, size, dir, attrs) }
    }

    /// [`map_single`](Self::map_single) out of line for what its inline part checked: a mapping
    /// of some bytes, no tracker, a coherent device that bounces only what it cannot reach, the
    /// buffer not within its reach as is. The common bounce here: the buffer is beyond the
    /// device's limit (the one reason such a device bounces) and the device has no pool of its
    /// own, so the default SWIOTLB maps (what [`bounce`](Self::bounce) does for it) with the
    /// slot search (the slot cache was tried first, in
    /// [`map_cached_beyond_reach`](Self::map_cached_beyond_reach), where it may serve), and
    /// there are no caches to clean. Everything else in [`map_single_slow`](Self::map_single_slow).
    ///
    /// # Safety
    ///
    /// As [`map_single`](Self::map_single).
    #[allow(unsafe_code)]
    #[inline(never)]
    unsafe fn map_beyond_reach(
        &self,
        dev: &DmaDevice,
        addr: PhysAddr,
        size: usize,
        dir: DmaDirection,
        attrs: DmaAttrs,
    ) -> Result<DmaAddr, DmaError> {
        if !dev.dma_capable(addr, size) && !dev.has_device_pool() {
            let in_irq = arch::in_interrupt();
            if in_irq {
                self.stats.maps_in_irq.fetch_add(1, Ordering::Relaxed);
            }
            let align = SlotAlignment::min_align(dev.min_align_mask);
            // A mapping of a page or less tried the slot cache first
            // (`map_cached_beyond_reach`): the search, and what follows it.
            // SAFETY: the caller owns the buffer until the unmap (this function's contract).
            let result = unsafe { self.default_mem.map_searched_in(addr, size, dir, align, attrs, in_irq) };
            // Coherent (`maps_direct_as_is`): no cache to clean.
            return self.bounced(dev, result, size, dir, true);
        }
        // SAFETY: this function's contract, handed on unchanged.
        unsafe { self.map_single_slow(dev, addr, size, dir, attrs) }
    }

    /// [`map_beyond_reach`](Self::map_beyond_reach)'s common case, in a frame that keeps little
    /// across the copy: a run of the default pool's slot cache (a mapping of a page or less),
    /// when the whole default pool is within the device's reach (so the slot is, with no check
    /// after the copy). `None`, with nothing changed and nothing counted, for anything else:
    /// then `map_beyond_reach` maps, or refuses, as it would have. Called only where
    /// `map_single`'s inline part found the buffer not `direct_as_is`, so it does not ask
    /// `dma_capable` again: the two differ only for a buffer that ends at the very top of the
    /// address space, which would be bounced when it need not be (never wrongly mapped).
    ///
    /// # Safety
    ///
    /// As [`map_single`](Self::map_single), and [`may_take_cached_run`]`(size, dir, attrs)`
    /// holds (the slot cache's runs are a page).
    #[allow(unsafe_code)]
    #[inline(never)]
    unsafe fn map_cached_beyond_reach(
        &self,
        dev: &DmaDevice,
        addr: PhysAddr,
        size: usize,
        dir: DmaDirection,
        attrs: DmaAttrs,
    ) -> Option<DmaAddr> {
        // A pool is never empty: its last byte is `end - 1`.
        let pool_reachable = dev.reaches_up_to(self.default_mem.default_pool().end() - 1);
        if dev.has_device_pool() || !pool_reachable {
            return None;
        }
        let in_irq = arch::in_interrupt();
        let align = SlotAlignment::min_align(dev.min_align_mask);
        // SAFETY: the caller owns the buffer until the unmap, and `may_take_cached_run` holds
        // (this function's contract).
        let tlb = unsafe { self.default_mem.default_pool().map_cached(addr, size, dir, align, attrs, in_irq) }?;
        // What `bounced` counts (coherent: no cache to clean; the slot within reach, above).
        self.stats.maps_bounced.fetch_add(1, Ordering::Relaxed);
        if in_irq {
            self.stats.maps_in_irq.fetch_add(1, Ordering::Relaxed);
        }
        Some(tlb)
    }

    /// [`map_single`](Self::map_single) in full, out of line.
    ///
    /// # Safety
    ///
    /// As [`map_single`](Self::map_single).
    #[allow(unsafe_code)]
    #[inline(never)]
    unsafe fn map_single_slow(
        &self,
        dev: &DmaDevice,
        addr: PhysAddr,
        size: usize,
        dir: DmaDirection,
        attrs: DmaAttrs,
    ) -> Result<DmaAddr, DmaError> {
        if size == 0 {
            return Err(DmaError::ZeroSize);
        }
        if arch::in_interrupt() {
            self.stats.maps_in_irq.fetch_add(1, Ordering::Relaxed);
        }
        let dma = if self.needs_bounce(dev, addr, size) {
            // SAFETY: the caller owns the buffer until the unmap (this function's contract).
            unsafe { self.bounce(dev, addr, size, dir, attrs) }?
        } else {
            // The direct path's other cases: a page to pin, caches to clean, interrupt context.
            if let Some(pages) = self.lent_pages(addr, size) {
                self.pin_direct(pages, addr, size);
            }
            if !attrs.skip_cpu_sync {
                self.cache(dev, CacheOp::Clean, addr, size);
            }
            self.stats.maps_direct.fetch_add(1, Ordering::Relaxed);
            addr
        };
        if let Some(debug) = self.debug {
            Self::debug_map(debug, dev, dma, size, dir);
        }
        Ok(dma)
    }

    /// Pins the lent or CMA pages a direct mapping covers (out of the direct path's line).
    #[inline(never)]
    fn pin_direct(&self, pages: &LockedPageAllocator, addr: PhysAddr, size: usize) {
        let pinned = pages.pin_frames(addr, size);
        self.stats.direct_pins.fetch_add(pinned as u64, Ordering::Relaxed);
    }

    /// Tells the debug tracker of a new mapping.
    #[cold]
    #[inline(never)]
    fn debug_map(debug: &DmaDebug, dev: &DmaDevice, dma: DmaAddr, size: usize, dir: DmaDirection) {
        match debug.map(dev.id, dma, size, dir) {
            // A `Result` cannot be used without looking at it: the Rust API checks for you
            // what Linux's `dma_mapping_error()` asks drivers to check.
            Ok(()) => debug.mapping_error_checked(dev.id, dma),
            Err(e) => log::warn!("{e}"),
        }
    }

    /// Bounces through the device's SWIOTLB (Linux `swiotlb_map` with `dev->dma_io_tlb_mem`): its
    /// restricted pool, or its carved pool then the default SWIOTLB, which picks a pool and may
    /// grow.
    ///
    /// # Safety
    ///
    /// As [`map_single`](Self::map_single).
    #[allow(unsafe_code)]
    unsafe fn bounce(
        &self,
        dev: &DmaDevice,
        addr: PhysAddr,
        size: usize,
        dir: DmaDirection,
        attrs: DmaAttrs,
    ) -> Result<PhysAddr, DmaError> {
        let align = SlotAlignment::min_align(dev.min_align_mask);
        // SAFETY: the caller owns the buffer until the unmap (this function's contract, handed
        // on unchanged to whichever pool maps it, here and below).
        let to_default = || unsafe { self.default_mem.map_attrs(addr, size, dir, align, attrs) };
        let result = match dev.policy() {
            // SAFETY: as above.
            BouncePolicy::Restricted(pool) => unsafe { pool.map_attrs(addr, size, dir, align, attrs) },
            // No pool of its own, known without the device-pool lock (as `lookup`): a pool
            // attached meanwhile serves the next mapping.
            _ if !dev.has_device_pool() => to_default(),
            _ => match dev.device_pool() {
                // SAFETY: as above.
                Some(slot) => unsafe { slot.map_attrs(addr, size, dir, align, attrs) }.or_else(|_| to_default()),
                None => to_default(),
            },
        };
        self.bounced(dev, result, size, dir, false)
    }

    /// The end of a bounce whose pool answered `result`: counts a failure, checks that the slot
    /// is within the device's reach, cleans the slot's new contents to memory for a non-coherent
    /// device (`coherent`: the caller knows `dev` is coherent, so there is nothing to clean).
    #[inline(always)]
    fn bounced(
        &self,
        dev: &DmaDevice,
        result: Result<PhysAddr, SwiotlbError>,
        size: usize,
        dir: DmaDirection,
        coherent: bool,
    ) -> Result<PhysAddr, DmaError> {
        let tlb = match result {
            Ok(tlb) => tlb,
            Err(e) => return Err(self.bounce_failed(e)),
        };
        if !dev.dma_capable(tlb, size) {
            return Err(self.pool_unreachable(dev, tlb, size, dir));
        }
        if !coherent {
            self.cache(dev, CacheOp::Clean, tlb, size); // the slot's new contents reach memory
        }
        self.stats.maps_bounced.fetch_add(1, Ordering::Relaxed);
        Ok(tlb)
    }

    /// A pool above the device's limit gave it the slot at `tlb`, a configuration error: undoes
    /// the mapping and reports it (out of line).
    #[cold]
    #[inline(never)]
    fn pool_unreachable(&self, dev: &DmaDevice, tlb: PhysAddr, size: usize, dir: DmaDirection) -> DmaError {
        if let SlotLookup::Live(pool) = self.lookup(dev, tlb) {
            let _ = pool.unmap(tlb, size, dir, DmaAttrs { skip_cpu_sync: true, no_copy_in: false });
        }
        // Only a device with a limit reaches no slot: `dma_capable` is true for every address
        // otherwise.
        DmaError::PoolUnreachable { tlb, limit: dev.dma_limit().unwrap_or(PhysAddr::MAX) }
    }

    /// Counts a bounce that failed with `e` and kicks the pool's worker (out of line).
    #[cold]
    #[inline(never)]
    fn bounce_failed(&self, e: SwiotlbError) -> DmaError {
        self.stats.map_failures.fetch_add(1, Ordering::Relaxed);
        if arch::in_interrupt() {
            self.stats.irq_failures.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(kick) = self.on_pressure {
            kick();
        }
        DmaError::Swiotlb(e)
    }

    /// Which of `dev`'s pools holds `dma`, in one look at each (Linux `swiotlb_find_pool(dev,
    /// paddr)`): its restricted pool; or its carved pool, then the default SWIOTLB. The first
    /// live slot answers; a free slot in one of them answers `Free` if no other has it live.
    #[inline(always)]
    fn lookup(&self, dev: &DmaDevice, dma: DmaAddr) -> SlotLookup<'a> {
        match dev.policy() {
            BouncePolicy::Restricted(pool) => pool.lookup(dma),
            // No pool of its own, known without the device-pool lock: the default SWIOTLB's
            // answer (`Outside` for a direct mapping, from `may_hold`).
            _ if !dev.has_device_pool() => self.default_mem.find_pool(dma),
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
    #[inline(always)]
    fn find_pool(&self, dev: &DmaDevice, dma: DmaAddr) -> Result<Option<FoundPool<'a>>, DmaError> {
        match self.lookup(dev, dma) {
            SlotLookup::Live(pool) => Ok(Some(pool)),
            SlotLookup::Free => Err(self.free_slot_misuse(dma)),
            SlotLookup::Outside => Ok(None),
        }
    }

    /// Counts an unmap or sync of the free slot at `dma` (or of a held one without a live
    /// mapping, see [`slot_refused`](Self::slot_refused)) with the misuse reports (out of line).
    #[cold]
    #[inline(never)]
    fn free_slot_misuse(&self, dma: DmaAddr) -> DmaError {
        self.stats.misuse.fetch_add(1, Ordering::Relaxed);
        DmaError::Swiotlb(SwiotlbError::NotMapped { tlb_addr: dma })
    }

    /// True if `dma` is a held bounce slot of one of `dev`'s pools (a live mapping's, or a run
    /// parked in a slot cache, which holds no mapping): the O(1) check on every unmap and sync.
    /// A lent page inside a pool's range, mapped directly, is not.
    pub fn is_swiotlb_buffer(&self, dev: &DmaDevice, dma: DmaAddr) -> bool {
        match dev.policy() {
            BouncePolicy::Restricted(pool) => pool.is_swiotlb_buffer(dma),
            _ if !dev.has_device_pool() && !self.default_mem.may_hold(dma) => false,
            _ => dev.device_pool().is_some_and(|slot| slot.is_swiotlb_buffer(dma)) || self.default_mem.is_swiotlb_buffer(dma),
        }
    }

    /// Ends a mapping (Linux `dma_unmap_single`): for a bounce, copies back what the device
    /// wrote (unless `skip_cpu_sync`) and frees the slots.
    #[inline]
    pub fn unmap_single(&self, dev: &DmaDevice, dma: DmaAddr, size: usize, dir: DmaDirection, attrs: DmaAttrs) -> Result<(), DmaError> {
        // The common direct case inline (as in `map_single`): a coherent `WhenNeeded` device
        // without a pool of its own, no pool can hold `dma`, nothing to unpin, no tracker.
        // Such a device's bounces (the default SWIOTLB's) go to `unmap_as_is`, which need not
        // ask again what was asked here.
        if self.debug.is_none() && dev.maps_direct_as_is() && !dev.has_device_pool() {
            if !self.default_mem.may_hold(dma) && !self.may_pin(dma, size) {
                return Ok(());
            }
            if self.unmap_as_is(dma, size, dir, attrs) {
                return Ok(());
            }
            return self.unmap_single_full(dev, dma, size, dir, attrs);
        }
        self.unmap_single_slow(dev, dma, size, dir, attrs)
    }

    /// [`unmap_single`](Self::unmap_single) out of line for what its inline part checked: no
    /// tracker, a coherent `WhenNeeded` device without a pool of its own. Unmaps a live mapping
    /// of the default pool, with no cache maintenance, and returns true; false if the pool
    /// refused, changing nothing (its unmap is all or nothing): then
    /// [`unmap_single_full`](Self::unmap_single_full) decides, and gives the error. A bool,
    /// not the error, so that this frame keeps nothing for a fallback: the caller holds the
    /// arguments.
    #[inline(never)]
    fn unmap_as_is(&self, dma: DmaAddr, size: usize, dir: DmaDirection, attrs: DmaAttrs) -> bool {
        // No lock-free look at the slot's state first (what `lookup` reads): the pool's unmap
        // finds the mapping's record under the area lock anyway, and refuses an address that
        // holds none. Such an address (a lent page mapped directly, a slot of another pool, a
        // second unmap) and a refused unmap go on to the full path, which tells them apart.
        self.default_mem.default_pool().unmap(dma, size, dir, attrs).is_ok()
    }

    /// [`unmap_single`](Self::unmap_single) out of line. The common bounce first, in a small
    /// frame: no tracker, a device without a pool of its own, and `dma` a live slot of the
    /// default pool (the first answer [`lookup`](Self::lookup) would give). Everything else in
    /// [`unmap_single_full`](Self::unmap_single_full).
    #[inline(never)]
    fn unmap_single_slow(&self, dev: &DmaDevice, dma: DmaAddr, size: usize, dir: DmaDirection, attrs: DmaAttrs) -> Result<(), DmaError> {
        if self.debug.is_none() && !matches!(dev.policy(), BouncePolicy::Restricted(_)) && !dev.has_device_pool() {
            if let SlotLookup::Live(pool) = self.default_mem.default_pool().lookup(dma) {
                return self.unmap_bounced(dev, pool, dma, size, dir, attrs);
            }
        }
        self.unmap_single_full(dev, dma, size, dir, attrs)
    }

    /// [`unmap_single`](Self::unmap_single) in full, out of line.
    #[inline(never)]
    fn unmap_single_full(&self, dev: &DmaDevice, dma: DmaAddr, size: usize, dir: DmaDirection, attrs: DmaAttrs) -> Result<(), DmaError> {
        if let Some(debug) = self.debug {
            self.debug_unmap(debug, dev, dma, size, dir)?;
        }
        match self.find_pool(dev, dma)? {
            Some(pool) => self.unmap_bounced(dev, pool, dma, size, dir, attrs),
            None => {
                if dir.from_device() && !attrs.skip_cpu_sync {
                    self.cache(dev, CacheOp::Invalidate, dma, size);
                }
                // The device is done with the pages: reclaim may move them again.
                if let Some(pages) = self.lent_pages(dma, size) {
                    Self::unpin_direct(pages, dma, size);
                }
                Ok(())
            }
        }
    }

    /// Tells the debug tracker a mapping ends; misuse refuses the unmap.
    #[cold]
    #[inline(never)]
    fn debug_unmap(&self, debug: &DmaDebug, dev: &DmaDevice, dma: DmaAddr, size: usize, dir: DmaDirection) -> Result<(), DmaError> {
        debug.unmap(dev.id, dma, size, dir).map_err(|e| self.misuse(e))
    }

    /// The bounced half of [`unmap_single`](Self::unmap_single): copy back, free the slots.
    fn unmap_bounced(
        &self,
        dev: &DmaDevice,
        pool: FoundPool<'_>,
        dma: DmaAddr,
        size: usize,
        dir: DmaDirection,
        attrs: DmaAttrs,
    ) -> Result<(), DmaError> {
        if dir.from_device() {
            self.cache(dev, CacheOp::Invalidate, dma, size);
        }
        pool.unmap(dma, size, dir, attrs).map_err(|e| self.slot_refused(e))
    }

    /// The error of a pool that refused an unmap or sync of `dma`, a slot its lock-free state
    /// showed held: `NotMapped` (no live mapping there: a run parked in a slot cache, or not
    /// the mapping's start) is counted with the misuse reports, as a free slot's is.
    fn slot_refused(&self, e: SwiotlbError) -> DmaError {
        match e {
            SwiotlbError::NotMapped { tlb_addr } => self.free_slot_misuse(tlb_addr),
            e => DmaError::Swiotlb(e),
        }
    }

    /// Unpins what [`pin_direct`](Self::pin_direct) pinned.
    #[inline(never)]
    fn unpin_direct(pages: &LockedPageAllocator, dma: DmaAddr, size: usize) {
        pages.unpin_frames(dma, size);
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
            pool.sync_for_cpu(dma, size, dir).map_err(|e| self.slot_refused(e))?;
        }
        Ok(())
    }

    /// Gives the device (a part of) a mapping the CPU wrote (Linux `dma_sync_single_for_device`).
    pub fn sync_single_for_device(&self, dev: &DmaDevice, dma: DmaAddr, size: usize, dir: DmaDirection) -> Result<(), DmaError> {
        if let Some(debug) = self.debug {
            debug.sync(dev.id, dma, size, dir).map_err(|e| self.misuse(e))?;
        }
        if let Some(pool) = self.find_pool(dev, dma)? {
            pool.sync_for_device(dma, size, dir).map_err(|e| self.slot_refused(e))?;
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
        if !dev.coherent() {
            return Err(DmaError::Unsupported("coherent memory for a non-coherent device needs a non-cacheable mapping"));
        }
        if let BouncePolicy::Restricted(pool) = dev.policy() {
            let addr = pool.alloc_coherent(size)?;
            return Ok((addr, addr));
        }
        let order = (size as u64).div_ceil(PAGE_SIZE).next_power_of_two().trailing_zeros() as u8;
        let zone = if dev.dma_limit().is_some() { ZoneType::Dma } else { ZoneType::Normal };
        let addr = pages.lock().alloc_pages(order, zone, MigrateType::Unmovable).map_err(|_| DmaError::NoMemory)?;
        let len = (PAGE_SIZE as usize) << order;
        if !dev.dma_capable(addr, len) {
            let _ = pages.lock().free_pages(addr, order);
            return Err(DmaError::PoolUnreachable { tlb: addr, limit: dev.dma_limit().unwrap_or(0) });
        }
        self.mem.fill(addr, 0, len);
        Ok((addr, addr))
    }

    /// Frees memory from [`alloc_coherent`](Self::alloc_coherent) with the same device and size.
    pub fn free_coherent(&self, dev: &DmaDevice, pages: &LockedPageAllocator, addr: PhysAddr, size: usize) -> Result<(), DmaError> {
        if let BouncePolicy::Restricted(pool) = dev.policy() {
            return pool.free_coherent(addr).map_err(DmaError::Swiotlb);
        }
        let order = (size as u64).div_ceil(PAGE_SIZE).next_power_of_two().trailing_zeros() as u8;
        pages.lock().free_pages(addr, order).map_err(|_| DmaError::Unsupported("free of memory not from alloc_coherent"))
    }
}

#[cfg(test)]
// The page allocator takes a list of free ranges; these tests give it one.
#[allow(clippy::single_range_in_vec_init)]
mod tests;
