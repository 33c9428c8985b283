//! The buddy allocator proper: init, free lists, `__rmqueue` with fallbacks, `__free_one_page`,
//! whole-pageblock carving and lending.

use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use super::error::{AllocError, FreeError, InitError, RangeError};
use super::migratetype::{fallbacks, Fallback, MigrateType};
use super::movable::MovableTable;
use super::page::{PageDesc, NIL};
use super::stats::CompactStats;
use super::zone::{Zone, ZoneType, NR_ZONES};
use super::{MAX_PAGE_ORDER, PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER, PAGEBLOCK_SIZE};
use crate::mm::{align_down, align_up, PhysAddr, PAGE_SHIFT, PAGE_SIZE};

/// The page allocator for one RAM span (one node). A plain struct: the kernel puts it behind a
/// lock, see [`LockedPageAllocator`](super::LockedPageAllocator).
pub struct PageAllocator {
    /// Physical address of page index 0 (pageblock aligned).
    pub(super) base: PhysAddr,
    /// One descriptor per page of the span (Linux: `mem_map`).
    pub(super) mem_map: Vec<PageDesc>,
    /// Migrate type of each pageblock; `None` while the block is not managed (hole, reserved,
    /// handed out whole). Linux keeps this in `pageblock_flags`.
    pub(super) pageblock_type: Vec<Option<MigrateType>>,
    /// Free pages of each isolated pageblock (0 for the others): the block is wholly free when
    /// this reaches `PAGEBLOCK_NR_PAGES`. See [`add_to_free_list`](Self::add_to_free_list).
    pub(super) isolated_free: Vec<u16>,
    pub(super) zones: [Zone; NR_ZONES],
    /// The handles of movable pages.
    pub(super) movable: MovableTable,
    /// What compaction did (Linux: the `compact_*` lines of `/proc/vmstat`).
    pub(super) compact_stats: CompactStats,
}

impl PageAllocator {
    /// An allocator for the RAM span `ram` (rounded out to pageblocks), managing the pages of
    /// `free` (page aligned, inside `ram`, any pageblock alignment). Pageblocks start MOVABLE
    /// (Linux: `memmap_init`); unmovable allocations claim blocks as they need them. `dma_limit`
    /// ends ZONE_DMA (rounded down to a pageblock); `None` puts all RAM in ZONE_DMA.
    ///
    /// This is the only method that allocates from the heap: the page descriptors, the
    /// pageblock types and the handle table (one slot per page, the most movable allocations
    /// there can be) are sized for the whole span here.
    pub fn new(ram: Range<PhysAddr>, free: &[Range<PhysAddr>], dma_limit: Option<PhysAddr>) -> Result<Self, InitError> {
        let base = align_down(ram.start, PAGEBLOCK_SIZE);
        let end = align_up(ram.end, PAGEBLOCK_SIZE).ok_or(InitError::BadSpan)?;
        let nr_pages = (end.saturating_sub(base) >> PAGE_SHIFT) as usize;
        if nr_pages == 0 || nr_pages >= NIL as usize {
            return Err(InitError::BadSpan);
        }
        let dma_end = match dma_limit {
            None => nr_pages,
            Some(limit) => ((align_down(limit, PAGEBLOCK_SIZE).saturating_sub(base) >> PAGE_SHIFT) as usize).min(nr_pages),
        };
        let mut pa = PageAllocator {
            base,
            mem_map: vec![PageDesc::Unmanaged; nr_pages],
            pageblock_type: vec![None; nr_pages / PAGEBLOCK_NR_PAGES],
            isolated_free: vec![0; nr_pages / PAGEBLOCK_NR_PAGES],
            zones: [Zone::new(0, dma_end), Zone::new(dma_end, nr_pages)],
            movable: MovableTable::new(nr_pages),
            compact_stats: CompactStats::default(),
        };
        let mut pages = Vec::with_capacity(free.len());
        for r in free {
            let bad = InitError::BadRange { start: r.start, end: r.end };
            if !r.start.is_multiple_of(PAGE_SIZE)
                || !r.end.is_multiple_of(PAGE_SIZE)
                || r.start > r.end
                || r.start < ram.start
                || r.end > ram.end
            {
                return Err(bad);
            }
            let (first, last) = (pa.idx_of(r.start).ok_or(bad.clone())?, ((r.end - base) >> PAGE_SHIFT) as usize);
            for idx in first..last {
                if pa.mem_map[idx] != PageDesc::Unmanaged {
                    return Err(InitError::Overlap(pa.addr_of(idx)));
                }
                pa.mem_map[idx] = PageDesc::Tail;
                pa.pageblock_type[idx >> PAGEBLOCK_ORDER] = Some(MigrateType::Movable);
            }
            pages.push(first..last);
        }
        for r in pages {
            let mut idx = r.start;
            while idx < r.end {
                let order = (idx.trailing_zeros().min(MAX_PAGE_ORDER as u32)).min((r.end - idx).ilog2()) as u8;
                pa.zone_mut(idx).managed_pages += 1 << order;
                pa.free_one_page(idx, order);
                idx += 1 << order;
            }
        }
        Ok(pa)
    }

