//! Compaction: emptying partly used MOVABLE pageblocks by migrating their pages, and contiguous
//! allocations that do so (Linux `mm/compaction.c` as `alloc_contig_range()` and high-order
//! allocations use it, and `alloc_contig_pages()` in `mm/page_alloc.c`).
//!
//! Each pageblock is its own buddy tree here, so "compaction" is whole-block: a block is isolated
//! (no allocation lands in it, so no migration target either), its movable pages are migrated to
//! frames outside it, and it ends up as one free order-`MAX_PAGE_ORDER` block. A pinned page or an
//! unmovable one makes the block fail; isolation is then undone.
//!
//! Where we differ from Linux: no migrate and free scanners meeting in the middle of a zone (the
//! targets come from the ordinary free lists, outside the isolated range), and no deferral
//! heuristics (`compact_defer_shift`): the callers ask for a block or a range explicitly.

#![forbid(unsafe_code)]

use core::fmt;
use core::ops::Range;

use super::error::{AllocError, RangeError};
use super::migrate::{Accept, ContigError, ContigRequest, DroppedPage, LockedPageAllocator, ReclaimMode, ReclaimReport};
use super::migratetype::MigrateType;
use super::page::PageDesc;
use super::stats::CompactStats;
use super::zone::ZoneType;
use super::{PageAllocator, PAGEBLOCK_ORDER, PAGEBLOCK_SIZE};
use crate::arch::in_interrupt;
use crate::mm::phys::PhysMemory;
use crate::mm::PhysAddr;

/// Candidate ranges `alloc_contig_pageblocks_compact` tries (isolates and migrates) before it
/// gives up. Linux's `alloc_contig_pages()` walks the whole zone; each try here may migrate up
/// to a few thousand pages, so the work is bounded.
pub const MAX_CONTIG_CANDIDATES: usize = 8;

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Pageblocks emptied.
    pub pageblocks: usize,
    /// Pages migrated out of them.
    pub migrated: usize,
    /// Clean pages dropped (only if the caller allowed it).
    pub dropped: usize,
    /// Pages their owner freed while compaction worked on them.
    pub freed_meanwhile: usize,
    /// Candidate ranges that failed before one succeeded (`alloc_contig_pageblocks_compact`).
    pub failed_candidates: usize,
}

/// Why a pageblock or a candidate range could not be emptied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactFailure {
    /// A page was pinned (Linux: migration failing with `-EAGAIN`/`-EBUSY`).
    Pinned,
    /// An unmovable page sits in the block (Linux: `has_unmovable_pages()`).
    Unmovable,
    /// No free page outside the range could take a page.
    NoTargetMemory,
}

/// Why compaction failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompactError {
    /// Not a whole pageblock inside the allocator's span, or one with unmanaged pages.
    Range(RangeError),
    /// The pageblock is not MOVABLE (compaction leaves other types alone); `None`: unmanaged.
    NotMovable {
        /// The pageblock's address.
        addr: PhysAddr,
        /// Its migrate type; `None` if the allocator does not manage it.
        mt: Option<MigrateType>,
    },
    /// Some page could not be moved; isolation was undone. The report says which.
    Busy {
        /// The main reason, read from `report`: unmovable pages, then pins, then no target.
        reason: CompactFailure,
        /// What migration did and which pages stopped it.
        report: ReclaimReport,
    },
    /// Zero pageblocks were asked for.
    ZeroCount,
    /// No range of the zone could be emptied: `tried` candidates failed (at most
    /// [`MAX_CONTIG_CANDIDATES`]), the last one for `last`.
    NoRange {
        /// Candidate ranges tried.
        tried: usize,
        /// Why the last candidate with a page that would not move failed; `None` if there was
        /// none (no candidate, or each changed under the scan).
        last: Option<CompactFailure>,
    },
}

impl CompactFailure {
    /// The reason a busy report stands for: unmovable pages first, then pins, then targets.
    fn of(report: &ReclaimReport) -> Self {
        if !report.unmovable.is_empty() {
            CompactFailure::Unmovable
        } else if !report.pinned.is_empty() {
            CompactFailure::Pinned
        } else {
            CompactFailure::NoTargetMemory
        }
    }
}

