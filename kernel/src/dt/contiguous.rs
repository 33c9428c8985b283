//! Where the default CMA area lies, decided while the boot memory map is built (Linux
//! `kernel/dma/contiguous.c`: `dma_contiguous_reserve()` for `cma=`, `rmem_cma_setup()` for a
//! `/reserved-memory` node `compatible = "shared-dma-pool"` with `reusable` and
//! `linux,cma-default`).
//!
//! - `cma=<size>` wins over the node, as in Linux; `cma=0` means no area.
//! - A fixed node (`reg`) must be whole pageblocks: it is refused otherwise (Linux refuses a
//!   region not aligned to `CMA_MIN_ALIGNMENT_BYTES`). A dynamic one (`size`, optional
//!   `alignment` and `alloc-ranges`) and the bootarg's size are rounded up to whole pageblocks
//!   and aligned to at least one pageblock, with a warning saying so.
//! - A dynamic area goes into ZONE_DMA (below the smallest `dma-ranges` limit) when it fits
//!   there, else anywhere its `alloc-ranges` allow.
//! - Bad input (overlap with the SWIOTLB pool or another reserved region, outside RAM, larger
//!   than RAM, no room) is a [`CmaSetupError`] naming the node or the bootarg; the boot goes on
//!   without a CMA area.
//!
//! Runs before the heap exists: nothing here allocates. It lives in `dt` because it reads
//! `/reserved-memory` nodes; it places the area through memblock's device-tree-free API.

#![forbid(unsafe_code)]

use core::fmt;

use super::{DeviceTree, DtError, ReservedPlacement, ReservedRegion};
use crate::bootargs::early_cma;
use crate::mm::memblock::{Memblock, MemblockError, RegionFlags, RegionKind};
use crate::mm::page_alloc::PAGEBLOCK_SIZE;
use crate::mm::{align_up, PhysAddr, PhysRange};

/// The label of an area made by the `cma=` bootarg (a node's area carries the node's name).
pub const CMA_BOOTARG_LABEL: &str = "cma-default";

/// Where the default CMA area was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmaSource<'a> {
    /// `cma=<size>`.
    Bootarg {
        /// The size asked for, in bytes.
        size: u64,
    },
    /// A `linux,cma-default` node of `/reserved-memory`.
    Node(ReservedRegion<'a>),
}

