use std::string::ToString;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;

const ALLOCATED: RegionFlags = RegionFlags::of(RegionKind::Allocated);

fn range(base: u64, size: u64) -> PhysRange {
    PhysRange::new(base, size).unwrap()
}

fn map_with_ram(banks: &[(u64, u64)]) -> Memblock<'static> {
    let mut map = Memblock::new();
    for &(base, size) in banks {
        map.add_ram(base, size).unwrap();
    }
    map
}

#[test]
fn ram_banks_merge_when_they_touch_or_overlap() {
    let map = map_with_ram(&[(0x3000, 0x1000), (0x1000, 0x1000), (0x2000, 0x1000), (0x6000, 0x800), (0x8000, 0x1000), (0x7800, 0x1000)]);
    assert_eq!(map.ram(), [range(0x1000, 0x3000), range(0x6000, 0x800), range(0x7800, 0x1800)]);
    assert_eq!(map.total_ram(), 0x5000);
    let mut map = Memblock::new();
    assert_eq!(map.add_ram(0x1000, 0), Err(MemblockError::ZeroSize { label: "ram" }));
    assert_eq!(map.add_ram(u64::MAX, 2), Err(MemblockError::Overflow { label: "ram", base: u64::MAX, size: 2 }));
}

#[test]
fn reserve_rejects_zero_size_overflow_and_bad_labels() {
    let mut map = map_with_ram(&[(0, 0x10_0000)]);
    assert_eq!(map.reserve(0x1000, 0, "a", ALLOCATED), Err(MemblockError::ZeroSize { label: "a" }));
    assert_eq!(map.reserve(u64::MAX - 1, 4, "a", ALLOCATED), Err(MemblockError::Overflow { label: "a", base: u64::MAX - 1, size: 4 }));
    for label in ["", "two words"] {
        assert_eq!(map.reserve(0x1000, 1, label, ALLOCATED), Err(MemblockError::BadLabel { label }));
    }
    assert_eq!(map.reserved().count(), 0);
}

#[test]
fn reserve_must_stay_inside_one_bank() {
    let mut map = map_with_ram(&[(0x1000, 0x1000), (0x3000, 0x1000), (0x4000, 0x1000)]);
    let outside = |base, size| MemblockError::OutsideRam { label: "r", range: range(base, size) };
    assert_eq!(map.reserve(0x0, 0x1000, "r", ALLOCATED), Err(outside(0x0, 0x1000)));
    assert_eq!(map.reserve(0x1800, 0x1000, "r", ALLOCATED), Err(outside(0x1800, 0x1000)), "runs off a bank");
    assert_eq!(map.reserve(0x1000, 0x3000, "r", ALLOCATED), Err(outside(0x1000, 0x3000)), "spans a hole");
    assert_eq!(map.reserve(0x3800, 0x1000, "r", ALLOCATED), Ok(()), "adjacent banks are contiguous");
}

#[test]
fn overlapping_reservations_name_both_labels() {
    let mut map = map_with_ram(&[(0, 0x10_0000)]);
    map.reserve(0x2000, 0x2000, "first", ALLOCATED).unwrap();
    map.reserve(0x8000, 0x1000, "second", ALLOCATED).unwrap();
    for (base, size, other) in [(0x1000, 0x1001, "first"), (0x3fff, 1, "first"), (0x7000, 0x2000, "second"), (0x0, 0x9000, "first")] {
        let err = map.reserve(base, size, "new", ALLOCATED).unwrap_err();
        let MemblockError::Overlap { label, other: o, .. } = err else { panic!("{err:?}") };
        assert_eq!((label, o), ("new", other), "{base:#x}+{size:#x}");
        assert!(err.to_string().contains("new") && err.to_string().contains(other));
    }
    map.reserve(0x4000, 0x4000, "between", ALLOCATED).unwrap();
    let labels: Vec<_> = map.reserved().map(|r| r.label).collect();
    assert_eq!(labels, ["first", "between", "second"], "kept sorted");
}

#[test]
fn tables_have_fixed_capacity() {
    let mut map = map_with_ram(&[(0, 0x100_0000)]);
    for i in 0..MAX_RESERVED_REGIONS as u64 {
        map.reserve(i * 0x1000, 0x10, "r", ALLOCATED).unwrap();
    }
    assert_eq!(map.reserve(0x80_0000, 0x10, "full", ALLOCATED), Err(MemblockError::Capacity { table: "reserved", label: "full" }));
    let mut map = Memblock::new();
    for i in 0..MAX_RAM_BANKS as u64 {
        map.add_ram(i * 0x2000, 0x1000).unwrap();
    }
    assert_eq!(map.add_ram(0x100_0000, 0x1000), Err(MemblockError::Capacity { table: "RAM", label: "ram" }));
    map.add_ram(0x1000, 0x1000).unwrap(); // merging frees slots
}

