//! The pool: areas, slot states, the IRQ reserve and lending spare slots to the page allocator
//! (Linux `struct io_tlb_pool`; lending is this kernel's MIGRATE_SWIOTLB design).
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::ops::Range;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::area::{AreaSlots, MappingInfo, CACHED_RUN_SLOTS};
use super::slots::{AtomicSegmentState, SlotRequest};
use super::IO_TLB_SIZE;
use super::{DmaDirection, SlotAlignment, SlotState, SwiotlbError, SwiotlbStats, IO_TLB_SEGSIZE, IO_TLB_SHIFT};
use crate::arch;
use crate::mm::phys::PhysMemory;
use crate::mm::{PhysAddr, PAGE_SIZE};
use crate::sync::IrqSafeSpinLock;

/// A contiguous range of bounce slots `[start, end)`, split into areas with a lock each.
///
/// Created in task context (it allocates the slot metadata); every other method is safe in IRQ
/// context and never allocates, except `lend`/`unlend`, meant for the task-context code that
/// moves spare slots to and from the page allocator.
pub struct SwiotlbPool {
    /// Where the slots' memory is read and written (the bounce copies, scrubbing).
    mem: &'static dyn PhysMemory,
    start: PhysAddr,
    end: PhysAddr,
    /// Slots per area, a multiple of [`IO_TLB_SEGSIZE`] so no segment spans two areas.
    area_nslots: usize,
    areas: Vec<IrqSafeSpinLock<AreaSlots>>,
    /// Slots of each area that are not lent, readable without the area's lock: a search skips an
    /// area that could not hold the request even empty (under `lend`, whole areas are lent at
    /// times) without taking its lock. Changed only by `lend`/`unlend`, after the area's own
    /// count and before the free counter's release (so a search that sees the slots as free
    /// sees them here too).
    area_usable: Vec<AtomicUsize>,
    /// The slot states, one [`AtomicSegmentState`] (used and lent bitmaps) per segment: readable
    /// without a lock; written under the lock of the segment's area, the only one that holds it.
    states: Vec<AtomicSegmentState>,
    counters: super::stats::Counters,
    /// Free slots only IRQ-context mappings may take.
    irq_reserve_slots: AtomicUsize,
    /// Set while a lend or unlend runs: they check slots, then change them, and must not
    /// interleave with each other (mappings never touch lent slots).
    lending: AtomicBool,
    /// `swiotlb_clean_slots=on`: `DmaAttrs::no_copy_in` mappings may skip the copy-in when their
    /// slots are clean, and idle CPUs scrub dirty free slots. Off: Linux's copy-in, always.
    clean_slots: AtomicBool,
    /// Bytes between two pages of one colour (`swiotlb_colour_kib=`): the slot search prefers
    /// runs whose pages do not share the original's colours. 0: off.
    colour_period: AtomicU64,
    /// Set while [`Self::scrub_step`] has a run out of the free maps. A scrub backs off from a
    /// lend or unlend under way; a lend or unlend waits for a scrub to finish (one bounded
    /// memset), so the worker never sees a scrub as a conflict. Both set their flag, then read
    /// the other's, SeqCst: at least one sees the other.
    scrub_busy: AtomicBool,
    /// False once a scrub step found no dirty free slot in any area, until slots are released
    /// or given back unscrubbed: the steps of an idle CPU with nothing to zero then return at
    /// once instead of walking every segment. Cleared before a step searches, so a release
    /// during the search sends the next step searching again.
    maybe_dirty: AtomicBool,
    /// Runs each area's slot cache keeps (`swiotlb_slot_cache=`; 0: off, Linux's behaviour):
    /// read before taking an area lock for a cached run.
    slot_cache: AtomicUsize,
}

/// Slots [`SwiotlbPool::scrub_step`] zeroes at most per call: 64 KiB, a few microseconds of
/// memset, with interrupts enabled.
pub const SCRUB_STEP_SLOTS: usize = 32;

/// How much of one area bounce buffers may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AreaUsage {
    /// Slots that are not lent: free or held by mappings.
    pub usable: usize,
    /// Free slots.
    pub free: usize,
}

/// The position of a slot: area and index inside it.
#[derive(Clone, Copy, Debug)]
struct SlotPos {
    area: usize,
    local: usize,
}

