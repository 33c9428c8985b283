//! Locks. Data touched from interrupt handlers lives behind an [`IrqSafeSpinLock`]: it masks IRQs
//! on this CPU while held, so a handler can never spin on a lock its own CPU already holds.

mod irq_safe_spinlock;

pub use irq_safe_spinlock::{IrqSafeSpinLock, IrqSafeSpinLockGuard};