impl CompactStats {
    fn count_success(&mut self, blocks: usize, report: &ReclaimReport) {
        self.blocks_compacted += blocks;
        self.pages_migrated += report.migrated;
        self.pages_dropped += report.dropped;
    }

    fn count_failure(&mut self, reason: CompactFailure, report: &ReclaimReport) {
        // Pages moved before the failure did move.
        self.pages_migrated += report.migrated;
        self.pages_dropped += report.dropped;
        match reason {
            CompactFailure::Pinned => self.fail_pinned += 1,
            CompactFailure::Unmovable => self.fail_unmovable += 1,
            CompactFailure::NoTargetMemory => self.fail_no_target += 1,
        }
    }
}

impl From<RangeError> for CompactError {
    fn from(e: RangeError) -> Self {
        CompactError::Range(e)
    }
}

impl PageAllocator {
    /// Whether pageblocks `blocks` could be emptied by compaction: each wholly managed and
    /// MOVABLE, or an entirely free UNMOVABLE block, with no unmovable and no pinned page (Linux:
    /// `pfn_range_valid_contig()`; checking pins here saves migrating a range that would fail).
    fn contig_candidate(&self, blocks: Range<usize>) -> bool {
        blocks.into_iter().all(|b| {
            let movable = self.pageblock_fully_managed(b)
                && match self.pageblock_type[b] {
                    Some(MigrateType::Movable) => true,
                    Some(MigrateType::Unmovable) => self.pageblock_is_free(b),
                    _ => false,
                };
            movable
                && self.pageblock_heads(b).all(|(_, d)| match d {
                    PageDesc::Allocated { .. } => false,
                    PageDesc::Movable { slot, .. } => self.movable.get(self.movable.handle(slot)).is_some_and(|e| e.pins == 0),
                    _ => true,
                })
        })
    }
}

impl LockedPageAllocator {
    /// Empties one partly used MOVABLE pageblock by migrating its movable pages to frames outside
    /// it (Linux: what `compact_zone()` does for one pageblock under `MIGRATE_SYNC`). The block
    /// is isolated while it is worked on and ends up wholly free and MOVABLE again. A pinned or
    /// unmovable page makes it fail; isolation is undone and nothing else changes (pages moved
    /// before the failure stay moved). Task context only.
    pub fn compact_pageblock<M: PhysMemory + ?Sized>(&self, addr: PhysAddr, mem: &M) -> Result<CompactReport, CompactError> {
        assert!(!in_interrupt(), "compaction migrates pages: task context only");
        let range = addr..addr.saturating_add(PAGEBLOCK_SIZE);
        let request = ContigRequest {
            accept: Accept::Only(MigrateType::Movable),
            mode: ReclaimMode { drop_clean: false },
            take: false,
            fail_fast: true,
        };
        let result = self.isolate_migrate_range(&range, request, mem, &mut |_| {});
        self.account_compaction(result, 1).map_err(CompactError::from)
    }