    // ---- addresses, zones, pageblocks ----

    /// The physical span covered (pageblock aligned).
    pub fn span(&self) -> Range<PhysAddr> {
        self.base..self.addr_of(self.mem_map.len())
    }

    pub(super) fn addr_of(&self, idx: usize) -> PhysAddr {
        self.base + ((idx as u64) << PAGE_SHIFT)
    }

    /// The page index of a page-aligned address inside the span.
    pub(super) fn idx_of(&self, addr: PhysAddr) -> Option<usize> {
        let off = addr.checked_sub(self.base)?;
        let idx = (off >> PAGE_SHIFT) as usize;
        (off.is_multiple_of(PAGE_SIZE) && idx < self.mem_map.len()).then_some(idx)
    }

    pub(super) fn zone_of(&self, idx: usize) -> ZoneType {
        if idx < self.zones[ZoneType::Dma as usize].end {
            ZoneType::Dma
        } else {
            ZoneType::Normal
        }
    }

    fn zone_mut(&mut self, idx: usize) -> &mut Zone {
        let z = self.zone_of(idx);
        &mut self.zones[z as usize]
    }

    /// The migrate type of the pageblock holding `addr`; `None` if it is not managed.
    pub fn pageblock_migratetype(&self, addr: PhysAddr) -> Option<MigrateType> {
        let idx = self.idx_of(align_down(addr, PAGE_SIZE))?;
        self.pageblock_type[idx >> PAGEBLOCK_ORDER]
    }

    /// The pageblock indices of `range`, which must be whole pageblocks inside the span.
    pub(super) fn pageblock_range(&self, range: &Range<PhysAddr>) -> Result<Range<usize>, RangeError> {
        let bad = RangeError::NotPageblocks { start: range.start, end: range.end };
        if !range.start.is_multiple_of(PAGEBLOCK_SIZE) || !range.end.is_multiple_of(PAGEBLOCK_SIZE) || range.start >= range.end {
            return Err(bad);
        }
        let span = self.span();
        if range.start < span.start || range.end > span.end {
            return Err(bad);
        }
        let first = ((range.start - self.base) >> PAGE_SHIFT) as usize >> PAGEBLOCK_ORDER;
        let last = ((range.end - self.base) >> PAGE_SHIFT) as usize >> PAGEBLOCK_ORDER;
        Ok(first..last)
    }

    // ---- counters ----

    /// Free pages of one migrate type in a zone.
    pub fn nr_free(&self, zone: ZoneType, mt: MigrateType) -> usize {
        self.zones[zone as usize].nr_free_pages[mt.index()]
    }

    /// Free pages that some allocation could use: all but isolated ones (Linux: `NR_FREE_PAGES`).
    pub fn nr_free_pages(&self, zone: ZoneType) -> usize {
        MigrateType::ALL.iter().filter(|mt| **mt != MigrateType::Isolate).map(|mt| self.nr_free(zone, *mt)).sum()
    }

    /// Free pages in lent SWIOTLB blocks, usable by movable allocations only (our counterpart
    /// of `NR_FREE_CMA_PAGES`).
    pub fn nr_free_swiotlb_pages(&self, zone: ZoneType) -> usize {
        self.nr_free(zone, MigrateType::Swiotlb)
    }

