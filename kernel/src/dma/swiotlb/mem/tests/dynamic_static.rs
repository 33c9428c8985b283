//! The `static` and `dynamic` policies, and pools that must never be lent.

use super::*;
use crate::arch::host::IrqContextGuard;
use crate::demo::pressure::MemoryPressure;
use crate::dma::sim_maps::SimPoolMaps;

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

/// Maps `len` bytes at `orig` (a pattern written first) from the device's side.
fn map_pattern(f: &Fixture, orig: PhysAddr, len: usize, dir: DmaDirection) -> Result<PhysAddr, crate::dma::swiotlb::SwiotlbError> {
    let data: Vec<u8> = (0..len).map(|i| (i * 13 + 5) as u8).collect();
    f.mem.write(orig, &data);
    f.mgr.sim_map(orig, len, dir, SlotAlignment::default())
}

#[test]
fn dynamic_keeps_its_boot_pool_and_misses_get_transient_pools() {
    let f = Fixture::new(8, 4, tunables(SwiotlbPolicy::Dynamic), false);
    assert_eq!(f.count(BlockState::AsSlots), 4, "Linux keeps the boot pool whole");
    assert_eq!(f.mgr.default_pool().nslots(), 4 * SLOTS_PER_PAGEBLOCK);
    f.mgr.enable_transient_pools(f.pages);
    let free_before = f.pages.lock().nr_free_pages(ZoneType::Dma);

    let mut tlbs: Vec<_> = (0..(4096 - 256) / 32).map(|_| f.map_slots(32).unwrap()).collect();
    // Every pool missed: a transient pool of just this mapping's size, in task context...
    let orig = ORIG + 0x1_0000;
    let tlb = map_pattern(&f, orig, 5000, DmaDirection::Bidirectional).expect("a transient pool");
    assert!(!(f.mgr.default_pool().start()..f.mgr.default_pool().end()).contains(&tlb));
    assert!(f.mgr.is_swiotlb_buffer(tlb) && f.mgr.is_swiotlb_buffer(tlb + 4999) && !f.mgr.is_swiotlb_buffer(tlb + 5000));
    assert_eq!(f.read(tlb, 5000), f.read(orig, 5000), "copied in");
    assert_eq!(f.mgr.transient_pools().live(), 1);
    assert_eq!(f.pages.lock().nr_free_pages(ZoneType::Dma), free_before - 2, "5000 bytes: 3 slots in an order-1 allocation");
    assert!(f.mgr.miss_pending() && f.mgr.should_kick(), "the worker is asked for a pool as well");
    // ... and in interrupt context (GFP_NOWAIT), once the IRQ reserve is used up too.
    let irq_tlb = {
        let _irq = IrqContextGuard::enter();
        loop {
            let t = map_pattern(&f, ORIG, 2048, DmaDirection::FromDevice).expect("a mapping in IRQ context");
            if f.mgr.transient_pools().contains(t) {
                break t;
            }
            tlbs.push(t);
        }
    };
    assert_eq!(tlbs.len(), (4096 - 256) / 32 + 256, "the reserve went first");
    assert_eq!(f.mgr.transient_pools().stats().allocated_in_irq, 1);
    // The device writes; unmap copies back and frees the pages.
    f.mem.write(tlb + 100, &[0xAB; 64]);
    f.unmap(tlb, 5000, DmaDirection::Bidirectional).unwrap();
    assert_eq!(f.read(orig + 100, 64), vec![0xAB; 64]);
    assert!(!f.mgr.is_swiotlb_buffer(tlb));
    assert!(f.unmap(tlb, 5000, DmaDirection::Bidirectional).is_err(), "second unmap refused");
    f.unmap(irq_tlb, 2048, DmaDirection::FromDevice).unwrap();
    assert_eq!(f.pages.lock().nr_free_pages(ZoneType::Dma), free_before, "transient pages freed at unmap");
    let s = f.mgr.transient_pools().stats();
    assert_eq!((s.allocated, s.freed, s.hiwater), (2, 2, 2));
    let (slot_maps, reserve_maps) = tlbs.split_at((4096 - 256) / 32);
    slot_maps.iter().for_each(|t| f.unmap_slots(*t, 32));
    for t in reserve_maps {
        f.unmap(*t, 2048, DmaDirection::FromDevice).unwrap();
    }
    assert_eq!(f.mgr.used_slots(), 0);
}

#[test]
fn transient_pools_off_or_out_of_memory_fail_the_mapping() {
    let t = Tunables { transient: false, ..tunables(SwiotlbPolicy::Dynamic) };
    let f = Fixture::new(2, 2, t, false);
    f.mgr.enable_transient_pools(f.pages);
    let _tlbs: Vec<_> = (0..(2048 - 256) / 32).map(|_| f.map_slots(32).unwrap()).collect();
    assert!(f.map_slots(32).is_err(), "swiotlb_transient=off: the miss fails");

    // No free page in ZONE_DMA: the transient allocation fails, so does the mapping.
    let f = Fixture::new(1, 2, tunables(SwiotlbPolicy::Dynamic), false);
    f.mgr.enable_transient_pools(f.pages);
    let _work = MemoryPressure::fill(f.pages, f.mem, ZoneType::Dma, usize::MAX, 3);
    let _tlbs: Vec<_> = (0..(2048 - 256) / 32).map(|_| f.map_slots(32).unwrap()).collect();
    assert!(f.map_slots(32).is_err());
    assert_eq!(f.mgr.transient_pools().stats().failed, 1);
}

