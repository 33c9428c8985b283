//! Which pool owns a bounce address (Linux `swiotlb_find_pool`): unmap and sync look it up once
//! and call the pool found, with no layer in between.
//!
//! Where we differ from Linux, and why: the answer also tells a *free* slot from memory no pool
//! holds. A second unmap or a stale address lands on a free slot, and must be refused; it would
//! otherwise pass for a direct mapping (a lent page the page allocator handed out sits in *lent*
//! slots, which no pool claims).
#![forbid(unsafe_code)]

use alloc::sync::Arc;

use super::mem::DevicePool;
use super::transient::TransientPools;
use super::{DmaAttrs, DmaDirection, SlotState, SwiotlbError, SwiotlbPool};
use crate::mm::PhysAddr;

/// The pool that owns a live bounce slot (Linux: the `struct io_tlb_pool *` that
/// `swiotlb_find_pool` returns). Held for one operation; every method may run in interrupt
/// context (no allocation, no waiting).
pub enum FoundPool<'a> {
    /// A slot pool: the default one, an extra one (dynamic and cma policies), a restricted one.
    Pool(&'a SwiotlbPool),
    /// A device's carved pool, held (an `Arc` clone: an atomic increment) until the operation
    /// ends, so that it stays while a detach waits (see
    /// [`DevicePoolSlot`](crate::dma::pools::DevicePoolSlot)).
    Device(Arc<DevicePool>),
    /// The transient pools of the default SWIOTLB (dynamic policy): one mapping each.
    Transient(&'a TransientPools),
}

impl FoundPool<'_> {
    /// Ends the mapping at `tlb_addr` (see [`SwiotlbPool::unmap`]).
    pub fn unmap(&self, tlb_addr: PhysAddr, size: usize, dir: DmaDirection, attrs: DmaAttrs) -> Result<(), SwiotlbError> {
        match self {
            Self::Pool(pool) => pool.unmap(tlb_addr, size, dir, attrs),
            Self::Device(device) => device.pool().unmap(tlb_addr, size, dir, attrs),
            Self::Transient(transient) => transient.unmap(tlb_addr, size, dir, attrs),
        }
    }

    /// See [`SwiotlbPool::sync_for_cpu`].
    pub fn sync_for_cpu(&self, tlb_addr: PhysAddr, size: usize, dir: DmaDirection) -> Result<(), SwiotlbError> {
        match self {
            Self::Pool(pool) => pool.sync_for_cpu(tlb_addr, size, dir),
            Self::Device(device) => device.pool().sync_for_cpu(tlb_addr, size, dir),
            Self::Transient(transient) => transient.sync(tlb_addr, size, dir, false),
        }
    }

    /// See [`SwiotlbPool::sync_for_device`].
    pub fn sync_for_device(&self, tlb_addr: PhysAddr, size: usize, dir: DmaDirection) -> Result<(), SwiotlbError> {
        match self {
            Self::Pool(pool) => pool.sync_for_device(tlb_addr, size, dir),
            Self::Device(device) => device.pool().sync_for_device(tlb_addr, size, dir),
            Self::Transient(transient) => transient.sync(tlb_addr, size, dir, true),
        }
    }
}

/// What a pool lookup found at an address.
pub enum SlotLookup<'a> {
    /// A slot of a live bounce mapping, and its pool.
    Live(FoundPool<'a>),
    /// A free slot: no mapping lives there.
    Free,
    /// Not a slot of these pools (or a lent one): memory of the page allocator's.
    Outside,
}

impl SwiotlbPool {
    /// This pool's slot at `pa`: read once (an atomic byte), no lock.
    pub fn lookup(&self, pa: PhysAddr) -> SlotLookup<'_> {
        match self.slot_index(pa).and_then(|i| self.slot_state(i)) {
            Some(SlotState::Used) => SlotLookup::Live(FoundPool::Pool(self)),
            Some(SlotState::Free) => SlotLookup::Free,
            _ => SlotLookup::Outside,
        }
    }
}
