//! One test per row of the fallback table, plus zones and whole-pageblock carving.

use super::*;

/// Allocates order-0 unmovable pages until memory runs out.
fn exhaust_unmovable(a: &mut PageAllocator, zone: ZoneType) -> Vec<PhysAddr> {
    core::iter::from_fn(|| a.alloc_pages(0, zone, MigrateType::Unmovable).ok()).collect()
}

#[test]
fn unmovable_never_lands_in_swiotlb_blocks() {
    let (la, _mem) = with_pool(2, 2);
    let mut a = la.lock();
    a.lend_swiotlb_pageblocks(blocks(2, 2)).unwrap();
    let pages = exhaust_unmovable(&mut a, ZoneType::Normal);
    assert_eq!(pages.len(), 2 * PAGEBLOCK_NR_PAGES, "only the two non-SWIOTLB blocks");
    assert!(pages.iter().all(|p| *p < block(2)));
    assert_eq!(a.nr_free_swiotlb_pages(ZoneType::Dma), 2 * PAGEBLOCK_NR_PAGES, "SWIOTLB free pages untouched");
    assert_eq!(a.alloc_pages(0, ZoneType::Normal, MigrateType::Unmovable), Err(AllocError::NoMemory));
    check_invariants(&a);
}

#[test]
fn unmovable_steals_a_free_movable_block_and_claims_it() {
    let mut a = allocator(2, None);
    let p = a.alloc_pages(0, ZoneType::Dma, MigrateType::Unmovable).unwrap();
    assert_eq!(a.pageblock_migratetype(p), Some(MigrateType::Unmovable), "whole free block claimed");
    assert_eq!(a.nr_free(ZoneType::Dma, MigrateType::Unmovable), PAGEBLOCK_NR_PAGES - 1);
    // The next unmovable page comes from the claimed block, not from another movable one.
    let q = a.alloc_pages(0, ZoneType::Dma, MigrateType::Unmovable).unwrap();
    assert_eq!(q & !(PAGEBLOCK_SIZE - 1), p & !(PAGEBLOCK_SIZE - 1));
    assert_eq!(a.pagetypeinfo().pageblocks[0][MigrateType::Movable.index()], 1);
    check_invariants(&a);
}

#[test]
fn stealing_from_a_mostly_used_block_takes_the_page_but_not_the_block() {
    let mut a = allocator(1, None);
    // Fill most of the only block with movable pages, leaving a few small free blocks.
    let pages: Vec<_> = (0..PAGEBLOCK_NR_PAGES - 3).map(|_| a.alloc_movable(0, ZoneType::Dma, owner(OwnerKind::Dirty)).unwrap()).collect();
    let p = a.alloc_pages(0, ZoneType::Dma, MigrateType::Unmovable).unwrap();
    assert_eq!(a.pageblock_migratetype(p), Some(MigrateType::Movable), "block not claimed: it is mostly used");
    assert_eq!(a.nr_free(ZoneType::Dma, MigrateType::Movable), 2);
    assert_eq!(pages.len(), PAGEBLOCK_NR_PAGES - 3);
    check_invariants(&a);
}

#[test]
fn movable_prefers_movable_blocks_over_lent_swiotlb_blocks() {
    let (la, _mem) = with_pool(1, 1);
    let mut a = la.lock();
    a.lend_swiotlb_pageblocks(blocks(1, 1)).unwrap();
    for _ in 0..PAGEBLOCK_NR_PAGES {
        let page = a.alloc_movable(0, ZoneType::Normal, owner(OwnerKind::Dirty)).unwrap();
        assert_eq!(a.pageblock_migratetype(a.movable_info(page).unwrap().addr), Some(MigrateType::Movable));
    }
    // MOVABLE is full: now it borrows SWIOTLB, and the block stays SWIOTLB.
    let page = a.alloc_movable(0, ZoneType::Normal, owner(OwnerKind::Dirty)).unwrap();
    assert_eq!(a.pageblock_migratetype(a.movable_info(page).unwrap().addr), Some(MigrateType::Swiotlb));
    assert_eq!(a.nr_free_swiotlb_pages(ZoneType::Dma), PAGEBLOCK_NR_PAGES - 1);
    check_invariants(&a);
}

#[test]
fn movable_borrows_swiotlb_before_stealing_unmovable_blocks() {
    let (la, _mem) = with_pool(1, 1);
    let mut a = la.lock();
    // Make block 0 UNMOVABLE (claimed by an unmovable page) and free again.
    let p = a.alloc_pages(0, ZoneType::Dma, MigrateType::Unmovable).unwrap();
    a.free_pages(p, 0).unwrap();
    assert_eq!(a.pageblock_migratetype(block(0)), Some(MigrateType::Unmovable));
    a.lend_swiotlb_pageblocks(blocks(1, 1)).unwrap();
    let page = a.alloc_movable(0, ZoneType::Dma, owner(OwnerKind::Dirty)).unwrap();
    assert_eq!(a.pageblock_migratetype(a.movable_info(page).unwrap().addr), Some(MigrateType::Swiotlb));
    assert_eq!(a.pageblock_migratetype(block(0)), Some(MigrateType::Unmovable), "not stolen while SWIOTLB had room");
    check_invariants(&a);
}

