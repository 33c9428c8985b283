//! Compaction: one MOVABLE pageblock emptied, contiguous allocations that migrate, and the
//! failures (pins, unmovable pages, no target memory) with their counters.

use super::*;
use crate::arch::host::IrqContextGuard;
use crate::demo::pressure::MemoryPressure;

const MIGRATE_ALL: ReclaimMode = ReclaimMode { drop_clean: false };

fn block_of(la: &LockedPageAllocator, page: MovablePage) -> PhysAddr {
    la.lock().movable_info(page).unwrap().addr & !(PAGEBLOCK_SIZE - 1)
}

/// Allocators of `blocks` free pageblocks holding checksummed movable pages in every one of
/// them: filled, then every other page freed `halvings` times.
fn spread_load(blocks: u64, halvings: usize) -> (LockedPageAllocator, SimMemory, MemoryPressure) {
    let (la, mem) = with_pool(blocks, 0);
    let mut load = MemoryPressure::fill(&la, &mem, ZoneType::Dma, blocks as usize * PAGEBLOCK_NR_PAGES, 7);
    for _ in 0..halvings {
        load.release_every(&la, 2);
    }
    (la, mem, load)
}

#[test]
fn a_partly_used_movable_block_is_made_free_with_contents_intact() {
    let (la, mem) = with_pool(2, 0);
    let load = MemoryPressure::fill(&la, &mem, ZoneType::Dma, 100, 1);
    let target = block_of(&la, load.pages().next().unwrap());
    assert!(load.pages().all(|p| block_of(&la, p) == target), "the first split block holds them all");
    let report = la.compact_pageblock(target, &mem).unwrap();
    assert_eq!((report.pageblocks, report.migrated), (1, 100));
    assert!(load.pages().all(|p| block_of(&la, p) != target), "migration targets land outside the block");
    assert_eq!(load.verify(&la, &mem), Ok(100), "checksums of the migrated pages");
    let a = la.lock();
    assert_eq!(a.pageblock_migratetype(target), Some(MigrateType::Movable), "type restored");
    assert!(a.pageblock_is_free(((target - BASE) / PAGEBLOCK_SIZE) as usize), "one free block");
    assert_eq!(a.nr_free(ZoneType::Dma, MigrateType::Isolate), 0);
    let stats = a.compact_stats();
    assert_eq!((stats.blocks_compacted, stats.pages_migrated), (1, 100));
    assert_eq!((stats.fail_pinned, stats.fail_unmovable, stats.fail_no_target), (0, 0, 0));
    assert!(a.pagetypeinfo().to_string().contains("compaction: 1 pageblocks compacted, 100 pages migrated"));
    check_invariants(&a);
}

#[test]
fn a_pinned_page_fails_the_block_which_is_left_as_it_was() {
    let (la, mem) = with_pool(2, 0);
    let load = MemoryPressure::fill(&la, &mem, ZoneType::Dma, 10, 2);
    let pinned = load.pages().nth(5).unwrap();
    let target = block_of(&la, pinned);
    let pin = la.pin(pinned).unwrap();
    let err = la.compact_pageblock(target, &mem).unwrap_err();
    let CompactError::Busy { reason: CompactFailure::Pinned, report } = err else { panic!("{err:?}") };
    assert_eq!(report.pinned, vec![pinned]);
    assert_eq!(report.migrated, 0, "a pin found before isolating: nothing moved for nothing");
    assert!(load.pages().all(|p| block_of(&la, p) == target));
    {
        let a = la.lock();
        assert_eq!(a.pageblock_migratetype(target), Some(MigrateType::Movable));
        assert_eq!(a.compact_stats().fail_pinned, 1);
        check_invariants(&a);
    }
    drop(pin);
    assert_eq!(la.compact_pageblock(target, &mem).map(|r| r.migrated), Ok(10));
    assert_eq!(load.verify(&la, &mem), Ok(10));
}

