//! Errors of the page allocator. Bad input from callers (a free of something never allocated, a
//! stale handle) is reported here and logged once where it is detected; nothing is corrupted.

use super::{MigrateType, MovablePage, ReclaimReport};
use crate::mm::PhysAddr;

/// Why [`PageAllocator::new`](super::PageAllocator::new) refused the memory map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitError {
    /// The RAM span is empty or too large to index with 32 bits of page number.
    BadSpan,
    /// A free range is not page aligned or lies outside the RAM span.
    BadRange {
        /// The range's first byte.
        start: PhysAddr,
        /// The range's end (exclusive).
        end: PhysAddr,
    },
    /// Two free ranges overlap at this address.
    Overlap(PhysAddr),
}

/// Why an allocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// No free block of the order in the allowed zones and free lists.
    NoMemory,
    /// The order is above `MAX_PAGE_ORDER`; use `alloc_contig_pageblocks` for more.
    OrderTooLarge(u8),
    /// This migrate type cannot be requested here (movable memory goes through `alloc_movable`;
    /// SWIOTLB and ISOLATE are never requested).
    WrongMigrateType(MigrateType),
    /// `alloc_contig_pageblocks` was asked for zero blocks.
    ZeroCount,
}

/// Why a movable-page handle could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandleError {
    /// The handle's page was freed or dropped (use after free).
    Stale(MovablePage),
    /// The page is pinned, so it cannot be freed.
    Pinned(MovablePage),
    /// `unpin` without a matching pin.
    NotPinned(MovablePage),
}

/// Why a free was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// The address is outside the memory this allocator manages.
    OutOfRange(PhysAddr),
    /// The address is not aligned to the order's size.
    Misaligned {
        /// The address freed.
        addr: PhysAddr,
        /// The order it was freed with.
        order: u8,
    },
    /// Nothing was allocated at this address (a tail page, a hole, or memory never handed out).
    NotAllocated(PhysAddr),
    /// The block at this address is already free.
    DoubleFree(PhysAddr),
    /// The block was allocated with another order.
    WrongOrder {
        /// The block's address.
        addr: PhysAddr,
        /// The order it was allocated with.
        allocated: u8,
        /// The order it was freed with.
        freed: u8,
    },
    /// The block is a movable page: free it through its handle.
    IsMovable(PhysAddr),
    /// A handle error (stale or pinned).
    Handle(HandleError),
}

/// Why a range of pageblocks could not be lent, given back or reclaimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// Not whole pageblocks, empty, or outside the RAM span.
    NotPageblocks {
        /// The range's first byte.
        start: PhysAddr,
        /// The range's end (exclusive).
        end: PhysAddr,
    },
    /// This pageblock is already managed by the allocator (lend, free_contig).
    AlreadyManaged(PhysAddr),
    /// This pageblock is not a lent SWIOTLB block (reclaim).
    NotSwiotlb(PhysAddr),
    /// This pageblock is not a MIGRATE_CMA block (`cma_alloc`).
    NotCma(PhysAddr),
    /// This pageblock has pages the allocator does not manage (a hole, a reservation, the edge
    /// of RAM), so it can never become one free block (compaction).
    PartlyManaged(PhysAddr),
}

/// Why one page could not be migrated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrateError {
    /// The handle is stale.
    Stale(MovablePage),
    /// The page is pinned (or was pinned again during every copy attempt).
    Pinned(MovablePage),
    /// No free page outside SWIOTLB, CMA and isolated blocks to move it to.
    NoMemory(MovablePage),
}

/// Why a long-term pin was refused (Linux: `check_and_migrate_movable_pages()` failing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinError {
    /// The handle is stale.
    Stale(MovablePage),
    /// The page lies in a SWIOTLB or CMA block and could not be migrated out of it.
    CannotMigrate(MigrateError),
}

/// Why lent SWIOTLB pageblocks could not be taken back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReclaimError {
    /// The range is not a run of lent SWIOTLB pageblocks.
    Range(RangeError),
    /// Some pages could not be moved; isolation was undone. The report says which.
    Busy(ReclaimReport),
}

