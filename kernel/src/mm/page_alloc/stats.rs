//! Observability: `/proc/pagetypeinfo`, fragmentation (`/sys/kernel/debug/extfrag`) and a
//! one-line picture of RAM by pageblock.

use core::fmt;

use super::migratetype::{MigrateType, MIGRATE_TYPES};
use super::page::PageDesc;
use super::zone::{ZoneType, NR_ZONES};
use super::{PageAllocator, NR_PAGE_ORDERS, PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER};
use crate::mm::PhysAddr;

/// A snapshot of free blocks per order, zone and migrate type and of pageblocks per type
/// (Linux: `/proc/pagetypeinfo`). Plain data, no heap: take it under the lock, print it after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageTypeInfo {
    /// `free_blocks[zone][order][migratetype]`: free blocks of that order.
    pub free_blocks: [[[usize; MIGRATE_TYPES]; NR_PAGE_ORDERS]; NR_ZONES],
    /// `free_pages[zone][migratetype]`: the zone's free-page counters.
    pub free_pages: [[usize; MIGRATE_TYPES]; NR_ZONES],
    /// `pageblocks[zone][migratetype]`: managed pageblocks of each type.
    pub pageblocks: [[usize; MIGRATE_TYPES]; NR_ZONES],
    /// Compaction counters.
    pub compaction: CompactStats,
}

/// What compaction did since boot (Linux: `compact_success`, `compact_fail`,
/// `pgmigrate_success` ... in `/proc/vmstat`). Counted under the allocator lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Pageblocks emptied (by `compact_pageblock` or for `alloc_contig_pageblocks_compact`).
    pub blocks_compacted: usize,
    /// Pages migrated out of them.
    pub pages_migrated: usize,
    /// Clean pages dropped instead of migrated.
    pub pages_dropped: usize,
    /// Attempts that failed on a pinned page.
    pub fail_pinned: usize,
    /// Attempts that failed on an unmovable page.
    pub fail_unmovable: usize,
    /// Attempts that failed because no free page outside the range could take a page.
    pub fail_no_target: usize,
}

impl fmt::Display for CompactStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "compaction: {} pageblocks compacted, {} pages migrated, {} dropped; failures: {} pinned, {} unmovable, {} no target memory",
            self.blocks_compacted, self.pages_migrated, self.pages_dropped, self.fail_pinned, self.fail_unmovable, self.fail_no_target
        )
    }
}

/// How fragmented free memory is, node-wide (both zones, every migrate type, as Linux's
/// `free_area[order].nr_free` counts them). Plain data; take it under the lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fragmentation {
    /// Free pages (Linux: `contig_page_info.free_pages`).
    pub free_pages: usize,
    /// Pageblocks that are wholly free: one free block of `PAGEBLOCK_ORDER` each (Linux's free
    /// blocks suitable for a pageblock-order allocation, since `MAX_PAGE_ORDER` is that order).
    pub free_pageblocks: usize,
    /// The largest order with a free block; `None` when nothing is free.
    pub largest_free_order: Option<u8>,
    /// Linux's `unusable_free_index()` at `PAGEBLOCK_ORDER` (`mm/vmstat.c`), in thousandths as
    /// `/sys/kernel/debug/extfrag/unusable_index` prints it: the share of free pages that lie in
    /// blocks too small for a pageblock-order allocation. 0: none, 1000: all (or nothing free).
    pub unusable_free_index: u32,
    /// MOVABLE pageblocks holding unmovable pages (Linux's "mixed" count of
    /// `pagetypeinfo_showmixedcount`, seen from the MOVABLE side).
    pub movable_blocks_with_unmovable: usize,
    /// UNMOVABLE pageblocks holding movable pages (the same, seen from the UNMOVABLE side).
    pub unmovable_blocks_with_movable: usize,
}

impl fmt::Display for Fragmentation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fragmentation: {} free pages, {} free pageblocks, largest free order {}, unusable free index {}.{:03} at order {PAGEBLOCK_ORDER}; \
             mixed pageblocks: {} movable holding unmovable pages, {} unmovable holding movable pages",
            self.free_pages,
            self.free_pageblocks,
            self.largest_free_order.map_or(-1, i32::from),
            self.unusable_free_index / 1000,
            self.unusable_free_index % 1000,
            self.movable_blocks_with_unmovable,
            self.unmovable_blocks_with_movable,
        )
    }
}

