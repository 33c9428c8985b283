//! One area of a pool: a share of the slots behind its own lock (Linux `struct io_tlb_area`).
//!
//! Every method runs with the area lock held and never allocates; indices are area-local. The
//! slot states live in the pool (so `is_swiotlb_buffer` can read them without this lock), as
//! per-segment used and lent bitmaps ([`AtomicSegmentState`]), and are passed in as the area's
//! share, written only here, under the lock.
//!
//! Bookkeeping of a mapping is constant in its slot count: taking or giving back a run is a mask
//! on the segment's free map, its used bits (at most two words) and its start bitmap (one bit at
//! the allocation's first slot), and the mapping's one record ([`Slot`]) sits in that first slot.
//! The record of any used slot `i` is at the highest start bit of its segment at or below `i`
//! (allocations in a segment are disjoint runs, so none starts between that one's first slot and
//! `i`): a sync of part of a mapping, or a lookup in a pad slot, finds it with one count of
//! leading zeros.
//!
//! The slot search (Linux `swiotlb_search_pool_area`), constant time in the number of slots:
//! - each segment has a map of its free slots ([`SegmentMap`]); a run is found in it with a few
//!   shift-and steps (`slots.rs`);
//! - the area keeps a summary: level `l` is a bitmap with one bit per segment that has a free
//!   run of `2^l` slots, so finding a segment that can hold a request reads `segments / 64`
//!   words. The summary lags one segment behind (the last one changed, summarised when the
//!   summary is read or another segment changes), so a map+unmap in the cursor's segment does
//!   not update it;
//! - the search tries first the segment of the cursor (the slot after the last allocation, Linux
//!   `io_tlb_area::index`), from the cursor on, then from the segment's start; then the next
//!   segment, wrapping, that surely fits; only if none surely fits does it try, in the same
//!   order, each segment whose longest free run is long enough but whose alignment may not allow
//!   the request (a search that fails has looked at every segment that might fit).
//!
//! Where we differ from Linux, and why: Linux's next-fit cursor walks slot by slot through the
//! whole area, so consecutive mappings rotate through it and each touches cold slots. Here the
//! cursor wraps inside its segment while the segment has room: a few mappings at a time keep to
//! 256 KiB of warm slots. Slots freed behind the cursor come back after one lap of the segment,
//! not at once: strict LIFO reuse would hand a just-unmapped address straight back to the same
//! driver, and a second unmap of it could no longer be told from a good one
//! (`tests::misuse::double_unmap_is_refused`).
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::ops::Range;

#[cfg(test)]
use super::slots::free_run_starts;
use super::slots::{
    has_slot, run_mask, slots_below, slots_from, summary_levels, AtomicSegmentState, RunStarts, SegmentMap, Slot, SlotRequest,
    SUMMARY_LEVELS,
};
use super::{DmaDirection, SlotState, IO_TLB_SEGSIZE, IO_TLB_SHIFT};
use crate::mm::PhysAddr;

/// Segments per summary word.
const SEGS_PER_WORD: usize = u64::BITS as usize;

/// The slots of one area and their bookkeeping.
pub(super) struct AreaSlots {
    /// Where the next search starts: the slot after the last allocation (Linux
    /// `io_tlb_area::index`). Its segment is searched first, from here on, then from its start.
    index: usize,
    /// Slots held by mappings, pad slots included (Linux `io_tlb_area::used`), and by the slot
    /// cache's parked runs.
    used: usize,
    /// Slots lent to the page allocator.
    lent: usize,
    /// The record of each live mapping, in the slot its allocation starts at (pad slots
    /// included); [`Slot::EMPTY`] elsewhere.
    slots: Vec<Slot>,
    /// The maps of each segment: its free slots, clean slots and allocation starts.
    segs: Vec<SegmentMaps>,
    /// The run being scrubbed, if any: (segment, mask). Taken out of `free` while its zeros are
    /// written with the lock dropped; its slots stay in state Free.
    scrubbing: Option<(usize, SegmentMap)>,
    /// Summary levels each segment is marked in ([`summary_levels`] of its map when it was last
    /// summarised).
    levels: Vec<u8>,
    /// The one segment whose map changed since it was last summarised, if any: a map+unmap that
    /// stays in the cursor's segment, the usual case, never reads the summary and so never
    /// pays for it. Summarised before the summary is read and when another segment changes.
    unsummarised: Option<usize>,
    /// `SUMMARY_LEVELS` bitmaps of `words` words each, level by level: bit `s` of level `l` is
    /// set when segment `s` has a free run of `2^l` slots.
    summary: Vec<u64>,
    /// Words per summary level.
    words: usize,
    /// The slot cache: page runs kept allocated after their unmap, for the next mapping of a
    /// page or less (see [`SlotCache`]).
    cache: SlotCache,
}

