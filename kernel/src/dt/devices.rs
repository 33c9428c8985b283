//! Device nodes: `reg` translated to CPU addresses, interrupts, `memory-region`, DMA properties.

use super::cells::{self, child_cells, has_prop, range_entries, reg_entries, str_list_prop, u32_cells, Node, StrList};
use super::memory::{is_memory, is_special_root_child};
use super::walk::{path_matches, walk};
use super::{arm, dma, phys_range, DeviceTree, DtError};
use crate::mm::PhysAddr;
use crate::mm::PhysRange;

/// Most `reg` entries a [`Device`] holds (a GICv2 with virtualization extensions has 4).
pub const MAX_REGS: usize = 8;

/// A decoded device node. Self-contained: it borrows only the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device<'a> {
    name: &'a str,
    compatible: StrList<'a>,
    regs: [PhysRange; MAX_REGS],
    reg_count: usize,
    interrupts: &'a [u8],
    interrupt_cells: Option<u32>,
    memory_regions: &'a [u8],
    dma_coherent: bool,
    dma_limit: Option<PhysAddr>,
    enabled: bool,
    phandle: Option<u32>,
}

impl<'a> Device<'a> {
    /// The node name (`virtio_mmio@a000000`).
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The `compatible` strings, most specific first.
    pub fn compatible(&self) -> StrList<'a> {
        self.compatible
    }

    /// Whether one of the `compatible` strings is `compatible`.
    pub fn is_compatible(&self, compatible: &str) -> bool {
        self.compatible.contains(compatible)
    }

    /// The `reg` entries translated to CPU physical addresses.
    pub fn regs(&self) -> &[PhysRange] {
        &self.regs[..self.reg_count]
    }

    /// The raw `interrupts` cells; their meaning depends on the interrupt parent.
    pub fn interrupt_cells(&self) -> impl Iterator<Item = u32> + 'a {
        u32_cells(self.interrupts)
    }

    /// `#interrupt-cells` of the interrupt parent (found as Linux `of_irq_find_parent()` does),
    /// if the node has `interrupts` and the parent was found.
    pub fn interrupt_parent_cells(&self) -> Option<u32> {
        self.interrupt_cells
    }

    /// `interrupts` decoded with the GIC binding (3 cells: type, number, flags).
    pub fn gic_interrupts(&self) -> Result<impl Iterator<Item = arm::GicInterrupt> + 'a, DtError<'a>> {
        arm::gic_interrupts(self.name, self.interrupts, self.interrupt_cells)
    }

    /// `memory-region` phandles, unchecked: look each up with `DeviceTree::reserved_by_phandle`.
    pub fn memory_region_phandles(&self) -> impl Iterator<Item = u32> + 'a {
        u32_cells(self.memory_regions)
    }

    /// `dma-coherent` on the node or an ancestor (Linux `of_dma_is_coherent()`).
    pub fn dma_coherent(&self) -> bool {
        self.dma_coherent
    }

    /// The highest CPU physical address (inclusive) the device can reach by DMA, from the
    /// `dma-ranges` of its ancestors; `None` means no limit. See [`DeviceTree::devices`].
    pub fn dma_limit(&self) -> Option<PhysAddr> {
        self.dma_limit
    }

    /// True if the device can reach every byte of `range` by DMA (its [`dma_limit`](Self::dma_limit)
    /// permitting). A restricted pool the device cannot reach is useless to it (Linux finds out
    /// per mapping, in `swiotlb_map()`'s `dma_capable` check; we refuse the device at probe).
    pub fn dma_reaches(&self, range: PhysRange) -> bool {
        self.dma_limit.is_none_or(|last| range.end() - 1 <= last)
    }

    /// `status` is absent, `"okay"` or `"ok"`.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The node's `phandle`, if any.
    pub fn phandle(&self) -> Option<u32> {
        self.phandle
    }
}

