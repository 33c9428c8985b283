//! Per-device pools: a separate [`SwiotlbPool`] (the same slot code) over pageblocks carved out
//! of the default pool's reserved range, the "local accelerator" of the seed's thread for a
//! device that bounces a lot or from IRQ context.
//!
//! Carved pageblocks stay `Lent` in the default pool's slot states, so its slot search skips
//! them and its `is_swiotlb_buffer` says no; the device pool answers for them.
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use core::ops::Range;

use super::blocks::BlockState;
use super::io_tlb_mem::{slot_bytes, SwiotlbMem};
use super::stats::add;
use super::worker::{Exclusive, WorkerReport};
use super::{LendError, SLOTS_PER_PAGEBLOCK};
use crate::arch::in_interrupt;
use crate::bootargs::SwiotlbPolicy;
use crate::dma::swiotlb::{SwiotlbError, SwiotlbPool};
use crate::mm::page_alloc::{DroppedPage, LockedPageAllocator};

/// A device's own bounce pool, carved from a [`SwiotlbMem`]. Give it back with
/// [`SwiotlbMem::return_device_pool`]; dropping it instead leaks its pageblocks (they stay
/// carved).
pub struct DevicePool {
    pool: Box<SwiotlbPool>,
    /// Pageblocks of the manager's reserved range.
    blocks: Range<usize>,
    /// Start of the manager's reserved range, to refuse another manager's pool.
    manager_start: u64,
}

impl DevicePool {
    /// The pool: map, unmap, sync and `is_swiotlb_buffer` as for any pool.
    pub fn pool(&self) -> &SwiotlbPool {
        &self.pool
    }

    /// Pageblocks of the manager's reserved range it covers.
    pub fn pageblocks(&self) -> Range<usize> {
        self.blocks.clone()
    }

    /// A device pool over `pool`, carved from no [`SwiotlbMem`] (host tests of the DMA API).
    #[cfg(test)]
    pub(crate) fn for_test(pool: SwiotlbPool) -> Self {
        Self { pool: Box::new(pool), blocks: 0..0, manager_start: u64::MAX }
    }
}

impl SwiotlbMem {
    /// Carves `pageblocks` contiguous pageblocks into a device pool. Lent pageblocks are taken
    /// back first (reclaim, then scrub, as the worker grows); if no run of lent ones can be had,
    /// wholly free slot pageblocks are taken from the default pool. Task context only. Not under
    /// `dynamic` and `cma`: Linux has no per-device pools, and the rival is built as Linux would.
    pub fn carve_device_pool(
        &self,
        pages: &LockedPageAllocator,
        pageblocks: usize,
        on_drop: &mut dyn FnMut(DroppedPage),
    ) -> Result<DevicePool, LendError> {
        assert!(!in_interrupt(), "carving a device pool migrates pages: task context only");
        if matches!(self.policy, SwiotlbPolicy::Dynamic | SwiotlbPolicy::Cma) {
            return Err(LendError::PolicyForbids { policy: self.policy, what: "device pools" });
        }
        let _running = Exclusive::enter(&self.running)?;
        let blocks = match self.carve_lent(pages, pageblocks, on_drop) {
            Some(blocks) => blocks,
            None => self.carve_free(pageblocks)?,
        };
        // Scrub: lent blocks held the page allocator's data; free slots held old bounces.
        let range = self.block_addrs(blocks.clone());
        self.mem.fill(range.start, 0, slot_bytes(blocks.len() * SLOTS_PER_PAGEBLOCK));
        let nslots = blocks.len() * SLOTS_PER_PAGEBLOCK;
        let pool = self.new_zeroed_pool(range.start, nslots)?;
        add(&self.counters.device_pools_carved, 1);
        log::info!("swiotlb: device pool {:#x}-{:#x} carved", range.start, range.end);
        Ok(DevicePool { pool: Box::new(pool), blocks, manager_start: self.start })
    }

