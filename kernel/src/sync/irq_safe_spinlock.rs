//! A spinlock that masks IRQs while held (Linux: `spin_lock_irqsave`).

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::arch::{self, IrqState};

/// Mutual exclusion with IRQs masked while the lock is held. Nested use (holding two such locks)
/// restores the mask state in the right order because each guard restores what it saved.
pub struct IrqSafeSpinLock<T> {
    locked: AtomicBool,
    /// How many times a locker found the lock taken and had to spin (contention counter).
    contended: AtomicU64,
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `data` to one holder at a time, so sharing the lock between
// threads (or between thread and IRQ context) is sound as long as `T` itself may be sent.
unsafe impl<T: Send> Sync for IrqSafeSpinLock<T> {}
// SAFETY: moving the lock moves the `T` inside it.
unsafe impl<T: Send> Send for IrqSafeSpinLock<T> {}

impl<T> IrqSafeSpinLock<T> {
    /// A new unlocked lock around `data`.
    pub const fn new(data: T) -> Self {
        Self { locked: AtomicBool::new(false), contended: AtomicU64::new(0), data: UnsafeCell::new(data) }
    }

    /// Masks IRQs, then spins until the lock is free. Inline: a free lock costs one
    /// compare-exchange; the spinning is out of line.
    #[inline(always)]
    pub fn lock(&self) -> IrqSafeSpinLockGuard<'_, T> {
        let irq = arch::irq_save();
        if self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_contended();
        }
        IrqSafeSpinLockGuard { lock: self, irq }
    }

    /// [`lock`](Self::lock) after its first attempt failed: spins until the lock is free, takes
    /// it, counts the wait.
    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        loop {
            while self.locked.load(Ordering::Relaxed) {
                arch::cpu_relax();
            }
            if self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                break;
            }
        }
        self.contended.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the lock only if it is free (for exception handlers that must never wait).
    pub fn try_lock(&self) -> Option<IrqSafeSpinLockGuard<'_, T>> {
        let irq = arch::irq_save();
        if self.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            Some(IrqSafeSpinLockGuard { lock: self, irq })
        } else {
            arch::irq_restore(irq);
            None
        }
    }

    /// How many lock acquisitions had to wait.
    pub fn contended(&self) -> u64 {
        self.contended.load(Ordering::Relaxed)
    }

    /// Direct access when the caller owns the lock exclusively.
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

/// Holds the lock and the saved IRQ state; dropping it unlocks, then restores the IRQ state.
pub struct IrqSafeSpinLockGuard<'a, T> {
    lock: &'a IrqSafeSpinLock<T>,
    irq: IrqState,
}

impl<T> Deref for IrqSafeSpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while this CPU holds the lock, so no one else accesses
        // `data` for the guard's lifetime.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for IrqSafeSpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference through the guard.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for IrqSafeSpinLockGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
        arch::irq_restore(self.irq);
    }
}

#[cfg(test)]
mod tests;
