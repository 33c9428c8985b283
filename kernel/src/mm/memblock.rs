//! The boot memory map (Linux `mm/memblock.c`): RAM banks and labelled reserved regions.
//!
//! Filled once before the heap exists (so: fixed capacity, no allocation) by the device-tree code
//! (`build_memblock` in `dt/memblock.rs`, as Linux's `drivers/of/fdt.c` calls `memblock_add()`
//! and `memblock_reserve()`; this file knows nothing of device trees), then handed to the page
//! allocator as [`Memblock::free_ranges`]. Unlike Linux we never merge
//! reserved regions: each keeps its label so the printed map says who owns what, and any overlap
//! between reservations is an error rather than a silent merge.
#![forbid(unsafe_code)]

use core::fmt;

use crate::mm::{align_down, align_up, PhysAddr, PhysRange, PAGE_SIZE};

/// Most RAM banks the map holds (after merging adjacent ones).
pub const MAX_RAM_BANKS: usize = 64;
/// Most reserved regions the map holds.
pub const MAX_RESERVED_REGIONS: usize = 64;

/// A fixed-capacity list: the boot-time stand-in for `Vec`.
#[derive(Clone, Copy)]
pub struct ArrayList<T: Copy + Default, const N: usize> {
    items: [T; N],
    len: usize,
}

/// An [`ArrayList`] is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityError;

impl<T: Copy + Default, const N: usize> Default for ArrayList<T, N> {
    fn default() -> Self {
        Self { items: [T::default(); N], len: 0 }
    }
}

impl<T: Copy + Default + fmt::Debug, const N: usize> fmt::Debug for ArrayList<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl<T: Copy + Default, const N: usize> ArrayList<T, N> {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// The items in order.
    pub fn as_slice(&self) -> &[T] {
        &self.items[..self.len]
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Inserts `item` at `index` (<= len), shifting the tail up.
    pub fn insert(&mut self, index: usize, item: T) -> Result<(), CapacityError> {
        if self.len == N || index > self.len {
            return Err(CapacityError);
        }
        self.items.copy_within(index..self.len, index + 1);
        self.items[index] = item;
        self.len += 1;
        Ok(())
    }

    /// Removes and returns the item at `index`.
    pub fn remove(&mut self, index: usize) -> Option<T> {
        if index >= self.len {
            return None;
        }
        let item = self.items[index];
        self.items.copy_within(index + 1..self.len, index);
        self.len -= 1;
        Some(item)
    }
}

/// What a `/reserved-memory` region is for, from its `compatible` (decoded by the device-tree
/// code; the names are the binding's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// `restricted-dma-pool`.
    RestrictedDma,
    /// `shared-dma-pool`.
    SharedDma,
    /// `dmabounce,swiotlb-pool`: the default SWIOTLB pool.
    Swiotlb,
    /// No `compatible` or one we do not know: just keep out of it.
    Other,
}

impl PoolKind {
    /// The binding's name for the kind (`"reserved"` for [`PoolKind::Other`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RestrictedDma => "restricted-dma-pool",
            Self::SharedDma => "shared-dma-pool",
            Self::Swiotlb => "swiotlb-pool",
            Self::Other => "reserved",
        }
    }
}

/// Who owns a reserved region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegionKind {
    /// The kernel image.
    KernelImage,
    /// The device tree blob.
    Dtb,
    /// An entry of the FDT header's memory reservation block (`/memreserve/`).
    MemReserve,
    /// A `/reserved-memory` child, with its pool kind.
    ReservedMemory(PoolKind),
    /// Placed by [`Memblock::alloc`] for the kernel's own use (heap, page tables ...).
    #[default]
    Allocated,
    /// The default CMA area (a `linux,cma-default` node or `cma=`), given to the page
    /// allocator as MIGRATE_CMA by [`CmaArea::activate`](crate::mm::cma::CmaArea::activate).
    Cma,
}

impl RegionKind {
    /// One word for the printed map.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KernelImage => "kernel-image",
            Self::Dtb => "dtb",
            Self::MemReserve => "memreserve",
            Self::ReservedMemory(pool) => pool.as_str(),
            Self::Allocated => "allocated",
            Self::Cma => "cma",
        }
    }
}

/// A reserved region's kind and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegionFlags {
    /// Who owns it.
    pub kind: RegionKind,
    /// Must not be mapped (reserved-memory `no-map`).
    pub no_map: bool,
    /// May be lent to the OS (reserved-memory `reusable`).
    pub reusable: bool,
    /// Placed by memblock rather than fixed by its owner.
    pub dynamic: bool,
}

impl RegionFlags {
    /// Just a kind, no flags.
    pub const fn of(kind: RegionKind) -> Self {
        Self { kind, no_map: false, reusable: false, dynamic: false }
    }
}

