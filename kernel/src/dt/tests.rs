//! Host tests: every error on a crafted blob (built with `vm-fdt`), and the real QEMU tree.
//!
//! `testdata/qemu-virt.dtb`: `qemu-system-aarch64 -M virt,dumpdtb=virt.dtb -cpu cortex-a57
//! -m 256M` (QEMU 7.2), compacted with `dtc -I dtb -O dtb`. `testdata/qemu-virt-reserved.dtb`:
//! its `dtc -O dts` output with `testdata/reserved-fragment.dtsi` appended, back through `dtc`.

use std::vec::Vec;

use proptest::prelude::*;
use vm_fdt::FdtWriter;

use super::*;
use crate::mm::memblock::PoolKind;
use crate::mm::PhysAddr;

const QEMU_VIRT: &[u8] = include_bytes!("testdata/qemu-virt.dtb");
const QEMU_VIRT_RESERVED: &[u8] = include_bytes!("testdata/qemu-virt-reserved.dtb");

// ---- blob builders -------------------------------------------------------------------------

fn build(f: impl FnOnce(&mut FdtWriter)) -> Vec<u8> {
    let mut w = FdtWriter::new().unwrap();
    let root = w.begin_node("").unwrap();
    f(&mut w);
    w.end_node(root).unwrap();
    w.finish().unwrap()
}

fn node(w: &mut FdtWriter, name: &str, f: impl FnOnce(&mut FdtWriter)) {
    let n = w.begin_node(name).unwrap();
    f(w);
    w.end_node(n).unwrap();
}

fn cells(w: &mut FdtWriter, address: u32, size: u32) {
    w.property_u32("#address-cells", address).unwrap();
    w.property_u32("#size-cells", size).unwrap();
}

/// `reg` (or another tuple property) with 2 address and 2 size cells.
fn reg64(w: &mut FdtWriter, name: &str, entries: &[(u64, u64)]) {
    let flat: Vec<u64> = entries.iter().flat_map(|&(a, s)| [a, s]).collect();
    w.property_array_u64(name, &flat).unwrap();
}

fn strs(w: &mut FdtWriter, name: &str, values: &[&str]) {
    w.property_string_list(name, values.iter().map(|s| s.to_string()).collect()).unwrap();
}

/// Root with 2/2 cells and 256 MiB of RAM at 0x4000_0000.
fn base(w: &mut FdtWriter) {
    cells(w, 2, 2);
    node(w, "memory@40000000", |w| {
        w.property_string("device_type", "memory").unwrap();
        reg64(w, "reg", &[(0x4000_0000, 0x1000_0000)]);
    });
}

/// A `/reserved-memory` node with proper cells and `ranges`, children from `f`.
fn reserved_memory(w: &mut FdtWriter, f: impl FnOnce(&mut FdtWriter)) {
    node(w, "reserved-memory", |w| {
        cells(w, 2, 2);
        w.property_null("ranges").unwrap();
        f(w);
    });
}

fn with_reserved(f: impl FnOnce(&mut FdtWriter)) -> Vec<u8> {
    build(|w| {
        base(w);
        reserved_memory(w, f);
    })
}

fn reserved_of(blob: &[u8]) -> Result<Vec<ReservedRegion<'_>>, DtError<'_>> {
    DeviceTree::new(blob).unwrap().reserved_regions().collect()
}

fn devices_of(blob: &[u8]) -> Result<Vec<Device<'_>>, DtError<'_>> {
    DeviceTree::new(blob).unwrap().devices().collect()
}

fn range(base: u64, size: u64) -> PhysRange {
    PhysRange::new(base, size).unwrap()
}

fn set_be32(blob: &mut [u8], offset: usize, value: u32) {
    blob[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
}

fn be32_at(blob: &[u8], offset: usize) -> u32 {
    u32::from_be_bytes(blob[offset..offset + 4].try_into().unwrap())
}

// ---- header and structure ------------------------------------------------------------------

#[test]
fn blob_size_reads_totalsize_from_the_header_alone() {
    assert_eq!(blob_size(&QEMU_VIRT[..FDT_HEADER_SIZE]), Ok(QEMU_VIRT.len()));
}

#[test]
fn short_header_is_an_error() {
    assert_eq!(blob_size(&QEMU_VIRT[..39]), Err(DtError::HeaderTruncated { len: 39 }));
    assert_eq!(DeviceTree::new(&[]).unwrap_err(), DtError::HeaderTruncated { len: 0 });
}

#[test]
fn bad_magic_is_an_error() {
    let mut blob = QEMU_VIRT.to_vec();
    blob[0] = 0;
    assert_eq!(DeviceTree::new(&blob).unwrap_err(), DtError::BadMagic { found: 0x000d_feed });
}

#[test]
fn totalsize_larger_than_the_slice_is_an_error() {
    let short = &QEMU_VIRT[..QEMU_VIRT.len() - 1];
    assert_eq!(DeviceTree::new(short).unwrap_err(), DtError::BlobTruncated { totalsize: QEMU_VIRT.len(), available: QEMU_VIRT.len() - 1 });
}

#[test]
fn trailing_bytes_after_totalsize_are_ignored() {
    let mut blob = QEMU_VIRT.to_vec();
    blob.extend_from_slice(&[0xff; 64]);
    assert_eq!(DeviceTree::new(&blob).unwrap().total_size(), QEMU_VIRT.len());
}

#[test]
fn block_offsets_outside_totalsize_are_errors() {
    for (field, block) in [(8, "structure"), (12, "strings"), (16, "memory reservation")] {
        let mut blob = QEMU_VIRT.to_vec();
        set_be32(&mut blob, field, QEMU_VIRT.len() as u32 - 4);
        assert_eq!(DeviceTree::new(&blob).unwrap_err(), DtError::BlockOutOfRange { block });
    }
    // A size that pushes the block past the end.
    let mut blob = QEMU_VIRT.to_vec();
    set_be32(&mut blob, 36, 0xffff_fff0);
    assert_eq!(DeviceTree::new(&blob).unwrap_err(), DtError::BlockOutOfRange { block: "structure" });
}

#[test]
fn old_versions_are_refused() {
    let mut blob = QEMU_VIRT.to_vec();
    set_be32(&mut blob, 20, 16);
    assert_eq!(DeviceTree::new(&blob).unwrap_err(), DtError::UnsupportedVersion { version: 16 });
}

#[test]
fn nops_left_by_libfdt_are_stripped_before_parsing() {
    // Turn the root's first property (as libfdt's fdt_nop_property does) into NOP tokens.
    let mut blob = QEMU_VIRT.to_vec();
    let off_struct = be32_at(&blob, 8) as usize;
    let prop = off_struct + 8;
    let words = (12 + (be32_at(&blob, prop + 4) as usize).next_multiple_of(4)) / 4;
    for w in 0..words {
        blob[prop + 4 * w..prop + 4 * w + 4].copy_from_slice(&4u32.to_be_bytes());
    }
    assert!(matches!(DeviceTree::new(&blob), Err(DtError::MalformedStructure { .. })));
    assert_eq!(strip_nops(&mut blob), Ok(words));
    let stripped = DeviceTree::new(&blob).expect("valid after stripping");
    let original = DeviceTree::new(QEMU_VIRT).unwrap();
    assert_eq!(stripped.devices().count(), original.devices().count());
    assert_eq!(stripped.memory_banks().count(), 1);
    // Idempotent, and harmless on a blob without NOPs.
    assert_eq!(strip_nops(&mut blob), Ok(0));
    let mut clean = QEMU_VIRT.to_vec();
    assert_eq!(strip_nops(&mut clean), Ok(0));
    assert_eq!(clean, QEMU_VIRT);
    // Garbage is an error, not a panic.
    let mut truncated = QEMU_VIRT[..200].to_vec();
    assert!(strip_nops(&mut truncated).is_err());
}

#[test]
fn corrupt_structure_blocks_are_errors() {
    let off_struct = be32_at(QEMU_VIRT, 8) as usize;
    // First property of the root: token at +8 (after BEGIN_NODE and the empty name).
    let prop = off_struct + 8;
    assert_eq!(be32_at(QEMU_VIRT, prop), 3);
    let cases: [(usize, u32, &str); 4] = [
        (prop + 4, 0x00ff_ffff, "property value past the structure block"),
        (prop + 8, 0x00ff_ffff, "bad name offset"),
        (prop, 4, "FDT_NOP tokens are not supported"),
        (prop, 7, "unknown token"),
    ];
    for (offset, value, reason) in cases {
        let mut blob = QEMU_VIRT.to_vec();
        set_be32(&mut blob, offset, value);
        match DeviceTree::new(&blob) {
            Err(DtError::MalformedStructure { reason: r, .. }) => assert_eq!(r, reason),
            other => panic!("{reason}: got {other:?}"),
        }
    }
    // Cut the structure block short: no FDT_END.
    let mut blob = QEMU_VIRT.to_vec();
    set_be32(&mut blob, 36, 64);
    assert!(matches!(DeviceTree::new(&blob), Err(DtError::MalformedStructure { .. })));
}

#[test]
fn nesting_deeper_than_the_walk_is_refused() {
    fn nest(w: &mut FdtWriter, depth: usize) {
        if depth > 0 {
            node(w, "n", |w| nest(w, depth - 1));
        }
    }
    let ok = build(|w| nest(w, MAX_DEPTH - 1));
    assert!(DeviceTree::new(&ok).unwrap().devices().all(|d| d.is_ok()));
    let deep = build(|w| nest(w, MAX_DEPTH));
    assert!(matches!(DeviceTree::new(&deep), Err(DtError::MalformedStructure { reason: "nodes nested too deeply", .. })));
}

proptest! {
    // No regression files: they would land outside `dt/`.
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]
    /// Whatever the bytes, every entry point returns instead of panicking.
    #[test]
    fn corrupted_blobs_never_panic(
        flips in proptest::collection::vec((0usize..8016, any::<u8>()), 1..6),
        cut in 0usize..8100,
    ) {
        let mut blob = QEMU_VIRT_RESERVED.to_vec();
        for (at, byte) in flips {
            if at < blob.len() { blob[at] = byte; }
        }
        blob.truncate(cut.max(1));
        let _ = blob_size(&blob);
        if let Ok(dt) = DeviceTree::new(&blob) {
            let _ = dt.memory_banks().count();
            let _ = dt.reserved_regions().count();
            let _ = dt.devices().count();
            let _ = (dt.bootargs(), dt.stdout(), dt.gic(), dt.arch_timer(), dt.psci_method());
            let _ = dt.smallest_dma_limit();
            let _ = dt.memreserve_entries().count();
            let _ = build_memblock(
                &dt, range(0x4020_0000, 0x10_0000), range(0x4000_0000, 0x2000));
        }
    }
}