/// Most runs an area's slot cache can hold (`swiotlb_slot_cache=`).
pub const SLOT_CACHE_MAX: usize = 32;

/// Slots of a cached run: one page, page aligned.
pub(super) const CACHED_RUN_SLOTS: usize = (crate::mm::PAGE_SIZE as usize) >> IO_TLB_SHIFT;

/// An area's slot cache (this kernel's; Linux has none): a ring of page runs that an unmap
/// freed but kept out of the free map, each with a parked record ([`Slot::PARKED`]) in its first
/// slot. A mapping of a page or less takes the oldest one, with no search and no change to the
/// segment maps or the slot states (only the record); an unmap of a page run parks it again while
/// the cache has room. What the page allocator's per-CPU lists (Linux `struct per_cpu_pages`)
/// are to its free lists. No search and no lend can take a parked run: a lend drains the cache
/// first (as Linux drains the per-CPU lists before it isolates pages), and so does a mapping that
/// found no room without the parked runs. Like the pages on those lists, which are not
/// `PageBuddy` and not in `NR_FREE_PAGES`, a parked run stays held: its slots read Used (to
/// `is_swiotlb_buffer`, which is true there, as Linux's is for any slot of the pool) and it stays
/// counted in this area's `used` and the pool's used counter, so that neither taking nor parking
/// one writes a slot state or touches a shared counter; a drain frees it. It holds no mapping: a
/// second unmap or a sync of it finds the parked record and is refused. (The pool's
/// `free_slots` and `used_slots` still report parked runs as free.)
/// First in, first out, and a run is handed out only while the cache holds two or more: the run
/// the last unmap parked never goes to the very next mapping, so a second unmap of a
/// just-unmapped address is still refused after it.
#[derive(Clone, Copy)]
struct SlotCache {
    /// Area-local first slots of the parked runs, a ring: `len` entries from `head`.
    runs: [u32; SLOT_CACHE_MAX],
    head: u8,
    len: u8,
    /// Runs kept at most (0: off, Linux's behaviour).
    cap: u8,
}

/// The maps of one segment of an area (bit i: slot i of the segment), side by side: the fast
/// path of a map or unmap reaches all three through one index.
#[derive(Clone, Copy)]
struct SegmentMaps {
    /// Free slots.
    free: SegmentMap,
    /// Clean slots: free slots known to hold zeros (a subset of `free`). A from-device mapping
    /// with `DmaAttrs::no_copy_in` that gets only clean slots skips its copy-in. Released and
    /// unscrubbed unlent slots are dirty; [`AreaSlots::take_dirty_run`] and
    /// [`AreaSlots::finish_scrub`] make them clean.
    clean: SegmentMap,
    /// First slots of the live allocations: bit i set when an allocation (pad slots included)
    /// starts at slot i and `slots` holds its record there.
    starts: SegmentMap,
}

/// A live mapping as seen from one of its slots.
#[derive(Clone, Copy, Debug)]
pub(super) struct MappingInfo {
    /// The head slot's metadata.
    pub(super) head_slot: Slot,
    /// Byte position of the looked-up address inside the mapping (negative: before it).
    pub(super) position: i64,
    /// Area-local first slot of the allocation (pad slots included), where its record is.
    first: usize,
}

impl AreaSlots {
    /// `nslots` free slots (a multiple of the segment size). Allocates: task context only.
    pub(super) fn new(nslots: usize) -> Self {
        let nsegs = nslots / IO_TLB_SEGSIZE;
        let words = nsegs.div_ceil(SEGS_PER_WORD);
        let mut summary = alloc::vec![0u64; SUMMARY_LEVELS * words];
        for level in 0..SUMMARY_LEVELS {
            for seg in 0..nsegs {
                summary[level * words + seg / SEGS_PER_WORD] |= 1 << (seg % SEGS_PER_WORD);
            }
        }
        Self {
            index: 0,
            used: 0,
            lent: 0,
            slots: alloc::vec![Slot::EMPTY; nslots],
            // The pool does not touch its memory at creation: nothing is known clean.
            segs: alloc::vec![SegmentMaps { free: SegmentMap::MAX, clean: 0, starts: 0 }; nsegs],
            scrubbing: None,
            levels: alloc::vec![SUMMARY_LEVELS as u8; nsegs],
            unsummarised: None,
            summary,
            words,
            cache: SlotCache { runs: [0; SLOT_CACHE_MAX], head: 0, len: 0, cap: 0 },
        }
    }

