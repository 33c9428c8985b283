//! The locked allocator, pins, page migration and the reclaim of lent SWIOTLB pageblocks.
//!
//! # Migration protocol (Linux: `migrate_pages()`; our handle plays the role of the PTEs)
//! A movable page's frame is read and written only through a pin taken under the lock, and a
//! pinned page is never moved. Migrating one page takes three steps:
//! 1. **prepare**, lock held: refuse if pinned; allocate a target frame outside SWIOTLB and
//!    isolated blocks; note the page's `pin_seq`.
//! 2. **copy**, lock dropped: copy old frame to new through [`PhysMemory`]. Interrupt handlers
//!    and other CPUs may pin and use the page meanwhile; they get the old frame, which holds the
//!    full old content the whole time.
//! 3. **commit**, lock held: if the page is still on the old frame, unpinned, and `pin_seq` is
//!    unchanged (no pin was taken during the copy, so nobody could have written the old frame
//!    after it was read), switch the handle to the new frame and free the old one. Otherwise
//!    free the target and retry (Linux: `folio_ref_freeze()` failing, `-EAGAIN`).
//!
//! So a reader resolving the handle under the lock sees either the old frame with the full old
//! content or the new frame with the full copied content, never a half-moved page. Migration
//! sleeps in no way, but it does unbounded work, so it runs in task context only.

use alloc::vec::Vec;
use core::ops::Range;

use super::error::{HandleError, MigrateError, PinError, RangeError, ReclaimError};
use super::migratetype::MigrateType;
use super::movable::{MovablePage, OwnerKind};
use super::page::PageDesc;
use super::{PageAllocator, PAGEBLOCK_ORDER};
use crate::arch::in_interrupt;
use crate::mm::phys::PhysMemory;
use crate::mm::{PhysAddr, PAGE_SIZE};
use crate::sync::{IrqSafeSpinLock, IrqSafeSpinLockGuard};

/// Copy attempts per page before a page that keeps being pinned counts as pinned (Linux:
/// `NR_MAX_MIGRATE_PAGES_RETRY`).
const MIGRATE_RETRIES: usize = 10;

/// A migration between prepare and commit: the target frame is allocated, the copy is pending.
#[derive(Clone, Copy, Debug)]
pub(super) struct MigrationTicket {
    page: MovablePage,
    src: usize,
    dst: usize,
    order: u8,
    pin_seq: u32,
}

/// How a committed migration ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Migrated {
    /// The handle now names the new frame.
    Moved,
    /// The owner freed the page during the copy; nothing left to move.
    FreedMeanwhile,
    /// The page was pinned during the copy; try again.
    Raced,
}

/// What reclaim found at the next used block of an isolated pageblock.
enum ReclaimStep {
    Done,
    Unmovable { addr: PhysAddr, next: usize },
    Pinned { page: MovablePage, next: usize },
    Dropped { dropped: DroppedPage, next: usize },
    Migrate { page: MovablePage, next: usize },
}

impl PageAllocator {
    /// Migration step 1: choose the target frame.
    pub(super) fn prepare_migration(&mut self, page: MovablePage) -> Result<MigrationTicket, MigrateError> {
        let e = *self.movable.get(page).ok_or(MigrateError::Stale(page))?;
        if e.pins > 0 {
            return Err(MigrateError::Pinned(page));
        }
        let dst = self
            .rmqueue(e.order, e.highest_zone, MigrateType::Movable, false)
            .map_err(|_| MigrateError::NoMemory(page))?;
        Ok(MigrationTicket { page, src: e.idx, dst, order: e.order, pin_seq: e.pin_seq })
    }

    /// Migration step 3: switch the handle to the copied frame if nothing raced the copy.
    pub(super) fn commit_migration(&mut self, t: MigrationTicket) -> Migrated {
        let outcome = match self.movable.get_mut(t.page) {
            None => Migrated::FreedMeanwhile,
            Some(e) if e.idx != t.src || e.pins > 0 || e.pin_seq != t.pin_seq => Migrated::Raced,
            Some(e) => {
                e.idx = t.dst;
                Migrated::Moved
            }
        };
        let unused = if outcome == Migrated::Moved {
            self.mem_map[t.dst] = PageDesc::Movable { order: t.order, slot: self.mem_map_slot(t.src) };
            self.mem_map[t.src] = PageDesc::Allocated { order: t.order };
            t.src
        } else {
            t.dst
        };
        self.free_one_page(unused, t.order);
        outcome
    }

    fn mem_map_slot(&self, idx: usize) -> u32 {
        match self.mem_map[idx] {
            PageDesc::Movable { slot, .. } => slot,
            other => unreachable!("page {idx} is not movable: {other:?}"),
        }
    }