#[test]
fn dynamic_worker_adds_boot_sized_pools_with_compaction_and_never_shrinks() {
    let mut f = Fixture::new(8, 2, tunables(SwiotlbPolicy::Dynamic), false);
    f.clock = FakeClock::new(1_000);
    // Movable pages in every free block: no whole free pageblock is left.
    let mut work = MemoryPressure::fill(f.pages, f.mem, ZoneType::Dma, usize::MAX, 11);
    work.release_every(f.pages, 2);
    assert!(f.pages.lock().alloc_contig_pageblocks(1, ZoneType::Dma).is_err(), "no free pageblock without compaction");
    let managed = f.pages.lock().managed_pages(ZoneType::Dma);

    let tlbs: Vec<_> = (0..(2048 - 256) / 32).map(|_| f.map_slots(32).unwrap()).collect();
    assert!(f.map_slots(32).is_err(), "transient pools are not enabled here");
    let report = f.worker_at(0);
    assert_eq!(report.pageblocks_added, 2, "the boot pool's size: {report:?}");
    assert!(report.pages_migrated > 0, "compaction migrated pages: {report:?}");
    assert_eq!(work.verify(f.pages, f.mem), Ok(work.len()), "every migrated page intact");
    let extra = f.mgr.extra_pools().next().expect("an extra pool");
    assert_eq!(f.pages.lock().managed_pages(ZoneType::Dma), managed - 2 * BLOCK_PAGES);
    let tlb = f.map_slots(32).expect("room in the extra pool");
    assert!((extra.start()..extra.end()).contains(&tlb) && f.mgr.is_swiotlb_buffer(tlb));

    f.unmap_slots(tlb, 32);
    tlbs.into_iter().for_each(|t| f.unmap_slots(t, 32));
    for ms in (0..60_000).step_by(500) {
        f.worker_at(ms);
    }
    assert_eq!(f.mgr.extra_pools().count(), 1, "extra pools are never freed");
    assert_eq!(f.mgr.usable_slots(), 4 * SLOTS_PER_PAGEBLOCK);
}

#[test]
fn dynamic_worker_halves_the_size_when_memory_is_short() {
    let t = Tunables { dyn_pool_pageblocks: 8, ..tunables(SwiotlbPolicy::Dynamic) };
    let f = Fixture::new(3, 2, t, false);
    f.mgr.note_miss();
    let report = f.worker_at(0);
    assert_eq!(report.pageblocks_added, 2, "8 and 4 pageblocks cannot be had, 2 can: {report:?}");
    assert_eq!(f.mgr.stats().extra_pageblocks, 2);
}

#[test]
fn never_lend_pools_stay_unlent() {
    let f = Fixture::new(2, 6, tunables(SwiotlbPolicy::Lend), true);
    assert_eq!(f.mgr.policy(), SwiotlbPolicy::Static);
    assert_eq!(f.count(BlockState::AsSlots), 6);
    for ms in (0..5000).step_by(100) {
        f.worker_at(ms);
    }
    let dev = f.mgr.carve_device_pool(f.pages, 2, &mut ignore_drop).unwrap();
    f.mgr.return_device_pool(dev, f.pages).map_err(|(_, e)| e).unwrap();
    assert_eq!(f.count(BlockState::AsSlots), 6);
    assert_eq!(f.nr_free_swiotlb_pages(), 0);
    assert_eq!(f.mgr.default_pool().lent_slots(), 0);
    assert_eq!(f.mgr.lend_block(f.pages, 5), Err(LendError::NeverLend));

    let refused = Fixture::try_new(2, 6, tunables(SwiotlbPolicy::Dynamic), true).err();
    assert!(matches!(refused, Some(LendError::PolicyForbids { .. })));
}

#[test]
fn bad_geometry_is_an_error() {
    let mut t = tunables(SwiotlbPolicy::Lend);
    t.keep_pageblocks = 1;
    let pages = LockedPageAllocator::new(PageAllocator::new(BASE..block_addr(4), &[BASE..block_addr(2)], None).unwrap());
    let mem: &'static SimMemory = alloc::boxed::Box::leak(alloc::boxed::Box::new(SimMemory::new(BASE, 4 * PAGEBLOCK_SIZE as usize)));
    let g = PoolGeometry { start: block_addr(2) + 0x1000, nslots: SLOTS_PER_PAGEBLOCK, nareas: 1 };
    assert!(matches!(SwiotlbMem::new(g, t, false, &pages, mem), Err(LendError::Geometry { .. })));
    let g = PoolGeometry { start: block_addr(2), nslots: 512, nareas: 1 };
    assert!(matches!(SwiotlbMem::new(g, t, false, &pages, mem), Err(LendError::Geometry { .. })));
    // A pool over RAM the page allocator already manages cannot be lent.
    let g = PoolGeometry { start: block_addr(0), nslots: 2 * SLOTS_PER_PAGEBLOCK, nareas: 1 };
    assert!(matches!(SwiotlbMem::new(g, t, false, &pages, mem), Err(LendError::PageAlloc(_))));
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
    assert!(table.contains("4 slots 0 lent 0 reclaiming 0 device 0 unused"), "{table}");
    assert!(table.contains("misses 1, worker runs 1, extra pools 1"), "{table}");
}