    /// Free pages in CMA blocks, usable by movable allocations only (Linux: `NR_FREE_CMA_PAGES`).
    pub fn nr_free_cma_pages(&self, zone: ZoneType) -> usize {
        self.nr_free(zone, MigrateType::Cma)
    }

    /// What compaction and `alloc_contig_pageblocks_compact` did so far.
    pub fn compact_stats(&self) -> CompactStats {
        self.compact_stats
    }

    /// Pages managed by the allocator in a zone, free or not.
    pub fn managed_pages(&self, zone: ZoneType) -> usize {
        self.zones[zone as usize].managed_pages
    }

    // ---- free lists ----

    /// Puts the free block at `idx` on `free_area[order].free_list[mt]`. ISOLATE has no lists:
    /// a free block of an isolated pageblock is linked into no list (`prev` and `next` stay
    /// `NIL`), not merged with its buddies, and counted only in pages (the zone's free pages
    /// of ISOLATE and the block's `isolated_free`; `free_area[..].nr_free` of ISOLATE stays 0).
    /// Nothing allocates from an isolated block, and reclaim frees every migrated page's old
    /// frame into one, then takes the whole block once `isolated_free` says it is all free; so
    /// lists and merging would only cost. Undoing the isolation merges the free blocks onto
    /// their type's lists ([`undo_isolate_pageblock`](Self::undo_isolate_pageblock)).
    pub(super) fn add_to_free_list(&mut self, idx: usize, order: u8, mt: MigrateType) {
        if mt == MigrateType::Isolate {
            self.add_isolated(idx, order);
            return;
        }
        let zone = self.zone_of(idx);
        let z = &mut self.zones[zone as usize];
        let area = &mut z.free_area[order as usize];
        area.nr_free[mt.index()] += 1;
        z.nr_free_pages[mt.index()] += 1 << order;
        let next = area.free_list[mt.index()];
        area.free_list[mt.index()] = idx as u32;
        self.mem_map[idx] = PageDesc::Free { order, prev: NIL, next };
        if let Some(PageDesc::Free { prev, .. }) = self.mem_map.get_mut(next as usize) {
            *prev = idx as u32;
        }
    }

    /// A free block of an isolated pageblock, on no list (see [`add_to_free_list`](Self::add_to_free_list)).
    #[inline]
    fn add_isolated(&mut self, idx: usize, order: u8) {
        let zone = self.zone_of(idx);
        self.zones[zone as usize].nr_free_pages[MigrateType::Isolate.index()] += 1 << order;
        self.isolated_free[idx >> PAGEBLOCK_ORDER] += 1 << order;
        self.mem_map[idx] = PageDesc::Free { order, prev: NIL, next: NIL };
    }

    /// Unlinks the free block at `idx`; its head becomes a `Tail` until the caller says more.
    /// For ISOLATE only the counters change (see [`add_to_free_list`](Self::add_to_free_list)).
    pub(super) fn del_from_free_list(&mut self, idx: usize, order: u8, mt: MigrateType) {
        let PageDesc::Free { order: o, prev, next } = self.mem_map[idx] else {
            unreachable!("page {idx} is not on a free list");
        };
        debug_assert_eq!(o, order);
        let zone = self.zone_of(idx);
        let z = &mut self.zones[zone as usize];
        z.nr_free_pages[mt.index()] -= 1 << order;
        self.mem_map[idx] = PageDesc::Tail;
        if mt == MigrateType::Isolate {
            self.isolated_free[idx >> PAGEBLOCK_ORDER] -= 1 << order;
            return;
        }
        z.free_area[order as usize].nr_free[mt.index()] -= 1;
        if prev == NIL {
            z.free_area[order as usize].free_list[mt.index()] = next;
        } else if let PageDesc::Free { next: n, .. } = &mut self.mem_map[prev as usize] {
            *n = next;
        }
        if let Some(PageDesc::Free { prev: p, .. }) = self.mem_map.get_mut(next as usize) {
            *p = prev;
        }
    }