    /// Takes the oldest run of the slot cache for a mapping of `size` bytes (at most a page, no
    /// kept offset) of `orig_addr` and returns its area-local first slot, the head: no search,
    /// no segment map and no slot state to change, no count (a parked run is held), only the
    /// record. `None` if the cache is empty.
    #[inline(always)]
    pub(super) fn alloc_cached(&mut self, orig_addr: PhysAddr, size: usize, dir: DmaDirection) -> Option<usize> {
        // Never the run the last unmap parked: a second unmap of that address stays refused
        // after one more mapping, as it is without the cache (see the module comment).
        if self.cache.len < 2 {
            return None;
        }
        let first = self.pop_oldest();
        // Its used bits are set already: a parked run reads Used.
        self.slots[first] = Slot { orig_addr, alloc_size: size as u32, offset: 0, pad_slots: 0, nslots: CACHED_RUN_SLOTS as u16, dir };
        Some(first)
    }

    /// Parks the allocated page run at `first` at the cache's tail (the cache has room): its
    /// record becomes a parked one; its slots stay Used, out of the free map, and in the used
    /// count. A second unmap of it finds the parked record and is refused.
    #[inline(always)]
    fn park(&mut self, first: usize) {
        self.slots[first] = Slot::PARKED;
        let cache = &mut self.cache;
        cache.runs[(usize::from(cache.head) + usize::from(cache.len)) % SLOT_CACHE_MAX] = first as u32;
        cache.len += 1;
    }

    /// Takes the oldest run out of the cache's ring (it holds one); returns its first slot.
    #[inline(always)]
    fn pop_oldest(&mut self) -> usize {
        let cache = &mut self.cache;
        let first = cache.runs[usize::from(cache.head) % SLOT_CACHE_MAX] as usize;
        cache.head = ((usize::from(cache.head) + 1) % SLOT_CACHE_MAX) as u8;
        cache.len -= 1;
        first
    }

    /// Sets how many runs the slot cache keeps (`SwiotlbPool::set_slot_cache` gives 0 or 2 to
    /// [`SLOT_CACHE_MAX`]) and frees the runs beyond that; returns how many slots it freed.
    pub(super) fn set_cache_cap(&mut self, cap: usize, states: &[AtomicSegmentState]) -> usize {
        debug_assert!(cap != 1 && cap <= SLOT_CACHE_MAX);
        self.cache.cap = cap as u8;
        self.drain_cache_to(usize::from(self.cache.cap), states)
    }

    /// Frees every run of the slot cache into the free maps (and out of the used count); returns
    /// how many slots it freed.
    pub(super) fn drain_cache(&mut self, states: &[AtomicSegmentState]) -> usize {
        self.drain_cache_to(0, states)
    }

    /// Frees the oldest runs of the slot cache until `keep` are left; returns the slots freed.
    fn drain_cache_to(&mut self, keep: usize, states: &[AtomicSegmentState]) -> usize {
        let mut freed = 0;
        while usize::from(self.cache.len) > keep {
            let first = self.pop_oldest();
            freed += self.free_allocation(first, states);
        }
        freed
    }

    /// Runs in the slot cache.
    pub(super) fn cached_runs(&self) -> usize {
        usize::from(self.cache.len)
    }

    /// Slots of the slot cache's runs (counted in [`Self::used`]).
    pub(super) fn cached_slots(&self) -> usize {
        self.cached_runs() * CACHED_RUN_SLOTS
    }

    /// Finds and takes a run for `req` (Linux `swiotlb_search_pool_area`), records the mapping and
    /// returns the area-local index of its head slot, and whether every slot of the run (pad
    /// slots included) was clean. With `prefer_clean` a clean run of the cursor's segment is
    /// taken before a dirty one (a few more shift-and steps; other segments are not searched
    /// for one).
    pub(super) fn alloc(
        &mut self,
        base_addr: PhysAddr,
        req: &SlotRequest,
        dir: DmaDirection,
        prefer_clean: bool,
        states: &[AtomicSegmentState],
    ) -> Option<(usize, bool)> {
        // The usual case first, with no call (so no stack frame): a run in the cursor's
        // segment, which is already the unsummarised one (taking the run changes no other
        // segment's summary). The same choice `find_run` makes there. A run found there is of
        // free slots, so the area's count of them needs no check first.
        let warm = self.index / IO_TLB_SEGSIZE;
        if self.unsummarised == Some(warm) {
            if let Some(in_seg) = self.find_in_warm(req.nslots, &req.run_starts(base_addr), prefer_clean) {
                let run = run_mask(in_seg, req.nslots);
                self.segs[warm].free &= !run;
                return Some(self.record(warm, in_seg, run, req, dir, states));
            }
        }
        self.alloc_slow(base_addr, req, dir, prefer_clean, states)
    }

