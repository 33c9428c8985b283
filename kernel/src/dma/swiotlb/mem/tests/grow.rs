//! Init under `lend`, grow by reclaim, IRQ-context misses, `is_swiotlb_buffer` on lent pages.

use super::*;
use crate::arch::host::IrqContextGuard;
use crate::demo::pressure::MemoryPressure;
use crate::mm::page_alloc::{OwnerKind, PageOwner};

#[test]
fn lend_init_lends_all_but_keep() {
    let f = Fixture::new(2, 8, tunables(SwiotlbPolicy::Lend), false);
    use BlockState::*;
    // One kept block in areas 0 and 2 of the 4 (two pageblocks each); see areas.rs.
    assert_eq!(f.states(), [AsSlots, Lent, Lent, Lent, AsSlots, Lent, Lent, Lent]);
    assert_eq!(f.mgr.default_pool().lent_slots(), 6 * SLOTS_PER_PAGEBLOCK);
    assert_eq!(f.mgr.usable_slots(), 2 * SLOTS_PER_PAGEBLOCK);
    assert_eq!(f.nr_free_swiotlb_pages(), 6 * BLOCK_PAGES);
    assert_eq!(f.pages.lock().pageblock_migratetype(f.pool_block(1)), Some(crate::mm::page_alloc::MigrateType::Swiotlb));
    assert_eq!(f.pages.lock().pageblock_migratetype(f.pool_block(4)), None);
    f.mgr.default_pool().assert_consistent();
}

#[test]
fn keep_is_raised_to_hold_the_irq_reserve() {
    let t = Tunables { keep_pageblocks: 0, irq_reserve_slots: 1500, ..tunables(SwiotlbPolicy::Lend) };
    let f = Fixture::new(2, 8, t, false);
    assert_eq!(f.count(BlockState::AsSlots), 2);
    assert_eq!(f.nr_free_swiotlb_pages(), 6 * BLOCK_PAGES);
}

/// Fills the pool's kept slots until free slots are under the low watermark (25% of 2048).
fn fill_kept_slots(f: &Fixture) -> Vec<PhysAddr> {
    let maps: Vec<PhysAddr> = (0..50).map(|_| f.map_slots(32).expect("map")).collect();
    assert!(f.mgr.below_low_wm() && !f.mgr.miss_pending());
    maps
}

#[test]
fn parked_runs_are_not_free_to_the_low_watermark() {
    let f = Fixture::new(2, 8, tunables(SwiotlbPolicy::Lend), false);
    f.mgr.set_slot_cache(8);
    // 2048 usable slots, the low watermark at 512 free: 514 left free...
    let mut maps: Vec<PhysAddr> = (0..47).map(|_| f.map_slots(32).expect("map")).collect();
    maps.push(f.map_slots(30).expect("map"));
    assert!(!f.mgr.below_low_wm());
    // ... then two page runs mapped and unmapped: parked, 510 slots left in the free maps.
    let runs: Vec<PhysAddr> = (0..2).map(|_| f.map_slots(2).expect("map")).collect();
    for &run in &runs {
        f.unmap_slots(run, 2);
    }
    assert_eq!(f.mgr.default_pool().cached_runs(), 2);
    // Reported free, but not free to the watermark, as Linux's zone watermarks leave out the
    // pages on the per-CPU lists: the worker is asked to grow.
    assert_eq!(f.mgr.free_slots(), 514);
    assert!(f.mgr.below_low_wm());
    f.mgr.default_pool().assert_consistent();
}

#[test]
fn grow_under_full_movable_workload_keeps_data() {
    let mut f = Fixture::new(8, 8, tunables(SwiotlbPolicy::Lend), false);
    f.clock = FakeClock::new(1_000);
    let mut work = MemoryPressure::fill(f.pages, f.mem, ZoneType::Dma, usize::MAX, 7);
    assert_eq!(f.nr_free_swiotlb_pages(), 0, "the workload fills the lent blocks too");
    // Room for the migration targets outside the lent blocks.
    work.release_every(f.pages, 3);

    let maps = fill_kept_slots(&f);
    assert!(f.mgr.should_kick());
    let report = f.worker();
    assert_eq!(report.pageblocks_reclaimed, 2, "{report:?}");
    assert_eq!(report.pageblocks_busy, 0);
    assert!(report.pages_migrated > 0 && report.reclaim_time > Duration::ZERO, "{report:?}");
    use BlockState::*;
    // The empty areas 1 and 3 grew first.
    assert_eq!(f.states(), [AsSlots, Lent, AsSlots, Lent, AsSlots, Lent, AsSlots, Lent]);
    assert_eq!(work.verify(f.pages, f.mem), Ok(work.len()), "migration preserved every page");

    // Not scrubbed on the way (`swiotlb_reclaim_scrub=off`): the workload's pages are still
    // there, and each mapping copies in over them (`leak.rs` checks what a device can see).
    let grown = [f.pool_block(2)..f.pool_block(3), f.pool_block(6)..f.pool_block(7)];
    assert!(grown.iter().any(|block| f.read(block.start, PAGEBLOCK_SIZE as usize).iter().any(|b| *b != 0)));
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    f.mem.write(ORIG, &data);
    let mut in_grown = 0;
    for _ in 0..40 {
        let tlb = f.map_slots(2).expect("room after grow");
        if grown.iter().any(|block| block.contains(&tlb)) {
            in_grown += 1;
            assert_eq!(f.read(tlb, 4096), data);
            assert!(f.mgr.is_swiotlb_buffer(tlb));
        }
    }
    assert!(in_grown > 0, "new mappings use the grown slots");
    let s = f.mgr.stats();
    assert_eq!((s.pageblocks_reclaimed, s.pages_migrated), (2, report.pages_migrated as u64));
    assert!(s.reclaim_time > Duration::ZERO);
    drop(maps);
    f.mgr.default_pool().assert_consistent();
}

