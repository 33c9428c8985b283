//! Memory management: the boot memory map (`memblock`), the kernel heap, the page allocator and
//! the CMA area.

pub mod cma;
pub mod heap;
pub mod memblock;
pub mod page_alloc;
pub mod phys;
mod range;

pub use range::PhysRange;

/// A physical address. The kernel runs identity-mapped, so it is also the virtual address.
pub type PhysAddr = u64;

/// log2 of the page size.
pub const PAGE_SHIFT: u32 = 12;
/// The page size (4 KiB).
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

/// Rounds `x` up to a multiple of `align` (a power of two); `None` on overflow.
pub const fn align_up(x: u64, align: u64) -> Option<u64> {
    match x.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

/// Rounds `x` down to a multiple of `align` (a power of two).
pub const fn align_down(x: u64, align: u64) -> u64 {
    x & !(align - 1)
}
