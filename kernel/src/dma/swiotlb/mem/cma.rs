//! The `cma` policy: the rival upstream named ("what exactly is the advantage compared to
//! allocating additional swiotlb chunks from CMA?"), built as a Linux developer would build it.
//!
//! The default pool is small (`swiotlb_keep` pageblocks). When it runs low, the worker
//! `cma_alloc`s a chunk of `swiotlb_cma_chunk` pageblocks from the CMA area (task context: it
//! isolates the range and migrates the movable pages out, as `alloc_contig_range` does) and adds
//! it as a pool. A chunk whose slots have all been free for `swiotlb_shrink_delay_ms` goes back to
//! the area with `cma_release` (a fairer rival than Linux's never-shrinking dynamic pools).
//! Interrupt context cannot allocate from CMA: a miss there fails and is deferred, exactly as the
//! same miss under `lend`.
//!
//! A released chunk's pool stays on the pool list with all its slots `Lent` (no mapping can take
//! them, `is_swiotlb_buffer` says no), so readers of the list never see a pool go away (Linux uses
//! RCU and `synchronize_rcu()` for that); when `cma_alloc` returns the same chunk again its pool
//! is scrubbed and reused. The list holds at most one pool per start pageblock of the area; a
//! new chunk may overlap a released one, so lookups skip pools whose slot at the address is lent.
#![forbid(unsafe_code)]

use core::sync::atomic::Ordering;
use core::time::Duration;

use super::io_tlb_mem::SwiotlbMem;
use super::stats::add;
use super::worker::WorkerReport;
use super::SLOTS_PER_PAGEBLOCK;
use crate::mm::cma::CmaArea;
use crate::mm::page_alloc::{DroppedPage, LockedPageAllocator, ReclaimMode};

impl SwiotlbMem {
    /// Gives the `cma` policy its area. Task context, once.
    pub fn enable_cma(&self, area: &'static CmaArea) {
        self.cma.call_once(|| area);
    }

    /// The CMA area the `cma` policy takes chunks from.
    pub fn cma_area(&self) -> Option<&'static CmaArea> {
        self.cma.get().copied()
    }

    /// Whether a chunk could be added: the area has a free chunk and the pool list has room (or a
    /// released chunk's pool to reuse). Any context: atomics only, and a walk of the chunk pools.
    pub(super) fn cma_can_grow(&self) -> bool {
        let Some(area) = self.cma.get() else { return false };
        let chunk = self.tunables.cma_chunk_pageblocks;
        area.pageblocks() - area.allocated_pageblocks() >= chunk
            && (self.nr_extra.load(Ordering::Relaxed) < self.extra.len() || self.extra_pools().any(|p| p.lent_slots() == p.nslots()))
    }

    /// Pools over chunks the area holds now (not released).
    pub fn cma_chunks_in_use(&self) -> usize {
        self.extra_pools().filter(|p| p.lent_slots() < p.nslots()).count()
    }

    /// Allocates one chunk from the CMA area and adds (or revives) its pool.
    pub(super) fn grow_by_cma_chunk(&self, pages: &LockedPageAllocator, on_drop: &mut dyn FnMut(DroppedPage), report: &mut WorkerReport) {
        let Some(area) = self.cma.get() else { return };
        let count = self.tunables.cma_chunk_pageblocks;
        let (start, got) = match area.cma_alloc(pages, self.mem, count, ReclaimMode { drop_clean: true }, on_drop) {
            Ok(r) => r,
            Err(e) => {
                log::warn!("swiotlb: cma_alloc of {count} pageblocks from {}: {e}", area.name());
                add(&self.counters.cma_alloc_failures, 1);
                return;
            }
        };
        report.pages_migrated += got.migrated;
        report.pages_dropped += got.dropped;
        report.pages_pinned += got.pinned.len();
        add(&self.counters.pages_migrated, got.migrated);
        add(&self.counters.pages_dropped, got.dropped);
        add(&self.counters.pages_pinned_blocking, got.pinned.len());
        let nslots = count * SLOTS_PER_PAGEBLOCK;
        if let Some(pool) = self.extra_pools().find(|p| p.start() == start && p.nslots() == nslots) {
            // A chunk we had before: what the page allocator's users left is zeroed now or
            // its slots come back dirty, as for a reclaimed lent block (`grow_by_reclaim`).
            if let Err(e) = pool.unlend(0..nslots, self.tunables.reclaim_scrub) {
                log::error!("swiotlb: chunk {start:#x} back from CMA but its slots were not lent: {e}");
                return;
            }
        } else {
            let n = self.nr_extra.load(Ordering::Relaxed);
            let pool = match self.new_grown_pool(start, nslots) {
                Ok(pool) if n < self.extra.len() => pool,
                Ok(_) | Err(_) => {
                    log::error!("swiotlb: no room on the pool list for chunk {start:#x}");
                    let _ = area.cma_release(pages, start, count);
                    return;
                }
            };
            self.publish_extra(n, pool);
            add(&self.counters.extra_pools, 1);
        }
        add(&self.counters.extra_pageblocks, count);
        add(&self.counters.cma_chunks_allocated, 1);
        report.pageblocks_added = count;
        log::debug!("swiotlb: chunk {start:#x} of {count} pageblocks from CMA ({} pages migrated)", got.migrated);
    }

    /// Shrink under `cma`: with the same hysteresis as `lend`, gives wholly free chunks back to
    /// the CMA area, newest first, at most `batch` per run.
    pub(super) fn release_idle_cma_chunks(&self, pages: &LockedPageAllocator, now: Duration, report: &mut WorkerReport) {
        let Some(area) = self.cma.get() else { return };
        if !self.shrink_due(now) {
            return;
        }
        let count = self.tunables.cma_chunk_pageblocks;
        let mut released = 0;
        for pool in self.extra_pools().collect::<alloc::vec::Vec<_>>().into_iter().rev() {
            if released == self.tunables.batch {
                break;
            }
            // `lend` refuses if a mapping holds a slot: the chunk is not idle.
            if pool.lent_slots() == pool.nslots() || pool.lend(0..pool.nslots()).is_err() {
                continue;
            }
            match area.cma_release(pages, pool.start(), count) {
                Ok(()) => released += 1,
                Err(e) => log::error!("swiotlb: cma_release of chunk {:#x}: {e}", pool.start()),
            }
        }
        if released > 0 {
            report.pageblocks_lent += released * count;
            add(&self.counters.shrinks, 1);
            add(&self.counters.cma_chunks_released, released);
            // Given back to the page allocator (as MIGRATE_CMA), as `lend`'s shrink lends blocks.
            add(&self.counters.pageblocks_lent_again, released * count);
        }
        self.start_shrink_timer(now);
    }
}