#[test]
fn an_unmovable_page_fails_the_block() {
    let (la, mem) = with_pool(2, 0);
    // Fill all but 3 pages with movable pages, so the unmovable page steals a page of a
    // MOVABLE block without claiming it; then empty the other block.
    let load = MemoryPressure::fill(&la, &mem, ZoneType::Dma, 2 * PAGEBLOCK_NR_PAGES - 3, 3);
    let unmovable = la.lock().alloc_pages(0, ZoneType::Dma, MigrateType::Unmovable).unwrap();
    let target = unmovable & !(PAGEBLOCK_SIZE - 1);
    assert_eq!(la.lock().pageblock_migratetype(target), Some(MigrateType::Movable));
    let other: Vec<_> = load.pages().filter(|p| block_of(&la, *p) != target).collect();
    {
        let mut a = la.lock();
        other.iter().for_each(|p| a.free_movable(*p).unwrap());
    }
    let err = la.compact_pageblock(target, &mem).unwrap_err();
    let CompactError::Busy { reason: CompactFailure::Unmovable, report } = err else { panic!("{err:?}") };
    assert_eq!(report.unmovable, vec![unmovable]);
    let a = la.lock();
    assert_eq!(a.compact_stats().fail_unmovable, 1);
    assert_eq!(a.compact_stats().pages_migrated, 0);
    assert_eq!(a.pageblock_migratetype(target), Some(MigrateType::Movable));
    check_invariants(&a);
}

#[test]
fn migration_targets_never_land_in_swiotlb_or_cma_blocks() {
    // Block 0 movable and partly used; blocks 1 (lent SWIOTLB) and 2 (CMA) wholly free.
    let (la, mem) = with_pool(1, 2);
    la.lock().lend_swiotlb_pageblocks(blocks(1, 1)).unwrap();
    la.lock().init_cma_reserved_pageblocks(blocks(2, 1)).unwrap();
    let load = MemoryPressure::fill(&la, &mem, ZoneType::Dma, 10, 4);
    assert!(load.pages().all(|p| block_of(&la, p) == block(0)));
    let err = la.compact_pageblock(block(0), &mem).unwrap_err();
    assert!(matches!(err, CompactError::Busy { reason: CompactFailure::NoTargetMemory, .. }), "{err:?}");
    let a = la.lock();
    assert_eq!(a.compact_stats().fail_no_target, 1);
    assert_eq!(a.nr_free_swiotlb_pages(ZoneType::Dma), PAGEBLOCK_NR_PAGES);
    assert_eq!(a.nr_free_cma_pages(ZoneType::Dma), PAGEBLOCK_NR_PAGES);
    assert_eq!(a.pageblock_migratetype(block(0)), Some(MigrateType::Movable));
    drop(a);
    assert_eq!(load.verify(&la, &mem), Ok(10));
    check_invariants(&la.lock());
}

#[test]
fn only_movable_pageblocks_are_compacted() {
    let (la, mem) = with_pool(1, 2);
    la.lock().lend_swiotlb_pageblocks(blocks(1, 1)).unwrap();
    la.lock().init_cma_reserved_pageblocks(blocks(2, 1)).unwrap();
    let not_movable = |mt| Err(CompactError::NotMovable { addr: block(1), mt });
    assert_eq!(la.compact_pageblock(block(1), &mem), not_movable(Some(MigrateType::Swiotlb)));
    let err = la.compact_pageblock(block(2), &mem);
    assert_eq!(err, Err(CompactError::NotMovable { addr: block(2), mt: Some(MigrateType::Cma) }));
    assert!(matches!(la.compact_pageblock(block(0) + PAGE_SIZE_U64, &mem), Err(CompactError::Range(_))));
    assert_eq!(la.compact_pageblock(block(0), &mem).map(|r| r.migrated), Ok(0), "a free block is trivially compact");
}

const PAGE_SIZE_U64: u64 = crate::mm::PAGE_SIZE;

