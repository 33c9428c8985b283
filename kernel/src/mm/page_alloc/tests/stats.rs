//! pagetypeinfo and the RAM picture.

use super::*;

#[test]
fn ram_picture_shows_one_char_per_pageblock() {
    let end = BASE + 8 * PAGEBLOCK_SIZE;
    let a = PageAllocator::new(BASE..end, &[BASE..block(5)], Some(block(2))).unwrap();
    let la = LockedPageAllocator::new(a);
    let mut a = la.lock();
    let u = a.alloc_pages(0, ZoneType::Dma, MigrateType::Unmovable).unwrap();
    assert_eq!(u & !(PAGEBLOCK_SIZE - 1), block(1), "the claimed block");
    a.lend_swiotlb_pageblocks(blocks(5, 1)).unwrap();
    a.start_isolate_pageblock(2);
    let pool = |pa: PhysAddr| (block(6)..block(8)).contains(&pa);
    assert_eq!(a.ram_picture(pool).to_string(), "MU|IMMsbb", "a lent block nobody uses is `s`");
    a.undo_isolate_pageblock(2, MigrateType::Movable);
    assert_eq!(a.ram_picture(|_| false).to_string(), "MU|MMMs..");
    check_invariants(&a);
}

#[test]
fn ram_picture_tells_lent_blocks_holding_pages_from_empty_ones() {
    let end = BASE + 4 * PAGEBLOCK_SIZE;
    let a = PageAllocator::new(BASE..end, &[BASE..block(2)], None).unwrap();
    let la = LockedPageAllocator::new(a);
    la.lock().lend_swiotlb_pageblocks(blocks(2, 2)).unwrap();
    assert_eq!(la.lock().ram_picture(|_| false).to_string(), "MMss");
    // Movable allocations borrow lent blocks only once MOVABLE memory is used up.
    let mut held = Vec::new();
    while held.len() < 2 * PAGEBLOCK_NR_PAGES + 1 {
        held.push(la.lock().alloc_movable(0, ZoneType::Normal, owner(OwnerKind::Dirty)).unwrap());
    }
    let picture = la.lock().ram_picture(|_| false).to_string();
    assert_eq!(picture.matches('S').count(), 1, "one lent block holds a page: {picture}");
    assert_eq!(picture.matches('s').count(), 1, "the other is still empty: {picture}");
    let last = held.pop().unwrap();
    la.lock().free_movable(last).unwrap();
    assert_eq!(la.lock().ram_picture(|_| false).to_string(), "MMss", "freed, the block merges back whole");
    let mut a = la.lock();
    held.into_iter().for_each(|p| a.free_movable(p).unwrap());
    check_invariants(&a);
}

#[test]
fn pagetypeinfo_counts_free_blocks_per_order_and_type() {
    let mut a = allocator(2, Some(1));
    let p = a.alloc_pages(0, ZoneType::Normal, MigrateType::Unmovable).unwrap();
    let info = a.pagetypeinfo();
    let (dma, normal, un, mov) = (0, 1, MigrateType::Unmovable.index(), MigrateType::Movable.index());
    assert_eq!(info.free_blocks[dma][9][mov], 1);
    for order in 0..9 {
        assert_eq!(info.free_blocks[normal][order][un], 1, "split leaves one block per order");
    }
    assert_eq!(info.pageblocks[normal], [1, 0, 0, 0, 0]);
    assert_eq!(info.free_pages[normal][un], PAGEBLOCK_NR_PAGES - 1);
    let text = info.to_string();
    assert!(
        text.contains("Node    0, zone   Normal, type    Unmovable       1     1     1     1     1     1     1     1     1     0"),
        "{text}"
    );
    assert!(text.contains("Node 0, zone      DMA                     0          1          0          0          0"), "{text}");
    assert!(text.contains("compaction: 0 pageblocks compacted"), "{text}");
    a.free_pages(p, 0).unwrap();
    assert_eq!(a.pagetypeinfo().free_blocks[normal][9][un], 1, "merged back into one block");
}

