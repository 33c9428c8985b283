//! Placement: page alignment, `min_align_mask`, `alloc_align_mask`, pad slots, the size limit.
//!
//! Every placement check runs many times with small mappings in between, so the search starts
//! at many different slots and a lucky first slot cannot make a test pass.

use super::*;
use crate::dma::sim_maps::SimPoolMaps;
use crate::mm::PAGE_SIZE;

/// Runs `check` after each of many spacer mappings, keeping everything mapped, then unmaps it all
/// and checks the pool is as new.
fn with_spacers(nslots: usize, rounds: usize, check: impl Fn(&Fixture, usize) -> Vec<(PhysAddr, usize, DmaDirection)>) {
    let f = Fixture::new(nslots, 1);
    let mut live = Vec::new();
    for round in 0..rounds {
        let (tlb, size) = f.spacer(round);
        live.push((tlb, size, DmaDirection::ToDevice));
        live.extend(check(&f, round));
        f.pool.assert_consistent();
    }
    for (tlb, size, dir) in live {
        f.unmap(tlb, size, dir);
    }
    f.assert_pristine();
}

/// Maps `size` bytes at `orig` with `align`, checks the content arrived and the address keeps the
/// `min_align_mask` bits and the allocation starts `alloc_align_mask`-aligned.
fn map_checked(f: &Fixture, orig: PhysAddr, size: usize, align: SlotAlignment) -> (PhysAddr, usize, DmaDirection) {
    let data = f.write_pattern(orig, size, orig as u8);
    let tlb = f.map(orig, size, DmaDirection::Bidirectional, align);
    assert_eq!(tlb & align.min_align_mask, orig & align.min_align_mask, "orig {orig:#x} size {size:#x} -> {tlb:#x}");
    let kept = orig & align.min_align_mask & (align.alloc_align_mask | (IO_TLB_SIZE as u64 - 1));
    assert_eq!((tlb - kept) & align.alloc_align_mask, 0, "allocation of {tlb:#x} not aligned, {align:?}");
    assert_eq!(f.read(tlb, size), data);
    (tlb, size, DmaDirection::Bidirectional)
}

#[test]
fn mappings_of_a_page_or_more_are_page_aligned() {
    with_spacers(2048, 40, |f, round| {
        let orig = RAM_BASE + 0x2_0000 * (round as u64 % 16) + 0x234;
        let mut live = Vec::new();
        for size in [PAGE_SIZE as usize, PAGE_SIZE as usize + 1, 3 * PAGE_SIZE as usize + 100] {
            let (tlb, ..) = map_checked(f, orig, size, SlotAlignment::default());
            assert_eq!(tlb % PAGE_SIZE, 0, "size {size}");
            live.push((tlb, size, DmaDirection::Bidirectional));
        }
        live
    });
}

#[test]
fn smaller_mappings_need_only_slot_alignment() {
    let f = Fixture::new(256, 1);
    let a = f.map(RAM_BASE, 100, DmaDirection::ToDevice, SlotAlignment::default());
    let b = f.map(RAM_BASE, PAGE_SIZE as usize - 1, DmaDirection::ToDevice, SlotAlignment::default());
    assert_eq!(b - a, IO_TLB_SIZE as u64, "next slot, not next page");
}

/// Original addresses near the start and the end of a `mask + 1` block, and sizes around a slot
/// and a page.
fn min_align_cases(mask: u64, round: usize) -> Vec<(PhysAddr, usize)> {
    let block = RAM_BASE + (mask + 1) * (1 + round as u64 % 8);
    let mut cases = Vec::new();
    for offset in [0, 8, 0x7f8, 0x800, 0x808, mask - 0x807, mask - 7] {
        for size in [8, 100, IO_TLB_SIZE, PAGE_SIZE as usize + 8, 3 * PAGE_SIZE as usize] {
            cases.push((block + offset, size));
        }
    }
    cases
}

fn check_min_align(mask: u64) {
    // Unmap each case at once: with 16 bits kept, only one slot in 32 may start a given mapping,
    // and keeping them all would exhaust those legitimately.
    with_spacers(8192, 12, |f, round| {
        for (orig, size) in min_align_cases(mask, round) {
            let (tlb, size, dir) = map_checked(f, orig, size, SlotAlignment::min_align(mask));
            f.unmap(tlb, size, dir);
        }
        Vec::new()
    });
}

