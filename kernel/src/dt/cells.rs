//! Property decoding: cells, `reg`-style tuples, strings and string lists.
//!
//! We decode `reg` ourselves rather than through `fdt`'s `reg()`, which silently defaults missing
//! `#address-cells`/`#size-cells` and panics on unusual counts.

use fdt::node::FdtNode;

use super::DtError;

/// A node as `fdt` gives it to us.
pub(crate) type Node<'b, 'a> = FdtNode<'b, 'a>;

/// The `#address-cells`/`#size-cells` a bus node declares for its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellSizes {
    /// `#address-cells`: 1 or 2.
    pub address: u32,
    /// `#size-cells`: 1 or 2.
    pub size: u32,
}

impl CellSizes {
    /// Bytes in one `(address, size)` entry.
    pub const fn entry_bytes(self) -> usize {
        4 * (self.address + self.size) as usize
    }
}

/// Reads `#address-cells` and `#size-cells` of `bus`, requiring both and allowing only 1 or 2.
///
/// The DT spec gives defaults (2 and 1) but Linux warns on reliance on them and a wrong guess
/// silently misplaces every region, so a missing property is an error here.
pub(crate) fn child_cells<'a>(bus: Node<'_, 'a>) -> Result<CellSizes, DtError<'a>> {
    let address = u32_prop(bus, "#address-cells")?.ok_or(DtError::MissingAddressCells { node: bus.name })?;
    let size = u32_prop(bus, "#size-cells")?.ok_or(DtError::MissingSizeCells { node: bus.name })?;
    check_cells(bus.name, "#address-cells", address)?;
    check_cells(bus.name, "#size-cells", size)?;
    Ok(CellSizes { address, size })
}

pub(crate) fn check_cells<'a>(node: &'a str, property: &'static str, cells: u32) -> Result<u32, DtError<'a>> {
    match cells {
        1 | 2 => Ok(cells),
        _ => Err(DtError::UnsupportedCells { node, property, cells }),
    }
}

/// A big-endian value of `cells` 32-bit cells (1 or 2) from the front of `bytes`.
pub(crate) fn read_cells(bytes: &[u8], cells: u32) -> u64 {
    bytes.chunks_exact(4).take(cells as usize).fold(0, |acc, c| (acc << 32) | u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
}

/// Finds property `name` of `node`.
pub(crate) fn prop<'a>(node: Node<'_, 'a>, name: &str) -> Option<&'a [u8]> {
    node.properties().find(|p| p.name == name).map(|p| p.value)
}

/// Whether `node` has the (usually empty, boolean) property `name`.
pub(crate) fn has_prop(node: Node<'_, '_>, name: &str) -> bool {
    prop(node, name).is_some()
}

/// A one-cell property; wrong length is an error.
pub(crate) fn u32_prop<'a>(node: Node<'_, 'a>, name: &'static str) -> Result<Option<u32>, DtError<'a>> {
    match prop(node, name) {
        None => Ok(None),
        Some(v) if v.len() == 4 => Ok(Some(read_cells(v, 1) as u32)),
        Some(v) => Err(DtError::BadPropertyLength { node: node.name, property: name, len: v.len() }),
    }
}

/// A string property (one NUL-terminated UTF-8 string).
pub(crate) fn str_prop<'a>(node: Node<'_, 'a>, name: &'static str) -> Result<Option<&'a str>, DtError<'a>> {
    let Some(v) = prop(node, name) else {
        return Ok(None);
    };
    let bad = DtError::BadString { node: node.name, property: name };
    let (last, body) = v.split_last().ok_or(bad)?;
    if *last != 0 || body.contains(&0) {
        return Err(bad);
    }
    core::str::from_utf8(body).map(Some).map_err(|_| bad)
}

/// A string-list property such as `compatible` (DT spec §2.2.4.2), validated up front.
pub(crate) fn str_list_prop<'a>(node: Node<'_, 'a>, name: &'static str) -> Result<StrList<'a>, DtError<'a>> {
    match prop(node, name) {
        None => Ok(StrList::EMPTY),
        Some(v) => StrList::new(v).ok_or(DtError::BadString { node: node.name, property: name }),
    }
}

/// A validated list of NUL-terminated UTF-8 strings, iterated without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StrList<'a> {
    data: &'a [u8],
}

impl<'a> StrList<'a> {
    /// The empty list.
    pub const EMPTY: Self = Self { data: &[] };

    /// Checks that `data` is a sequence of NUL-terminated UTF-8 strings.
    pub fn new(data: &'a [u8]) -> Option<Self> {
        if data.is_empty() {
            return Some(Self::EMPTY);
        }
        if *data.last()? != 0 {
            return None;
        }
        core::str::from_utf8(data).ok()?;
        Some(Self { data })
    }

    /// The strings in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        let data = self.data;
        // Validated in `new`: UTF-8 and NUL-terminated, so splitting at NUL keeps UTF-8.
        data.split(|&b| b == 0).take(data.iter().filter(|&&b| b == 0).count()).map(|s| core::str::from_utf8(s).unwrap_or(""))
    }

    /// The first string, if any (the most specific `compatible`).
    pub fn first(&self) -> Option<&'a str> {
        self.iter().next()
    }

    /// Whether `s` is one of the strings.
    pub fn contains(&self, s: &str) -> bool {
        self.iter().any(|x| x == s)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Iterates `(address, size)` tuples of a `reg`-shaped property.
///
/// The length is checked up front so the iterator itself cannot fail.
pub(crate) fn reg_entries<'a>(
    node: &'a str,
    property: &'static str,
    value: &'a [u8],
    cells: CellSizes,
) -> Result<impl Iterator<Item = (u64, u64)> + 'a, DtError<'a>> {
    if !value.len().is_multiple_of(cells.entry_bytes()) {
        return Err(DtError::BadPropertyLength { node, property, len: value.len() });
    }
    let split = 4 * cells.address as usize;
    Ok(value.chunks_exact(cells.entry_bytes()).map(move |e| (read_cells(e, cells.address), read_cells(&e[split..], cells.size))))
}

/// Iterates `(child address, parent address, size)` triples of `ranges`/`dma-ranges`.
pub(crate) fn range_entries<'a>(
    node: &'a str,
    property: &'static str,
    value: &'a [u8],
    child_address: u32,
    parent_address: u32,
    size: u32,
) -> Result<impl Iterator<Item = (u64, u64, u64)> + 'a, DtError<'a>> {
    let entry = 4 * (child_address + parent_address + size) as usize;
    if !value.len().is_multiple_of(entry) {
        return Err(DtError::BadPropertyLength { node, property, len: value.len() });
    }
    let (c, p) = (4 * child_address as usize, 4 * (child_address + parent_address) as usize);
    Ok(value
        .chunks_exact(entry)
        .map(move |e| (read_cells(e, child_address), read_cells(&e[c..], parent_address), read_cells(&e[p..], size))))
}

/// Iterates the 32-bit cells of a property (already length-checked to a multiple of 4).
pub(crate) fn u32_cells(value: &[u8]) -> impl Iterator<Item = u32> + '_ {
    value.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
}

/// Whether a node is enabled: `status` absent, "okay" or "ok" (DT spec §2.3.4).
pub(crate) fn is_enabled(node: Node<'_, '_>) -> bool {
    matches!(prop(node, "status"), None | Some(b"okay\0") | Some(b"ok\0"))
}

/// The node's base name, without the `@unit-address`.
pub(crate) fn base_name(name: &str) -> &str {
    name.split('@').next().unwrap_or(name)
}
