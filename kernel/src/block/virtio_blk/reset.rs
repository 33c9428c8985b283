//! Reset and recovery (Linux `virtblk_freeze` / `virtblk_restore`, `blk_mq_requeue_request`):
//! a device that timed out or broke the protocol is reset, the requests it held are taken back
//! and requeued while their retry budget lasts, and the recovery work initialises it again; a
//! device that keeps failing is declared dead.
#![forbid(unsafe_code)]

use core::sync::atomic::Ordering;
use core::time::Duration;

use drivers::virtio::{BrokenReason, Error as VirtioError, Transport};

use super::{BlkEnv, BlkError, Disk, DiskInner, Kick};
use crate::block::{DiskHealth, RetryBudget, TakeBack};
use crate::dma::DmaAttrs;

impl<T: Transport, E: BlkEnv> Disk<'_, T, E> {
    /// The device timed out or broke the protocol (any context, the disk's lock held): reset it
    /// now (bounded polling; afterwards it touches no buffer, virtio 1.2 §2.1.2), take back
    /// every request it held ([`take_back`](Self::take_back)) and have the recovery work
    /// initialise it again in task context. If the device ignores the reset, its requests stay
    /// its own (it may still write into their buffers) until a later reset completes.
    pub(super) fn begin_reset(&self, inner: &mut DiskInner<T>, reason: BrokenReason, given_up: Option<usize>) {
        let error = inner.blk.abort(reason);
        self.stats.aborts.fetch_add(1, Ordering::Relaxed);
        let reset = !matches!(error, VirtioError::DeviceBroken(BrokenReason::ResetIgnored));
        inner.reset_reason = reason;
        inner.given_up = given_up;
        let first = inner.recovery.begin();
        log::error!(
            "{}: {reason}; device {}, {} requests it held taken back, re-initialising",
            self.name,
            if reset { "reset" } else { "ignored the reset" },
            if reset { inner.requests.in_flight() } else { 0 }
        );
        if reset {
            self.take_back(inner);
        }
        if first {
            inner.next_reinit = Duration::ZERO;
            self.env.schedule_recovery();
        }
    }

    /// After a completed reset (the disk's lock held, any context): every request the device
    /// held is unmapped without a copy back (the caller's buffer keeps what it held, not a
    /// partial transfer; a bounce slot, device-pool slot or page pin is released here, once),
    /// then requeued in its old place with a new deadline while its retry budget lasts (Linux
    /// `blk_mq_requeue_request`), else failed: with [`BlkError::Timeout`] if its deadline
    /// passed, else with the reason the device was reset. A request whose waiter gave up is
    /// failed with `Timeout`. One request at a time: no copy of the table on the stack.
    fn take_back(&self, inner: &mut DiskInner<T>) {
        let budget = RetryBudget { max_retries: self.retries.load(Ordering::Relaxed) };
        let now = self.env.uptime();
        let (reason, given_up) = (inner.reset_reason, inner.given_up.take());
        inner.requests.take_back(|slot, r| {
            if let Some(mapped) = r.mapped.take() {
                let _ = self.unmap(&r.params, &mapped, DmaAttrs { skip_cpu_sync: true, no_copy_in: false });
            }
            if given_up != Some(slot) && budget.charge(&mut r.retries) {
                r.params.deadline = now + Duration::from_millis(u64::from(r.params.timeout_ms));
                self.stats.requeued.fetch_add(1, Ordering::Relaxed);
                return TakeBack::Requeue;
            }
            let timed_out = given_up == Some(slot) || r.params.deadline <= now;
            if timed_out {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            if given_up != Some(slot) {
                self.stats.retries_exhausted.fetch_add(1, Ordering::Relaxed);
            }
            TakeBack::End(Err(if timed_out { BlkError::Timeout } else { BlkError::Virtio(VirtioError::DeviceBroken(reason)) }))
        });
    }

    /// The recovery work for this disk (task context; Linux `virtblk_restore`): initialise the
    /// device again; on success take back what a reset it ignored left in flight and start the
    /// waiting requests; on failure try again later, and after
    /// [`MAX_FAILED_REINITS`](crate::block::recovery::MAX_FAILED_REINITS) failures in a row
    /// declare the disk dead and fail every request. Returns true if it should run again (the
    /// disk is still resetting).
    pub fn recover(&self) -> bool {
        let mut inner = self.inner.lock();
        let now = self.env.uptime();
        if inner.recovery.health() != DiskHealth::Resetting || now < inner.next_reinit {
            return inner.recovery.health() == DiskHealth::Resetting;
        }
        // Under the disk's lock (IRQs masked on this CPU): the reset polls a bounded number of
        // times and nothing is allocated (the rings are rebuilt where they are).
        let mut result = inner.blk.reinit();
        let inject = self.fail_reinits.load(Ordering::Relaxed);
        if result.is_ok() && inject > 0 {
            self.fail_reinits.store(inject - 1, Ordering::Relaxed);
            let _ = inner.blk.abort(BrokenReason::ReinitFailed);
            result = Err(VirtioError::DeviceBroken(BrokenReason::ReinitFailed));
        }
        let reset_done = !matches!(result, Err(VirtioError::DeviceBroken(BrokenReason::ResetIgnored)));
        if reset_done && inner.requests.in_flight() > 0 {
            self.take_back(&mut inner);
        }
        match result {
            Ok(()) => {
                inner.recovery.reinit_succeeded();
                self.stats.reinits.fetch_add(1, Ordering::Relaxed);
                log::warn!("{}: re-initialised after a reset; {} requests waiting", self.name, inner.requests.waiting());
            }
            Err(e) => {
                self.stats.reinit_failures.fetch_add(1, Ordering::Relaxed);
                let failed = inner.recovery.failed_in_a_row() + 1;
                if inner.recovery.reinit_failed() == DiskHealth::Dead {
                    log::error!("{}: re-initialisation failed ({e}), {failed} in a row: the disk is dead", self.name);
                    self.fail_everything(&mut inner);
                } else {
                    log::error!("{}: re-initialisation failed ({e}), {failed} in a row; trying again", self.name);
                    // Back off: 100 ms, 200 ms, ... before the next attempt (from the tick).
                    inner.next_reinit = now + Duration::from_millis(100) * failed;
                }
            }
        }
        let health = inner.recovery.health();
        drop(inner);
        if health == DiskHealth::Live {
            self.start_waiting(Kick::Now);
        }
        self.deliver_callbacks();
        health == DiskHealth::Resetting
    }

    /// A dead disk: every request fails with [`BlkError::DiskDead`]. Requests a device that
    /// ignored its reset still holds keep their mappings (it may still write into them; their
    /// bounce slots are never handed out again), which is logged.
    fn fail_everything(&self, inner: &mut DiskInner<T>) {
        let held = inner.requests.in_flight();
        if held > 0 {
            log::error!("{}: {held} requests' buffers stay mapped: the device never confirmed a reset", self.name);
        }
        inner.requests.take_back(|_, _| TakeBack::End(Err(BlkError::DiskDead)));
        while let Some((slot, _)) = inner.requests.oldest_waiting() {
            inner.requests.fail_waiting(slot, Err(BlkError::DiskDead));
        }
    }
}
