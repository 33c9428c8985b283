//! DMA addressing limits from `dma-ranges` (DT spec §2.3.9).
//!
//! Linux (`of_dma_get_range()`) treats a bus without `dma-ranges` as "no DMA translation
//! possible" and an empty one as identity. We keep it simpler: a bus constrains its children
//! only through a non-empty `dma-ranges`. A bus's limit is the highest CPU address any of its
//! windows reaches; a device's limit is the smallest over its ancestors. The root's own
//! `dma-ranges` limits every device: its parent side is the CPU's address space, in the root's
//! own cells (QEMU's virt puts its devices on the root bus, so this is where a board-wide DMA
//! window goes).

use super::cells::{self, child_cells, range_entries, Node};
use super::devices::to_cpu;
use super::DtError;
use crate::mm::PhysAddr;

/// The DMA limit a device under `ancestors` (root first, parent last) inherits.
pub(super) fn device_limit<'a>(ancestors: &[Node<'_, 'a>]) -> Result<Option<PhysAddr>, DtError<'a>> {
    let mut limit: Option<PhysAddr> = None;
    for depth in 1..=ancestors.len() {
        if let Some(bus) = bus_limit(&ancestors[..depth])? {
            limit = Some(limit.map_or(bus, |l| l.min(bus)));
        }
    }
    Ok(limit)
}

/// The highest CPU address (inclusive) reachable through the `dma-ranges` of `chain.last()`,
/// or `None` if it has none or an empty one.
pub(super) fn bus_limit<'a>(chain: &[Node<'_, 'a>]) -> Result<Option<PhysAddr>, DtError<'a>> {
    let Some((&bus, above)) = chain.split_last() else {
        return Ok(None);
    };
    // The root's parent side is the CPU address space, in the root's own cells.
    let parent = above.last().copied().unwrap_or(bus);
    let ranges = match cells::prop(bus, "dma-ranges") {
        None | Some([]) => return Ok(None),
        Some(r) => r,
    };
    let child = child_cells(bus)?;
    let parent_address = child_cells(parent)?.address;
    let mut highest: Option<PhysAddr> = None;
    let entries = range_entries(bus.name, "dma-ranges", ranges, child.address, parent_address, child.size)?;
    for (_, parent_addr, len) in entries {
        if len == 0 {
            return Err(DtError::BadValue { node: bus.name, property: "dma-ranges" });
        }
        // The parent-bus side of the window, in CPU terms.
        let cpu = to_cpu(above, bus.name, parent_addr, len)?;
        let last = cpu.checked_add(len - 1).ok_or(DtError::RegionOverflow { node: bus.name })?;
        highest = Some(highest.map_or(last, |h| h.max(last)));
    }
    Ok(highest)
}