#[test]
fn min_align_mask_12_bits_is_kept() {
    check_min_align(0xfff);
}

#[test]
fn min_align_mask_16_bits_is_kept() {
    check_min_align(0xffff);
}

fn check_alloc_align(alloc_align_mask: u64, min_align_mask: u64) {
    with_spacers(8192, 12, |f, round| {
        let align = SlotAlignment { min_align_mask, alloc_align_mask };
        let block = RAM_BASE + 0x1_0000 * (1 + round as u64 % 8);
        [(block + 0x10, 100), (block + 0x900, 3000), (block + 0xff8, 8), (block + 0x2345, 20_000)]
            .into_iter()
            .map(|(orig, size)| map_checked(f, orig, size, align))
            .collect()
    });
}

#[test]
fn alloc_align_mask_12_bits_aligns_the_allocation() {
    check_alloc_align(0xfff, 0);
}

#[test]
fn alloc_align_mask_14_bits_aligns_the_allocation() {
    check_alloc_align(0x3fff, 0);
}

#[test]
fn min_align_and_alloc_align_combined() {
    check_alloc_align(0xfff, 0xfff);
    check_alloc_align(0x3fff, 0xfff);
    check_alloc_align(0xfff, 0xffff);
    check_alloc_align(0x3fff, 0xffff);
}

#[test]
fn pad_slots_are_freed_on_unmap() {
    let f = Fixture::new(1024, 1);
    let align = SlotAlignment { min_align_mask: 0xfff, alloc_align_mask: 0xfff };
    for round in 0..20 {
        let (spacer, spacer_size) = f.spacer(round);
        // 0x900 of kept offset: one pad slot, then the data 0x100 into the head slot.
        let orig = RAM_BASE + 0x1_0000 + 0x900;
        let used = f.pool.used_slots();
        let (tlb, ..) = map_checked(&f, orig, 100, align);
        assert_eq!(tlb & (IO_TLB_SIZE as u64 - 1), 0x100);
        assert_eq!(f.pool.used_slots() - used, 2, "pad slot + head slot");
        let pad = f.pool.slot_index(tlb).unwrap() - 1;
        assert_eq!(f.pool.slot_state(pad), Some(SlotState::Used));
        f.unmap(tlb, 100, DmaDirection::Bidirectional);
        assert_eq!(f.pool.slot_state(pad), Some(SlotState::Free), "pad slot freed");
        assert_eq!(f.pool.used_slots(), used);
        f.pool.assert_consistent();
        f.unmap(spacer, spacer_size, DmaDirection::ToDevice);
    }
    f.assert_pristine();
}

#[test]
fn mappings_are_limited_to_one_segment() {
    let f = Fixture::new(512, 1);
    let max = IO_TLB_SIZE * IO_TLB_SEGSIZE;
    assert_eq!(max, 256 * 1024);
    let dir = DmaDirection::ToDevice;
    let none = SlotAlignment::default();
    let tlb = f.map(RAM_BASE, max, dir, none);
    assert_eq!(f.pool.sim_map(RAM_BASE, max + 1, dir, none), Err(SwiotlbError::MappingTooLarge { size: max + 1, max }));
    // With a kept offset, a full segment no longer fits; max_mapping_size always does.
    let align = SlotAlignment::min_align(0xfff);
    assert_eq!(max_mapping_size(0xfff), max - PAGE_SIZE as usize);
    assert!(matches!(f.pool.sim_map(RAM_BASE + 0x10, max, dir, align), Err(SwiotlbError::MappingTooLarge { .. })));
    let tlb2 = f.map(RAM_BASE + 0xfff, max_mapping_size(0xfff), dir, align);
    f.unmap(tlb2, max_mapping_size(0xfff), dir);
    f.unmap(tlb, max, dir);
    f.assert_pristine();
    assert_eq!(f.pool.stats().map_failures, 0, "size errors are not slot failures");
}
