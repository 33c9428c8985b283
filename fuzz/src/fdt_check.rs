//! The whole boot-time interpretation of a device tree, as `platform::boot` runs it, with the
//! invariants the rest of the kernel relies on checked after every step.
//!
//! Errors are fine (the kernel stops with a message); a panic, a hang, an arithmetic overflow
//! (the fuzz profile keeps overflow checks on) or a broken invariant is a finding.

use kernel::dt::{build_memblock, DeviceTree, ReservedPlacement};
use kernel::mm::memblock::{Memblock, RegionKind};
use kernel::mm::{PhysRange, PAGE_SIZE};

/// Where QEMU's virt machine puts the DTB and where our image is linked (`linker.ld`).
pub const DTB_BASE: u64 = 0x4000_0000;
pub const KERNEL_BASE: u64 = 0x4020_0000;
pub const KERNEL_SIZE: u64 = 0x20_0000;

/// Runs every decoder of the kernel over `blob` and checks what it built.
pub fn check(blob: &[u8]) {
    let Ok(dt) = DeviceTree::new(blob) else { return };
    let _ = dt.total_size();
    let _ = dt.memreserve_entries().count();

    // /chosen and the command line.
    if let Ok(Some(bootargs)) = dt.bootargs() {
        check_bootargs(bootargs);
    }
    let _ = dt.stdout_path();
    let _ = dt.stdout().map(|d| d.map(|d| d.is_compatible("arm,pl011")));

    // The devices: reg, interrupts, memory-region, dma-ranges.
    for dev in dt.devices().take(512) {
        let Ok(dev) = dev else { break };
        for reg in dev.regs() {
            assert!(reg.base().checked_add(reg.size()).is_some(), "{}: reg wraps", dev.name());
        }
        let _ = dev.interrupt_cells().count();
        let _ = dev.interrupt_parent_cells();
        if let Ok(irqs) = dev.gic_interrupts() {
            for irq in irqs {
                let _ = (irq.intid(), irq.is_level());
            }
        }
        for phandle in dev.memory_region_phandles() {
            if let Ok(Some(region)) = dt.reserved_by_phandle(phandle) {
                assert_eq!(region.phandle, Some(phandle));
            }
        }
        let _ = (dev.dma_coherent(), dev.enabled(), dev.phandle(), dev.compatible().first());
        if let (Some(limit), Ok(Some(smallest))) = (dev.dma_limit(), dt.smallest_dma_limit()) {
            assert!(smallest <= limit, "{}: limit {limit:#x} below the tree's smallest {smallest:#x}", dev.name());
        }
    }
    let _ = dt.virtio_mmio_devices().take(64).count();
    let _ = dt.gic();
    let _ = dt.arch_timer();
    let _ = dt.psci_method();
    let _ = dt.find_path("/pl011@9000000");

    // The boot memory map.
    let Some(kernel) = PhysRange::new(KERNEL_BASE, KERNEL_SIZE) else { return };
    let Some(dtb) = PhysRange::new(DTB_BASE, blob.len().max(1) as u64) else { return };
    let Ok(map) = build_memblock(&dt, kernel, dtb) else { return };
    check_memblock(&dt, &map);
}

/// The bootargs parser: never panics, and the numbers it keeps are inside their documented ranges.
pub fn check_bootargs(cmdline: &str) {
    let (params, warnings) = kernel::bootargs::parse(cmdline);
    assert!(params.swiotlb_low_wm <= 100 && params.swiotlb_high_wm <= 100);
    assert!(params.swiotlb_reserve <= 1 << 20);
    assert!(params.swiotlb_shrink_delay_ms <= 3_600_000);
    if let Some(areas) = params.swiotlb.areas {
        assert!(areas > 0, "swiotlb= with zero areas accepted");
    }
    // The watermarks never cross (that would make the pool grow and shrink in turn).
    assert!(params.swiotlb_high_wm <= params.swiotlb_low_wm || params.swiotlb_low_wm == 0);
    for w in &warnings {
        // Each warning names a word of the command line (the watermark one is rebuilt).
        assert!(cmdline.contains(w.word.as_str()) || w.word.starts_with("swiotlb_high_wm="));
        let _ = w.to_string();
    }
}

