//! Slot metadata, what a request needs from the slot search, and the search inside one segment
//! (Linux `struct io_tlb_slot` and the loop of `swiotlb_search_pool_area`).
//!
//! Where we differ from Linux, and why: Linux keeps in every slot the count of free slots from it
//! to the end of its segment (`list`), walks a segment slot by slot to find a run, and walks back
//! over the free slots before a run to recount them on every allocation and release. Here each
//! segment is a 128-bit map of free slots: a run of n free slots is found with at most eight
//! shift-and steps and a count of trailing zeros, and taking or giving back a run is a mask. The
//! area keeps a summary of its segments on top (`area.rs`).
//!
//! Nothing here takes a lock or allocates.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

use super::{max_mapping_size, IO_TLB_SIZE};
use super::{nr_slots, DmaDirection, SlotAlignment, SwiotlbError, IO_TLB_SEGSIZE, IO_TLB_SHIFT};
use crate::mm::{align_up, PhysAddr, PAGE_SIZE};

/// `orig_addr` of a slot that holds no mapping (Linux `INVALID_PHYS_ADDR`).
pub(super) const INVALID_PHYS_ADDR: PhysAddr = PhysAddr::MAX;

/// What a slot is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SlotState {
    /// Available for a bounce buffer.
    Free = 0,
    /// Part of a live bounce-buffer allocation (pad slots included).
    Used = 1,
    /// Lent to the page allocator (MIGRATE_SWIOTLB); not a bounce buffer until unlent.
    Lent = 2,
}

/// The states of one segment's slots, readable without the area lock (by `is_swiotlb_buffer`):
/// a `used` and a `lent` bit per slot, each map as two 64-bit words (bit i of the segment: bit
/// `i % 64` of word `i / 64`). A slot is Lent if its lent bit is set, Used if its used bit is,
/// Free otherwise; never both.
///
/// A segment never spans two areas, so every word is written only with ONE area lock held: a
/// change is a Relaxed load and a Release store (the lock orders the writers; no read-modify-write
/// atomics needed), and a lock-free reader loads with Acquire. A run of up to 128 slots changes at
/// most two words of a map.
#[derive(Debug)]
pub(super) struct AtomicSegmentState {
    used: [AtomicU64; 2],
    lent: [AtomicU64; 2],
}

impl AtomicSegmentState {
    /// Every slot free.
    pub(super) const fn new() -> Self {
        Self { used: [AtomicU64::new(0), AtomicU64::new(0)], lent: [AtomicU64::new(0), AtomicU64::new(0)] }
    }

    /// The state of slot `i` of the segment (`i` < 128). Lock-free.
    #[inline]
    pub(super) fn load(&self, i: usize) -> SlotState {
        let (word, bit) = (i / 64, i % 64);
        if self.lent[word].load(Ordering::Acquire) >> bit & 1 != 0 {
            SlotState::Lent
        } else if self.used[word].load(Ordering::Acquire) >> bit & 1 != 0 {
            SlotState::Used
        } else {
            SlotState::Free
        }
    }

    /// Whether slot `i` of the segment (`i` < 128) is Used: one load. Lock-free.
    #[inline]
    pub(super) fn is_used(&self, i: usize) -> bool {
        self.used[i / 64].load(Ordering::Acquire) >> (i % 64) & 1 != 0
    }

    /// Whether slot `i` of the segment (`i` < 128) is Free. Lock-free.
    #[inline]
    pub(super) fn is_free(&self, i: usize) -> bool {
        let (word, bit) = (i / 64, i % 64);
        (self.used[word].load(Ordering::Acquire) | self.lent[word].load(Ordering::Acquire)) >> bit & 1 == 0
    }

    /// The used slots of the segment.
    pub(super) fn used(&self) -> SegmentMap {
        Self::load_map(&self.used)
    }

    /// The lent slots of the segment.
    pub(super) fn lent(&self) -> SegmentMap {
        Self::load_map(&self.lent)
    }

    /// Marks the slots of `run` Used (they were Free). Area lock held.
    #[inline]
    pub(super) fn set_used(&self, run: SegmentMap) {
        Self::update(&self.used, run, true);
    }

    /// Marks the Used slots of `run` Free. Area lock held.
    #[inline]
    pub(super) fn clear_used(&self, run: SegmentMap) {
        Self::update(&self.used, run, false);
    }

