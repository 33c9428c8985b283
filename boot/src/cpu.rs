//! CPU state the generic kernel needs: interrupt masking (DAIF) and waiting for interrupts.

use aarch64_cpu::asm;
use aarch64_cpu::registers::{CurrentEL, Readable, Writeable, DAIF};

/// The saved DAIF bits of [`local_irq_save`].
#[derive(Clone, Copy, Debug)]
pub struct DaifState(u64);

/// Masks IRQs (DAIF.I) and returns the previous mask state (Linux: `local_irq_save`).
#[inline]
pub fn local_irq_save() -> DaifState {
    let state = DaifState(DAIF.get());
    DAIF.write(DAIF::I::Masked + DAIF::F::Masked + DAIF::D::Masked + DAIF::A::Masked);
    state
}

/// Restores a mask state returned by [`local_irq_save`] (Linux: `local_irq_restore`).
#[inline]
pub fn local_irq_restore(state: DaifState) {
    DAIF.set(state.0);
}

/// Unmasks IRQs and SErrors.
#[inline]
pub fn local_irq_enable() {
    DAIF.write(DAIF::I::Unmasked + DAIF::A::Unmasked + DAIF::F::Masked + DAIF::D::Masked);
}

/// True when IRQs are masked.
#[inline]
pub fn irqs_disabled() -> bool {
    DAIF.is_set(DAIF::I)
}

/// Waits for an interrupt (returns when one is pending, even if masked).
#[inline]
pub fn wait_for_interrupt() {
    asm::wfi();
}

/// The current exception level (1 after `_start`).
pub fn current_el() -> u64 {
    CurrentEL.read(CurrentEL::EL)
}

/// The smallest data cache line size in bytes (CTR_EL0.DminLine), the unit of cache maintenance.
pub fn dcache_line_size() -> usize {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects; EL1 may always read it.
    unsafe { core::arch::asm!("mrs {0}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    4 << ((ctr >> 16) & 0xf)
}

/// Which cache maintenance a DMA sync needs (Arm ARM D7.5.9, data cache maintenance by VA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOp {
    /// `DC CVAC`: write dirty lines back (before the device reads memory).
    Clean,
    /// `DC IVAC`: discard lines (before the CPU reads what the device wrote).
    Invalidate,
    /// `DC CIVAC`: both (bidirectional buffers).
    CleanInvalidate,
}

/// Applies `op` to every cache line of `[addr, addr + len)` and waits for completion.
pub fn dcache_range(op: CacheOp, addr: usize, len: usize) {
    if len == 0 {
        return;
    }
    let line = dcache_line_size();
    let mut a = addr & !(line - 1);
    let end = addr + len;
    while a < end {
        // SAFETY: data cache maintenance by VA on memory the caller owns (a DMA buffer); it does
        // not change memory contents as seen by this CPU except through `Invalidate`, which the
        // DMA API only applies to buffers whose contents the device owns.
        unsafe {
            match op {
                CacheOp::Clean => core::arch::asm!("dc cvac, {0}", in(reg) a, options(nostack, preserves_flags)),
                CacheOp::Invalidate => core::arch::asm!("dc ivac, {0}", in(reg) a, options(nostack, preserves_flags)),
                CacheOp::CleanInvalidate => core::arch::asm!("dc civac, {0}", in(reg) a, options(nostack, preserves_flags)),
            }
        }
        a += line;
    }
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::SY);
}
