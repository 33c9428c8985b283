//! The early identity map (Linux: the idmap built in head.S before `start_kernel`).
//!
//! Before the device tree is read we know two things only: where the kernel is (PC-relative) and
//! where the DTB is (x0, or the start of the kernel's RAM block). Rust code must not run long with
//! the MMU off (every access is Device memory, and an unaligned one faults), so `_start` calls
//! [`boot_early_mmu_enable`] first: one level-1 table of 1 GiB blocks that maps the blocks holding
//! the kernel and the DTB as Normal write-back memory and everything else in the low 512 GiB as
//! Device-nGnRE (so the console works). The kernel replaces it with the real map built from the
//! device tree ([`crate::mmu`]).

use core::cell::UnsafeCell;

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;

/// MAIR index of Device-nGnRE memory.
pub const MAIR_DEVICE_INDEX: u64 = 0;
/// MAIR index of Normal write-back, read/write-allocate memory.
pub const MAIR_NORMAL_INDEX: u64 = 1;

const BLOCK_SIZE: u64 = 1 << 30;
const ENTRIES: usize = 512;

#[repr(C, align(4096))]
struct Level1Table(UnsafeCell<[u64; ENTRIES]>);

// SAFETY: the table is written only by `boot_early_mmu_enable`, once, on the boot CPU before any
// other code runs; afterwards only the MMU reads it.
unsafe impl Sync for Level1Table {}

static EARLY_TABLE: Level1Table = Level1Table(UnsafeCell::new([0; ENTRIES]));

// Block descriptor bits (Arm ARM D8.3.2).
const DESC_BLOCK: u64 = 0b01;
const DESC_AF: u64 = 1 << 10;
const DESC_SH_INNER: u64 = 0b11 << 8;
const DESC_PXN: u64 = 1 << 53;
const DESC_UXN: u64 = 1 << 54;

const fn device_block(index: u64) -> u64 {
    (index * BLOCK_SIZE) | DESC_BLOCK | DESC_AF | (MAIR_DEVICE_INDEX << 2) | DESC_PXN | DESC_UXN
}

const fn normal_block(index: u64) -> u64 {
    (index * BLOCK_SIZE) | DESC_BLOCK | DESC_AF | DESC_SH_INNER | (MAIR_NORMAL_INDEX << 2) | DESC_UXN
}

/// Configures MAIR/TCR, builds the early table and turns on the MMU and caches.
///
/// Called once from `_start` with the loader's x0 (the DTB address or 0).
#[no_mangle]
extern "C" fn boot_early_mmu_enable(dtb: u64) {
    extern "C" {
        static __kernel_start: u8;
    }
    let kernel = core::ptr::addr_of!(__kernel_start) as u64;
    let table = EARLY_TABLE.0.get() as *mut u64;
    for index in 0..ENTRIES as u64 {
        let normal = index == kernel / BLOCK_SIZE || (dtb != 0 && index == dtb / BLOCK_SIZE);
        let entry = if normal { normal_block(index) } else { device_block(index) };
        // SAFETY: `index` < ENTRIES, so the write stays inside the table; nothing else accesses
        // the table yet (see the `Sync` impl). Volatile keeps the stores aligned 64-bit writes,
        // which matters while the MMU is off and RAM is Device memory.
        unsafe { table.add(index as usize).write_volatile(entry) };
    }

    MAIR_EL1.write(
        MAIR_EL1::Attr0_Device::nonGathering_nonReordering_EarlyWriteAck
            + MAIR_EL1::Attr1_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc
            + MAIR_EL1::Attr1_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc,
    );
    // 39-bit VAs (T0SZ = 25): the walk starts at level 1, 512 GiB, one table. The same TCR serves
    // the final map, which `aarch64-paging` builds with a level-1 root.
    let pa_range = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(0b101); // at most 48 bits
    TCR_EL1.write(
        TCR_EL1::T0SZ.val(25)
            + TCR_EL1::TG0::KiB_4
            + TCR_EL1::SH0::Inner
            + TCR_EL1::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::EPD0::EnableTTBR0Walks
            + TCR_EL1::EPD1::DisableTTBR1Walks
            + TCR_EL1::IPS.val(pa_range),
    );
    TTBR0_EL1.set_baddr(table as u64);
    barrier::dsb(barrier::ISHST);
    // SAFETY: invalidating all stage-1 EL1 TLB entries has no effect on memory; it drops any
    // translation cached by the loader before we install ours.
    unsafe { core::arch::asm!("tlbi vmalle1", "dsb nsh", options(nostack, preserves_flags)) };
    barrier::isb(barrier::SY);
    SCTLR_EL1
        .modify(SCTLR_EL1::M::Enable + SCTLR_EL1::C::Cacheable + SCTLR_EL1::I::Cacheable + SCTLR_EL1::SA::Enable + SCTLR_EL1::A::Disable);
    barrier::isb(barrier::SY);
}