// ---- cells and reg -------------------------------------------------------------------------

fn soc(parent_cells: impl FnOnce(&mut FdtWriter), child: impl FnOnce(&mut FdtWriter)) -> Vec<u8> {
    build(|w| {
        base(w);
        node(w, "soc", |w| {
            parent_cells(w);
            w.property_null("ranges").unwrap();
            node(w, "uart@1000", child);
        });
    })
}

#[test]
fn missing_address_cells_on_the_parent_is_an_error() {
    let blob = soc(|w| w.property_u32("#size-cells", 1).unwrap(), |w| w.property_array_u32("reg", &[0x1000, 0x100]).unwrap());
    assert_eq!(devices_of(&blob).unwrap_err(), DtError::MissingAddressCells { node: "soc" });
}

#[test]
fn missing_size_cells_on_the_parent_is_an_error() {
    let blob = soc(|w| w.property_u32("#address-cells", 1).unwrap(), |w| w.property_array_u32("reg", &[0x1000, 0x100]).unwrap());
    assert_eq!(devices_of(&blob).unwrap_err(), DtError::MissingSizeCells { node: "soc" });
}

#[test]
fn missing_cells_on_the_root_is_an_error_for_memory() {
    let blob = build(|w| {
        node(w, "memory@0", |w| {
            w.property_string("device_type", "memory").unwrap();
            w.property_array_u32("reg", &[0, 0x1000]).unwrap();
        })
    });
    let dt = DeviceTree::new(&blob).unwrap();
    let banks: Result<Vec<_>, _> = dt.memory_banks().collect();
    assert_eq!(banks.unwrap_err(), DtError::MissingAddressCells { node: "/" });
}

#[test]
fn cells_other_than_one_or_two_are_errors() {
    let blob = soc(|w| cells(w, 3, 1), |w| w.property_array_u32("reg", &[0, 0, 0x1000, 0x100]).unwrap());
    assert_eq!(devices_of(&blob).unwrap_err(), DtError::UnsupportedCells { node: "soc", property: "#address-cells", cells: 3 });
    let blob = soc(|w| cells(w, 1, 0), |w| w.property_array_u32("reg", &[0x1000]).unwrap());
    assert_eq!(devices_of(&blob).unwrap_err(), DtError::UnsupportedCells { node: "soc", property: "#size-cells", cells: 0 });
}

#[test]
fn reg_length_not_a_multiple_of_the_entry_is_an_error() {
    let blob = soc(|w| cells(w, 1, 1), |w| w.property_array_u32("reg", &[0x1000, 0x100, 0x2000]).unwrap());
    assert_eq!(devices_of(&blob).unwrap_err(), DtError::BadPropertyLength { node: "uart@1000", property: "reg", len: 12 });
}

#[test]
fn reg_that_overflows_is_an_error() {
    let blob = build(|w| {
        base(w);
        node(w, "big@0", |w| reg64(w, "reg", &[(u64::MAX - 0xff, 0x200)]));
    });
    assert_eq!(devices_of(&blob).unwrap_err(), DtError::RegionOverflow { node: "big@0" });
}

#[test]
fn more_reg_entries_than_a_device_holds_is_an_error() {
    let blob = build(|w| {
        base(w);
        let entries: Vec<_> = (0..=MAX_REGS as u64).map(|i| (i * 0x1000, 0x1000)).collect();
        node(w, "many@0", |w| reg64(w, "reg", &entries));
    });
    assert_eq!(devices_of(&blob).unwrap_err(), DtError::TooManyRegs { node: "many@0" });
}

#[test]
fn string_properties_must_be_terminated_utf8() {
    let blob = build(|w| {
        base(w);
        node(w, "chosen", |w| w.property("bootargs", b"no-nul").unwrap());
        node(w, "dev@0", |w| {
            w.property("compatible", b"a\0\xff\0").unwrap();
            reg64(w, "reg", &[(0, 0x10)]);
        });
    });
    let dt = DeviceTree::new(&blob).unwrap();
    assert_eq!(dt.bootargs(), Err(DtError::BadString { node: "chosen", property: "bootargs" }));
    assert_eq!(dt.devices().next().unwrap(), Err(DtError::BadString { node: "dev@0", property: "compatible" }));
}

// ---- memory --------------------------------------------------------------------------------

#[test]
fn several_memory_nodes_with_several_entries_are_all_banks() {
    let blob = build(|w| {
        cells(w, 2, 2);
        node(w, "memory@40000000", |w| {
            w.property_string("device_type", "memory").unwrap();
            reg64(w, "reg", &[(0x4000_0000, 0x1000_0000), (0x6000_0000, 0), (0x8000_0000, 0x100_0000)]);
        });
        node(w, "memory@100000000", |w| {
            w.property_string("device_type", "memory").unwrap();
            reg64(w, "reg", &[(0x1_0000_0000, 0x4000_0000)]);
        });
        node(w, "memory@200000000", |w| {
            w.property_string("device_type", "memory").unwrap();
            w.property_string("status", "disabled").unwrap();
            reg64(w, "reg", &[(0x2_0000_0000, 0x4000_0000)]);
        });
        node(w, "notmemory@0", |w| reg64(w, "reg", &[(0, 0x1000)]));
    });
    let dt = DeviceTree::new(&blob).unwrap();
    let banks: Vec<_> = dt.memory_banks().collect::<Result<_, _>>().unwrap();
    assert_eq!(banks, [range(0x4000_0000, 0x1000_0000), range(0x8000_0000, 0x100_0000), range(0x1_0000_0000, 0x4000_0000)]);
}

#[test]
fn memory_node_without_reg_is_an_error() {
    let blob = build(|w| {
        cells(w, 2, 2);
        node(w, "memory", |w| w.property_string("device_type", "memory").unwrap());
    });
    let dt = DeviceTree::new(&blob).unwrap();
    assert_eq!(dt.memory_banks().next(), Some(Err(DtError::MissingReg { node: "memory" })));
    assert_eq!(dt.memory_banks().count(), 1, "iteration stops after an error");
}

// ---- chosen --------------------------------------------------------------------------------

