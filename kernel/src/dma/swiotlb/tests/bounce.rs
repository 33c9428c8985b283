//! Copy rules of map, unmap and sync; partial syncs and overflow detection.

use super::*;
use crate::dma::sim_maps::SimPoolMaps;

#[test]
fn map_copies_original_in_for_every_direction() {
    let f = Fixture::new(256, 1);
    for (i, dir) in DIRECTIONS.into_iter().enumerate() {
        // Stale data in the slots from "an earlier mapping" must not survive the map.
        f.mem.fill(POOL_START, 0xEE, 256 * IO_TLB_SIZE);
        let orig = RAM_BASE + 0x1_0000 * i as u64 + 0x10;
        let data = f.write_pattern(orig, 5000, i as u8);
        let tlb = f.map(orig, 5000, dir, SlotAlignment::default());
        assert_eq!(f.read(tlb, 5000), data, "{dir:?}");
        f.unmap(tlb, 5000, dir);
    }
    assert_eq!(f.pool.stats().bytes_to_device, 3 * 5000);
}

#[test]
fn unmap_copies_back_only_what_the_device_may_write() {
    let f = Fixture::new(256, 1);
    for (i, dir) in DIRECTIONS.into_iter().enumerate() {
        let orig = RAM_BASE + 0x1_0000 * i as u64;
        let before = f.write_pattern(orig, 3000, 1);
        let tlb = f.map(orig, 3000, dir, SlotAlignment::default());
        let device = f.write_pattern(tlb, 3000, 2);
        f.unmap(tlb, 3000, dir);
        let expected = if dir == DmaDirection::ToDevice { before } else { device };
        assert_eq!(f.read(orig, 3000), expected, "{dir:?}");
    }
    assert_eq!(f.pool.stats().bytes_to_cpu, 2 * 3000);
}

#[test]
fn skip_cpu_sync_leaves_the_original_alone() {
    let f = Fixture::new(256, 1);
    for dir in [DmaDirection::FromDevice, DmaDirection::Bidirectional] {
        let before = f.write_pattern(RAM_BASE, 3000, 1);
        let tlb = f.map(RAM_BASE, 3000, dir, SlotAlignment::default());
        f.write_pattern(tlb, 3000, 2);
        f.pool.unmap(tlb, 3000, dir, DmaAttrs { skip_cpu_sync: true, no_copy_in: false }).unwrap();
        assert_eq!(f.read(RAM_BASE, 3000), before, "{dir:?}");
        assert!(!f.pool.is_swiotlb_buffer(tlb), "slots freed anyway");
    }
    f.assert_pristine();
}

#[test]
fn sync_copies_only_the_ways_the_direction_allows() {
    let f = Fixture::new(256, 1);
    for (i, dir) in DIRECTIONS.into_iter().enumerate() {
        let orig = RAM_BASE + 0x1_0000 * i as u64;
        f.write_pattern(orig, 1000, 1);
        let tlb = f.map(orig, 1000, dir, SlotAlignment::default());

        // Device writes, CPU syncs: the original sees it only if the device may write.
        let device = f.write_pattern(tlb, 1000, 2);
        let before = f.read(orig, 1000);
        f.pool.sync_for_cpu(tlb, 1000, dir).unwrap();
        let expected = if dir.from_device() { device } else { before };
        assert_eq!(f.read(orig, 1000), expected, "sync_for_cpu {dir:?}");

        // CPU writes, syncs for device: the slots see it only if the device may read.
        let cpu = f.write_pattern(orig, 1000, 3);
        let before = f.read(tlb, 1000);
        f.pool.sync_for_device(tlb, 1000, dir).unwrap();
        let expected = if dir.to_device() { cpu } else { before };
        assert_eq!(f.read(tlb, 1000), expected, "sync_for_device {dir:?}");

        f.pool.unmap(tlb, 1000, dir, DmaAttrs { skip_cpu_sync: true, no_copy_in: false }).unwrap();
    }
}