impl fmt::Display for RegionFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.as_str())?;
        for (set, word) in [(self.no_map, "no-map"), (self.reusable, "reusable"), (self.dynamic, "dynamic")] {
            if set {
                write!(f, " {word}")?;
            }
        }
        Ok(())
    }
}

/// One reserved region of the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemblockRegion<'a> {
    /// The range.
    pub range: PhysRange,
    /// Who reserved it: a `/reserved-memory` node name, `"kernel"`, `"dtb"` ... (one word).
    pub label: &'a str,
    /// Kind and flags.
    pub flags: RegionFlags,
}

/// Errors of the boot memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemblockError<'a> {
    /// A region of zero bytes.
    ZeroSize {
        /// Who the region is for, as in [`MemblockRegion::label`].
        label: &'a str,
    },
    /// `base + size` does not fit in 64 bits.
    Overflow {
        /// Who the region is for, as in [`MemblockRegion::label`].
        label: &'a str,
        /// The region's start.
        base: PhysAddr,
        /// Its size in bytes.
        size: u64,
    },
    /// A label that is empty or contains whitespace (it would break the printed map).
    BadLabel {
        /// The label as given.
        label: &'a str,
    },
    /// A reservation not entirely inside one RAM bank.
    OutsideRam {
        /// Who the region is for, as in [`MemblockRegion::label`].
        label: &'a str,
        /// The range asked for.
        range: PhysRange,
    },
    /// A reservation overlapping an existing one.
    Overlap {
        /// Who the region is for, as in [`MemblockRegion::label`].
        label: &'a str,
        /// The range asked for.
        range: PhysRange,
        /// The label of the reservation already there.
        other: &'a str,
        /// That reservation's range.
        other_range: PhysRange,
    },
    /// A `/reserved-memory` region whose label another region already has (or the reverse):
    /// [`Memblock::find`] must name one region, or a pool could be set up over another region
    /// (a restricted-dma-pool node named `kernel`, say).
    DuplicateLabel {
        /// The label both regions have.
        label: &'a str,
    },
    /// A fixed-capacity table is full.
    Capacity {
        /// Which table: `"RAM"` (banks) or `"reserved"`.
        table: &'static str,
        /// Who the entry that did not fit is for (`"ram"` for a bank).
        label: &'a str,
    },
    /// An alignment that is zero or not a power of two.
    BadAlignment {
        /// Who the region is for, as in [`MemblockRegion::label`].
        label: &'a str,
        /// The alignment asked for, in bytes.
        align: u64,
    },
    /// No free range can hold the allocation.
    NoSpace {
        /// Who the region is for, as in [`MemblockRegion::label`].
        label: &'a str,
        /// The size asked for, in bytes.
        size: u64,
        /// The alignment asked for, in bytes.
        align: u64,
    },
}

impl fmt::Display for MemblockError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use MemblockError::*;
        let r = |r: &PhysRange| (r.base(), r.end());
        match self {
            ZeroSize { label } => write!(f, "memblock: {label}: zero size"),
            Overflow { label, base, size } => {
                write!(f, "memblock: {label}: {base:#x} + {size:#x} overflows")
            }
            BadLabel { label } => write!(f, "memblock: bad label {label:?}"),
            OutsideRam { label, range } => {
                let (s, e) = r(range);
                write!(f, "memblock: {label} [{s:#x}-{e:#x}) is not inside one RAM bank")
            }
            Overlap { label, range, other, other_range } => {
                let ((s, e), (os, oe)) = (r(range), r(other_range));
                write!(f, "memblock: {label} [{s:#x}-{e:#x}) overlaps {other} [{os:#x}-{oe:#x})")
            }
            DuplicateLabel { label } => {
                write!(f, "memblock: two regions are labelled {label:?} (reserved-memory node names must be unique)")
            }
            Capacity { table, label } => write!(f, "memblock: {table} table full adding {label}"),
            BadAlignment { label, align } => {
                write!(f, "memblock: {label}: alignment {align:#x} is not a power of two")
            }
            NoSpace { label, size, align } => {
                write!(f, "memblock: no free range for {label} ({size:#x} bytes, align {align:#x})")
            }
        }
    }
}

/// The boot memory map: sorted, merged RAM banks and sorted, disjoint, labelled reservations.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memblock<'a> {
    ram: ArrayList<PhysRange, MAX_RAM_BANKS>,
    reserved: ArrayList<MemblockRegion<'a>, MAX_RESERVED_REGIONS>,
    skipped_outside_ram: usize,
}