#[test]
fn a_partly_managed_pageblock_is_never_a_candidate() {
    // Block 0 starts with 3 unmanaged pages (the kernel image, say), block 1 is whole.
    let end = block(3);
    let a = PageAllocator::new(BASE..end, &[BASE + 3 * PAGE_SIZE_U64..end], None).unwrap();
    let (la, mem) = (LockedPageAllocator::new(a), SimMemory::new(BASE, (end - BASE) as usize));
    let load = MemoryPressure::fill(&la, &mem, ZoneType::Dma, 3 * PAGEBLOCK_NR_PAGES, 8);
    let mut load = load;
    load.release_every(&la, 2);
    assert_eq!(la.compact_pageblock(block(0), &mem), Err(CompactError::Range(RangeError::PartlyManaged(block(0)))));
    let (addr, report) = la.alloc_contig_pageblocks_compact(1, ZoneType::Dma, &mem, MIGRATE_ALL, &mut |_| {}).unwrap();
    assert_eq!((addr, report.failed_candidates), (block(1), 0), "block 0 skipped, not tried");
    assert_eq!(load.verify(&la, &mem), Ok(load.len()));
    check_invariants(&la.lock());
}

#[test]
fn contig_with_compaction_succeeds_where_plain_contig_fails() {
    let (la, mem, load) = spread_load(4, 1);
    assert!((0..4).all(|b| load.pages().any(|p| block_of(&la, p) == block(b))), "every block partly used");
    assert_eq!(la.lock().alloc_contig_pageblocks(2, ZoneType::Dma), Err(AllocError::NoMemory));
    let (addr, report) =
        la.alloc_contig_pageblocks_compact(2, ZoneType::Dma, &mem, MIGRATE_ALL, &mut |_| panic!("nothing dropped")).unwrap();
    assert_eq!(addr, block(0), "the first candidate range of the zone");
    assert_eq!((report.pageblocks, report.migrated, report.failed_candidates), (2, PAGEBLOCK_NR_PAGES, 0));
    assert!(load.pages().all(|p| !(block(0)..block(2)).contains(&block_of(&la, p))));
    assert_eq!(load.verify(&la, &mem), Ok(load.len()));
    {
        let a = la.lock();
        assert_eq!(a.pageblock_migratetype(block(0)), None, "taken out of the allocator");
        assert_eq!(a.managed_pages(ZoneType::Dma), 2 * PAGEBLOCK_NR_PAGES);
        assert_eq!(a.compact_stats().blocks_compacted, 2);
        assert_eq!(a.compact_stats().pages_migrated, PAGEBLOCK_NR_PAGES);
        check_invariants(&a);
    }
    la.lock().free_contig_pageblocks(addr, 2).unwrap();
    check_invariants(&la.lock());
}

#[test]
fn contig_takes_wholly_free_blocks_first_without_migrating() {
    let (la, mem) = with_pool(3, 0);
    let load = MemoryPressure::fill(&la, &mem, ZoneType::Dma, 10, 5);
    let used = block_of(&la, load.pages().next().unwrap());
    let (addr, report) = la.alloc_contig_pageblocks_compact(1, ZoneType::Dma, &mem, MIGRATE_ALL, &mut |_| {}).unwrap();
    assert_ne!(addr, used);
    assert_eq!(report, CompactReport::default());
    assert_eq!(la.lock().compact_stats(), CompactStats::default());
}

#[test]
fn contig_skips_ranges_with_pinned_or_unmovable_pages() {
    let (la, mem, load) = spread_load(6, 2);
    let in_block = |b: u64| load.pages().find(|p| block_of(&la, *p) == block(b)).unwrap();
    let _pin = la.pin(in_block(1)).unwrap();
    let (addr, report) = la.alloc_contig_pageblocks_compact(2, ZoneType::Dma, &mem, MIGRATE_ALL, &mut |_| {}).unwrap();
    assert_eq!(addr, block(2), "blocks 0-1 hold a pinned page: never isolated");
    assert_eq!(report.failed_candidates, 0);
    assert_eq!(load.verify(&la, &mem), Ok(load.len()));
    check_invariants(&la.lock());
}

