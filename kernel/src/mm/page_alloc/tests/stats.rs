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
    assert!(text.contains("Node    0, zone   Normal, type    Unmovable       1     1     1     1     1     1     1     1     1     0"), "{text}");
    assert!(text.contains("Node 0, zone      DMA                     0          1          0          0          0"), "{text}");
    assert!(text.contains("compaction: 0 pageblocks compacted"), "{text}");
    a.free_pages(p, 0).unwrap();
    assert_eq!(a.pagetypeinfo().free_blocks[normal][9][un], 1, "merged back into one block");
}
