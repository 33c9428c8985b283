//! Filling the pool: fragmentation, `is_swiotlb_buffer`, lending, the IRQ reserve, counters.

use super::*;
use crate::arch::host::IrqContextGuard;
use crate::dma::sim_maps::SimPoolMaps;

const PAGEBLOCK_SLOTS: usize = 1024;

#[test]
fn fragmentation_then_free_all_restores_every_segment() {
    let f = Fixture::new(1024, 1);
    let dir = DmaDirection::ToDevice;
    let none = SlotAlignment::default();
    let big = IO_TLB_SIZE * IO_TLB_SEGSIZE;
    let mut live = Vec::new();
    let (mut small_failed, mut big_failed) = (false, false);
    while !(small_failed && big_failed) {
        match f.pool.sim_map(RAM_BASE, IO_TLB_SIZE, dir, none) {
            Ok(tlb) => live.push((tlb, IO_TLB_SIZE)),
            Err(e) => {
                assert!(matches!(e, SwiotlbError::BufferFull { size: 2048, total: 1024, .. }), "{e}");
                small_failed = true;
            }
        }
        match f.pool.sim_map(RAM_BASE, big, dir, none) {
            Ok(tlb) => {
                assert_eq!((tlb - POOL_START) % (big as u64), 0, "256 KiB needs a whole segment");
                live.push((tlb, big));
            }
            Err(e) => {
                assert!(matches!(e, SwiotlbError::BufferFull { .. }), "{e}");
                big_failed = true;
            }
        }
        f.pool.assert_consistent();
    }
    assert_eq!(f.pool.free_slots(), 0, "small maps fill every gap");
    assert_eq!(live.iter().filter(|(_, s)| *s == big).count(), 4, "every other segment");
    let full = f.pool.sim_map(RAM_BASE, 1, dir, none).unwrap_err();
    assert_eq!(full.to_string(), "swiotlb buffer is full (sz: 1 bytes), total 1024 (slots), used 1024 (slots)");
    for (tlb, size) in live {
        f.unmap(tlb, size, dir);
    }
    f.assert_pristine();
    assert_eq!(f.pool.used_hiwater(), 1024);
}

#[test]
fn is_swiotlb_buffer_follows_slot_state() {
    let f = Fixture::new(2048, 2);
    f.pool.lend(PAGEBLOCK_SLOTS..2 * PAGEBLOCK_SLOTS).unwrap();
    let lent = f.pool.slot_addr(PAGEBLOCK_SLOTS).unwrap();
    for off in (0..(PAGEBLOCK_SLOTS * IO_TLB_SIZE) as u64).step_by(4096) {
        assert!(!f.pool.is_swiotlb_buffer(lent + off), "lent page at +{off:#x} is not a bounce buffer");
    }
    let align = SlotAlignment { min_align_mask: 0xfff, alloc_align_mask: 0xfff };
    let mut live = Vec::new();
    for i in 0..40u64 {
        let size = 1 + (i as usize * 1777) % 30_000;
        let tlb = f.map(RAM_BASE + i * 0x1_0000 + i * 0x91, size, DmaDirection::ToDevice, align);
        live.push((tlb, size));
    }
    for &(tlb, size) in &live {
        for b in (tlb..tlb + size as u64).step_by(512).chain([tlb + size as u64 - 1]) {
            assert!(f.pool.is_swiotlb_buffer(b), "live byte {b:#x}");
        }
        assert!(tlb < lent, "never placed in lent slots");
    }
    assert!(!f.pool.is_swiotlb_buffer(POOL_START - 1));
    assert!(!f.pool.is_swiotlb_buffer(f.pool.end()));
    assert!(!f.pool.is_swiotlb_buffer(lent - 1), "free slot");
    for (tlb, size) in live {
        f.unmap(tlb, size, DmaDirection::ToDevice);
        assert!(!f.pool.is_swiotlb_buffer(tlb));
    }
    f.assert_pristine();
}

