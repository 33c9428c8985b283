//! The locked allocator, pins, page migration and the reclaim of lent SWIOTLB pageblocks.
//!
//! # Migration protocol (Linux: `migrate_pages()`; our handle plays the role of the PTEs)
//! A movable page's frame is read and written only through a pin taken under the lock, and a
//! pinned page is never moved. Migrating one page takes three steps:
//! 1. **prepare**, lock held: refuse if pinned; allocate a target frame outside SWIOTLB, CMA and
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
use super::page::{PageDesc, NIL};
use super::zone::ZoneType;
use super::{PageAllocator, MAX_PAGE_ORDER, PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER};
use crate::arch::in_interrupt;
use crate::mm::phys::PhysMemory;
use crate::mm::{PhysAddr, PAGE_SHIFT, PAGE_SIZE};
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

/// Target frames for the order-0 pages of one reclaim, taken from the free lists a chunk at a
/// time instead of one `rmqueue` per page (the idea of Linux's `rmqueue_bulk`, which fills the
/// per-CPU lists under one lock hold; compaction's `cc->freepages` is a private list of targets
/// too). The chunk is at most `need` pages (the order-0 movable pages counted when the range
/// was isolated, less those met since: migrated, pinned or dropped), so it holds no more
/// memory than the migrations would take anyway; what is left (pages freed by their owners
/// meanwhile) goes back at the end with
/// [`release_targets`](PageAllocator::release_targets). While held, the unused pages
/// `next..end` are `Allocated` blocks (aligned, each twice the size of the one before), so the
/// allocator's structure stays whole.
#[derive(Debug, Default)]
pub(super) struct MigrationTargets {
    /// Order-0 pages taken off a free list at once; `singles[next_single..nr_singles]` unused.
    singles: [u32; TARGET_BATCH],
    next_single: usize,
    nr_singles: usize,
    /// The unused rest `next..end` of a larger free block.
    next: usize,
    end: usize,
    /// Pages still to migrate, as counted when the range was isolated.
    need: usize,
}

/// Steps (pages prepared for migration, dropped or reported) reclaim takes per hold of the
/// allocator lock, and so migrations it commits per hold: the lock masks IRQs, so its hold time
/// stays bounded (no copy is made under it).
const RECLAIM_BATCH: usize = 16;

/// Order-0 free pages [`MigrationTargets`] takes off a free list at once (fragmented free
/// memory: the smallest free blocks are single pages).
const TARGET_BATCH: usize = 32;

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
    Unmovable {
        addr: PhysAddr,
        next: usize,
    },
    Pinned {
        page: MovablePage,
        next: usize,
    },
    Dropped {
        dropped: DroppedPage,
        next: usize,
    },
    /// Its migration is prepared: copy, then commit.
    Migrate {
        ticket: MigrationTicket,
        next: usize,
    },
    /// No target for it.
    Failed {
        error: MigrateError,
        next: usize,
    },
}

impl PageAllocator {
    /// Migration step 1: choose the target frame, from `targets` if it has one that suits.
    pub(super) fn prepare_migration(&mut self, page: MovablePage, targets: &mut MigrationTargets) -> Result<MigrationTicket, MigrateError> {
        let e = *self.movable.get(page).ok_or(MigrateError::Stale(page))?;
        if e.pins > 0 {
            return Err(MigrateError::Pinned(page));
        }
        self.prepare_migration_at(page, e.idx, e.order, e.highest_zone, e.pin_seq, targets)
    }

    /// [`prepare_migration`](Self::prepare_migration) for an unpinned page whose entry the
    /// caller has just read under the same lock hold.
    #[inline]
    fn prepare_migration_at(
        &mut self,
        page: MovablePage,
        src: usize,
        order: u8,
        highest_zone: ZoneType,
        pin_seq: u32,
        targets: &mut MigrationTargets,
    ) -> Result<MigrationTicket, MigrateError> {
        let dst = match self.take_target(targets, order, highest_zone) {
            Some(dst) => dst,
            None => self.rmqueue(order, highest_zone, MigrateType::Movable, false).map_err(|_| MigrateError::NoMemory(page))?,
        };
        Ok(MigrationTicket { page, src, dst, order, pin_seq })
    }

