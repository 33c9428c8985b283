//! MIGRATE_CMA and the CMA area: fallbacks, long-term pins, `cma_alloc` / `cma_release`, and
//! the rule that CMA and lent SWIOTLB blocks never serve each other.

use super::*;
use crate::arch::host::IrqContextGuard;
use crate::demo::pressure::MemoryPressure;
use crate::mm::cma::{CmaArea, CmaError};
use crate::mm::PAGE_SIZE;

const MIGRATE_ALL: ReclaimMode = ReclaimMode { drop_clean: false };

fn block_of(la: &LockedPageAllocator, page: MovablePage) -> PhysAddr {
    la.lock().movable_info(page).unwrap().addr & !(PAGEBLOCK_SIZE - 1)
}

/// `free` MOVABLE pageblocks, then `swiotlb` lent SWIOTLB pageblocks, then a CMA area of `cma`
/// pageblocks.
fn with_cma(free: u64, swiotlb: u64, cma: u64) -> (LockedPageAllocator, SimMemory, CmaArea) {
    let (la, mem) = with_pool(free, swiotlb + cma);
    if swiotlb > 0 {
        la.lock().lend_swiotlb_pageblocks(blocks(free, swiotlb)).unwrap();
    }
    let area = CmaArea::activate("cma@test", &la, blocks(free + swiotlb, cma)).unwrap();
    (la, mem, area)
}

/// Fills MOVABLE first, so that the next `n` pages (kept) land in borrowed blocks.
fn fill_then_keep(la: &LockedPageAllocator, mem: &SimMemory, free: u64, n: usize) -> MemoryPressure {
    let mut load = MemoryPressure::fill(la, mem, ZoneType::Dma, free as usize * PAGEBLOCK_NR_PAGES + n, 11);
    // Free one in two: room outside the borrowed blocks for their pages to go to.
    load.release_every(la, 2);
    load
}

#[test]
fn activation_gives_the_range_to_the_allocator_as_cma() {
    let (la, _mem, area) = with_cma(1, 0, 2);
    assert_eq!(area.range(), blocks(1, 2));
    assert_eq!((area.pageblocks(), area.allocated_pageblocks(), area.name()), (2, 0, "cma@test"));
    let a = la.lock();
    assert_eq!(a.pageblock_migratetype(block(1)), Some(MigrateType::Cma));
    assert_eq!(a.nr_free_cma_pages(ZoneType::Dma), 2 * PAGEBLOCK_NR_PAGES);
    assert_eq!(a.managed_pages(ZoneType::Dma), 3 * PAGEBLOCK_NR_PAGES);
    assert_eq!(a.ram_picture(|_| false).to_string(), "MCC");
    let text = a.pagetypeinfo().to_string();
    assert!(text.contains("type          CMA       0     0     0     0     0     0     0     0     0     2"), "{text}");
    check_invariants(&a);
    drop(a);
    // Already managed now: a second activation over it is refused.
    assert!(matches!(CmaArea::activate("again", &la, blocks(1, 1)), Err(CmaError::Activate(RangeError::AlreadyManaged(_)))));
    assert!(matches!(CmaArea::activate("bad", &la, block(0)..block(0) + 4096), Err(CmaError::Activate(RangeError::NotPageblocks { .. }))));
}

#[test]
fn movable_allocations_borrow_cma_pages_and_unmovable_never_do() {
    let (la, _mem, _area) = with_cma(1, 0, 1);
    let mut a = la.lock();
    let movable: Vec<_> =
        (0..PAGEBLOCK_NR_PAGES + 1).map(|_| a.alloc_movable(0, ZoneType::Dma, owner(OwnerKind::Dirty)).unwrap()).collect();
    let last = a.movable_info(movable[PAGEBLOCK_NR_PAGES]).unwrap().addr;
    assert_eq!(a.pageblock_migratetype(last), Some(MigrateType::Cma), "MOVABLE full: borrowed from CMA");
    assert_eq!(a.pageblock_migratetype(a.movable_info(movable[0]).unwrap().addr), Some(MigrateType::Movable), "MOVABLE first");
    movable.into_iter().for_each(|p| a.free_movable(p).unwrap());
    let unmovable: Vec<_> = core::iter::from_fn(|| a.alloc_pages(0, ZoneType::Dma, MigrateType::Unmovable).ok()).collect();
    assert_eq!(unmovable.len(), PAGEBLOCK_NR_PAGES, "only the non-CMA block");
    assert!(unmovable.iter().all(|p| *p < block(1)));
    assert_eq!(a.pageblock_migratetype(block(1)), Some(MigrateType::Cma), "never converted by stealing");
    assert_eq!(a.nr_free_cma_pages(ZoneType::Dma), PAGEBLOCK_NR_PAGES);
    check_invariants(&a);
}