#[test]
fn lend_and_unlend_with_scrub() {
    let f = Fixture::new(2048, 4); // 512 slots per area: a page block spans two areas
    let block = PAGEBLOCK_SLOTS..2 * PAGEBLOCK_SLOTS;
    f.pool.lend(block.clone()).unwrap();
    assert_eq!((f.pool.lent_slots(), f.pool.free_slots()), (1024, 1024));
    f.pool.assert_consistent();

    // Mapping everything fills only the other block.
    let mut live = Vec::new();
    while let Ok(tlb) = f.pool.sim_map(RAM_BASE, IO_TLB_SIZE, DmaDirection::ToDevice, SlotAlignment::default()) {
        assert!(f.pool.slot_index(tlb).unwrap() < PAGEBLOCK_SLOTS);
        live.push(tlb);
    }
    assert_eq!(live.len(), PAGEBLOCK_SLOTS);

    // The page allocator's user leaves data behind; unlend scrubs it.
    let lent_addr = f.pool.slot_addr(block.start).unwrap();
    let bytes = PAGEBLOCK_SLOTS * IO_TLB_SIZE;
    f.write_pattern(lent_addr, bytes, 7);
    f.pool.unlend(block.clone(), true).unwrap();
    assert!(f.read(lent_addr, bytes).iter().all(|&b| b == 0), "scrubbed");
    assert_eq!((f.pool.lent_slots(), f.pool.free_slots()), (0, 1024));
    f.pool.assert_consistent();
    let tlb = f.map(RAM_BASE, IO_TLB_SIZE * IO_TLB_SEGSIZE, DmaDirection::ToDevice, SlotAlignment::default());
    assert!(f.pool.slot_index(tlb).unwrap() >= PAGEBLOCK_SLOTS, "runs merged again");
    f.unmap(tlb, IO_TLB_SIZE * IO_TLB_SEGSIZE, DmaDirection::ToDevice);

    // Without scrub the contents stay.
    f.pool.lend(block.clone()).unwrap();
    let data = f.write_pattern(lent_addr, bytes, 9);
    f.pool.unlend(block, false).unwrap();
    assert_eq!(f.read(lent_addr, bytes), data);
    for tlb in live {
        f.unmap(tlb, IO_TLB_SIZE, DmaDirection::ToDevice);
    }
    f.assert_pristine();
}

#[test]
fn lend_refuses_used_slots_and_search_never_crosses_lent_ones() {
    let f = Fixture::new(2048, 2);
    let tlb = f.map(RAM_BASE, 100, DmaDirection::ToDevice, SlotAlignment::default());
    let used = f.pool.slot_index(tlb).unwrap();
    assert_eq!(f.pool.lend(0..1024), Err(SwiotlbError::SlotNotFree { slot: used, state: SlotState::Used }));
    // Across two areas, failing in the second: the first area's part is given back. One CPU
    // starts every search in its own area (0): lend the rest of area 0 so that the second map
    // goes on to area 1, then take it back.
    f.pool.lend(used + 1..1024).unwrap();
    let tlb2 = f.map(RAM_BASE, 100, DmaDirection::ToDevice, SlotAlignment::default());
    let used2 = f.pool.slot_index(tlb2).unwrap();
    assert_eq!(used2, 1024, "area 0 full: the second map goes on to area 1");
    f.pool.unlend(used + 1..1024, false).unwrap();
    assert_eq!(f.pool.lend(1000..1100), Err(SwiotlbError::SlotNotFree { slot: used2, state: SlotState::Used }));
    assert_eq!(f.pool.lent_slots(), 0);
    f.pool.assert_consistent();
    assert_eq!(f.pool.unlend(1025..2048, true), Err(SwiotlbError::SlotNotLent { slot: 1025, state: SlotState::Free }));
    assert!(matches!(f.pool.lend(2000..2049), Err(SwiotlbError::InvalidSlotRange { .. })));
    f.unmap(tlb, 100, DmaDirection::ToDevice);
    f.unmap(tlb2, 100, DmaDirection::ToDevice);

    // Lend slots 10..20 of segment 0: a run of 11 may not start in 0..10 any more.
    f.pool.lend(10..20).unwrap();
    f.pool.assert_consistent();
    let tlb = f.map(RAM_BASE, 11 * IO_TLB_SIZE - 1, DmaDirection::ToDevice, SlotAlignment::default());
    let first = f.pool.slot_index(tlb).unwrap();
    assert_eq!(first, 20, "slots 1..10 are too short a run now");
    f.unmap(tlb, 11 * IO_TLB_SIZE - 1, DmaDirection::ToDevice);
    f.pool.unlend(10..20, false).unwrap();
    f.assert_pristine();
}

