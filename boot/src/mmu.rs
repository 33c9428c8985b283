//! The kernel's identity map, built from the device tree (Linux: `paging_init`).
//!
//! Methods are named by purpose, as in AOSP vmbase: text is read-only and executable, rodata
//! read-only, everything else of RAM read/write and never executable, MMIO Device-nGnRE and never
//! executable. The tables come from the heap (`aarch64-paging` allocates them), so the heap must
//! already sit in memory the early map covers as Normal.

use aarch64_paging::descriptor::El1Attributes;
use aarch64_paging::idmap::IdMap;
use aarch64_paging::paging::{El1And0, MemoryRegion};
use aarch64_paging::MapError;

use crate::{MAIR_DEVICE_INDEX, MAIR_NORMAL_INDEX};

const NORMAL: El1Attributes = El1Attributes::VALID
    .union(El1Attributes::ACCESSED)
    .union(El1Attributes::INNER_SHAREABLE)
    .union(El1Attributes::from_bits_retain((MAIR_NORMAL_INDEX as usize) << 2));
const DEVICE: El1Attributes = El1Attributes::VALID
    .union(El1Attributes::ACCESSED)
    .union(El1Attributes::from_bits_retain((MAIR_DEVICE_INDEX as usize) << 2))
    .union(El1Attributes::PXN)
    .union(El1Attributes::UXN);

/// The attributes of a mapping, for tests that check what the MMU was told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingKind {
    /// Kernel text: read-only, executable.
    Code,
    /// Read-only data.
    ReadOnly,
    /// Read/write Normal memory, never executable.
    Data,
    /// MMIO: Device-nGnRE, never executable.
    Device,
}

impl MappingKind {
    fn attributes(self) -> El1Attributes {
        match self {
            MappingKind::Code => NORMAL.union(El1Attributes::READ_ONLY).union(El1Attributes::UXN),
            MappingKind::ReadOnly => NORMAL.union(El1Attributes::READ_ONLY).union(El1Attributes::PXN).union(El1Attributes::UXN),
            MappingKind::Data => NORMAL.union(El1Attributes::PXN).union(El1Attributes::UXN),
            MappingKind::Device => DEVICE,
        }
    }
}

/// An identity map under construction or active.
pub struct KernelPageTable {
    idmap: IdMap<El1And0>,
}

impl Default for KernelPageTable {
    fn default() -> Self {
        Self::new()
    }
}

impl KernelPageTable {
    /// An empty map with a level-1 root (39-bit addresses, as set up in TCR_EL1 by the early map).
    pub fn new() -> Self {
        Self { idmap: IdMap::with_asid(0, 1, El1And0) }
    }

    /// Maps `[start, end)` as kernel text.
    pub fn map_code(&mut self, start: u64, end: u64) -> Result<(), MapError> {
        self.map(start, end, MappingKind::Code)
    }

    /// Maps `[start, end)` as read-only data.
    pub fn map_rodata(&mut self, start: u64, end: u64) -> Result<(), MapError> {
        self.map(start, end, MappingKind::ReadOnly)
    }

    /// Maps `[start, end)` as read/write data.
    pub fn map_data(&mut self, start: u64, end: u64) -> Result<(), MapError> {
        self.map(start, end, MappingKind::Data)
    }

    /// Maps `[start, end)` as device memory.
    pub fn map_device(&mut self, start: u64, end: u64) -> Result<(), MapError> {
        self.map(start, end, MappingKind::Device)
    }

    fn map(&mut self, start: u64, end: u64, kind: MappingKind) -> Result<(), MapError> {
        self.idmap.map_range(&MemoryRegion::new(start as usize, end as usize), kind.attributes())
    }

    /// Switches TTBR0_EL1 to this map and flushes the TLB; the map lives for the rest of the run.
    ///
    /// # Safety
    ///
    /// The map must cover, with the right attributes, all code and data the kernel touches from
    /// now on (text, rodata, data, BSS, stack, heap, DTB, MMIO), as identity mappings.
    pub unsafe fn activate(self) {
        let table = alloc_leak(self);
        // SAFETY: the caller guarantees the map is complete; it is leaked, so it outlives its use.
        unsafe { table.idmap.activate() };
        // SAFETY: TLB maintenance only drops cached translations (the early map's 1 GiB blocks).
        unsafe { core::arch::asm!("dsb ishst", "tlbi vmalle1", "dsb nsh", "isb", options(nostack, preserves_flags)) };
    }
}

/// Looks up the attributes a virtual address is mapped with in the active map, by asking the
/// MMU (AT S1E1R, PAR_EL1). Returns (MAIR attribute byte, read-only?) or None if unmapped.
pub fn probe(va: u64) -> Option<(u8, bool)> {
    use aarch64_cpu::registers::{Readable, PAR_EL1};
    // SAFETY: AT only performs a translation and writes PAR_EL1; it never accesses memory.
    unsafe { core::arch::asm!("at s1e1r, {0}", "isb", in(reg) va, options(nostack, preserves_flags)) };
    if PAR_EL1.is_set(PAR_EL1::F) {
        return None;
    }
    let attr = (PAR_EL1.get() >> 56) as u8; // PAR_EL1.ATTR, the MAIR byte of the mapping
                                            // SAFETY: as above, for a write translation.
    unsafe { core::arch::asm!("at s1e1w, {0}", "isb", in(reg) va, options(nostack, preserves_flags)) };
    let read_only = PAR_EL1.is_set(PAR_EL1::F);
    Some((attr, read_only))
}

fn alloc_leak(table: KernelPageTable) -> &'static mut KernelPageTable {
    extern crate alloc;
    alloc::boxed::Box::leak(alloc::boxed::Box::new(table))
}
