//! `/reserved-memory` (Linux `Documentation/devicetree/bindings/reserved-memory/`
//! `reserved-memory.yaml` and `shared-dma-pool.yaml`).
//!
//! Each enabled child is one region: static (`reg`) or dynamic (`size`, optional `alignment`,
//! optional `alloc-ranges`, placed later by memblock). We check what the binding and Linux
//! (`drivers/of/of_reserved_mem.c`, `kernel/dma/swiotlb.c`) check and refuse the rest. A
//! reusable `shared-dma-pool` with `linux,cma-default` is the default CMA area: its place and
//! alignment rules are `dt::contiguous`'s.

use super::cells::{self, child_cells, has_prop, read_cells, reg_entries, str_list_prop, CellSizes, Node, StrList};
use super::{phys_range, DeviceTree, DtError};
use crate::mm::memblock::PoolKind;
use crate::mm::{PhysAddr, PhysRange};

/// `compatible` of a pool for restricted DMA (Linux `rmem_swiotlb_setup()`): a per-device bounce
/// buffer the device may only reach.
pub const COMPATIBLE_RESTRICTED_DMA_POOL: &str = "restricted-dma-pool";
/// `compatible` of a coherent-allocation (or, `reusable`, CMA) pool.
pub const COMPATIBLE_SHARED_DMA_POOL: &str = "shared-dma-pool";
/// `compatible` of the default SWIOTLB pool, a binding of this kernel (Linux sizes its default
/// pool from the `swiotlb=` command line instead).
pub const COMPATIBLE_SWIOTLB_POOL: &str = "dmabounce,swiotlb-pool";

/// What a reserved region is for: the first known string of its `compatible` list decides.
fn pool_kind(compatible: StrList<'_>) -> PoolKind {
    compatible
        .iter()
        .find_map(|c| match c {
            COMPATIBLE_RESTRICTED_DMA_POOL => Some(PoolKind::RestrictedDma),
            COMPATIBLE_SHARED_DMA_POOL => Some(PoolKind::SharedDma),
            COMPATIBLE_SWIOTLB_POOL => Some(PoolKind::Swiotlb),
            _ => None,
        })
        .unwrap_or(PoolKind::Other)
}

/// Where a reserved region lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservedPlacement<'a> {
    /// `reg`: a fixed range.
    Static(PhysRange),
    /// `size`: placed at boot by memblock.
    Dynamic {
        /// Bytes to reserve (non-zero).
        size: u64,
        /// `alignment`, a power of two, if given.
        alignment: Option<u64>,
        /// Raw `alloc-ranges` (validated); iterate with [`ReservedRegion::alloc_ranges`].
        alloc_ranges: &'a [u8],
        /// Cells of `/reserved-memory`, to decode `alloc_ranges`.
        cells: CellSizes,
    },
}

/// One child of `/reserved-memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservedRegion<'a> {
    /// The node name (`bounce@48000000`), used as the region's label.
    pub name: &'a str,
    /// The `compatible` strings.
    pub compatible: StrList<'a>,
    /// What the region is for.
    pub kind: PoolKind,
    /// Static or dynamic placement.
    pub placement: ReservedPlacement<'a>,
    /// `no-map`: the OS must not map it (nor speculate into it).
    pub no_map: bool,
    /// `reusable`: the OS may use it while its owner does not.
    pub reusable: bool,
    /// `linux,cma-default`: the default CMA area (with `reusable`, on a `shared-dma-pool`).
    pub cma_default: bool,
    /// `phandle`, if the node has one (devices point at it with `memory-region`).
    pub phandle: Option<u32>,
}

impl<'a> ReservedRegion<'a> {
    /// Whether this is the default CMA area (Linux `rmem_cma_setup()` with
    /// `linux,cma-default`): a `shared-dma-pool` marked `reusable` (so not `no-map`). A
    /// `linux,cma-default` node without `reusable` is a plain reserved region, as in Linux.
    pub fn is_default_cma(&self) -> bool {
        self.kind == PoolKind::SharedDma && self.reusable && self.cma_default
    }

    /// The `alloc-ranges` windows of a dynamic region (empty for a static one, or if absent).
    pub fn alloc_ranges(&self) -> impl Iterator<Item = PhysRange> + 'a {
        let (raw, cells) = match self.placement {
            ReservedPlacement::Dynamic { alloc_ranges, cells, .. } => (alloc_ranges, cells),
            ReservedPlacement::Static(_) => (&[][..], CellSizes { address: 2, size: 2 }),
        };
        // Length and overflow were checked when the region was decoded.
        raw.chunks_exact(cells.entry_bytes()).filter_map(move |e| {
            let base = read_cells(e, cells.address);
            PhysRange::new(base, read_cells(&e[4 * cells.address as usize..], cells.size))
        })
    }
}