#[test]
fn grow_drops_clean_pages_and_tells_the_owner() {
    let f = Fixture::new(2, 4, tunables(SwiotlbPolicy::Lend), false);
    let owner = PageOwner { kind: OwnerKind::Clean, cookie: 42 };
    while f.pages.lock().alloc_movable(0, ZoneType::Dma, owner).is_ok() {}
    let mut dropped = Vec::new();
    f.mgr.note_miss();
    let report = f.mgr.worker(f.pages, &f.clock, &mut |d| dropped.push(d.cookie));
    assert_eq!(report.pageblocks_reclaimed, 2);
    assert_eq!(report.pages_dropped, 2 * BLOCK_PAGES);
    assert_eq!(dropped.len(), 2 * BLOCK_PAGES);
    assert!(dropped.iter().all(|c| *c == 42));
    assert_eq!(f.mgr.stats().pages_dropped, 2 * BLOCK_PAGES as u64);
}

#[test]
fn grow_skips_a_block_with_a_pinned_page() {
    let t = Tunables { batch: 1, ..tunables(SwiotlbPolicy::Lend) };
    let f = Fixture::new(4, 6, t, false);
    let mut work = MemoryPressure::fill(f.pages, f.mem, ZoneType::Dma, usize::MAX, 3);
    // Reclaim takes block 2 first (area 1 has no usable slots; see areas.rs).
    let first_lent = f.pool_block(2)..f.pool_block(3);
    let victim = work.pages().find(|p| first_lent.contains(&f.pages.pin(*p).unwrap().addr())).expect("a page in block 2");
    let pin = f.pages.pin(victim).unwrap();
    work.release_every(f.pages, 2);

    f.mgr.note_miss();
    let report = f.worker();
    assert_eq!((report.pageblocks_busy, report.pageblocks_reclaimed, report.pages_pinned), (1, 1, 1), "{report:?}");
    use BlockState::*;
    assert_eq!(f.states(), [AsSlots, Lent, Lent, AsSlots, Lent, AsSlots], "the next empty area's block instead");
    assert_eq!(f.mgr.stats().reclaims_busy, 1);
    assert_eq!(f.pages.lock().pageblock_migratetype(first_lent.start), Some(crate::mm::page_alloc::MigrateType::Swiotlb));
    drop(pin);
    assert_eq!(work.verify(f.pages, f.mem), Ok(work.len()));
}

#[test]
fn irq_context_miss_is_noted_and_kicks() {
    let t = Tunables { low_wm_percent: 0, ..tunables(SwiotlbPolicy::Lend) };
    let f = Fixture::new(2, 4, t, false);
    // Task context stops at the IRQ reserve (256 slots) without missing.
    for _ in 0..(2048 - 256) / 32 {
        f.map_slots(32).unwrap();
    }
    assert!(!f.mgr.should_kick());
    {
        let _irq = IrqContextGuard::enter();
        for _ in 0..8 {
            f.map_slots(32).expect("the IRQ reserve");
        }
        assert!(f.map_slots(32).is_err());
        assert!(f.mgr.should_kick(), "a miss in IRQ context schedules the worker");
    }
    assert_eq!(f.mgr.stats().misses, 1);
    assert_eq!(f.mgr.default_pool().stats().irq_failures, 1);
    assert_eq!(f.worker().pageblocks_reclaimed, 2);
    assert!(!f.mgr.should_kick());
    f.map_slots(32).expect("room after grow");
}

#[test]
#[should_panic(expected = "task context only")]
fn worker_refuses_interrupt_context() {
    let f = Fixture::new(2, 4, tunables(SwiotlbPolicy::Lend), false);
    let _irq = IrqContextGuard::enter();
    f.mgr.worker(f.pages, &f.clock, &mut ignore_drop);
}

#[test]
fn lent_page_in_use_is_not_a_swiotlb_buffer() {
    let f = Fixture::new(1, 4, tunables(SwiotlbPolicy::Lend), false);
    let owner = PageOwner { kind: OwnerKind::Dirty, cookie: 0 };
    let pool_range = f.mgr.default_pool().start()..f.mgr.default_pool().end();
    let page = (0..)
        .map(|_| f.pages.lock().alloc_movable(0, ZoneType::Dma, owner).expect("memory"))
        .find(|p| pool_range.contains(&f.pages.pin(*p).unwrap().addr()))
        .unwrap();
    let pa = f.pages.pin(page).unwrap().addr();
    assert!(!f.mgr.is_swiotlb_buffer(pa), "a lent page handed out as movable");
    assert!(!f.mgr.is_swiotlb_buffer(pa + 100));
    let tlb = f.map_slots(1).unwrap();
    assert!(f.mgr.is_swiotlb_buffer(tlb));
    f.unmap_slots(tlb, 1);
    assert!(!f.mgr.is_swiotlb_buffer(tlb));
}