    /// Frees the block at `idx` and merges it with its free buddies (Linux: `__free_one_page`).
    /// Buddies never cross a pageblock because `MAX_PAGE_ORDER == PAGEBLOCK_ORDER`.
    #[inline]
    pub(super) fn free_one_page(&mut self, idx: usize, order: u8) {
        let mt = self.pageblock_type[idx >> PAGEBLOCK_ORDER].expect("freeing into an unmanaged pageblock");
        if mt == MigrateType::Isolate {
            // No merging, no list: see `add_to_free_list`.
            self.add_isolated(idx, order);
        } else {
            self.free_one_page_listed(idx, order, mt);
        }
    }

    /// [`free_one_page`](Self::free_one_page) into a pageblock of type `mt`, not isolated.
    #[inline(never)]
    fn free_one_page_listed(&mut self, mut idx: usize, mut order: u8, mt: MigrateType) {
        while order < MAX_PAGE_ORDER {
            let buddy = idx ^ (1 << order);
            if !matches!(self.mem_map[buddy], PageDesc::Free { order: o, .. } if o == order) {
                break;
            }
            self.del_from_free_list(buddy, order, mt);
            self.mem_map[idx.max(buddy)] = PageDesc::Tail;
            idx = idx.min(buddy);
            order += 1;
        }
        self.add_to_free_list(idx, order, mt);
    }

    /// Splits a free block of order `high` at `idx` down to `low`, putting the upper halves back
    /// on the lists of `mt` (Linux: `expand`).
    pub(super) fn expand(&mut self, idx: usize, low: u8, mut high: u8, mt: MigrateType) {
        while high > low {
            high -= 1;
            self.add_to_free_list(idx + (1 << high), high, mt);
        }
    }

    /// The smallest free block of at least `order` on `mt`'s lists (Linux: `__rmqueue_smallest`).
    fn rmqueue_smallest(&mut self, zone: ZoneType, order: u8, mt: MigrateType) -> Option<usize> {
        for o in order..=MAX_PAGE_ORDER {
            let head = self.zones[zone as usize].free_area[o as usize].free_list[mt.index()];
            if head != NIL {
                let idx = head as usize;
                self.del_from_free_list(idx, o, mt);
                self.expand(idx, order, o, mt);
                return Some(idx);
            }
        }
        None
    }

    /// Other types' lists, as the table in [`migratetype`](super::migratetype) says (Linux:
    /// `__rmqueue_fallback` and `__rmqueue_cma_fallback`).
    pub(super) fn rmqueue_fallback(&mut self, zone: ZoneType, order: u8, request: MigrateType, allow_borrow: bool) -> Option<usize> {
        for fallback in fallbacks(request) {
            match *fallback {
                Fallback::Borrow(mt) => {
                    if allow_borrow {
                        if let Some(idx) = self.rmqueue_smallest(zone, order, mt) {
                            return Some(idx);
                        }
                    }
                }
                Fallback::Steal(mt) => {
                    // The largest block first, to take over whole blocks rather than scatter.
                    for o in (order..=MAX_PAGE_ORDER).rev() {
                        let head = self.zones[zone as usize].free_area[o as usize].free_list[mt.index()];
                        if head == NIL {
                            continue;
                        }
                        let idx = head as usize;
                        let block = idx >> PAGEBLOCK_ORDER;
                        if o >= PAGEBLOCK_ORDER / 2 || self.free_pages_in_block(block) >= PAGEBLOCK_NR_PAGES / 2 {
                            // Claim the block (Linux: `try_to_claim_block`).
                            self.move_freepages_block(block, request);
                            return self.rmqueue_smallest(zone, order, request);
                        }
                        self.del_from_free_list(idx, o, mt);
                        self.expand(idx, order, o, mt);
                        return Some(idx);
                    }
                }
            }
        }
        None
    }

    /// Takes a block of `order` for `mt` from the zones allowed by `highest_zone`; the head is
    /// left `Allocated`. `allow_borrow` lets movable requests borrow SWIOTLB and CMA blocks (Linux: `ALLOC_CMA`).
    pub(super) fn rmqueue(&mut self, order: u8, highest_zone: ZoneType, mt: MigrateType, allow_borrow: bool) -> Result<usize, AllocError> {
        if order > MAX_PAGE_ORDER {
            return Err(AllocError::OrderTooLarge(order));
        }
        for zone in highest_zone.zonelist() {
            let found = match self.rmqueue_smallest(zone, order, mt) {
                Some(idx) => Some(idx),
                None => self.rmqueue_fallback(zone, order, mt, allow_borrow),
            };
            if let Some(idx) = found {
                self.mem_map[idx] = PageDesc::Allocated { order };
                return Ok(idx);
            }
        }
        Err(AllocError::NoMemory)
    }

