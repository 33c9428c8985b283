//! The `cma` policy: a small boot pool, chunks `cma_alloc`ed from the CMA area under pressure
//! (migrating the movable pages there), given back when idle; IRQ-context misses deferred.

use super::*;
use crate::arch::host::IrqContextGuard;
use crate::demo::pressure::MemoryPressure;
use crate::mm::cma::CmaArea;
use crate::mm::page_alloc::MigrateType;

/// A `cma` manager over a 4-pageblock pool (2 kept) with a CMA area of `cma_blocks`.
fn cma_fixture(free_blocks: u64, cma_blocks: u64) -> (Fixture, &'static CmaArea) {
    cma_fixture_with(free_blocks, cma_blocks, tunables(SwiotlbPolicy::Cma))
}

/// [`cma_fixture`] with other tunables (the policy stays `cma`).
pub(super) fn cma_fixture_with(free_blocks: u64, cma_blocks: u64, t: Tunables) -> (Fixture, &'static CmaArea) {
    let t = Tunables { policy: SwiotlbPolicy::Cma, ..t };
    let (f, range) = Fixture::try_new_with_cma(free_blocks, cma_blocks, 4, t, false).expect("manager");
    let area = CmaArea::activate("test-cma", f.pages, range).expect("CMA area");
    let area: &'static CmaArea = alloc::boxed::Box::leak(alloc::boxed::Box::new(area));
    f.mgr.enable_cma(area);
    (f, area)
}

#[test]
fn cma_boot_pool_is_small_and_the_rest_is_ordinary_memory() {
    let (f, area) = cma_fixture(4, 4);
    use BlockState::*;
    assert_eq!(f.states(), [AsSlots, AsSlots, Unused, Unused]);
    assert_eq!(f.mgr.usable_slots(), 2 * SLOTS_PER_PAGEBLOCK);
    assert_eq!(f.pages.lock().pageblock_migratetype(f.pool_block(2)), Some(MigrateType::Movable), "given to the page allocator");
    assert_eq!(f.nr_free_swiotlb_pages(), 0, "nothing is MIGRATE_SWIOTLB under cma");
    assert_eq!(area.allocated_pageblocks(), 0);
}

#[test]
fn cma_grows_by_chunks_migrating_movable_pages_and_gives_them_back_when_idle() {
    let (mut f, area) = cma_fixture(6, 4);
    f.clock = FakeClock::new(1_000);
    // Movable pages everywhere, the CMA area included, then room for migration targets.
    let mut work = MemoryPressure::fill(f.pages, f.mem, ZoneType::Dma, usize::MAX, 5);
    work.release_every(f.pages, 3);
    let cma_start = f.pool_block(0) - 4 * PAGEBLOCK_SIZE;
    assert_eq!(f.pages.lock().pageblock_migratetype(cma_start), Some(MigrateType::Cma));

    let tlbs: Vec<_> = (0..50).map(|_| f.map_slots(32).unwrap()).collect();
    assert!(f.mgr.below_low_wm() && f.mgr.should_kick());
    let report = f.worker();
    assert_eq!(report.pageblocks_added, 2, "one chunk of swiotlb_cma_chunk=2: {report:?}");
    assert!(report.pages_migrated > 0, "pages migrated out of the chunk: {report:?}");
    assert_eq!(work.verify(f.pages, f.mem), Ok(work.len()), "every migrated page intact");
    let chunk = f.mgr.extra_pools().next().expect("a chunk pool");
    assert!((cma_start..cma_start + 4 * PAGEBLOCK_SIZE).contains(&chunk.start()), "the chunk comes from the CMA area");
    assert_eq!(area.allocated_pageblocks(), 2);
    assert_eq!(f.mgr.stats().cma_chunks_allocated, 1);

    // A miss in interrupt context cannot cma_alloc: it fails and waits for the worker.
    {
        let _irq = IrqContextGuard::enter();
        let mut held = Vec::new();
        while let Ok(t) = f.map_slots(32) {
            held.push(t);
        }
        assert!(f.mgr.miss_pending());
        held.into_iter().for_each(|t| f.unmap_slots(t, 32));
    }

    // Idle: the chunk goes back to the area after the shrink delay, its slots lent (unusable).
    tlbs.into_iter().for_each(|t| f.unmap_slots(t, 32));
    for ms in (0..2000).step_by(100) {
        f.worker_at(10_000 + ms);
    }
    assert_eq!(f.mgr.cma_chunks_in_use(), 0);
    assert_eq!(area.allocated_pageblocks(), 0, "cma_release gave it back");
    let s = f.mgr.stats();
    assert_eq!(s.pageblocks_lent_again, 2 * s.cma_chunks_released, "released chunks count as given back");
    assert_eq!(f.mgr.usable_slots(), 2 * SLOTS_PER_PAGEBLOCK);
    assert!(!f.mgr.is_swiotlb_buffer(chunk.start()));
    assert_eq!(f.pages.lock().pageblock_migratetype(chunk.start()), Some(MigrateType::Cma), "movable pages may use it again");

    // Growing again revives a released chunk's pool (the list does not grow).
    let pools = f.mgr.extra_pools().count();
    let _again: Vec<_> = (0..50).map(|_| f.map_slots(32).unwrap()).collect();
    assert_eq!(f.worker_at(20_000).pageblocks_added, 2);
    assert_eq!(f.mgr.extra_pools().count(), pools);
    assert_eq!(f.mgr.cma_chunks_in_use(), 1);
}

#[test]
fn cma_never_takes_a_lent_swiotlb_block() {
    // A lend manager beside a CMA area: cma_alloc serves from the area only, and reclaim of the
    // lent blocks never touches the area.
    let (f, range) = Fixture::try_new_with_cma(2, 2, 4, tunables(SwiotlbPolicy::Lend), false).expect("manager");
    let area = CmaArea::activate("test-cma", f.pages, range.clone()).expect("CMA area");
    let (start, _) =
        area.cma_alloc(f.pages, f.mem, 2, crate::mm::page_alloc::ReclaimMode { drop_clean: true }, &mut ignore_drop).expect("cma_alloc");
    assert!(range.contains(&start));
    assert!(
        area.cma_alloc(f.pages, f.mem, 2, crate::mm::page_alloc::ReclaimMode { drop_clean: true }, &mut ignore_drop).is_err(),
        "the area is used up; lent SWIOTLB blocks are not CMA"
    );
    assert_eq!(f.nr_free_swiotlb_pages(), 2 * BLOCK_PAGES, "the lent blocks are untouched");
}

#[test]
fn cma_without_an_area_cannot_grow() {
    let (f, _) = Fixture::try_new_with_cma(2, 0, 4, tunables(SwiotlbPolicy::Cma), false).expect("manager");
    let _tlbs: Vec<_> = (0..50).map(|_| f.map_slots(32).unwrap()).collect();
    assert!(!f.mgr.should_kick());
    assert_eq!(f.worker().pageblocks_added, 0);
}