#[test]
fn partial_sync_copies_just_that_part() {
    let f = Fixture::new(256, 1);
    let align = SlotAlignment::min_align(0xfff);
    let orig = RAM_BASE + 0x123;
    let before = f.write_pattern(orig, 10_000, 1);
    let tlb = f.map(orig, 10_000, DmaDirection::FromDevice, align);
    let device = f.write_pattern(tlb, 10_000, 2);

    f.pool.sync_for_cpu(tlb + 3000, 2000, DmaDirection::FromDevice).unwrap();
    let mut expected = before.clone();
    expected[3000..5000].copy_from_slice(&device[3000..5000]);
    assert_eq!(f.read(orig, 10_000), expected);

    // A later slot, before the mapping's in-slot offset (Linux's "negative tlb_offset" case).
    let pos = IO_TLB_SIZE - 0x123 + 0x10;
    f.pool.sync_for_cpu(tlb + pos as u64, 100, DmaDirection::FromDevice).unwrap();
    expected[pos..pos + 100].copy_from_slice(&device[pos..pos + 100]);
    assert_eq!(f.read(orig, 10_000), expected);

    // Up to the last byte is fine.
    f.pool.sync_for_cpu(tlb + 9000, 1000, DmaDirection::FromDevice).unwrap();
    expected[9000..].copy_from_slice(&device[9000..]);
    assert_eq!(f.read(orig, 10_000), expected);

    // CPU side partial sync for the device.
    let f2 = Fixture::new(256, 1);
    f2.write_pattern(orig, 10_000, 1);
    let tlb = f2.map(orig, 10_000, DmaDirection::ToDevice, align);
    let cpu = f2.write_pattern(orig, 10_000, 3);
    let mut slots = f2.read(tlb, 10_000);
    f2.pool.sync_for_device(tlb + 4000, 3000, DmaDirection::ToDevice).unwrap();
    slots[4000..7000].copy_from_slice(&cpu[4000..7000]);
    assert_eq!(f2.read(tlb, 10_000), slots);
}

#[test]
fn sync_beyond_the_mapping_is_refused_without_copying() {
    let f = Fixture::new(256, 1);
    let orig = RAM_BASE + 0x923;
    let before = f.write_pattern(orig - 0x923, 0x4000, 1);
    // min_align 0xfff with alloc_align 0xfff: offset 0x923 means one pad slot before the head.
    let align = SlotAlignment { min_align_mask: 0xfff, alloc_align_mask: 0xfff };
    let tlb = f.map(orig, 10_000, DmaDirection::Bidirectional, align);
    f.write_pattern(tlb, 10_000, 2);
    let dir = DmaDirection::Bidirectional;

    let err = f.pool.sync_for_cpu(tlb + 9000, 1001, dir).unwrap_err();
    assert_eq!(err, SwiotlbError::Overflow { tlb_addr: tlb + 9000, size: 1001, available: 1000 });
    // Past the end but still inside the (alignment-rounded) allocation.
    assert!(matches!(f.pool.sync_for_cpu(tlb + 10_000, 1, dir), Err(SwiotlbError::Overflow { available: 0, .. })));
    // Before the first byte: in the head slot, and in the pad slot.
    assert_eq!(f.pool.sync_for_cpu(tlb - 1, 1, dir), Err(SwiotlbError::AccessBeforeStart { tlb_addr: tlb - 1 }));
    assert_eq!(f.pool.sync_for_device(tlb - 0x400, 1, dir), Err(SwiotlbError::AccessBeforeStart { tlb_addr: tlb - 0x400 }));
    assert_eq!(f.read(orig - 0x923, 0x4000), before, "nothing copied");
    // Unmap too: wrong size or address changes nothing.
    let attrs = DmaAttrs::default();
    assert!(matches!(f.pool.unmap(tlb, 10_001, dir, attrs), Err(SwiotlbError::Overflow { .. })));
    assert_eq!(f.pool.unmap(tlb + 1, 10_000, dir, attrs), Err(SwiotlbError::NotMapped { tlb_addr: tlb + 1 }));
    assert_eq!(f.read(orig - 0x923, 0x4000), before, "nothing copied");
    assert!(f.pool.is_swiotlb_buffer(tlb), "still mapped");
    f.unmap(tlb, 10_000, dir);
    f.assert_pristine();
    assert_eq!(f.pool.unmap(tlb, 10_000, dir, attrs), Err(SwiotlbError::NotMapped { tlb_addr: tlb }));
}

