//! Per-device pools.

use super::*;

#[test]
fn carve_from_lent_blocks_and_return_them_lent() {
    let f = Fixture::new(2, 8, tunables(SwiotlbPolicy::Lend), false);
    let dev = f.mgr.carve_device_pool(&f.pages, &f.mem, 2, &mut ignore_drop).unwrap();
    use BlockState::*;
    assert_eq!(dev.pageblocks(), 2..4);
    assert_eq!(f.states()[..5], [AsSlots, AsSlots, CarvedForDevice, CarvedForDevice, Lent]);
    assert_eq!(f.nr_free_swiotlb_pages(), 4 * BLOCK_PAGES);
    assert_eq!(f.mgr.usable_slots(), 2 * SLOTS_PER_PAGEBLOCK, "the default pool does not use carved blocks");

    f.mem.write(ORIG, &[0x5a; 64]);
    let tlb = dev.pool().map(&f.mem, ORIG, 64, DmaDirection::ToDevice, SlotAlignment::default()).unwrap();
    assert!((f.pool_block(2)..f.pool_block(4)).contains(&tlb));
    assert!(dev.pool().is_swiotlb_buffer(tlb) && !f.mgr.is_swiotlb_buffer(tlb));
    assert_eq!(f.read(tlb + 64, 64), [0; 64], "carved slots are scrubbed");

    let Err((dev, err)) = f.mgr.return_device_pool(dev, &f.pages, &f.mem) else { panic!("returned with a live mapping") };
    assert_eq!(err, LendError::LiveMappings { used_slots: 1 });
    dev.pool().unmap(&f.mem, tlb, 64, DmaDirection::ToDevice, DmaAttrs::default()).unwrap();
    f.mgr.return_device_pool(dev, &f.pages, &f.mem).map_err(|(_, e)| e).unwrap();
    assert_eq!(f.states()[..5], [AsSlots, AsSlots, Lent, Lent, Lent]);
    assert_eq!(f.nr_free_swiotlb_pages(), 6 * BLOCK_PAGES);
    let s = f.mgr.stats();
    assert_eq!((s.device_pools_carved, s.device_pools_returned), (1, 1));
    f.mgr.default_pool().assert_consistent();
}

#[test]
fn carve_from_free_slots_when_nothing_is_lent() {
    let f = Fixture::new(2, 8, tunables(SwiotlbPolicy::Static), false);
    let dev = f.mgr.carve_device_pool(&f.pages, &f.mem, 3, &mut ignore_drop).unwrap();
    assert_eq!(dev.pageblocks(), 5..8);
    assert_eq!(f.mgr.usable_slots(), 5 * SLOTS_PER_PAGEBLOCK);
    assert_eq!(f.nr_free_swiotlb_pages(), 0);
    let err = f.mgr.carve_device_pool(&f.pages, &f.mem, 4, &mut ignore_drop).err();
    assert_eq!(err, Some(LendError::NotEnoughPageblocks { wanted: 4, available: 3 }), "keeps swiotlb_keep");
    f.mgr.return_device_pool(dev, &f.pages, &f.mem).map_err(|(_, e)| e).unwrap();
    assert_eq!(f.mgr.usable_slots(), 8 * SLOTS_PER_PAGEBLOCK);
    assert_eq!(f.count(BlockState::AsSlots), 8);
    f.mgr.default_pool().assert_consistent();
}

#[test]
fn carve_skips_used_blocks_and_refuses_what_it_cannot_do() {
    let f = Fixture::new(2, 4, tunables(SwiotlbPolicy::Static), false);
    // A mapping in every area (one per pageblock here) leaves no wholly free block.
    let tlbs: Vec<_> = (0..4).map(|_| f.map_slots(1).unwrap()).collect();
    let err = f.mgr.carve_device_pool(&f.pages, &f.mem, 1, &mut ignore_drop).err();
    assert_eq!(err, Some(LendError::NotEnoughPageblocks { wanted: 1, available: 0 }));
    tlbs.into_iter().for_each(|t| f.unmap_slots(t, 1));
    let dev = f.mgr.carve_device_pool(&f.pages, &f.mem, 1, &mut ignore_drop).unwrap();

    let other = Fixture::new(2, 4, tunables(SwiotlbPolicy::Static), false);
    let Err((dev, err)) = other.mgr.return_device_pool(dev, &other.pages, &other.mem) else { panic!("returned elsewhere") };
    assert_eq!(err, LendError::NotCarvedHere);
    f.mgr.return_device_pool(dev, &f.pages, &f.mem).map_err(|(_, e)| e).unwrap();

    let dynamic = Fixture::new(2, 4, tunables(SwiotlbPolicy::Dynamic), false);
    let err = dynamic.mgr.carve_device_pool(&dynamic.pages, &dynamic.mem, 1, &mut ignore_drop).err();
    assert!(matches!(err, Some(LendError::PolicyForbids { .. })));
}