#[test]
fn fragmentation_counts_free_pageblocks_and_linux_unusable_free_index() {
    let mut a = allocator(4, Some(2));
    let f = a.fragmentation();
    assert_eq!((f.free_pages, f.free_pageblocks, f.largest_free_order, f.unusable_free_index), (2048, 4, Some(9), 0));
    // One unmovable page claims a whole pageblock and splits it: 511 free pages in blocks of
    // order 0..8, unusable for a pageblock-order allocation.
    let p = a.alloc_pages(0, ZoneType::Normal, MigrateType::Unmovable).unwrap();
    let f = a.fragmentation();
    assert_eq!((f.free_pages, f.free_pageblocks, f.largest_free_order), (2047, 3, Some(9)));
    assert_eq!(f.unusable_free_index, (511 * 1000 / 2047) as u32, "Linux: (free - suitable << order) * 1000 / free");
    // Whole pageblocks taken out leave only the split block: everything free is unusable.
    let whole = a.alloc_contig_pageblocks(2, ZoneType::Dma).unwrap();
    a.alloc_contig_pageblocks(1, ZoneType::Normal).unwrap();
    let f = a.fragmentation();
    assert_eq!((f.free_pages, f.free_pageblocks, f.largest_free_order, f.unusable_free_index), (511, 0, Some(8), 1000));
    a.free_pages(p, 0).unwrap();
    let f = a.fragmentation();
    assert_eq!((f.free_pages, f.free_pageblocks, f.largest_free_order, f.unusable_free_index), (512, 1, Some(9), 0));
    a.free_contig_pageblocks(whole, 2).unwrap();
    assert_eq!(a.fragmentation().free_pageblocks, 3);
    check_invariants(&a);
    // Nothing free: Linux counts all free memory as unusable.
    let mut full = allocator(1, None);
    full.alloc_pages(9, ZoneType::Normal, MigrateType::Unmovable).unwrap();
    let f = full.fragmentation();
    assert_eq!((f.free_pages, f.free_pageblocks, f.largest_free_order, f.unusable_free_index), (0, 0, None, 1000));
    assert!(f.to_string().contains("unusable free index 1.000 at order 9"), "{f}");
}

/// Every page of the one pageblock allocated (movable or unmovable), then the pages at odd
/// indices freed: holes of order 0 that do not merge and are less than half the block, so a
/// fallback allocation takes one without claiming the block (Linux: `try_to_claim_block` fails).
fn fill_and_punch(la: &LockedPageAllocator, movable: bool) -> Vec<MovablePage> {
    let mut a = la.lock();
    let (mut pages, mut addrs) = (Vec::new(), Vec::new());
    for _ in 0..PAGEBLOCK_NR_PAGES {
        if movable {
            pages.push(a.alloc_movable(0, ZoneType::Normal, owner(OwnerKind::Dirty)).unwrap());
        } else {
            addrs.push(a.alloc_pages(0, ZoneType::Normal, MigrateType::Unmovable).unwrap());
        }
    }
    let mut kept = Vec::new();
    for (i, p) in pages.into_iter().enumerate() {
        if i % 2 == 1 && i < 64 {
            a.free_movable(p).unwrap();
        } else {
            kept.push(p);
        }
    }
    for (i, addr) in addrs.into_iter().enumerate() {
        if i % 2 == 1 && i < 64 {
            a.free_pages(addr, 0).unwrap();
        }
    }
    kept
}

#[test]
fn fragmentation_counts_mixed_pageblocks_both_ways() {
    let (la, _mem) = with_pool(1, 0);
    assert_eq!(la.lock().fragmentation().movable_blocks_with_unmovable, 0);
    let _held = fill_and_punch(&la, true);
    assert_eq!(la.lock().fragmentation().movable_blocks_with_unmovable, 0, "movable pages alone do not mix a MOVABLE block");
    let mut a = la.lock();
    a.alloc_pages(0, ZoneType::Normal, MigrateType::Unmovable).unwrap();
    assert_eq!(a.pageblock_migratetype(BASE), Some(MigrateType::Movable), "the block was not claimed");
    let f = a.fragmentation();
    assert_eq!((f.movable_blocks_with_unmovable, f.unmovable_blocks_with_movable), (1, 0), "{f}");
    check_invariants(&a);
    drop(a);

    let (la, _mem) = with_pool(1, 0);
    fill_and_punch(&la, false);
    let mut a = la.lock();
    assert_eq!(a.pageblock_migratetype(BASE), Some(MigrateType::Unmovable), "the first unmovable page claimed the block");
    assert_eq!(a.fragmentation().unmovable_blocks_with_movable, 0, "unmovable pages alone do not mix an UNMOVABLE block");
    a.alloc_movable(0, ZoneType::Normal, owner(OwnerKind::Dirty)).unwrap();
    assert_eq!(a.pageblock_migratetype(BASE), Some(MigrateType::Unmovable), "the block was not claimed");
    let f = a.fragmentation();
    assert_eq!((f.movable_blocks_with_unmovable, f.unmovable_blocks_with_movable), (0, 1), "{f}");
    check_invariants(&a);
}
