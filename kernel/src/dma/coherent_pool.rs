//! Small coherent DMA allocations carved from one coherent chunk (Linux: a `gen_pool` over
//! `dma_alloc_coherent` memory, as `kernel/dma/pool.c` and `dma_pool` use): request headers,
//! status bytes, descriptor rings, anything much smaller than the page that `alloc_coherent`
//! hands out, or the 2 KiB slots of a restricted pool.
//!
//! The chunk is cut into 64-byte units (a cache line, so no two allocations share one) managed
//! by `buddy_system_allocator`'s `FrameAllocator`: its buddy free lists give naturally aligned
//! blocks of a power-of-two number of units and merge them back on free. Its lists live on the
//! heap, so allocating and freeing are task-context operations (asserted); the memory itself may
//! be used by the device and by interrupt handlers freely.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicUsize, Ordering};

use buddy_system_allocator::FrameAllocator;

use crate::mm::PhysAddr;
use crate::sync::IrqSafeSpinLock;

/// The allocation unit: one cache line.
pub const UNIT: usize = 64;

/// Errors of the coherent pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoherentPoolError {
    /// A zero-byte request.
    ZeroSize,
    /// No free block large enough.
    Full {
        /// The size asked for, in bytes.
        size: usize,
        /// Free bytes in the pool, in smaller or scattered blocks.
        free: usize,
    },
    /// A free of memory this pool did not hand out (or with another size).
    BadFree {
        /// The address freed.
        addr: PhysAddr,
    },
}

impl core::fmt::Display for CoherentPoolError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CoherentPoolError::ZeroSize => write!(f, "coherent pool: zero-byte allocation"),
            CoherentPoolError::Full { size, free } => write!(f, "coherent pool: no block of {size} bytes ({free} bytes free)"),
            CoherentPoolError::BadFree { addr } => write!(f, "coherent pool: free of {addr:#x}, which it did not hand out"),
        }
    }
}

/// A pool of small coherent blocks over `[base, base + size)`.
pub struct CoherentPool {
    base: PhysAddr,
    units: usize,
    free_units: AtomicUsize,
    buddy: IrqSafeSpinLock<FrameAllocator<16>>,
}

fn units_for(size: usize, align: usize) -> usize {
    size.max(align).div_ceil(UNIT).next_power_of_two()
}

impl CoherentPool {
    /// A pool over coherent memory the caller owns for the pool's life. `base` must be
    /// [`UNIT`]-aligned; a tail shorter than a unit is not used.
    pub fn new(base: PhysAddr, size: usize) -> Self {
        assert!(base.is_multiple_of(UNIT as u64), "a coherent pool must start on a cache line");
        let units = size / UNIT;
        let mut buddy = FrameAllocator::new();
        buddy.add_frame(0, units);
        Self { base, units, free_units: AtomicUsize::new(units), buddy: IrqSafeSpinLock::new(buddy) }
    }

    /// `size` bytes aligned to `align` (a power of two; blocks are naturally aligned to their
    /// power-of-two size, at least [`UNIT`]). Task context.
    pub fn alloc(&self, size: usize, align: usize) -> Result<PhysAddr, CoherentPoolError> {
        assert!(!crate::arch::in_interrupt(), "coherent pool allocations are task-context operations");
        if size == 0 {
            return Err(CoherentPoolError::ZeroSize);
        }
        let units = units_for(size, align);
        let first = self.buddy.lock().alloc(units).ok_or(CoherentPoolError::Full { size, free: self.free_bytes() })?;
        self.free_units.fetch_sub(units, Ordering::Relaxed);
        Ok(self.base + (first * UNIT) as u64)
    }

    /// Frees a block from [`alloc`](Self::alloc) with the same `size` and `align`. Task context.
    /// Addresses outside the pool or misaligned for the size are refused; a double free is only
    /// caught when it would free more than the pool holds (the buddy lists keep no owner map).
    pub fn free(&self, addr: PhysAddr, size: usize, align: usize) -> Result<(), CoherentPoolError> {
        assert!(!crate::arch::in_interrupt(), "coherent pool frees are task-context operations");
        let units = units_for(size.max(1), align);
        let offset = addr.checked_sub(self.base).ok_or(CoherentPoolError::BadFree { addr })? as usize;
        if !offset.is_multiple_of(units * UNIT)
            || offset / UNIT + units > self.units
            || self.free_units.load(Ordering::Relaxed) + units > self.units
        {
            return Err(CoherentPoolError::BadFree { addr });
        }
        self.buddy.lock().dealloc(offset / UNIT, units);
        self.free_units.fetch_add(units, Ordering::Relaxed);
        Ok(())
    }

    /// Bytes free (in whole units).
    pub fn free_bytes(&self) -> usize {
        self.free_units.load(Ordering::Relaxed) * UNIT
    }

    /// The pool's range.
    pub fn range(&self) -> core::ops::Range<PhysAddr> {
        self.base..self.base + (self.units * UNIT) as u64
    }
}

#[cfg(test)]
mod tests;