fn with_uart(chosen: impl FnOnce(&mut FdtWriter)) -> Vec<u8> {
    build(|w| {
        base(w);
        node(w, "aliases", |w| w.property_string("serial0", "/soc/serial@1000").unwrap());
        node(w, "chosen", chosen);
        node(w, "soc", |w| {
            cells(w, 1, 1);
            w.property_array_u32("ranges", &[0, 0, 0x900_0000, 0x10_0000]).unwrap();
            node(w, "serial@1000", |w| {
                strs(w, "compatible", &["arm,pl011", "arm,primecell"]);
                w.property_array_u32("reg", &[0x1000, 0x1000]).unwrap();
            });
        });
    })
}

#[test]
fn bootargs_and_stdout_by_alias_with_options() {
    let blob = with_uart(|w| {
        w.property_string("bootargs", "console=ttyAMA0 swiotlb=64").unwrap();
        w.property_string("stdout-path", "serial0:115200n8").unwrap();
    });
    let dt = DeviceTree::new(&blob).unwrap();
    assert_eq!(dt.bootargs(), Ok(Some("console=ttyAMA0 swiotlb=64")));
    assert_eq!(dt.stdout_path(), Ok(Some("serial0")));
    let uart = dt.stdout().unwrap().unwrap();
    assert_eq!(uart.name(), "serial@1000");
    assert_eq!(uart.regs(), [range(0x900_1000, 0x1000)], "translated through /soc ranges");
    assert_eq!(uart.compatible().iter().collect::<Vec<_>>(), ["arm,pl011", "arm,primecell"]);
}

#[test]
fn stdout_by_full_path_and_base_name() {
    let blob = with_uart(|w| w.property_string("stdout-path", "/soc/serial").unwrap());
    let dt = DeviceTree::new(&blob).unwrap();
    assert_eq!(dt.bootargs(), Ok(None));
    assert_eq!(dt.stdout().unwrap().unwrap().name(), "serial@1000");
}

#[test]
fn unresolvable_stdout_is_an_error() {
    for path in ["serial1", "/soc/serial@2000", "/soc/serial@1000/extra"] {
        let blob = with_uart(|w| w.property_string("stdout-path", path).unwrap());
        let dt = DeviceTree::new(&blob).unwrap();
        assert_eq!(dt.stdout(), Err(DtError::StdoutNotFound { path }), "{path}");
    }
    let blob = build(base);
    assert_eq!(DeviceTree::new(&blob).unwrap().stdout(), Ok(None), "no /chosen");
}

// ---- reserved-memory -----------------------------------------------------------------------

#[test]
fn reserved_regions_decode_and_classify() {
    let blob = with_reserved(|w| {
        node(w, "bounce@48000000", |w| {
            strs(w, "compatible", &["vendor,special", COMPATIBLE_RESTRICTED_DMA_POOL]);
            reg64(w, "reg", &[(0x4800_0000, 0x40_0000)]);
            w.property_phandle(7).unwrap();
        });
        node(w, "swiotlb", |w| {
            strs(w, "compatible", &[COMPATIBLE_SWIOTLB_POOL]);
            w.property_u64("size", 0x80_0000).unwrap();
            w.property_u64("alignment", 0x20_0000).unwrap();
            reg64(w, "alloc-ranges", &[(0x4000_0000, 0x800_0000), (0x4c00_0000, 0x100_0000)]);
            w.property_null("no-map").unwrap();
        });
        node(w, "cma", |w| {
            strs(w, "compatible", &[COMPATIBLE_SHARED_DMA_POOL]);
            w.property_u64("size", 0x10_0000).unwrap();
            w.property_null("reusable").unwrap();
        });
        node(w, "fw@4f000000", |w| reg64(w, "reg", &[(0x4f00_0000, 0x1000)]));
        node(w, "off@4e000000", |w| {
            w.property_string("status", "disabled").unwrap();
            reg64(w, "reg", &[(0x4e00_0000, 0)]);
        });
    });
    let regions = reserved_of(&blob).unwrap();
    assert_eq!(regions.len(), 4, "disabled child skipped");
    let [bounce, swiotlb, cma, fw] = regions.as_slice() else { unreachable!() };
    assert_eq!(bounce.kind, PoolKind::RestrictedDma);
    assert_eq!(bounce.compatible.first(), Some("vendor,special"));
    assert_eq!(bounce.placement, ReservedPlacement::Static(range(0x4800_0000, 0x40_0000)));
    assert_eq!(bounce.phandle, Some(7));
    assert_eq!(swiotlb.kind, PoolKind::Swiotlb);
    assert!(swiotlb.no_map && !swiotlb.reusable);
    assert!(matches!(swiotlb.placement, ReservedPlacement::Dynamic { size: 0x80_0000, alignment: Some(0x20_0000), .. }));
    assert_eq!(swiotlb.alloc_ranges().collect::<Vec<_>>(), [range(0x4000_0000, 0x800_0000), range(0x4c00_0000, 0x100_0000)]);
    assert_eq!((cma.kind, cma.reusable), (PoolKind::SharedDma, true));
    assert_eq!(fw.kind, PoolKind::Other);
    assert!(fw.compatible.is_empty() && fw.alloc_ranges().next().is_none());
}

fn one_reserved(f: impl FnOnce(&mut FdtWriter)) -> Result<Vec<ReservedRegion<'static>>, DtError<'static>> {
    let blob: &'static [u8] = with_reserved(|w| node(w, "r@0", f)).leak();
    reserved_of(blob)
}

#[test]
fn zero_size_reserved_regions_are_errors() {
    let e = DtError::ReservedZeroSize { node: "r@0" };
    assert_eq!(one_reserved(|w| reg64(w, "reg", &[(0x4800_0000, 0)])), Err(e));
    assert_eq!(one_reserved(|w| w.property_u64("size", 0).unwrap()), Err(e));
}

#[test]
fn no_map_and_reusable_together_is_an_error() {
    let got = one_reserved(|w| {
        w.property_u64("size", 0x1000).unwrap();
        w.property_null("no-map").unwrap();
        w.property_null("reusable").unwrap();
    });
    assert_eq!(got, Err(DtError::NoMapAndReusable { node: "r@0" }));
}

#[test]
fn restricted_dma_pool_must_not_be_reusable_or_no_map() {
    for flag in ["reusable", "no-map"] {
        let got = one_reserved(|w| {
            strs(w, "compatible", &[COMPATIBLE_RESTRICTED_DMA_POOL]);
            w.property_u64("size", 0x1000).unwrap();
            w.property_null(flag).unwrap();
        });
        assert_eq!(got, Err(DtError::RestrictedPoolFlag { node: "r@0", flag }));
    }
}

#[test]
fn alignment_must_be_a_power_of_two() {
    for alignment in [0, 0x3000] {
        let got = one_reserved(|w| {
            w.property_u64("size", 0x1000).unwrap();
            w.property_u64("alignment", alignment).unwrap();
        });
        assert_eq!(got, Err(DtError::BadAlignment { node: "r@0", alignment }));
    }
}

#[test]
fn reserved_memory_needs_cells_and_empty_ranges() {
    let mk = |cells_f: fn(&mut FdtWriter), ranges: Option<&[u32]>| {
        let blob: &'static [u8] = build(|w| {
            base(w);
            node(w, "reserved-memory", |w| {
                cells_f(w);
                match ranges {
                    Some([]) => w.property_null("ranges").unwrap(),
                    Some(r) => w.property_array_u32("ranges", r).unwrap(),
                    None => {}
                }
                node(w, "r@0", |w| w.property_array_u32("reg", &[0x4800_0000, 0x1000]).unwrap());
            });
        })
        .leak();
        reserved_of(blob)
    };
    let node = "reserved-memory";
    assert_eq!(mk(|w| w.property_u32("#size-cells", 1).unwrap(), Some(&[])), Err(DtError::MissingAddressCells { node }));
    assert_eq!(mk(|w| w.property_u32("#address-cells", 1).unwrap(), Some(&[])), Err(DtError::MissingSizeCells { node }));
    assert_eq!(mk(|w| cells(w, 1, 1), None), Err(DtError::ReservedMemoryRanges { node }));
    assert_eq!(mk(|w| cells(w, 1, 1), Some(&[0, 0, 0, 0x1000])), Err(DtError::ReservedMemoryRanges { node }));
    assert_eq!(mk(|w| cells(w, 1, 1), Some(&[])).unwrap()[0].placement, ReservedPlacement::Static(range(0x4800_0000, 0x1000)));
}

