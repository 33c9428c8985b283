//! The seam between the DMA API and the bounce-buffer pools: what mapping needs of a pool.
//! [`SwiotlbPool`] implements it; so does the default pool's manager, which adds policies, and
//! [`DevicePoolSlot`], where a device's carved pool lives while it is attached.

use alloc::sync::Arc;
use core::ops::Range;

use super::swiotlb::mem::{DevicePool, LendError};
use super::swiotlb::{SlotState, SwiotlbError, SwiotlbPool};
use super::{DmaAttrs, DmaDirection, SlotAlignment};
use crate::arch;
use crate::mm::phys::PhysMemory;
use crate::mm::PhysAddr;
use crate::sync::IrqSafeSpinLock;

/// A set of bounce slots. Every method may be called in interrupt context and must not block,
/// allocate or migrate.
pub trait BounceBuffers: Sync {
    /// Bounces `[orig, orig + size)`: returns the slot address (copy-in done).
    fn map(&self, mem: &dyn PhysMemory, orig: PhysAddr, size: usize, dir: DmaDirection, align: SlotAlignment) -> Result<PhysAddr, SwiotlbError>;
    /// [`map`](Self::map) with attributes (`DmaAttrs::no_copy_in` may skip the copy-in; see
    /// [`SwiotlbPool::map_attrs`]). A set that does not track clean slots always copies in.
    fn map_attrs(&self, mem: &dyn PhysMemory, orig: PhysAddr, size: usize, dir: DmaDirection, align: SlotAlignment, _attrs: DmaAttrs) -> Result<PhysAddr, SwiotlbError> {
        self.map(mem, orig, size, dir, align)
    }
    /// Ends a mapping (copy-back unless skipped), freeing its slots.
    fn unmap(&self, mem: &dyn PhysMemory, tlb: PhysAddr, size: usize, dir: DmaDirection, attrs: DmaAttrs) -> Result<(), SwiotlbError>;
    /// Copies slot to original for the CPU to read.
    fn sync_for_cpu(&self, mem: &dyn PhysMemory, tlb: PhysAddr, size: usize, dir: DmaDirection) -> Result<(), SwiotlbError>;
    /// Copies original to slot for the device to read.
    fn sync_for_device(&self, mem: &dyn PhysMemory, tlb: PhysAddr, size: usize, dir: DmaDirection) -> Result<(), SwiotlbError>;
    /// True if `pa` is in a live bounce slot of this set (not merely in its address range).
    fn is_swiotlb_buffer(&self, pa: PhysAddr) -> bool;
    /// True if `pa` is in a free slot of this set: an unmap or sync there is a second unmap or a
    /// stale address, never a direct mapping (a page the page allocator lent out sits in *lent*
    /// slots). Lock-free, like [`is_swiotlb_buffer`](Self::is_swiotlb_buffer).
    fn is_free_slot(&self, _pa: PhysAddr) -> bool {
        false
    }
    /// Both questions in one look, for the unmap and sync paths: a live bounce slot, a free slot,
    /// or neither (memory the set does not hold: a direct mapping). Override it where the two
    /// separate looks would walk the same slots twice.
    fn lookup(&self, pa: PhysAddr) -> SlotLookup {
        if self.is_swiotlb_buffer(pa) {
            SlotLookup::Live
        } else if self.is_free_slot(pa) {
            SlotLookup::Free
        } else {
            SlotLookup::Outside
        }
    }
    /// The physical range the set's slots may occupy (to route unmaps and for reports).
    fn range(&self) -> Range<PhysAddr>;
    /// Zeroed coherent memory from the slots (for devices behind a restricted pool). Task context.
    fn alloc_coherent(&self, _mem: &dyn PhysMemory, size: usize) -> Result<PhysAddr, SwiotlbError> {
        Err(SwiotlbError::BufferFull { size, total: 0, used: 0 })
    }
    /// Frees memory from [`alloc_coherent`](Self::alloc_coherent).
    fn free_coherent(&self, addr: PhysAddr) -> Result<(), SwiotlbError> {
        Err(SwiotlbError::NotMapped { tlb_addr: addr })
    }
}

/// What [`BounceBuffers::lookup`] found at an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotLookup {
    /// A slot of a live bounce mapping.
    Live,
    /// A free slot: no mapping lives there.
    Free,
    /// Not a slot of this set (or a lent one): memory of the page allocator's.
    Outside,
}