    /// [`Self::alloc`] in full, out of line.
    #[inline(never)]
    fn alloc_slow(
        &mut self,
        base_addr: PhysAddr,
        req: &SlotRequest,
        dir: DmaDirection,
        prefer_clean: bool,
        states: &[AtomicSegmentState],
    ) -> Option<(usize, bool)> {
        if req.nslots > self.slots.len() - self.used - self.lent {
            return None;
        }
        let (seg, in_seg) = self.find_run(req.nslots, &req.run_starts(base_addr), prefer_clean)?;
        self.take_run(seg, in_seg, req.nslots);
        Some(self.record(seg, in_seg, run_mask(in_seg, req.nslots), req, dir, states))
    }

    /// The rest of an allocation once its run (`run`, slots `in_seg..` of segment `seg`) is out
    /// of the free map: the clean map, the cursor, the used bits, the start bit and the mapping's
    /// record. Constant in the run's length: masks, no loop over its slots.
    /// Returns the head slot and whether every slot of the run was clean.
    #[inline(always)]
    fn record(
        &mut self,
        seg: usize,
        in_seg: usize,
        run: SegmentMap,
        req: &SlotRequest,
        dir: DmaDirection,
        states: &[AtomicSegmentState],
    ) -> (usize, bool) {
        let maps = &mut self.segs[seg];
        let clean = maps.clean & run == run;
        // The mapping writes its slots (the copy-in, the device): no longer known clean.
        maps.clean &= !run;
        maps.starts |= 1 << in_seg;
        let first = seg * IO_TLB_SEGSIZE + in_seg;
        self.index = if first + req.nslots >= self.slots.len() { 0 } else { first + req.nslots };
        states[seg].set_used(run);
        // SlotRequest::new bounds the mapping to one segment, so the narrowing casts hold.
        self.slots[first] = Slot {
            orig_addr: req.orig_addr,
            alloc_size: req.mapping_size as u32,
            offset: req.offset as u16,
            pad_slots: req.pad_slots as u16,
            nslots: req.nslots as u16,
            dir,
        };
        self.used += req.nslots;
        (first + req.pad_slots, clean)
    }

    /// A free run of `nslots` that starts where `starts` allows: (segment, first slot in it).
    /// First the cursor's segment, from the cursor on and then before it; then the next segment
    /// that surely fits; then the next one that may.
    fn find_run(&mut self, nslots: usize, starts: &RunStarts, prefer_clean: bool) -> Option<(usize, usize)> {
        let warm = self.index / IO_TLB_SEGSIZE;
        if let Some(in_seg) = self.find_in_warm(nslots, starts, prefer_clean) {
            return Some((warm, in_seg));
        }
        self.find_run_elsewhere(warm, nslots, starts)
    }

    /// The cursor's part of [`Self::find_run`]: the first slot of a free run in the cursor's
    /// segment, from the cursor on, then from the segment's start (clean runs first with
    /// `prefer_clean`).
    #[inline(always)]
    fn find_in_warm(&self, nslots: usize, starts: &RunStarts, prefer_clean: bool) -> Option<usize> {
        let (warm, from) = (self.index / IO_TLB_SEGSIZE, self.index % IO_TLB_SEGSIZE);
        let maps = &self.segs[warm];
        let mut fits = starts.fits(warm, maps.free, nslots);
        if fits != 0 {
            fits = starts.prefer_other_colour(warm, fits, maps.free, nslots);
        }
        if prefer_clean && fits != 0 {
            let clean_fits = starts.fits(warm, maps.clean, nslots);
            if clean_fits != 0 {
                fits = clean_fits;
            }
        }
        if fits != 0 {
            let after_cursor = fits & slots_from(from);
            let pick = if after_cursor != 0 { after_cursor } else { fits };
            return Some(pick.trailing_zeros() as usize);
        }
        None
    }

    /// The rest of [`Self::find_run`], out of line: the search of the cursor's segment stays
    /// short and needs few registers.
    #[cold]
    #[inline(never)]
    fn find_run_elsewhere(&mut self, warm: usize, nslots: usize, starts: &RunStarts) -> Option<(usize, usize)> {
        self.summarise();
        let lowest_fit = |seg: usize| {
            let fits = starts.fits(seg, self.segs[seg].free, nslots);
            (fits != 0).then(|| (seg, starts.prefer_other_colour(seg, fits, self.segs[seg].free, nslots).trailing_zeros() as usize))
        };
        let next = if warm + 1 == self.segs.len() { 0 } else { warm + 1 };
        if let Some(level) = starts.sure_level {
            if let Some(found) = self.find_segment(level, next, lowest_fit) {
                return Some(found);
            }
        }
        // Segments with a free run of 2^floor(log2 nslots): every one that may fit, and more.
        self.find_segment(nslots.ilog2() as usize, next, lowest_fit)
    }

