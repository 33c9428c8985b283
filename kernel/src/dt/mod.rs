//! Flattened device tree interpretation: the memory map, `/chosen`, `/reserved-memory` and the
//! devices the boot code needs, decoded strictly and without allocating.
//!
//! The `fdt` crate walks the structure (nodes, properties, strings); everything with semantics
//! is decoded here: `reg` with the parent's explicit `#address-cells`/`#size-cells`, address
//! translation through `ranges`, DMA limits from `dma-ranges`, and the reserved-memory binding
//! (Linux `Documentation/devicetree/bindings/reserved-memory/`). Bad input is a [`DtError`]
//! naming the node, never a panic: [`DeviceTree::new`] validates the blob before `fdt` reads it.
//!
//! Nothing here allocates: it runs before the heap exists.
#![forbid(unsafe_code)]

mod arm;
mod blob;
mod cells;
mod chosen;
mod contiguous;
mod devices;
mod dma;
mod error;
mod memblock;
mod memory;
mod reserved;
mod walk;

#[cfg(test)]
mod tests;

pub use arm::{ArchTimer, CpuNode, Gic, GicInterrupt, GicInterruptKind, PsciMethod};
pub use blob::{blob_size, strip_nops, FDT_HEADER_SIZE, FDT_MAGIC};
pub use cells::{CellSizes, StrList};
pub use contiguous::{CmaSetupError, CmaSource, CMA_BOOTARG_LABEL};
pub use devices::{Device, MAX_REGS};
pub use error::DtError;
pub use memblock::{build_memblock, BuildMemblockError};
pub use reserved::{
    ReservedPlacement, ReservedRegion, COMPATIBLE_RESTRICTED_DMA_POOL, COMPATIBLE_SHARED_DMA_POOL, COMPATIBLE_SWIOTLB_POOL,
};

use fdt::Fdt;

use crate::mm::PhysRange;
use cells::{base_name, Node};

/// Deepest node nesting we walk (the root is depth 1). Real trees stay under 8.
pub const MAX_DEPTH: usize = 16;

/// A validated flattened device tree.
#[derive(Clone, Copy)]
pub struct DeviceTree<'a> {
    fdt: Fdt<'a>,
    blob: &'a [u8],
}

impl core::fmt::Debug for DeviceTree<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DeviceTree").field("total_size", &self.blob.len()).finish()
    }
}

impl<'a> DeviceTree<'a> {
    /// Validates `blob` (header, offsets, token stream) and wraps it.
    ///
    /// `blob` may be longer than the tree; only `totalsize` bytes are used.
    pub fn new(blob: &'a [u8]) -> Result<Self, DtError<'a>> {
        blob::validate(blob)?;
        let blob = &blob[..blob_size(blob)?];
        let fdt = Fdt::new(blob).map_err(|_| DtError::BlobTruncated { totalsize: blob.len(), available: blob.len() })?;
        Ok(Self { fdt, blob })
    }

    /// The blob's `totalsize` in bytes.
    pub fn total_size(&self) -> usize {
        self.blob.len()
    }

    /// The blob itself (`totalsize` bytes).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.blob
    }

    /// The entries of the header's memory reservation block (`/memreserve/`, DT spec §5.3),
    /// as raw `(address, size)`; the caller validates them against RAM.
    pub fn memreserve_entries(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        let offset = cells::read_cells(&self.blob[16..20], 1) as usize;
        // Validated by `blob::validate`: in range and terminated by an all-zero entry.
        self.blob[offset..]
            .chunks_exact(16)
            .map(|e| (cells::read_cells(e, 2), cells::read_cells(&e[8..], 2)))
            .take_while(|&(a, s)| a != 0 || s != 0)
    }

    fn root(&self) -> Result<Node<'_, 'a>, DtError<'a>> {
        self.fdt.all_nodes().next().ok_or(DtError::NotFound { what: "root node" })
    }

    /// The child of the root whose base name is `name` (`chosen`, `reserved-memory` ...).
    fn root_child(&self, name: &str) -> Result<Option<Node<'_, 'a>>, DtError<'a>> {
        Ok(self.root()?.children().find(|n| base_name(n.name) == name))
    }

    /// The node whose `phandle` property is `phandle`.
    fn node_by_phandle(&self, phandle: u32) -> Option<Node<'_, 'a>> {
        self.fdt.find_phandle(phandle)
    }
}

/// Builds the CPU physical range of a decoded `(base, size)`, rejecting overflow.
fn phys_range<'a>(node: &'a str, base: u64, size: u64) -> Result<PhysRange, DtError<'a>> {
    PhysRange::new(base, size).ok_or(DtError::RegionOverflow { node })
}