impl From<HandleError> for FreeError {
    fn from(e: HandleError) -> Self {
        FreeError::Handle(e)
    }
}

impl From<RangeError> for ReclaimError {
    fn from(e: RangeError) -> Self {
        ReclaimError::Range(e)
    }
}

impl core::fmt::Display for InitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InitError::BadSpan => write!(f, "the RAM span is empty or too large"),
            InitError::BadRange { start, end } => write!(f, "free range {start:#x}-{end:#x} is not page aligned or lies outside RAM"),
            InitError::Overlap(a) => write!(f, "free ranges overlap at {a:#x}"),
        }
    }
}

impl core::fmt::Display for AllocError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AllocError::NoMemory => write!(f, "out of memory"),
            AllocError::OrderTooLarge(o) => write!(f, "order {o} is above MAX_PAGE_ORDER"),
            AllocError::WrongMigrateType(mt) => write!(f, "{mt:?} cannot be requested here"),
            AllocError::ZeroCount => write!(f, "zero pageblocks requested"),
        }
    }
}

impl core::fmt::Display for HandleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HandleError::Stale(p) => write!(f, "movable page {p:?} used after free"),
            HandleError::Pinned(p) => write!(f, "movable page {p:?} is pinned"),
            HandleError::NotPinned(p) => write!(f, "movable page {p:?} unpinned without a pin"),
        }
    }
}

impl core::fmt::Display for FreeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FreeError::OutOfRange(a) => write!(f, "free of {a:#x}: outside managed memory"),
            FreeError::Misaligned { addr, order } => write!(f, "free of {addr:#x}: not aligned to order {order}"),
            FreeError::NotAllocated(a) => write!(f, "free of {a:#x}: nothing allocated there"),
            FreeError::DoubleFree(a) => write!(f, "double free of {a:#x}"),
            FreeError::WrongOrder { addr, allocated, freed } => {
                write!(f, "free of {addr:#x} with order {freed}, allocated with order {allocated}")
            }
            FreeError::IsMovable(a) => write!(f, "free of {a:#x}: a movable page, free it through its handle"),
            FreeError::Handle(e) => write!(f, "{e}"),
        }
    }
}

impl core::fmt::Display for RangeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RangeError::NotPageblocks { start, end } => write!(f, "{start:#x}-{end:#x} is not a run of whole pageblocks in RAM"),
            RangeError::AlreadyManaged(a) => write!(f, "pageblock {a:#x} is already managed by the page allocator"),
            RangeError::NotSwiotlb(a) => write!(f, "pageblock {a:#x} is not a lent SWIOTLB pageblock"),
            RangeError::NotCma(a) => write!(f, "pageblock {a:#x} is not a CMA pageblock"),
            RangeError::PartlyManaged(a) => write!(f, "pageblock {a:#x} is only partly managed by the page allocator"),
        }
    }
}

impl core::fmt::Display for MigrateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MigrateError::Stale(p) => write!(f, "cannot migrate {p:?}: stale handle"),
            MigrateError::Pinned(p) => write!(f, "cannot migrate {p:?}: pinned"),
            MigrateError::NoMemory(p) => write!(f, "cannot migrate {p:?}: no free page outside SWIOTLB and CMA blocks"),
        }
    }
}

impl core::fmt::Display for PinError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PinError::Stale(p) => write!(f, "cannot pin {p:?}: stale handle"),
            PinError::CannotMigrate(e) => write!(f, "long-term pin refused: {e}"),
        }
    }
}

impl core::fmt::Display for ReclaimError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ReclaimError::Range(e) => write!(f, "reclaim: {e}"),
            ReclaimError::Busy(r) => {
                write!(f, "reclaim blocked: {} pinned, {} failed, {} unmovable pages", r.pinned.len(), r.failed.len(), r.unmovable.len())
            }
        }
    }
}
