//! The arch side of secondary CPUs (Linux: `arch/arm64/kernel/head.S` `secondary_entry` and the
//! `secondary_data` the boot CPU hands over in `__cpu_up`): where each CPU's stack is, which CPU
//! this is, and what a secondary needs to switch its MMU on with the boot CPU's page table.
//!
//! CPU indices are logical: 0 is the boot CPU, the others follow `/cpus` in the device tree. The
//! index lives in TPIDR_EL1 (Linux keeps the per-CPU offset there); [`cpu_id`] reads it.
//!
//! Stacks are in the image (`linker.ld`, `.stack`): for CPU n, a guard page, then
//! [`STACK_SIZE`] bytes. The final page table leaves the guard pages unmapped
//! ([`stack_guard_pages`]), so an overflow is a translation fault, not silent corruption.

use aarch64_cpu::registers::{Readable, MAIR_EL1, MPIDR_EL1, SCTLR_EL1, TCR_EL1, TPIDR_EL1, TTBR0_EL1};

/// Most CPUs the kernel runs on (the stacks in `linker.ld`; a GICv2 serves at most 8).
pub const MAX_CPUS: usize = 8;
/// Bytes of each CPU's stack (`linker.ld` STACK_SIZE).
pub const STACK_SIZE: usize = 64 * 1024;
/// The unmapped page below each stack (`linker.ld` STACK_GUARD).
pub const STACK_GUARD: usize = 4096;

extern "C" {
    static __stacks_start: u8;
    static __stacks_end: u8;
    fn secondary_entry();
}

static SMP_ACTIVE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Records that a second CPU runs the kernel (the kernel's `smp_init` calls it once one is up).
pub fn set_smp_active() {
    SMP_ACTIVE.store(true, core::sync::atomic::Ordering::Release);
}

/// True once more than one CPU runs the kernel.
#[inline]
pub fn smp_active() -> bool {
    SMP_ACTIVE.load(core::sync::atomic::Ordering::Acquire)
}

/// This CPU's logical index (0 = the boot CPU), from TPIDR_EL1 (set by `_start` and
/// `secondary_entry` before any Rust code runs).
#[inline]
pub fn cpu_id() -> usize {
    TPIDR_EL1.get() as usize
}

/// This CPU's MPIDR_EL1 affinity fields (Aff3..Aff0, the value `/cpus` `reg` and PSCI use).
pub fn this_cpu_mpidr() -> u64 {
    MPIDR_EL1.get() & 0xff_00ff_ffff
}

fn stacks_start() -> usize {
    // A linker symbol; only its address is used.
    core::ptr::addr_of!(__stacks_start) as usize
}

/// `[bottom, top)` of CPU `cpu`'s stack (`cpu` < [`MAX_CPUS`]).
pub fn stack_bounds(cpu: usize) -> (usize, usize) {
    let bottom = stacks_start() + cpu * (STACK_GUARD + STACK_SIZE) + STACK_GUARD;
    (bottom, bottom + STACK_SIZE)
}

/// The guard page below each CPU's stack: the final page table must leave these unmapped.
pub fn stack_guard_pages() -> impl Iterator<Item = usize> {
    (0..MAX_CPUS).map(|cpu| stack_bounds(cpu).0 - STACK_GUARD)
}

/// The whole stack area, guard pages included.
pub fn stacks_area() -> (usize, usize) {
    (stacks_start(), core::ptr::addr_of!(__stacks_end) as usize)
}

/// What a secondary CPU reads, with its MMU still off, to join the kernel (Linux
/// `secondary_data`). Layout shared with `asm/entry.S` (`SBD_*`).
#[repr(C, align(64))]
#[derive(Debug)]
pub struct SecondaryBootData {
    stack_top: u64,
    cpu: u64,
    ttbr0: u64,
    mair: u64,
    tcr: u64,
    sctlr: u64,
    entry: u64,
}

impl SecondaryBootData {
    /// The hand-over for CPU `cpu` (`0 < cpu <` [`MAX_CPUS`]): its stack, and the translation
    /// registers of the calling CPU (the boot CPU, with the final page table active), so that
    /// the secondary sees the same memory with the same attributes. `entry` runs on the
    /// secondary with the MMU on, on its own stack, IRQs masked; it must never return.
    pub fn new(cpu: usize, entry: extern "C" fn(usize) -> !) -> Self {
        assert!(cpu > 0 && cpu < MAX_CPUS, "no stack for CPU {cpu}");
        Self {
            stack_top: stack_bounds(cpu).1 as u64,
            cpu: cpu as u64,
            ttbr0: TTBR0_EL1.get(),
            mair: MAIR_EL1.get(),
            tcr: TCR_EL1.get(),
            sctlr: SCTLR_EL1.get(),
            entry: entry as *const () as u64,
        }
    }

    /// Writes the data back to the point of coherency: the secondary reads it with its caches
    /// off (Linux `dcache_clean_inval_poc(&secondary_data)` in `__cpu_up`).
    pub fn clean_to_poc(&self) {
        crate::cpu::dcache_range(crate::cpu::CacheOp::CleanInvalidate, self as *const Self as usize, core::mem::size_of::<Self>());
    }
}

/// The physical address PSCI CPU_ON starts a secondary at (the image is identity-mapped).
pub fn secondary_entry_address() -> u64 {
    secondary_entry as *const () as u64
}