#[test]
fn reserved_size_cells_that_overflow_are_errors() {
    // Three size cells would need 96-bit sizes.
    let blob: &'static [u8] = build(|w| {
        base(w);
        node(w, "reserved-memory", |w| {
            cells(w, 2, 3);
            w.property_null("ranges").unwrap();
        });
    })
    .leak();
    assert_eq!(reserved_of(blob), Err(DtError::UnsupportedCells { node: "reserved-memory", property: "#size-cells", cells: 3 }));
    // A size that runs past 2^64.
    assert_eq!(one_reserved(|w| reg64(w, "reg", &[(0xffff_ffff_ffff_0000, 0x1_0000)])), Err(DtError::RegionOverflow { node: "r@0" }));
    // `size` of the wrong width for #size-cells = 2.
    assert_eq!(
        one_reserved(|w| w.property_u32("size", 0x1000).unwrap()),
        Err(DtError::BadPropertyLength { node: "r@0", property: "size", len: 4 })
    );
    // alloc-ranges that overflow.
    assert_eq!(
        one_reserved(|w| {
            w.property_u64("size", 0x1000).unwrap();
            reg64(w, "alloc-ranges", &[(u64::MAX, 2)]);
        }),
        Err(DtError::RegionOverflow { node: "r@0" })
    );
}

#[test]
fn reserved_child_without_reg_or_size_is_an_error() {
    assert_eq!(one_reserved(|w| w.property_null("no-map").unwrap()), Err(DtError::ReservedNoRegOrSize { node: "r@0" }));
}

// ---- devices, translation, DMA -------------------------------------------------------------

#[test]
fn simple_bus_ranges_translate_nested_addresses() {
    let blob = build(|w| {
        base(w);
        node(w, "soc", |w| {
            cells(w, 1, 1);
            strs(w, "compatible", &["simple-bus"]);
            w.property_array_u32("ranges", &[0x0, 0x0, 0x1000_0000, 0x10_0000, 0x8000_0000, 0x1, 0x0, 0x1000]).unwrap();
            node(w, "bridge@80000", |w| {
                cells(w, 1, 1);
                w.property_array_u32("reg", &[0x8_0000, 0x100]).unwrap();
                w.property_array_u32("ranges", &[0x0, 0x8_0000, 0x1_0000]).unwrap();
                node(w, "dev@200", |w| w.property_array_u32("reg", &[0x200, 0x10]).unwrap());
            });
            node(w, "hi@80000000", |w| w.property_array_u32("reg", &[0x8000_0000, 0x1000]).unwrap());
        });
    });
    let devices = devices_of(&blob).unwrap();
    let regs: Vec<_> = devices.iter().map(|d| (d.name(), d.regs()[0])).collect();
    assert_eq!(
        regs,
        [("bridge@80000", range(0x1008_0000, 0x100)), ("dev@200", range(0x1008_0200, 0x10)), ("hi@80000000", range(0x1_0000_0000, 0x1000)),]
    );
}

#[test]
fn untranslatable_addresses_are_errors() {
    // A bus without `ranges`: its children are not memory-mapped.
    let blob = build(|w| {
        base(w);
        node(w, "i2c@0", |w| {
            cells(w, 1, 1);
            reg64(w, "reg", &[(0x100_0000, 0x1000)]);
            node(w, "eeprom@50", |w| w.property_array_u32("reg", &[0x50, 1]).unwrap());
        });
    });
    let dt = DeviceTree::new(&blob).unwrap();
    let mut it = dt.devices();
    assert!(it.next().unwrap().is_ok());
    assert_eq!(it.next().unwrap(), Err(DtError::Untranslatable { node: "eeprom@50", bus: "i2c@0" }));
    // An address outside every window.
    let blob = soc(
        |w| {
            cells(w, 1, 1);
        },
        |w| w.property_array_u32("reg", &[0x1000, 0x100]).unwrap(),
    );
    assert!(devices_of(&blob).is_ok(), "empty ranges is identity");
    let blob = build(|w| {
        base(w);
        node(w, "soc", |w| {
            cells(w, 1, 1);
            w.property_array_u32("ranges", &[0, 0, 0x1000_0000, 0x1000]).unwrap();
            node(w, "dev@800", |w| w.property_array_u32("reg", &[0x800, 0x1000]).unwrap());
        });
    });
    assert_eq!(devices_of(&blob).unwrap_err(), DtError::Untranslatable { node: "dev@800", bus: "soc" });
}

fn dma_tree(outer: Option<&[u32]>, inner: Option<&[u32]>) -> Vec<u8> {
    build(|w| {
        base(w);
        node(w, "soc", |w| {
            cells(w, 1, 1);
            w.property_null("ranges").unwrap();
            match outer {
                Some([]) => w.property_null("dma-ranges").unwrap(),
                Some(r) => w.property_array_u32("dma-ranges", r).unwrap(),
                None => {}
            }
            w.property_null("dma-coherent").unwrap();
            node(w, "bus@0", |w| {
                cells(w, 1, 1);
                w.property_null("ranges").unwrap();
                match inner {
                    Some([]) => w.property_null("dma-ranges").unwrap(),
                    Some(r) => w.property_array_u32("dma-ranges", r).unwrap(),
                    None => {}
                }
                node(w, "dev@1000", |w| w.property_array_u32("reg", &[0x1000, 0x100]).unwrap());
            });
        });
        node(w, "top@2000", |w| reg64(w, "reg", &[(0x2000, 0x100)]));
    })
}

fn dev_limit(blob: &[u8]) -> Option<PhysAddr> {
    let devices = devices_of(blob).unwrap();
    devices.iter().find(|d| d.name() == "dev@1000").unwrap().dma_limit()
}

#[test]
fn dma_limit_is_the_smallest_window_end_among_ancestors() {
    // soc (1 child, 2 parent, 1 size cells): bus address 0 → CPU 0x4000_0000, 1 GiB.
    // bus@0 (1, 1, 1): a 16 MiB identity window.
    let outer: &[u32] = &[0x0, 0x0, 0x4000_0000, 0x4000_0000];
    let inner: &[u32] = &[0x4000_0000, 0x4000_0000, 0x100_0000];
    assert_eq!(dev_limit(&dma_tree(Some(outer), None)), Some(0x7fff_ffff));
    assert_eq!(dev_limit(&dma_tree(Some(outer), Some(inner))), Some(0x40ff_ffff));
    assert_eq!(dev_limit(&dma_tree(Some(&[]), Some(inner))), Some(0x40ff_ffff));
    assert_eq!(dev_limit(&dma_tree(Some(&[]), Some(&[]))), None, "empty is identity");
    assert_eq!(dev_limit(&dma_tree(None, None)), None, "absent everywhere: no limit");
    // Two windows on one bus: the bus reaches up to the higher one.
    let two: &[u32] = &[0x0, 0x0, 0x4000_0000, 0x1000, 0x8000_0000, 0x0, 0x8000_0000, 0x1000_0000];
    assert_eq!(dev_limit(&dma_tree(Some(two), None)), Some(0x8fff_ffff));

    let dt_blob = dma_tree(Some(outer), Some(inner));
    let dt = DeviceTree::new(&dt_blob).unwrap();
    assert_eq!(dt.smallest_dma_limit(), Ok(Some(0x40ff_ffff)));
    let top = dt.devices().map(Result::unwrap).find(|d| d.name() == "top@2000").unwrap();
    assert_eq!(top.dma_limit(), None, "a root device has no dma-ranges above it");
    assert!(!top.dma_coherent());
    let dev = dt.devices().map(Result::unwrap).find(|d| d.name() == "dev@1000").unwrap();
    assert!(dev.dma_coherent(), "inherited from soc, like of_dma_is_coherent()");
}

#[test]
fn root_dma_ranges_limit_every_device() {
    // QEMU virt's devices sit on the root bus: a board-wide DMA window goes on the root.
    let blob = build(|w| {
        cells(w, 2, 2);
        w.property_array_u32("dma-ranges", &[0x0, 0x4000_0000, 0x0, 0x4000_0000, 0x0, 0x1800_0000]).unwrap();
        node(w, "virtio@a000000", |w| reg64(w, "reg", &[(0x0a00_0000, 0x200)]));
    });
    let dt = DeviceTree::new(&blob).unwrap();
    assert_eq!(dt.smallest_dma_limit(), Ok(Some(0x57ff_ffff)));
    let dev = dt.devices().map(Result::unwrap).find(|d| d.name() == "virtio@a000000").unwrap();
    assert_eq!(dev.dma_limit(), Some(0x57ff_ffff));
    assert!(dev.dma_reaches(range(0x4a00_0000, 0x40_0000)));
    assert!(dev.dma_reaches(range(0x57c0_0000, 0x40_0000)), "up to the window's last byte");
    assert!(!dev.dma_reaches(range(0x57c0_0000, 0x40_0001)), "one byte past the window");
    assert!(!dev.dma_reaches(range(0x5c00_0000, 0x40_0000)));
}