    /// Marks the slots of `run` Lent (they were Free). Area lock held.
    pub(super) fn set_lent(&self, run: SegmentMap) {
        Self::update(&self.lent, run, true);
    }

    /// Marks the Lent slots of `run` Free. Area lock held.
    pub(super) fn clear_lent(&self, run: SegmentMap) {
        Self::update(&self.lent, run, false);
    }

    fn load_map(words: &[AtomicU64; 2]) -> SegmentMap {
        SegmentMap::from(words[0].load(Ordering::Acquire)) | SegmentMap::from(words[1].load(Ordering::Acquire)) << 64
    }

    /// Sets (or clears) the bits of `mask` in `words`, touching only the words it reaches. Only
    /// the holder of the area lock writes: a plain load and store, no read-modify-write.
    /// Both words are stored, whatever the mask: a word the mask misses gets its own value back,
    /// which a lock-free reader cannot tell from no store, and the path has no branch.
    #[inline(always)]
    fn update(words: &[AtomicU64; 2], mask: SegmentMap, set: bool) {
        for (word, part) in words.iter().zip([mask as u64, (mask >> 64) as u64]) {
            let old = word.load(Ordering::Relaxed);
            word.store(if set { old | part } else { old & !part }, Ordering::Release);
        }
    }
}

/// The record of one mapping, kept in the slot where its allocation starts (its first pad slot,
/// or its head slot without padding); the other slots of the allocation hold [`Slot::EMPTY`].
/// The area finds the record of any used slot through its segment's start bitmap (`area.rs`).
/// Whether a slot is free is not here: the slot's state and its area's segment bitmap say so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slot {
    /// The original buffer (Linux stores `orig_addr + i * IO_TLB_SIZE` in every slot; we reach
    /// the record through the start bitmap instead).
    pub(super) orig_addr: PhysAddr,
    /// Bytes mapped. Linux's `alloc_size` counts the aligned allocation; bounding syncs by
    /// what the caller mapped means a sync can never write past the caller's buffer.
    pub(super) alloc_size: u32,
    /// Offset of the first mapped byte inside the head slot (the first data slot, the one the
    /// returned bounce address points into).
    pub(super) offset: u16,
    /// Slots before the head that belong to the allocation (Linux `pad_slots`).
    pub(super) pad_slots: u16,
    /// Slots of the whole allocation, pad slots included (0: no mapping).
    pub(super) nslots: u16,
    /// The direction given at map time.
    pub(super) dir: DmaDirection,
}

impl Slot {
    /// A slot that holds no mapping's record.
    pub(super) const EMPTY: Self =
        Self { orig_addr: INVALID_PHYS_ADDR, alloc_size: 0, offset: 0, pad_slots: 0, nslots: 0, dir: DmaDirection::Bidirectional };

    /// The record of a run in an area's slot cache: allocated, no mapping (no live mapping has
    /// an `alloc_size` of 0: a mapping of no bytes is refused).
    pub(super) const PARKED: Self = Self { nslots: super::area::CACHED_RUN_SLOTS as u16, ..Self::EMPTY };

    /// Whether this is a parked run's record (see [`Self::PARKED`]).
    #[inline(always)]
    pub(super) fn is_parked(&self) -> bool {
        self.nslots != 0 && self.alloc_size == 0
    }
}

/// What a mapping needs from the slot search, computed once from the request (Linux: the
/// prologues of `swiotlb_tbl_map_single` and `swiotlb_search_pool_area`).
#[derive(Clone, Copy, Debug)]
pub(super) struct SlotRequest {
    /// The original buffer.
    pub(super) orig_addr: PhysAddr,
    /// Bytes mapped.
    pub(super) mapping_size: usize,
    /// Bytes allocated: the mapping plus the kept offset, rounded up to the allocation alignment.
    pub(super) alloc_size: usize,
    /// Slots allocated.
    pub(super) nslots: usize,
    /// Whole slots of the kept offset, allocated in front of the data.
    pub(super) pad_slots: usize,
    /// The kept offset inside the head slot.
    pub(super) offset: usize,
    /// The first slot's address has these bits clear (at least the slot bits).
    alloc_align_mask: u64,
    /// The first slot's address has these bits equal to the original's.
    iotlb_align_mask: u64,
    /// Slots per colour period (see [`Self::with_colour`]); 0: runs are not coloured.
    colour_slots: u64,
}