impl BounceBuffers for SwiotlbPool {
    fn map(&self, mem: &dyn PhysMemory, orig: PhysAddr, size: usize, dir: DmaDirection, align: SlotAlignment) -> Result<PhysAddr, SwiotlbError> {
        SwiotlbPool::map(self, mem, orig, size, dir, align)
    }
    fn map_attrs(&self, mem: &dyn PhysMemory, orig: PhysAddr, size: usize, dir: DmaDirection, align: SlotAlignment, attrs: DmaAttrs) -> Result<PhysAddr, SwiotlbError> {
        SwiotlbPool::map_attrs(self, mem, orig, size, dir, align, attrs)
    }
    fn unmap(&self, mem: &dyn PhysMemory, tlb: PhysAddr, size: usize, dir: DmaDirection, attrs: DmaAttrs) -> Result<(), SwiotlbError> {
        SwiotlbPool::unmap(self, mem, tlb, size, dir, attrs)
    }
    fn sync_for_cpu(&self, mem: &dyn PhysMemory, tlb: PhysAddr, size: usize, dir: DmaDirection) -> Result<(), SwiotlbError> {
        SwiotlbPool::sync_for_cpu(self, mem, tlb, size, dir)
    }
    fn sync_for_device(&self, mem: &dyn PhysMemory, tlb: PhysAddr, size: usize, dir: DmaDirection) -> Result<(), SwiotlbError> {
        SwiotlbPool::sync_for_device(self, mem, tlb, size, dir)
    }
    fn is_swiotlb_buffer(&self, pa: PhysAddr) -> bool {
        SwiotlbPool::is_swiotlb_buffer(self, pa)
    }
    fn is_free_slot(&self, pa: PhysAddr) -> bool {
        SwiotlbPool::is_free_slot(self, pa)
    }
    fn lookup(&self, pa: PhysAddr) -> SlotLookup {
        slot_lookup(self, pa)
    }
    fn range(&self) -> Range<PhysAddr> {
        self.start()..self.end()
    }
    fn alloc_coherent(&self, mem: &dyn PhysMemory, size: usize) -> Result<PhysAddr, SwiotlbError> {
        SwiotlbPool::alloc_coherent(self, mem, size)
    }
    fn free_coherent(&self, addr: PhysAddr) -> Result<(), SwiotlbError> {
        SwiotlbPool::free_coherent(self, addr)
    }
}

impl BounceBuffers for super::swiotlb::mem::SwiotlbMem {
    fn map(&self, mem: &dyn PhysMemory, orig: PhysAddr, size: usize, dir: DmaDirection, align: SlotAlignment) -> Result<PhysAddr, SwiotlbError> {
        super::swiotlb::mem::SwiotlbMem::map(self, mem, orig, size, dir, align)
    }
    fn map_attrs(&self, mem: &dyn PhysMemory, orig: PhysAddr, size: usize, dir: DmaDirection, align: SlotAlignment, attrs: DmaAttrs) -> Result<PhysAddr, SwiotlbError> {
        super::swiotlb::mem::SwiotlbMem::map_attrs(self, mem, orig, size, dir, align, attrs)
    }
    fn unmap(&self, mem: &dyn PhysMemory, tlb: PhysAddr, size: usize, dir: DmaDirection, attrs: DmaAttrs) -> Result<(), SwiotlbError> {
        super::swiotlb::mem::SwiotlbMem::unmap(self, mem, tlb, size, dir, attrs)
    }
    fn sync_for_cpu(&self, mem: &dyn PhysMemory, tlb: PhysAddr, size: usize, dir: DmaDirection) -> Result<(), SwiotlbError> {
        super::swiotlb::mem::SwiotlbMem::sync_for_cpu(self, mem, tlb, size, dir)
    }
    fn sync_for_device(&self, mem: &dyn PhysMemory, tlb: PhysAddr, size: usize, dir: DmaDirection) -> Result<(), SwiotlbError> {
        super::swiotlb::mem::SwiotlbMem::sync_for_device(self, mem, tlb, size, dir)
    }
    fn is_swiotlb_buffer(&self, pa: PhysAddr) -> bool {
        super::swiotlb::mem::SwiotlbMem::is_swiotlb_buffer(self, pa)
    }
    fn is_free_slot(&self, pa: PhysAddr) -> bool {
        self.pools().any(|p| p.is_free_slot(pa))
    }
    fn lookup(&self, pa: PhysAddr) -> SlotLookup {
        // One walk of the pool list: the first pool that holds `pa` in a used or free slot
        // answers (a lent slot may sit under another pool's, as a released `cma` chunk's does).
        for pool in self.pools() {
            match slot_lookup(pool, pa) {
                SlotLookup::Outside => continue,
                found => return found,
            }
        }
        if super::swiotlb::mem::SwiotlbMem::is_swiotlb_buffer(self, pa) {
            return SlotLookup::Live; // a transient pool's
        }
        SlotLookup::Outside
    }
    fn range(&self) -> Range<PhysAddr> {
        let pool = self.default_pool();
        pool.start()..pool.end()
    }
}

