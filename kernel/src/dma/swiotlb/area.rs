//! One area of a pool: a share of the slots behind its own lock (Linux `struct io_tlb_area`).
//!
//! Every method runs with the area lock held and never allocates; indices are area-local. The
//! slot states live in the pool (so `is_swiotlb_buffer` can read them without this lock) and are
//! passed in as the area's share, written only here, under the lock.

use alloc::vec::Vec;
use core::ops::Range;

use super::slots::{find_run, give_back_run, take_run, AtomicSlotState, Slot, SlotRequest};
use super::{DmaDirection, SlotState, IO_TLB_SHIFT};
use crate::mm::PhysAddr;

/// The slots of one area and their bookkeeping.
pub(super) struct AreaSlots {
    /// Where the next search starts (Linux `io_tlb_area::index`).
    index: usize,
    /// Slots held by mappings, pad slots included (Linux `io_tlb_area::used`).
    used: usize,
    /// Slots lent to the page allocator.
    lent: usize,
    slots: Vec<Slot>,
}

/// A live mapping as seen from one of its slots.
#[derive(Clone, Copy, Debug)]
pub(super) struct MappingInfo {
    /// The head slot's metadata.
    pub(super) head_slot: Slot,
    /// Byte position of the looked-up address inside the mapping (negative: before it).
    pub(super) position: i64,
}

impl AreaSlots {
    /// `nslots` free slots (a multiple of the segment size). Allocates: task context only.
    pub(super) fn new(nslots: usize) -> Self {
        Self { index: 0, used: 0, lent: 0, slots: (0..nslots).map(Slot::new).collect() }
    }

    /// Finds and takes a run for `req` (Linux `swiotlb_area_find_slots`), records the mapping and
    /// returns the area-local index of its head slot.
    pub(super) fn alloc(
        &mut self,
        base_addr: PhysAddr,
        req: &SlotRequest,
        dir: DmaDirection,
        states: &[AtomicSlotState],
    ) -> Option<usize> {
        if req.nslots > self.slots.len() - self.used - self.lent {
            return None;
        }
        let first = find_run(&self.slots, self.index, base_addr, req)?;
        take_run(&mut self.slots, first, req.nslots);
        let head = first + req.pad_slots;
        for (slot, state) in self.slots[first..first + req.nslots].iter_mut().zip(&states[first..]) {
            slot.head = head as u32;
            state.store(SlotState::Used);
        }
        // SlotRequest::new bounds the mapping to one segment, so the narrowing casts hold.
        self.slots[head] = Slot {
            list: 0,
            head: head as u32,
            orig_addr: req.orig_addr,
            alloc_size: req.mapping_size as u32,
            offset: req.offset as u16,
            pad_slots: req.pad_slots as u16,
            nslots: req.nslots as u16,
            dir,
        };
        self.index = if first + req.nslots >= self.slots.len() { 0 } else { first + req.nslots };
        self.used += req.nslots;
        Some(head)
    }

    /// The live mapping that covers byte `in_slot` of slot `index`, if any.
    pub(super) fn mapping(&self, index: usize, in_slot: usize, states: &[AtomicSlotState]) -> Option<MappingInfo> {
        if states[index].load() != SlotState::Used {
            return None;
        }
        let head = self.slots[index].head as usize;
        let head_slot = self.slots[head];
        let from_head = ((index as i64 - head as i64) << IO_TLB_SHIFT) + in_slot as i64;
        Some(MappingInfo { head_slot, position: from_head - i64::from(head_slot.offset) })
    }

    /// Frees the allocation whose head slot is `head` and returns how many slots it held, or
    /// `None` if `head` is not the head of a live mapping (Linux `swiotlb_release_slots`, pad slots
    /// included).
    pub(super) fn release(&mut self, head: usize, states: &[AtomicSlotState]) -> Option<usize> {
        if states[head].load() != SlotState::Used || self.slots[head].head as usize != head {
            return None;
        }
        let first = head - usize::from(self.slots[head].pad_slots);
        let nslots = usize::from(self.slots[head].nslots);
        for (slot, state) in self.slots[first..first + nslots].iter_mut().zip(&states[first..]) {
            slot.clear_mapping();
            state.store(SlotState::Free);
        }
        give_back_run(&mut self.slots, first, nslots);
        self.used -= nslots;
        Some(nslots)
    }

    /// The first slot of `range` not in `state`, with its state.
    pub(super) fn first_not(
        &self,
        range: Range<usize>,
        state: SlotState,
        states: &[AtomicSlotState],
    ) -> Option<(usize, SlotState)> {
        range.map(|i| (i, states[i].load())).find(|&(_, s)| s != state)
    }

    /// Lends the free slots `range` to the page allocator; fails, changing nothing, with the first
    /// slot that is not free.
    pub(super) fn lend(&mut self, range: Range<usize>, states: &[AtomicSlotState]) -> Result<(), (usize, SlotState)> {
        if let Some(busy) = self.first_not(range.clone(), SlotState::Free, states) {
            return Err(busy);
        }
        for state in &states[range.clone()] {
            state.store(SlotState::Lent);
        }
        take_run(&mut self.slots, range.start, range.len());
        self.lent += range.len();
        Ok(())
    }

    /// Turns the lent slots `range` back into free ones; fails, changing nothing, with the first
    /// slot that is not lent.
    pub(super) fn unlend(&mut self, range: Range<usize>, states: &[AtomicSlotState]) -> Result<(), (usize, SlotState)> {
        if let Some(busy) = self.first_not(range.clone(), SlotState::Lent, states) {
            return Err(busy);
        }
        for state in &states[range.clone()] {
            state.store(SlotState::Free);
        }
        give_back_run(&mut self.slots, range.start, range.len());
        self.lent -= range.len();
        Ok(())
    }

    /// Slots held by mappings.
    pub(super) fn used(&self) -> usize {
        self.used
    }

    /// Slots that are not lent: free or held by mappings.
    pub(super) fn usable(&self) -> usize {
        self.slots.len() - self.lent
    }

    /// The free-run counts, for consistency checks in tests.
    #[cfg(test)]
    pub(super) fn lists(&self) -> impl Iterator<Item = u16> + '_ {
        self.slots.iter().map(|s| s.list)
    }
}
