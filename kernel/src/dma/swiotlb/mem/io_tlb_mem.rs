//! [`SwiotlbMem`] (Linux `struct io_tlb_mem`): construction under each policy, the mapping entry
//! points over its pools, and the IRQ-safe tests that decide whether to schedule the worker.

use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::blocks::{BlockState, BlockStates};
use super::config::{PoolGeometry, Tunables};
use super::stats::{LendCounters, LendStats};
use super::{LendError, MAX_EXTRA_POOLS, SLOTS_PER_PAGEBLOCK};
use crate::bootargs::SwiotlbPolicy;
use crate::dma::swiotlb::transient::TransientPools;
use crate::dma::swiotlb::{DmaAttrs, DmaDirection, FoundPool, SlotAlignment, SlotLookup, SwiotlbError, SwiotlbPool};
use crate::dma::swiotlb::{IO_TLB_SEGSIZE, IO_TLB_SIZE};
use crate::mm::page_alloc::{LockedPageAllocator, PAGEBLOCK_SIZE};
use crate::mm::phys::PhysMemory;
use crate::mm::PhysAddr;

/// The default SWIOTLB: its pools and its policy (Linux `struct io_tlb_mem`, the set of
/// `io_tlb_pool`s of the default SWIOTLB; see the [module docs](super)).
///
/// Mapping, unmapping, syncing, [`should_kick`](Self::should_kick), [`note_miss`](Self::note_miss)
/// and [`is_swiotlb_buffer`](Self::is_swiotlb_buffer) are safe in IRQ context and never allocate;
/// construction, the worker and device pools are task context only.
pub struct SwiotlbMem {
    /// Where the pools' memory is read and written; every pool added gets it too.
    pub(super) mem: &'static dyn PhysMemory,
    /// The default pool over the reserved range (under `cma`, over its first
    /// `min_slot_pageblocks` only).
    pub(super) pool: SwiotlbPool,
    /// Start of the reserved range (pageblock aligned).
    pub(super) start: PhysAddr,
    /// The policy in force (`static` if a `lend` pool may not be lent).
    pub(super) policy: SwiotlbPolicy,
    /// The pool is shared with an untrusted device by design (a restricted pool, a
    /// confidential VM's shared pool): nothing of it ever goes to the page allocator.
    pub(super) never_lend: bool,
    pub(super) tunables: Tunables,
    /// One state per pageblock of the reserved range.
    pub(super) blocks: BlockStates,
    /// Extra pools (dynamic and cma policies), published once each, read lock-free: Linux's
    /// RCU list of pools (`io_tlb_mem.pools`), searched in order by map, unmap, sync and
    /// `is_swiotlb_buffer`.
    /// On the heap: `MAX_EXTRA_POOLS` pools inline would not fit the boot stack.
    pub(super) extra: alloc::boxed::Box<[spin::Once<SwiotlbPool>]>,
    pub(super) nr_extra: AtomicUsize,
    /// The smallest range holding every pool of this SWIOTLB: the reserved range (the default
    /// pool, the device pools carved from it) and the extra pools, widened before each is
    /// published. An address outside it (and no transient pool live) is no bounce slot of
    /// ours, which the unmap of a direct mapping learns in two loads ([`may_hold`](Self::may_hold)).
    span_start: AtomicU64,
    span_end: AtomicU64,
    /// Transient pools (dynamic policy): one mapping each, allocated when every pool missed.
    pub(super) transient: TransientPools,
    /// The CMA area the `cma` policy takes its chunks from.
    pub(super) cma: spin::Once<&'static crate::mm::cma::CmaArea>,
    /// A mapping missed since the worker last looked.
    pub(super) miss_pending: AtomicBool,
    /// Usage reached the high watermark since the worker last looked.
    pub(super) high_usage_seen: AtomicBool,
    /// When usage was first seen under the high watermark, in ns + 1; 0: the shrink timer is off.
    pub(super) low_since_ns: AtomicU64,
    /// Held by the worker and by device-pool carving and returning.
    pub(super) running: AtomicBool,
    pub(super) counters: LendCounters,
}