/// Where a device's carved pool ([`DevicePool`]) lives while a `DmaDevice` points at it: a
/// static place, so the device can hold a `&'static dyn BounceBuffers` (the seed's per-device
/// pools; Linux hangs `dev->dma_io_tlb_mem` off the device).
///
/// Two rules, both from issue 13:
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
}

impl BounceBuffers for DevicePoolSlot {
    fn map(&self, mem: &dyn PhysMemory, orig: PhysAddr, size: usize, dir: DmaDirection, align: SlotAlignment) -> Result<PhysAddr, SwiotlbError> {
        match self.get(true) {
            Some(p) => p.pool().map(mem, orig, size, dir, align),
            None => Err(SwiotlbError::BufferFull { size, total: 0, used: 0 }),
        }
    }
    fn map_attrs(&self, mem: &dyn PhysMemory, orig: PhysAddr, size: usize, dir: DmaDirection, align: SlotAlignment, attrs: DmaAttrs) -> Result<PhysAddr, SwiotlbError> {
        match self.get(true) {
            Some(p) => p.pool().map_attrs(mem, orig, size, dir, align, attrs),
            None => Err(SwiotlbError::BufferFull { size, total: 0, used: 0 }),
        }
    }
    fn unmap(&self, mem: &dyn PhysMemory, tlb: PhysAddr, size: usize, dir: DmaDirection, attrs: DmaAttrs) -> Result<(), SwiotlbError> {
        match self.get(false) {
            Some(p) => p.pool().unmap(mem, tlb, size, dir, attrs),
            None => Err(SwiotlbError::NotMapped { tlb_addr: tlb }),
        }
    }
    fn sync_for_cpu(&self, mem: &dyn PhysMemory, tlb: PhysAddr, size: usize, dir: DmaDirection) -> Result<(), SwiotlbError> {
        match self.get(false) {
            Some(p) => p.pool().sync_for_cpu(mem, tlb, size, dir),
            None => Err(SwiotlbError::NotMapped { tlb_addr: tlb }),
        }
    }
    fn sync_for_device(&self, mem: &dyn PhysMemory, tlb: PhysAddr, size: usize, dir: DmaDirection) -> Result<(), SwiotlbError> {
        match self.get(false) {
            Some(p) => p.pool().sync_for_device(mem, tlb, size, dir),
            None => Err(SwiotlbError::NotMapped { tlb_addr: tlb }),
        }
    }
    fn is_swiotlb_buffer(&self, pa: PhysAddr) -> bool {
        self.get(false).is_some_and(|p| p.pool().is_swiotlb_buffer(pa))
    }
    fn is_free_slot(&self, pa: PhysAddr) -> bool {
        self.get(false).is_some_and(|p| p.pool().is_free_slot(pa))
    }
    fn lookup(&self, pa: PhysAddr) -> SlotLookup {
        self.get(false).map_or(SlotLookup::Outside, |p| slot_lookup(p.pool(), pa))
    }
    fn range(&self) -> Range<PhysAddr> {
        self.get(false).map_or(0..0, |p| p.pool().start()..p.pool().end())
    }
}

/// One pool's slot at `pa`: read once (an atomic byte), no lock.
fn slot_lookup(pool: &SwiotlbPool, pa: PhysAddr) -> SlotLookup {
    match pool.slot_index(pa).and_then(|i| pool.slot_state(i)) {
        Some(SlotState::Used) => SlotLookup::Live,
        Some(SlotState::Free) => SlotLookup::Free,
        _ => SlotLookup::Outside,
    }
}
