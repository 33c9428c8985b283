//! Host stand-ins for the arch seam, used by unit tests.

use core::cell::Cell;

std::thread_local! {
    static IRQ_DEPTH: Cell<u32> = const { Cell::new(0) };
    static MASKED: Cell<bool> = const { Cell::new(false) };
    static CACHE_OPS: std::cell::RefCell<std::vec::Vec<(CacheOp, u64, usize)>> = const { std::cell::RefCell::new(std::vec::Vec::new()) };
}

/// Which cache maintenance a DMA sync needs (mirrors `boot::cpu::CacheOp` on the target).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOp {
    /// Write dirty lines back (before the device reads).
    Clean,
    /// Discard lines (before the CPU reads what the device wrote).
    Invalidate,
    /// Both.
    CleanInvalidate,
}

/// Records the cache maintenance the code asked for, for tests to check.
pub fn dcache_range(op: CacheOp, addr: u64, len: usize) {
    CACHE_OPS.with(|ops| ops.borrow_mut().push((op, addr, len)));
}

/// Takes the cache operations recorded on this thread.
pub fn take_cache_ops() -> std::vec::Vec<(CacheOp, u64, usize)> {
    CACHE_OPS.with(|ops| core::mem::take(&mut *ops.borrow_mut()))
}

/// A typical cache line size, as on the Cortex-A72 QEMU emulates.
pub fn dma_alignment() -> usize {
    64
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

/// The host tests run as CPU 0 (every thread).
pub fn cpu_id() -> usize {
    0
}

/// The host tests model one CPU.
pub fn smp_active() -> bool {
    false
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

/// A count that only rises (the host tests' stand-in for the generic timer: nanoseconds since
/// the first call).
pub fn counter_ticks() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
}