impl SwiotlbMem {
    /// Builds the default pool over `geometry` as `tunables.policy` says. Task context.
    ///
    /// - `static` and `dynamic`: every slot is a bounce slot (Linux keeps its boot pool whole
    ///   under `SWIOTLB_DYNAMIC` too); `pages` is not touched. `dynamic` grows later.
    /// - `cma`: the pool covers `tunables.min_slot_pageblocks()` pageblocks; the rest of the
    ///   reserved range ([`BlockState::Unused`]) is given to `pages` as ordinary MOVABLE memory
    ///   (nothing stays reserved and unused); the pool grows with chunks from the CMA area.
    /// - `lend`: `min_slot_pageblocks()` pageblocks, spread over the areas (see `areas.rs`), are
    ///   slots; the rest is lent to `pages` as MIGRATE_SWIOTLB in one all-or-nothing call.
    ///
    /// `never_lend` marks a pool shared with an untrusted device by design: under `lend` it is
    /// managed as `static`, and `dynamic` is refused (its extra pools would not be shared memory).
    /// `mem` reaches the reserved range, the pools added later and the original buffers.
    pub fn new(
        geometry: PoolGeometry,
        tunables: Tunables,
        never_lend: bool,
        pages: &LockedPageAllocator,
        mem: &'static dyn PhysMemory,
    ) -> Result<Self, LendError> {
        let geometry_error = |reason| Err(LendError::Geometry { reason });
        if !geometry.start.is_multiple_of(PAGEBLOCK_SIZE) {
            return geometry_error("the pool must start on a pageblock");
        }
        if geometry.nslots == 0 || !geometry.nslots.is_multiple_of(SLOTS_PER_PAGEBLOCK) {
            return geometry_error("the pool must be a whole number of pageblocks");
        }
        let policy = match tunables.policy {
            SwiotlbPolicy::Lend if never_lend => {
                log::info!("swiotlb: pool shared with devices, never lent: static policy");
                SwiotlbPolicy::Static
            }
            p @ (SwiotlbPolicy::Dynamic | SwiotlbPolicy::Cma) if never_lend => {
                return Err(LendError::PolicyForbids { policy: p, what: "a never-lend pool" })
            }
            p => p,
        };
        let nblocks = geometry.nslots / SLOTS_PER_PAGEBLOCK;
        let slot_blocks = tunables.min_slot_pageblocks().clamp(1, nblocks);
        let pool_slots = match policy {
            SwiotlbPolicy::Cma => slot_blocks * SLOTS_PER_PAGEBLOCK,
            _ => geometry.nslots,
        };
        let pool = SwiotlbPool::new(geometry.start, pool_slots, geometry.nareas, mem)?;
        pool.set_irq_reserve_slots(tunables.irq_reserve_slots.min(pool_slots));
        let manager = Self::with_pool(mem, pool, geometry.start, policy, never_lend, tunables, nblocks);
        match policy {
            SwiotlbPolicy::Static | SwiotlbPolicy::Dynamic => {}
            SwiotlbPolicy::Cma if slot_blocks < nblocks => {
                let spare = slot_blocks..nblocks;
                let range = manager.block_addrs(spare.clone());
                pages.lock().free_contig_pageblocks(range.start, spare.len())?;
                spare.for_each(|b| manager.blocks.set(b, BlockState::Unused));
            }
            SwiotlbPolicy::Cma => {}
            SwiotlbPolicy::Lend if slot_blocks < nblocks => {
                // The runs of pageblocks between the kept ones. The pool's side first: if the
                // page allocator refuses, the manager is dropped and nothing was lent.
                let kept = manager.boot_slot_pageblocks(slot_blocks);
                let mut spare: Vec<Range<usize>> = Vec::new();
                for block in (0..nblocks).filter(|b| !kept[*b]) {
                    match spare.last_mut() {
                        Some(run) if run.end == block => run.end += 1,
                        _ => spare.push(block..block + 1),
                    }
                }
                for run in &spare {
                    manager.pool.lend(run.start * SLOTS_PER_PAGEBLOCK..run.end * SLOTS_PER_PAGEBLOCK)?;
                }
                let ranges: Vec<Range<PhysAddr>> = spare.iter().map(|run| manager.block_addrs(run.clone())).collect();
                pages.lock().lend_swiotlb_pageblock_ranges(&ranges)?;
                spare.into_iter().flatten().for_each(|b| manager.blocks.set(b, BlockState::Lent));
            }
            SwiotlbPolicy::Lend => {}
        }
        Ok(manager)
    }