impl<'a> DeviceTree<'a> {
    /// Every device node, depth first: any node with `reg` except RAM, `/cpus`, `/chosen`,
    /// `/reserved-memory` and their descendants. Disabled nodes are included (see
    /// [`Device::enabled`]).
    ///
    /// `reg` addresses go up through every ancestor's `ranges` (absent: not translatable, an
    /// error; empty: identity). The DMA limit is the smallest, over the ancestors with a
    /// non-empty `dma-ranges`, of the highest CPU address that bus's windows reach; an absent or
    /// empty `dma-ranges` does not constrain (Linux treats absent as "no DMA translation"; we are
    /// more lenient and document it).
    pub fn devices(&self) -> impl Iterator<Item = Result<Device<'a>, DtError<'a>>> + '_ {
        self.nodes_where(|chain| {
            let node = chain[chain.len() - 1];
            chain.len() > 1 && has_prop(node, "reg") && !excluded(chain)
        })
    }

    /// The enabled devices with `compatible = "virtio,mmio"`.
    pub fn virtio_mmio_devices(&self) -> impl Iterator<Item = Result<Device<'a>, DtError<'a>>> + '_ {
        self.devices().filter(|d| d.as_ref().map_or(true, |d| d.enabled() && d.is_compatible("virtio,mmio")))
    }

    /// The first enabled node (device or not) with one of the `compatible` strings.
    pub fn find_compatible(&self, compatible: &[&str]) -> Result<Option<Device<'a>>, DtError<'a>> {
        self.nodes_where(|chain| {
            let node = chain[chain.len() - 1];
            cells::is_enabled(node) && has_compatible(node, compatible)
        })
        .next()
        .transpose()
    }

    /// The raw first enabled node with one of the `compatible` strings, for properties a
    /// [`Device`] does not keep.
    pub(super) fn find_compatible_node(&self, compatible: &[&str]) -> Result<Option<Node<'_, 'a>>, DtError<'a>> {
        let mut walk = walk(&self.fdt)?;
        while let Some(chain) = walk.next_node() {
            if let Some(&node) = chain?.last() {
                if cells::is_enabled(node) && has_compatible(node, compatible) {
                    return Ok(Some(node));
                }
            }
        }
        Ok(None)
    }

    /// The node at `path` (`/soc/uart@1000`; components without `@` match the base name).
    pub fn find_path(&self, path: &str) -> Result<Option<Device<'a>>, DtError<'a>> {
        self.nodes_where(|chain| path_matches(path, chain)).next().transpose()
    }

    /// The highest DMA-reachable CPU address over the whole tree (the bound of ZONE_DMA, like
    /// Linux `of_dma_get_max_cpu_address()`), or `None` if no `dma-ranges` constrains DMA.
    pub fn smallest_dma_limit(&self) -> Result<Option<PhysAddr>, DtError<'a>> {
        let mut walk = walk(&self.fdt)?;
        let mut smallest: Option<PhysAddr> = None;
        while let Some(chain) = walk.next_node() {
            if let Some(limit) = dma::bus_limit(chain?)? {
                smallest = Some(smallest.map_or(limit, |s| s.min(limit)));
            }
        }
        Ok(smallest)
    }

    /// Decodes every node for which `select(chain)` holds (`chain`: root first, node last).
    fn nodes_where<'s, F>(&'s self, select: F) -> impl Iterator<Item = Result<Device<'a>, DtError<'a>>> + 's
    where
        F: Fn(&[Node<'_, 'a>]) -> bool + 's,
    {
        let mut walk = walk(&self.fdt);
        let mut failed = false;
        core::iter::from_fn(move || {
            if failed {
                return None;
            }
            let result = match walk.as_mut() {
                Err(e) => Err(*e),
                Ok(walk) => loop {
                    match walk.next_node()? {
                        Err(e) => break Err(e),
                        Ok(chain) if select(chain) => break decode(self, chain),
                        Ok(_) => {}
                    }
                },
            };
            failed = result.is_err();
            Some(result)
        })
    }
}