    /// Looks at the used blocks of an isolated pageblock from `cursor` and decides what to do
    /// with the first one. Clean unpinned pages are dropped right here, under the lock.
    fn reclaim_step(&mut self, mut cursor: usize, end: usize, mode: ReclaimMode) -> ReclaimStep {
        while let Some((idx, desc)) = self.next_head(cursor, end) {
            match desc {
                PageDesc::Free { order, .. } => cursor = idx + (1 << order),
                PageDesc::Allocated { order } => {
                    return ReclaimStep::Unmovable { addr: self.addr_of(idx), next: idx + (1 << order) }
                }
                PageDesc::Movable { order, slot } => {
                    let next = idx + (1 << order);
                    let page = self.movable.handle(slot);
                    let e = *self.movable.get(page).expect("movable page without a live handle");
                    if e.pins > 0 {
                        return ReclaimStep::Pinned { page, next };
                    }
                    if mode.drop_clean && e.owner.kind == OwnerKind::Clean {
                        self.drop_movable(page);
                        return ReclaimStep::Dropped { dropped: DroppedPage { page, cookie: e.owner.cookie }, next };
                    }
                    return ReclaimStep::Migrate { page, next };
                }
                PageDesc::Tail | PageDesc::Unmanaged => unreachable!("next_head returns block heads"),
            }
        }
        ReclaimStep::Done
    }
}

/// What reclaim may do with clean pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReclaimMode {
    /// Drop clean pages (telling their owner) instead of migrating them.
    pub drop_clean: bool,
}

/// A clean page reclaim dropped: its handle is stale now; `cookie` is the owner's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DroppedPage {
    pub page: MovablePage,
    pub cookie: u64,
}

/// What reclaim did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReclaimReport {
    /// Pages copied to a new frame.
    pub migrated: usize,
    /// Clean pages dropped.
    pub dropped: usize,
    /// Pages their owner freed while reclaim worked on them.
    pub freed_meanwhile: usize,
    /// Pinned pages, which stopped the reclaim.
    pub pinned: Vec<MovablePage>,
    /// Pages that could not be migrated for another reason (no memory for a target).
    pub failed: Vec<MigrateError>,
    /// Unmovable blocks found in the range (a bug elsewhere: nothing unmovable lands there).
    pub unmovable: Vec<PhysAddr>,
}

/// The page allocator behind its lock (Linux: `zone->lock`), plus the operations that must drop
/// the lock in between: pin guards, migration, reclaim.
pub struct LockedPageAllocator {
    inner: IrqSafeSpinLock<PageAllocator>,
}

impl LockedPageAllocator {
    /// Puts `allocator` behind an IRQ-safe lock.
    pub const fn new(allocator: PageAllocator) -> Self {
        LockedPageAllocator { inner: IrqSafeSpinLock::new(allocator) }
    }