    /// Gives a device pool back: its pageblocks are lent again under `lend` (unless the pool is
    /// never lent), or become free slots of the default pool (scrubbed). Refused, handing the
    /// pool back, while it has live mappings. Task context only.
    pub fn return_device_pool(&self, device: DevicePool, pages: &LockedPageAllocator) -> Result<(), (DevicePool, LendError)> {
        assert!(!in_interrupt(), "returning a device pool: task context only");
        let refuse = |device, e| Err((device, e));
        let Ok(_running) = Exclusive::enter(&self.running) else {
            return refuse(device, LendError::Busy);
        };
        if device.manager_start != self.start
            || device.blocks.end > self.blocks.len()
            || device.blocks.clone().any(|b| self.blocks.get(b) != BlockState::CarvedForDevice)
        {
            return refuse(device, LendError::NotCarvedHere);
        }
        let used_slots = device.pool.used_slots();
        if used_slots > 0 {
            return refuse(device, LendError::LiveMappings { used_slots });
        }
        for block in device.blocks.clone() {
            let lent = self.policy == SwiotlbPolicy::Lend && self.lend_block(pages, block).is_ok();
            if !lent {
                if let Err(e) = self.pool.unlend(self.block_slots(block), true) {
                    log::error!("swiotlb: returned pageblock {block}: {e}");
                    continue;
                }
                self.blocks.set(block, BlockState::AsSlots);
            }
        }
        add(&self.counters.device_pools_returned, 1);
        Ok(())
    }

    /// Reclaims the first run of `count` lent pageblocks that comes back whole; `None` if none.
    /// A run that fails half-way is lent again.
    fn carve_lent(&self, pages: &LockedPageAllocator, count: usize, on_drop: &mut dyn FnMut(DroppedPage)) -> Option<Range<usize>> {
        let mut first = 0;
        while first + count <= self.blocks.len() {
            let run = first..first + count;
            if let Some(not_lent) = run.clone().rev().find(|b| self.blocks.get(*b) != BlockState::Lent) {
                first = not_lent + 1;
                continue;
            }
            let mut report = WorkerReport::default();
            let mut done = first;
            while done < run.end && self.reclaim_block(pages, done, on_drop, &mut report).is_ok() {
                self.blocks.set(done, BlockState::CarvedForDevice);
                done += 1;
            }
            if done == run.end {
                return Some(run);
            }
            for block in first..done {
                if self.lend_block(pages, block).is_err() {
                    // Cannot happen (the blocks just left the page allocator); keep them carved.
                    log::error!("swiotlb: pageblock {block} could not be lent again");
                }
            }
            first = done + 1;
        }
        None
    }

    /// Takes a run of `count` wholly free slot pageblocks out of the default pool (highest
    /// first), keeping the kept pageblocks and the IRQ reserve.
    fn carve_free(&self, count: usize) -> Result<Range<usize>, LendError> {
        let floor = self.tunables.min_slot_pageblocks();
        let spare = self.blocks.count(BlockState::AsSlots).saturating_sub(floor);
        let wholly_free = self.blocks.in_state(BlockState::AsSlots).filter(|b| self.block_all_free(*b)).count();
        let not_enough = LendError::NotEnoughPageblocks { wanted: count, available: spare.min(wholly_free) };
        if count == 0 || spare < count {
            return Err(not_enough);
        }
        let mut end = self.blocks.len();
        while end >= count {
            let run = end - count..end;
            match run.clone().rev().find(|b| self.blocks.get(*b) != BlockState::AsSlots || !self.block_all_free(*b)) {
                Some(busy) => end = busy,
                None => {
                    let slots = run.start * SLOTS_PER_PAGEBLOCK..run.end * SLOTS_PER_PAGEBLOCK;
                    match self.pool.lend(slots) {
                        Ok(()) => {
                            run.clone().for_each(|b| self.blocks.set(b, BlockState::CarvedForDevice));
                            return Ok(run);
                        }
                        // A mapping (from interrupt context, or another CPU) took a slot of the
                        // run since it was found free; `lend` changed nothing: go on below it.
                        Err(SwiotlbError::SlotNotFree { slot, .. }) => end = slot / SLOTS_PER_PAGEBLOCK,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Err(not_enough)
    }
}
