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
    assert_eq!(a.ram_picture(pool).to_string(), "MU|IMMSbb");
    a.undo_isolate_pageblock(2, MigrateType::Movable);
    assert_eq!(a.ram_picture(|_| false).to_string(), "MU|MMMS..");
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