    /// `count` contiguous pageblocks of `zone`, taken out of the allocator like
    /// [`PageAllocator::alloc_contig_pageblocks`], migrating pages if no run of wholly free
    /// blocks exists (Linux: `alloc_contig_pages()`). First tries wholly free blocks; then scans
    /// the zone from its start for `count` blocks that are MOVABLE (or free) and hold only
    /// unpinned movable pages, isolates them, migrates their pages out (dropping clean ones,
    /// with `on_drop` told, if `mode` allows), and takes them. A range that fails is given back
    /// and the scan goes on after it; after [`MAX_CONTIG_CANDIDATES`] failed ranges it gives up.
    /// Give the blocks back with [`PageAllocator::free_contig_pageblocks`]. Task context only.
    pub fn alloc_contig_pageblocks_compact<M: PhysMemory + ?Sized>(
        &self,
        count: usize,
        zone: ZoneType,
        mem: &M,
        mode: ReclaimMode,
        on_drop: &mut dyn FnMut(DroppedPage),
    ) -> Result<(PhysAddr, CompactReport), CompactError> {
        assert!(!in_interrupt(), "compaction migrates pages: task context only");
        let zone_blocks = {
            let mut a = self.inner.lock();
            match a.alloc_contig_pageblocks(count, zone) {
                Ok(addr) => return Ok((addr, CompactReport::default())),
                Err(AllocError::ZeroCount) => return Err(CompactError::ZeroCount),
                Err(_) => {}
            }
            let z = &a.zones[zone as usize];
            (z.start >> PAGEBLOCK_ORDER)..(z.end >> PAGEBLOCK_ORDER)
        };
        let request = ContigRequest { accept: Accept::MovableOrFree, mode, take: true, fail_fast: true };
        let (mut first, mut tried, mut last) = (zone_blocks.start, 0, None);
        while first + count <= zone_blocks.end && tried < MAX_CONTIG_CANDIDATES {
            // One window per lock section: interrupts stay masked for one window's scan only.
            let range = {
                let a = self.inner.lock();
                let (start, end) = (first << PAGEBLOCK_ORDER, (first + count) << PAGEBLOCK_ORDER);
                a.contig_candidate(first..first + count).then(|| a.addr_of(start)..a.addr_of(end))
            };
            let Some(range) = range else {
                first += 1;
                continue;
            };
            let result = self.isolate_migrate_range(&range, request, mem, on_drop);
            match self.account_compaction(result, count) {
                Ok(mut report) => {
                    report.failed_candidates = tried;
                    return Ok((range.start, report));
                }
                Err(ContigError::Busy(report)) => last = Some(CompactFailure::of(&report)),
                // Changed since the scan looked at it (another CPU allocated there): next range.
                Err(_) => {}
            }
            tried += 1;
            // Linux's `alloc_contig_pages()` also moves on by a whole range.
            first += count;
        }
        Err(CompactError::NoRange { tried, last })
    }

    /// Counts a compaction's outcome and turns a success into a [`CompactReport`].
    fn account_compaction(&self, result: Result<ReclaimReport, ContigError>, blocks: usize) -> Result<CompactReport, ContigError> {
        let mut a = self.inner.lock();
        match result {
            Ok(r) => {
                a.compact_stats.count_success(blocks, &r);
                Ok(CompactReport {
                    pageblocks: blocks,
                    migrated: r.migrated,
                    dropped: r.dropped,
                    freed_meanwhile: r.freed_meanwhile,
                    failed_candidates: 0,
                })
            }
            Err(ContigError::Busy(r)) => {
                a.compact_stats.count_failure(CompactFailure::of(&r), &r);
                Err(ContigError::Busy(r))
            }
            Err(e) => Err(e),
        }
    }
}

impl From<ContigError> for CompactError {
    fn from(e: ContigError) -> Self {
        match e {
            ContigError::Range(e) => CompactError::Range(e),
            ContigError::WrongType { addr, mt } => CompactError::NotMovable { addr, mt },
            ContigError::Busy(report) => CompactError::Busy { reason: CompactFailure::of(&report), report },
        }
    }
}

impl fmt::Display for CompactFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CompactFailure::Pinned => "a page is pinned",
            CompactFailure::Unmovable => "an unmovable page is in the way",
            CompactFailure::NoTargetMemory => "no free page to migrate to",
        })
    }
}

impl fmt::Display for CompactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompactError::Range(e) => write!(f, "compaction: {e}"),
            CompactError::NotMovable { addr, mt } => write!(f, "compaction: pageblock {addr:#x} is {mt:?}, not MOVABLE"),
            CompactError::Busy { reason, report } => {
                write!(f, "compaction failed: {reason} ({} pages migrated before)", report.migrated)
            }
            CompactError::ZeroCount => write!(f, "compaction: zero pageblocks requested"),
            CompactError::NoRange { tried, last: Some(reason) } => {
                write!(f, "no contiguous range could be emptied: {tried} candidates failed, the last because {reason}")
            }
            CompactError::NoRange { tried, last: None } => {
                write!(f, "no contiguous range could be emptied ({tried} candidates tried)")
            }
        }
    }
}
