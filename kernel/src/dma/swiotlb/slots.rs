//! Slot metadata, the free-run counts and the slot search (Linux `struct io_tlb_slot` and the loop
//! of `swiotlb_area_find_slots`).
//!
//! The functions here work on one area's slots (a slice whose first slot starts a segment), are
//! called with the area lock held, and never allocate.

use core::sync::atomic::{AtomicU8, Ordering};

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

/// A slot state readable without the area lock (by `is_swiotlb_buffer`). Written only with the
/// area lock held.
#[derive(Debug)]
pub(super) struct AtomicSlotState(AtomicU8);

impl AtomicSlotState {
    pub(super) const fn new() -> Self {
        Self(AtomicU8::new(SlotState::Free as u8))
    }

    pub(super) fn load(&self) -> SlotState {
        match self.0.load(Ordering::Acquire) {
            0 => SlotState::Free,
            1 => SlotState::Used,
            _ => SlotState::Lent,
        }
    }

    pub(super) fn store(&self, state: SlotState) {
        self.0.store(state as u8, Ordering::Release);
    }
}

/// Metadata of one slot. The fields marked "head" are meaningful only in the first data slot of a
/// mapping (the slot the returned bounce address points into).
#[derive(Clone, Copy, Debug)]
pub(super) struct Slot {
    /// Free slots from this one to the end of its segment; 0 if this one is not free (Linux
    /// `list`).
    pub(super) list: u16,
    /// Used slots: area-local index of the mapping's head slot.
    pub(super) head: u32,
    /// Head: the original buffer (Linux stores `orig_addr + i * IO_TLB_SIZE` in every slot; we
    /// reach the head through `head` instead).
    pub(super) orig_addr: PhysAddr,
    /// Head: bytes mapped. Linux's `alloc_size` counts the aligned allocation; bounding syncs by
    /// what the caller mapped means a sync can never write past the caller's buffer.
    pub(super) alloc_size: u32,
    /// Head: offset of the first mapped byte inside the head slot.
    pub(super) offset: u16,
    /// Head: slots before the head that belong to the allocation (Linux `pad_slots`).
    pub(super) pad_slots: u16,
    /// Head: slots of the whole allocation, pad slots included.
    pub(super) nslots: u16,
    /// Head: the direction given at map time.
    pub(super) dir: DmaDirection,
}

impl Slot {
    /// Slot `i` of a fresh area: free, in a run reaching to the end of its segment.
    pub(super) const fn new(i: usize) -> Self {
        Self {
            list: (IO_TLB_SEGSIZE - i % IO_TLB_SEGSIZE) as u16,
            head: 0,
            orig_addr: INVALID_PHYS_ADDR,
            alloc_size: 0,
            offset: 0,
            pad_slots: 0,
            nslots: 0,
            dir: DmaDirection::Bidirectional,
        }
    }

    /// Forgets the mapping, keeping `list`.
    pub(super) fn clear_mapping(&mut self) {
        *self = Self { list: self.list, ..Self::new(0) };
    }
}

/// What a mapping needs from the slot search, computed once from the request (Linux: the
/// prologues of `swiotlb_tbl_map_single` and `swiotlb_area_find_slots`).
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
    /// Step between candidates once an aligned one is found.
    stride: usize,
}

impl SlotRequest {
    /// Works out padding, size and alignment of a mapping of `mapping_size` bytes at `orig_addr`.
    pub(super) fn new(orig_addr: PhysAddr, mapping_size: usize, align: SlotAlignment) -> Result<Self, SwiotlbError> {
        let slot_mask = IO_TLB_SIZE as u64 - 1;
        let too_large =
            SwiotlbError::MappingTooLarge { size: mapping_size, max: max_mapping_size(align.min_align_mask) };
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
            .ok_or_else(|| too_large.clone())? as usize;
        let nslots = nr_slots(alloc_size);
        if nslots > IO_TLB_SEGSIZE {
            return Err(too_large);
        }

        let mut alloc_align_mask = align.alloc_align_mask;
        let mut iotlb_align_mask = align.min_align_mask;
        // Mappings of a page or more were always page aligned; keep that when nothing else is
        // asked for, in case a driver relies on it (Linux 6.10 swiotlb_area_find_slots).
        if alloc_align_mask == 0 && iotlb_align_mask == 0 && alloc_size >= PAGE_SIZE as usize {
            alloc_align_mask = PAGE_SIZE - 1;
        }
        // At least slot aligned; bits inside the allocation alignment come from the offset, not
        // from where the run starts.
        alloc_align_mask |= slot_mask;
        iotlb_align_mask &= !alloc_align_mask;
        let stride = (alloc_align_mask.max(iotlb_align_mask) >> IO_TLB_SHIFT) as usize + 1;

        Ok(Self {
            orig_addr,
            mapping_size,
            alloc_size,
            nslots,
            pad_slots: offset >> IO_TLB_SHIFT,
            offset: offset & (IO_TLB_SIZE - 1),
            alloc_align_mask,
            iotlb_align_mask,
            stride,
        })
    }

