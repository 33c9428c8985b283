//! Validation of the raw blob (Devicetree Specification v0.4, chapter 5) before `fdt` sees it.
//!
//! The `fdt` crate trusts its input: it slices with header offsets and `expect`s well-formed
//! tokens. So we check, once, everything it relies on: header offsets inside `totalsize`, a
//! balanced token stream, property values and names in bounds, UTF-8 names, properties before
//! subnodes, and a nesting depth our walker can hold. After this pass the crate cannot panic.

use super::{DtError, MAX_DEPTH};

/// `magic` of a flattened device tree (DT spec §5.2).
pub const FDT_MAGIC: u32 = 0xd00d_feed;
/// Size of the FDT header (version 17).
pub const FDT_HEADER_SIZE: usize = 40;

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// Reads the `totalsize` of a blob from its header, so the caller can map just the header first.
///
/// Checks the magic; the rest of the header is checked by [`DeviceTree::new`](super::DeviceTree).
pub fn blob_size(header: &[u8]) -> Result<usize, DtError<'static>> {
    if header.len() < FDT_HEADER_SIZE {
        return Err(DtError::HeaderTruncated { len: header.len() });
    }
    let magic = be32(header, 0).unwrap_or(0);
    if magic != FDT_MAGIC {
        return Err(DtError::BadMagic { found: magic });
    }
    let totalsize = be32(header, 4).unwrap_or(0) as usize;
    if totalsize < FDT_HEADER_SIZE {
        return Err(DtError::BlockOutOfRange { block: "header" });
    }
    Ok(totalsize)
}

/// Removes the `FDT_NOP` tokens from the structure block of `blob`, in place (like libfdt's
/// `fdt_pack` for NOPs), and shrinks `size_dt_struct` to match. Returns how many were removed.
///
/// QEMU edits the DTB it is given with libfdt (in `/chosen`), which leaves NOP tokens behind; the
/// `fdt` crate skips them only in some places, and [`DeviceTree::new`](super::DeviceTree::new)
/// refuses them. Run this on the blob first. Malformed blobs get the same errors as validation.
pub fn strip_nops(blob: &mut [u8]) -> Result<usize, DtError<'static>> {
    let bad = |offset: usize, reason: &'static str| DtError::MalformedStructure { offset, reason };
    let totalsize = blob_size(blob)?;
    if totalsize > blob.len() {
        return Err(DtError::BlobTruncated { totalsize, available: blob.len() });
    }
    let field = |blob: &[u8], i: usize| be32(blob, 4 * i).unwrap_or(0) as usize;
    let (off_struct, size_struct) = (field(blob, 2), field(blob, 9));
    block(&blob[..totalsize], off_struct, size_struct, "structure")?;
    let structs = &mut blob[off_struct..off_struct + size_struct];
    let (mut read, mut write, mut removed) = (0usize, 0usize, 0usize);
    loop {
        let token = be32(structs, read).ok_or(bad(read, "structure block ends without FDT_END"))?;
        let len = match token {
            FDT_BEGIN_NODE => {
                let name = structs.get(read + 4..).ok_or(bad(read, "truncated node"))?;
                let nlen = name.iter().position(|&b| b == 0).ok_or(bad(read, "unterminated node name"))?;
                4 + align4(nlen + 1)
            }
            FDT_END_NODE | FDT_END | FDT_NOP => 4,
            FDT_PROP => {
                let vlen = be32(structs, read + 4).ok_or(bad(read, "truncated property"))? as usize;
                12usize.checked_add(vlen).map(align4).ok_or(bad(read, "property too long"))?
            }
            _ => return Err(bad(read, "unknown token")),
        };
        if read.checked_add(len).is_none_or(|end| end > structs.len()) {
            return Err(bad(read, "token past the structure block"));
        }
        if token == FDT_NOP {
            removed += 1;
        } else {
            structs.copy_within(read..read + len, write);
            write += len;
        }
        read += len;
        if token == FDT_END {
            break;
        }
    }
    blob[36..40].copy_from_slice(&(write as u32).to_be_bytes()); // size_dt_struct
    Ok(removed)
}

/// Checks the header and the whole structure block of `blob`.
pub(super) fn validate(blob: &[u8]) -> Result<(), DtError<'static>> {
    let totalsize = blob_size(blob)?;
    if totalsize > blob.len() {
        return Err(DtError::BlobTruncated { totalsize, available: blob.len() });
    }
    let blob = &blob[..totalsize];
    let field = |i: usize| be32(blob, 4 * i).unwrap_or(0) as usize;
    let (off_struct, off_strings, off_rsvmap) = (field(2), field(3), field(4));
    let version = field(5) as u32;
    let (size_strings, size_struct) = (field(8), field(9));
    if version < 17 {
        return Err(DtError::UnsupportedVersion { version });
    }
    let structs = block(blob, off_struct, size_struct, "structure")?;
    let strings = block(blob, off_strings, size_strings, "strings")?;
    validate_rsvmap(blob, off_rsvmap)?;
    validate_structure(structs, strings)
}

