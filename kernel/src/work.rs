//! Deferred work (Linux: workqueues, reduced to what a unikernel without a scheduler needs).
//!
//! Interrupt handlers must not wait or do long work; they [`WorkQueue::schedule`] a registered
//! work item (one atomic OR, safe in any context and on any CPU), and task context runs pending
//! items at its scheduling points ([`WorkQueue::run_pending`]: the idle loop of every CPU, and
//! waits for I/O). Work runs in task context with IRQs enabled, so it may take locks that IRQ
//! handlers take, migrate pages, and allocate.
//!
//! Any CPU may run the queue. As with Linux workqueues, one item never runs on two CPUs at
//! once: a CPU that finds an item running elsewhere leaves it pending, and it runs again after
//! (an item scheduled while it runs is not lost). Different items may run on different CPUs at
//! the same time.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU32, Ordering};

use crate::sync::IrqSafeSpinLock;

/// Most work items a queue holds.
pub const MAX_WORK: usize = 32;

/// A registered work item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkId(u32);

impl WorkId {
    /// The id as a number (to keep it in an atomic).
    pub fn raw(self) -> u32 {
        self.0
    }

    /// The id from [`raw`](Self::raw).
    pub fn from_raw(raw: u32) -> Self {
        WorkId(raw)
    }
}

/// A work function.
pub type WorkFn = fn();

/// A set of work items with pending bits.
pub struct WorkQueue {
    pending: AtomicU32,
    /// Items running now (on some CPU): bit i set by the CPU that runs item i.
    running: AtomicU32,
    items: IrqSafeSpinLock<[Option<(&'static str, WorkFn)>; MAX_WORK]>,
    runs: AtomicU32,
    /// Wakes an idle CPU when an item becomes pending (the platform's `wake_up_idle_cpu`).
    waker: spin::Once<fn()>,
}

/// Errors of [`WorkQueue::register`].
#[derive(Debug, PartialEq, Eq)]
pub enum WorkError {
    /// All [`MAX_WORK`] slots are taken.
    Full,
}

impl Default for WorkQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        Self {
            pending: AtomicU32::new(0),
            running: AtomicU32::new(0),
            items: IrqSafeSpinLock::new([None; MAX_WORK]),
            runs: AtomicU32::new(0),
            waker: spin::Once::new(),
        }
    }

    /// Registers `work` under `name` (task context, at init).
    pub fn register(&self, name: &'static str, work: WorkFn) -> Result<WorkId, WorkError> {
        let mut items = self.items.lock();
        let i = items.iter().position(Option::is_none).ok_or(WorkError::Full)?;
        items[i] = Some((name, work));
        Ok(WorkId(i as u32))
    }

    /// Sets the function that wakes an idle CPU when an item becomes pending (once, at SMP
    /// bring-up; Linux `queue_work` ends in `wake_up_process` / `kick_pool`).
    pub fn set_waker(&self, waker: fn()) {
        self.waker.call_once(|| waker);
    }

    /// Marks `id` pending and, if it was not, wakes an idle CPU to run it. Safe from
    /// interrupt handlers: it neither waits nor allocates (the waker must not either).
    pub fn schedule(&self, id: WorkId) {
        // SeqCst: paired with the idle CPU's publish-then-check (see `smp::idle_enter`). If the
        // bit was set already, whoever set it woke a CPU, or every CPU still sees it pending
        // before it sleeps.
        let was = self.pending.fetch_or(1 << id.0, Ordering::SeqCst);
        if was & (1 << id.0) == 0 {
            if let Some(wake) = self.waker.get() {
                wake();
            }
        }
    }

    /// True if any work is pending.
    pub fn has_pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst) != 0
    }

    /// Runs every pending item once (items scheduled meanwhile run on the next call); an item
    /// running on another CPU is left pending. Task context only: running work from an
    /// interrupt handler is a bug.
    pub fn run_pending(&self) -> usize {
        assert!(!crate::arch::in_interrupt(), "deferred work must run in task context");
        let pending = self.pending.swap(0, Ordering::AcqRel);
        let mut ran = 0;
        for i in 0..MAX_WORK {
            let bit = 1 << i;
            if pending & bit == 0 {
                continue;
            }
            if self.running.fetch_or(bit, Ordering::Acquire) & bit != 0 {
                // Another CPU runs it: it stays pending and runs again after that run.
                self.pending.fetch_or(bit, Ordering::Release);
                continue;
            }
            let item = self.items.lock()[i];
            if let Some((_, work)) = item {
                work(); // without the lock: work may schedule work
                ran += 1;
            }
            self.running.fetch_and(!bit, Ordering::Release);
        }
        self.runs.fetch_add(ran as u32, Ordering::Relaxed);
        ran
    }

    /// Runs the pending items here, then waits until no item runs on any CPU (Linux
    /// `flush_workqueue`, reduced: an item another CPU was running when this was called has
    /// finished when it returns). Task context only.
    pub fn flush(&self) -> usize {
        let ran = self.run_pending();
        while self.running.load(Ordering::Acquire) != 0 {
            core::hint::spin_loop();
        }
        ran
    }

    /// How many work items have run.
    pub fn runs(&self) -> u32 {
        self.runs.load(Ordering::Relaxed)
    }
}

/// The kernel's work queue.
pub static SYSTEM_WQ: WorkQueue = WorkQueue::new();

#[cfg(test)]
mod tests;