#[test]
fn lend_split_across_areas_rolls_back() {
    // 512 slots per area; the page block 0..1024 spans areas 0 and 1, and the pool has enough
    // free slots elsewhere, so the failure is found only in area 1, after area 0 was lent.
    let f = Fixture::new(2048, 4);
    let mut live = Vec::new();
    let victim = loop {
        let tlb = f.map(RAM_BASE, 100, DmaDirection::ToDevice, SlotAlignment::default());
        live.push(tlb);
        let i = f.pool.slot_index(tlb).unwrap();
        if (512..1024).contains(&i) {
            break i;
        }
    };
    for &tlb in &live {
        if f.pool.slot_index(tlb) != Some(victim) {
            f.unmap(tlb, 100, DmaDirection::ToDevice);
        }
    }
    assert_eq!(f.pool.lend(0..1024), Err(SwiotlbError::SlotNotFree { slot: victim, state: SlotState::Used }));
    assert_eq!(f.pool.lent_slots(), 0);
    assert_eq!(f.pool.free_slots(), 2047);
    assert_eq!(f.pool.slot_state(0), Some(SlotState::Free), "area 0 given back");
    f.pool.assert_consistent();
}

#[test]
fn irq_context_may_use_the_reserve() {
    let f = Fixture::new(256, 1);
    f.pool.set_irq_reserve_slots(64);
    let dir = DmaDirection::ToDevice;
    let none = SlotAlignment::default();
    let mut live = Vec::new();
    let err = loop {
        match f.pool.sim_map(RAM_BASE, IO_TLB_SIZE, dir, none) {
            Ok(tlb) => live.push(tlb),
            Err(e) => break e,
        }
    };
    assert_eq!(err, SwiotlbError::BelowReserve { nslots: 1, free: 64, reserve: 64 });
    assert_eq!(live.len(), 192);
    assert_eq!(f.pool.lend(200..256), Err(SwiotlbError::BelowReserve { nslots: 56, free: 64, reserve: 64 }));
    {
        let _irq = IrqContextGuard::enter();
        let err = loop {
            match f.pool.sim_map(RAM_BASE, IO_TLB_SIZE, dir, none) {
                Ok(tlb) => live.push(tlb),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, SwiotlbError::BufferFull { .. }), "{err}");
    }
    assert_eq!(live.len(), 256);
    let stats = f.pool.stats();
    assert_eq!((stats.maps, stats.maps_in_irq), (256, 64));
    assert_eq!((stats.map_failures, stats.irq_failures), (2, 1));
    assert_eq!(stats.irq_reserve_slots, 64);
    for tlb in live {
        f.unmap(tlb, IO_TLB_SIZE, dir);
    }
    f.assert_pristine();
}

#[test]
fn geometry_is_checked() {
    let bad =
        |start, nslots, nareas| matches!(SwiotlbPool::new(start, nslots, nareas, test_mem()), Err(SwiotlbError::InvalidGeometry { .. }));
    assert!(bad(POOL_START, 384, 3));
    assert!(bad(POOL_START, 1024, 0));
    assert!(bad(POOL_START, 1000, 1));
    assert!(bad(POOL_START, 256, 4));
    assert!(bad(POOL_START + 0x800, 256, 1));
    assert!(bad(u64::MAX - 0xfff, 128, 1));
    assert!(SwiotlbPool::new(POOL_START, 512, 4, test_mem()).is_ok());
}