fn be32(data: &[u8], offset: usize) -> Option<u32> {
    let bytes = data.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn block<'b>(blob: &'b [u8], offset: usize, size: usize, name: &'static str) -> Result<&'b [u8], DtError<'static>> {
    let end = offset.checked_add(size).ok_or(DtError::BlockOutOfRange { block: name })?;
    if offset < FDT_HEADER_SIZE || end > blob.len() {
        return Err(DtError::BlockOutOfRange { block: name });
    }
    Ok(&blob[offset..end])
}

/// The memory reservation block (§5.3): 16-byte entries ended by an all-zero entry.
fn validate_rsvmap(blob: &[u8], offset: usize) -> Result<(), DtError<'static>> {
    const ERR: DtError<'static> = DtError::BlockOutOfRange { block: "memory reservation" };
    if offset < FDT_HEADER_SIZE || !offset.is_multiple_of(8) {
        return Err(ERR);
    }
    let mut entries = blob.get(offset..).ok_or(ERR)?.chunks_exact(16);
    match entries.find(|e| e.iter().all(|&b| b == 0)) {
        Some(_) => Ok(()),
        None => Err(ERR),
    }
}

/// Walks the token stream (§5.4) and checks every assumption the `fdt` crate makes.
fn validate_structure(structs: &[u8], strings: &[u8]) -> Result<(), DtError<'static>> {
    let bad = |offset: usize, reason: &'static str| DtError::MalformedStructure { offset, reason };
    let mut pos = 0;
    let mut depth = 0usize;
    // Properties must precede subnodes: `fdt` stops reading properties at the first subnode.
    let mut seen_child = false;
    let mut root_closed = false;
    loop {
        let token = be32(structs, pos).ok_or(bad(pos, "missing FDT_END"))?;
        let at = pos;
        pos += 4;
        match token {
            FDT_BEGIN_NODE => {
                if root_closed || (depth == 0 && at != 0) {
                    return Err(bad(at, "node outside the root node"));
                }
                let rest = structs.get(pos..).unwrap_or_default();
                let len = rest.iter().position(|&b| b == 0).ok_or(bad(at, "unterminated name"))?;
                let name = core::str::from_utf8(&rest[..len]).map_err(|_| bad(at, "non-UTF-8 node name"))?;
                if depth > 0 && name.is_empty() {
                    return Err(bad(at, "empty node name"));
                }
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(bad(at, "nodes nested too deeply"));
                }
                seen_child = false;
                pos = align4(pos + len + 1);
            }
            FDT_END_NODE => {
                if depth == 0 {
                    return Err(bad(at, "unbalanced FDT_END_NODE"));
                }
                depth -= 1;
                root_closed = depth == 0;
                // Whatever follows in the parent is a sibling node or the parent's end.
                seen_child = true;
            }
            FDT_PROP => {
                if depth == 0 {
                    return Err(bad(at, "property outside a node"));
                }
                if seen_child {
                    return Err(bad(at, "property after a subnode"));
                }
                let len = be32(structs, pos).ok_or(bad(at, "truncated property"))? as usize;
                let name_off = be32(structs, pos + 4).ok_or(bad(at, "truncated property"))?;
                pos += 8;
                if pos.checked_add(len).is_none_or(|end| end > structs.len()) {
                    return Err(bad(at, "property value past the structure block"));
                }
                let name = strings.get(name_off as usize..).ok_or(bad(at, "bad name offset"))?;
                let nlen = name.iter().position(|&b| b == 0).ok_or(bad(at, "unterminated name"))?;
                core::str::from_utf8(&name[..nlen]).map_err(|_| bad(at, "non-UTF-8 name"))?;
                pos = align4(pos + len);
            }
            // The `fdt` crate does not skip NOPs everywhere (e.g. between properties when
            // skipping a subtree), so a blob with NOPs could make it panic. dtc and QEMU never
            // emit them; refuse rather than risk it.
            FDT_NOP => return Err(bad(at, "FDT_NOP tokens are not supported")),
            FDT_END => {
                return if root_closed { Ok(()) } else { Err(bad(at, "FDT_END inside a node")) };
            }
            _ => return Err(bad(at, "unknown token")),
        }
    }
}

fn align4(x: usize) -> usize {
    (x + 3) & !3
}
