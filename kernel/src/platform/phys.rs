//! Physical memory access for the identity-mapped kernel: the target's [`PhysMemory`].

use crate::mm::phys::PhysMemory;
use crate::mm::PhysAddr;

/// RAM, reached through the identity map.
pub struct IdentityMappedRam;

// Each method: the callers of `PhysMemory` only pass ranges they own (pages they allocated, slots
// they hold, buffers mapped for DMA), and every RAM address is identity-mapped read/write.
impl PhysMemory for IdentityMappedRam {
    fn read(&self, pa: PhysAddr, buf: &mut [u8]) {
        // SAFETY: see the impl comment; `buf` is a distinct Rust object.
        unsafe { core::ptr::copy_nonoverlapping(pa as usize as *const u8, buf.as_mut_ptr(), buf.len()) }
    }
    fn write(&self, pa: PhysAddr, data: &[u8]) {
        // SAFETY: see the impl comment.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), pa as usize as *mut u8, data.len()) }
    }
    fn copy(&self, dst: PhysAddr, src: PhysAddr, len: usize) {
        // SAFETY: see the impl comment; the trait requires the ranges not to overlap.
        unsafe { core::ptr::copy_nonoverlapping(src as usize as *const u8, dst as usize as *mut u8, len) }
    }
    fn fill(&self, pa: PhysAddr, byte: u8, len: usize) {
        // SAFETY: see the impl comment.
        unsafe { core::ptr::write_bytes(pa as usize as *mut u8, byte, len) }
    }
}
