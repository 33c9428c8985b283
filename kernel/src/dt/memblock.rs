//! The boot memory map from the device tree (Linux `drivers/of/fdt.c`:
//! `early_init_dt_scan_memory()` adds `/memory` with `memblock_add()`, and
//! `early_init_fdt_scan_reserved_mem()` / `fdt_init_reserved_mem()` reserve the rest): RAM banks,
//! the kernel image, the DTB, `/memreserve/`, `/reserved-memory` and the default CMA area.
//!
//! Imports go one way: this file fills [`Memblock`] through its device-tree-free API (add RAM,
//! reserve and allocate labelled regions); memblock knows nothing of device trees.
#![forbid(unsafe_code)]

use core::fmt;

use super::{CmaSource, DeviceTree, DtError, ReservedPlacement, ReservedRegion};
use crate::mm::memblock::{Memblock, MemblockError, RegionFlags, RegionKind};
use crate::mm::{PhysAddr, PhysRange, PAGE_SIZE};

/// Why the boot memory map could not be built from the device tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildMemblockError<'a> {
    /// The memory map refused a region (overlap, outside RAM, no room ...).
    Memblock(MemblockError<'a>),
    /// The device tree could not be read.
    DeviceTree(DtError<'a>),
}

impl<'a> From<MemblockError<'a>> for BuildMemblockError<'a> {
    fn from(e: MemblockError<'a>) -> Self {
        Self::Memblock(e)
    }
}

impl<'a> From<DtError<'a>> for BuildMemblockError<'a> {
    fn from(e: DtError<'a>) -> Self {
        Self::DeviceTree(e)
    }
}

impl fmt::Display for BuildMemblockError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memblock(e) => write!(f, "{e}"),
            Self::DeviceTree(e) => write!(f, "memblock: {e}"),
        }
    }
}

/// Builds the boot map: RAM from `/memory`; reserves the kernel image, the DTB, the header's
/// `/memreserve/` entries and every static `/reserved-memory` region; then places every
/// dynamic one (Linux `fdt_init_reserved_mem()`). Stops at the first error, except for the
/// default CMA area (`linux,cma-default` node or `cma=`, see [`CmaSource`]):
/// reserved with the static or the dynamic regions, and if that fails a warning names the
/// node or bootarg and the map is built without it.
pub fn build_memblock<'a>(dt: &DeviceTree<'a>, kernel: PhysRange, dtb: PhysRange) -> Result<Memblock<'a>, BuildMemblockError<'a>> {
    let mut map = Memblock::new();
    for bank in dt.memory_banks() {
        let bank = bank?;
        map.add_ram(bank.base(), bank.size())?;
    }
    map.reserve(kernel.base(), kernel.size(), "kernel", RegionFlags::of(RegionKind::KernelImage))?;
    map.reserve(dtb.base(), dtb.size(), "dtb", RegionFlags::of(RegionKind::Dtb))?;
    for (base, size) in dt.memreserve_entries() {
        map.reserve(base, size, "memreserve", RegionFlags::of(RegionKind::MemReserve))?;
    }
    let cma = CmaSource::find(dt).unwrap_or_else(|e| {
        log::warn!("cma: {e}; booting without a CMA area");
        None
    });
    for region in dt.reserved_regions() {
        let region = region?;
        if region.is_default_cma() {
            continue;
        }
        if let ReservedPlacement::Static(range) = region.placement {
            if map.outside_ram(&range) {
                // It describes nothing to protect (a fragment written for more RAM than
                // this machine has): skipped, as Linux's `memblock_is_region_memory()`
                // check skips it. Its name stays taken, so a namesake is still refused.
                if dt.reserved_regions().flatten().filter(|r| r.name == region.name).count() > 1 {
                    return Err(MemblockError::DuplicateLabel { label: region.name }.into());
                }
                log::warn!(
                    "memblock: reserved region {} [{:#x}-{:#x}) lies wholly outside RAM: skipped",
                    region.name,
                    range.base(),
                    range.end()
                );
                map.note_skipped_outside_ram();
                continue;
            }
            map.reserve(range.base(), range.size(), region.name, region_flags(&region, false))?;
        }
    }
    if let Some(c) = cma.filter(CmaSource::is_static) {
        reserve_cma(&mut map, c, None);
    }
    for region in dt.reserved_regions() {
        let region = region?;
        let ReservedPlacement::Dynamic { size, alignment, .. } = region.placement else {
            continue;
        };
        if region.is_default_cma() {
            continue;
        }
        // We hand pages to the page allocator, so never place below page alignment.
        let align = alignment.unwrap_or(PAGE_SIZE).max(PAGE_SIZE);
        let flags = region_flags(&region, true);
        let mut windows = region.alloc_ranges().peekable();
        let placed = if windows.peek().is_none() {
            map.alloc(size, align, None, region.name, flags)
        } else {
            // Like Linux `__reserved_mem_alloc_size()`: the first window that fits wins.
            windows
                .map(|w| map.alloc(size, align, Some(w), region.name, flags))
                .find(Result::is_ok)
                .unwrap_or(Err(MemblockError::NoSpace { label: region.name, size, align }))
        };
        placed?;
    }
    if let Some(c) = cma.filter(|c| !c.is_static()) {
        let dma_limit = dt.smallest_dma_limit().ok().flatten().and_then(|last| last.checked_add(1));
        reserve_cma(&mut map, c, dma_limit);
    }
    Ok(map)
}

/// Reserves the default CMA area, or says why not: the boot goes on without one.
fn reserve_cma<'a>(map: &mut Memblock<'a>, cma: CmaSource<'a>, dma_limit: Option<PhysAddr>) {
    match cma.reserve(map, dma_limit) {
        Ok(r) => log::info!("cma: reserved [{:#x}-{:#x}) ({} MiB) for the CMA area", r.base(), r.end(), r.size() >> 20),
        Err(e) => log::warn!("cma: {e}; booting without a CMA area"),
    }
}

fn region_flags(region: &ReservedRegion<'_>, dynamic: bool) -> RegionFlags {
    RegionFlags { kind: RegionKind::ReservedMemory(region.kind), no_map: region.no_map, reusable: region.reusable, dynamic }
}