    /// Calls `try_seg` on the segments marked in summary level `level`, from segment `from` up,
    /// wrapping, until it returns something.
    fn find_segment<R>(&self, level: usize, from: usize, mut try_seg: impl FnMut(usize) -> Option<R>) -> Option<R> {
        let words = &self.summary[level * self.words..(level + 1) * self.words];
        let first_word = from / SEGS_PER_WORD;
        let from_bit = !0u64 << (from % SEGS_PER_WORD);
        // The first word from `from` on, the others, then the first word's bits before `from`.
        for i in 0..=words.len() {
            let w = (first_word + i) % words.len();
            let mut bits = match i {
                0 => words[w] & from_bit,
                i if i == words.len() => words[w] & !from_bit,
                _ => words[w],
            };
            while bits != 0 {
                if let Some(found) = try_seg(w * SEGS_PER_WORD + bits.trailing_zeros() as usize) {
                    return Some(found);
                }
                bits &= bits - 1;
            }
        }
        None
    }

    /// Clears the free bits of `[first, first + nslots)` of segment `seg` (all free).
    fn take_run(&mut self, seg: usize, first: usize, nslots: usize) {
        self.segs[seg].free &= !run_mask(first, nslots);
        self.changed(seg);
    }

    /// Sets the free bits of `[first, first + nslots)` of segment `seg`. Inline: the release
    /// path's last step.
    #[inline(always)]
    fn give_back_run(&mut self, seg: usize, first: usize, nslots: usize) {
        self.segs[seg].free |= run_mask(first, nslots);
        self.changed(seg);
    }

    /// Notes that segment `seg`'s map changed; summarises the segment that changed before it.
    fn changed(&mut self, seg: usize) {
        if self.unsummarised != Some(seg) {
            self.summarise();
            self.unsummarised = Some(seg);
        }
    }

    /// Brings the summary up to date with every segment's map.
    fn summarise(&mut self) {
        if let Some(seg) = self.unsummarised.take() {
            self.update_summary(seg);
        }
    }

    /// Marks segment `seg` in the summary levels its free map now reaches, and only those.
    fn update_summary(&mut self, seg: usize) {
        let new = summary_levels(self.segs[seg].free);
        let old = usize::from(self.levels[seg]);
        if new == old {
            return;
        }
        self.levels[seg] = new as u8;
        let (word, bit) = (seg / SEGS_PER_WORD, 1u64 << (seg % SEGS_PER_WORD));
        for level in new.min(old)..new.max(old) {
            self.summary[level * self.words + word] ^= bit;
        }
    }

    /// The (segment, first slot in it, slots) pieces of an area-local slot range.
    fn segment_pieces(range: Range<usize>) -> impl Iterator<Item = (usize, usize, usize)> {
        let mut start = range.start;
        core::iter::from_fn(move || {
            (start < range.end).then(|| {
                let (seg, first) = (start / IO_TLB_SEGSIZE, start % IO_TLB_SEGSIZE);
                let n = (IO_TLB_SEGSIZE - first).min(range.end - start);
                start += n;
                (seg, first, n)
            })
        })
    }

    /// The first slot of the live allocation (pad slots included) that holds slot `index`, if
    /// any: the highest start bit of the segment at or below `index`, if that allocation reaches
    /// `index`. Reads no slot state: an allocation's start bit and record live exactly as long as
    /// it does.
    #[inline(always)]
    fn allocation_of(&self, index: usize) -> Option<usize> {
        let (seg, in_seg) = (index / IO_TLB_SEGSIZE, index % IO_TLB_SEGSIZE);
        let starts = self.segs[seg].starts;
        // The usual lookup, an unmap of a mapping without pad slots: an allocation starts at
        // `index` itself (and holds it: every allocation has a slot).
        if has_slot(starts, in_seg) {
            return Some(index);
        }
        let at_or_below = starts & slots_below(in_seg + 1);
        if at_or_below == 0 {
            return None;
        }
        let first = seg * IO_TLB_SEGSIZE + (IO_TLB_SEGSIZE - 1 - at_or_below.leading_zeros() as usize);
        (index < first + usize::from(self.slots[first].nslots)).then_some(first)
    }

