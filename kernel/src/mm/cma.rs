//! The Contiguous Memory Allocator area (Linux `mm/cma.c`): a range reserved at boot whose
//! pageblocks the page allocator uses as MIGRATE_CMA (movable allocations only) until
//! [`CmaArea::cma_alloc`] takes a run of them back by migrating those pages out.
//!
//! # Shape
//! - The allocation unit is one pageblock (2 MiB): each pageblock is its own buddy tree here, so
//!   a CMA allocation is whole blocks (Linux's `order_per_bit` would be `pageblock_order`).
//! - A bitmap of allocated pageblocks behind an IRQ-masking lock (Linux: `cma->bitmap` under
//!   `cma->lock`); bits are set before the migration so two callers never work on one run, and
//!   cleared again if the run turns out busy.
//! - `cma_alloc` only ever takes blocks that are MIGRATE_CMA, inside its own area: the page
//!   allocator checks every block's type before isolating (never a lent MIGRATE_SWIOTLB block).
//!
//! Where we differ from Linux: one area (the default one, `linux,cma-default` or `cma=`), no
//! per-device areas; a busy run is retried at the next pageblock like Linux, but without the
//! sleep between passes (nothing here waits for a pin to go away).

#![forbid(unsafe_code)]

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;
use core::sync::atomic::{AtomicUsize, Ordering};

use super::page_alloc::{
    DroppedPage, LockedPageAllocator, MigrateType, RangeError, ReclaimError, ReclaimMode, ReclaimReport, PAGEBLOCK_SIZE,
};
use super::phys::PhysMemory;
use super::PhysAddr;
use crate::arch::in_interrupt;
use crate::sync::IrqSafeSpinLock;

/// Why a CMA operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CmaError {
    /// The range given to [`CmaArea::activate`] is not whole pageblocks, or the allocator refused
    /// it (outside its span, already managed).
    Activate(RangeError),
    /// Zero pageblocks asked for.
    ZeroCount,
    /// More pageblocks asked for than the area has.
    TooLarge {
        /// Pageblocks asked for.
        count: usize,
        /// Pageblocks the area has.
        area: usize,
    },
    /// No free run of `count` pageblocks in the bitmap.
    NoSpace {
        /// Pageblocks asked for.
        count: usize,
    },
    /// Every free run tried held a page that could not move: `tried` runs, the last one's
    /// report.
    Busy {
        /// How many free runs were tried.
        tried: usize,
        /// What reclaiming the last one found: the pages that failed or could not move.
        last: ReclaimReport,
    },
    /// A block of the area is not MIGRATE_CMA in the page allocator (never taken).
    NotCma(RangeError),
    /// `cma_release` of a range that is not inside the area or not pageblock aligned.
    OutsideArea {
        /// The start of the range released.
        addr: PhysAddr,
        /// Its length in pageblocks.
        count: usize,
    },
    /// `cma_release` of a pageblock that is not allocated.
    NotAllocated(PhysAddr),
}

/// What `cma_alloc` and `cma_release` did since boot.
#[derive(Debug, Default)]
struct CmaCounters {
    allocs: AtomicUsize,
    alloc_failures: AtomicUsize,
    busy_runs: AtomicUsize,
    pages_migrated: AtomicUsize,
    pages_dropped: AtomicUsize,
    releases: AtomicUsize,
}

/// A CMA area: pageblocks lent to the page allocator as MIGRATE_CMA and taken back whole.
pub struct CmaArea {
    name: String,
    base: PhysAddr,
    count: usize,
    /// One flag per pageblock: allocated by `cma_alloc` (Linux: `cma->bitmap`).
    bitmap: IrqSafeSpinLock<Vec<bool>>,
    /// Flags set in `bitmap`, kept beside it so that reading it takes no lock (the boot log
    /// may print the area while holding the page allocator's lock, which `cma_release` takes
    /// inside the bitmap's).
    allocated: AtomicUsize,
    counters: CmaCounters,
}

