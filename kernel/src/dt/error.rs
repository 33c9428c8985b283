//! The one error type of the device-tree module.

use core::fmt;

/// Everything that can be wrong with a device tree, from a corrupt header to a binding violation.
///
/// `node` fields hold the node name as it appears in the blob (`pl011@9000000`), `property`
/// fields the property name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtError<'a> {
    /// The slice is shorter than the 40-byte FDT header.
    HeaderTruncated {
        /// How many bytes the slice has.
        len: usize,
    },
    /// The header's magic is not 0xd00dfeed.
    BadMagic {
        /// The first word of the blob, big-endian.
        found: u32,
    },
    /// The header's `totalsize` is larger than the bytes we were given.
    BlobTruncated {
        /// The header's `totalsize`.
        totalsize: usize,
        /// How many bytes the caller's slice has.
        available: usize,
    },
    /// The FDT version is older than 17 (no `size_dt_struct`).
    UnsupportedVersion {
        /// The header's `version`.
        version: u32,
    },
    /// A header offset/size points outside `totalsize`.
    BlockOutOfRange {
        /// Which block: `"header"`, `"structure"`, `"strings"` or `"memory reservation"`.
        block: &'static str,
    },
    /// The structure block is not a well-formed token stream.
    MalformedStructure {
        /// Byte offset of the bad token from the start of the structure block.
        offset: usize,
        /// What is wrong there, e.g. `"missing FDT_END"`.
        reason: &'static str,
    },
    /// Nodes are nested deeper than we walk.
    TooDeep {
        /// The first node below the deepest level we walk.
        node: &'a str,
    },
    /// A node whose children have `reg` lacks `#address-cells`.
    MissingAddressCells {
        /// The parent node without `#address-cells`.
        node: &'a str,
    },
    /// A node whose children have `reg` lacks `#size-cells`.
    MissingSizeCells {
        /// The parent node without `#size-cells`.
        node: &'a str,
    },
    /// A cell count other than 1 or 2 where we decode 64-bit addresses or sizes.
    UnsupportedCells {
        /// The node carrying the cell count.
        node: &'a str,
        /// `#address-cells` or `#size-cells`.
        property: &'static str,
        /// The count it gives.
        cells: u32,
    },
    /// A property's length does not fit its binding (e.g. `reg` not a multiple of one entry).
    BadPropertyLength {
        /// The node whose property is bad.
        node: &'a str,
        /// The property with the bad length.
        property: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A property that must be a NUL-terminated UTF-8 string (list) is not one.
    BadString {
        /// The node whose property is bad.
        node: &'a str,
        /// The property that is not a string.
        property: &'static str,
    },
    /// A property has a value its binding does not allow.
    BadValue {
        /// The node whose property is bad.
        node: &'a str,
        /// The property with the bad value.
        property: &'static str,
    },
    /// `base + size` of a region does not fit in 64 bits.
    RegionOverflow {
        /// The node whose `reg` is bad.
        node: &'a str,
    },
    /// A node has more `reg` entries than a [`Device`](super::Device) holds.
    TooManyRegs {
        /// The node with too many `reg` entries.
        node: &'a str,
    },
    /// An address cannot be translated to a CPU address through the `ranges` of `bus`.
    Untranslatable {
        /// The node whose address cannot be translated.
        node: &'a str,
        /// The ancestor bus whose `ranges` is missing or has no window for it.
        bus: &'a str,
    },
    /// A phandle does not name a node (of the kind the property requires).
    UnknownPhandle {
        /// The node carrying the phandle.
        node: &'a str,
        /// The property holding it, e.g. `interrupt-parent`.
        property: &'static str,
        /// The phandle value that names nothing suitable.
        phandle: u32,
    },
    /// `/chosen/stdout-path` (or the alias it names) does not resolve to a node.
    StdoutNotFound {
        /// The path (or alias) as written, without any `:options` suffix.
        path: &'a str,
    },
    /// A node the caller needs is absent.
    NotFound {
        /// What was looked for, e.g. `"GIC node"`.
        what: &'static str,
    },
    /// A node required to have `reg` has none.
    MissingReg {
        /// The node without `reg`.
        node: &'a str,
    },
    /// `/reserved-memory` is missing `ranges` or has a non-empty one.
    ReservedMemoryRanges {
        /// The `/reserved-memory` node.
        node: &'a str,
    },
    /// A `/reserved-memory` child has neither `reg` nor `size`.
    ReservedNoRegOrSize {
        /// The reserved-memory child.
        node: &'a str,
    },
    /// A reserved region has a zero size.
    ReservedZeroSize {
        /// The reserved-memory child.
        node: &'a str,
    },
    /// A reserved region is both `no-map` and `reusable`.
    NoMapAndReusable {
        /// The reserved-memory child.
        node: &'a str,
    },
    /// A `restricted-dma-pool` carries a flag Linux `rmem_swiotlb_setup()` rejects.
    RestrictedPoolFlag {
        /// The `restricted-dma-pool` node.
        node: &'a str,
        /// The offending property: `reusable`, `no-map`, `linux,cma-default` or
        /// `linux,dma-default`.
        flag: &'static str,
    },
    /// A reserved region's `alignment` is zero or not a power of two.
    BadAlignment {
        /// The reserved-memory child.
        node: &'a str,
        /// The `alignment` it gives.
        alignment: u64,
    },
    /// An interrupt specifier does not follow the GIC 3-cell binding.
    BadInterrupt {
        /// The node whose `interrupts` is bad.
        node: &'a str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for DtError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DtError::*;
        match *self {
            HeaderTruncated { len } => {
                write!(f, "FDT: {len} bytes is too short for the 40-byte header")
            }
            BadMagic { found } => write!(f, "FDT: bad magic {found:#010x} (want 0xd00dfeed)"),
            BlobTruncated { totalsize, available } => {
                write!(f, "FDT: totalsize {totalsize} but only {available} bytes available")
            }
            UnsupportedVersion { version } => {
                write!(f, "FDT: version {version} unsupported (need >= 17)")
            }
            BlockOutOfRange { block } => write!(f, "FDT: {block} block lies outside totalsize"),
            MalformedStructure { offset, reason } => {
                write!(f, "FDT: malformed structure block at offset {offset:#x}: {reason}")
            }
            TooDeep { node } => write!(f, "{node}: nodes nested too deeply"),
            MissingAddressCells { node } => {
                write!(f, "{node}: missing #address-cells, needed to decode its children's reg")
            }
            MissingSizeCells { node } => {
                write!(f, "{node}: missing #size-cells, needed to decode its children's reg")
            }
            UnsupportedCells { node, property, cells } => {
                write!(f, "{node}: {property} uses {cells} cells, only 1 or 2 are supported")
            }
            BadPropertyLength { node, property, len } => {
                write!(f, "{node}: property {property} has invalid length {len}")
            }
            BadString { node, property } => {
                write!(f, "{node}: property {property} is not a NUL-terminated UTF-8 string")
            }
            BadValue { node, property } => write!(f, "{node}: property {property} has a bad value"),
            RegionOverflow { node } => write!(f, "{node}: region base + size overflows 64 bits"),
            TooManyRegs { node } => write!(f, "{node}: too many reg entries"),
            Untranslatable { node, bus } => write!(f, "{node}: address cannot be translated through bus {bus} (no ranges, or no window)"),
            UnknownPhandle { node, property, phandle } => {
                write!(f, "{node}: {property} phandle {phandle:#x} does not name a valid node")
            }
            StdoutNotFound { path } => write!(f, "/chosen: stdout-path {path:?} does not resolve"),
            NotFound { what } => write!(f, "device tree has no {what}"),
            MissingReg { node } => write!(f, "{node}: missing reg"),
            ReservedMemoryRanges { node } => {
                write!(f, "{node}: ranges must be present and empty")
            }
            ReservedNoRegOrSize { node } => {
                write!(f, "{node}: reserved region has neither reg nor size")
            }
            ReservedZeroSize { node } => write!(f, "{node}: reserved region has zero size"),
            NoMapAndReusable { node } => {
                write!(f, "{node}: reserved region is both no-map and reusable")
            }
            RestrictedPoolFlag { node, flag } => {
                write!(f, "{node}: restricted-dma-pool must not be {flag}")
            }
            BadAlignment { node, alignment } => {
                write!(f, "{node}: alignment {alignment:#x} is not a power of two")
            }
            BadInterrupt { node, reason } => write!(f, "{node}: bad interrupt specifier: {reason}"),
        }
    }
}