impl SlotRequest {
    /// Works out padding, size and alignment of a mapping of `mapping_size` bytes at `orig_addr`.
    /// Inline: built in the caller's frame, not returned through memory.
    #[inline]
    pub(super) fn new(orig_addr: PhysAddr, mapping_size: usize, align: SlotAlignment) -> Result<Self, SwiotlbError> {
        let slot_mask = IO_TLB_SIZE as u64 - 1;
        // Built only on the error path: the map path never pays for `max_mapping_size`.
        let too_large = || SwiotlbError::MappingTooLarge { size: mapping_size, max: max_mapping_size(align.min_align_mask) };
        if mapping_size == 0 {
            return Err(SwiotlbError::ZeroSize);
        }
        if !is_low_mask(align.min_align_mask) || !is_low_mask(align.alloc_align_mask) {
            return Err(SwiotlbError::InvalidAlignment { alignment: align });
        }
        // Linux swiotlb_align_offset(dev, alloc_align_mask, orig_addr): the low bits the device
        // needs kept. The part above the slot bits but within the allocation alignment becomes
        // pad slots in front of the data.
        let offset = (orig_addr & align.min_align_mask & (align.alloc_align_mask | slot_mask)) as usize;
        let alloc_size = mapping_size
            .checked_add(offset)
            .and_then(|s| align_up(s as u64, align.alloc_align_mask.checked_add(1)?))
            .ok_or_else(too_large)? as usize;
        let nslots = nr_slots(alloc_size);
        if nslots > IO_TLB_SEGSIZE {
            return Err(too_large());
        }

        let mut alloc_align_mask = align.alloc_align_mask;
        let mut iotlb_align_mask = align.min_align_mask;
        // Mappings of a page or more were always page aligned; keep that when nothing else is
        // asked for, in case a driver relies on it (Linux 6.10 swiotlb_search_pool_area).
        if alloc_align_mask == 0 && iotlb_align_mask == 0 && alloc_size >= PAGE_SIZE as usize {
            alloc_align_mask = PAGE_SIZE - 1;
        }
        // At least slot aligned; bits inside the allocation alignment come from the offset, not
        // from where the run starts.
        alloc_align_mask |= slot_mask;
        iotlb_align_mask &= !alloc_align_mask;

        Ok(Self {
            orig_addr,
            mapping_size,
            alloc_size,
            nslots,
            pad_slots: offset >> IO_TLB_SHIFT,
            offset: offset & (IO_TLB_SIZE - 1),
            alloc_align_mask,
            iotlb_align_mask,
            colour_slots: 0,
        })
    }

    /// Asks the search to prefer a run whose pages do not share a colour with the original's:
    /// pages `period` bytes apart (a power of two, at least [`MIN_COLOUR_PERIOD`]) have the same
    /// colour; 0 turns it off. With a period of QEMU's softmmu TLB reach (1 MiB: 256 entries,
    /// direct-mapped), a copy between two pages of one colour evicts the TLB entry it has just
    /// filled on every access (`swiotlb_colour_kib=`, `docs/DESIGN.md` "Slot colouring").
    /// Mappings under [`MIN_COLOURED_BYTES`] are not coloured.
    #[inline]
    pub(super) fn with_colour(mut self, period: u64) -> Self {
        if period >= MIN_COLOUR_PERIOD && period.is_power_of_two() && self.mapping_size >= MIN_COLOURED_BYTES {
            self.colour_slots = period >> IO_TLB_SHIFT;
        }
        self
    }

    /// Where a run may start inside a block of `block_bytes` (a power of two) aligned on its
    /// size, whatever the block's address: `None` if the alignment asked for is larger than the
    /// block (then it depends on the block's address). Transient pools place their run with it.
    pub(super) fn run_offset_in_block(&self, block_bytes: u64) -> Option<u64> {
        let block_mask = block_bytes - 1;
        (self.alloc_align_mask <= block_mask && self.iotlb_align_mask <= block_mask).then_some(self.orig_addr & self.iotlb_align_mask)
    }

