//! Manager counters (atomics, any context) and the stats table for the boot log and shutdown.
#![forbid(unsafe_code)]

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

/// A snapshot of the manager's own counters (the pools' counters are in their `SwiotlbStats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LendStats {
    /// Reclaim attempts (one per pageblock tried).
    pub reclaims: u64,
    /// Pageblocks taken back from the page allocator (grow and carve).
    pub pageblocks_reclaimed: u64,
    /// Reclaim attempts that found pinned or unmovable pages and left the block lent.
    pub reclaims_busy: u64,
    /// Pages migrated out of reclaimed blocks.
    pub pages_migrated: u64,
    /// Clean pages dropped from reclaimed blocks.
    pub pages_dropped: u64,
    /// Pinned pages that blocked a reclaim.
    pub pages_pinned_blocking: u64,
    /// Time spent reclaiming (migration, scrubbing).
    pub reclaim_time: Duration,
    /// Shrink runs that lent at least one pageblock.
    pub shrinks: u64,
    /// Pageblocks given back to the page allocator after init: lent again (`lend`) or released
    /// to the CMA area (`cma`).
    pub pageblocks_lent_again: u64,
    /// Mappings that found no room (all pools, all contexts).
    pub misses: u64,
    /// Worker runs.
    pub worker_runs: u64,
    /// Extra pools added (dynamic policy).
    pub extra_pools: u64,
    /// Pageblocks in those extra pools.
    pub extra_pageblocks: u64,
    /// Time spent growing, whatever the policy: reclaim (lend) or allocating and scrubbing an
    /// extra pool (dynamic; its failed searches for free pageblocks are not counted). With `pageblocks_reclaimed + extra_pageblocks` it gives the cost of
    /// growing by one pageblock.
    pub grow_time: Duration,
    /// Device pools carved.
    pub device_pools_carved: u64,
    /// Device pools returned.
    pub device_pools_returned: u64,
    /// Chunks the `cma` policy allocated from the CMA area.
    pub cma_chunks_allocated: u64,
    /// Chunks it gave back to the area.
    pub cma_chunks_released: u64,
    /// `cma_alloc` calls that failed (no free chunk, or every candidate busy).
    pub cma_alloc_failures: u64,
}

#[derive(Debug, Default)]
pub(super) struct LendCounters {
    pub(super) reclaims: AtomicU64,
    pub(super) pageblocks_reclaimed: AtomicU64,
    pub(super) reclaims_busy: AtomicU64,
    pub(super) pages_migrated: AtomicU64,
    pub(super) pages_dropped: AtomicU64,
    pub(super) pages_pinned_blocking: AtomicU64,
    pub(super) reclaim_time_ns: AtomicU64,
    pub(super) shrinks: AtomicU64,
    pub(super) pageblocks_lent_again: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) worker_runs: AtomicU64,
    pub(super) extra_pools: AtomicU64,
    pub(super) extra_pageblocks: AtomicU64,
    pub(super) grow_time_ns: AtomicU64,
    pub(super) device_pools_carved: AtomicU64,
    pub(super) device_pools_returned: AtomicU64,
    pub(super) cma_chunks_allocated: AtomicU64,
    pub(super) cma_chunks_released: AtomicU64,
    pub(super) cma_alloc_failures: AtomicU64,
}

/// Adds `n` to a counter.
pub(super) fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

impl LendCounters {
    pub(super) fn snapshot(&self) -> LendStats {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LendStats {
            reclaims: l(&self.reclaims),
            pageblocks_reclaimed: l(&self.pageblocks_reclaimed),
            reclaims_busy: l(&self.reclaims_busy),
            pages_migrated: l(&self.pages_migrated),
            pages_dropped: l(&self.pages_dropped),
            pages_pinned_blocking: l(&self.pages_pinned_blocking),
            reclaim_time: Duration::from_nanos(l(&self.reclaim_time_ns)),
            shrinks: l(&self.shrinks),
            pageblocks_lent_again: l(&self.pageblocks_lent_again),
            misses: l(&self.misses),
            worker_runs: l(&self.worker_runs),
            extra_pools: l(&self.extra_pools),
            extra_pageblocks: l(&self.extra_pageblocks),
            grow_time: Duration::from_nanos(l(&self.grow_time_ns)),
            device_pools_carved: l(&self.device_pools_carved),
            device_pools_returned: l(&self.device_pools_returned),
            cma_chunks_allocated: l(&self.cma_chunks_allocated),
            cma_chunks_released: l(&self.cma_chunks_released),
            cma_alloc_failures: l(&self.cma_alloc_failures),
        }
    }
}

impl fmt::Display for LendStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  reclaim: {} tries, {} pageblocks, {} busy; pages {} migrated, {} dropped, {} pinned-blocking; {:?}",
            self.reclaims,
            self.pageblocks_reclaimed,
            self.reclaims_busy,
            self.pages_migrated,
            self.pages_dropped,
            self.pages_pinned_blocking,
            self.reclaim_time
        )?;
        writeln!(f, "  shrink: {} runs, {} pageblocks lent again", self.shrinks, self.pageblocks_lent_again)?;
        write!(
            f,
            "  misses {}, worker runs {}, extra pools {} ({} pageblocks), grow time {:?}, device pools {} carved / {} returned",
            self.misses,
            self.worker_runs,
            self.extra_pools,
            self.extra_pageblocks,
            self.grow_time,
            self.device_pools_carved,
            self.device_pools_returned
        )?;
        if self.cma_chunks_allocated + self.cma_alloc_failures > 0 {
            write!(
                f,
                "\n  cma: {} chunks allocated, {} released, {} cma_alloc failures",
                self.cma_chunks_allocated, self.cma_chunks_released, self.cma_alloc_failures
            )?;
        }
        Ok(())
    }
}
