//! What the manager is told: the pool's place, the tunables from the command line, a clock.
#![forbid(unsafe_code)]

use core::time::Duration;

use super::SLOTS_PER_PAGEBLOCK;
use crate::bootargs::{KernelParams, SwiotlbPolicy};
use crate::mm::PhysAddr;

/// Where the default pool lies: `nslots` slots from `start`, in `nareas` areas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeometry {
    /// First byte; pageblock aligned.
    pub start: PhysAddr,
    /// Slots; a whole number of pageblocks.
    pub nslots: usize,
    /// Areas (locks); a power of two.
    pub nareas: usize,
}

/// The SWIOTLB tunables (`swiotlb_*=` on the command line, see [`KernelParams`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tunables {
    /// How the default pool is managed.
    pub policy: SwiotlbPolicy,
    /// Free slots kept for IRQ-context mappings (`swiotlb_reserve`).
    pub irq_reserve_slots: usize,
    /// Grow when free slots fall below this percentage of usable slots (`swiotlb_low_wm`).
    pub low_wm_percent: u32,
    /// Shrink when usage stays below this percentage (`swiotlb_high_wm`)...
    pub high_wm_percent: u32,
    /// ...for this long (`swiotlb_shrink_delay_ms`).
    pub shrink_delay: Duration,
    /// Pageblocks reclaimed, lent or added per worker run (`swiotlb_batch`), at least 1.
    pub batch: usize,
    /// Pageblocks that always stay bounce slots (`swiotlb_keep`).
    pub keep_pageblocks: usize,
    /// `dynamic`: transient pools on a miss (Linux 6.6 behaviour).
    pub transient: bool,
    /// `dynamic`: pageblocks the worker first asks for (0: the boot pool's size).
    pub dyn_pool_pageblocks: usize,
    /// `cma`: pageblocks per chunk.
    pub cma_chunk_pageblocks: usize,
    /// Zero a reclaimed pageblock, an extra pool or a CMA chunk before its slots serve
    /// (`swiotlb_reclaim_scrub`); otherwise its slots come back dirty and idle CPUs zero them.
    pub reclaim_scrub: bool,
}

impl Tunables {
    /// The tunables the command line gave.
    pub fn from_params(p: &KernelParams) -> Self {
        Self {
            policy: p.swiotlb_policy,
            irq_reserve_slots: p.swiotlb_reserve as usize,
            low_wm_percent: p.swiotlb_low_wm,
            high_wm_percent: p.swiotlb_high_wm,
            shrink_delay: Duration::from_millis(p.swiotlb_shrink_delay_ms),
            batch: (p.swiotlb_batch as usize).max(1),
            keep_pageblocks: p.swiotlb_keep as usize,
            transient: p.swiotlb_transient,
            dyn_pool_pageblocks: p.swiotlb_dyn_pool as usize,
            cma_chunk_pageblocks: (p.swiotlb_cma_chunk as usize).max(1),
            reclaim_scrub: p.swiotlb_reclaim_scrub,
        }
    }

    /// Pageblocks that stay slots: `keep_pageblocks`, and at least enough to hold the IRQ
    /// reserve.
    pub fn min_slot_pageblocks(&self) -> usize {
        self.keep_pageblocks.max(self.irq_reserve_slots.div_ceil(SLOTS_PER_PAGEBLOCK))
    }
}

/// Where the manager reads the time (the platform's uptime on the machine, a fake in tests).
pub trait Clock: Sync {
    /// Time since boot.
    fn now(&self) -> Duration;
}

impl Clock for fn() -> Duration {
    fn now(&self) -> Duration {
        self()
    }
}