    /// The slots where a run for this request may start, in an area whose first slot is at
    /// `base_addr` (Linux tests each candidate's address in `swiotlb_search_pool_area`).
    ///
    /// A run may start at slot `i` when its address has the `alloc_align_mask` bits clear and the
    /// `iotlb_align_mask` bits of the original: both masks are low masks (the second with the
    /// first's bits cleared), so together they pin `i` modulo a power of two, `stride`.
    /// Inline: the search of the cursor's segment uses only part of it.
    #[inline(always)]
    pub(super) fn run_starts(&self, base_addr: PhysAddr) -> RunStarts {
        let mask = self.alloc_align_mask | self.iotlb_align_mask;
        let want = self.orig_addr & self.iotlb_align_mask;
        // (base + (i << IO_TLB_SHIFT)) & mask == want, with base slot aligned.
        let residue = (want.wrapping_sub(base_addr) & mask) >> IO_TLB_SHIFT;
        let stride = (mask >> IO_TLB_SHIFT) + 1;
        let segsize = IO_TLB_SEGSIZE as u64;
        let (in_segment, seg_period) = if stride < segsize {
            // A stride divides 64: both words of the segment see the same pattern, and a shift
            // by `residue` (less than the stride) loses none of it.
            let word = EVERY_NTH_SLOT[stride.trailing_zeros() as usize] << residue;
            (SegmentMap::from(word) << 64 | SegmentMap::from(word), 1)
        } else {
            // At most one start per segment, in every (stride / 128)th segment.
            (1u128 << (residue % segsize), stride / segsize)
        };
        RunStarts {
            in_segment,
            seg_mask: seg_period - 1,
            seg_phase: (residue / segsize) & (seg_period - 1),
            sure_level: sure_level(self.nslots, stride),
            colour: self.colour(base_addr),
        }
    }

    /// The starts of runs that share a page colour with the original, as a window of the colour
    /// cycle (see [`Colour`]); `None` when not coloured, or when every start would.
    #[inline]
    fn colour(&self, base_addr: PhysAddr) -> Option<Colour> {
        let cycle = self.colour_slots;
        if cycle == 0 {
            return None;
        }
        // In slots, absolute: the original spans [o, o + m). A run of n slots from slot a
        // shares a page colour with it when the two, each widened to whole pages (at most a
        // slot on each side: a page is two slots), overlap modulo the cycle: when
        // [a - 1, a + n + 1) meets [o - 1, o + m + 1), that is when
        // (a - (o - n - 1)) mod cycle < n + m + 3. (Slightly more than the exact page test.)
        let slot = IO_TLB_SIZE as u64;
        let orig_first = self.orig_addr >> IO_TLB_SHIFT;
        let orig_slots = self.orig_addr.saturating_add(self.mapping_size as u64).div_ceil(slot) - orig_first;
        let len = self.nslots as u64 + orig_slots + 3;
        if len >= cycle {
            return None;
        }
        let from = orig_first.wrapping_sub(self.nslots as u64 + 1);
        Some(Colour { base: (base_addr >> IO_TLB_SHIFT).wrapping_sub(from) & (cycle - 1), cycle, len })
    }
}

/// The smallest colour period (bytes) [`SlotRequest::with_colour`] takes: twice a segment, so that
/// the colour window meets a segment at most twice (see [`Colour::same_colour`]).
pub const MIN_COLOUR_PERIOD: u64 = 2 * (IO_TLB_SEGSIZE << IO_TLB_SHIFT) as u64;

/// The smallest mapping [`SlotRequest::with_colour`] colours. Working out which runs to avoid
/// costs a bounce about 70 instructions; a 4 KiB mapping's run shares a colour with its buffer
/// by chance about once in 70 (7 slots of the 512 of a 1 MiB cycle), and the slower copy it
/// then makes costs, averaged over all of them, less than those instructions. From 16 KiB on,
/// the chance and the copy grow and colouring pays.
pub(super) const MIN_COLOURED_BYTES: usize = 16 * 1024;

/// Where runs share a page colour with the original, for one request in one area: the run
/// starting at area slot `i` does when `(base + i) mod cycle < len`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Colour {
    base: u64,
    cycle: u64,
    len: u64,
}

/// Where a run may start, worked out once per request for one area (see
/// [`SlotRequest::run_starts`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct RunStarts {
    /// Slots of a segment where a run may start (bit i: slot i of the segment), in the segments
    /// that have any.
    in_segment: SegmentMap,
    /// Segment `s` has starts when `s & seg_mask == seg_phase` (every segment, unless the
    /// alignment is larger than a segment).
    seg_mask: u64,
    seg_phase: u64,
    /// A summary level whose segments surely hold a fitting run, if there is one (see
    /// [`sure_level`]).
    pub(super) sure_level: Option<usize>,
    /// Starts to avoid if others fit (see [`SlotRequest::with_colour`]).
    colour: Option<Colour>,
}