    /// The live mapping that covers byte `in_slot` of slot `index`, if any. Inline: the unmap
    /// path checks the mapping and frees it under one hold of the lock. Reads no slot state
    /// (as `allocation_of`), so its callers need not find the area's states for it.
    #[inline(always)]
    pub(super) fn mapping(&self, index: usize, in_slot: usize) -> Option<MappingInfo> {
        let first = self.allocation_of(index)?;
        let head_slot = self.slots[first];
        if head_slot.is_parked() {
            return None;
        }
        let head = first + usize::from(head_slot.pad_slots);
        let from_head = ((index as i64 - head as i64) << IO_TLB_SHIFT) + in_slot as i64;
        Some(MappingInfo { head_slot, position: from_head - i64::from(head_slot.offset), first })
    }

    /// Frees the allocation whose head slot is `head` and returns how many slots went back to the
    /// free map (0 if the slot cache parked it; see [`Self::release_allocation`]), or `None` if
    /// `head` is not the head of a live mapping (Linux `swiotlb_release_slots`, pad slots
    /// included). Constant in the allocation's length: masks on its segment's maps.
    pub(super) fn release(&mut self, head: usize, states: &[AtomicSegmentState]) -> Option<usize> {
        let first = self.allocation_of(head)?;
        if self.slots[first].is_parked() || first + usize::from(self.slots[first].pad_slots) != head {
            return None;
        }
        Some(self.release_allocation(first, states))
    }

    /// Frees the allocation `mapping` was looked up in (with [`Self::mapping`], under this same
    /// hold of the lock) and returns how many slots went to the free map: [`Self::release`] without a second
    /// lookup. `None`, freeing nothing, unless `mapping` was looked up at the head's first byte
    /// (`position` 0).
    #[inline(always)]
    pub(super) fn release_mapping(&mut self, mapping: &MappingInfo, states: &[AtomicSegmentState]) -> Option<usize> {
        (mapping.position == 0).then(|| self.release_allocation(mapping.first, states))
    }

    /// Frees the allocation `mapping` was looked up in (with [`Self::mapping`], under an earlier
    /// hold of the lock) if it still lives there, unchanged, and `mapping` was looked up at the
    /// head's first byte; returns how many slots went to the free map, or `None`, freeing nothing. For an
    /// unmap that copies back between the lookup and the release: no second lookup.
    #[inline(always)]
    pub(super) fn release_found(&mut self, mapping: &MappingInfo, states: &[AtomicSegmentState]) -> Option<usize> {
        let (seg, in_seg) = (mapping.first / IO_TLB_SEGSIZE, mapping.first % IO_TLB_SEGSIZE);
        let still_there =
            mapping.position == 0 && has_slot(self.segs[seg].starts, in_seg) && self.slots[mapping.first] == mapping.head_slot;
        still_there.then(|| self.release_allocation(mapping.first, states))
    }

    /// Frees the live allocation whose first slot is `first`; returns how many slots went back
    /// to the free map. A page run goes to the slot cache instead, if the cache has room: it
    /// stays allocated and counted held, parked, and 0 slots went to the free map.
    #[inline(always)]
    fn release_allocation(&mut self, first: usize, states: &[AtomicSegmentState]) -> usize {
        let nslots = usize::from(self.slots[first].nslots);
        if nslots == CACHED_RUN_SLOTS && first.is_multiple_of(CACHED_RUN_SLOTS) && self.cache.len < self.cache.cap {
            self.park(first);
            return 0;
        }
        self.free_allocation(first, states)
    }

    /// Gives the slots of the allocation whose first slot is `first` back to the free map;
    /// returns how many.
    #[inline(always)]
    fn free_allocation(&mut self, first: usize, states: &[AtomicSegmentState]) -> usize {
        let nslots = usize::from(self.slots[first].nslots);
        self.slots[first] = Slot::EMPTY;
        // An allocation never crosses a segment.
        let (seg, in_seg) = (first / IO_TLB_SEGSIZE, first % IO_TLB_SEGSIZE);
        let run = run_mask(in_seg, nslots);
        self.segs[seg].starts &= !(1 << in_seg);
        states[seg].clear_used(run);
        // Released slots are dirty: they hold what the mapping left (alloc cleared their bits).
        debug_assert_eq!(self.segs[seg].clean & run, 0);
        self.give_back_run(seg, in_seg, nslots);
        self.used -= nslots;
        nslots
    }

    /// The first slot of `range` not in `state`, with its state.
    pub(super) fn first_not(&self, range: Range<usize>, state: SlotState, states: &[AtomicSegmentState]) -> Option<(usize, SlotState)> {
        Self::segment_pieces(range).find_map(|(seg, first, n)| {
            let (used, lent) = (states[seg].used(), states[seg].lent());
            let in_state = match state {
                SlotState::Free => !(used | lent),
                SlotState::Used => used,
                SlotState::Lent => lent,
            };
            let others = run_mask(first, n) & !in_state;
            (others != 0).then(|| {
                let i = others.trailing_zeros() as usize;
                (seg * IO_TLB_SEGSIZE + i, states[seg].load(i))
            })
        })
    }

