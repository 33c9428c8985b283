//! Migrate types of pageblocks and the fallback policy between their free lists.
//!
//! # Fallback table (Linux: `fallbacks[]` and `__rmqueue()` / `__rmqueue_fallback()`)
//!
//! | request     | 1. own lists | 2.                                | 3.                        |
//! |-------------|--------------|-----------------------------------|---------------------------|
//! | `Unmovable` | `Unmovable`  | steal from `Movable`              | fail                      |
//! | `Movable`   | `Movable`    | borrow from `Swiotlb`, then `Cma` (1) | steal from `Unmovable` |
//! | `Swiotlb`   | never requested: blocks only enter this type by being lent                 |
//! | `Cma`       | never requested: blocks only enter this type from a CMA area's activation   |
//! | `Isolate`   | never requested, never allocated from (free pages counted, on no list)    |
//!
//! - *steal*: take the largest free page of the other type; if it is at least half a pageblock or
//!   half the block is free, claim the whole block for the requester (change its type and move its
//!   free pages, Linux: `try_to_claim_block()`), otherwise take just the page and leave the block
//!   as it was.
//! - *borrow*: take a page from a `Swiotlb` or `Cma` list and leave the block as it is; like
//!   `__rmqueue_cma_fallback()`, nothing ever converts a `Swiotlb`, `Cma` (or `Isolate`) block.
//! - (1) skipped for migration targets and long-term pins (Linux: no `ALLOC_CMA`), so a page that
//!   leaves a SWIOTLB or CMA block never lands in another one. Movable prefers its own blocks over
//!   borrowing so lent memory stays cheap to take back; it borrows before stealing because
//!   stealing mixes types and fragments `Unmovable` blocks for good.

/// The type of a pageblock, which decides which allocations may use its free pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MigrateType {
    /// Kernel memory that never moves (heap, page tables, DMA pools).
    Unmovable = 0,
    /// Memory held through a [`MovablePage`](super::MovablePage) handle.
    Movable = 1,
    /// Spare SWIOTLB memory lent to the allocator: movable allocations only, taken back by
    /// migration (Linux's proposed `MIGRATE_SWIOTLB`, modelled on `MIGRATE_CMA`).
    Swiotlb = 2,
    /// A pageblock of a CMA area (Linux: `MIGRATE_CMA`): movable allocations only, taken
    /// back by [`CmaArea::cma_alloc`](crate::mm::cma::CmaArea::cma_alloc).
    Cma = 3,
    /// A block being taken back: nothing is allocated from it (Linux: `MIGRATE_ISOLATE`).
    Isolate = 4,
}

/// Number of migrate types (Linux: `MIGRATE_TYPES`).
pub const MIGRATE_TYPES: usize = 5;

impl MigrateType {
    /// All types, in index order.
    pub const ALL: [MigrateType; MIGRATE_TYPES] =
        [MigrateType::Unmovable, MigrateType::Movable, MigrateType::Swiotlb, MigrateType::Cma, MigrateType::Isolate];

    /// Index into per-type arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Name as in `/proc/pagetypeinfo`.
    pub const fn name(self) -> &'static str {
        match self {
            MigrateType::Unmovable => "Unmovable",
            MigrateType::Movable => "Movable",
            MigrateType::Swiotlb => "Swiotlb",
            MigrateType::Cma => "CMA",
            MigrateType::Isolate => "Isolate",
        }
    }

    /// Whether only movable allocations may borrow this type's free pages and nothing converts
    /// its blocks (Linux: `is_migrate_cma()`; ours covers MIGRATE_SWIOTLB too). Migration
    /// targets and long-term pins never land in such a block.
    pub const fn is_borrowed_only(self) -> bool {
        matches!(self, MigrateType::Swiotlb | MigrateType::Cma)
    }

    /// The letter used for this type in the RAM picture.
    pub const fn picture_char(self) -> char {
        match self {
            MigrateType::Unmovable => 'U',
            MigrateType::Movable => 'M',
            MigrateType::Swiotlb => 'S',
            MigrateType::Cma => 'C',
            MigrateType::Isolate => 'I',
        }
    }
}

/// How a fallback list may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fallback {
    /// Take pages; the block may be claimed for the requester.
    Steal(MigrateType),
    /// Take pages; the block keeps its type (SWIOTLB and CMA).
    Borrow(MigrateType),
}

/// The lists tried after the requester's own, in order: the table above as data.
pub(super) const fn fallbacks(request: MigrateType) -> &'static [Fallback] {
    match request {
        MigrateType::Unmovable => &[Fallback::Steal(MigrateType::Movable)],
        MigrateType::Movable => {
            &[Fallback::Borrow(MigrateType::Swiotlb), Fallback::Borrow(MigrateType::Cma), Fallback::Steal(MigrateType::Unmovable)]
        }
        MigrateType::Swiotlb | MigrateType::Cma | MigrateType::Isolate => &[],
    }
}