impl CmaArea {
    /// Gives a memblock-reserved range (whole pageblocks, unmanaged by `pages`) to the page
    /// allocator as MIGRATE_CMA and returns the area over it (Linux: `cma_activate_area()`).
    pub fn activate(name: &str, pages: &LockedPageAllocator, range: Range<PhysAddr>) -> Result<CmaArea, CmaError> {
        pages.lock().init_cma_reserved_pageblocks(range.clone()).map_err(CmaError::Activate)?;
        let count = ((range.end - range.start) / PAGEBLOCK_SIZE) as usize;
        Ok(CmaArea {
            name: String::from(name),
            base: range.start,
            count,
            bitmap: IrqSafeSpinLock::new(vec![false; count]),
            allocated: AtomicUsize::new(0),
            counters: CmaCounters::default(),
        })
    }

    /// The area's name (its `/reserved-memory` node, or `cma-default` for the `cma=` bootarg).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The physical range of the area.
    pub fn range(&self) -> Range<PhysAddr> {
        self.base..self.block_addr(self.count)
    }

    /// Pageblocks in the area.
    pub fn pageblocks(&self) -> usize {
        self.count
    }

    /// Pageblocks currently allocated by `cma_alloc`.
    pub fn allocated_pageblocks(&self) -> usize {
        self.allocated.load(Ordering::Relaxed)
    }

    fn block_addr(&self, block: usize) -> PhysAddr {
        self.base + block as u64 * PAGEBLOCK_SIZE
    }

    /// Allocates `count` contiguous pageblocks of the area (Linux: `cma_alloc()`): finds a free
    /// run in the bitmap, isolates it, migrates its movable pages out (or drops clean ones if
    /// `mode` allows, calling `on_drop`), and takes the blocks out of the page allocator. A run
    /// holding a page that cannot move is given back and the search goes on at the next
    /// pageblock. Returns the address and what was moved. Task context only.
    pub fn cma_alloc<M: PhysMemory + ?Sized>(
        &self,
        pages: &LockedPageAllocator,
        mem: &M,
        count: usize,
        mode: ReclaimMode,
        on_drop: &mut dyn FnMut(DroppedPage),
    ) -> Result<(PhysAddr, ReclaimReport), CmaError> {
        assert!(!in_interrupt(), "cma_alloc migrates pages: task context only");
        let result = self.alloc_run(count, &mut |range| pages.alloc_contig_range(range, MigrateType::Cma, mem, mode, on_drop));
        let c = &self.counters;
        match &result {
            Ok((_, report)) => {
                c.allocs.fetch_add(1, Ordering::Relaxed);
                c.pages_migrated.fetch_add(report.migrated, Ordering::Relaxed);
                c.pages_dropped.fetch_add(report.dropped, Ordering::Relaxed);
            }
            Err(e) => {
                c.alloc_failures.fetch_add(1, Ordering::Relaxed);
                log::warn!("cma: {}: allocation of {count} pageblocks failed: {e}", self.name);
            }
        }
        result
    }

    /// Claims free runs of `count` pageblocks in the bitmap, lowest first, until `take` empties
    /// one; a busy run's bits are cleared and the search goes on at the next pageblock.
    fn alloc_run(
        &self,
        count: usize,
        take: &mut dyn FnMut(Range<PhysAddr>) -> Result<ReclaimReport, ReclaimError>,
    ) -> Result<(PhysAddr, ReclaimReport), CmaError> {
        if count == 0 {
            return Err(CmaError::ZeroCount);
        }
        if count > self.count {
            return Err(CmaError::TooLarge { count, area: self.count });
        }
        let (mut from, mut tried, mut last) = (0, 0, None);
        while let Some(first) = self.claim_run(from, count) {
            let range = self.block_addr(first)..self.block_addr(first + count);
            match take(range.clone()) {
                Ok(report) => return Ok((range.start, report)),
                Err(ReclaimError::Busy(report)) => {
                    self.clear_run(first, count);
                    self.counters.busy_runs.fetch_add(1, Ordering::Relaxed);
                    log::debug!("cma: {}: {:#x}..{:#x} busy, trying the next run: {report:?}", self.name, range.start, range.end);
                    tried += 1;
                    last = Some(report);
                    // Linux `cma_alloc()`: "try again with a bit different memory target".
                    from = first + 1;
                }
                Err(ReclaimError::Range(e)) => {
                    self.clear_run(first, count);
                    return Err(CmaError::NotCma(e));
                }
            }
        }
        match last {
            Some(last) => Err(CmaError::Busy { tried, last }),
            None => Err(CmaError::NoSpace { count }),
        }
    }