#[test]
fn alloc_is_top_down_aligned_and_inside_the_window() {
    let mut map = map_with_ram(&[(0x1000_0000, 0x100_0000), (0x4000_0000, 0x100_0000)]);
    map.reserve(0x40ff_f000, 0x1000, "top", ALLOCATED).unwrap();
    assert_eq!(map.alloc(0x1000, 0x1000, None, "a", ALLOCATED), Ok(0x40ff_e000));
    assert_eq!(map.alloc(0x10_0000, 0x20_0000, None, "b", ALLOCATED), Ok(0x40e0_0000));
    let low = Some(range(0x1000_0000, 0x20_0000));
    assert_eq!(map.alloc(0x1000, 0x1000, low, "c", ALLOCATED), Ok(0x101f_f000));
    // Window straddling both banks: only the part in RAM counts.
    let straddle = Some(range(0x10f0_0000, 0x2000_0000));
    assert_eq!(map.alloc(0x10_0000, 0x1000, straddle, "d", ALLOCATED), Ok(0x10f0_0000));
    assert!(matches!(map.alloc(0x1000, 0x1000, straddle, "e", ALLOCATED), Err(MemblockError::NoSpace { .. })));
    assert_eq!(
        map.alloc(0x200_0000, 0x1000, None, "huge", ALLOCATED),
        Err(MemblockError::NoSpace { label: "huge", size: 0x200_0000, align: 0x1000 })
    );
    assert_eq!(map.alloc(0x1000, 0x1800, None, "odd", ALLOCATED), Err(MemblockError::BadAlignment { label: "odd", align: 0x1800 }));
    assert_eq!(map.alloc(0, 0x1000, None, "zero", ALLOCATED), Err(MemblockError::ZeroSize { label: "zero" }));
    let outside = Some(range(0x2000_0000, 0x1000_0000));
    assert!(matches!(map.alloc(0x1000, 0x1000, outside, "x", ALLOCATED), Err(MemblockError::NoSpace { .. })));
}

#[test]
fn free_ranges_are_ram_minus_reservations() {
    let mut map = map_with_ram(&[(0x1000, 0x4000), (0x8000, 0x2000)]);
    map.reserve(0x1000, 0x1000, "start", ALLOCATED).unwrap();
    map.reserve(0x3000, 0x800, "mid", ALLOCATED).unwrap();
    map.reserve(0x3800, 0x800, "mid2", ALLOCATED).unwrap();
    map.reserve(0x9000, 0x1000, "end", ALLOCATED).unwrap();
    let free: Vec<_> = map.free_ranges().collect();
    assert_eq!(free, [range(0x2000, 0x1000), range(0x4000, 0x1000), range(0x8000, 0x1000)]);
}

#[test]
fn mapped_ranges_leave_out_only_no_map_regions() {
    let mut map = map_with_ram(&[(0x1000, 0x4000), (0x8000, 0x2000)]);
    map.reserve(0x1000, 0x1000, "kept", ALLOCATED).unwrap();
    let no_map = RegionFlags { no_map: true, ..ALLOCATED };
    map.reserve(0x3000, 0x1000, "hole", no_map).unwrap();
    map.reserve(0x8000, 0x1000, "hole2", no_map).unwrap();
    let mapped: Vec<_> = map.mapped_ranges().collect();
    assert_eq!(mapped, [range(0x1000, 0x2000), range(0x4000, 0x1000), range(0x9000, 0x1000)]);
    assert!(map.is_ram(0x9fff) && !map.is_ram(0xa000) && !map.is_ram(0x5000));
}

