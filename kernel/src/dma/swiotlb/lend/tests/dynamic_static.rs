//! The `static` and `dynamic` policies, and pools that must never be lent.

use super::*;
use crate::arch::host::IrqContextGuard;

#[test]
fn static_never_lends_grows_or_shrinks() {
    let f = Fixture::new(2, 4, tunables(SwiotlbPolicy::Static), false);
    assert_eq!(f.count(BlockState::AsSlots), 4);
    assert_eq!(f.nr_free_swiotlb_pages(), 0);
    let tlbs: Vec<_> = (0..(4096 - 256) / 32).map(|_| f.map_slots(32).unwrap()).collect();
    assert!(f.map_slots(32).is_err());
    assert!(f.mgr.below_low_wm() && f.mgr.miss_pending());
    assert!(!f.mgr.should_kick(), "static has nothing to grow into");
    f.worker_at(0);
    tlbs.into_iter().for_each(|t| f.unmap_slots(t, 32));
    for ms in (0..5000).step_by(100) {
        assert_eq!(f.worker_at(ms), WorkerReport::default());
    }
    assert_eq!(f.count(BlockState::AsSlots), 4);
    assert_eq!(f.nr_free_swiotlb_pages(), 0);
}

#[test]
fn dynamic_adds_pools_under_pressure_and_never_shrinks() {
    let f = Fixture::new(8, 8, tunables(SwiotlbPolicy::Dynamic), false);
    use BlockState::*;
    assert_eq!(f.states(), [AsSlots, AsSlots, Unused, Unused, Unused, Unused, Unused, Unused]);
    assert_eq!(f.mgr.default_pool().nslots(), 2 * SLOTS_PER_PAGEBLOCK);
    assert_eq!(f.nr_free_swiotlb_pages(), 0);
    let managed = f.pages.lock().managed_pages(ZoneType::Dma);

    let mut tlbs: Vec<_> = (0..(2048 - 256) / 32).map(|_| f.map_slots(32).unwrap()).collect();
    assert!(f.map_slots(32).is_err());
    assert!(f.mgr.should_kick());
    let report = f.worker_at(0);
    assert_eq!(report.pageblocks_added, 2);
    let extra = f.mgr.extra_pools().next().expect("an extra pool");
    assert_eq!(f.pages.lock().managed_pages(ZoneType::Dma), managed - 2 * BLOCK_PAGES);
    assert!(f.read(extra.start(), (extra.end() - extra.start()) as usize).iter().all(|b| *b == 0), "scrubbed");
    let tlb = f.map_slots(32).expect("room in the extra pool");
    assert!((extra.start()..extra.end()).contains(&tlb) && f.mgr.is_swiotlb_buffer(tlb));
    tlbs.push(tlb);

    // IRQ context cannot add a pool: the miss is noted for the worker.
    {
        let _irq = IrqContextGuard::enter();
        while f.map_slots(32).is_ok() {}
        assert!(f.mgr.should_kick());
    }
    assert_eq!(f.worker_at(1).pageblocks_added, 2);
    assert_eq!(f.mgr.extra_pools().count(), 2);

    for t in tlbs {
        f.unmap_slots(t, 32);
    }
    for ms in (0..60_000).step_by(500) {
        f.worker_at(ms);
    }
    assert_eq!(f.mgr.extra_pools().count(), 2, "extra pools are never freed");
    assert_eq!(f.mgr.usable_slots(), 6 * SLOTS_PER_PAGEBLOCK);
    assert_eq!(f.mgr.stats().extra_pools, 2);
}

#[test]
fn never_lend_pools_stay_unlent() {
    let f = Fixture::new(2, 6, tunables(SwiotlbPolicy::Lend), true);
    assert_eq!(f.mgr.policy(), SwiotlbPolicy::Static);
    assert_eq!(f.count(BlockState::AsSlots), 6);
    for ms in (0..5000).step_by(100) {
        f.worker_at(ms);
    }
    let dev = f.mgr.carve_device_pool(&f.pages, &f.mem, 2, &mut ignore_drop).unwrap();
    f.mgr.return_device_pool(dev, &f.pages, &f.mem).map_err(|(_, e)| e).unwrap();
    assert_eq!(f.count(BlockState::AsSlots), 6);
    assert_eq!(f.nr_free_swiotlb_pages(), 0);
    assert_eq!(f.mgr.default_pool().lent_slots(), 0);
    assert_eq!(f.mgr.lend_block(&f.pages, &f.mem, 5), Err(LendError::NeverLend));

    let refused = Fixture::try_new(2, 6, tunables(SwiotlbPolicy::Dynamic), true).err();
    assert!(matches!(refused, Some(LendError::PolicyForbids { .. })));
}

#[test]
fn bad_geometry_is_an_error() {
    let mut t = tunables(SwiotlbPolicy::Lend);
    t.keep_pageblocks = 1;
    let pages = LockedPageAllocator::new(PageAllocator::new(BASE..block_addr(4), &[BASE..block_addr(2)], None).unwrap());
    let g = PoolGeometry { start: block_addr(2) + 0x1000, nslots: SLOTS_PER_PAGEBLOCK, nareas: 1 };
    assert!(matches!(SwiotlbManager::new(g, t, false, &pages), Err(LendError::Geometry { .. })));
    let g = PoolGeometry { start: block_addr(2), nslots: 512, nareas: 1 };
    assert!(matches!(SwiotlbManager::new(g, t, false, &pages), Err(LendError::Geometry { .. })));
    // A pool over RAM the page allocator already manages cannot be lent.
    let g = PoolGeometry { start: block_addr(0), nslots: 2 * SLOTS_PER_PAGEBLOCK, nareas: 1 };
    assert!(matches!(SwiotlbManager::new(g, t, false, &pages), Err(LendError::PageAlloc(_))));
}

#[test]
fn stats_table_has_a_line_per_pool_and_the_counters() {
    let f = Fixture::new(4, 4, tunables(SwiotlbPolicy::Dynamic), false);
    f.mgr.note_miss();
    f.worker_at(0);
    let table = f.mgr.to_string();
    assert!(table.contains("policy Dynamic"), "{table}");
    assert!(table.lines().any(|l| l.trim_start().starts_with("default")), "{table}");
    assert!(table.lines().any(|l| l.trim_start().starts_with("extra0")), "{table}");
    assert!(table.contains("2 slots 0 lent 0 reclaiming 0 device 2 unused"), "{table}");
    assert!(table.contains("misses 1, worker runs 1, extra pools 1"), "{table}");
}