/// Linux `unusable_free_index()`: `(free_pages - (suitable_blocks << order)) * 1000 / free_pages`,
/// 1000 when nothing is free.
pub(super) fn unusable_free_index(free_pages: usize, suitable_blocks: usize, order: u8) -> u32 {
    if free_pages == 0 {
        return 1000;
    }
    ((free_pages - (suitable_blocks << order)) as u64 * 1000 / free_pages as u64) as u32
}

impl PageAllocator {
    /// Measures [`Fragmentation`]: the free-area counters for the free side, and a walk of every
    /// managed pageblock's block heads (one descriptor per allocated or free block, not per
    /// page) for the mixed blocks. Task context: the walk covers all of RAM under the lock.
    pub fn fragmentation(&self) -> Fragmentation {
        let mut frag = Fragmentation::default();
        let mut suitable = 0;
        for zone in &self.zones {
            for (order, area) in zone.free_area.iter().enumerate() {
                let blocks: usize = area.nr_free.iter().sum();
                if blocks > 0 {
                    frag.largest_free_order = frag.largest_free_order.max(Some(order as u8));
                }
                frag.free_pages += blocks << order;
                if order >= PAGEBLOCK_ORDER as usize {
                    suitable += blocks << (order - PAGEBLOCK_ORDER as usize);
                }
            }
        }
        frag.free_pageblocks = suitable;
        frag.unusable_free_index = unusable_free_index(frag.free_pages, suitable, PAGEBLOCK_ORDER);
        for (block, mt) in self.pageblock_type.iter().enumerate() {
            let (Some(mt @ (MigrateType::Movable | MigrateType::Unmovable)), head) = (mt, block << PAGEBLOCK_ORDER) else { continue };
            let (mut unmovable, mut movable) = (false, false);
            let mut idx = head;
            while idx < head + PAGEBLOCK_NR_PAGES {
                idx += match self.mem_map[idx] {
                    PageDesc::Allocated { order } => {
                        unmovable = true;
                        1 << order
                    }
                    PageDesc::Movable { order, .. } => {
                        movable = true;
                        1 << order
                    }
                    PageDesc::Free { order, .. } => 1 << order,
                    PageDesc::Tail | PageDesc::Unmanaged => 1,
                };
            }
            match mt {
                MigrateType::Movable if unmovable => frag.movable_blocks_with_unmovable += 1,
                MigrateType::Unmovable if movable => frag.unmovable_blocks_with_movable += 1,
                _ => {}
            }
        }
        frag
    }

    /// Takes a [`PageTypeInfo`] snapshot.
    pub fn pagetypeinfo(&self) -> PageTypeInfo {
        let mut info = PageTypeInfo {
            free_blocks: [[[0; MIGRATE_TYPES]; NR_PAGE_ORDERS]; NR_ZONES],
            free_pages: [[0; MIGRATE_TYPES]; NR_ZONES],
            pageblocks: [[0; MIGRATE_TYPES]; NR_ZONES],
            compaction: self.compact_stats,
        };
        for (z, zone) in self.zones.iter().enumerate() {
            for (o, area) in zone.free_area.iter().enumerate() {
                info.free_blocks[z][o] = area.nr_free;
            }
            info.free_pages[z] = zone.nr_free_pages;
        }
        for (block, mt) in self.pageblock_type.iter().enumerate() {
            if let Some(mt) = mt {
                let z = self.zone_of(block << PAGEBLOCK_ORDER) as usize;
                info.pageblocks[z][mt.index()] += 1;
            }
        }
        info
    }

    /// A one-line picture of the span, one character per pageblock; see [`RamPicture`].
    /// `is_bounce_pool` tells which unmanaged blocks belong to a SWIOTLB pool.
    pub fn ram_picture<F: Fn(PhysAddr) -> bool>(&self, is_bounce_pool: F) -> RamPicture<'_, F> {
        RamPicture { allocator: self, is_bounce_pool }
    }
}