fn has_compatible(node: Node<'_, '_>, compatible: &[&str]) -> bool {
    cells::prop(node, "compatible").and_then(StrList::new).is_some_and(|list| list.iter().any(|c| compatible.contains(&c)))
}

/// Nodes that are not devices: RAM, and anything under `/cpus`, `/chosen`, `/reserved-memory`.
fn excluded(chain: &[Node<'_, '_>]) -> bool {
    let node = chain[chain.len() - 1];
    is_memory(node) || chain.get(1).is_some_and(|top| is_special_root_child(top.name))
}

/// Decodes the last node of `chain` (root first).
fn decode<'a>(dt: &DeviceTree<'a>, chain: &[Node<'_, 'a>]) -> Result<Device<'a>, DtError<'a>> {
    let (&node, ancestors) = chain.split_last().ok_or(DtError::NotFound { what: "node" })?;
    let name = node.name;
    let mut device = Device {
        name,
        compatible: str_list_prop(node, "compatible")?,
        regs: [PhysRange::default(); MAX_REGS],
        reg_count: 0,
        interrupts: cells::prop(node, "interrupts").unwrap_or(&[]),
        interrupt_cells: None,
        memory_regions: cells::prop(node, "memory-region").unwrap_or(&[]),
        dma_coherent: chain.iter().any(|n| has_prop(*n, "dma-coherent")),
        dma_limit: dma::device_limit(ancestors)?,
        enabled: cells::is_enabled(node),
        phandle: cells::u32_prop(node, "phandle")?,
    };
    if let (Some(reg), Some(&bus)) = (cells::prop(node, "reg"), ancestors.last()) {
        for (base, size) in reg_entries(name, "reg", reg, child_cells(bus)?)? {
            phys_range(name, base, size)?;
            let cpu = to_cpu(ancestors, name, base, size)?;
            let slot = device.regs.get_mut(device.reg_count).ok_or(DtError::TooManyRegs { node: name })?;
            *slot = phys_range(name, cpu, size)?;
            device.reg_count += 1;
        }
    }
    if !device.interrupts.is_empty() {
        if !device.interrupts.len().is_multiple_of(4) {
            return Err(DtError::BadPropertyLength { node: name, property: "interrupts", len: device.interrupts.len() });
        }
        device.interrupt_cells = arm::interrupt_parent_cells(dt, chain)?;
    }
    if !device.memory_regions.len().is_multiple_of(4) {
        return Err(DtError::BadPropertyLength { node: name, property: "memory-region", len: device.memory_regions.len() });
    }
    // A `memory-region` phandle naming no node is not checked here: the node is still a device
    // whose registers must be mapped. The DMA configuration that uses the phandles
    // (`platform::dma::dma_device_from_dt`) refuses it, so only this device fails to probe.
    Ok(device)
}

/// Translates `addr` (with `size`), an address in the child address space of `chain.last()`,
/// to a CPU physical address by applying each bus's `ranges` up to the root (DT spec §2.3.8,
/// Linux `of_translate_address()`).
pub(super) fn to_cpu<'a>(chain: &[Node<'_, 'a>], node: &'a str, mut addr: u64, size: u64) -> Result<u64, DtError<'a>> {
    for pair in chain.windows(2).rev() {
        let (parent, bus) = (pair[0], pair[1]);
        let untranslatable = DtError::Untranslatable { node, bus: bus.name };
        let ranges = cells::prop(bus, "ranges").ok_or(untranslatable)?;
        if ranges.is_empty() {
            continue; // identity mapping
        }
        let child = child_cells(bus)?;
        let parent_address = child_cells(parent)?.address;
        let end = addr.checked_add(size).ok_or(DtError::RegionOverflow { node })?;
        let window = range_entries(bus.name, "ranges", ranges, child.address, parent_address, child.size)?
            .find(|&(c, _, len)| c <= addr && c.checked_add(len).is_some_and(|c_end| end <= c_end))
            .ok_or(untranslatable)?;
        addr = window.1.checked_add(addr - window.0).ok_or(DtError::RegionOverflow { node })?;
    }
    Ok(addr)
}