    /// An order-0 target frame from `targets`, refilled with one chunk of up to `targets.need`
    /// pages when empty; `None` if it has none for this page (another order, a zone the page
    /// may not use, or no free MOVABLE block): then the caller allocates the usual way.
    #[inline]
    fn take_target(&mut self, targets: &mut MigrationTargets, order: u8, highest_zone: ZoneType) -> Option<usize> {
        if order != 0 {
            return None;
        }
        if targets.next_single == targets.nr_singles && targets.next == targets.end && targets.need > 1 {
            self.refill_targets(targets, highest_zone);
        }
        targets.need = targets.need.saturating_sub(1);
        if targets.next_single < targets.nr_singles {
            let idx = targets.singles[targets.next_single] as usize;
            if self.zone_of(idx) > highest_zone {
                return None;
            }
            targets.next_single += 1;
            return Some(idx);
        }
        if targets.next == targets.end || self.zone_of(targets.next) > highest_zone {
            return None;
        }
        // The chunk's rest `next..end` is a row of aligned `Allocated` blocks, each twice the
        // previous: split the first into its first page and the halves after it.
        let idx = targets.next;
        let PageDesc::Allocated { order: o } = self.mem_map[idx] else {
            unreachable!("migration target {idx} is not allocated");
        };
        for h in 0..o {
            self.mem_map[idx + (1 << h)] = PageDesc::Allocated { order: h };
        }
        self.mem_map[idx] = PageDesc::Allocated { order: 0 };
        targets.next += 1;
        Some(idx)
    }

    /// Takes one free block of at most `2^floor(log2(need))` pages for `targets`: the smallest
    /// on MOVABLE's lists (split as `rmqueue` would, only the rest goes back), zone by zone as
    /// `rmqueue` walks them; if a zone has none, `rmqueue`'s fallbacks give one page. If the
    /// smallest are single pages, up to [`TARGET_BATCH`] of them (and at most `need`) come
    /// off the order-0 list in one go, in the order `rmqueue` would have taken them.
    fn refill_targets(&mut self, targets: &mut MigrationTargets, highest_zone: ZoneType) {
        let want = (targets.need.ilog2() as u8).min(MAX_PAGE_ORDER);
        let movable = MigrateType::Movable.index();
        for zone in highest_zone.zonelist() {
            let z = &mut self.zones[zone as usize];
            let mut head = z.free_area[0].free_list[movable];
            if head != NIL {
                let mut n = 0;
                while n < TARGET_BATCH.min(targets.need) && head != NIL {
                    let PageDesc::Free { next, .. } = self.mem_map[head as usize] else {
                        unreachable!("page {head} on a free list is not free");
                    };
                    self.mem_map[head as usize] = PageDesc::Allocated { order: 0 };
                    targets.singles[n] = head;
                    n += 1;
                    head = next;
                }
                z.free_area[0].free_list[movable] = head;
                z.free_area[0].nr_free[movable] -= n;
                z.nr_free_pages[movable] -= n;
                if let Some(PageDesc::Free { prev, .. }) = self.mem_map.get_mut(head as usize) {
                    *prev = NIL;
                }
                (targets.next_single, targets.nr_singles) = (0, n);
                return;
            }
            for o in 1..=MAX_PAGE_ORDER {
                let head = self.zones[zone as usize].free_area[o as usize].free_list[MigrateType::Movable.index()];
                if head != NIL {
                    let (idx, take) = (head as usize, o.min(want));
                    self.del_from_free_list(idx, o, MigrateType::Movable);
                    self.expand(idx, take, o, MigrateType::Movable);
                    self.mem_map[idx] = PageDesc::Allocated { order: take };
                    (targets.next, targets.end) = (idx, idx + (1 << take));
                    return;
                }
            }
            if let Some(idx) = self.rmqueue_fallback(zone, 0, MigrateType::Movable, false) {
                self.mem_map[idx] = PageDesc::Allocated { order: 0 };
                (targets.next, targets.end) = (idx, idx + 1);
                return;
            }
        }
    }

