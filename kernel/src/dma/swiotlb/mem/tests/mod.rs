//! Host tests of the pool manager over simulated RAM:
//!
//! ```text
//! block 0            original buffers (not managed by the page allocator)
//! blocks 1..=free    free RAM of the page allocator
//! then pool blocks   the reserved SWIOTLB range
//! ```

#![allow(clippy::single_range_in_vec_init)] // free-range lists of one range

mod areas;
mod cma;
mod device;
mod dynamic_static;
mod exhaustion;
mod grow;
mod leak;
mod shrink;

use crate::dma::sim_maps::SimPoolMaps;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use super::*;
use crate::bootargs::{KernelParams, SwiotlbPolicy};
use crate::dma::swiotlb::{DmaAttrs, DmaDirection, SlotAlignment, IO_TLB_SIZE};
use crate::mm::page_alloc::{DroppedPage, LockedPageAllocator, PageAllocator, ZoneType, PAGEBLOCK_NR_PAGES, PAGEBLOCK_SIZE};
use crate::mm::phys::{PhysMemory, SimMemory};
use crate::mm::PhysAddr;

const BASE: PhysAddr = 0x4000_0000;
/// Where original buffers live.
const ORIG: PhysAddr = BASE;

/// A clock the test sets; each read also advances it by `step_ns` (so durations are non-zero).
struct FakeClock {
    ns: AtomicU64,
    step_ns: u64,
}

impl FakeClock {
    fn new(step_ns: u64) -> Self {
        Self { ns: AtomicU64::new(0), step_ns }
    }
    fn set_ms(&self, ms: u64) {
        self.ns.store(ms * 1_000_000, Ordering::Relaxed);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.ns.fetch_add(self.step_ns, Ordering::Relaxed))
    }
}

/// Tunables from the defaults of the command line, with `policy`.
fn tunables(policy: SwiotlbPolicy) -> Tunables {
    Tunables { policy, ..Tunables::from_params(&KernelParams::default()) }
}

struct Fixture {
    /// Leaked: the pools keep a `'static` reference.
    mem: &'static SimMemory,
    /// Leaked so transient pools and CMA areas (which keep a `'static` reference) can use it.
    pages: &'static LockedPageAllocator,
    mgr: SwiotlbMem,
    clock: FakeClock,
    pool_blocks: usize,
}

impl Fixture {
    /// `free_blocks` pageblocks of free RAM and a pool of `pool_blocks` pageblocks in 4 areas.
    fn new(free_blocks: u64, pool_blocks: u64, t: Tunables, never_lend: bool) -> Self {
        Self::try_new(free_blocks, pool_blocks, t, never_lend).expect("manager")
    }

    fn try_new(free_blocks: u64, pool_blocks: u64, t: Tunables, never_lend: bool) -> Result<Self, LendError> {
        Self::try_new_with_cma(free_blocks, 0, pool_blocks, t, never_lend).map(|(f, _)| f)
    }

    /// As [`new`](Self::new), with `cma_blocks` pageblocks between the free RAM and the pool
    /// left out of the page allocator (memblock-reserved) for a CMA area: their range.
    fn try_new_with_cma(
        free_blocks: u64,
        cma_blocks: u64,
        pool_blocks: u64,
        t: Tunables,
        never_lend: bool,
    ) -> Result<(Self, core::ops::Range<PhysAddr>), LendError> {
        let ram_end = block_addr(1 + free_blocks);
        let cma_end = ram_end + cma_blocks * PAGEBLOCK_SIZE;
        let end = cma_end + pool_blocks * PAGEBLOCK_SIZE;
        let allocator = PageAllocator::new(BASE..end, &[block_addr(1)..ram_end], None).unwrap();
        let pages: &'static LockedPageAllocator = alloc::boxed::Box::leak(alloc::boxed::Box::new(LockedPageAllocator::new(allocator)));
        let mem: &'static SimMemory = alloc::boxed::Box::leak(alloc::boxed::Box::new(SimMemory::new(BASE, (end - BASE) as usize)));
        let geometry = PoolGeometry { start: cma_end, nslots: pool_blocks as usize * SLOTS_PER_PAGEBLOCK, nareas: 4 };
        let mgr = SwiotlbMem::new(geometry, t, never_lend, pages, mem)?;
        Ok((Self { mem, pages, mgr, clock: FakeClock::new(0), pool_blocks: pool_blocks as usize }, ram_end..cma_end))
    }