/// Memblock's invariants: what the page allocator and the page tables are built from.
pub fn check_memblock(dt: &DeviceTree<'_>, map: &Memblock<'_>) {
    let ram = map.ram();
    assert!(!ram.is_empty() || map.reserved().next().is_none());
    // RAM: sorted, non-empty, disjoint and not touching (adjacent banks merge).
    for bank in ram {
        assert!(bank.size() > 0, "empty RAM bank {bank:?}");
    }
    for pair in ram.windows(2) {
        assert!(pair[0].end() < pair[1].base(), "RAM banks overlap or touch: {pair:?}");
    }
    // Every /memory bank is inside the merged RAM.
    for bank in dt.memory_banks().flatten().filter(|b| b.size() > 0) {
        assert!(ram.iter().any(|r| r.contains(&bank)), "bank {bank:?} lost");
    }

    // Reservations: sorted, non-empty, disjoint, each inside one RAM bank.
    let reserved: Vec<_> = map.reserved().copied().collect();
    for r in &reserved {
        assert!(r.range.size() > 0, "{}: empty reservation", r.label);
        assert!(ram.iter().any(|b| b.contains(&r.range)), "{}: {:?} outside RAM", r.label, r.range);
    }
    for pair in reserved.windows(2) {
        assert!(
            pair[0].range.end() <= pair[1].range.base(),
            "reservations overlap: {} {:?} and {} {:?}",
            pair[0].label,
            pair[0].range,
            pair[1].label,
            pair[1].range
        );
    }

    // Free ranges: sorted, disjoint, inside RAM, outside every reservation, and together with
    // the reservations they add up to all RAM (nothing lost, nothing counted twice).
    let free: Vec<PhysRange> = map.free_ranges().take(4 * (reserved.len() + ram.len()) + 8).collect();
    assert!(map.free_ranges().nth(free.len()).is_none(), "free_ranges does not end");
    check_sorted_disjoint("free", &free);
    for f in &free {
        assert!(f.size() > 0, "empty free range");
        assert!(ram.iter().any(|b| b.contains(f)), "free {f:?} outside RAM");
        for r in &reserved {
            assert!(!f.overlaps(&r.range), "free {f:?} overlaps {} {:?}", r.label, r.range);
        }
    }
    let free_total: u128 = free.iter().map(|f| u128::from(f.size())).sum();
    let reserved_total: u128 = reserved.iter().map(|r| u128::from(r.range.size())).sum();
    let ram_total: u128 = ram.iter().map(|b| u128::from(b.size())).sum();
    assert_eq!(free_total + reserved_total, ram_total, "free + reserved != RAM");

    // Mapped ranges: RAM minus exactly the no-map reservations.
    let mapped: Vec<PhysRange> = map.mapped_ranges().take(4 * (reserved.len() + ram.len()) + 8).collect();
    check_sorted_disjoint("mapped", &mapped);
    for r in &reserved {
        let covered = mapped.iter().any(|m| m.contains(&r.range));
        if r.flags.no_map {
            assert!(mapped.iter().all(|m| !m.overlaps(&r.range)), "no-map {} is mapped", r.label);
        } else {
            assert!(covered, "{} {:?} is not mapped", r.label, r.range);
        }
    }
    for f in &free {
        assert!(mapped.iter().any(|m| m.contains(f)), "free {f:?} not mapped");
    }

    // Every /reserved-memory region is in the map under its own name (the platform sets pools
    // up with `find(name)`): static ones where they said, dynamic ones aligned and inside one of
    // their alloc-ranges.
    for region in dt.reserved_regions().flatten() {
        if let ReservedPlacement::Static(range) = region.placement {
            // A static region wholly outside RAM protects nothing: skipped (and never placed).
            if map.outside_ram(&range) {
                assert!(map.find(region.name).is_none(), "{} lies outside RAM but was reserved", region.name);
                continue;
            }
        }
        let Some(placed) = map.find(region.name) else {
            panic!("{} not in the map", region.name);
        };
        assert_eq!(placed.flags.kind, RegionKind::ReservedMemory(region.kind), "find({}) names another region", region.name);
        assert_eq!((placed.flags.no_map, placed.flags.reusable), (region.no_map, region.reusable), "{}", region.name);
        match region.placement {
            ReservedPlacement::Static(range) => {
                assert!(!placed.flags.dynamic && placed.range == range, "{} not at {range:?}", region.name);
            }
            ReservedPlacement::Dynamic { size, alignment, .. } => {
                let align = alignment.unwrap_or(PAGE_SIZE).max(PAGE_SIZE);
                let windows: Vec<PhysRange> = region.alloc_ranges().collect();
                assert!(placed.flags.dynamic && placed.range.size() == size, "{}: {placed:?}", region.name);
                assert!(
                    placed.range.base() % align == 0 && (windows.is_empty() || windows.iter().any(|w| w.contains(&placed.range))),
                    "{}: placed at {:?}, outside its alignment {align:#x} or alloc-ranges {windows:?}",
                    region.name,
                    placed.range
                );
            }
        }
    }

    // The printed map (the boot log) is built from the same iterators.
    let printed = map.to_string();
    assert!(printed.lines().count() >= reserved.len());
}

fn check_sorted_disjoint(what: &str, ranges: &[PhysRange]) {
    for pair in ranges.windows(2) {
        assert!(pair[0].end() <= pair[1].base(), "{what} ranges overlap or unsorted: {pair:?}");
    }
}
