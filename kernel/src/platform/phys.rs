//! Physical memory access for the identity-mapped kernel: the target's [`PhysMemory`], and the one
//! way to obtain it, [`ram`].
//!
//! A [`PhysMemory`] that covers real RAM can write any byte of it, so holding one is a
//! capability (Tock's `StaticRef`: unsafe to obtain, safe to use). The board obtains it once for
//! each owner at construction (the page cache, the SWIOTLB pools, the block engine); tests, demos
//! and benchmarks obtain it with `unsafe { ram() }` where they write memory they own.

use crate::mm::phys::PhysMemory;
use crate::mm::PhysAddr;

/// RAM, reached through the identity map. Only [`ram`] hands one out.
pub struct IdentityMappedRam {
    _private: (),
}

/// The one instance.
static RAM: IdentityMappedRam = IdentityMappedRam { _private: () };

/// The capability to read and write RAM by physical address.
///
/// # Safety
///
/// The caller writes through it (and through every copy it hands on) only memory it owns: pages
/// it allocated and still holds, a DMA mapping's original buffer it was handed under the DMA
/// API's contract ([`DmaApi::map_single`]), slots of its own pools, its own scratch pages. It
/// hands the reference only to code bound by the same rule.
///
/// [`DmaApi::map_single`]: crate::dma::mapping::DmaApi::map_single
pub unsafe fn ram() -> &'static IdentityMappedRam {
    &RAM
}

// Each method: whoever holds the capability writes only what it owns (see `ram`), and every RAM
// address is identity-mapped read/write.
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