    fn worker(&self) -> WorkerReport {
        self.mgr.worker(self.pages, &self.clock, &mut |_| {})
    }

    fn worker_at(&self, ms: u64) -> WorkerReport {
        self.clock.set_ms(ms);
        self.worker()
    }

    /// Maps `nslots` whole slots from the original buffers.
    fn map_slots(&self, nslots: usize) -> Result<PhysAddr, crate::dma::swiotlb::SwiotlbError> {
        self.mgr.sim_map(ORIG, nslots * IO_TLB_SIZE, DmaDirection::ToDevice, SlotAlignment::default())
    }

    /// One 1-slot mapping in each of the pool's first `nblocks` pageblocks, returned in block
    /// order. One CPU starts every search in its own area and moves on only when that is full:
    /// 1-slot mappings fill the blocks in turn, and all but the first of each block are given
    /// back.
    fn one_mapping_per_block(&self, nblocks: usize) -> Vec<PhysAddr> {
        let block_of = |tlb: PhysAddr| ((tlb - self.pool_block(0)) / PAGEBLOCK_SIZE) as usize;
        let mut kept: Vec<Option<PhysAddr>> = alloc::vec![None; nblocks];
        let mut filler = Vec::new();
        while kept.iter().any(Option::is_none) {
            let tlb = self.map_slots(1).expect("a free slot");
            match kept.get_mut(block_of(tlb)) {
                Some(slot @ None) => *slot = Some(tlb),
                _ => filler.push(tlb),
            }
        }
        filler.into_iter().for_each(|tlb| self.unmap_slots(tlb, 1));
        kept.into_iter().flatten().collect()
    }

    fn unmap_slots(&self, tlb: PhysAddr, nslots: usize) {
        self.unmap(tlb, nslots * IO_TLB_SIZE, DmaDirection::ToDevice).expect("unmap");
    }

    /// Ends a mapping through the pool that owns it, as the DMA API does.
    fn unmap(&self, tlb: PhysAddr, size: usize, dir: DmaDirection) -> Result<(), crate::dma::swiotlb::SwiotlbError> {
        match self.mgr.find_pool(tlb) {
            crate::dma::swiotlb::SlotLookup::Live(pool) => pool.unmap(tlb, size, dir, DmaAttrs::default()),
            _ => Err(crate::dma::swiotlb::SwiotlbError::NotMapped { tlb_addr: tlb }),
        }
    }

    fn nr_free_swiotlb_pages(&self) -> usize {
        self.pages.lock().nr_free_swiotlb_pages(ZoneType::Dma)
    }

    /// Address of pageblock `b` of the pool.
    fn pool_block(&self, b: usize) -> PhysAddr {
        self.mgr.default_pool().start() + b as u64 * PAGEBLOCK_SIZE
    }

    fn states(&self) -> Vec<BlockState> {
        (0..self.pool_blocks).map(|b| self.mgr.pageblock_state(b).unwrap()).collect()
    }

    fn count(&self, s: BlockState) -> usize {
        self.mgr.pageblocks_in(s)
    }

    fn read(&self, pa: PhysAddr, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.mem.read(pa, &mut buf);
        buf
    }
}

fn block_addr(n: u64) -> PhysAddr {
    BASE + n * PAGEBLOCK_SIZE
}

/// Pages of a pageblock, for the page allocator counters.
const BLOCK_PAGES: usize = PAGEBLOCK_NR_PAGES;

fn ignore_drop(_: DroppedPage) {}
