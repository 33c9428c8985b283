//! The worker: grows the pools under pressure, shrinks them when idle. Task context only.
#![forbid(unsafe_code)]

use alloc::vec;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;

use super::blocks::BlockState;
use super::config::Clock;
use super::io_tlb_mem::SwiotlbMem;
use super::stats::add;
use super::{LendError, SLOTS_PER_PAGEBLOCK};
use crate::arch::in_interrupt;
use crate::bootargs::SwiotlbPolicy;
use crate::mm::page_alloc::{DroppedPage, LockedPageAllocator, ReclaimError, ReclaimMode, ReclaimReport, ZoneType};

/// What one worker run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Another worker, carve or return was running: nothing done.
    pub skipped_busy: bool,
    /// Pageblocks taken back from the page allocator and made slots (lend policy).
    pub pageblocks_reclaimed: usize,
    /// Lent pageblocks skipped because reclaim found pinned pages.
    pub pageblocks_busy: usize,
    /// Pages migrated / dropped while reclaiming.
    pub pages_migrated: usize,
    /// Clean pages dropped while reclaiming.
    pub pages_dropped: usize,
    /// Pinned pages that blocked a reclaim.
    pub pages_pinned: usize,
    /// Time spent reclaiming.
    pub reclaim_time: Duration,
    /// Pageblocks lent to the page allocator (shrink).
    pub pageblocks_lent: usize,
    /// Pageblocks in the extra pool or chunk added (dynamic and cma policies).
    pub pageblocks_added: usize,
}

/// Excludes the worker, carving and returning from each other; dropping it ends the exclusion.
pub(super) struct Exclusive<'a>(&'a AtomicBool);

