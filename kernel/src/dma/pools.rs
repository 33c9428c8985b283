//! The seam between the DMA API and the bounce-buffer pools: what mapping needs of a pool.
//! [`SwiotlbPool`] implements it; so does the default pool's manager, which adds policies.

use core::ops::Range;

use super::swiotlb::{SwiotlbError, SwiotlbPool};
use super::{DmaAttrs, DmaDirection, SlotAlignment};
use crate::mm::phys::PhysMemory;
use crate::mm::PhysAddr;

/// A set of bounce slots. Every method may be called in interrupt context and must not block,
/// allocate or migrate.
pub trait BounceBuffers: Sync {
    /// Bounces `[orig, orig + size)`: returns the slot address (copy-in done).
    fn map(&self, mem: &dyn PhysMemory, orig: PhysAddr, size: usize, dir: DmaDirection, align: SlotAlignment) -> Result<PhysAddr, SwiotlbError>;
    /// Ends a mapping (copy-back unless skipped), freeing its slots.
    fn unmap(&self, mem: &dyn PhysMemory, tlb: PhysAddr, size: usize, dir: DmaDirection, attrs: DmaAttrs) -> Result<(), SwiotlbError>;
    /// Copies slot to original for the CPU to read.
    fn sync_for_cpu(&self, mem: &dyn PhysMemory, tlb: PhysAddr, size: usize, dir: DmaDirection) -> Result<(), SwiotlbError>;
    /// Copies original to slot for the device to read.
    fn sync_for_device(&self, mem: &dyn PhysMemory, tlb: PhysAddr, size: usize, dir: DmaDirection) -> Result<(), SwiotlbError>;
    /// True if `pa` is in a live bounce slot of this set (not merely in its address range).
    fn is_swiotlb_buffer(&self, pa: PhysAddr) -> bool;
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

impl BounceBuffers for SwiotlbPool {
    fn map(&self, mem: &dyn PhysMemory, orig: PhysAddr, size: usize, dir: DmaDirection, align: SlotAlignment) -> Result<PhysAddr, SwiotlbError> {
        SwiotlbPool::map(self, mem, orig, size, dir, align)
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

impl BounceBuffers for super::swiotlb::lend::SwiotlbManager {
    fn map(&self, mem: &dyn PhysMemory, orig: PhysAddr, size: usize, dir: DmaDirection, align: SlotAlignment) -> Result<PhysAddr, SwiotlbError> {
        super::swiotlb::lend::SwiotlbManager::map(self, mem, orig, size, dir, align)
    }
    fn unmap(&self, mem: &dyn PhysMemory, tlb: PhysAddr, size: usize, dir: DmaDirection, attrs: DmaAttrs) -> Result<(), SwiotlbError> {
        super::swiotlb::lend::SwiotlbManager::unmap(self, mem, tlb, size, dir, attrs)
    }
    fn sync_for_cpu(&self, mem: &dyn PhysMemory, tlb: PhysAddr, size: usize, dir: DmaDirection) -> Result<(), SwiotlbError> {
        super::swiotlb::lend::SwiotlbManager::sync_for_cpu(self, mem, tlb, size, dir)
    }
    fn sync_for_device(&self, mem: &dyn PhysMemory, tlb: PhysAddr, size: usize, dir: DmaDirection) -> Result<(), SwiotlbError> {
        super::swiotlb::lend::SwiotlbManager::sync_for_device(self, mem, tlb, size, dir)
    }
    fn is_swiotlb_buffer(&self, pa: PhysAddr) -> bool {
        super::swiotlb::lend::SwiotlbManager::is_swiotlb_buffer(self, pa)
    }
    fn range(&self) -> Range<PhysAddr> {
        let pool = self.default_pool();
        pool.start()..pool.end()
    }
}
