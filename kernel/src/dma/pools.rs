//! Where a device's carved pool lives while it is attached ([`DevicePoolSlot`]): mappings try it
//! first, and [`find_pool`](DevicePoolSlot::find_pool) answers for its slots (the device's part of
//! Linux `swiotlb_find_pool(dev, paddr)`; the default SWIOTLB answers for the rest, see
//! [`SwiotlbMem::find_pool`](super::swiotlb::mem::SwiotlbMem::find_pool)).

use alloc::sync::Arc;
use core::ops::Range;

use super::swiotlb::mem::{DevicePool, LendError};
use super::swiotlb::{FoundPool, SlotLookup, SwiotlbError};
use super::{DmaAttrs, DmaDirection, SlotAlignment};
use crate::arch;
use crate::mm::PhysAddr;
use crate::sync::IrqSafeSpinLock;

/// Where a device's carved pool ([`DevicePool`]) lives while a `DmaDevice` points at it: a
/// static place, so the device can hold a `&'static DevicePoolSlot` (the seed's per-device
/// pools; Linux hangs `dev->dma_io_tlb_mem` off the device).
///
/// Two rules, both learnt from SMP defects:
/// - The copies run with no lock held: the lock only hands out a reference (an `Arc` clone: an
///   atomic increment, no allocation, fine in interrupt context), and the map, unmap or sync
///   runs after it is dropped.
/// - The pool stays findable until its last mapping ends: [`detach`](Self::detach) first stops
///   new mappings (they fall back to the default pool), waits for the operations already
///   holding the pool, and takes the pool out only if no slot is used; otherwise it lets maps in
///   again and refuses. Unmaps and syncs are served throughout, so a completion arriving
///   meanwhile (interrupt context, any CPU) still finds its slots and copies back.
///
/// The last reference is always dropped by `detach` (task context), which holds its own until
/// the others are gone: interrupt context never frees the pool.
pub struct DevicePoolSlot {
    inner: IrqSafeSpinLock<SlotInner>,
}

struct SlotInner {
    pool: Option<Arc<DevicePool>>,
    /// False while `detach` decides: new mappings go elsewhere.
    accepts_maps: bool,
}

impl Default for DevicePoolSlot {
    fn default() -> Self {
        Self::new()
    }
}

impl DevicePoolSlot {
    /// An empty slot.
    pub const fn new() -> Self {
        Self { inner: IrqSafeSpinLock::new(SlotInner { pool: None, accepts_maps: false }) }
    }

    /// True if no pool is attached.
    pub fn is_empty(&self) -> bool {
        self.inner.lock().pool.is_none()
    }

    /// Puts a carved pool here (task context: allocates the shared reference). Hands the pool
    /// back if the slot is taken.
    pub fn attach(&self, pool: DevicePool) -> Result<(), DevicePool> {
        assert!(!arch::in_interrupt(), "attaching a device pool allocates: task context only");
        let pool = Arc::new(pool); // before the lock: no allocation with interrupts masked
        let mut inner = self.inner.lock();
        if inner.pool.is_some() {
            drop(inner);
            // The only reference: unwrapping cannot fail.
            return Arc::try_unwrap(pool).map_or_else(|_| Ok(()), Err);
        }
        *inner = SlotInner { pool: Some(pool), accepts_maps: true };
        Ok(())
    }

    /// Takes the pool out if it has no live mapping (see the type's rules); `Ok(None)` if none
    /// is attached, [`LendError::LiveMappings`] (the pool stays, taking maps again) otherwise.
    /// Task context only; waits at most for operations already running on other CPUs.
    pub fn detach(&self) -> Result<Option<DevicePool>, LendError> {
        assert!(!arch::in_interrupt(), "detaching a device pool: task context only");
        let mut pool = {
            let mut inner = self.inner.lock();
            let Some(pool) = inner.pool.clone() else { return Ok(None) };
            inner.accepts_maps = false;
            pool
        };
        // A map that took the pool before maps were stopped holds a reference until its slots
        // are taken: wait for it, so that `used_slots` below counts them.
        while Arc::strong_count(&pool) > 2 {
            arch::cpu_relax();
        }
        let used_slots = pool.pool().used_slots();
        {
            let mut inner = self.inner.lock();
            if used_slots > 0 {
                inner.accepts_maps = true;
                return Err(LendError::LiveMappings { used_slots });
            }
            inner.pool = None;
        }
        // Nothing is mapped and nothing can be: the references left are lookups finishing.
        loop {
            match Arc::try_unwrap(pool) {
                Ok(pool) => return Ok(Some(pool)),
                Err(still_shared) => {
                    pool = still_shared;
                    arch::cpu_relax();
                }
            }
        }
    }

    /// The attached pool, for one operation (the lock is dropped before it runs).
    fn get(&self, to_map: bool) -> Option<Arc<DevicePool>> {
        let inner = self.inner.lock();
        inner.pool.as_ref().filter(|_| inner.accepts_maps || !to_map).cloned()
    }

    /// Bounces through the attached pool (see [`SwiotlbPool::map_attrs`]); `BufferFull` if none
    /// is attached or it takes no new mappings (a detach is deciding): the caller falls back to
    /// the default SWIOTLB.
    ///
    /// [`SwiotlbPool::map_attrs`]: super::swiotlb::SwiotlbPool::map_attrs
    ///
    /// # Safety
    ///
    /// As [`SwiotlbPool::map_attrs`]: the caller owns `[orig, orig + size)` until the matching
    /// unmap and does not touch it meanwhile.
    #[allow(unsafe_code)]
    pub unsafe fn map_attrs(
        &self,
        orig: PhysAddr,
        size: usize,
        dir: DmaDirection,
        align: SlotAlignment,
        attrs: DmaAttrs,
    ) -> Result<PhysAddr, SwiotlbError> {
        match self.get(true) {
            // SAFETY: this function's contract, handed on.
            Some(p) => unsafe { p.pool().map_attrs(orig, size, dir, align, attrs) },
            None => Err(SwiotlbError::BufferFull { size, total: 0, used: 0 }),
        }
    }

    /// The attached pool's slot at `pa`, lock-free in the pool (the slot's lock only hands out
    /// the reference); a live slot's pool comes back held for the operation.
    pub fn find_pool(&self, pa: PhysAddr) -> SlotLookup<'static> {
        let Some(device) = self.get(false) else { return SlotLookup::Outside };
        match device.pool().lookup(pa) {
            SlotLookup::Live(_) => SlotLookup::Live(FoundPool::Device(device)),
            SlotLookup::Free => SlotLookup::Free,
            SlotLookup::Outside => SlotLookup::Outside,
        }
    }

    /// True if `pa` is in a live bounce slot of the attached pool.
    pub fn is_swiotlb_buffer(&self, pa: PhysAddr) -> bool {
        self.get(false).is_some_and(|p| p.pool().is_swiotlb_buffer(pa))
    }

    /// The attached pool's address range (empty if none).
    pub fn range(&self) -> Range<PhysAddr> {
        self.get(false).map_or(0..0, |p| p.pool().range())
    }
}