impl<'a> Memblock<'a> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds RAM; overlapping or adjacent banks merge (Linux `memblock_add()`).
    pub fn add_ram(&mut self, base: PhysAddr, size: u64) -> Result<(), MemblockError<'a>> {
        let label = "ram";
        let mut new = checked_range(label, base, size)?;
        // Absorb every bank that overlaps or touches the new one.
        let mut i = 0;
        while i < self.ram.len() {
            let bank = self.ram.as_slice()[i];
            if bank.base() <= new.end() && new.base() <= bank.end() {
                let start = bank.base().min(new.base());
                new = PhysRange { base: start, size: bank.end().max(new.end()) - start };
                self.ram.remove(i);
            } else {
                i += 1;
            }
        }
        let at = self.ram.as_slice().partition_point(|b| b.base() < new.base());
        self.ram.insert(at, new).map_err(|_| MemblockError::Capacity { table: "RAM", label })
    }

    /// Reserves `[base, base + size)` for `label`. It must lie inside one RAM bank and overlap
    /// no existing reservation (the error names both).
    pub fn reserve(&mut self, base: PhysAddr, size: u64, label: &'a str, flags: RegionFlags) -> Result<(), MemblockError<'a>> {
        check_label(label)?;
        let range = checked_range(label, base, size)?;
        // Regions of the kernel's own kinds may share a label ("memreserve"); a reserved-memory
        // region's label names it alone, since pools are looked up by it.
        let named = |kind: RegionKind| matches!(kind, RegionKind::ReservedMemory(_));
        if self.reserved().any(|r| r.label == label && (named(r.flags.kind) || named(flags.kind))) {
            return Err(MemblockError::DuplicateLabel { label });
        }
        if !self.ram.as_slice().iter().any(|bank| bank.contains(&range)) {
            return Err(MemblockError::OutsideRam { label, range });
        }
        let at = self.reserved.as_slice().partition_point(|r| r.range.base() < range.base());
        // Sorted and disjoint: only the neighbours can overlap.
        let neighbours = self.reserved.as_slice()[at.saturating_sub(1)..].iter().take(2);
        if let Some(other) = neighbours.into_iter().find(|r| r.range.overlaps(&range)) {
            return Err(MemblockError::Overlap { label, range, other: other.label, other_range: other.range });
        }
        self.reserved.insert(at, MemblockRegion { range, label, flags }).map_err(|_| MemblockError::Capacity { table: "reserved", label })
    }

    /// Finds and reserves `size` bytes aligned to `align` (a power of two) inside `within` if
    /// given, taking the highest free address like Linux's default top-down memblock.
    pub fn alloc(
        &mut self,
        size: u64,
        align: u64,
        within: Option<PhysRange>,
        label: &'a str,
        flags: RegionFlags,
    ) -> Result<PhysAddr, MemblockError<'a>> {
        check_label(label)?;
        if size == 0 {
            return Err(MemblockError::ZeroSize { label });
        }
        if !align.is_power_of_two() {
            return Err(MemblockError::BadAlignment { label, align });
        }
        let best = self
            .free_ranges()
            .filter_map(|free| match within {
                Some(w) => free.intersection(&w),
                None => Some(free),
            })
            .filter_map(|free| {
                let base = align_down(free.end().checked_sub(size)?, align);
                (base >= free.base()).then_some(base)
            })
            .max()
            .ok_or(MemblockError::NoSpace { label, size, align })?;
        self.reserve(best, size, label, flags)?;
        Ok(best)
    }

    /// The RAM banks, sorted and disjoint.
    pub fn ram(&self) -> &[PhysRange] {
        self.ram.as_slice()
    }

    /// The reserved regions, sorted by address.
    pub fn reserved(&self) -> impl Iterator<Item = &MemblockRegion<'a>> + '_ {
        self.reserved.as_slice().iter()
    }

    /// The reserved region labelled `label`, if any.
    pub fn find(&self, label: &str) -> Option<&MemblockRegion<'a>> {
        self.reserved().find(|r| r.label == label)
    }

    /// RAM minus every reservation, sorted.
    pub fn free_ranges(&self) -> FreeRanges<'_, 'a> {
        FreeRanges { map: self, bank: 0, cursor: None, next_reserved: 0, subtract: |_| true }
    }

    /// RAM minus the `no-map` reservations, sorted: what the kernel's page tables map.
    pub fn mapped_ranges(&self) -> FreeRanges<'_, 'a> {
        FreeRanges { map: self, bank: 0, cursor: None, next_reserved: 0, subtract: |r| r.flags.no_map }
    }

    /// True if `addr` is in a RAM bank.
    pub fn is_ram(&self, addr: PhysAddr) -> bool {
        self.ram().iter().any(|r| r.base() <= addr && addr < r.end())
    }

    /// Whether `range` overlaps no RAM bank at all.
    pub fn outside_ram(&self, range: &PhysRange) -> bool {
        !self.ram.as_slice().iter().any(|bank| bank.overlaps(range))
    }

    /// Static `/reserved-memory` regions skipped because they lie wholly outside RAM.
    pub fn skipped_outside_ram(&self) -> usize {
        self.skipped_outside_ram
    }

    /// Counts one more static region skipped because it lies wholly outside RAM (see
    /// [`Memblock::outside_ram`]); the device-tree scan decides and logs the skip.
    pub fn note_skipped_outside_ram(&mut self) {
        self.skipped_outside_ram += 1;
    }

    /// Bytes of RAM.
    pub fn total_ram(&self) -> u64 {
        self.ram().iter().map(PhysRange::size).sum()
    }

    /// Lines for the boot log, one per region sorted by address: free RAM as `usable`, the
    /// rest as `label kind [flags]`. Same as the `Display` impl.
    pub fn regions_for_print(&self) -> impl fmt::Display + '_ {
        self
    }

    /// The default CMA area's region, if one was reserved.
    pub fn cma_region(&self) -> Option<&MemblockRegion<'a>> {
        self.reserved().find(|r| r.flags.kind == RegionKind::Cma)
    }
}