#[test]
fn direction_must_match_the_mapping() {
    let f = Fixture::new(256, 1);
    let tlb = f.map(RAM_BASE, 100, DmaDirection::ToDevice, SlotAlignment::default());
    let mismatch = Err(SwiotlbError::DirectionMismatch { mapped: DmaDirection::ToDevice, requested: DmaDirection::FromDevice });
    assert_eq!(f.pool.sync_for_cpu(tlb, 100, DmaDirection::FromDevice), mismatch);
    assert_eq!(f.pool.unmap(tlb, 100, DmaDirection::FromDevice, DmaAttrs::default()), mismatch);
    // A bidirectional mapping may be synced either way.
    let tlb2 = f.map(RAM_BASE, 100, DmaDirection::Bidirectional, SlotAlignment::default());
    f.pool.sync_for_cpu(tlb2, 100, DmaDirection::FromDevice).unwrap();
    f.pool.sync_for_device(tlb2, 100, DmaDirection::ToDevice).unwrap();
    f.unmap(tlb2, 100, DmaDirection::Bidirectional);
    f.unmap(tlb, 100, DmaDirection::ToDevice);
    f.assert_pristine();
}

#[test]
fn zero_size_and_bad_masks_are_errors() {
    let f = Fixture::new(128, 1);
    assert_eq!(f.pool.sim_map(RAM_BASE, 0, DmaDirection::ToDevice, SlotAlignment::default()), Err(SwiotlbError::ZeroSize));
    let bad = SlotAlignment { min_align_mask: 0xf0, alloc_align_mask: 0 };
    assert_eq!(f.pool.sim_map(RAM_BASE, 8, DmaDirection::ToDevice, bad), Err(SwiotlbError::InvalidAlignment { alignment: bad }));
    f.assert_pristine();
}

/// An unmap that copies nothing back (`ToDevice`, or `skip_cpu_sync`) checks the mapping and
/// frees it in one hold of the area lock (`SwiotlbPool::release_checked`): it refuses what the
/// copy-back path refuses (a wrong size, direction or address, a second unmap) and frees
/// nothing then.
#[test]
fn unmap_without_copy_back_refuses_misuse_and_frees_nothing() {
    use DmaDirection::{Bidirectional, FromDevice, ToDevice};
    let f = Fixture::new(256, 1);
    let skip = DmaAttrs { skip_cpu_sync: true, no_copy_in: false };
    // One pad slot in front of the head (as in `sync_beyond_the_mapping_is_refused_without_copying`).
    let align = SlotAlignment { min_align_mask: 0xfff, alloc_align_mask: 0xfff };
    for (dir, attrs) in [(ToDevice, DmaAttrs::NONE), (ToDevice, skip), (FromDevice, skip), (Bidirectional, skip)] {
        let tlb = f.map(RAM_BASE + 0x923, 10_000, dir, align);
        let used = f.pool.used_slots();
        let other = if dir == ToDevice { FromDevice } else { ToDevice };
        let not_mapped = |tlb_addr| Err(SwiotlbError::NotMapped { tlb_addr });
        assert!(matches!(f.pool.unmap(tlb, 10_001, dir, attrs), Err(SwiotlbError::Overflow { .. })), "{dir:?}");
        assert_eq!(f.pool.unmap(tlb + 1, 10_000, dir, attrs), not_mapped(tlb + 1), "{dir:?}");
        assert_eq!(f.pool.unmap(tlb - 0x400, 10_000, dir, attrs), not_mapped(tlb - 0x400), "{dir:?}: the pad slot");
        assert_eq!(f.pool.unmap(tlb + IO_TLB_SIZE as u64, 5_000, dir, attrs), not_mapped(tlb + IO_TLB_SIZE as u64), "{dir:?}");
        let mismatch = Err(SwiotlbError::DirectionMismatch { mapped: dir, requested: other });
        assert_eq!(f.pool.unmap(tlb, 10_000, other, skip), mismatch, "{dir:?}");
        assert_eq!(f.pool.used_slots(), used, "{dir:?}: nothing freed");
        assert!(f.pool.is_swiotlb_buffer(tlb), "{dir:?}: still mapped");
        f.pool.assert_consistent();
        assert_eq!(f.pool.unmap(tlb, 10_000, dir, attrs), Ok(()), "{dir:?}");
        assert_eq!(f.pool.unmap(tlb, 10_000, dir, attrs), not_mapped(tlb), "{dir:?}: second unmap");
        f.assert_pristine();
    }
}