#[test]
fn movable_borrows_cma_before_stealing_unmovable_blocks_and_never_claims_it() {
    let (la, _mem, _area) = with_cma(1, 0, 1);
    let mut a = la.lock();
    // Make block 0 UNMOVABLE (claimed by an unmovable page) and free again.
    let p = a.alloc_pages(0, ZoneType::Dma, MigrateType::Unmovable).unwrap();
    a.free_pages(p, 0).unwrap();
    assert_eq!(a.pageblock_migratetype(block(0)), Some(MigrateType::Unmovable));
    let page = a.alloc_movable(0, ZoneType::Dma, owner(OwnerKind::Dirty)).unwrap();
    assert_eq!(a.pageblock_migratetype(a.movable_info(page).unwrap().addr), Some(MigrateType::Cma));
    assert_eq!(a.pageblock_migratetype(block(0)), Some(MigrateType::Unmovable), "not stolen while CMA had room");
    assert_eq!(a.pageblock_migratetype(block(1)), Some(MigrateType::Cma), "borrowed, not claimed");
    check_invariants(&a);
}

#[test]
fn migration_targets_and_long_term_pins_never_land_in_cma() {
    let (la, mem, _area) = with_cma(1, 0, 1);
    let load = MemoryPressure::fill(&la, &mem, ZoneType::Dma, PAGEBLOCK_NR_PAGES + 1, 12);
    let in_cma = load.pages().find(|p| block_of(&la, *p) == block(1)).unwrap();
    // MOVABLE is full: the page cannot leave CMA, and a long-term pin is refused.
    assert_eq!(la.pin_longterm(in_cma, &mem).err(), Some(PinError::CannotMigrate(MigrateError::NoMemory(in_cma))));
    let in_movable = load.pages().find(|p| block_of(&la, *p) == block(0)).unwrap();
    la.lock().free_movable(in_movable).unwrap();
    // Room in MOVABLE: the long-term pin migrates the page out of the CMA block first.
    let pin = la.pin_longterm(in_cma, &mem).unwrap();
    assert_eq!(la.lock().pageblock_migratetype(pin.addr()), Some(MigrateType::Movable));
    drop(pin);
    // A MOVABLE page never migrates into the CMA block, which has free pages.
    let other = load.pages().find(|p| *p != in_movable && *p != in_cma).unwrap();
    assert!(la.lock().nr_free_cma_pages(ZoneType::Dma) > 0);
    assert_eq!(la.migrate_page(other, &mem), Err(MigrateError::NoMemory(other)));
    check_invariants(&la.lock());
}

#[test]
fn cma_alloc_migrates_the_pages_out_and_takes_the_blocks() {
    let (la, mem, area) = with_cma(2, 0, 2);
    let load = fill_then_keep(&la, &mem, 2, 600);
    let in_area = load.pages().filter(|p| block_of(&la, *p) >= block(2)).count();
    assert!(in_area > PAGEBLOCK_NR_PAGES / 2, "pages in both CMA blocks: {in_area}");
    let (addr, report) = area.cma_alloc(&la, &mem, 2, MIGRATE_ALL, &mut |_| panic!("nothing to drop")).unwrap();
    assert_eq!(addr, block(2));
    assert_eq!(report.migrated, in_area);
    assert_eq!(area.allocated_pageblocks(), 2);
    assert!(load.pages().all(|p| block_of(&la, p) < block(2)), "migrated into MOVABLE, outside the area");
    assert_eq!(load.verify(&la, &mem), Ok(load.len()), "contents intact");
    let a = la.lock();
    assert_eq!(a.pageblock_migratetype(block(2)), None, "taken out of the allocator");
    assert_eq!(a.nr_free_cma_pages(ZoneType::Dma), 0);
    check_invariants(&a);
    drop(a);
    assert!(area.to_string().contains("cma: area cma@test 0x40400000-0x40800000 (4 MiB, 2 pageblocks), 2 allocated; 1 allocs"), "{area}");
}