    /// Lends the free slots `range` to the page allocator; fails, changing nothing, with the first
    /// slot that is not free. Parked runs read Used: the caller drains the slot cache first,
    /// under the same hold of the lock (so that no unmap parks one in between), and counts what
    /// it freed.
    pub(super) fn lend(&mut self, range: Range<usize>, states: &[AtomicSegmentState]) -> Result<(), (usize, SlotState)> {
        debug_assert_eq!(self.cache.len, 0, "lend with parked runs");
        if let Some(busy) = self.first_not(range.clone(), SlotState::Free, states) {
            return Err(busy);
        }
        for (seg, first, n) in Self::segment_pieces(range.clone()) {
            states[seg].set_lent(run_mask(first, n));
            self.take_run(seg, first, n);
            self.segs[seg].clean &= !run_mask(first, n);
        }
        self.lent += range.len();
        Ok(())
    }

    /// Turns the lent slots `range` back into free ones; fails, changing nothing, with the first
    /// slot that is not lent.
    /// `scrubbed`: the caller filled them with zeros, so they come back clean.
    pub(super) fn unlend(&mut self, range: Range<usize>, scrubbed: bool, states: &[AtomicSegmentState]) -> Result<(), (usize, SlotState)> {
        if let Some(busy) = self.first_not(range.clone(), SlotState::Lent, states) {
            return Err(busy);
        }
        for (seg, first, n) in Self::segment_pieces(range.clone()) {
            states[seg].clear_lent(run_mask(first, n));
            self.give_back_run(seg, first, n);
            if scrubbed {
                self.segs[seg].clean |= run_mask(first, n);
            }
        }
        self.lent -= range.len();
        Ok(())
    }

    /// Takes out of the free maps a run of at most `max` free dirty slots of one segment, to be
    /// zeroed with the lock dropped, and returns it as (area-local first slot, slots); `None` if
    /// every free slot is clean or a scrub is already under way. The slots stay in state Free
    /// (nothing else looks at a slot's memory), but no mapping and no lend can take them until
    /// [`Self::finish_scrub`]. Walks the segments from the cursor's (warm slots are reused first):
    /// O(segments) in the worst case, which runs only on an idle CPU.
    pub(super) fn take_dirty_run(&mut self, max: usize) -> Option<(usize, usize)> {
        if self.scrubbing.is_some() || max == 0 {
            return None;
        }
        let nsegs = self.segs.len();
        let warm = self.index / IO_TLB_SEGSIZE;
        let seg = (0..nsegs).map(|i| (warm + i) % nsegs).find(|&s| self.segs[s].free & !self.segs[s].clean != 0)?;
        let dirty = self.segs[seg].free & !self.segs[seg].clean;
        let first = dirty.trailing_zeros() as usize;
        // The dirty run from `first`: up to the first slot that is not free-and-dirty.
        let len = ((!dirty) >> first).trailing_zeros().min(max as u32) as usize;
        let len = len.min(IO_TLB_SEGSIZE - first);
        let mask = run_mask(first, len);
        self.take_run(seg, first, len);
        self.scrubbing = Some((seg, mask));
        Some((seg * IO_TLB_SEGSIZE + first, len))
    }

    /// Gives back the run [`Self::take_dirty_run`] took, now zeroed: free and clean.
    pub(super) fn finish_scrub(&mut self) {
        if let Some((seg, mask)) = self.scrubbing.take() {
            self.segs[seg].free |= mask;
            self.segs[seg].clean |= mask;
            self.changed(seg);
        }
    }

    /// Marks every free slot clean (their memory was just zeroed by the caller).
    pub(super) fn mark_free_slots_clean(&mut self) {
        for seg in &mut self.segs {
            seg.clean = seg.free;
        }
    }

    /// Gives back the run [`Self::take_dirty_run`] took, unscrubbed: free and still dirty.
    pub(super) fn finish_scrub_aborted(&mut self) {
        if let Some((seg, mask)) = self.scrubbing.take() {
            self.segs[seg].free |= mask;
            self.changed(seg);
        }
    }

    /// Whether area-local slot `index` is known clean.
    #[cfg(test)]
    pub(super) fn is_clean(&self, index: usize) -> bool {
        self.segs[index / IO_TLB_SEGSIZE].clean >> (index % IO_TLB_SEGSIZE) & 1 == 1
    }