#[test]
fn a_range_that_fails_mid_migration_is_undone_and_the_next_one_taken() {
    let (la, mem, load) = spread_load(6, 2);
    // The last page of blocks 0-1 gets pinned while the first page is being copied.
    let last = load.pages().filter(|p| block_of(&la, *p) < block(2)).max_by_key(|p| la.lock().movable_info(*p).unwrap().addr).unwrap();
    let hooked = CopyHook::new(&mem, || core::mem::forget(la.pin(last).unwrap()));
    let (addr, report) = la.alloc_contig_pageblocks_compact(2, ZoneType::Dma, &hooked, MIGRATE_ALL, &mut |_| {}).unwrap();
    assert_eq!(addr, block(2));
    assert_eq!(report.failed_candidates, 1);
    let a = la.lock();
    assert_eq!(a.pageblock_migratetype(block(0)), Some(MigrateType::Movable), "the failed range got its type back");
    assert_eq!(a.pageblock_migratetype(block(1)), Some(MigrateType::Movable));
    assert_eq!(a.nr_free(ZoneType::Dma, MigrateType::Isolate), 0);
    assert_eq!((a.compact_stats().fail_pinned, a.compact_stats().blocks_compacted), (1, 2));
    check_invariants(&a);
    drop(a);
    assert_eq!(load.verify(&la, &mem), Ok(load.len()));
}

#[test]
fn contig_gives_up_with_a_typed_error() {
    let (la, mem) = with_pool(2, 0);
    let load = MemoryPressure::fill(&la, &mem, ZoneType::Dma, 2 * PAGEBLOCK_NR_PAGES, 6);
    let err = la.alloc_contig_pageblocks_compact(1, ZoneType::Dma, &mem, MIGRATE_ALL, &mut |_| {}).unwrap_err();
    assert_eq!(err, CompactError::NoRange { tried: 2, last: Some(CompactFailure::NoTargetMemory) });
    assert_eq!(la.lock().compact_stats().fail_no_target, 2);
    assert_eq!(la.alloc_contig_pageblocks_compact(0, ZoneType::Dma, &mem, MIGRATE_ALL, &mut |_| {}), Err(CompactError::ZeroCount));
    assert_eq!(load.verify(&la, &mem), Ok(load.len()));
    check_invariants(&la.lock());
}

#[test]
fn contig_drops_clean_pages_when_allowed() {
    let (la, mem) = with_pool(2, 0);
    let clean: Vec<_> = (0..PAGEBLOCK_NR_PAGES + 4)
        .map(|i| la.lock().alloc_movable(0, ZoneType::Dma, PageOwner { kind: OwnerKind::Clean, cookie: i as u64 }).unwrap())
        .collect();
    let in_block0 = clean.iter().filter(|p| block_of(&la, **p) == block(0)).count();
    let mut told = Vec::new();
    let (addr, report) =
        la.alloc_contig_pageblocks_compact(1, ZoneType::Dma, &mem, ReclaimMode { drop_clean: true }, &mut |d| told.push(d)).unwrap();
    assert_eq!(addr, block(0));
    assert_eq!((report.dropped, report.migrated), (in_block0, 0));
    assert_eq!(told.len(), in_block0);
    assert_eq!(clean.iter().filter(|p| la.lock().is_movable_live(**p)).count(), clean.len() - in_block0);
    check_invariants(&la.lock());
}

#[test]
#[should_panic(expected = "task context only")]
fn compaction_in_interrupt_context_panics() {
    let (la, mem) = with_pool(1, 0);
    let _irq = IrqContextGuard::enter();
    let _ = la.compact_pageblock(block(0), &mem);
}