impl fmt::Display for PageTypeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Page block order: {PAGEBLOCK_ORDER}")?;
        writeln!(f, "Pages per block:  {PAGEBLOCK_NR_PAGES}")?;
        write!(f, "\nFree pages count per migrate type at order      ")?;
        for order in 0..NR_PAGE_ORDERS {
            write!(f, " {order:>5}")?;
        }
        writeln!(f)?;
        for zone in ZoneType::ALL {
            for mt in MigrateType::ALL {
                write!(f, "Node    0, zone {:>8}, type {:>12}  ", zone.name(), mt.name())?;
                for order in 0..NR_PAGE_ORDERS {
                    write!(f, " {:>5}", self.free_blocks[zone as usize][order][mt.index()])?;
                }
                writeln!(f)?;
            }
        }
        write!(f, "\nNumber of blocks type            ")?;
        for mt in MigrateType::ALL {
            write!(f, " {:>10}", mt.name())?;
        }
        writeln!(f, "   free pages (per type)")?;
        for zone in ZoneType::ALL {
            write!(f, "Node 0, zone {:>8}           ", zone.name())?;
            for mt in MigrateType::ALL {
                write!(f, " {:>10}", self.pageblocks[zone as usize][mt.index()])?;
            }
            write!(f, "  ")?;
            for mt in MigrateType::ALL {
                write!(f, " {:>6}", self.free_pages[zone as usize][mt.index()])?;
            }
            writeln!(f)?;
        }
        writeln!(f, "{}", self.compaction)
    }
}

/// RAM, one character per 2 MiB pageblock from the lowest address up. Legend:
///
/// | char | pageblock                                                                  |
/// |------|----------------------------------------------------------------------------|
/// | `U`  | UNMOVABLE                                                                  |
/// | `M`  | MOVABLE                                                                    |
/// | `S`  | SWIOTLB: spare bounce-buffer memory lent to the allocator, holding pages    |
/// | `s`  | SWIOTLB, lent and wholly free (reclaim takes it back without moving a page) |
/// | `C`  | CMA: a free or borrowed pageblock of the CMA area                          |
/// | `I`  | ISOLATE: being taken back                                                  |
/// | `b`  | not managed here, belongs to a SWIOTLB pool (bounce slots)                 |
/// | `.`  | not managed here: not RAM, reserved, or carved out for something else       |
/// | `\|` | (between characters) the ZONE_DMA / ZONE_NORMAL boundary, if inside the span |
///
/// Format it while holding the allocator lock; it borrows the allocator and writes no heap.
/// [`PageAllocator::RAM_PICTURE_LEGEND`] says the same in one line, to print under it.
pub struct RamPicture<'a, F> {
    allocator: &'a PageAllocator,
    is_bounce_pool: F,
}

impl PageAllocator {
    /// The legend of [`RamPicture`] in one line (the GDB view `pageblocks` prints the same).
    pub const RAM_PICTURE_LEGEND: &'static str =
        "M movable, U unmovable, S lent to the page allocator as MIGRATE_SWIOTLB and holding pages, \
         s lent and empty, C CMA area, I isolated, b bounce slots, . reserved, | end of ZONE_DMA";

    /// True if pageblock `block` is one free buddy block of the pageblock's order. Each
    /// pageblock is its own buddy tree (`MAX_PAGE_ORDER` = `PAGEBLOCK_ORDER`) and freeing merges
    /// up to that order, so this is exactly "no page of the block is allocated", read from one
    /// descriptor instead of walking the block's 512.
    fn pageblock_wholly_free(&self, block: usize) -> bool {
        matches!(self.mem_map.get(block << PAGEBLOCK_ORDER), Some(PageDesc::Free { order, .. }) if *order == PAGEBLOCK_ORDER)
    }
}

impl<F: Fn(PhysAddr) -> bool> fmt::Display for RamPicture<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.allocator;
        let dma_end_block = a.zones[ZoneType::Dma as usize].end >> PAGEBLOCK_ORDER;
        for (block, mt) in a.pageblock_type.iter().enumerate() {
            if block == dma_end_block && block != 0 {
                f.write_str("|")?;
            }
            let c = match mt {
                // Lent memory that holds pages costs migration to take back; empty lent
                // memory does not: the picture tells them apart.
                Some(MigrateType::Swiotlb) if a.pageblock_wholly_free(block) => 's',
                Some(mt) => mt.picture_char(),
                None if (self.is_bounce_pool)(a.addr_of(block << PAGEBLOCK_ORDER)) => 'b',
                None => '.',
            };
            write!(f, "{c}")?;
        }
        Ok(())
    }
}