/// A `/reserved-memory` region's label names it alone (the device-tree half of this check,
/// found by the `fdt` fuzz target, is in the device-tree tests).
#[test]
fn reserved_memory_labels_are_unique_in_the_map() {
    let mut map = map_with_ram(&[(0x1000, 0x10000)]);
    map.reserve(0x1000, 0x1000, "kernel", RegionFlags::of(RegionKind::KernelImage)).unwrap();
    let pool = RegionFlags::of(RegionKind::ReservedMemory(PoolKind::RestrictedDma));
    assert_eq!(map.reserve(0x4000, 0x1000, "kernel", pool), Err(MemblockError::DuplicateLabel { label: "kernel" }));
    map.reserve(0x4000, 0x1000, "pool", pool).unwrap();
    assert_eq!(map.reserve(0x6000, 0x1000, "pool", pool), Err(MemblockError::DuplicateLabel { label: "pool" }));
    assert_eq!(map.alloc(0x1000, 0x1000, None, "pool", ALLOCATED), Err(MemblockError::DuplicateLabel { label: "pool" }));
    // The kernel's own kinds may repeat a label.
    let memreserve = RegionFlags::of(RegionKind::MemReserve);
    map.reserve(0x8000, 0x1000, "memreserve", memreserve).unwrap();
    map.reserve(0x9000, 0x1000, "memreserve", memreserve).unwrap();
    assert_eq!(map.find("pool").unwrap().range, range(0x4000, 0x1000));
    assert!(MemblockError::DuplicateLabel { label: "x" }.to_string().contains("unique"));
}

#[test]
fn page_aligned_inner_rounds_inward() {
    assert_eq!(page_aligned_inner(range(0x1001, 0x3000)), Some(range(0x2000, 0x2000)));
    assert_eq!(page_aligned_inner(range(0x1001, 0x1000)), None);
}

#[derive(Debug, Clone)]
enum Op {
    Reserve(u64, u64),
    Alloc { size: u64, align_shift: u32, within: Option<(u64, u64)> },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..0x2_0000, 0u64..0x8000).prop_map(|(b, s)| Op::Reserve(b, s)),
        (1u64..0x8000, 0u32..14, proptest::option::of((0u64..0x2_0000, 0u64..0x1_0000)))
            .prop_map(|(size, align_shift, within)| Op::Alloc { size, align_shift, within }),
    ]
}

fn check_invariants(map: &Memblock<'_>) {
    let reserved: Vec<_> = map.reserved().map(|r| r.range).collect();
    let free: Vec<_> = map.free_ranges().collect();
    for pair in reserved.windows(2) {
        assert!(pair[0].end() <= pair[1].base(), "reserved sorted and disjoint: {pair:?}");
    }
    for pair in free.windows(2) {
        assert!(pair[0].end() <= pair[1].base(), "free sorted and disjoint: {pair:?}");
    }
    for r in reserved.iter().chain(&free) {
        assert!(r.size() > 0);
        assert!(map.ram().iter().any(|bank| bank.contains(r)), "{r:?} inside one bank");
    }
    for f in &free {
        assert!(reserved.iter().all(|r| !r.overlaps(f)), "free {f:?} overlaps a reservation");
    }
    let total: u64 = reserved.iter().chain(&free).map(|r| r.size()).sum();
    assert_eq!(total, map.total_ram(), "free + reserved == RAM");
}

proptest! {
    // No regression files: they would land outside `mm/`.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn memblock_never_overlaps_and_accounts_for_all_ram(
        banks in proptest::collection::vec((0u64..0x2_0000, 1u64..0x1_0000), 1..5),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let mut map = Memblock::new();
        for (base, size) in banks {
            map.add_ram(base, size).unwrap();
        }
        for op in ops {
            match op {
                Op::Reserve(base, size) => {
                    let _ = map.reserve(base, size, "r", ALLOCATED);
                }
                Op::Alloc { size, align_shift, within } => {
                    let align = 1 << align_shift;
                    let within = within.and_then(|(b, s)| PhysRange::new(b, s));
                    if let Ok(base) = map.alloc(size, align, within, "a", ALLOCATED) {
                        prop_assert_eq!(base % align, 0);
                        let got = range(base, size);
                        if let Some(w) = within {
                            prop_assert!(w.contains(&got));
                        }
                        prop_assert!(map.reserved().any(|r| r.range == got));
                    }
                }
            }
            check_invariants(&map);
        }
    }
}

#[test]
fn array_list_insert_and_remove() {
    let mut list: ArrayList<u32, 3> = ArrayList::new();
    list.insert(0, 2).unwrap();
    list.insert(0, 1).unwrap();
    list.insert(2, 3).unwrap();
    assert_eq!(list.as_slice(), [1, 2, 3]);
    assert_eq!(list.insert(0, 0), Err(CapacityError));
    assert_eq!(list.remove(1), Some(2));
    assert_eq!(list.as_slice(), [1, 3]);
    assert_eq!(list.insert(5, 0), Err(CapacityError));
    assert_eq!(list.remove(2), None);
}