    /// A `static` SWIOTLB of one pool of `nslots` slots at `start` in `nareas` areas, with no IRQ
    /// reserve and no page allocator: for host tests of the DMA API.
    #[cfg(test)]
    pub(crate) fn static_for_test(start: PhysAddr, nslots: usize, nareas: usize, mem: &'static dyn PhysMemory) -> Self {
        let params = crate::bootargs::KernelParams::default();
        let tunables = Tunables { policy: SwiotlbPolicy::Static, irq_reserve_slots: 0, ..Tunables::from_params(&params) };
        let nblocks = nslots.div_ceil(SLOTS_PER_PAGEBLOCK);
        let pool = SwiotlbPool::new(start, nslots, nareas, mem).expect("test pool geometry");
        Self::with_pool(mem, pool, start, SwiotlbPolicy::Static, false, tunables, nblocks)
    }

    /// The manager around its first pool, every pageblock still slots, nothing grown yet.
    fn with_pool(
        mem: &'static dyn PhysMemory,
        pool: SwiotlbPool,
        start: PhysAddr,
        policy: SwiotlbPolicy,
        never_lend: bool,
        tunables: Tunables,
        nblocks: usize,
    ) -> Self {
        let reserved = start..start + nblocks as u64 * PAGEBLOCK_SIZE;
        let pool_range = pool.range();
        Self {
            mem,
            span_start: AtomicU64::new(reserved.start.min(pool_range.start)),
            span_end: AtomicU64::new(reserved.end.max(pool_range.end)),
            pool,
            start,
            policy,
            never_lend,
            tunables,
            blocks: BlockStates::new(nblocks, BlockState::AsSlots),
            extra: (0..MAX_EXTRA_POOLS).map(|_| spin::Once::new()).collect(),
            nr_extra: AtomicUsize::new(0),
            transient: TransientPools::new(mem),
            cma: spin::Once::new(),
            miss_pending: AtomicBool::new(false),
            high_usage_seen: AtomicBool::new(false),
            low_since_ns: AtomicU64::new(0),
            running: AtomicBool::new(false),
            counters: LendCounters::default(),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> SwiotlbPolicy {
        self.policy
    }

    /// Whether the pool is never lent (shared with devices by design).
    pub fn never_lend(&self) -> bool {
        self.never_lend
    }

    /// The tunables.
    pub fn tunables(&self) -> &Tunables {
        &self.tunables
    }

    /// The default pool.
    pub fn default_pool(&self) -> &SwiotlbPool {
        &self.pool
    }

    /// The physical-memory accessor its pools copy and scrub through.
    pub fn phys(&self) -> &'static dyn PhysMemory {
        self.mem
    }

    /// Lets the dynamic policy allocate transient pools from `pages` when every pool misses
    /// (Linux 6.6 does, in any context); without it such a mapping fails and is deferred.
    pub fn enable_transient_pools(&self, pages: &'static LockedPageAllocator) {
        if self.policy == SwiotlbPolicy::Dynamic && self.tunables.transient {
            self.transient.enable(pages);
        }
    }

    /// The transient pools (dynamic policy).
    pub fn transient_pools(&self) -> &TransientPools {
        &self.transient
    }

    /// The extra pools added so far (dynamic and cma policies), oldest first.
    pub fn extra_pools(&self) -> impl Iterator<Item = &SwiotlbPool> + '_ {
        let n = self.nr_extra.load(Ordering::Acquire);
        self.extra[..n].iter().filter_map(spin::Once::get)
    }