#[test]
fn malformed_dma_ranges_are_errors() {
    let blob = dma_tree(Some(&[0x0, 0x4000_0000]), None);
    assert_eq!(devices_of(&blob).unwrap_err(), DtError::BadPropertyLength { node: "soc", property: "dma-ranges", len: 8 });
    let blob = dma_tree(Some(&[0x0, 0x0, 0x4000_0000, 0x0]), None);
    assert_eq!(devices_of(&blob).unwrap_err(), DtError::BadValue { node: "soc", property: "dma-ranges" });
}

fn irq_tree(interrupts: &[u32], gic_cells: u32) -> Vec<u8> {
    build(|w| {
        w.property_u32("interrupt-parent", 1).unwrap();
        base(w);
        node(w, "intc@8000000", |w| {
            strs(w, "compatible", &["arm,gic-400"]);
            w.property_u32("#interrupt-cells", gic_cells).unwrap();
            w.property_null("interrupt-controller").unwrap();
            reg64(w, "reg", &[(0x800_0000, 0x1_0000), (0x801_0000, 0x1_0000)]);
            w.property_phandle(1).unwrap();
        });
        node(w, "uart@9000000", |w| {
            reg64(w, "reg", &[(0x900_0000, 0x1000)]);
            w.property_array_u32("interrupts", interrupts).unwrap();
        });
    })
}

#[test]
fn gic_interrupts_decode_with_the_parent_found_through_the_root() {
    let blob = irq_tree(&[0, 1, 4, 1, 11, 0x104], 3);
    let devices = devices_of(&blob).unwrap();
    let uart = devices.iter().find(|d| d.name() == "uart@9000000").unwrap();
    assert_eq!(uart.interrupt_parent_cells(), Some(3));
    let irqs: Vec<_> = uart.gic_interrupts().unwrap().collect();
    assert_eq!(
        irqs,
        [
            GicInterrupt { kind: GicInterruptKind::Spi, number: 1, flags: 4 },
            GicInterrupt { kind: GicInterruptKind::Ppi, number: 11, flags: 0x104 },
        ]
    );
    assert_eq!((irqs[0].intid(), irqs[1].intid()), (33, 27));
    assert!(irqs[0].is_level());
    let dt = DeviceTree::new(&blob).unwrap();
    assert_eq!(dt.gic(), Ok(Gic::V2 { distributor: range(0x800_0000, 0x1_0000), cpu_interface: range(0x801_0000, 0x1_0000) }));
}

#[test]
fn bad_gic_interrupts_are_errors() {
    let blob = irq_tree(&[2, 1, 4], 3);
    let devices = devices_of(&blob).unwrap();
    let uart = devices.iter().find(|d| d.name() == "uart@9000000").unwrap();
    assert!(matches!(uart.gic_interrupts(), Err(DtError::BadInterrupt { node: "uart@9000000", .. })));

    let blob = irq_tree(&[0, 1], 3);
    let devices = devices_of(&blob).unwrap();
    let uart = devices.iter().find(|d| d.name() == "uart@9000000").unwrap();
    assert!(matches!(uart.gic_interrupts(), Err(DtError::BadPropertyLength { property: "interrupts", .. })));

    let blob = irq_tree(&[5], 1);
    let devices = devices_of(&blob).unwrap();
    let uart = devices.iter().find(|d| d.name() == "uart@9000000").unwrap();
    assert_eq!(uart.interrupt_cells().collect::<Vec<_>>(), [5]);
    assert!(matches!(uart.gic_interrupts(), Err(DtError::BadInterrupt { .. })));
}

#[test]
fn interrupt_parent_phandle_must_exist() {
    let blob = build(|w| {
        base(w);
        node(w, "dev@0", |w| {
            reg64(w, "reg", &[(0, 0x10)]);
            w.property_u32("interrupt-parent", 99).unwrap();
            w.property_array_u32("interrupts", &[0, 1, 4]).unwrap();
        });
    });
    assert_eq!(devices_of(&blob).unwrap_err(), DtError::UnknownPhandle { node: "dev@0", property: "interrupt-parent", phandle: 99 });
}

#[test]
fn memory_region_is_looked_up_in_reserved_memory() {
    let mk = |phandle: u32| {
        build(|w| {
            base(w);
            reserved_memory(w, |w| {
                node(w, "pool@48000000", |w| {
                    reg64(w, "reg", &[(0x4800_0000, 0x10_0000)]);
                    w.property_phandle(5).unwrap();
                });
            });
            node(w, "other@0", |w| {
                reg64(w, "reg", &[(0, 0x10)]);
                w.property_phandle(6).unwrap();
            });
            node(w, "dev@1000", |w| {
                reg64(w, "reg", &[(0x1000, 0x10)]);
                w.property_u32("memory-region", phandle).unwrap();
            });
        })
    };
    let blob = mk(5);
    let devices = devices_of(&blob).unwrap();
    let dev = devices.iter().find(|d| d.name() == "dev@1000").unwrap();
    assert_eq!(dev.memory_region_phandles().collect::<Vec<_>>(), [5]);
    let dt = DeviceTree::new(&blob).unwrap();
    assert_eq!(dt.reserved_by_phandle(5).unwrap().unwrap().name, "pool@48000000");
    // A phandle naming a node outside /reserved-memory, or no node: the device still decodes
    // (its registers get mapped) and the lookup its DMA configuration makes finds nothing, so
    // only that device fails to probe.
    for phandle in [6, 7] {
        let blob = mk(phandle);
        let devices = devices_of(&blob).unwrap();
        let dev = devices.iter().find(|d| d.name() == "dev@1000").unwrap();
        assert_eq!(dev.regs()[0].base(), 0x1000);
        assert_eq!(dev.memory_region_phandles().collect::<Vec<_>>(), [phandle]);
        let dt = DeviceTree::new(&blob).unwrap();
        assert_eq!(dt.reserved_by_phandle(phandle), Ok(None));
    }
}

#[test]
fn helpers_report_missing_nodes() {
    let blob = build(base);
    let dt = DeviceTree::new(&blob).unwrap();
    assert_eq!(dt.gic(), Err(DtError::NotFound { what: "GIC node" }));
    assert_eq!(dt.arch_timer(), Err(DtError::NotFound { what: "architected timer node" }));
    assert_eq!(dt.psci_method(), Err(DtError::NotFound { what: "PSCI node" }));
    let blob = build(|w| {
        base(w);
        node(w, "psci", |w| {
            strs(w, "compatible", &["arm,psci-0.2"]);
            w.property_string("method", "svc").unwrap();
        });
    });
    let dt = DeviceTree::new(&blob).unwrap();
    assert_eq!(dt.psci_method(), Err(DtError::BadValue { node: "psci", property: "method" }));
}

#[test]
fn error_messages_name_the_node() {
    let e = DtError::MissingAddressCells { node: "soc" };
    assert_eq!(e.to_string(), "soc: missing #address-cells, needed to decode its children's reg");
    let e = DtError::UnknownPhandle { node: "virtio@0", property: "memory-region", phandle: 3 };
    assert!(e.to_string().contains("virtio@0") && e.to_string().contains("memory-region"));
}

// ---- the real QEMU tree --------------------------------------------------------------------

#[test]
fn qemu_virt_memory_chosen_and_boot_helpers() {
    let dt = DeviceTree::new(QEMU_VIRT).unwrap();
    let banks: Vec<_> = dt.memory_banks().collect::<Result<_, _>>().unwrap();
    assert_eq!(banks, [range(0x4000_0000, 0x1000_0000)]);
    assert_eq!(dt.bootargs(), Ok(None));
    let uart = dt.stdout().unwrap().unwrap();
    assert_eq!(uart.name(), "pl011@9000000");
    assert_eq!(uart.regs(), [range(0x900_0000, 0x1000)]);
    assert_eq!(uart.compatible().first(), Some("arm,pl011"));
    assert_eq!(dt.gic(), Ok(Gic::V2 { distributor: range(0x800_0000, 0x1_0000), cpu_interface: range(0x801_0000, 0x1_0000) }));
    let timer = dt.arch_timer().unwrap();
    assert_eq!((timer.virt.kind, timer.virt.number, timer.virt.intid()), (GicInterruptKind::Ppi, 11, 27));
    assert_eq!(timer.nonsecure_phys.intid(), 30);
    assert_eq!(dt.psci_method(), Ok(PsciMethod::Hvc));
    assert_eq!(dt.smallest_dma_limit(), Ok(None));
    assert_eq!(dt.memreserve_entries().count(), 0);
}