#[test]
fn concurrent_maps_and_unmaps_keep_counts() {
    let f = std::sync::Arc::new(Fixture::new(2048, 4));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let f = f.clone();
            std::thread::spawn(move || {
                let orig = RAM_BASE + t * 0x10_0000;
                let data = f.write_pattern(orig, 40_000, t as u8);
                for i in 0..300 {
                    let size = 1 + (i * 131) % 40_000;
                    let dir = DmaDirection::Bidirectional;
                    let tlb = f.pool.sim_map(orig, size, dir, SlotAlignment::min_align(0xfff)).unwrap();
                    assert_eq!(f.read(tlb, size), data[..size]);
                    f.pool.unmap(tlb, size, dir, DmaAttrs::default()).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    f.assert_pristine();
    assert_eq!(f.pool.stats().maps, 1200);
}

/// `AreaSlots::alloc`'s fast path (a run in the cursor's segment when that segment is already
/// the unsummarised one) takes the same runs as the full search: consecutive mappings follow
/// the cursor through a segment, wrap inside it, and move on only when it is full; the maps,
/// the summary and the counters stay consistent after every step, and a freed run comes back
/// after one lap, not at once.
#[test]
fn consecutive_maps_follow_the_cursor_through_a_segment() {
    let f = Fixture::new(256, 1);
    let dir = DmaDirection::ToDevice;
    let none = SlotAlignment::default();
    let slot = |tlb: PhysAddr| ((tlb - POOL_START) / IO_TLB_SIZE as u64) as usize;
    // 4 KiB mappings (2 slots, page aligned): the first segment, two slots at a time.
    let mut live: Vec<PhysAddr> = Vec::new();
    for i in 0..IO_TLB_SEGSIZE / 2 {
        let tlb = f.map(RAM_BASE, 4096, dir, none);
        assert_eq!(slot(tlb), 2 * i, "map {i} follows the cursor");
        f.pool.assert_consistent();
        live.push(tlb);
    }
    // Segment 0 is full: the next goes to segment 1 (the full search), then on from there.
    let next = f.map(RAM_BASE, 4096, dir, none);
    assert_eq!(slot(next), IO_TLB_SEGSIZE);
    assert_eq!(slot(f.map(RAM_BASE, 4096, dir, none)), IO_TLB_SEGSIZE + 2, "fast path in segment 1");
    f.pool.assert_consistent();
    // Free slots 10..12 of segment 0 and the cursor stays in segment 1 (its slots after it).
    f.unmap(live[5], 4096, dir);
    assert_eq!(slot(f.map(RAM_BASE, 4096, dir, none)), IO_TLB_SEGSIZE + 4);
    f.pool.assert_consistent();
}

/// A search skips an area lent whole without taking its lock; once the area's slots come back
/// it must search it again.
#[test]
fn an_area_lent_whole_is_skipped_and_serves_again_when_unlent() {
    let f = Fixture::new(2048, 2);
    f.pool.lend(1024..2048).unwrap();
    let seg = IO_TLB_SIZE * IO_TLB_SEGSIZE;
    let held: Vec<_> = (0..8).map(|_| f.map(RAM_BASE, seg, DmaDirection::ToDevice, SlotAlignment::default())).collect();
    assert!(held.iter().all(|&t| f.pool.slot_index(t).unwrap() < 1024), "area 0 first");
    assert!(matches!(
        f.pool.sim_map(RAM_BASE, seg, DmaDirection::ToDevice, SlotAlignment::default()),
        Err(SwiotlbError::BufferFull { .. })
    ));
    f.pool.unlend(1024..2048, false).unwrap();
    let tlb = f.map(RAM_BASE, seg, DmaDirection::ToDevice, SlotAlignment::default());
    assert!(f.pool.slot_index(tlb).unwrap() >= 1024, "area 1 serves again");
    f.unmap(tlb, seg, DmaDirection::ToDevice);
    for t in held {
        f.unmap(t, seg, DmaDirection::ToDevice);
    }
    f.pool.assert_consistent();
}