    /// Where a run may start inside a block of `block_bytes` (a power of two) aligned on its
    /// size, whatever the block's address: `None` if the alignment asked for is larger than the
    /// block (then it depends on the block's address). Transient pools place their run with it.
    pub(super) fn run_offset_in_block(&self, block_bytes: u64) -> Option<u64> {
        let block_mask = block_bytes - 1;
        (self.alloc_align_mask <= block_mask && self.iotlb_align_mask <= block_mask)
            .then_some(self.orig_addr & self.iotlb_align_mask)
    }

    /// Whether a run may start at a slot at `addr`.
    fn fits_at(&self, addr: PhysAddr) -> bool {
        addr & self.alloc_align_mask == 0 && addr & self.iotlb_align_mask == self.orig_addr & self.iotlb_align_mask
    }
}

/// A mask of the form 2^k - 1.
const fn is_low_mask(mask: u64) -> bool {
    mask & mask.wrapping_add(1) == 0
}

/// Next-fit search over one area's `slots`, whose first slot is at `base_addr`, starting at
/// `start` and wrapping to 0 at the end (Linux `swiotlb_area_find_slots` + `wrap_area_index`).
/// Returns the first slot of a free run that fits the request.
pub(super) fn find_run(slots: &[Slot], start: usize, base_addr: PhysAddr, req: &SlotRequest) -> Option<usize> {
    let n = slots.len();
    let wrap = |i: usize| if i >= n { 0 } else { i };
    let mut index = wrap(start);
    let mut checked = 0;
    while checked < n {
        let addr = base_addr + ((index as u64) << IO_TLB_SHIFT);
        if !req.fits_at(addr) {
            index = wrap(index + 1);
            checked += 1;
            continue;
        }
        if usize::from(slots[index].list) >= req.nslots {
            return Some(index);
        }
        // Aligned but busy: the next aligned candidate is at least a stride away.
        index = wrap(index + req.stride);
        checked += req.stride;
    }
    None
}

/// Takes the free slots `[first, first + n)` out of the free runs (allocation or lending): their
/// `list` becomes 0 and the free slots before them in the segment now run only up to `first`.
pub(super) fn take_run(slots: &mut [Slot], first: usize, n: usize) {
    for slot in &mut slots[first..first + n] {
        slot.list = 0;
    }
    relink_preceding(slots, first);
}

/// Returns `[first, first + n)` to the free runs, merging with the free slots after and before
/// them in their segments (Linux `swiotlb_release_slots`, generalised to ranges that cross
/// segments, for lent page blocks).
pub(super) fn give_back_run(slots: &mut [Slot], first: usize, n: usize) {
    let end = first + n;
    let mut count = if !end.is_multiple_of(IO_TLB_SEGSIZE) { slots[end].list } else { 0 };
    for i in (first..end).rev() {
        if (i + 1) % IO_TLB_SEGSIZE == 0 {
            count = 0;
        }
        count += 1;
        slots[i].list = count;
    }
    relink_preceding(slots, first);
}

/// Recounts the free slots before `first` in its segment after `first`'s count changed.
///
/// This walk is most of the bookkeeping of a map+unmap (Linux has the same one, in
/// `swiotlb_area_find_slots` and `swiotlb_release_slots`): next-fit leaves the slots behind the
/// search cursor free, so the run before a new mapping grows towards the whole segment. Hence a
/// slice iterator (no bounds checks) over the segment's slots before `first`.
fn relink_preceding(slots: &mut [Slot], first: usize) {
    const _: () = assert!(IO_TLB_SEGSIZE.is_power_of_two());
    let segment_start = first & !(IO_TLB_SEGSIZE - 1);
    let mut count = slots[first].list;
    for slot in slots[segment_start..first].iter_mut().rev() {
        if slot.list == 0 {
            break;
        }
        count += 1;
        slot.list = count;
    }
}
