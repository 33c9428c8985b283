//! Pins by physical address, for the DMA API's direct mappings.
//!
//! The DMA API maps a physical range, not a handle: a movable page inside a lent
//! MIGRATE_SWIOTLB pageblock that a driver maps directly would otherwise stay migratable, and
//! reclaim could move it, scrub the frame and turn it into bounce slots while the device still
//! writes to it. So a direct mapping pins the movable pages of lent (or isolated, being
//! reclaimed) pageblocks it covers for the mapping's life; reclaim then skips them and reports
//! them pinned. The same holds for a movable page borrowed from a MIGRATE_CMA pageblock, which
//! `cma_alloc` migrates out. Linux pins through `pin_user_pages()` before mapping and relies on
//! CMA pageblocks never holding long-term pins; here the DMA API does it itself because the lent
//! memory is the bounce pool's own.
//!
//! Pages of MOVABLE pageblocks are not pinned: their kernel users (the page cache) pin them while
//! a device uses them, and nothing takes them back for DMA but compaction, which skips pins.
//! IRQ-safe: one lock section, no allocation, work bounded by the pages of the range.

use core::ops::Range;

use super::migratetype::MigrateType;
use super::page::PageDesc;
use super::{LockedPageAllocator, PageAllocator, PAGEBLOCK_ORDER};
use crate::mm::{PhysAddr, PAGE_SIZE};

impl PageAllocator {
    /// Calls `f` on the handle slot of every movable block overlapping `range` that sits in a
    /// lent, CMA or isolated pageblock. Returns how many.
    fn lent_movable_blocks(&mut self, range: Range<PhysAddr>, mut f: impl FnMut(&mut Self, u32)) -> usize {
        let span = self.span();
        let (start, end) = (range.start.max(span.start), range.end.min(span.end));
        if start >= end {
            return 0;
        }
        let (Some(first), Some(last)) = (self.idx_of(start & !(PAGE_SIZE - 1)), self.idx_of((end - 1) & !(PAGE_SIZE - 1))) else {
            return 0;
        };
        // The head of the block holding `first`: blocks never cross a pageblock.
        let block_start = first >> PAGEBLOCK_ORDER << PAGEBLOCK_ORDER;
        let mut idx = first;
        while idx > block_start && self.mem_map[idx] == PageDesc::Tail {
            idx -= 1;
        }
        let mut count = 0;
        while let Some((head, desc)) = self.next_head(idx, last + 1) {
            let order = match desc {
                PageDesc::Movable { order, slot } => {
                    if matches!(
                        self.pageblock_type[head >> PAGEBLOCK_ORDER],
                        Some(MigrateType::Swiotlb | MigrateType::Cma | MigrateType::Isolate)
                    ) {
                        f(self, slot);
                        count += 1;
                    }
                    order
                }
                PageDesc::Free { order, .. } | PageDesc::Allocated { order } => order,
                PageDesc::Tail | PageDesc::Unmanaged => 0,
            };
            idx = head + (1 << order);
        }
        count
    }
}

impl LockedPageAllocator {
    /// Pins every movable page of a lent (or isolated) pageblock that `[addr, addr + size)`
    /// covers, so that neither reclaim nor migration moves it; returns how many were pinned.
    /// Undo with [`unpin_frames`](Self::unpin_frames) on the same range. Any context.
    pub fn pin_frames(&self, addr: PhysAddr, size: usize) -> usize {
        let mut a = self.lock();
        a.lent_movable_blocks(addr..addr.saturating_add(size as u64), |a, slot| {
            let page = a.movable.handle(slot);
            let _ = a.pin(page); // a live handle: mem_map names it
        })
    }

    /// Drops the pins [`pin_frames`](Self::pin_frames) took on the same range (the pages cannot
    /// have moved: they were pinned). Returns how many. Any context.
    pub fn unpin_frames(&self, addr: PhysAddr, size: usize) -> usize {
        let mut a = self.lock();
        a.lent_movable_blocks(addr..addr.saturating_add(size as u64), |a, slot| {
            let page = a.movable.handle(slot);
            let _ = a.unpin(page, false); // logs a pin nobody took
        })
    }
}