impl<'a> Exclusive<'a> {
    pub(super) fn enter(flag: &'a AtomicBool) -> Result<Self, LendError> {
        flag.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).map_err(|_| LendError::Busy)?;
        Ok(Self(flag))
    }
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl SwiotlbMem {
    /// Does at most one grow or shrink batch (grow first). Run it when
    /// [`should_kick`](Self::should_kick) says so and periodically (the shrink timer only
    /// advances when the worker looks). `on_drop` hears of every clean page reclaim drops.
    /// Task context only: reclaim migrates pages.
    pub fn worker(&self, pages: &LockedPageAllocator, clock: &dyn Clock, on_drop: &mut dyn FnMut(DroppedPage)) -> WorkerReport {
        assert!(!in_interrupt(), "the swiotlb worker migrates pages: task context only");
        let mut report = WorkerReport::default();
        let Ok(_running) = Exclusive::enter(&self.running) else {
            report.skipped_busy = true;
            return report;
        };
        self.counters.worker_runs.fetch_add(1, Ordering::Relaxed);
        let miss = self.miss_pending.swap(false, Ordering::Relaxed);
        let grow = miss || self.below_low_wm();
        match self.policy {
            SwiotlbPolicy::Static => {}
            SwiotlbPolicy::Lend if grow && self.blocks.count(BlockState::Lent) > 0 => {
                self.grow_by_reclaim(pages, clock, on_drop, &mut report);
                self.stop_shrink_timer();
            }
            SwiotlbPolicy::Lend => self.shrink_when_idle(pages, clock.now(), &mut report),
            SwiotlbPolicy::Dynamic if grow => {
                let started = clock.now();
                self.grow_by_new_pool(pages, on_drop, &mut report);
                // Only growth that happened: a failed search for free pageblocks shows as misses.
                if report.pageblocks_added > 0 {
                    add(&self.counters.grow_time_ns, clock.now().saturating_sub(started).as_nanos() as usize);
                }
            }
            // Linux's dynamic pools never shrink.
            SwiotlbPolicy::Dynamic => {}
            SwiotlbPolicy::Cma if grow => {
                let started = clock.now();
                self.grow_by_cma_chunk(pages, on_drop, &mut report);
                if report.pageblocks_added > 0 {
                    add(&self.counters.grow_time_ns, clock.now().saturating_sub(started).as_nanos() as usize);
                }
                self.stop_shrink_timer();
            }
            SwiotlbPolicy::Cma => self.release_idle_cma_chunks(pages, clock.now(), &mut report),
        }
        report
    }

    /// Takes up to `batch` lent pageblocks back, each from the area with the fewest usable
    /// slots (`areas.rs`), skipping blocks with pinned pages: reclaim (migrate or drop), then
    /// make them free slots (dirty, or zeroed first with `swiotlb_reclaim_scrub=on`).
    fn grow_by_reclaim(
        &self,
        pages: &LockedPageAllocator,
        clock: &dyn Clock,
        on_drop: &mut dyn FnMut(DroppedPage),
        report: &mut WorkerReport,
    ) {
        let started = clock.now();
        let mut tried = vec![false; self.blocks.len()];
        while report.pageblocks_reclaimed < self.tunables.batch {
            let Some(block) = self.next_to_reclaim(&tried) else { break };
            tried[block] = true;
            match self.reclaim_block(pages, block, on_drop, report) {
                Ok(()) => {
                    // Whatever the page allocator's users left in the block must not reach a
                    // device. Either it is zeroed now (`swiotlb_reclaim_scrub=on`), or the slots
                    // come back dirty: a mapping on dirty slots copies in and zeroes the rest of
                    // its slots, and idle CPUs zero them off the critical path (`scrub_step`).
                    match self.pool.unlend(self.block_slots(block), self.tunables.reclaim_scrub) {
                        Ok(()) => {
                            self.blocks.set(block, BlockState::AsSlots);
                            report.pageblocks_reclaimed += 1;
                        }
                        Err(e) => {
                            // Cannot happen: only the worker guard holder changes lent slots.
                            // Left `Reclaiming`, visible in the stats table.
                            log::error!("swiotlb: reclaimed pageblock {block} not unlent: {e}");
                        }
                    }
                }
                Err(_) => report.pageblocks_busy += 1,
            }
        }
        report.reclaim_time = clock.now().saturating_sub(started);
        add(&self.counters.reclaim_time_ns, report.reclaim_time.as_nanos() as usize);
        add(&self.counters.grow_time_ns, report.reclaim_time.as_nanos() as usize);
        if report.pageblocks_reclaimed > 0 {
            log::debug!("swiotlb: grew by {} pageblocks in {:?}", report.pageblocks_reclaimed, report.reclaim_time);
        }
    }

    /// Takes lent pageblock `block` back from the page allocator. The block's slots stay `Lent`
    /// in the pool: the caller decides what they become. On error the block stays lent.
    pub(super) fn reclaim_block(
        &self,
        pages: &LockedPageAllocator,
        block: usize,
        on_drop: &mut dyn FnMut(DroppedPage),
        report: &mut WorkerReport,
    ) -> Result<(), ReclaimError> {
        self.blocks.set(block, BlockState::Reclaiming);
        add(&self.counters.reclaims, 1);
        let range = self.block_addrs(block..block + 1);
        let result = pages.reclaim_swiotlb_pageblocks(range, self.mem, ReclaimMode { drop_clean: true }, on_drop);
        let ReclaimReport { migrated, dropped, pinned, .. } = match &result {
            Ok(r) | Err(ReclaimError::Busy(r)) => r,
            Err(e @ ReclaimError::Range(_)) => {
                log::error!("swiotlb: pageblock {block} is not lent as it should be: {e}");
                self.blocks.set(block, BlockState::Lent);
                return result.map(drop);
            }
        };
        report.pages_migrated += migrated;
        report.pages_dropped += dropped;
        report.pages_pinned += pinned.len();
        add(&self.counters.pages_migrated, *migrated);
        add(&self.counters.pages_dropped, *dropped);
        add(&self.counters.pages_pinned_blocking, pinned.len());
        if result.is_ok() {
            add(&self.counters.pageblocks_reclaimed, 1);
        } else {
            add(&self.counters.reclaims_busy, 1);
            self.blocks.set(block, BlockState::Lent);
        }
        result.map(drop)
    }

    /// Hysteresis: usage at or over the high watermark (now, or at any mapping since the last
    /// run) stops the shrink timer; under it the timer runs, and once it has run
    /// `shrink_delay`, up to `batch` wholly free slot pageblocks are lent, each from the area
    /// with the most free slots (`areas.rs`), and the timer restarts.
    fn shrink_when_idle(&self, pages: &LockedPageAllocator, now: Duration, report: &mut WorkerReport) {
        if !self.shrink_due(now) {
            return;
        }
        let floor = self.tunables.min_slot_pageblocks();
        let mut tried = vec![false; self.blocks.len()];
        while report.pageblocks_lent < self.tunables.batch && self.blocks.count(BlockState::AsSlots) > floor {
            let Some(block) = self.next_to_lend(&tried) else { break };
            tried[block] = true;
            match self.lend_block(pages, block) {
                Ok(()) => report.pageblocks_lent += 1,
                Err(e) => log::debug!("swiotlb: pageblock {block} not lent: {e}"),
            }
        }
        if report.pageblocks_lent > 0 {
            add(&self.counters.shrinks, 1);
            add(&self.counters.pageblocks_lent_again, report.pageblocks_lent);
        }
        self.start_shrink_timer(now);
    }

    /// Lends the free slot pageblock `block` to the page allocator.
    pub(super) fn lend_block(&self, pages: &LockedPageAllocator, block: usize) -> Result<(), LendError> {
        if self.never_lend {
            return Err(LendError::NeverLend);
        }
        let slots = self.block_slots(block);
        if self.blocks.get(block) == BlockState::AsSlots {
            self.pool.lend(slots.clone())?;
        }
        if let Err(e) = pages.lock().lend_swiotlb_pageblocks(self.block_addrs(block..block + 1)) {
            if self.blocks.get(block) == BlockState::AsSlots {
                let _ = self.pool.unlend(slots, false);
            }
            return Err(e.into());
        }
        self.blocks.set(block, BlockState::Lent);
        Ok(())
    }

    /// Dynamic policy (Linux `swiotlb_dyn_alloc`): adds an extra pool of the default size (the
    /// boot pool's, or `swiotlb_dyn_pool=`) from ZONE_DMA, halving the size down to one pageblock
    /// when that much contiguous memory cannot be had, compacting movable pages out of the way as
    /// a `GFP_KERNEL` allocation does. Never freed.
    fn grow_by_new_pool(&self, pages: &LockedPageAllocator, on_drop: &mut dyn FnMut(DroppedPage), report: &mut WorkerReport) {
        let n = self.nr_extra.load(Ordering::Relaxed);
        if n == self.extra.len() {
            return;
        }
        let default_blocks = match self.tunables.dyn_pool_pageblocks {
            0 => self.pool.nslots() / SLOTS_PER_PAGEBLOCK,
            n => n,
        };
        let mut count = default_blocks.max(1);
        let got = loop {
            match pages.alloc_contig_pageblocks_compact(count, ZoneType::Dma, self.mem, ReclaimMode { drop_clean: true }, on_drop) {
                Ok((start, compacted)) => {
                    report.pages_migrated += compacted.migrated;
                    report.pages_dropped += compacted.dropped;
                    add(&self.counters.pages_migrated, compacted.migrated);
                    add(&self.counters.pages_dropped, compacted.dropped);
                    break Some((start, count));
                }
                Err(_) if count > 1 => count /= 2,
                Err(_) => break None,
            }
        };
        let Some((start, count)) = got else {
            log::warn!("swiotlb: no contiguous memory for an extra pool, even one pageblock after compaction");
            return;
        };
        let nslots = count * SLOTS_PER_PAGEBLOCK;
        match self.new_grown_pool(start, nslots) {
            Ok(pool) => {
                self.publish_extra(n, pool);
                add(&self.counters.extra_pools, 1);
                add(&self.counters.extra_pageblocks, count);
                report.pageblocks_added = count;
                log::info!("swiotlb: added pool {start:#x} of {count} pageblocks");
            }
            Err(e) => {
                log::error!("swiotlb: extra pool at {start:#x}: {e}");
                let _ = pages.lock().free_contig_pageblocks(start, count);
            }
        }
    }

    /// The shrink hysteresis: false (and the timer stopped) if usage reached the high watermark
    /// since the last look; false (and the timer started) if it was not running; true once usage
    /// has stayed under the mark for `shrink_delay`. The caller restarts the timer after shrinking.
    pub(super) fn shrink_due(&self, now: Duration) -> bool {
        if self.high_usage_seen.swap(false, Ordering::Relaxed) || self.at_or_above_high_wm() {
            self.stop_shrink_timer();
            return false;
        }
        match self.low_since_ns.load(Ordering::Relaxed) {
            0 => {
                self.start_shrink_timer(now);
                false
            }
            ns => now.saturating_sub(Duration::from_nanos(ns - 1)) >= self.tunables.shrink_delay,
        }
    }

    pub(super) fn start_shrink_timer(&self, now: Duration) {
        self.low_since_ns.store(now.as_nanos() as u64 + 1, Ordering::Relaxed);
    }

    pub(super) fn stop_shrink_timer(&self) {
        self.low_since_ns.store(0, Ordering::Relaxed);
    }
}