impl RunStarts {
    /// The slots of segment `seg`, whose free slots are `free`, where a free run of `nslots`
    /// starts as the request allows (bit i: slot i of the segment).
    pub(super) fn fits(&self, seg: usize, free: SegmentMap, nslots: usize) -> SegmentMap {
        if seg as u64 & self.seg_mask != self.seg_phase {
            return 0;
        }
        free_run_starts(free, nslots) & self.in_segment
    }

    /// `fits` (starts of free runs of `nslots` in segment `seg`, whose free slots are `free`)
    /// narrowed to the runs that do not share a page colour with the original and that fit
    /// tightly: against a slot that is not free, or the segment's edge, on one side at least.
    /// A run placed anywhere else would cut a free stretch in three and leave holes too short
    /// for mappings that would otherwise fit (a pool filled with 64 KiB mappings took 60 where
    /// 64 fit). Unchanged if no start shares a colour, or none is both.
    #[inline]
    pub(super) fn prefer_other_colour(&self, seg: usize, fits: SegmentMap, free: SegmentMap, nslots: usize) -> SegmentMap {
        // Not coloured (every mapping under MIN_COLOURED_BYTES): one branch.
        let Some(colour) = self.colour else { return fits };
        let other = fits & !colour.same_colour(seg);
        // Nothing to avoid (no start shares a colour), or nothing else fits.
        if other == fits || other == 0 {
            return fits;
        }
        // Bit s: slot s - 1 is not free (or s is 0); slot s + nslots is not free (or past the end).
        let after_taken = !(free << 1);
        let before_taken = !free.checked_shr(nslots as u32).unwrap_or(0);
        let tight = other & (after_taken | before_taken);
        if tight != 0 {
            tight
        } else {
            fits
        }
    }

    /// The starts in segment `seg` of runs that share a page colour with the original.
    #[cfg(test)]
    pub(super) fn same_colour(&self, seg: usize) -> SegmentMap {
        self.colour.map_or(0, |colour| colour.same_colour(seg))
    }
}

impl Colour {
    /// The starts in segment `seg` of runs that share a page colour with the original.
    fn same_colour(self, seg: usize) -> SegmentMap {
        let Self { base, cycle, len } = self;
        let segsize = IO_TLB_SEGSIZE as u64;
        // Slot i of the segment is at cycle position (off + i) mod cycle, off + i < 2 * cycle
        // (the cycle is at least two segments): in the window when off + i < len, or when
        // cycle <= off + i < cycle + len.
        let off = (base + seg as u64 * segsize) & (cycle - 1);
        let span = |lo: u64, hi: u64| -> SegmentMap {
            let hi = hi.min(segsize);
            if lo >= hi {
                0
            } else {
                run_mask(lo as usize, (hi - lo) as usize)
            }
        };
        span(0, len.saturating_sub(off)) | span(cycle - off, cycle - off + len)
    }
}

/// A set of slots of one segment (its free slots, clean slots, used slots, allocation starts):
/// bit i is slot i of the segment. The segment is the unit of the search because no mapping
/// crosses one (Linux `IO_TLB_SEGSIZE`).
pub(super) type SegmentMap = u128;
const _: () = assert!(SegmentMap::BITS as usize == IO_TLB_SEGSIZE);

/// Summary levels of an area: level `l` marks the segments with a free run of `2^l` slots.
pub(super) const SUMMARY_LEVELS: usize = IO_TLB_SEGSIZE.trailing_zeros() as usize + 1;

/// The slots `[first, first + nslots)` of a segment as a mask (`nslots` in 1..=128, the run
/// inside the segment).
#[inline(always)]
pub(super) const fn run_mask(first: usize, nslots: usize) -> SegmentMap {
    slots_from(first) & slots_below(first + nslots)
}

/// The slots `first..` of a segment (`first` in 0..128). Each half of the map with one 64-bit
/// shift and a select: a 128-bit shift by a variable costs twice that and more.
#[inline(always)]
pub(super) const fn slots_from(first: usize) -> SegmentMap {
    let ones = u64::MAX << (first % 64);
    let (low, high) = if first < 64 { (ones, u64::MAX) } else { (0, ones) };
    (high as SegmentMap) << 64 | low as SegmentMap
}