    /// Finds the first run of `count` clear bits at or after `from` and sets them.
    fn claim_run(&self, from: usize, count: usize) -> Option<usize> {
        let mut bitmap = self.bitmap.lock();
        let first = (from..=self.count.checked_sub(count)?).find(|f| bitmap[*f..*f + count].iter().all(|b| !*b))?;
        bitmap[first..first + count].fill(true);
        self.allocated.fetch_add(count, Ordering::Relaxed);
        Some(first)
    }

    fn clear_run(&self, first: usize, count: usize) {
        self.bitmap.lock()[first..first + count].fill(false);
        self.allocated.fetch_sub(count, Ordering::Relaxed);
    }

    /// Gives back `count` pageblocks at `addr` from [`cma_alloc`](Self::cma_alloc): they return
    /// to the page allocator as MIGRATE_CMA and their bits are cleared (Linux: `cma_release()`).
    /// A range outside the area, or holding a pageblock that is not allocated, is refused and
    /// nothing changes.
    pub fn cma_release(&self, pages: &LockedPageAllocator, addr: PhysAddr, count: usize) -> Result<(), CmaError> {
        let outside = CmaError::OutsideArea { addr, count };
        let off = addr.checked_sub(self.base).ok_or(outside.clone())?;
        if count == 0 || !off.is_multiple_of(PAGEBLOCK_SIZE) {
            return Err(outside);
        }
        let first = (off / PAGEBLOCK_SIZE) as usize;
        let end = first.checked_add(count).filter(|e| *e <= self.count).ok_or(outside)?;
        let mut bitmap = self.bitmap.lock();
        if let Some(b) = (first..end).find(|b| !bitmap[*b]) {
            return Err(CmaError::NotAllocated(self.block_addr(b)));
        }
        // The bitmap lock is held across the hand-back so no `cma_alloc` claims the run between.
        pages.lock().init_cma_reserved_pageblocks(self.block_addr(first)..self.block_addr(end)).map_err(CmaError::Activate)?;
        bitmap[first..end].fill(false);
        self.allocated.fetch_sub(count, Ordering::Relaxed);
        self.counters.releases.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl fmt::Display for CmaArea {
    /// One line for the boot log and the demo: place, size, use and counters. Takes no lock.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counters;
        let r = self.range();
        write!(
            f,
            "cma: area {} {:#x}-{:#x} ({} MiB, {} pageblocks), {} allocated; {} allocs ({} pages migrated, {} dropped, {} busy runs skipped), {} failed, {} releases",
            self.name,
            r.start,
            r.end,
            (r.end - r.start) >> 20,
            self.count,
            self.allocated_pageblocks(),
            c.allocs.load(Ordering::Relaxed),
            c.pages_migrated.load(Ordering::Relaxed),
            c.pages_dropped.load(Ordering::Relaxed),
            c.busy_runs.load(Ordering::Relaxed),
            c.alloc_failures.load(Ordering::Relaxed),
            c.releases.load(Ordering::Relaxed),
        )
    }
}

impl fmt::Display for CmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmaError::Activate(e) => write!(f, "cannot activate the area: {e}"),
            CmaError::ZeroCount => write!(f, "zero pageblocks requested"),
            CmaError::TooLarge { count, area } => write!(f, "{count} pageblocks requested, the area has {area}"),
            CmaError::NoSpace { count } => write!(f, "no free run of {count} pageblocks"),
            CmaError::Busy { tried, last } => write!(
                f,
                "{tried} free runs tried, each held a page that could not move (last: {} pinned, {} without a target, {} unmovable)",
                last.pinned.len(),
                last.failed.len(),
                last.unmovable.len()
            ),
            CmaError::NotCma(e) => write!(f, "{e}"),
            CmaError::OutsideArea { addr, count } => write!(f, "release of {count} pageblocks at {addr:#x}: not inside the area"),
            CmaError::NotAllocated(a) => write!(f, "release of pageblock {a:#x}: not allocated"),
        }
    }
}
