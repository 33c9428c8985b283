//! A physical address range, shared by the device-tree code and memory management.
//!
//! It lives in `mm` so that imports go one way: `dt` uses `mm`'s types to fill the boot memory
//! map (as Linux's `drivers/of/fdt.c` calls `memblock_add()`), and `mm` never imports `dt`.
#![forbid(unsafe_code)]

use super::PhysAddr;

/// A non-empty-or-empty physical range `[base, base + size)` whose end fits in 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PhysRange {
    // Visible in `mm`: memblock builds ranges whose end it has already checked.
    pub(super) base: PhysAddr,
    pub(super) size: u64,
}

impl PhysRange {
    /// `[base, base + size)`, or `None` if the end does not fit in 64 bits.
    pub const fn new(base: PhysAddr, size: u64) -> Option<Self> {
        match base.checked_add(size) {
            Some(_) => Some(Self { base, size }),
            None => None,
        }
    }

    /// `[start, end)`, or `None` if `end < start`.
    pub const fn from_bounds(start: PhysAddr, end: PhysAddr) -> Option<Self> {
        match end.checked_sub(start) {
            Some(size) => Some(Self { base: start, size }),
            None => None,
        }
    }

    /// First address.
    pub const fn base(&self) -> PhysAddr {
        self.base
    }

    /// Length in bytes.
    pub const fn size(&self) -> u64 {
        self.size
    }

    /// One past the last address.
    pub const fn end(&self) -> PhysAddr {
        self.base + self.size
    }

    /// The last address (inclusive); `base - 1` wraps for an empty range, so check `size` first.
    pub const fn last(&self) -> PhysAddr {
        self.end().wrapping_sub(1)
    }

    /// Whether `other` lies entirely inside `self`.
    pub const fn contains(&self, other: &PhysRange) -> bool {
        self.base <= other.base && other.end() <= self.end()
    }

    /// Whether the two ranges share at least one address.
    pub const fn overlaps(&self, other: &PhysRange) -> bool {
        self.base < other.end() && other.base < self.end()
    }

    /// The common part, if any.
    pub fn intersection(&self, other: &PhysRange) -> Option<PhysRange> {
        let start = self.base.max(other.base);
        let end = self.end().min(other.end());
        PhysRange::from_bounds(start, end).filter(|r| r.size > 0)
    }
}