    /// Locks the allocator for the plain operations (alloc, free, counters, pictures).
    pub fn lock(&self) -> IrqSafeSpinLockGuard<'_, PageAllocator> {
        self.inner.lock()
    }

    /// Pins a movable page (short-term: CPU access or a streaming DMA mapping); the frame stays
    /// put until the guard is dropped. Allowed in interrupt context.
    pub fn pin(&self, page: MovablePage) -> Result<PinGuard<'_>, HandleError> {
        let addr = self.inner.lock().pin(page)?;
        Ok(PinGuard { allocator: self, page, addr, longterm: false })
    }

    /// Pins a movable page for a long time (a DMA buffer kept mapped). A page in a lent SWIOTLB
    /// block is first migrated out, so the pin cannot stop the block being taken back; if that
    /// fails the pin is refused (Linux: `check_and_migrate_movable_pages()` for CMA).
    /// Task context only.
    pub fn pin_longterm<M: PhysMemory + ?Sized>(&self, page: MovablePage, mem: &M) -> Result<PinGuard<'_>, PinError> {
        assert!(!in_interrupt(), "pin_longterm may migrate: task context only");
        for attempt in 0..2 {
            {
                let mut a = self.inner.lock();
                let idx = a.entry(page).map_err(|_| PinError::Stale(page))?.idx;
                let in_lent_block = matches!(
                    a.pageblock_type[idx >> PAGEBLOCK_ORDER],
                    Some(MigrateType::Swiotlb | MigrateType::Isolate)
                );
                if !in_lent_block {
                    let addr = a.pin_longterm_here(page).map_err(|_| PinError::Stale(page))?;
                    return Ok(PinGuard { allocator: self, page, addr, longterm: true });
                }
            }
            if attempt == 0 {
                self.migrate_page(page, mem).map_err(PinError::CannotMigrate)?;
            }
        }
        unreachable!("a migrated page never lands in a SWIOTLB or isolated block")
    }

    /// Moves a movable page to a frame outside SWIOTLB blocks. Task context only.
    pub fn migrate_page<M: PhysMemory + ?Sized>(&self, page: MovablePage, mem: &M) -> Result<(), MigrateError> {
        assert!(!in_interrupt(), "page migration runs in task context only");
        self.migrate_one(page, mem).map(|_| ())
    }

    fn migrate_one<M: PhysMemory + ?Sized>(&self, page: MovablePage, mem: &M) -> Result<Migrated, MigrateError> {
        for _ in 0..MIGRATE_RETRIES {
            let (ticket, dst, src) = {
                let mut a = self.inner.lock();
                let t = a.prepare_migration(page)?;
                (t, a.addr_of(t.dst), a.addr_of(t.src))
            };
            mem.copy(dst, src, (PAGE_SIZE << ticket.order) as usize);
            match self.inner.lock().commit_migration(ticket) {
                Migrated::Raced => continue,
                done => return Ok(done),
            }
        }
        Err(MigrateError::Pinned(page))
    }

    /// Takes lent SWIOTLB pageblocks back (Linux: `alloc_contig_range()` on CMA): isolates them,
    /// migrates their movable pages elsewhere (or drops clean ones if `mode` allows, calling
    /// `on_drop` for each, outside the lock), then removes the emptied blocks from the allocator:
    /// the SWIOTLB pool owns them again. If any page could not be moved, isolation is undone, the
    /// blocks stay lent, and the error's report says which pages blocked it. Task context only.
    pub fn reclaim_swiotlb_pageblocks<M: PhysMemory + ?Sized>(
        &self,
        range: Range<PhysAddr>,
        mem: &M,
        mode: ReclaimMode,
        on_drop: &mut dyn FnMut(DroppedPage),
    ) -> Result<ReclaimReport, ReclaimError> {
        assert!(!in_interrupt(), "reclaim migrates pages: task context only");
        let blocks = {
            let mut a = self.inner.lock();
            let blocks = a.pageblock_range(&range)?;
            if let Some(b) = blocks.clone().find(|b| a.pageblock_type[*b] != Some(MigrateType::Swiotlb)) {
                return Err(RangeError::NotSwiotlb(a.addr_of(b << PAGEBLOCK_ORDER)).into());
            }
            blocks.clone().for_each(|b| a.start_isolate_pageblock(b));
            blocks
        };
        let mut report = ReclaimReport::default();
        for block in blocks.clone() {
            let (mut cursor, end) = (block << PAGEBLOCK_ORDER, (block + 1) << PAGEBLOCK_ORDER);
            loop {
                let step = self.inner.lock().reclaim_step(cursor, end, mode);
                cursor = match step {
                    ReclaimStep::Done => break,
                    ReclaimStep::Unmovable { addr, next } => {
                        report.unmovable.push(addr);
                        next
                    }
                    ReclaimStep::Pinned { page, next } => {
                        report.pinned.push(page);
                        next
                    }
                    ReclaimStep::Dropped { dropped, next } => {
                        report.dropped += 1;
                        on_drop(dropped);
                        next
                    }
                    ReclaimStep::Migrate { page, next } => {
                        match self.migrate_one(page, mem) {
                            Ok(Migrated::FreedMeanwhile) | Err(MigrateError::Stale(_)) => report.freed_meanwhile += 1,
                            Ok(_) => report.migrated += 1,
                            Err(MigrateError::Pinned(p)) => report.pinned.push(p),
                            Err(e) => report.failed.push(e),
                        }
                        next
                    }
                };
            }
        }
        let mut a = self.inner.lock();
        if blocks.clone().all(|b| a.isolated_pageblock_is_free(b)) {
            blocks.for_each(|b| a.take_free_pageblock(b));
            Ok(report)
        } else {
            blocks.for_each(|b| a.undo_isolate_pageblock(b, MigrateType::Swiotlb));
            drop(a);
            log::warn!("page_alloc: reclaim of {:#x}..{:#x} failed: {report:?}", range.start, range.end);
            Err(ReclaimError::Busy(report))
        }
    }
}

/// A pinned movable page: its frame does not move until the guard is dropped.
pub struct PinGuard<'a> {
    allocator: &'a LockedPageAllocator,
    page: MovablePage,
    addr: PhysAddr,
    longterm: bool,
}

impl PinGuard<'_> {
    /// The pinned frame.
    pub fn addr(&self) -> PhysAddr {
        self.addr
    }

    /// The handle pinned.
    pub fn page(&self) -> MovablePage {
        self.page
    }
}

impl Drop for PinGuard<'_> {
    fn drop(&mut self) {
        // Cannot fail: a pinned page cannot be freed, so the handle is live.
        let _ = self.allocator.inner.lock().unpin(self.page, self.longterm);
    }
}
