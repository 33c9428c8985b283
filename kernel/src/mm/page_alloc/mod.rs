//! The buddy page allocator with migrate types, and the movable pages that let spare SWIOTLB
//! memory be lent to it (the MIGRATE_SWIOTLB idea from the May 2023 LKML thread in the seed).
//!
//! # Shape (Linux names: `mm/page_alloc.c`, `include/linux/mmzone.h`)
//! - Pages are 4 KiB; a *pageblock* is 2 MiB (`PAGEBLOCK_ORDER` 9) and carries one
//!   [`MigrateType`]. `MAX_PAGE_ORDER` equals `PAGEBLOCK_ORDER`, so every pageblock is its own
//!   buddy tree and a merge can never cross two blocks of different type. Larger contiguous
//!   memory comes from [`PageAllocator::alloc_contig_pageblocks`] (whole free blocks).
//! - Two zones, [`ZoneType::Dma`] (RAM below the DMA limit given at init, rounded down to a
//!   pageblock; all RAM if none) and [`ZoneType::Normal`]. An allocation names the highest zone it
//!   accepts and falls back to lower ones (Linux: the zonelist).
//! - Free lists are `zone.free_area[order].free_list[migratetype]`. A free page always sits on the
//!   list of its own pageblock's type, and each zone keeps free-page counters per type (the
//!   SWIOTLB one is our `NR_FREE_CMA_PAGES`). One exception, unlike Linux: the free blocks of an
//!   isolated pageblock are on no list and not merged, counted in pages only (the zone's
//!   ISOLATE free pages and the block's `isolated_free`): nothing allocates from them, reclaim
//!   frees every migrated page's old frame there and takes the block once it is all free, and
//!   undoing the isolation merges them onto their type's lists. See
//!   `PageAllocator::add_to_free_list`.
//! - SWIOTLB blocks follow CMA's rules: only movable allocations use them, fallback stealing never
//!   converts them, and a long-term pin first migrates the page out of them. See
//!   [`migratetype`] for the fallback table.
//! - MIGRATE_CMA blocks (a [`CmaArea`](crate::mm::cma::CmaArea)) follow the same rules.
//! - Movable memory is held through a [`MovablePage`] handle so its frame can change. Migration
//!   and reclaim of lent blocks are in [`migrate`]; the copy runs outside the allocator lock.
//!   Compaction (emptying MOVABLE pageblocks, contiguous allocations that migrate) is in
//!   `compaction`.
//!
//! # Why not `buddy_system_allocator::FrameAllocator`
//! Its free lists are private `BTreeSet`s: it cannot take one pageblock's free pages out
//! (`move_freepages_block`, isolation), cannot count free blocks per order and type, does not
//! detect double frees (a bad `dealloc` silently corrupts it), and every insert allocates from the
//! kernel heap, which itself grows by calling this allocator (a re-entry under the zone lock).
//! So the free lists here are intrusive doubly linked lists threaded through the page
//! descriptors (Linux's `page->buddy_list`): no heap use after [`PageAllocator::new`].
//!
//! # Locking
//! [`PageAllocator`] is a plain struct; [`LockedPageAllocator`] puts it behind an
//! [`IrqSafeSpinLock`](crate::sync::IrqSafeSpinLock) (Linux: `zone->lock`) and adds what needs
//! the lock to be dropped in between: pin guards, migration and reclaim. No method allocates from
//! the heap while holding the lock, except the reports built by the locked wrappers (between
//! lock sections).
#![forbid(unsafe_code)]

mod allocator;
mod compaction;
mod error;
mod isolate;
pub mod migrate;
pub mod migratetype;
mod movable;
mod page;
pub mod page_cache;
mod pin_frame;
mod stats;
mod zone;

#[cfg(test)]
mod tests;

pub use allocator::PageAllocator;
pub use compaction::{CompactError, CompactFailure, CompactReport, MAX_CONTIG_CANDIDATES};
pub use error::{AllocError, FreeError, HandleError, InitError, MigrateError, PinError, RangeError, ReclaimError};
pub use migrate::{DroppedPage, LockedPageAllocator, PinGuard, ReclaimMode, ReclaimReport};
pub use migratetype::MigrateType;
pub use movable::{MovableInfo, MovablePage, OwnerKind, PageOwner};
pub use stats::{CompactStats, Fragmentation, PageTypeInfo, RamPicture};
pub use zone::ZoneType;

use super::PAGE_SHIFT;

/// Order of a pageblock: 2 MiB of 4 KiB pages (Linux: `pageblock_order` with 4 KiB pages on arm64
/// and no hugetlb).
pub const PAGEBLOCK_ORDER: u8 = 9;
/// Pages per pageblock (Linux: `pageblock_nr_pages`).
pub const PAGEBLOCK_NR_PAGES: usize = 1 << PAGEBLOCK_ORDER;
/// Bytes per pageblock.
pub const PAGEBLOCK_SIZE: u64 = 1 << (PAGEBLOCK_ORDER as u32 + PAGE_SHIFT);
/// The largest buddy order. Equal to the pageblock order: each block is its own buddy tree.
pub const MAX_PAGE_ORDER: u8 = PAGEBLOCK_ORDER;
/// Number of orders, `0..=MAX_PAGE_ORDER` (Linux: `NR_PAGE_ORDERS`).
pub const NR_PAGE_ORDERS: usize = MAX_PAGE_ORDER as usize + 1;