impl SwiotlbPool {
    /// A pool of `nslots` free slots from `start`, in `nareas` areas (Linux
    /// `swiotlb_init_io_tlb_pool`). `start` is page aligned, `nareas` a power of two, and
    /// `nslots` a multiple of `IO_TLB_SEGSIZE * nareas`. Task context: allocates the metadata.
    /// The slot memory itself is not touched (Linux clears it here; the caller owns that memory
    /// and scrubs it as it sees fit); `mem` reaches it, and the original buffers, from then on.
    pub fn new(start: PhysAddr, nslots: usize, nareas: usize, mem: &'static dyn PhysMemory) -> Result<Self, SwiotlbError> {
        let invalid = |reason| Err(SwiotlbError::InvalidGeometry { reason });
        if nareas == 0 || !nareas.is_power_of_two() {
            return invalid("the area count must be a power of two");
        }
        if nslots == 0 || !nslots.is_multiple_of(IO_TLB_SEGSIZE * nareas) {
            return invalid("the slot count must be a non-zero multiple of 128 * areas");
        }
        if !start.is_multiple_of(PAGE_SIZE) {
            return invalid("the start must be page aligned");
        }
        let Some(end) = (nslots as u64).checked_mul(IO_TLB_SIZE as u64).and_then(|b| start.checked_add(b)) else {
            return invalid("the pool wraps around the address space");
        };
        let area_nslots = nslots / nareas;
        Ok(Self {
            mem,
            start,
            end,
            area_nslots,
            areas: (0..nareas).map(|_| IrqSafeSpinLock::new(AreaSlots::new(area_nslots))).collect(),
            area_usable: (0..nareas).map(|_| AtomicUsize::new(area_nslots)).collect(),
            states: (0..nslots / IO_TLB_SEGSIZE).map(|_| AtomicSegmentState::new()).collect(),
            counters: super::stats::Counters::new(nslots),
            irq_reserve_slots: AtomicUsize::new(0),
            lending: AtomicBool::new(false),
            clean_slots: AtomicBool::new(true),
            colour_period: AtomicU64::new(0),
            scrub_busy: AtomicBool::new(false),
            maybe_dirty: AtomicBool::new(true),
            slot_cache: AtomicUsize::new(0),
        })
    }

    /// First byte of the pool.
    pub fn start(&self) -> PhysAddr {
        self.start
    }

    /// One past the last byte of the pool.
    pub fn end(&self) -> PhysAddr {
        self.end
    }

    /// The pool's address range, `start()..end()`.
    pub fn range(&self) -> Range<PhysAddr> {
        self.start..self.end
    }