    // ---- the public allocation API ----

    /// Allocates `2^order` contiguous pages from `highest_zone` or a lower zone. Only
    /// [`MigrateType::Unmovable`] may be asked for here: movable memory is held through a handle
    /// ([`alloc_movable`](Self::alloc_movable)) so it can be migrated.
    pub fn alloc_pages(&mut self, order: u8, highest_zone: ZoneType, mt: MigrateType) -> Result<PhysAddr, AllocError> {
        if mt != MigrateType::Unmovable {
            return Err(AllocError::WrongMigrateType(mt));
        }
        let idx = self.rmqueue(order, highest_zone, mt, false)?;
        Ok(self.addr_of(idx))
    }

    /// Frees a block returned by [`alloc_pages`](Self::alloc_pages) with the same order.
    pub fn free_pages(&mut self, addr: PhysAddr, order: u8) -> Result<(), FreeError> {
        match self.check_free(addr, order) {
            Ok(idx) => {
                self.free_one_page(idx, order);
                Ok(())
            }
            Err(e) => {
                log::error!("page_alloc: free_pages({addr:#x}, order {order}) refused: {e:?}");
                Err(e)
            }
        }
    }

    fn check_free(&self, addr: PhysAddr, order: u8) -> Result<usize, FreeError> {
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Err(FreeError::Misaligned { addr, order });
        }
        let idx = self.idx_of(addr).ok_or(FreeError::OutOfRange(addr))?;
        match self.mem_map[idx] {
            PageDesc::Allocated { order: o } if o == order => Ok(idx),
            PageDesc::Allocated { order: allocated } => Err(FreeError::WrongOrder { addr, allocated, freed: order }),
            PageDesc::Free { .. } => Err(FreeError::DoubleFree(addr)),
            PageDesc::Movable { .. } => Err(FreeError::IsMovable(addr)),
            PageDesc::Tail | PageDesc::Unmanaged => Err(FreeError::NotAllocated(addr)),
        }
    }

    // ---- whole pageblocks ----

    /// Takes `count` contiguous, entirely free UNMOVABLE or MOVABLE pageblocks out of `zone`
    /// (used to carve SWIOTLB pools). The blocks leave the allocator (unmanaged) until given back
    /// with [`free_contig_pageblocks`](Self::free_contig_pageblocks) or lent with
    /// [`lend_swiotlb_pageblocks`](Self::lend_swiotlb_pageblocks). Unlike Linux's
    /// `alloc_contig_range` it does not migrate pages out of partly used blocks.
    pub fn alloc_contig_pageblocks(&mut self, count: usize, zone: ZoneType) -> Result<PhysAddr, AllocError> {
        if count == 0 {
            return Err(AllocError::ZeroCount);
        }
        let z = &self.zones[zone as usize];
        let blocks = (z.start >> PAGEBLOCK_ORDER)..(z.end >> PAGEBLOCK_ORDER);
        let mut run = 0;
        for block in blocks {
            let head = block << PAGEBLOCK_ORDER;
            let whole_free = matches!(self.pageblock_type[block], Some(MigrateType::Unmovable | MigrateType::Movable))
                && matches!(self.mem_map[head], PageDesc::Free { order: MAX_PAGE_ORDER, .. });
            run = if whole_free { run + 1 } else { 0 };
            if run == count {
                let first = block + 1 - count;
                for b in first..=block {
                    self.take_free_pageblock(b);
                }
                return Ok(self.addr_of(first << PAGEBLOCK_ORDER));
            }
        }
        Err(AllocError::NoMemory)
    }

    /// Removes an entirely free pageblock from its free list and from management.
    pub(super) fn take_free_pageblock(&mut self, block: usize) {
        let head = block << PAGEBLOCK_ORDER;
        let mt = self.pageblock_type[block].expect("taking an unmanaged pageblock");
        if mt == MigrateType::Isolate {
            // Wholly free, as unmerged blocks on no list (`add_to_free_list`): only counters.
            debug_assert_eq!(self.isolated_free[block] as usize, PAGEBLOCK_NR_PAGES);
            self.zone_mut(head).nr_free_pages[mt.index()] -= PAGEBLOCK_NR_PAGES;
            self.isolated_free[block] = 0;
        } else {
            self.del_from_free_list(head, MAX_PAGE_ORDER, mt);
        }
        self.mem_map[head..head + PAGEBLOCK_NR_PAGES].fill(PageDesc::Unmanaged);
        self.pageblock_type[block] = None;
        self.zone_mut(head).managed_pages -= PAGEBLOCK_NR_PAGES;
    }

    /// Gives back `count` pageblocks from [`alloc_contig_pageblocks`](Self::alloc_contig_pageblocks)
    /// as MOVABLE blocks.
    pub fn free_contig_pageblocks(&mut self, addr: PhysAddr, count: usize) -> Result<(), RangeError> {
        let end = addr.saturating_add((count as u64).saturating_mul(PAGEBLOCK_SIZE));
        self.add_pageblocks(addr..end, MigrateType::Movable)
    }

    /// Lends whole, unmanaged pageblocks (spare SWIOTLB pool memory) to the allocator as
    /// MIGRATE_SWIOTLB: movable allocations may use them until they are taken back with
    /// [`LockedPageAllocator::reclaim_swiotlb_pageblocks`](super::LockedPageAllocator::reclaim_swiotlb_pageblocks).
    pub fn lend_swiotlb_pageblocks(&mut self, range: Range<PhysAddr>) -> Result<(), RangeError> {
        self.add_pageblocks(range, MigrateType::Swiotlb)
    }

    /// As [`lend_swiotlb_pageblocks`](Self::lend_swiotlb_pageblocks) for several ranges, all or
    /// none: every range is checked before any is lent (the `lend` policy's boot lends the
    /// pageblocks between those it keeps, spread over the pool's areas).
    pub fn lend_swiotlb_pageblock_ranges(&mut self, ranges: &[Range<PhysAddr>]) -> Result<(), RangeError> {
        for range in ranges {
            self.unmanaged_pageblocks(range)?;
        }
        for range in ranges {
            self.add_pageblocks(range.clone(), MigrateType::Swiotlb)?;
        }
        Ok(())
    }

    /// Gives whole, unmanaged pageblocks of a CMA area to the allocator as MIGRATE_CMA (Linux:
    /// `init_cma_reserved_pageblock()`): movable allocations may use them until `cma_alloc`
    /// takes them (see [`CmaArea`](crate::mm::cma::CmaArea)).
    pub fn init_cma_reserved_pageblocks(&mut self, range: Range<PhysAddr>) -> Result<(), RangeError> {
        self.add_pageblocks(range, MigrateType::Cma)
    }

    /// The pageblocks of `range`, if the allocator manages none of them yet.
    fn unmanaged_pageblocks(&self, range: &Range<PhysAddr>) -> Result<Range<usize>, RangeError> {
        let blocks = self.pageblock_range(range).inspect_err(|e| log::error!("page_alloc: {e:?}"))?;
        for block in blocks.clone() {
            let head = block << PAGEBLOCK_ORDER;
            let managed = self.pageblock_type[block].is_some()
                || self.mem_map[head..head + PAGEBLOCK_NR_PAGES].iter().any(|d| *d != PageDesc::Unmanaged);
            if managed {
                let e = RangeError::AlreadyManaged(self.addr_of(head));
                log::error!("page_alloc: {e:?}");
                return Err(e);
            }
        }
        Ok(blocks)
    }

    fn add_pageblocks(&mut self, range: Range<PhysAddr>, mt: MigrateType) -> Result<(), RangeError> {
        let blocks = self.unmanaged_pageblocks(&range)?;
        for block in blocks {
            let head = block << PAGEBLOCK_ORDER;
            self.mem_map[head..head + PAGEBLOCK_NR_PAGES].fill(PageDesc::Tail);
            self.pageblock_type[block] = Some(mt);
            self.zone_mut(head).managed_pages += PAGEBLOCK_NR_PAGES;
            self.add_to_free_list(head, MAX_PAGE_ORDER, mt);
        }
        Ok(())
    }
}
