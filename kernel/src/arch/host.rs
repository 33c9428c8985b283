//! Host stand-ins for the arch seam, used by unit tests.

use core::cell::Cell;

std::thread_local! {
    static IRQ_DEPTH: Cell<u32> = const { Cell::new(0) };
    static MASKED: Cell<bool> = const { Cell::new(false) };
}

/// Saved "interrupt mask" state.
#[derive(Clone, Copy, Debug)]
pub struct IrqState(bool);

/// Records that IRQs are masked on this thread and returns the previous state.
pub fn irq_save() -> IrqState {
    IrqState(MASKED.with(|m| m.replace(true)))
}

/// Restores the state returned by [`irq_save`].
pub fn irq_restore(state: IrqState) {
    MASKED.with(|m| m.set(state.0));
}

/// True while a test pretends to run in an interrupt handler.
pub fn in_interrupt() -> bool {
    IRQ_DEPTH.with(|d| d.get() > 0)
}

/// Whether IRQs are "masked" on this thread (tests check locks mask them).
pub fn irqs_masked() -> bool {
    MASKED.with(|m| m.get())
}

/// Spin-loop hint.
pub fn cpu_relax() {
    core::hint::spin_loop()
}

/// While alive, [`in_interrupt`] is true on this thread: lets host tests run code "in IRQ context".
pub struct IrqContextGuard(());

impl IrqContextGuard {
    /// Enters pretend interrupt context.
    pub fn enter() -> Self {
        IRQ_DEPTH.with(|d| d.set(d.get() + 1));
        IrqContextGuard(())
    }
}

impl Drop for IrqContextGuard {
    fn drop(&mut self) {
        IRQ_DEPTH.with(|d| d.set(d.get() - 1));
    }
}