fn checked_range<'a>(label: &'a str, base: PhysAddr, size: u64) -> Result<PhysRange, MemblockError<'a>> {
    if size == 0 {
        return Err(MemblockError::ZeroSize { label });
    }
    PhysRange::new(base, size).ok_or(MemblockError::Overflow { label, base, size })
}

fn check_label(label: &str) -> Result<(), MemblockError<'_>> {
    if label.is_empty() || label.contains(char::is_whitespace) {
        return Err(MemblockError::BadLabel { label });
    }
    Ok(())
}

/// Iterator over RAM minus (some) reservations, ascending. See [`Memblock::free_ranges`] and
/// [`Memblock::mapped_ranges`].
#[derive(Debug, Clone)]
pub struct FreeRanges<'m, 'a> {
    map: &'m Memblock<'a>,
    bank: usize,
    /// Where the scan of the current bank resumes; `None` at a bank's start.
    cursor: Option<PhysAddr>,
    next_reserved: usize,
    /// Which reservations are taken out of RAM.
    subtract: fn(&MemblockRegion<'a>) -> bool,
}

impl Iterator for FreeRanges<'_, '_> {
    type Item = PhysRange;

    fn next(&mut self) -> Option<PhysRange> {
        let reserved = self.map.reserved.as_slice();
        loop {
            let bank = *self.map.ram.as_slice().get(self.bank)?;
            let start = self.cursor.unwrap_or(bank.base());
            if start >= bank.end() {
                self.bank += 1;
                self.cursor = None;
                continue;
            }
            while reserved.get(self.next_reserved).is_some_and(|r| r.range.end() <= start || !(self.subtract)(r)) {
                self.next_reserved += 1;
            }
            // Reservations lie inside one bank, sorted and disjoint.
            match reserved.get(self.next_reserved) {
                Some(r) if r.range.base() <= start => {
                    self.cursor = Some(r.range.end());
                    self.next_reserved += 1;
                }
                next => {
                    let end = next.map_or(bank.end(), |r| r.range.base().min(bank.end()));
                    self.cursor = Some(end);
                    return PhysRange::from_bounds(start, end);
                }
            }
        }
    }
}

impl fmt::Display for Memblock<'_> {
    /// `  [mem 0x%016x-0x%016x] label kind flags`, inclusive end, sorted; free RAM is `usable`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = |f: &mut fmt::Formatter<'_>, r: &PhysRange| write!(f, "  [mem {:#018x}-{:#018x}]", r.base(), r.last());
        let mut free = self.free_ranges().peekable();
        let mut reserved = self.reserved().peekable();
        loop {
            let take_free = match (free.peek(), reserved.peek()) {
                (None, None) => return Ok(()),
                (Some(a), Some(b)) => a.base() < b.range.base(),
                (a, _) => a.is_some(),
            };
            if take_free {
                let r = free.next().unwrap_or_default();
                line(f, &r)?;
                writeln!(f, " usable")?;
            } else if let Some(r) = reserved.next() {
                line(f, &r.range)?;
                writeln!(f, " {} {}", r.label, r.flags)?;
            }
        }
    }
}

/// Rounds a range inward to whole pages, for handing free memory to the page allocator.
pub fn page_aligned_inner(range: PhysRange) -> Option<PhysRange> {
    let start = align_up(range.base(), PAGE_SIZE)?;
    let end = align_down(range.end(), PAGE_SIZE);
    (start < end).then(|| PhysRange { base: start, size: end - start })
}

#[cfg(test)]
mod tests;