#[test]
fn movable_steals_unmovable_blocks_when_nothing_else_is_left() {
    let mut a = allocator(1, None);
    let p = a.alloc_pages(0, ZoneType::Dma, MigrateType::Unmovable).unwrap();
    a.free_pages(p, 0).unwrap();
    let page = a.alloc_movable(0, ZoneType::Dma, owner(OwnerKind::Dirty)).unwrap();
    assert_eq!(a.pageblock_migratetype(a.movable_info(page).unwrap().addr), Some(MigrateType::Movable), "claimed back");
    check_invariants(&a);
}

#[test]
fn nothing_converts_a_swiotlb_block() {
    let (la, _mem) = with_pool(1, 1);
    let mut a = la.lock();
    a.lend_swiotlb_pageblocks(blocks(1, 1)).unwrap();
    // Exhaust everything movable can reach, then free it all: SWIOTLB must still be SWIOTLB.
    let pages: Vec<_> = core::iter::from_fn(|| a.alloc_movable(0, ZoneType::Dma, owner(OwnerKind::Dirty)).ok()).collect();
    assert_eq!(pages.len(), 2 * PAGEBLOCK_NR_PAGES);
    assert_eq!(a.pageblock_migratetype(block(1)), Some(MigrateType::Swiotlb));
    pages.into_iter().for_each(|p| a.free_movable(p).unwrap());
    let unmovable = exhaust_unmovable(&mut a, ZoneType::Dma);
    assert_eq!(unmovable.len(), PAGEBLOCK_NR_PAGES);
    assert_eq!(a.pageblock_migratetype(block(1)), Some(MigrateType::Swiotlb));
    let info = a.pagetypeinfo();
    assert_eq!(info.pageblocks[0], [1, 0, 1, 0, 0]);
    check_invariants(&a);
}

#[test]
fn zone_dma_requests_stay_below_the_limit_and_normal_falls_back_to_dma() {
    let mut a = allocator(2, Some(1));
    let dma = a.alloc_pages(MAX_PAGE_ORDER, ZoneType::Dma, MigrateType::Unmovable).unwrap();
    assert_eq!(dma, block(0));
    assert_eq!(a.alloc_pages(0, ZoneType::Dma, MigrateType::Unmovable), Err(AllocError::NoMemory), "Normal is above the limit");
    a.free_pages(dma, MAX_PAGE_ORDER).unwrap();
    let n1 = a.alloc_pages(MAX_PAGE_ORDER, ZoneType::Normal, MigrateType::Unmovable).unwrap();
    assert_eq!(n1, block(1), "Normal first");
    let n2 = a.alloc_pages(MAX_PAGE_ORDER, ZoneType::Normal, MigrateType::Unmovable).unwrap();
    assert_eq!(n2, block(0), "then DMA");
    check_invariants(&a);
}

#[test]
fn contig_pageblocks_are_whole_free_contiguous_blocks_of_the_zone() {
    let mut a = allocator(6, Some(4));
    assert_eq!(a.alloc_contig_pageblocks(4, ZoneType::Dma), Ok(block(0)));
    assert_eq!(a.alloc_contig_pageblocks(1, ZoneType::Dma), Err(AllocError::NoMemory));
    // Give back block 1 and use one page of it, then give back 0, 2 and 3.
    a.free_contig_pageblocks(block(1), 1).unwrap();
    let used = a.alloc_pages(0, ZoneType::Dma, MigrateType::Unmovable).unwrap();
    assert_eq!(used & !(PAGEBLOCK_SIZE - 1), block(1));
    a.free_contig_pageblocks(block(0), 1).unwrap();
    a.free_contig_pageblocks(block(2), 2).unwrap();
    check_invariants(&a);
    assert_eq!(a.alloc_contig_pageblocks(2, ZoneType::Dma), Ok(block(2)), "0 alone is too short, 1 is in use");
    assert_eq!(a.alloc_contig_pageblocks(2, ZoneType::Dma), Err(AllocError::NoMemory));
    assert_eq!(a.alloc_contig_pageblocks(2, ZoneType::Normal), Ok(block(4)));
    assert_eq!(a.pageblock_migratetype(block(2)), None);
    assert_eq!(a.managed_pages(ZoneType::Dma), 2 * PAGEBLOCK_NR_PAGES);
    check_invariants(&a);
    a.free_contig_pageblocks(block(2), 2).unwrap();
    a.free_pages(used, 0).unwrap();
    assert_eq!(a.managed_pages(ZoneType::Dma), 4 * PAGEBLOCK_NR_PAGES);
    check_invariants(&a);
}