impl<'a> DeviceTree<'a> {
    /// The enabled children of `/reserved-memory` in tree order; none if the node is absent.
    ///
    /// `/reserved-memory` must have `#address-cells`, `#size-cells` and an empty `ranges`.
    pub fn reserved_regions(&self) -> impl Iterator<Item = Result<ReservedRegion<'a>, DtError<'a>>> + '_ {
        let parent = self.root_child("reserved-memory");
        let cells = match parent {
            Ok(Some(p)) => reserved_memory_cells(p).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        let mut children = parent.ok().flatten().into_iter().flat_map(|p| p.children()).filter(|n| cells::is_enabled(*n));
        let mut failed = false;
        core::iter::from_fn(move || {
            if failed {
                return None;
            }
            let result = match cells {
                Err(e) => Err(e),
                Ok(None) => return None,
                Ok(Some(cells)) => decode(children.next()?, cells),
            };
            failed = result.is_err();
            Some(result)
        })
    }

    /// The reserved region whose node has `phandle`, if any.
    pub fn reserved_by_phandle(&self, phandle: u32) -> Result<Option<ReservedRegion<'a>>, DtError<'a>> {
        for region in self.reserved_regions() {
            let region = region?;
            if region.phandle == Some(phandle) {
                return Ok(Some(region));
            }
        }
        Ok(None)
    }
}

fn reserved_memory_cells<'a>(node: Node<'_, 'a>) -> Result<CellSizes, DtError<'a>> {
    let cells = child_cells(node)?;
    // Linux `__reserved_mem_check_root()` ignores the whole node without an empty `ranges`.
    match cells::prop(node, "ranges") {
        Some([]) => Ok(cells),
        _ => Err(DtError::ReservedMemoryRanges { node: node.name }),
    }
}

fn decode<'a>(node: Node<'_, 'a>, cells: CellSizes) -> Result<ReservedRegion<'a>, DtError<'a>> {
    let name = node.name;
    let compatible = str_list_prop(node, "compatible")?;
    let kind = pool_kind(compatible);
    let no_map = has_prop(node, "no-map");
    let reusable = has_prop(node, "reusable");
    let cma_default = has_prop(node, "linux,cma-default");
    if no_map && reusable {
        return Err(DtError::NoMapAndReusable { node: name });
    }
    if kind == PoolKind::RestrictedDma {
        // Linux `rmem_swiotlb_setup()` refuses these: the pool must stay mapped and exclusive.
        for flag in ["reusable", "no-map", "linux,cma-default", "linux,dma-default"] {
            if has_prop(node, flag) {
                return Err(DtError::RestrictedPoolFlag { node: name, flag });
            }
        }
    }
    // `reg` wins over `size` when both are present, as in Linux `__reserved_mem_reserve_reg()`.
    let placement = if let Some(reg) = cells::prop(node, "reg") {
        let mut entries = reg_entries(name, "reg", reg, cells)?;
        let (base, size) = entries.next().ok_or(DtError::BadPropertyLength { node: name, property: "reg", len: 0 })?;
        if entries.next().is_some() {
            return Err(DtError::TooManyRegs { node: name });
        }
        if size == 0 {
            return Err(DtError::ReservedZeroSize { node: name });
        }
        ReservedPlacement::Static(phys_range(name, base, size)?)
    } else if cells::prop(node, "size").is_some() {
        let size = sized_prop(node, "size", cells.size)?.unwrap_or(0);
        if size == 0 {
            return Err(DtError::ReservedZeroSize { node: name });
        }
        let alignment = sized_prop(node, "alignment", cells.size)?;
        if let Some(a) = alignment {
            if !a.is_power_of_two() {
                return Err(DtError::BadAlignment { node: name, alignment: a });
            }
        }
        let alloc_ranges = cells::prop(node, "alloc-ranges").unwrap_or(&[]);
        for (base, size) in reg_entries(name, "alloc-ranges", alloc_ranges, cells)? {
            phys_range(name, base, size)?;
            if size == 0 {
                return Err(DtError::BadValue { node: name, property: "alloc-ranges" });
            }
        }
        ReservedPlacement::Dynamic { size, alignment, alloc_ranges, cells }
    } else {
        return Err(DtError::ReservedNoRegOrSize { node: name });
    };
    let phandle = cells::u32_prop(node, "phandle")?;
    Ok(ReservedRegion { name, compatible, kind, placement, no_map, reusable, cma_default, phandle })
}

/// A property holding exactly one value of `cells` cells (`size`, `alignment`).
fn sized_prop<'a>(node: Node<'_, 'a>, property: &'static str, cells: u32) -> Result<Option<PhysAddr>, DtError<'a>> {
    match cells::prop(node, property) {
        None => Ok(None),
        Some(v) if v.len() == 4 * cells as usize => Ok(Some(read_cells(v, cells))),
        Some(v) => Err(DtError::BadPropertyLength { node: node.name, property, len: v.len() }),
    }
}