    /// Publishes `pool` as extra pool `n` (the next free entry; the worker and the cma chunk
    /// path, never at once: both hold `running`), after widening the span
    /// [`may_hold`](Self::may_hold) checks to cover it.
    pub(super) fn publish_extra(&self, n: usize, pool: SwiotlbPool) {
        let range = pool.range();
        self.span_start.fetch_min(range.start, Ordering::Release);
        self.span_end.fetch_max(range.end, Ordering::Release);
        self.extra[n].call_once(|| pool);
        self.nr_extra.store(n + 1, Ordering::Release);
    }

    /// False if no pool of this SWIOTLB can hold `pa`: not the default pool, a device pool
    /// carved from the reserved range, an extra pool or a live transient pool. Lock-free, a few
    /// loads: the check an unmap or sync of a direct mapping makes before any pool lookup
    /// (Linux checks `dev->dma_uses_io_tlb` first, for the same reason). True says nothing:
    /// look the pool up.
    #[inline]
    pub fn may_hold(&self, pa: PhysAddr) -> bool {
        (self.span_start.load(Ordering::Acquire) <= pa && pa < self.span_end.load(Ordering::Acquire)) || self.transient.live() > 0
    }

    /// The default pool, then the extra pools: the order mappings try them in.
    pub fn pools(&self) -> impl Iterator<Item = &SwiotlbPool> + '_ {
        core::iter::once(&self.pool).chain(self.extra_pools())
    }

    /// Pageblocks of the reserved range.
    pub fn nr_pageblocks(&self) -> usize {
        self.blocks.len()
    }

    /// State of pageblock `block` of the reserved range.
    pub fn pageblock_state(&self, block: usize) -> Option<BlockState> {
        (block < self.blocks.len()).then(|| self.blocks.get(block))
    }

    /// Pageblocks in `state`.
    pub fn pageblocks_in(&self, state: BlockState) -> usize {
        self.blocks.count(state)
    }

    /// The manager's counters.
    pub fn stats(&self) -> LendStats {
        self.counters.snapshot()
    }

    // ---- the watermarks (IRQ-safe: atomics only) ----

    /// Slots that bounce buffers may use now: neither lent, carved nor unused.
    pub fn usable_slots(&self) -> usize {
        self.pools().map(SwiotlbPool::usable_slots).sum()
    }

    /// Free slots over all pools.
    pub fn free_slots(&self) -> usize {
        self.pools().map(SwiotlbPool::free_slots).sum()
    }

    /// Used slots over all pools.
    pub fn used_slots(&self) -> usize {
        self.pools().map(SwiotlbPool::used_slots).sum()
    }

    /// Free slots under `swiotlb_low_wm`% of usable slots. Free as the watermarks count them: in
    /// the free maps, the slot caches' parked runs not (see [`SwiotlbPool::held_slots`]); read
    /// without a lock (task context asks at every scheduling point).
    pub fn below_low_wm(&self) -> bool {
        let free: usize = self.pools().map(SwiotlbPool::free_map_slots).sum();
        free * 100 < self.tunables.low_wm_percent as usize * self.usable_slots()
    }

    /// Held slots (used by mappings or parked in the slot caches, see
    /// [`SwiotlbPool::held_slots`]) at or over `swiotlb_high_wm`% of usable slots.
    #[inline]
    pub fn at_or_above_high_wm(&self) -> bool {
        // No walk while the default pool is the only one (`static` and `lend` always): the map
        // path asks after every mapping.
        let (used, usable) = match self.nr_extra.load(Ordering::Acquire) {
            0 => (self.pool.held_slots(), self.pool.usable_slots()),
            _ => self.usage_of_all_pools(),
        };
        used * 100 >= self.tunables.high_wm_percent as usize * usable
    }

    /// Used and usable slots over all pools, in one walk (out of line).
    #[inline(never)]
    fn usage_of_all_pools(&self) -> (usize, usize) {
        self.pools().fold((0, 0), |(used, usable), p| (used + p.held_slots(), usable + p.usable_slots()))
    }

    /// Whether the policy could add slots now.
    fn can_grow(&self) -> bool {
        match self.policy {
            SwiotlbPolicy::Static => false,
            SwiotlbPolicy::Lend => self.blocks.count(BlockState::Lent) > 0,
            SwiotlbPolicy::Dynamic => self.nr_extra.load(Ordering::Relaxed) < MAX_EXTRA_POOLS,
            SwiotlbPolicy::Cma => self.cma_can_grow(),
        }
    }

    /// Whether the worker should be scheduled to grow the pools: a mapping missed or free slots
    /// are under the low watermark, and the policy has something to grow into. Cheap (atomics
    /// only); interrupt handlers and the map path call it.
    pub fn should_kick(&self) -> bool {
        self.can_grow() && (self.miss_pending.load(Ordering::Relaxed) || self.below_low_wm())
    }

    /// Records that a mapping found no room, so the next worker run grows the pools. Any
    /// context.
    pub fn note_miss(&self) {
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        self.miss_pending.store(true, Ordering::Relaxed);
    }

    /// Whether a mapping missed since the worker last ran.
    pub fn miss_pending(&self) -> bool {
        self.miss_pending.load(Ordering::Relaxed)
    }

    // ---- the mapping entry points (any context) ----

    /// Bounces `size` bytes at `orig` (see [`SwiotlbPool::map`]), trying the default pool then the
    /// extra pools. If none has room the miss is noted ([`should_kick`](Self::should_kick) turns
    /// true); under `dynamic` a transient pool is then allocated for this mapping (Linux
    /// `swiotlb_find_slots`), otherwise the last pool's error is returned: the caller defers or
    /// fails the request.
    ///
    /// # Safety
    ///
    /// As [`SwiotlbPool::map`]: the caller owns `[orig, orig + size)` until the matching unmap
    /// and does not touch it meanwhile.
    #[allow(unsafe_code)]
    pub unsafe fn map(&self, orig: PhysAddr, size: usize, dir: DmaDirection, align: SlotAlignment) -> Result<PhysAddr, SwiotlbError> {
        // SAFETY: this function's contract, handed on.
        unsafe { self.map_attrs(orig, size, dir, align, DmaAttrs::NONE) }
    }

    /// [`map`](Self::map) with attributes (see [`SwiotlbPool::map_attrs`]). A transient pool
    /// always copies in: its pages come from the page allocator, never scrubbed ahead.
    ///
    /// # Safety
    ///
    /// As [`map`](Self::map).
    #[allow(unsafe_code)]
    #[inline]
    pub unsafe fn map_attrs(
        &self,
        orig: PhysAddr,
        size: usize,
        dir: DmaDirection,
        align: SlotAlignment,
        attrs: DmaAttrs,
    ) -> Result<PhysAddr, SwiotlbError> {
        // SAFETY: this function's contract, handed on.
        unsafe { self.map_attrs_in(orig, size, dir, align, attrs, crate::arch::in_interrupt()) }
    }

    /// [`map_attrs`](Self::map_attrs) for a caller that has read
    /// `in_irq = arch::in_interrupt()` already (the DMA API's bounce path).
    ///
    /// # Safety
    ///
    /// As [`map`](Self::map).
    #[allow(unsafe_code)]
    #[inline(always)]
    pub unsafe fn map_attrs_in(
        &self,
        orig: PhysAddr,
        size: usize,
        dir: DmaDirection,
        align: SlotAlignment,
        attrs: DmaAttrs,
        in_irq: bool,
    ) -> Result<PhysAddr, SwiotlbError> {
        // A run of the default pool's slot cache first, inline: it was counted held before
        // (see `SwiotlbPool::held_slots`), so the usage the watermark goes by has not changed,
        // nothing to note.
        if super::super::may_take_cached_run(size, dir, attrs) {
            // SAFETY: this function's contract, handed on; `may_take_cached_run` holds.
            if let Some(tlb_addr) = unsafe { self.pool.map_cached(orig, size, dir, align, attrs, in_irq) } {
                return Ok(tlb_addr);
            }
        }
        // SAFETY: this function's contract, handed on.
        unsafe { self.map_searched_in(orig, size, dir, align, attrs, in_irq) }
    }

    /// [`map_attrs_in`](Self::map_attrs_in) past the slot cache: the default pool's search, in
    /// one call, outside the walk over the extra pools; the rest out of line.
    ///
    /// # Safety
    ///
    /// As [`map`](Self::map).
    #[allow(unsafe_code)]
    #[inline(always)]
    pub unsafe fn map_searched_in(
        &self,
        orig: PhysAddr,
        size: usize,
        dir: DmaDirection,
        align: SlotAlignment,
        attrs: DmaAttrs,
        in_irq: bool,
    ) -> Result<PhysAddr, SwiotlbError> {
        // SAFETY: this function's contract, handed on to the pool that maps.
        match unsafe { self.pool.map_searched(orig, size, dir, align, attrs, in_irq) } {
            Ok(tlb_addr) => Ok(self.mapped(tlb_addr)),
            // SAFETY: as above.
            Err(e) => unsafe { self.map_attrs_missed(e, orig, size, dir, align, attrs) },
        }
    }

    /// The rest of [`map_attrs`](Self::map_attrs) once the default pool refused with `e`: the
    /// extra pools, then a transient pool.
    ///
    /// # Safety
    ///
    /// As [`map`](Self::map).
    #[allow(unsafe_code)]
    #[cold]
    #[inline(never)]
    unsafe fn map_attrs_missed(
        &self,
        e: SwiotlbError,
        orig: PhysAddr,
        size: usize,
        dir: DmaDirection,
        align: SlotAlignment,
        attrs: DmaAttrs,
    ) -> Result<PhysAddr, SwiotlbError> {
        let mut no_room = match e {
            SwiotlbError::BufferFull { .. } | SwiotlbError::BelowReserve { .. } => e,
            e => return Err(e),
        };
        for pool in self.extra_pools() {
            // SAFETY: this function's contract, handed on to the pool that maps.
            match unsafe { pool.map_attrs(orig, size, dir, align, attrs) } {
                Ok(tlb_addr) => return Ok(self.mapped(tlb_addr)),
                Err(e @ (SwiotlbError::BufferFull { .. } | SwiotlbError::BelowReserve { .. })) => no_room = e,
                Err(e) => return Err(e),
            }
        }
        self.note_miss();
        if self.transient.enabled() {
            // SAFETY: this function's contract, handed on to the transient pool.
            return unsafe { self.transient.map(orig, size, dir, align) }.map_err(|_| no_room);
        }
        Err(no_room)
    }

    /// A pool mapped `tlb_addr`: notes high usage for the worker, hands the address on. Inline
    /// in [`map_attrs`](Self::map_attrs), itself inline in its caller: a call to the pool and a
    /// few loads (the caller already holds the arguments the miss path needs).
    #[inline]
    fn mapped(&self, tlb_addr: PhysAddr) -> PhysAddr {
        if self.at_or_above_high_wm() {
            self.high_usage_seen.store(true, Ordering::Relaxed);
        }
        tlb_addr
    }

    /// One bounded scrub step over the pools (see [`SwiotlbPool::scrub_step`]): zeroes at most
    /// `max_slots` dirty free slots and returns how many. Task context, no lock held.
    /// Only while the pools are quiet (usage under `swiotlb_high_wm`, no miss pending): a run
    /// being scrubbed is out of use, and must not make a burst of mappings miss and the pool grow.
    pub fn scrub_step(&self, max_slots: usize) -> usize {
        if self.miss_pending() || self.at_or_above_high_wm() {
            return 0;
        }
        self.pools().map(|p| p.scrub_step(max_slots)).find(|&n| n != 0).unwrap_or(0)
    }

    /// Turns clean-slot tracking on or off in every pool (bootarg `swiotlb_clean_slots=`).
    pub fn set_clean_slots(&self, on: bool) {
        self.pools().for_each(|p| p.set_clean_slots(on));
    }

    /// Sets the colour period of every pool (bootarg `swiotlb_colour_kib=`, see
    /// [`SwiotlbPool::set_colour_period`]); pools made later take the default pool's.
    pub fn set_colour_period(&self, bytes: u64) {
        self.pools().for_each(|p| p.set_colour_period(bytes));
    }

    /// Sets the slot cache of every pool (bootarg `swiotlb_slot_cache=`, see
    /// [`SwiotlbPool::set_slot_cache`]); pools made later take the default pool's.
    pub fn set_slot_cache(&self, runs: usize) {
        self.pools().for_each(|p| p.set_slot_cache(runs));
    }

    /// Whether `pa` is inside a live bounce buffer of one of the pools (Linux
    /// `is_swiotlb_buffer`): a lent page the page allocator handed out is not. Lock-free,
    /// O(number of pools), transient ones included. Device pools answer for themselves
    /// ([`super::DevicePool`]).
    pub fn is_swiotlb_buffer(&self, pa: PhysAddr) -> bool {
        self.may_hold(pa) && (self.pools().any(|p| p.is_swiotlb_buffer(pa)) || self.transient.is_swiotlb_buffer(pa))
    }

    /// The largest mapping a device with this `min_align_mask` can always get (Linux
    /// `swiotlb_max_mapping_size`): one segment, whatever the pool.
    pub fn max_mapping_size(&self, min_align_mask: u64) -> usize {
        crate::dma::swiotlb::max_mapping_size(min_align_mask)
    }

    /// The pool that owns `pa` (Linux `swiotlb_find_pool`), in one walk of the pool list,
    /// lock-free: the first pool whose slot at `pa` is used or free answers (a lent slot may sit
    /// under another pool's, as a released `cma` chunk's does), then the transient pools. Unmap
    /// and sync call the pool found directly. Device pools answer for themselves
    /// ([`DevicePoolSlot::find_pool`](crate::dma::pools::DevicePoolSlot::find_pool)).
    #[inline]
    pub fn find_pool(&self, pa: PhysAddr) -> SlotLookup<'_> {
        // The default pool first, outside the walk over the extra ones (as `map_attrs`), and
        // before `may_hold`: its lookup checks its own range, so a slot of it (the common case)
        // is found without the span's loads; `may_hold` then spares the rest the walk.
        match self.pool.lookup(pa) {
            SlotLookup::Outside => {}
            found => return found,
        }
        if !self.may_hold(pa) {
            return SlotLookup::Outside;
        }
        for pool in self.extra_pools() {
            match pool.lookup(pa) {
                SlotLookup::Outside => continue,
                found => return found,
            }
        }
        if self.transient.is_swiotlb_buffer(pa) {
            return SlotLookup::Live(FoundPool::Transient(&self.transient));
        }
        SlotLookup::Outside
    }

    // ---- pageblock arithmetic ----

    /// Slots of pageblock `block` in the default pool.
    pub(super) fn block_slots(&self, block: usize) -> Range<usize> {
        block * SLOTS_PER_PAGEBLOCK..(block + 1) * SLOTS_PER_PAGEBLOCK
    }

    /// Physical range of the pageblocks `blocks`.
    pub(super) fn block_addrs(&self, blocks: Range<usize>) -> Range<PhysAddr> {
        self.start + blocks.start as u64 * PAGEBLOCK_SIZE..self.start + blocks.end as u64 * PAGEBLOCK_SIZE
    }

    /// Whether every slot of `block` is free.
    pub(super) fn block_all_free(&self, block: usize) -> bool {
        self.block_slots(block).all(|s| self.pool.slot_state(s) == Some(crate::dma::swiotlb::SlotState::Free))
    }

    /// Areas for a pool of `nslots` (at most the default pool's count, so every area holds whole
    /// segments).
    pub(super) fn areas_for(&self, nslots: usize) -> usize {
        let max = (nslots / IO_TLB_SEGSIZE).max(1);
        let mut n = self.pool.nareas().min(max);
        while !nslots.is_multiple_of(IO_TLB_SEGSIZE * n) {
            n /= 2;
        }
        n.max(1)
    }

    /// A pool of `nslots` slots at `start`, for memory the caller has just filled with zeros:
    /// every slot starts clean, and clean-slot tracking is as the default pool's.
    pub(super) fn new_zeroed_pool(&self, start: PhysAddr, nslots: usize) -> Result<SwiotlbPool, SwiotlbError> {
        let pool = self.new_dirty_pool(start, nslots)?;
        pool.mark_free_slots_clean();
        Ok(pool)
    }

    /// A pool of `nslots` slots at `start` whose memory nobody zeroed: no slot is known clean;
    /// clean-slot tracking is as the default pool's.
    fn new_dirty_pool(&self, start: PhysAddr, nslots: usize) -> Result<SwiotlbPool, SwiotlbError> {
        let pool = SwiotlbPool::new(start, nslots, self.areas_for(nslots), self.mem)?;
        pool.set_clean_slots(self.pool.clean_slots());
        pool.set_colour_period(self.pool.colour_period());
        pool.set_slot_cache(self.pool.slot_cache());
        Ok(pool)
    }

    /// A pool of `nslots` slots at `start` for memory the pool has just taken from the page
    /// allocator (an extra pool, a CMA chunk): zeroed first and clean with
    /// `swiotlb_reclaim_scrub=on`, otherwise dirty, for idle CPUs to zero (what the pages' last
    /// owner left never reaches a device: a mapping on dirty slots copies in and zeroes the rest).
    pub(super) fn new_grown_pool(&self, start: PhysAddr, nslots: usize) -> Result<SwiotlbPool, SwiotlbError> {
        if self.tunables.reclaim_scrub {
            self.mem.fill(start, 0, slot_bytes(nslots));
            self.new_zeroed_pool(start, nslots)
        } else {
            self.new_dirty_pool(start, nslots)
        }
    }
}