#[test]
fn a_pinned_page_makes_cma_alloc_try_the_next_run() {
    let (la, mem, area) = with_cma(4, 0, 3);
    let load = fill_then_keep(&la, &mem, 4, 3 * PAGEBLOCK_NR_PAGES);
    let pinned = load.pages().find(|p| block_of(&la, *p) == block(4)).unwrap();
    let pin = la.pin(pinned).unwrap();
    let (addr, report) = area.cma_alloc(&la, &mem, 1, MIGRATE_ALL, &mut |_| {}).unwrap();
    assert_eq!(addr, block(5), "the run with the pin was undone, the next one taken");
    assert!(report.migrated > 0);
    {
        let a = la.lock();
        assert_eq!(a.pageblock_migratetype(block(4)), Some(MigrateType::Cma), "busy run given back as CMA");
        assert_eq!(a.nr_free(ZoneType::Dma, MigrateType::Isolate), 0);
        assert_eq!(a.movable_info(pinned).unwrap().addr, pin.addr());
        check_invariants(&a);
    }
    area.cma_release(&la, addr, 1).unwrap();
    // The whole area: its only run holds the pin.
    let err = area.cma_alloc(&la, &mem, 3, MIGRATE_ALL, &mut |_| {}).unwrap_err();
    let CmaError::Busy { tried: 1, last } = err else { panic!("{err:?}") };
    assert_eq!(last.pinned, vec![pinned]);
    assert_eq!(area.allocated_pageblocks(), 0, "bits cleared after a busy run");
    drop(pin);
    assert_eq!(area.cma_alloc(&la, &mem, 3, MIGRATE_ALL, &mut |_| {}).map(|(a, _)| a), Ok(block(4)));
    assert!(load.pages().all(|p| block_of(&la, p) < block(4)));
    assert_eq!(load.verify(&la, &mem), Ok(load.len()));
    check_invariants(&la.lock());
}

#[test]
fn cma_alloc_drops_clean_pages_when_allowed() {
    let (la, mem, area) = with_cma(1, 0, 1);
    let mut a = la.lock();
    let hog: Vec<_> = (0..PAGEBLOCK_NR_PAGES).map(|_| a.alloc_movable(0, ZoneType::Dma, owner(OwnerKind::Dirty)).unwrap()).collect();
    let clean: Vec<_> =
        (0..5).map(|i| a.alloc_movable(0, ZoneType::Dma, PageOwner { kind: OwnerKind::Clean, cookie: i }).unwrap()).collect();
    drop(a);
    let mut told = Vec::new();
    let (_, report) = area.cma_alloc(&la, &mem, 1, ReclaimMode { drop_clean: true }, &mut |d| told.push(d.cookie)).unwrap();
    assert_eq!((report.dropped, report.migrated), (5, 0), "dropped although MOVABLE is full");
    told.sort();
    assert_eq!(told, [0, 1, 2, 3, 4]);
    assert!(clean.iter().all(|p| !la.lock().is_movable_live(*p)));
    assert_eq!(hog.len(), PAGEBLOCK_NR_PAGES);
    check_invariants(&la.lock());
}