/// The slots `..end` of a segment (`end` in 1..=128), as [`slots_from`].
#[inline(always)]
pub(super) const fn slots_below(end: usize) -> SegmentMap {
    // u64::MAX >> (128 - end) % 64: the ones of the half that `end` falls in.
    let ones = u64::MAX >> (end.wrapping_neg() % 64);
    let (low, high) = if end > 64 { (u64::MAX, ones) } else { (ones, 0) };
    (high as SegmentMap) << 64 | low as SegmentMap
}

/// Whether `map` holds slot `i` of the segment (`i` < 128): a one-bit mask on the half `i`
/// falls in (a 128-bit shift by a variable costs three times that).
#[inline(always)]
pub(super) const fn has_slot(map: SegmentMap, i: usize) -> bool {
    let half = (i / 64) as u64;
    // The half as a masked merge: written as a select, it is folded back into the 128-bit shift.
    let word = map as u64 ^ ((map as u64 ^ (map >> 64) as u64) & half.wrapping_neg());
    word >> (i % 64) & 1 != 0
}

/// Bit i set when the slots `i..i + nslots` of `free` are all free (`nslots` in 1..=128): the
/// starts of free runs of `nslots`. Runs never reach past the segment (the shifts bring in
/// zeros). At most eight shift-and steps: runs of 2^k by doubling, then two of them overlapped.
/// The doubling steps are unrolled: each shifts by a constant (a 128-bit shift by a variable
/// costs about three times the instructions), and a small run stops after its few steps.
#[inline]
pub(super) fn free_run_starts(free: SegmentMap, nslots: usize) -> SegmentMap {
    let mut runs = free;
    // Runs of 2, 4, .. 128 slots while they fit in `nslots`: as a loop doubling the length.
    macro_rules! double {
        ($step:literal, $($rest:literal),*) => {
            if nslots >= 2 * $step {
                runs &= runs >> $step;
                double!($($rest),*);
            }
        };
        ($step:literal) => {
            if nslots >= 2 * $step {
                runs &= runs >> $step;
            }
        };
    }
    double!(1, 2, 4, 8, 16, 32, 64);
    // Two runs of the largest power of two in `nslots` overlapped; nothing to do for a power of
    // two (most mappings).
    if !nslots.is_power_of_two() {
        runs &= runs >> (nslots - (1 << nslots.ilog2()));
    }
    runs
}

/// How many summary levels mark a segment whose free slots are `free`: one more than log2 of
/// the longest free run of a power-of-two length, 0 if no slot is free.
pub(super) fn summary_levels(free: SegmentMap) -> usize {
    let mut runs = free;
    let mut levels = 0;
    // `runs` marks the starts of free runs of 2^levels slots.
    while runs != 0 {
        levels += 1;
        if levels == SUMMARY_LEVELS {
            break;
        }
        runs &= runs >> (1 << (levels - 1));
    }
    levels
}

/// The lowest summary level whose segments all hold a run of `nslots` starting every `stride`
/// slots: a free run of `nslots + stride - 1` has such a start whatever the residue. `None` when
/// that run is longer than a segment.
fn sure_level(nslots: usize, stride: u64) -> Option<usize> {
    let len = (nslots as u64).checked_add(stride - 1)?;
    (len <= IO_TLB_SEGSIZE as u64).then(|| len.next_power_of_two().trailing_zeros() as usize)
}

/// `EVERY_NTH_SLOT[k]`: a 1 every `2^k` bits of a 64-bit word from bit 0 (all ones divided by
/// `2^(2^k) - 1`), for the strides below a segment; a segment's starts are this word in both
/// halves.
const EVERY_NTH_SLOT: [u64; SUMMARY_LEVELS - 1] = {
    let mut table = [0; SUMMARY_LEVELS - 1];
    let mut k = 0;
    while k < table.len() {
        table[k] = if k == 6 { 1 } else { u64::MAX / ((1 << (1 << k)) - 1) };
        k += 1;
    }
    table
};

/// A mask of the form 2^k - 1.
const fn is_low_mask(mask: u64) -> bool {
    mask & mask.wrapping_add(1) == 0
}