impl fmt::Display for SwiotlbMem {
    /// The stats table: one line per pool, the pageblock states, the counters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "swiotlb: policy {:?}{}, {} pageblocks reserved at {:#x}",
            self.policy,
            if self.never_lend { " (never lent)" } else { "" },
            self.blocks.len(),
            self.start
        )?;
        writeln!(
            f,
            "  {:<8} {:>23} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9} {:>6} {:>7} {:>7} {:>11} {:>11}",
            "pool", "range", "slots", "free", "used", "lent", "hiwater", "maps", "fails", "irqmaps", "irqfail", "bytes->dev", "bytes->cpu"
        )?;
        for (i, pool) in self.pools().enumerate() {
            let s = pool.stats();
            let name = if i == 0 { alloc::string::String::from("default") } else { alloc::format!("extra{}", i - 1) };
            writeln!(
                f,
                "  {:<8} {:#x}-{:#x} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9} {:>6} {:>7} {:>7} {:>11} {:>11}",
                name,
                pool.start(),
                pool.end(),
                s.total_slots,
                s.free_slots,
                s.used_slots,
                s.lent_slots,
                s.used_hiwater,
                s.maps,
                s.map_failures,
                s.maps_in_irq,
                s.irq_failures,
                s.bytes_to_device,
                s.bytes_to_cpu
            )?;
        }
        write!(f, "  pageblocks:")?;
        for state in BlockState::ALL {
            write!(f, " {} {}", self.blocks.count(state), state.name())?;
        }
        writeln!(f)?;
        write!(f, "{}", self.stats())
    }
}

/// Bytes in `nslots` slots.
pub(super) const fn slot_bytes(nslots: usize) -> usize {
    nslots * IO_TLB_SIZE
}