#[test]
fn qemu_virt_devices() {
    let dt = DeviceTree::new(QEMU_VIRT).unwrap();
    let devices: Vec<_> = dt.devices().collect::<Result<_, _>>().unwrap();
    let names: Vec<_> = devices.iter().map(|d| d.name()).collect();
    assert!(names.contains(&"v2m@8020000"), "child of the GIC, through `ranges;`");
    assert!(names.contains(&"pcie@10000000"));
    for excluded in ["memory@40000000", "cpu@0", "platform-bus@c000000", "timer", "chosen"] {
        assert!(!names.contains(&excluded), "{excluded}");
    }
    let flash = devices.iter().find(|d| d.name() == "flash@0").unwrap();
    assert_eq!(flash.regs(), [range(0, 0x400_0000), range(0x400_0000, 0x400_0000)]);

    let virtio: Vec<_> = dt.virtio_mmio_devices().collect::<Result<_, _>>().unwrap();
    assert_eq!(virtio.len(), 32);
    let mut spis: Vec<_> = virtio
        .iter()
        .map(|d| {
            assert!(d.dma_coherent() && d.dma_limit().is_none());
            assert_eq!(d.regs()[0].size(), 0x200);
            let irq = d.gic_interrupts().unwrap().next().unwrap();
            assert_eq!(irq.kind, GicInterruptKind::Spi);
            irq.number
        })
        .collect();
    spis.sort();
    assert_eq!(spis, (16..48).collect::<Vec<_>>());
}

#[test]
fn qemu_virt_with_reserved_memory_fragment() {
    let dt = DeviceTree::new(QEMU_VIRT_RESERVED).unwrap();
    let regions: Vec<_> = dt.reserved_regions().collect::<Result<_, _>>().unwrap();
    let summary: Vec<_> = regions.iter().map(|r| (r.name, r.kind, r.no_map, r.reusable)).collect();
    assert_eq!(
        summary,
        [
            ("swiotlb@4c000000", PoolKind::Swiotlb, false, false),
            ("firmware@4f000000", PoolKind::Other, true, false),
            ("restricted-dma", PoolKind::RestrictedDma, false, false),
            ("cma", PoolKind::SharedDma, false, true),
        ]
    );
    let virtio = dt.find_path("/virtio_mmio@a003e00").unwrap().unwrap();
    let phandle = virtio.memory_region_phandles().next().unwrap();
    assert_eq!(dt.reserved_by_phandle(phandle).unwrap().unwrap().name, "restricted-dma");
    assert!(dt.devices().all(|d| d.is_ok()));
}

/// The memory map prints a pool kind by the binding's name (the kind lives in `mm`, the
/// `compatible` strings here).
#[test]
fn pool_kind_names_are_the_bindings() {
    assert_eq!(PoolKind::RestrictedDma.as_str(), COMPATIBLE_RESTRICTED_DMA_POOL);
    assert_eq!(PoolKind::SharedDma.as_str(), COMPATIBLE_SHARED_DMA_POOL);
}

// ---- the default CMA area: `linux,cma-default` nodes and `cma=` (dt::contiguous) -----------

mod cma {
    use super::*;
    use crate::mm::memblock::{Memblock, MemblockError, RegionKind};

    const MIB: u64 = 1 << 20;

