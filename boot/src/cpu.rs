//! CPU state the generic kernel needs: interrupt masking (DAIF) and waiting for interrupts.

use aarch64_cpu::asm;
use aarch64_cpu::registers::{Readable, Writeable, CurrentEL, DAIF};

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
