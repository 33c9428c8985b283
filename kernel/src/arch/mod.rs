//! The seam between generic kernel code and the CPU: interrupt masking and "where am I running".
//!
//! On the target this forwards to the `boot` crate (the aarch64 arch code). On the host, where the
//! generic code is unit-tested, interrupts do not exist; tests can pretend to be in an interrupt
//! handler with [`host::IrqContextGuard`] to exercise the IRQ-context checks.

#[cfg(target_os = "none")]
mod target {
    /// Saved interrupt mask state, restored by [`irq_restore`].
    #[derive(Clone, Copy, Debug)]
    pub struct IrqState(boot::cpu::DaifState);

    /// Masks IRQs on this CPU and returns the previous state (nests correctly).
    #[inline]
    pub fn irq_save() -> IrqState {
        IrqState(boot::cpu::local_irq_save())
    }

    /// Restores the mask state returned by [`irq_save`].
    #[inline]
    pub fn irq_restore(state: IrqState) {
        boot::cpu::local_irq_restore(state.0)
    }

    /// True while an interrupt handler runs on this CPU (Linux: `in_interrupt()`).
    #[inline]
    pub fn in_interrupt() -> bool {
        boot::exception::in_interrupt()
    }

    /// True if IRQs are masked on this CPU (Linux: `irqs_disabled()`).
    #[inline]
    pub fn irqs_masked() -> bool {
        boot::cpu::irqs_disabled()
    }

    /// This CPU's logical index (0 = the boot CPU; `boot::smp`, from TPIDR_EL1).
    #[inline]
    pub fn cpu_id() -> usize {
        boot::smp::cpu_id()
    }

    /// True once more than one CPU runs the kernel.
    #[inline]
    pub fn smp_active() -> bool {
        boot::smp::smp_active()
    }

    /// Spin-loop hint.
    #[inline]
    pub fn cpu_relax() {
        core::hint::spin_loop()
    }

    pub use boot::cpu::CacheOp;

    /// Cache maintenance on `[addr, addr + len)` for DMA with a non-coherent device.
    pub fn dcache_range(op: CacheOp, addr: u64, len: usize) {
        boot::cpu::dcache_range(op, addr as usize, len)
    }

    /// The data cache line size: the alignment a non-coherent device's buffers need.
    pub fn dma_alignment() -> usize {
        boot::cpu::dcache_line_size()
    }

    /// The generic timer's count (CNTVCT_EL0): for measuring, not for time of day.
    #[inline]
    pub fn counter_ticks() -> u64 {
        drivers::timer::arch_timer::ticks()
    }
}

#[cfg(not(target_os = "none"))]
pub mod host;

#[cfg(target_os = "none")]
pub use target::*;

#[cfg(not(target_os = "none"))]
pub use host::{
    counter_ticks, cpu_id, cpu_relax, dcache_range, dma_alignment, in_interrupt, irq_restore, irq_save, irqs_masked, smp_active, CacheOp,
    IrqState,
};