    /// The physical-memory accessor the pool copies and scrubs through.
    pub fn phys(&self) -> &'static dyn PhysMemory {
        self.mem
    }

    /// Slots in the pool.
    pub fn nslots(&self) -> usize {
        self.states.len() * IO_TLB_SEGSIZE
    }

    /// Areas (locks) in the pool.
    pub fn nareas(&self) -> usize {
        self.areas.len()
    }

    /// The area holding slot `index`.
    pub fn area_of_slot(&self, index: usize) -> usize {
        index / self.area_nslots
    }

    /// Usable (not lent) and free slots of area `area`, read under its lock. Task context (the
    /// `lend` worker spreads pageblocks over the areas with it).
    pub fn area_usage(&self, area: usize) -> AreaUsage {
        let slots = self.areas[area].lock();
        AreaUsage { usable: slots.usable(), free: slots.usable() - slots.used() + slots.cached_slots() }
    }

    /// Address of slot `index` (Linux `slot_addr`); `None` past the end.
    pub fn slot_addr(&self, index: usize) -> Option<PhysAddr> {
        (index < self.nslots()).then(|| self.start + ((index as u64) << IO_TLB_SHIFT))
    }

    /// The slot holding `pa`, if `pa` is in the pool.
    pub fn slot_index(&self, pa: PhysAddr) -> Option<usize> {
        (self.start..self.end).contains(&pa).then(|| ((pa - self.start) >> IO_TLB_SHIFT) as usize)
    }

    /// State of slot `index`; `None` past the end.
    pub fn slot_state(&self, index: usize) -> Option<SlotState> {
        self.states.get(index / IO_TLB_SEGSIZE).map(|seg| seg.load(index % IO_TLB_SEGSIZE))
    }

    /// Whether `pa` is inside a held slot of this pool (Linux `is_swiotlb_buffer`): a live bounce
    /// buffer's, or a run parked in a slot cache (which holds no mapping: an unmap or sync there
    /// is refused). Looks at the slot, not only the range: a lent page in the range belongs to
    /// the page allocator.
    /// Lock-free and O(1): it runs on every unmap and sync of the DMA layer.
    pub fn is_swiotlb_buffer(&self, pa: PhysAddr) -> bool {
        self.slot_index(pa).is_some_and(|i| self.states[i / IO_TLB_SEGSIZE].is_used(i % IO_TLB_SEGSIZE))
    }

    /// Whether `pa` is inside this pool in a free slot: an unmap or sync there is a second unmap
    /// or a stale address, never a direct mapping (a page the page allocator lent out sits in
    /// *lent* slots). Lock-free, like [`is_swiotlb_buffer`](Self::is_swiotlb_buffer).
    pub fn is_free_slot(&self, pa: PhysAddr) -> bool {
        self.slot_index(pa).is_some_and(|i| self.states[i / IO_TLB_SEGSIZE].is_free(i % IO_TLB_SEGSIZE))
    }

    /// Keeps `nslots` free slots for IRQ-context mappings: task-context mappings (and lending)
    /// fail with [`SwiotlbError::BelowReserve`] rather than eat into them.
    pub fn set_irq_reserve_slots(&self, nslots: usize) {
        self.irq_reserve_slots.store(nslots, Ordering::Relaxed);
    }

    /// Slots kept for IRQ-context mappings.
    pub fn irq_reserve_slots(&self) -> usize {
        self.irq_reserve_slots.load(Ordering::Relaxed)
    }

    /// Slots free for bounce buffers, the slot caches' parked runs included (read under each
    /// area's lock).
    pub fn free_slots(&self) -> usize {
        self.counters.free.load(Ordering::Relaxed) + self.cached_slots()
    }

    /// Slots held by mappings, pad slots included (the slot caches' parked runs not; read
    /// under each area's lock).
    pub fn used_slots(&self) -> usize {
        self.counters.used.load(Ordering::Relaxed).saturating_sub(self.cached_slots())
    }

    /// Slots held by mappings and by the slot caches, without a lock: what the watermarks and
    /// the IRQ reserve go by (as Linux's zone watermarks go by `NR_FREE_PAGES`, which leaves out
    /// the pages on the per-CPU lists).
    pub fn held_slots(&self) -> usize {
        self.counters.used.load(Ordering::Relaxed)
    }

    /// Slots in the free maps (the slot caches' parked runs not), without a lock.
    pub(super) fn free_map_slots(&self) -> usize {
        self.counters.free.load(Ordering::Relaxed)
    }

    /// Slots lent to the page allocator.
    pub fn lent_slots(&self) -> usize {
        self.counters.lent.load(Ordering::Relaxed)
    }

    /// Slots that serve as bounce slots (all but the lent ones), used or free.
    pub fn usable_slots(&self) -> usize {
        self.nslots() - self.lent_slots()
    }

    /// Most slots used at once (Linux `used_hiwater`).
    pub fn used_hiwater(&self) -> usize {
        self.counters.used_hiwater.load(Ordering::Relaxed)
    }

    /// Restarts the high-water mark from the current use (Linux allows writing 0 to it).
    pub fn reset_used_hiwater(&self) {
        self.counters.used_hiwater.store(self.held_slots(), Ordering::Relaxed);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SwiotlbStats {
        let counts = self.counters.snapshot();
        let cached = self.cached_slots();
        SwiotlbStats {
            total_slots: self.nslots(),
            // Parked runs reported free, as `free_slots` and `used_slots` do.
            free_slots: counts.free_slots + cached,
            used_slots: counts.used_slots.saturating_sub(cached),
            irq_reserve_slots: self.irq_reserve_slots(),
            area_lock_contention: self.areas.iter().map(IrqSafeSpinLock::contended).sum(),
            ..counts
        }
    }

    /// Lends the free slots `slots` to the page allocator: they stop being bounce slots and the
    /// slot search never crosses them. The range is usually a page block (1024 slots) and may span
    /// areas. Fails, changing nothing, if a slot is not free or lending would eat into the IRQ
    /// reserve.
    pub fn lend(&self, slots: Range<usize>) -> Result<(), SwiotlbError> {
        self.check_range(&slots)?;
        let _lending = LendingGuard::enter_after_scrub(&self.lending, &self.scrub_busy)?;
        let nslots = slots.len();
        let reserve = self.irq_reserve_slots();
        // Parked runs are counted held and kept out of the free maps: the areas' slot caches
        // give theirs up first (as Linux drains the per-CPU page lists before it isolates).
        for (area, _) in self.area_chunks(slots.clone()) {
            let drained = self.areas[area].lock().drain_cache(self.area_states(area));
            self.slots_released(drained);
        }
        if let Err(free) = self.counters.take_free(nslots, reserve) {
            // Name the slot in the way if there is one: more useful than the count.
            return Err(match slots.clone().filter_map(|i| Some((i, self.slot_state(i)?))).find(|s| s.1 != SlotState::Free) {
                Some((slot, state)) => SwiotlbError::SlotNotFree { slot, state },
                None => SwiotlbError::BelowReserve { nslots, free, reserve },
            });
        }
        for (n, (area, local)) in self.area_chunks(slots.clone()).enumerate() {
            let lent = {
                let mut area_slots = self.areas[area].lock();
                // A run an unmap parked since the drain above: freed under this hold of the lock.
                let drained = area_slots.drain_cache(self.area_states(area));
                let lent = area_slots.lend(local, self.area_states(area));
                drop(area_slots);
                self.slots_released(drained);
                lent
            };
            if let Err((busy, state)) = lent {
                // Give back what this call lent so far: nothing else touches lent slots.
                for (area, local) in self.area_chunks(slots.clone()).take(n) {
                    let _ = self.areas[area].lock().unlend(local, false, self.area_states(area));
                }
                self.counters.put_free(nslots);
                let slot = area * self.area_nslots + busy;
                return Err(SwiotlbError::SlotNotFree { slot, state });
            }
        }
        for (area, local) in self.area_chunks(slots) {
            self.area_usable[area].fetch_sub(local.len(), Ordering::Relaxed);
        }
        self.counters.lent.fetch_add(nslots, Ordering::Relaxed);
        Ok(())
    }

    /// Takes the lent slots `slots` back from the page allocator and makes them free bounce
    /// slots, first filling them with zeros if `scrub` (whatever the page allocator's users left
    /// there must not reach a device). Fails, changing nothing, if a slot is not lent.
    pub fn unlend(&self, slots: Range<usize>, scrub: bool) -> Result<(), SwiotlbError> {
        self.check_range(&slots)?;
        let _lending = LendingGuard::enter_after_scrub(&self.lending, &self.scrub_busy)?;
        // All or nothing: check every slot before zeroing any or freeing any area's. A range
        // in one area, not zeroed here, needs no separate pass: that area's `unlend` checks
        // under the same lock hold and changes nothing on failure.
        let one_area = slots.start / self.area_nslots == (slots.end - 1) / self.area_nslots;
        if scrub || !one_area {
            for (area, local) in self.area_chunks(slots.clone()) {
                let slots = self.areas[area].lock();
                if let Some((busy, state)) = slots.first_not(local, SlotState::Lent, self.area_states(area)) {
                    let slot = area * self.area_nslots + busy;
                    return Err(SwiotlbError::SlotNotLent { slot, state });
                }
            }
        }
        // Still lent: only lend/unlend change lent slots, and `_lending` excludes them. Scrub
        // without holding a lock: a page block takes a while to clear.
        if scrub {
            self.mem.fill(self.start + ((slots.start as u64) << IO_TLB_SHIFT), 0, slots.len() * IO_TLB_SIZE);
        }
        for (area, local) in self.area_chunks(slots.clone()) {
            let n = local.len();
            self.areas[area]
                .lock()
                .unlend(local, scrub, self.area_states(area))
                .map_err(|(busy, state)| SwiotlbError::SlotNotLent { slot: area * self.area_nslots + busy, state })?;
            self.area_usable[area].fetch_add(n, Ordering::Relaxed);
        }
        if !scrub {
            self.maybe_dirty.store(true, Ordering::Relaxed);
        }
        self.counters.lent.fetch_sub(slots.len(), Ordering::Relaxed);
        self.counters.put_free(slots.len());
        Ok(())
    }

    /// Takes slots for `req` and returns the head slot's global index (Linux
    /// `swiotlb_pool_find_slots`). Honours the IRQ reserve.
    /// With `prefer_clean`, also says whether every slot it took was clean (see
    /// [`AreaSlots::alloc`]); without, the answer is `false`.
    #[inline(always)]
    pub(super) fn alloc_slots(&self, req: &SlotRequest, dir: DmaDirection, prefer_clean: bool) -> Result<(usize, bool), SwiotlbError> {
        self.alloc_slots_in(req, dir, prefer_clean, arch::in_interrupt())
    }

    /// [`Self::alloc_slots`] for a caller that has read `in_irq = arch::in_interrupt()`.
    #[inline(always)]
    pub(super) fn alloc_slots_in(
        &self,
        req: &SlotRequest,
        dir: DmaDirection,
        prefer_clean: bool,
        in_irq: bool,
    ) -> Result<(usize, bool), SwiotlbError> {
        let reserve = if in_irq { 0 } else { self.irq_reserve_slots() };
        let mut taken = self.counters.take_free(req.nslots, reserve);
        // The free count leaves the slot caches' runs out: if freeing them would let this
        // mapping have its slots, they are freed, and it tries once more.
        if let Err(free) = taken {
            if free + self.cached_slots() >= req.nslots.saturating_add(reserve) && self.drain_slot_cache() != 0 {
                taken = self.counters.take_free(req.nslots, reserve);
            }
        }
        if let Err(free) = taken {
            self.counters.count_failure(in_irq);
            return Err(if free >= req.nslots {
                SwiotlbError::BelowReserve { nslots: req.nslots, free, reserve }
            } else {
                self.buffer_full(req)
            });
        }
        let mut found = self.search_areas(req, dir, prefer_clean);
        // A search that failed for want of a long enough run may fit once the slot caches'
        // runs are back in the free maps.
        if found.is_none() && self.drain_slot_cache() != 0 {
            found = self.search_areas(req, dir, prefer_clean);
        }
        self.search_ended(found, req, prefer_clean, in_irq)
    }

    /// The slot search over the areas, from this CPU's: (head slot, clean), or `None`.
    #[inline(always)]
    fn search_areas(&self, req: &SlotRequest, dir: DmaDirection, prefer_clean: bool) -> Option<(usize, bool)> {
        // One area (one CPU), the usual case: no area to choose, no loop, no slicing of the
        // states (the area's are all of them).
        if let [area] = &self.areas[..] {
            return area.lock().alloc(self.start, req, dir, prefer_clean, &self.states);
        }
        let nareas = self.nareas();
        // Start in this CPU's area (Linux `swiotlb_search_area` starts at
        // `raw_smp_processor_id() & (nareas - 1)`): CPUs mapping at once take different locks,
        // and one CPU keeps to one area's warm segment while it has room.
        let first_area = crate::arch::cpu_id() & (nareas - 1);
        for area in (0..nareas).map(|i| (first_area + i) & (nareas - 1)) {
            if self.area_usable[area].load(Ordering::Relaxed) < req.nslots {
                continue; // lent whole, or nearly: no lock to take
            }
            let base = self.start + (((area * self.area_nslots) as u64) << IO_TLB_SHIFT);
            let found = self.areas[area].lock().alloc(base, req, dir, prefer_clean, self.area_states(area));
            if let Some((local, clean)) = found {
                return Some((area * self.area_nslots + local, clean));
            }
        }
        None
    }

    /// Takes a run of this CPU's area's slot cache for a mapping of `size` bytes of `orig_addr`
    /// placed as `align` asks, if the cache is on and the mapping fits a cached run: at most a
    /// page, more than a slot, and an alignment a page-aligned run without a kept offset
    /// meets. No slot count changes (a parked run is counted held, see `SlotCache`), but a
    /// task-context mapping takes one only while the free maps hold at least the IRQ reserve, as
    /// a search would. Counts the mapping; returns the head slot, or `None` (then the search
    /// runs, and gives the errors).
    #[inline(always)]
    pub(super) fn alloc_cached(
        &self,
        orig_addr: PhysAddr,
        size: usize,
        dir: DmaDirection,
        align: SlotAlignment,
        in_irq: bool,
    ) -> Option<usize> {
        if self.slot_cache.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let masks = align.min_align_mask | align.alloc_align_mask;
        // The caller ([`map_cached`](Self::map_cached)) checked the size first.
        debug_assert!(size > IO_TLB_SIZE && size <= CACHED_RUN_SLOTS * IO_TLB_SIZE);
        let fits = masks < PAGE_SIZE
            && align.min_align_mask & (align.min_align_mask + 1) == 0
            && align.alloc_align_mask & (align.alloc_align_mask + 1) == 0
            && orig_addr & align.min_align_mask == 0;
        if !fits {
            return None;
        }
        if !in_irq && self.free_map_slots() < self.irq_reserve_slots() {
            return None;
        }
        let area = crate::arch::cpu_id() & (self.nareas() - 1);
        let local = self.areas[area].lock().alloc_cached(orig_addr, size, dir)?;
        self.counters.count_map(in_irq);
        Some(area * self.area_nslots + local)
    }

    /// Frees every run of every area's slot cache into the free maps (Linux `drain_all_pages`
    /// for the page allocator's per-CPU lists): before a failed search tries again (a lend
    /// drains each area it lends from itself, under that area's lock). Returns how many slots it
    /// freed, which move from the used count to the free count.
    pub fn drain_slot_cache(&self) -> usize {
        let mut freed = 0;
        for area in 0..self.nareas() {
            freed += self.areas[area].lock().drain_cache(self.area_states(area));
        }
        self.slots_released(freed);
        freed
    }

    /// Slots of the runs parked in the slot caches (read under each area's lock).
    pub fn cached_slots(&self) -> usize {
        self.cached_runs() * CACHED_RUN_SLOTS
    }

    /// Sets how many page runs each area's slot cache keeps (bootarg `swiotlb_slot_cache=`, at
    /// most [`SLOT_CACHE_MAX`](super::SLOT_CACHE_MAX); 1 keeps 2, the fewest that can serve a
    /// mapping; 0 turns the caches off and frees their runs: Linux's behaviour, every mapping
    /// searches).
    pub fn set_slot_cache(&self, runs: usize) {
        // A cache hands a run out only while it holds two (see `AreaSlots::alloc_cached`).
        let runs = if runs == 1 { 2 } else { runs.min(super::SLOT_CACHE_MAX) };
        self.slot_cache.store(runs, Ordering::Relaxed);
        for area in 0..self.nareas() {
            let freed = self.areas[area].lock().set_cache_cap(runs, self.area_states(area));
            self.slots_released(freed);
        }
    }

    /// Runs each area's slot cache keeps (0: off).
    pub fn slot_cache(&self) -> usize {
        self.slot_cache.load(Ordering::Relaxed)
    }

    /// Runs held in the slot caches now.
    pub fn cached_runs(&self) -> usize {
        self.areas.iter().map(|a| a.lock().cached_runs()).sum()
    }

    /// The counters' side of a slot search that took its slots from the free count: a run found
    /// (`found`: head slot, clean) is counted used and mapped; none gives the slots back.
    #[inline(always)]
    fn search_ended(
        &self,
        found: Option<(usize, bool)>,
        req: &SlotRequest,
        prefer_clean: bool,
        in_irq: bool,
    ) -> Result<(usize, bool), SwiotlbError> {
        match found {
            Some((head, clean)) => {
                self.counters.add_used(req.nslots);
                self.counters.count_map(in_irq);
                Ok((head, clean && prefer_clean))
            }
            None => {
                self.counters.put_free(req.nslots);
                self.counters.count_failure(in_irq);
                Err(self.buffer_full(req))
            }
        }
    }

    /// The live mapping covering `tlb_addr`.
    pub(super) fn find_mapping(&self, tlb_addr: PhysAddr) -> Result<MappingInfo, SwiotlbError> {
        self.find_mapping_in(tlb_addr).map(|(mapping, _)| mapping)
    }

    /// [`find_mapping`](Self::find_mapping), with the area the mapping lives in (for
    /// [`release_found`](Self::release_found)).
    #[inline(always)]
    pub(super) fn find_mapping_in(&self, tlb_addr: PhysAddr) -> Result<(MappingInfo, usize), SwiotlbError> {
        let not_mapped = SwiotlbError::NotMapped { tlb_addr };
        // No lock-free look at the slot's state first: the callers (unmap, sync) found the pool
        // by that look (`lookup`) just before.
        let index = self.slot_index(tlb_addr).ok_or(not_mapped.clone())?;
        let pos = self.slot_pos(index);
        let in_slot = ((tlb_addr - self.start) as usize) & (IO_TLB_SIZE - 1);
        let mapping = self.areas[pos.area].lock().mapping(pos.local, in_slot).ok_or(not_mapped)?;
        Ok((mapping, pos.area))
    }

    /// Frees the allocation whose head slot holds `tlb_addr` if `check` accepts the live mapping
    /// there ([`find_mapping`](Self::find_mapping)'s answer), all under one hold of the area lock:
    /// [`find_mapping`](Self::find_mapping) then [`release_slots`](Self::release_slots) without
    /// the second lock round, for an unmap that copies nothing back. `check` must refuse a
    /// mapping whose `position` is not 0 (not the head); nothing is freed if it refuses.
    #[inline(always)]
    pub(super) fn release_checked(
        &self,
        tlb_addr: PhysAddr,
        check: impl FnOnce(&MappingInfo) -> Result<(), SwiotlbError>,
    ) -> Result<(), SwiotlbError> {
        let not_mapped = || SwiotlbError::NotMapped { tlb_addr };
        let pos = self.slot_index(tlb_addr).map(|i| self.slot_pos(i)).ok_or_else(not_mapped)?;
        let in_slot = ((tlb_addr - self.start) as usize) & (IO_TLB_SIZE - 1);
        let nslots = {
            let states = self.area_states(pos.area);
            let mut area = self.areas[pos.area].lock();
            let mapping = area.mapping(pos.local, in_slot).ok_or_else(not_mapped)?;
            check(&mapping)?;
            area.release_mapping(&mapping, states).ok_or_else(not_mapped)?
        };
        self.slots_released(nslots);
        Ok(())
    }

    /// Frees the allocation that [`find_mapping_in`](Self::find_mapping_in) found as `mapping`
    /// in area `area`, if it still lives there unchanged (the unmap that copies back released
    /// the lock meanwhile): [`release_slots`](Self::release_slots) without a second lookup.
    /// `mapping` must have been looked up at the head's first byte (`position` 0).
    pub(super) fn release_found(&self, tlb_addr: PhysAddr, mapping: &MappingInfo, area: usize) -> Result<(), SwiotlbError> {
        let nslots = self.areas[area].lock().release_found(mapping, self.area_states(area));
        self.slots_released(nslots.ok_or(SwiotlbError::NotMapped { tlb_addr })?);
        Ok(())
    }

    /// Frees the allocation whose head slot holds `tlb_addr`.
    pub(super) fn release_slots(&self, tlb_addr: PhysAddr) -> Result<(), SwiotlbError> {
        let not_mapped = SwiotlbError::NotMapped { tlb_addr };
        let pos = self.slot_index(tlb_addr).map(|i| self.slot_pos(i)).ok_or(not_mapped.clone())?;
        let nslots = self.areas[pos.area].lock().release(pos.local, self.area_states(pos.area)).ok_or(not_mapped)?;
        self.slots_released(nslots);
        Ok(())
    }

    /// The pool's side of `nslots` slots an area just gave back to its free map (0: none, the
    /// unmapped run was parked): they are free again, and dirty (what the mapping left), so the
    /// next scrub step searches.
    #[inline(always)]
    fn slots_released(&self, nslots: usize) {
        if nslots == 0 {
            return;
        }
        self.maybe_dirty.store(true, Ordering::Relaxed);
        self.counters.used.fetch_sub(nslots, Ordering::Relaxed);
        self.counters.put_free(nslots);
    }

    /// Turns clean-slot tracking on or off (bootarg `swiotlb_clean_slots=`). Off, every bounced
    /// mapping copies in, as Linux, and [`Self::scrub_step`] does nothing.
    pub fn set_clean_slots(&self, on: bool) {
        self.clean_slots.store(on, Ordering::Relaxed);
    }

    /// Sets the colour period in bytes (bootarg `swiotlb_colour_kib=`; 0: off): mappings then
    /// prefer slots whose pages lie at other positions modulo it than the original's (see
    /// `SlotRequest::with_colour`). A period that is not a power of two of at least
    /// [`MIN_COLOUR_PERIOD`](super::MIN_COLOUR_PERIOD) turns it off.
    pub fn set_colour_period(&self, bytes: u64) {
        self.colour_period.store(bytes, Ordering::Relaxed);
    }

    /// The colour period in bytes (0: off).
    pub fn colour_period(&self) -> u64 {
        self.colour_period.load(Ordering::Relaxed)
    }

    /// Marks every free slot clean: for a pool whose memory the caller has just zeroed.
    pub fn mark_free_slots_clean(&self) {
        for area in &self.areas {
            area.lock().mark_free_slots_clean();
        }
    }

    /// Whether clean-slot tracking is on.
    pub fn clean_slots(&self) -> bool {
        self.clean_slots.load(Ordering::Relaxed)
    }

    /// Zeroes at most `max_slots` free dirty slots of one segment and marks them clean, so a
    /// later `no_copy_in` mapping of them may skip its copy-in; returns how many it zeroed (0:
    /// nothing to do, clean-slot tracking off, a lend or unlend under way, or free slots at the
    /// IRQ reserve). Meant for idle CPUs (`platform::dma::scrub_step`), in task context, no lock held: the
    /// area lock is held twice, briefly, to take the run out of the free map and give it back;
    /// the zeros are written in between with interrupts enabled. Never touches a used or lent
    /// slot: the run is taken from the free map under the lock, and lend/unlend are excluded
    /// meanwhile.
    pub fn scrub_step(&self, max_slots: usize) -> usize {
        if !self.clean_slots() {
            return 0;
        }
        if self.scrub_busy.compare_exchange(false, true, Ordering::SeqCst, Ordering::Relaxed).is_err() {
            return 0; // another CPU is scrubbing this pool
        }
        let _busy = ScrubGuard(&self.scrub_busy);
        if self.lending.load(Ordering::SeqCst) || !self.maybe_dirty.swap(false, Ordering::Relaxed) {
            return 0;
        }
        // From area 0, where one CPU's mappings go first.
        for area in 0..self.nareas() {
            let taken = {
                let mut slots = self.areas[area].lock();
                let run = slots.take_dirty_run(max_slots);
                match run {
                    // Honour the IRQ reserve as a mapping does: the run is out of use meanwhile.
                    Some((_, n)) if self.counters.take_free(n, self.irq_reserve_slots()).is_err() => {
                        slots.finish_scrub_aborted();
                        self.maybe_dirty.store(true, Ordering::Relaxed);
                        return 0;
                    }
                    other => other,
                }
            };
            let Some((local, n)) = taken else { continue };
            let first = area * self.area_nslots + local;
            self.mem.fill(self.start + ((first as u64) << IO_TLB_SHIFT), 0, n * IO_TLB_SIZE);
            self.areas[area].lock().finish_scrub();
            self.counters.put_free(n);
            self.counters.slots_scrubbed.fetch_add(n as u64, Ordering::Relaxed);
            // There may be more.
            self.maybe_dirty.store(true, Ordering::Relaxed);
            return n;
        }
        0
    }

    /// Whether slot `index` is known clean.
    #[cfg(test)]
    pub(super) fn slot_clean(&self, index: usize) -> bool {
        let pos = self.slot_pos(index);
        self.areas[pos.area].lock().is_clean(pos.local)
    }

    pub(super) fn counters(&self) -> &super::stats::Counters {
        &self.counters
    }

    fn buffer_full(&self, req: &SlotRequest) -> SwiotlbError {
        SwiotlbError::BufferFull { size: req.alloc_size, total: self.nslots(), used: self.held_slots() }
    }

    fn slot_pos(&self, index: usize) -> SlotPos {
        SlotPos { area: index / self.area_nslots, local: index % self.area_nslots }
    }

    /// The segment states of area `area`, indexed by area-local segment.
    #[inline(always)]
    fn area_states(&self, area: usize) -> &[AtomicSegmentState] {
        // One area (one CPU), the usual case: all of them, no slicing.
        if self.areas.len() == 1 {
            return &self.states;
        }
        let segs = self.area_nslots / IO_TLB_SEGSIZE;
        &self.states[area * segs..(area + 1) * segs]
    }

    fn check_range(&self, slots: &Range<usize>) -> Result<(), SwiotlbError> {
        if slots.is_empty() || slots.end > self.nslots() {
            return Err(SwiotlbError::InvalidSlotRange { range: slots.clone() });
        }
        Ok(())
    }

    /// The (area, area-local range) pieces of a global slot range.
    fn area_chunks(&self, slots: Range<usize>) -> impl Iterator<Item = (usize, Range<usize>)> {
        let per_area = self.area_nslots;
        let first_area = slots.start / per_area;
        let last_area = (slots.end - 1) / per_area;
        (first_area..=last_area).map(move |area| {
            let base = area * per_area;
            let start = slots.start.max(base) - base;
            let end = slots.end.min(base + per_area) - base;
            (area, start..end)
        })
    }

    /// Checks each area's segment maps and summary against the slot states and the counters
    /// against the areas. Exact only while no other CPU maps or unmaps.
    #[cfg(test)]
    pub(super) fn assert_consistent(&self) {
        let mut used = 0;
        for (area, slots) in self.areas.iter().enumerate() {
            let slots = slots.lock();
            used += slots.used();
            slots.assert_consistent(self.area_states(area), area);
        }
        // Parked runs (the slot caches') read Used and are counted held, but are reported free.
        let count = |s| (0..self.nslots()).filter(|&i| self.slot_state(i) == Some(s)).count();
        let cached = self.cached_slots();
        assert_eq!(used, count(SlotState::Used), "area used counts");
        assert_eq!(self.held_slots(), count(SlotState::Used), "used counter");
        assert_eq!(self.free_map_slots(), count(SlotState::Free), "free counter");
        assert_eq!(self.used_slots() + cached, count(SlotState::Used), "used slots reported");
        assert_eq!(self.free_slots(), count(SlotState::Free) + cached, "free slots reported");
        assert_eq!(self.lent_slots(), count(SlotState::Lent), "lent counter");
    }
}

/// Marks a lend or unlend in progress; dropping it ends it.
struct LendingGuard<'a>(&'a AtomicBool);

impl<'a> LendingGuard<'a> {
    /// Fails if a lend or unlend is under way; waits for a scrub step (see `scrub_busy`).
    fn enter_after_scrub(flag: &'a AtomicBool, scrub_busy: &AtomicBool) -> Result<Self, SwiotlbError> {
        flag.compare_exchange(false, true, Ordering::SeqCst, Ordering::Relaxed).map_err(|_| SwiotlbError::LendInProgress)?;
        while scrub_busy.load(Ordering::SeqCst) {
            core::hint::spin_loop();
        }
        Ok(Self(flag))
    }
}

/// Marks a scrub step in progress; dropping it ends it.
struct ScrubGuard<'a>(&'a AtomicBool);

impl Drop for ScrubGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Drop for LendingGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
