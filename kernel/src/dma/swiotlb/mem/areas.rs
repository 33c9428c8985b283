//! Which pageblocks of the default pool are slots: spread over its areas.
//!
//! Linux splits a pool into areas, a lock each, and a mapping starts its search in its CPU's area
//! (`swiotlb_search_area`), so CPUs that map at once take different locks. Under `lend` only some
//! pageblocks are slots; were they the pool's first ones, they would all sit in area 0 and every
//! CPU would search, and lock, there. So the pageblocks kept at boot, reclaimed under pressure and
//! lent again when idle are chosen by area:
//! - keep (boot) and reclaim: a lent pageblock of the area with the fewest usable slots, lowest
//!   first within the area;
//! - shrink: a wholly free slot pageblock of the area with the most free slots, highest first;
//! - ties between areas go by [`area_rank`]: 0, n/2, n/4, 3n/4, ... (bit reversal), so that with
//!   fewer slot pageblocks than areas the filled areas are spaced out and the CPUs whose area is
//!   empty (their search moves on to the next area) share them evenly; shrink takes the reverse.
//!
//! A pageblock counts for the area of its first slot: one that spans areas (a pool of fewer
//! pageblocks than areas, or areas that are not whole pageblocks) is placed by that area only;
//! the usable and free counts read from the pool are exact. Linux has no lending: its areas are
//! full from boot and stay so.
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;

use super::blocks::BlockState;
use super::io_tlb_mem::SwiotlbMem;
use super::SLOTS_PER_PAGEBLOCK;
use crate::dma::swiotlb::AreaUsage;

/// The order areas are filled in when they hold as many slots: the bit-reversed area index
/// (areas 0, 2, 1, 3 of 4; 0, 4, 2, 6, 1, 5, 3, 7 of 8). `nareas` is a power of two.
pub(super) fn area_rank(area: usize, nareas: usize) -> usize {
    match nareas.trailing_zeros() {
        0 => 0,
        bits => area.reverse_bits() >> (usize::BITS - bits),
    }
}

impl SwiotlbMem {
    /// The area of pageblock `block` of the default pool: that of its first slot.
    pub(super) fn block_area(&self, block: usize) -> usize {
        self.pool.area_of_slot(block * SLOTS_PER_PAGEBLOCK)
    }

    fn rank(&self, area: usize) -> usize {
        area_rank(area, self.pool.nareas())
    }

    fn area_usages(&self) -> Vec<AreaUsage> {
        (0..self.pool.nareas()).map(|a| self.pool.area_usage(a)).collect()
    }

    /// The `count` pageblocks `lend` keeps as slots at boot, by the rule of the module docs
    /// (one per area in turn while `count` lasts). Task context.
    pub(super) fn boot_slot_pageblocks(&self, count: usize) -> Vec<bool> {
        let nblocks = self.blocks.len();
        let mut kept = vec![false; nblocks];
        let mut usable = vec![0usize; self.pool.nareas()];
        for _ in 0..count.min(nblocks) {
            let pick = (0..nblocks).filter(|b| !kept[*b]).min_by_key(|b| {
                let area = self.block_area(*b);
                (usable[area], self.rank(area), *b)
            });
            let Some(block) = pick else { break };
            kept[block] = true;
            usable[self.block_area(block)] += SLOTS_PER_PAGEBLOCK;
        }
        kept
    }

    /// The lent pageblock to reclaim next: in the area with the fewest usable slots, lowest
    /// first; `tried` ones are skipped. Task context (takes each area lock in turn).
    pub(super) fn next_to_reclaim(&self, tried: &[bool]) -> Option<usize> {
        let usage = self.area_usages();
        self.blocks.in_state(BlockState::Lent).filter(|b| !tried[*b]).min_by_key(|b| {
            let area = self.block_area(*b);
            (usage[area].usable, self.rank(area), *b)
        })
    }

    /// The wholly free slot pageblock to lend next: in the area with the most free slots,
    /// highest first; `tried` ones are skipped. Task context (takes each area lock in turn).
    pub(super) fn next_to_lend(&self, tried: &[bool]) -> Option<usize> {
        let usage = self.area_usages();
        self.blocks.in_state(BlockState::AsSlots).filter(|b| !tried[*b] && self.block_all_free(*b)).max_by_key(|b| {
            let area = self.block_area(*b);
            (usage[area].free, self.rank(area), *b)
        })
    }
}

#[cfg(test)]
mod tests;