    /// Frees the targets nobody used.
    pub(super) fn release_targets(&mut self, targets: &mut MigrationTargets) {
        while targets.next_single < targets.nr_singles {
            self.free_one_page(targets.singles[targets.next_single] as usize, 0);
            targets.next_single += 1;
        }
        while targets.next < targets.end {
            let idx = targets.next;
            let PageDesc::Allocated { order } = self.mem_map[idx] else {
                unreachable!("migration target {idx} is not allocated");
            };
            self.free_one_page(idx, order);
            targets.next += 1 << order;
        }
        targets.need = 0;
    }

    /// Migration step 3: switch the handle to the copied frame if nothing raced the copy.
    #[inline]
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
            // A movable page's descriptor names its handle's slot (`alloc_movable`).
            debug_assert_eq!(self.mem_map_slot(t.src), t.page.slot());
            self.mem_map[t.dst] = PageDesc::Movable { order: t.order, slot: t.page.slot() };
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
    fn reclaim_step(&mut self, mut cursor: usize, end: usize, mode: ReclaimMode, targets: &mut MigrationTargets) -> ReclaimStep {
        while let Some((idx, desc)) = self.next_head(cursor, end) {
            match desc {
                PageDesc::Free { order, .. } => cursor = idx + (1 << order),
                PageDesc::Allocated { order } => return ReclaimStep::Unmovable { addr: self.addr_of(idx), next: idx + (1 << order) },
                PageDesc::Movable { order, slot } => {
                    let next = idx + (1 << order);
                    let page = self.movable.handle(slot);
                    let e = self.movable.get(page).expect("movable page without a live handle");
                    let (pins, owner, highest_zone, pin_seq) = (e.pins, e.owner, e.highest_zone, e.pin_seq);
                    if pins > 0 || (mode.drop_clean && owner.kind == OwnerKind::Clean) {
                        // No target for it: one fewer to take.
                        targets.need = targets.need.saturating_sub(usize::from(order == 0));
                    }
                    if pins > 0 {
                        return ReclaimStep::Pinned { page, next };
                    }
                    if mode.drop_clean && owner.kind == OwnerKind::Clean {
                        self.drop_movable(page);
                        return ReclaimStep::Dropped { dropped: DroppedPage { page, cookie: owner.cookie }, next };
                    }
                    return match self.prepare_migration_at(page, idx, order, highest_zone, pin_seq, targets) {
                        Ok(ticket) => ReclaimStep::Migrate { ticket, next },
                        Err(error) => ReclaimStep::Failed { error, next },
                    };
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
    /// The page's handle, stale now.
    pub page: MovablePage,
    /// The owner's cookie, from its [`PageOwner`](super::PageOwner).
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
    pub(super) inner: IrqSafeSpinLock<PageAllocator>,
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
    /// block or a CMA block is first migrated out, so the pin cannot stop the block being taken
    /// back; if that fails the pin is refused (Linux: `check_and_migrate_movable_pages()` for CMA).
    /// Task context only.
    pub fn pin_longterm<M: PhysMemory + ?Sized>(&self, page: MovablePage, mem: &M) -> Result<PinGuard<'_>, PinError> {
        assert!(!in_interrupt(), "pin_longterm may migrate: task context only");
        for attempt in 0..2 {
            {
                let mut a = self.inner.lock();
                let idx = a.entry(page).map_err(|_| PinError::Stale(page))?.idx;
                let in_lent_block =
                    a.pageblock_type[idx >> PAGEBLOCK_ORDER].is_some_and(|mt| mt.is_borrowed_only() || mt == MigrateType::Isolate);
                if !in_lent_block {
                    let addr = a.pin_longterm_here(page).map_err(|_| PinError::Stale(page))?;
                    return Ok(PinGuard { allocator: self, page, addr, longterm: true });
                }
            }
            if attempt == 0 {
                self.migrate_page(page, mem).map_err(PinError::CannotMigrate)?;
            }
        }
        unreachable!("a migrated page never lands in a SWIOTLB, CMA or isolated block")
    }

    /// Moves a movable page to a frame outside SWIOTLB and CMA blocks. Task context only.
    pub fn migrate_page<M: PhysMemory + ?Sized>(&self, page: MovablePage, mem: &M) -> Result<(), MigrateError> {
        assert!(!in_interrupt(), "page migration runs in task context only");
        self.migrate_one(page, mem).map(|_| ())
    }

    fn migrate_one<M: PhysMemory + ?Sized>(&self, page: MovablePage, mem: &M) -> Result<Migrated, MigrateError> {
        for _ in 0..MIGRATE_RETRIES {
            let (ticket, dst, src) = {
                let mut a = self.inner.lock();
                let t = a.prepare_migration(page, &mut MigrationTargets::default())?;
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
        self.alloc_contig_range(range.clone(), MigrateType::Swiotlb, mem, mode, on_drop).inspect_err(|e| {
            if let ReclaimError::Busy(report) = e {
                log::warn!("page_alloc: reclaim of {:#x}..{:#x} failed: {report:?}", range.start, range.end);
            }
        })
    }

    /// Takes pageblocks of `migratetype` out of the allocator (Linux: `alloc_contig_range(start,
    /// end, migratetype)`): every block of `range` must be of that type (so a CMA allocation
    /// never takes a lent SWIOTLB block and SWIOTLB reclaim never takes a CMA one); they are
    /// isolated, their movable pages migrated out (clean ones dropped if `mode` allows, `on_drop`
    /// told), and taken. If a page cannot move, the range is given back with its type. For CMA
    /// the first such page fails the range (Linux: `-EBUSY`; `cma_alloc` then tries another
    /// run); SWIOTLB reclaim goes on, so that its report names every page in the way. Callers:
    /// [`reclaim_swiotlb_pageblocks`](Self::reclaim_swiotlb_pageblocks) and
    /// [`CmaArea`](crate::mm::cma::CmaArea), which marks the range in its bitmap first.
    /// Task context only.
    pub(crate) fn alloc_contig_range<M: PhysMemory + ?Sized>(
        &self,
        range: Range<PhysAddr>,
        migratetype: MigrateType,
        mem: &M,
        mode: ReclaimMode,
        on_drop: &mut dyn FnMut(DroppedPage),
    ) -> Result<ReclaimReport, ReclaimError> {
        assert!(!in_interrupt(), "alloc_contig_range migrates pages: task context only");
        let fail_fast = migratetype != MigrateType::Swiotlb;
        let request = ContigRequest { accept: Accept::Only(migratetype), mode, take: true, fail_fast };
        self.isolate_migrate_range(&range, request, mem, on_drop).map_err(|e| match e {
            ContigError::Range(e) => ReclaimError::Range(e),
            ContigError::WrongType { addr, .. } if migratetype == MigrateType::Swiotlb => ReclaimError::Range(RangeError::NotSwiotlb(addr)),
            ContigError::WrongType { addr, .. } => ReclaimError::Range(RangeError::NotCma(addr)),
            ContigError::Busy(report) => ReclaimError::Busy(report),
        })
    }

    /// The body shared by SWIOTLB reclaim, compaction and `cma_alloc` (Linux:
    /// `alloc_contig_range()`: `start_isolate_page_range()`, `__alloc_contig_migrate_range()`,
    /// `test_pages_isolated()`): checks every pageblock of `range` against `request.accept`,
    /// refuses a range holding unmovable pages (Linux: `has_unmovable_pages()`), isolates it,
    /// migrates its movable pages (or drops clean ones, calling `on_drop` outside the lock) to
    /// frames outside the range, then takes the emptied blocks out of the allocator or gives them
    /// back their types. On failure every block gets its own type back. Task context only (the
    /// callers assert it).
    pub(super) fn isolate_migrate_range<M: PhysMemory + ?Sized>(
        &self,
        range: &Range<PhysAddr>,
        request: ContigRequest,
        mem: &M,
        on_drop: &mut dyn FnMut(DroppedPage),
    ) -> Result<ReclaimReport, ContigError> {
        let mut report = ReclaimReport::default();
        let mut targets = MigrationTargets::default();
        let (blocks, types) = {
            let mut a = self.inner.lock();
            let blocks = a.pageblock_range(range).map_err(ContigError::Range)?;
            let mut types = Vec::with_capacity(blocks.len());
            for b in blocks.clone() {
                let (addr, mt) = (a.addr_of(b << PAGEBLOCK_ORDER), a.pageblock_type[b]);
                match mt {
                    Some(t) if request.accept.accepts(t, a.pageblock_is_free(b)) => types.push(t),
                    _ => return Err(ContigError::WrongType { addr, mt }),
                }
                if !a.pageblock_fully_managed(b) {
                    return Err(ContigError::Range(RangeError::PartlyManaged(addr)));
                }
            }
            for b in blocks.clone() {
                targets.need += a.isolate_pageblock_checked(b, request.fail_fast, &mut report);
            }
            if report.is_busy() {
                blocks.zip(types).for_each(|(b, mt)| a.undo_isolate_pageblock(b, mt));
                return Err(ContigError::Busy(report));
            }
            (blocks, types)
        };
        // One lock section per batch of up to RECLAIM_BATCH pages: commit the previous batch's
        // migrations, find the next pages and take their targets; then, with the lock dropped,
        // tell the owners of dropped pages and copy. The Vecs are sized once, here: nothing
        // allocates under the lock for them.
        let mut pending: Vec<(MigrationTicket, usize)> = Vec::with_capacity(RECLAIM_BATCH);
        let mut retries: Vec<(MovablePage, usize)> = Vec::with_capacity(RECLAIM_BATCH);
        let mut dropped: Vec<DroppedPage> = Vec::with_capacity(RECLAIM_BATCH);
        let (mut block, mut walk_done) = (blocks.start, blocks.is_empty());
        let mut cursor = block << PAGEBLOCK_ORDER;
        loop {
            let mut a = self.inner.lock();
            for (t, tries) in pending.drain(..) {
                match a.commit_migration(t) {
                    Migrated::Moved => report.migrated += 1,
                    Migrated::FreedMeanwhile => report.freed_meanwhile += 1,
                    Migrated::Raced if tries + 1 < MIGRATE_RETRIES => retries.push((t.page, tries + 1)),
                    Migrated::Raced => report.pinned.push(t.page),
                }
            }
            if (request.fail_fast && report.is_busy()) || (walk_done && retries.is_empty()) {
                break;
            }
            // At most RECLAIM_BATCH steps (each one page prepared, dropped or reported, or one
            // block's walk ended) per lock hold; the tickets are at most as many.
            for _ in 0..RECLAIM_BATCH {
                if request.fail_fast && report.is_busy() {
                    break;
                }
                let prepared = if let Some((page, tries)) = retries.pop() {
                    a.prepare_migration(page, &mut targets).map(|t| (t, tries))
                } else if walk_done {
                    break;
                } else {
                    match a.reclaim_step(cursor, (block + 1) << PAGEBLOCK_ORDER, request.mode, &mut targets) {
                        ReclaimStep::Done => {
                            block += 1;
                            walk_done = block == blocks.end;
                            cursor = block << PAGEBLOCK_ORDER;
                            continue;
                        }
                        ReclaimStep::Unmovable { addr, next } => {
                            report.unmovable.push(addr);
                            cursor = next;
                            continue;
                        }
                        ReclaimStep::Pinned { page, next } => {
                            report.pinned.push(page);
                            cursor = next;
                            continue;
                        }
                        ReclaimStep::Dropped { dropped: d, next } => {
                            report.dropped += 1;
                            dropped.push(d);
                            cursor = next;
                            continue;
                        }
                        ReclaimStep::Migrate { ticket, next } => {
                            cursor = next;
                            Ok((ticket, 0))
                        }
                        ReclaimStep::Failed { error, next } => {
                            cursor = next;
                            Err(error)
                        }
                    }
                };
                match prepared {
                    Ok(pending_one) => pending.push(pending_one),
                    Err(MigrateError::Stale(_)) => report.freed_meanwhile += 1,
                    Err(MigrateError::Pinned(p)) => report.pinned.push(p),
                    Err(e) => report.failed.push(e),
                }
            }
            let base = a.base;
            drop(a);
            if !dropped.is_empty() {
                dropped.drain(..).for_each(&mut *on_drop);
            }
            for (t, _) in &pending {
                let (dst, src) = (base + ((t.dst as u64) << PAGE_SHIFT), base + ((t.src as u64) << PAGE_SHIFT));
                mem.copy(dst, src, (PAGE_SIZE << t.order) as usize);
            }
        }
        debug_assert!(pending.is_empty(), "every copy is committed before the walk ends");
        let mut a = self.inner.lock();
        a.release_targets(&mut targets);
        if !report.is_busy() && blocks.clone().all(|b| a.isolated_pageblock_is_free(b)) {
            if request.take {
                blocks.for_each(|b| a.take_free_pageblock(b));
            } else {
                blocks.zip(types).for_each(|(b, mt)| a.undo_isolate_pageblock(b, mt));
            }
            Ok(report)
        } else {
            blocks.zip(types).for_each(|(b, mt)| a.undo_isolate_pageblock(b, mt));
            Err(ContigError::Busy(report))
        }
    }
}

/// What [`LockedPageAllocator::isolate_migrate_range`] is asked to do.
#[derive(Clone, Copy)]
pub(super) struct ContigRequest {
    /// Which pageblocks may be in the range; checked for every block before anything is
    /// isolated. This is what keeps `cma_alloc` out of SWIOTLB blocks and SWIOTLB reclaim out of
    /// CMA ones.
    pub(super) accept: Accept,
    /// What to do with clean pages.
    pub(super) mode: ReclaimMode,
    /// Take the emptied blocks out of the allocator; otherwise give them back their types.
    pub(super) take: bool,
    /// Refuse a range with a pinned page before isolating it, and stop at the first page that
    /// cannot move (Linux `alloc_contig_range()`, `-EBUSY`). Reclaim goes on instead, so that its
    /// report names every page in the way.
    pub(super) fail_fast: bool,
}

/// The pageblock types a range to empty may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Accept {
    /// Only blocks of this type.
    Only(MigrateType),
    /// MOVABLE blocks, and wholly free UNMOVABLE ones (compaction).
    MovableOrFree,
}

impl Accept {
    fn accepts(self, mt: MigrateType, wholly_free: bool) -> bool {
        match self {
            Accept::Only(t) => mt == t,
            Accept::MovableOrFree => mt == MigrateType::Movable || (mt == MigrateType::Unmovable && wholly_free),
        }
    }
}

/// Why [`LockedPageAllocator::isolate_migrate_range`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ContigError {
    /// Not whole pageblocks inside the span.
    Range(RangeError),
    /// This pageblock's type is not one the caller accepts; nothing was isolated.
    WrongType { addr: PhysAddr, mt: Option<MigrateType> },
    /// Some pages could not be moved (or the range holds unmovable pages); isolation was undone.
    Busy(ReclaimReport),
}

impl ReclaimReport {
    /// Whether a page in the way was found (pinned, unmovable, or no target for it).
    pub fn is_busy(&self) -> bool {
        !(self.pinned.is_empty() && self.failed.is_empty() && self.unmovable.is_empty())
    }
}

impl PageAllocator {
    /// Whether a pageblock is one free block (never split, nothing allocated from it).
    pub(super) fn pageblock_is_free(&self, block: usize) -> bool {
        matches!(self.mem_map[block << PAGEBLOCK_ORDER], PageDesc::Free { order: MAX_PAGE_ORDER, .. })
    }

    /// Whether every page of a pageblock is managed (no hole, reservation or edge of RAM in it).
    pub(super) fn pageblock_fully_managed(&self, block: usize) -> bool {
        let head = block << PAGEBLOCK_ORDER;
        !self.mem_map[head..head + PAGEBLOCK_NR_PAGES].contains(&PageDesc::Unmanaged)
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