#[test]
fn cma_alloc_never_takes_a_swiotlb_block_and_reclaim_never_takes_a_cma_block() {
    // Block 0 MOVABLE, blocks 1-2 lent SWIOTLB (wholly free), blocks 3-4 the CMA area.
    let (la, mem, area) = with_cma(1, 2, 2);
    assert_eq!(area.cma_alloc(&la, &mem, 2, MIGRATE_ALL, &mut |_| {}).map(|(a, _)| a), Ok(block(3)));
    assert_eq!(
        area.cma_alloc(&la, &mem, 1, MIGRATE_ALL, &mut |_| {}),
        Err(CmaError::NoSpace { count: 1 }),
        "free SWIOTLB blocks do not serve it"
    );
    area.cma_release(&la, block(3), 2).unwrap();
    {
        let a = la.lock();
        assert_eq!(
            (a.pageblock_migratetype(block(1)), a.pageblock_migratetype(block(2))),
            (Some(MigrateType::Swiotlb), Some(MigrateType::Swiotlb))
        );
        assert_eq!(a.nr_free_swiotlb_pages(ZoneType::Dma), 2 * PAGEBLOCK_NR_PAGES);
        assert_eq!(a.ram_picture(|_| false).to_string(), "MssCC", "lent and wholly free: s");
    }
    // The page allocator refuses either way round, whatever the caller asks.
    assert_eq!(
        la.alloc_contig_range(blocks(2, 2), MigrateType::Cma, &mem, MIGRATE_ALL, &mut |_| {}),
        Err(ReclaimError::Range(RangeError::NotCma(block(2))))
    );
    assert_eq!(
        la.reclaim_swiotlb_pageblocks(blocks(2, 2), &mem, MIGRATE_ALL, &mut |_| {}),
        Err(ReclaimError::Range(RangeError::NotSwiotlb(block(3))))
    );
    // An area activated over a lent SWIOTLB block is refused.
    assert!(matches!(CmaArea::activate("over-swiotlb", &la, blocks(1, 1)), Err(CmaError::Activate(RangeError::AlreadyManaged(_)))));
    let a = la.lock();
    assert_eq!(a.pageblock_migratetype(block(2)), Some(MigrateType::Swiotlb));
    assert_eq!(a.pageblock_migratetype(block(3)), Some(MigrateType::Cma));
    check_invariants(&a);
}

#[test]
fn release_and_realloc_and_every_misuse_is_a_typed_error() {
    let (la, mem, area) = with_cma(1, 0, 4);
    let (a1, _) = area.cma_alloc(&la, &mem, 2, MIGRATE_ALL, &mut |_| {}).unwrap();
    assert_eq!(a1, block(1));
    assert_eq!(area.cma_alloc(&la, &mem, 0, MIGRATE_ALL, &mut |_| {}), Err(CmaError::ZeroCount));
    assert_eq!(area.cma_alloc(&la, &mem, 5, MIGRATE_ALL, &mut |_| {}), Err(CmaError::TooLarge { count: 5, area: 4 }));
    assert_eq!(area.cma_alloc(&la, &mem, 3, MIGRATE_ALL, &mut |_| {}), Err(CmaError::NoSpace { count: 3 }));
    assert_eq!(area.cma_release(&la, block(3), 1), Err(CmaError::NotAllocated(block(3))));
    assert_eq!(area.cma_release(&la, block(2), 2), Err(CmaError::NotAllocated(block(3))), "partly allocated");
    assert_eq!(area.cma_release(&la, block(0), 1), Err(CmaError::OutsideArea { addr: block(0), count: 1 }));
    assert_eq!(area.cma_release(&la, block(4), 2), Err(CmaError::OutsideArea { addr: block(4), count: 2 }));
    assert_eq!(area.cma_release(&la, block(1) + PAGE_SIZE, 1), Err(CmaError::OutsideArea { addr: block(1) + PAGE_SIZE, count: 1 }));
    assert_eq!(area.cma_release(&la, block(1), 0), Err(CmaError::OutsideArea { addr: block(1), count: 0 }));
    assert_eq!(area.allocated_pageblocks(), 2, "misuse changed nothing");
    area.cma_release(&la, block(1), 2).unwrap();
    assert_eq!(area.cma_release(&la, block(1), 2), Err(CmaError::NotAllocated(block(1))), "double release");
    assert_eq!(la.lock().pageblock_migratetype(block(1)), Some(MigrateType::Cma), "back as CMA");
    assert_eq!(area.cma_alloc(&la, &mem, 4, MIGRATE_ALL, &mut |_| {}).map(|(a, _)| a), Ok(block(1)), "whole area again");
    check_invariants(&la.lock());
}

#[test]
#[should_panic(expected = "task context only")]
fn cma_alloc_in_interrupt_context_panics() {
    let (la, mem, area) = with_cma(1, 0, 1);
    let _irq = IrqContextGuard::enter();
    let _ = area.cma_alloc(&la, &mem, 1, MIGRATE_ALL, &mut |_| {});
}