/// Why the default CMA area could not be reserved; the boot goes on without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmaSetupError<'a> {
    /// `cma=` could not be parsed.
    Bootarg(&'static str),
    /// `cma=` asks for more than all RAM.
    LargerThanRam {
        /// The size asked for, in bytes.
        size: u64,
        /// All RAM of the memory map, in bytes.
        ram: u64,
    },
    /// A fixed CMA node whose base or size is not a multiple of a pageblock.
    Misaligned {
        /// The node (the area's label).
        node: &'a str,
        /// Its `reg`.
        range: PhysRange,
    },
    /// A CMA node that overlaps another reserved region (the SWIOTLB pool included), lies
    /// outside RAM, or finds no room: the memory map's error names both regions.
    Memblock(MemblockError<'a>),
    /// The device tree could not be read.
    DeviceTree(DtError<'a>),
}

impl<'a> CmaSource<'a> {
    /// The area asked for, if any: `cma=` if given (a node is then ignored, with a note), else
    /// the first enabled `/reserved-memory` node that is a reusable `shared-dma-pool` with
    /// `linux,cma-default`. A second such node is ignored with a warning.
    pub fn find(dt: &DeviceTree<'a>) -> Result<Option<Self>, CmaSetupError<'a>> {
        let mut nodes = dt.reserved_regions().filter(|r| r.as_ref().map_or(true, ReservedRegion::is_default_cma));
        let node = nodes.next().transpose().map_err(CmaSetupError::DeviceTree)?;
        if let Some(Ok(other)) = nodes.next() {
            log::warn!("cma: ignoring /reserved-memory/{}: only one linux,cma-default area", other.name);
        }
        match early_cma(dt.bootargs().map_err(CmaSetupError::DeviceTree)?.unwrap_or("")) {
            Some(Err(why)) => Err(CmaSetupError::Bootarg(why)),
            Some(Ok(0)) => Ok(None),
            Some(Ok(size)) => {
                if let Some(n) = node {
                    log::info!("cma: cma= overrides /reserved-memory/{}", n.name);
                }
                Ok(Some(CmaSource::Bootarg { size }))
            }
            None => Ok(node.map(CmaSource::Node)),
        }
    }

    fn label(&self) -> &'a str {
        match self {
            CmaSource::Bootarg { .. } => CMA_BOOTARG_LABEL,
            CmaSource::Node(n) => n.name,
        }
    }

    /// Whether the area has a fixed place (reserved with the other fixed regions, before any
    /// dynamic one is placed).
    pub fn is_static(&self) -> bool {
        matches!(self, CmaSource::Node(ReservedRegion { placement: ReservedPlacement::Static(_), .. }))
    }

    /// The node this source came from, if any (the memory map skips it in its own passes).
    pub fn node_name(&self) -> Option<&'a str> {
        match self {
            CmaSource::Bootarg { .. } => None,
            CmaSource::Node(n) => Some(n.name),
        }
    }

    /// Reserves the area in `map`, labelled with the node's name or [`CMA_BOOTARG_LABEL`], kind
    /// [`RegionKind::Cma`]. `dma_limit` ends ZONE_DMA (first address above it), if any.
    pub fn reserve(&self, map: &mut Memblock<'a>, dma_limit: Option<PhysAddr>) -> Result<PhysRange, CmaSetupError<'a>> {
        let label = self.label();
        let (size, align, node) = match *self {
            CmaSource::Node(n) => match n.placement {
                ReservedPlacement::Static(range) => {
                    if !range.base().is_multiple_of(PAGEBLOCK_SIZE) || !range.size().is_multiple_of(PAGEBLOCK_SIZE) {
                        return Err(CmaSetupError::Misaligned { node: label, range });
                    }
                    map.reserve(range.base(), range.size(), label, flags(false)).map_err(CmaSetupError::Memblock)?;
                    return Ok(range);
                }
                ReservedPlacement::Dynamic { size, alignment, .. } => (size, alignment.unwrap_or(PAGEBLOCK_SIZE), Some(n)),
            },
            CmaSource::Bootarg { size } => {
                let ram = map.total_ram();
                if size > ram {
                    return Err(CmaSetupError::LargerThanRam { size, ram });
                }
                (size, PAGEBLOCK_SIZE, None)
            }
        };
        let named = Named(node.map(|n| n.name));
        let rounded = align_up(size, PAGEBLOCK_SIZE).ok_or(CmaSetupError::LargerThanRam { size, ram: map.total_ram() })?;
        if rounded != size {
            log::warn!("cma: {named}: size {size:#x} is not whole 2 MiB pageblocks: rounded up to {rounded:#x}");
        }
        if align < PAGEBLOCK_SIZE {
            log::warn!("cma: {named}: alignment {align:#x} is less than a pageblock: raised to {PAGEBLOCK_SIZE:#x}");
        }
        let align = align.max(PAGEBLOCK_SIZE);
        let zone_dma = dma_limit.and_then(|l| {
            let start = map.ram().first()?.base();
            PhysRange::from_bounds(start, l.max(start))
        });
        let mut place = |w: Option<PhysRange>| map.alloc(rounded, align, w, label, flags(true));
        let mut placed = Err(MemblockError::NoSpace { label, size: rounded, align });
        // ZONE_DMA first (a later SWIOTLB policy wants its chunks there), then anywhere the
        // node's `alloc-ranges` allow (Linux: the first window that fits wins).
        match node.filter(|n| n.alloc_ranges().next().is_some()) {
            Some(n) => {
                let in_zone_dma = n.alloc_ranges().filter_map(|w| w.intersection(&zone_dma?));
                for w in in_zone_dma.chain(n.alloc_ranges()) {
                    placed = placed.or_else(|_| place(Some(w)));
                }
            }
            None => {
                if zone_dma.is_some() {
                    placed = place(zone_dma);
                }
                placed = placed.or_else(|_| place(None));
            }
        }
        let base = placed.map_err(CmaSetupError::Memblock)?;
        PhysRange::new(base, rounded).ok_or(CmaSetupError::LargerThanRam { size, ram: map.total_ram() })
    }
}

/// Names the source in a warning: the node's path, or the bootarg.
struct Named<'a>(Option<&'a str>);

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(node) => write!(f, "/reserved-memory/{node}"),
            None => f.write_str("cma="),
        }
    }
}

fn flags(dynamic: bool) -> RegionFlags {
    RegionFlags { kind: RegionKind::Cma, no_map: false, reusable: true, dynamic }
}

impl fmt::Display for CmaSetupError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmaSetupError::Bootarg(why) => write!(f, "cma=: {why}"),
            CmaSetupError::LargerThanRam { size, ram } => write!(f, "cma={size:#x} is larger than RAM ({ram:#x} bytes)"),
            CmaSetupError::Misaligned { node, range } => write!(
                f,
                "/reserved-memory/{node}: [{:#x}-{:#x}) is not whole 2 MiB pageblocks; refused (a fixed region cannot be moved)",
                range.base(),
                range.end()
            ),
            CmaSetupError::Memblock(e) => write!(f, "{e}"),
            CmaSetupError::DeviceTree(e) => write!(f, "{e}"),
        }
    }
}