    /// The slots of segment `seg` in parked runs.
    #[cfg(test)]
    fn parked_in(&self, seg: usize) -> SegmentMap {
        (0..usize::from(self.cache.len))
            .map(|i| self.cache.runs[(usize::from(self.cache.head) + i) % SLOT_CACHE_MAX] as usize)
            .filter(|&first| first / IO_TLB_SEGSIZE == seg)
            .fold(0, |map, first| map | run_mask(first % IO_TLB_SEGSIZE, CACHED_RUN_SLOTS))
    }

    /// Slots held by mappings and by the slot cache.
    pub(super) fn used(&self) -> usize {
        self.used
    }

    /// Slots that are not lent: free or held by mappings.
    pub(super) fn usable(&self) -> usize {
        self.slots.len() - self.lent
    }

    /// Checks the segment maps against the slot states, the start bitmaps and records against
    /// the used slots, and the summary against the maps (but for the unsummarised segment's,
    /// which may lag).
    #[cfg(test)]
    pub(super) fn assert_consistent(&self, states: &[AtomicSegmentState], area: usize) {
        let mut used_slots = 0;
        let mut parked = 0;
        for (seg, &SegmentMaps { free, .. }) in self.segs.iter().enumerate() {
            let (used, lent) = (states[seg].used(), states[seg].lent());
            assert_eq!(used & lent, 0, "no slot both used and lent in segment {seg} (area {area})");
            let scrubbing = self.scrubbing.filter(|s| s.0 == seg).map_or(0, |s| s.1);
            let parked_here = self.parked_in(seg);
            assert_eq!(used & parked_here, parked_here, "parked slots read Used in segment {seg} (area {area})");
            assert_eq!(free, !(used | lent) & !scrubbing, "free map of segment {seg} (area {area})");
            assert_eq!(self.segs[seg].clean & !free, 0, "clean slots of segment {seg} are free (area {area})");
            // The allocations of the start bits tile the used slots exactly.
            let mut covered: SegmentMap = 0;
            let mut starts = self.segs[seg].starts;
            while starts != 0 {
                let first = starts.trailing_zeros() as usize;
                starts &= starts - 1;
                let record = self.slots[seg * IO_TLB_SEGSIZE + first];
                let nslots = usize::from(record.nslots);
                assert!(nslots > 0 && first + nslots <= IO_TLB_SEGSIZE, "record at start {first} of segment {seg} (area {area})");
                assert!(usize::from(record.pad_slots) < nslots, "pad slots of the record at {first}, segment {seg}");
                if record.is_parked() {
                    assert!(nslots == CACHED_RUN_SLOTS && first.is_multiple_of(CACHED_RUN_SLOTS), "parked run at {first}, segment {seg}");
                    parked += 1;
                }
                let run = run_mask(first, nslots);
                assert_eq!(covered & run, 0, "allocations overlap at {first}, segment {seg} (area {area})");
                assert_eq!(self.segs[seg].starts & run, 1 << first, "a start inside the allocation at {first}, segment {seg}");
                covered |= run;
            }
            assert_eq!(covered, used, "start bitmap against the used (and parked) slots of segment {seg} (area {area})");
            for i in 0..IO_TLB_SEGSIZE {
                if self.segs[seg].starts >> i & 1 == 0 {
                    assert_eq!(self.slots[seg * IO_TLB_SEGSIZE + i].nslots, 0, "a record without a start bit, slot {i} of segment {seg}");
                }
            }
            used_slots += used.count_ones() as usize;
            if self.unsummarised == Some(seg) {
                continue;
            }
            let levels = summary_levels(free);
            assert_eq!(usize::from(self.levels[seg]), levels, "levels of segment {seg} (area {area})");
            for level in 0..SUMMARY_LEVELS {
                let marked = self.summary[level * self.words + seg / SEGS_PER_WORD] >> (seg % SEGS_PER_WORD) & 1 == 1;
                assert_eq!(marked, level < levels, "summary level {level}, segment {seg} (area {area})");
                assert_eq!(marked, free_run_starts(free, 1 << level) != 0, "level {level} means a run of 2^{level}");
            }
        }
        assert_eq!(parked, usize::from(self.cache.len), "parked runs against the slot cache of area {area}");
        assert!(self.cache.len <= self.cache.cap, "slot cache of area {area} over its cap");
        for i in 0..usize::from(self.cache.len) {
            let first = self.cache.runs[(usize::from(self.cache.head) + i) % SLOT_CACHE_MAX] as usize;
            assert!(self.slots[first].is_parked(), "slot cache entry {i} of area {area} is not a parked run");
        }
        assert_eq!(used_slots, self.used, "used count of area {area}: mappings and parked runs");
    }
}