    /// 256 MiB of RAM at 0x4000_0000 whose first 128 MiB are the DMA window (ZONE_DMA), a fixed
    /// SWIOTLB pool at 0x4c00_0000 (4 MiB), a no-map firmware region at 0x4f00_0000, the
    /// bootargs, and more `/reserved-memory` children from `f`.
    fn tree(bootargs: &str, f: impl FnOnce(&mut FdtWriter)) -> &'static [u8] {
        build(|w| {
            w.property_array_u64("dma-ranges", &[0x4000_0000, 0x4000_0000, 0x800_0000]).unwrap();
            base(w);
            node(w, "chosen", |w| w.property_string("bootargs", bootargs).unwrap());
            reserved_memory(w, |w| {
                node(w, "swiotlb@4c000000", |w| {
                    strs(w, "compatible", &[COMPATIBLE_SWIOTLB_POOL]);
                    reg64(w, "reg", &[(0x4c00_0000, 4 * MIB)]);
                });
                node(w, "firmware@4f000000", |w| {
                    reg64(w, "reg", &[(0x4f00_0000, MIB)]);
                    w.property_null("no-map").unwrap();
                });
                f(w);
            });
        })
        .leak()
    }

    /// A `shared-dma-pool` node with `reusable` and `linux,cma-default`, more from `f`.
    fn cma_node(w: &mut FdtWriter, f: impl FnOnce(&mut FdtWriter)) {
        node(w, "linux,cma", |w| {
            strs(w, "compatible", &[COMPATIBLE_SHARED_DMA_POOL]);
            w.property_null("reusable").unwrap();
            w.property_null("linux,cma-default").unwrap();
            f(w);
        });
    }

    /// The boot map of `blob` (which must build: a bad CMA area never stops it).
    fn map_of(blob: &'static [u8]) -> Memblock<'static> {
        let dt = DeviceTree::new(blob).unwrap();
        build_memblock(&dt, range(0x4008_0000, 0x20_0000), range(0x4000_0000, 0x2000)).unwrap()
    }

    fn area_of(blob: &'static [u8]) -> Option<(PhysRange, &'static str, bool)> {
        map_of(blob).cma_region().map(|r| (r.range, r.label, r.flags.dynamic))
    }

    /// Why the boot map has no CMA area: the error `build_memblock` logged, reproduced.
    fn error_of(blob: &'static [u8]) -> CmaSetupError<'static> {
        let dt = DeviceTree::new(blob).unwrap();
        let mut map = map_of(blob);
        assert!(map.cma_region().is_none(), "the map was built without the area");
        let source = CmaSource::find(&dt).unwrap();
        source.unwrap().reserve(&mut map, Some(0x4800_0000)).unwrap_err()
    }

    #[test]
    fn the_node_form_is_parsed() {
        let regions = reserved_of(tree("", |w| cma_node(w, |w| w.property_u64("size", 16 * MIB).unwrap()))).unwrap();
        let cma = regions.iter().find(|r| r.name == "linux,cma").unwrap();
        assert!(cma.cma_default && cma.reusable && cma.is_default_cma());
        // Without `reusable` it is a plain coherent pool, not a CMA area (Linux `rmem_cma_setup()`).
        let blob = tree("", |w| {
            node(w, "pool", |w| {
                strs(w, "compatible", &[COMPATIBLE_SHARED_DMA_POOL]);
                w.property_null("linux,cma-default").unwrap();
                w.property_u64("size", 4 * MIB).unwrap();
            })
        });
        assert!(!reserved_of(blob).unwrap().iter().any(ReservedRegion::is_default_cma));
        assert_eq!(area_of(blob), None);
        assert_eq!(map_of(blob).find("pool").map(|r| r.flags.kind), Some(RegionKind::ReservedMemory(PoolKind::SharedDma)));
    }

    #[test]
    fn a_dynamic_node_goes_into_zone_dma() {
        let (r, label, dynamic) = area_of(tree("", |w| cma_node(w, |w| w.property_u64("size", 16 * MIB).unwrap()))).unwrap();
        assert_eq!((r.size(), label, dynamic), (16 * MIB, "linux,cma", true));
        assert!(r.end() <= 0x4800_0000, "inside the DMA window: {r:?}");
        assert!(r.base().is_multiple_of(2 * MIB));
    }

    #[test]
    fn a_fixed_node_is_reserved_where_it_says() {
        let blob = tree("", |w| cma_node(w, |w| reg64(w, "reg", &[(0x4400_0000, 8 * MIB)])));
        assert_eq!(area_of(blob), Some((range(0x4400_0000, 8 * MIB), "linux,cma", false)));
        let printed = map_of(blob).regions_for_print().to_string();
        assert!(printed.contains("[mem 0x0000000044000000-0x00000000447fffff] linux,cma cma reusable\n"), "{printed}");
    }

    #[test]
    fn alloc_ranges_are_respected_zone_dma_first() {
        // A window straddling the end of ZONE_DMA: the part inside it is used.
        let blob = tree("", |w| {
            cma_node(w, |w| {
                w.property_u64("size", 4 * MIB).unwrap();
                reg64(w, "alloc-ranges", &[(0x4600_0000, 0x400_0000)]);
            })
        });
        let (r, ..) = area_of(blob).unwrap();
        assert!(r.base() >= 0x4600_0000 && r.end() <= 0x4800_0000, "{r:?}");
        // A window wholly above ZONE_DMA: used anyway, the binding decides.
        let blob = tree("", |w| {
            cma_node(w, |w| {
                w.property_u64("size", 4 * MIB).unwrap();
                reg64(w, "alloc-ranges", &[(0x4900_0000, 0x200_0000)]);
            })
        });
        let (r, ..) = area_of(blob).unwrap();
        assert!(r.base() >= 0x4900_0000 && r.end() <= 0x4b00_0000, "{r:?}");
    }

    #[test]
    fn a_dynamic_size_is_rounded_up_and_the_alignment_raised_to_a_pageblock() {
        let blob = tree("", |w| {
            cma_node(w, |w| {
                w.property_u64("size", 3 * MIB).unwrap();
                w.property_u64("alignment", 0x1_0000).unwrap();
            })
        });
        let (r, ..) = area_of(blob).unwrap();
        assert_eq!(r.size(), 4 * MIB);
        assert!(r.base().is_multiple_of(2 * MIB));
        let (r, ..) = area_of(tree("cma=5M", |_| {})).unwrap();
        assert_eq!(r.size(), 6 * MIB, "the bootarg's size too");
    }

    #[test]
    fn the_bootarg_makes_an_area_and_wins_over_the_node() {
        let (r, label, _) = area_of(tree("console=ttyAMA0 cma=32M", |_| {})).unwrap();
        assert_eq!((r.size(), label), (32 * MIB, CMA_BOOTARG_LABEL));
        assert!(r.end() <= 0x4800_0000, "in ZONE_DMA: {r:?}");
        let blob = tree("cma=4M", |w| cma_node(w, |w| reg64(w, "reg", &[(0x4400_0000, 8 * MIB)])));
        let map = map_of(blob);
        assert_eq!(map.cma_region().map(|r| (r.range.size(), r.label)), Some((4 * MIB, CMA_BOOTARG_LABEL)));
        assert!(map.find("linux,cma").is_none(), "the overridden node is not reserved");
        assert_eq!(area_of(tree("cma=0", |w| cma_node(w, |w| w.property_u64("size", 4 * MIB).unwrap()))), None, "cma=0: none");
    }

    #[test]
    fn a_node_overlapping_the_swiotlb_pool_is_refused_and_the_boot_goes_on() {
        let blob = tree("", |w| cma_node(w, |w| reg64(w, "reg", &[(0x4c00_0000, 8 * MIB)])));
        let e = error_of(blob);
        assert!(
            matches!(e, CmaSetupError::Memblock(MemblockError::Overlap { label: "linux,cma", other: "swiotlb@4c000000", .. })),
            "{e:?}"
        );
        assert!(e.to_string().contains("linux,cma") && e.to_string().contains("swiotlb@4c000000"), "{e}");
        assert!(map_of(blob).find("swiotlb@4c000000").is_some(), "the pool is untouched");
    }

    #[test]
    fn other_bad_nodes_and_bootargs_are_refused_with_the_reason() {
        let fixed = |base: u64, size: u64| tree("", move |w| cma_node(w, |w| reg64(w, "reg", &[(base, size)])));
        let e = error_of(fixed(0x4f00_0000, 2 * MIB));
        assert!(matches!(e, CmaSetupError::Memblock(MemblockError::Overlap { other: "firmware@4f000000", .. })), "{e:?}");
        let e = error_of(fixed(0x8000_0000, 4 * MIB));
        assert!(matches!(e, CmaSetupError::Memblock(MemblockError::OutsideRam { label: "linux,cma", .. })), "{e:?}");
        let e = error_of(fixed(0x4410_0000, 4 * MIB));
        assert_eq!(e, CmaSetupError::Misaligned { node: "linux,cma", range: range(0x4410_0000, 4 * MIB) });
        assert!(e.to_string().contains("not whole 2 MiB pageblocks; refused"), "{e}");
        assert!(matches!(error_of(fixed(0x4400_0000, 3 * MIB)), CmaSetupError::Misaligned { .. }));
        let e = error_of(tree("", |w| cma_node(w, |w| w.property_u64("size", 250 * MIB).unwrap())));
        assert!(matches!(e, CmaSetupError::Memblock(MemblockError::NoSpace { label: "linux,cma", .. })), "{e:?}");
        let e = error_of(tree("cma=1G", |_| {}));
        assert_eq!(e, CmaSetupError::LargerThanRam { size: 1 << 30, ram: 256 * MIB });
        assert!(e.to_string().starts_with("cma="), "{e}");
    }

    #[test]
    fn a_malformed_bootarg_means_no_area() {
        let blob = tree("cma=64X", |w| cma_node(w, |w| w.property_u64("size", 4 * MIB).unwrap()));
        let dt = DeviceTree::new(blob).unwrap();
        let e = CmaSource::find(&dt).unwrap_err();
        assert!(matches!(e, CmaSetupError::Bootarg(_)));
        assert!(e.to_string().starts_with("cma=: "), "{e}");
        assert_eq!(area_of(blob), None, "not even the node's: the command line meant to override it");
    }

    #[test]
    fn a_second_default_node_is_ignored() {
        let blob = tree("", |w| {
            cma_node(w, |w| w.property_u64("size", 4 * MIB).unwrap());
            node(w, "second", |w| {
                strs(w, "compatible", &[COMPATIBLE_SHARED_DMA_POOL]);
                w.property_null("reusable").unwrap();
                w.property_null("linux,cma-default").unwrap();
                w.property_u64("size", 4 * MIB).unwrap();
            });
        });
        let map = map_of(blob);
        assert_eq!(map.cma_region().map(|r| r.label), Some("linux,cma"));
        assert!(map.find("second").is_none());
    }
}

// ---- /cpus ------------------------------------------------------------------------------------

fn cpu(w: &mut FdtWriter, name: &str, reg: &[u32], method: Option<&str>) {
    node(w, name, |w| {
        w.property_string("device_type", "cpu").unwrap();
        w.property_array_u32("reg", reg).unwrap();
        if let Some(m) = method {
            w.property_string("enable-method", m).unwrap();
        }
    });
}

#[test]
fn cpus_are_listed_in_tree_order_with_their_mpidr() {
    let blob = build(|w| {
        base(w);
        node(w, "cpus", |w| {
            w.property_u32("#address-cells", 2).unwrap();
            w.property_u32("#size-cells", 0).unwrap();
            cpu(w, "cpu@0", &[0, 0], Some("psci"));
            cpu(w, "cpu@101", &[1, 0x101], Some("psci"));
            cpu(w, "cpu@2", &[0, 2], Some("spin-table"));
            node(w, "cpu-map", |_| {}); // not a CPU
        });
    });
    let dt = DeviceTree::new(&blob).unwrap();
    let mut out = [None; 2];
    assert_eq!(dt.cpus(&mut out), Ok(3), "the count says what did not fit");
    assert_eq!(out[0], Some(CpuNode { name: "cpu@0", mpidr: 0, psci: true }));
    assert_eq!(out[1], Some(CpuNode { name: "cpu@101", mpidr: 0x1_0000_0101, psci: true }));
    let mut out = [None; 4];
    assert_eq!(dt.cpus(&mut out), Ok(3));
    assert_eq!(out[2].map(|c| c.psci), Some(false));
}

#[test]
fn cpus_with_bad_reg_are_errors() {
    let blob = build(|w| {
        base(w);
        node(w, "cpus", |w| {
            w.property_u32("#address-cells", 1).unwrap();
            w.property_u32("#size-cells", 0).unwrap();
            cpu(w, "cpu@0", &[0, 0], Some("psci"));
        });
    });
    let dt = DeviceTree::new(&blob).unwrap();
    assert_eq!(dt.cpus(&mut [None; 1]), Err(DtError::BadPropertyLength { node: "cpu@0", property: "reg", len: 8 }));
    let blob = build(|w| {
        base(w);
        node(w, "cpus", |w| {
            w.property_u32("#address-cells", 1).unwrap();
            w.property_u32("#size-cells", 0).unwrap();
            cpu(w, "cpu@0", &[0x0100_0000], Some("psci"));
        });
    });
    let dt = DeviceTree::new(&blob).unwrap();
    assert_eq!(dt.cpus(&mut [None; 1]), Err(DtError::BadValue { node: "cpu@0", property: "reg" }));
}

#[test]
fn qemu_virt_has_one_cpu() {
    let dt = DeviceTree::new(QEMU_VIRT).unwrap();
    let mut out = [None; 8];
    assert_eq!(dt.cpus(&mut out), Ok(1));
    // QEMU gives the CPUs `enable-method = "psci"` only when there is more than one to start.
    assert_eq!(out[0], Some(CpuNode { name: "cpu@0", mpidr: 0, psci: false }));
}

// ---- reserved regions beyond the end of RAM --------------------------------------------------

/// A fragment written for more RAM than the machine has (`fw-log@48000000` at `--mem 128M`):
/// a static region wholly outside RAM protects nothing and is skipped; one that straddles RAM's
/// edge is still an error, and so is a namesake of a skipped region (found by the fdt fuzzer:
/// otherwise the second node was reserved under the skipped one's name).
#[test]
fn reserved_region_wholly_outside_ram_is_skipped() {
    use crate::mm::memblock::MemblockError;
    let kernel = PhysRange::new(0x4008_0000, 0x1000).unwrap();
    let dtb = PhysRange::new(0x4000_0000, 0x2000).unwrap();
    // RAM is [0x4000_0000, 0x5000_0000).
    let region = |name: &'static str, base: u64, size: u64| move |w: &mut FdtWriter| node(w, name, |w| reg64(w, "reg", &[(base, size)]));
    let beyond = with_reserved(|w| {
        region("fw-log@60000000", 0x6000_0000, 0x20_0000)(w);
        region("kept@48000000", 0x4800_0000, 0x1000)(w);
    });
    let dt = DeviceTree::new(&beyond).unwrap();
    let map = build_memblock(&dt, kernel, dtb).unwrap();
    assert!(map.find("fw-log@60000000").is_none());
    assert!(map.find("kept@48000000").is_some());
    assert_eq!(map.skipped_outside_ram(), 1);

    let straddles = with_reserved(region("edge@4ff00000", 0x4ff0_0000, 0x20_0000));
    let dt = DeviceTree::new(&straddles).unwrap();
    let err = build_memblock(&dt, kernel, dtb).unwrap_err();
    assert!(matches!(err, BuildMemblockError::Memblock(MemblockError::OutsideRam { label: "edge@4ff00000", .. })), "{err:?}");

    for order in [[0x6000_0000u64, 0x4800_0000], [0x4800_0000, 0x6000_0000]] {
        let namesakes = with_reserved(|w| {
            region("twin", order[0], 0x1000)(w);
            region("twin", order[1], 0x1000)(w);
        });
        let dt = DeviceTree::new(&namesakes).unwrap();
        let err = build_memblock(&dt, kernel, dtb).unwrap_err();
        assert_eq!(err, BuildMemblockError::Memblock(MemblockError::DuplicateLabel { label: "twin" }), "{order:x?}");
    }
}

// ---- the boot memory map from the device tree (dt::memblock, moved from mm::memblock) -----

mod boot_map {
    use std::string::ToString;

    use super::*;
    use crate::mm::memblock::{Memblock, MemblockError, RegionKind};

    fn qemu_map(dtb: &[u8]) -> Result<Memblock<'_>, BuildMemblockError<'_>> {
        let dt = DeviceTree::new(dtb).unwrap();
        // Like our ELF boot: DTB at the start of RAM, the kernel linked at 0x4008_0000.
        build_memblock(&dt, range(0x4008_0000, 0x20_0000), range(0x4000_0000, 0x2000))
    }

    #[test]
    fn qemu_boot_map_prints_one_line_per_region() {
        let map = qemu_map(QEMU_VIRT_RESERVED).unwrap();
        let expected = concat!(
            "  [mem 0x0000000040000000-0x0000000040001fff] dtb dtb\n",
            "  [mem 0x0000000040002000-0x000000004007ffff] usable\n",
            "  [mem 0x0000000040080000-0x000000004027ffff] kernel kernel-image\n",
            "  [mem 0x0000000040280000-0x0000000048dfffff] usable\n",
            "  [mem 0x0000000048e00000-0x0000000048ffffff] restricted-dma restricted-dma-pool dynamic\n",
            "  [mem 0x0000000049000000-0x000000004bffffff] usable\n",
            "  [mem 0x000000004c000000-0x000000004c3fffff] swiotlb@4c000000 swiotlb-pool\n",
            "  [mem 0x000000004c400000-0x000000004effffff] usable\n",
            "  [mem 0x000000004f000000-0x000000004f0fffff] firmware@4f000000 reserved no-map\n",
            "  [mem 0x000000004f100000-0x000000004f7fffff] usable\n",
            "  [mem 0x000000004f800000-0x000000004fffffff] cma shared-dma-pool reusable dynamic\n",
        );
        assert_eq!(map.regions_for_print().to_string(), expected);
        let pool = map.find("swiotlb@4c000000").unwrap();
        assert_eq!(pool.flags.kind, RegionKind::ReservedMemory(PoolKind::Swiotlb));
    }

    #[test]
    fn qemu_boot_map_without_reserved_memory() {
        let map = qemu_map(QEMU_VIRT).unwrap();
        assert_eq!(map.reserved().count(), 2);
        assert_eq!(map.free_ranges().map(|r| r.size()).sum::<u64>(), 0x1000_0000 - 0x20_2000);
    }

    #[test]
    fn kernel_overlapping_a_reserved_region_is_an_error() {
        let dt = DeviceTree::new(QEMU_VIRT_RESERVED).unwrap();
        let kernel = range(0x4bf0_0000, 0x20_0000);
        let err = build_memblock(&dt, kernel, range(0x4000_0000, 0x2000)).unwrap_err();
        assert_eq!(
            err,
            BuildMemblockError::Memblock(MemblockError::Overlap {
                label: "swiotlb@4c000000",
                range: range(0x4c00_0000, 0x40_0000),
                other: "kernel",
                other_range: kernel,
            })
        );
    }

    #[test]
    fn builder_reports_dtb_outside_ram_and_unplaceable_pools() {
        let dt = DeviceTree::new(QEMU_VIRT_RESERVED).unwrap();
        let dtb = range(0x3fff_f000, 0x2000);
        assert_eq!(
            build_memblock(&dt, range(0x4008_0000, 0x1000), dtb).unwrap_err(),
            BuildMemblockError::Memblock(MemblockError::OutsideRam { label: "dtb", range: dtb })
        );
        // A kernel filling the restricted pool's alloc-ranges window leaves it nowhere to go.
        let err = build_memblock(&dt, range(0x4800_0000, 0x100_0000), range(0x4000_0000, 0x2000));
        assert!(matches!(err, Err(BuildMemblockError::Memblock(MemblockError::NoSpace { label: "restricted-dma", .. }))), "{err:?}");
    }

    #[test]
    fn builder_passes_device_tree_errors_through() {
        let mut blob = QEMU_VIRT_RESERVED.to_vec();
        // Make `size = <0 0x800000>` of /reserved-memory/cma zero: find it after "cma".
        let cma = blob.windows(4).position(|w| w == b"cma\0").unwrap();
        let size = cma + blob[cma..].windows(8).position(|w| w == [0, 0, 0, 0, 0, 0x80, 0, 0]).unwrap();
        blob[size + 5] = 0;
        let dt = DeviceTree::new(&blob).unwrap();
        let err = build_memblock(&dt, range(0x4008_0000, 0x1000), range(0x4000_0000, 0x2000));
        assert_eq!(err.unwrap_err(), BuildMemblockError::DeviceTree(DtError::ReservedZeroSize { node: "cma" }));
    }

    /// Found by the `fdt` fuzz target: a reserved-memory node named `dtb` (or `kernel`) shared
    /// its label with the kernel's own region, so `find` (how the platform sets up a restricted
    /// pool) could name the kernel image or the DTB instead of the pool. (The map's own half of
    /// the check is memblock's `reserved_memory_labels_are_unique_in_the_map`.)
    #[test]
    fn reserved_memory_labels_are_unique() {
        let mut blob = QEMU_VIRT_RESERVED.to_vec();
        let cma = blob.windows(4).position(|w| w == b"cma\0").unwrap();
        blob[cma..cma + 3].copy_from_slice(b"dtb");
        let dt = DeviceTree::new(&blob).unwrap();
        let err = build_memblock(&dt, range(0x4008_0000, 0x1000), range(0x4000_0000, 0x2000));
        assert_eq!(err.unwrap_err(), BuildMemblockError::Memblock(MemblockError::DuplicateLabel { label: "dtb" }));
    }
}