#[test]
fn timed_copies_are_counted_and_still_copy() {
    let f = Fixture::new(256, 1);
    let before = copy_timing();
    set_copy_timing(true);
    let data = f.write_pattern(RAM_BASE, 5000, 3);
    let tlb = f.map(RAM_BASE, 5000, DmaDirection::Bidirectional, SlotAlignment::default());
    assert_eq!(f.read(tlb, 5000), data, "the timed copy-in copied");
    let device = f.write_pattern(tlb, 5000, 4);
    f.unmap(tlb, 5000, DmaDirection::Bidirectional);
    set_copy_timing(false);
    assert_eq!(f.read(RAM_BASE, 5000), device, "the timed copy-back copied");
    let after = copy_timing();
    // Other tests may bounce meanwhile: at least this test's two copies.
    assert!(after.0 >= before.0 + 2, "{before:?} -> {after:?}");
    assert!(after.1 >= before.1 + 2 * 5000, "{before:?} -> {after:?}");
    assert!(after.2 >= before.2, "{before:?} -> {after:?}");
}

/// The unmap that copies back looks the mapping up, copies with the area lock released, then
/// frees what it found (`SwiotlbPool::release_found`) only if that allocation still lives there
/// unchanged: a racing second unmap that freed it, and a new mapping made in its slots
/// meanwhile, are not freed in its place.
#[test]
fn copy_back_unmap_frees_only_the_allocation_it_looked_up() {
    let f = Fixture::new(128, 1);
    let tlb = f.map(RAM_BASE, 5000, DmaDirection::FromDevice, SlotAlignment::default());
    let (found, area) = f.pool.find_mapping_in(tlb).unwrap();
    // Meanwhile: another unmap of the same address frees it, and a mapping of another buffer
    // takes the same slots (mappings are made until one does; the others stay).
    f.unmap(tlb, 5000, DmaDirection::FromDevice);
    let others: Vec<PhysAddr> = (0..f.pool.nslots() / 3)
        .map(|i| f.map(RAM_BASE + 0x2000 * (i as u64 + 1), 5000, DmaDirection::FromDevice, SlotAlignment::default()))
        .take_while(|&t| t != tlb)
        .collect();
    assert!(f.pool.is_swiotlb_buffer(tlb), "a new mapping took the slots");
    let used = f.pool.used_slots();
    assert_eq!(f.pool.release_found(tlb, &found, area), Err(SwiotlbError::NotMapped { tlb_addr: tlb }));
    assert_eq!(f.pool.used_slots(), used, "the new mapping stays");
    assert!(f.pool.is_swiotlb_buffer(tlb));
    // Found again, it is freed; a second time, nothing is there.
    let (found, area) = f.pool.find_mapping_in(tlb).unwrap();
    assert_eq!(f.pool.release_found(tlb, &found, area), Ok(()));
    assert_eq!(f.pool.release_found(tlb, &found, area), Err(SwiotlbError::NotMapped { tlb_addr: tlb }));
    for t in others {
        f.unmap(t, 5000, DmaDirection::FromDevice);
    }
    // A lookup away from the head's first byte frees nothing either.
    let tlb = f.map(RAM_BASE, 5000, DmaDirection::FromDevice, SlotAlignment::default());
    let (inside, area) = f.pool.find_mapping_in(tlb + 1).unwrap();
    assert_eq!(f.pool.release_found(tlb, &inside, area), Err(SwiotlbError::NotMapped { tlb_addr: tlb }));
    f.unmap(tlb, 5000, DmaDirection::FromDevice);
    f.assert_pristine();
}
