//! Completion (Linux `virtblk_done`, in the interrupt handler, and the tick's used-ring poll):
//! every chain the device used is taken from it under the disk's lock, unmapped with the lock
//! dropped (a bounced read's copy back), its status byte read and its outcome recorded; then
//! waiting requests start and callbacks run. Bounded, no allocation.
#![forbid(unsafe_code)]

use core::sync::atomic::Ordering;

use drivers::virtio::blk::{HEADER_SIZE, STATUS_UNWRITTEN};
use drivers::virtio::Transport;

use super::{
    BlkEnv, BlkError, CompletionFn, Disk, DiskInner, Kick, Mapped, Outcome, Params, Request, MAX_IN_FLIGHT, NOATTR, QUEUE_SIZE,
    SCRATCH_SLOT, STATUS_OFFSET,
};
use crate::block::{DiskHealth, Ticket};
use crate::dma::mapping::DmaError;
use crate::dma::{DmaAttrs, DmaDirection};

impl<T: Transport, E: BlkEnv> Disk<'_, T, E> {
    /// The interrupt (Linux `virtblk_done`): ack, then finish every request the device used.
    /// True (handled) if the device had raised it (an ISR bit) or left something in the used
    /// ring. Linux's `vring_interrupt` answers `IRQ_NONE` to an empty ring even with the ISR bit
    /// set; here the tick's poll may have emptied the ring first, so the ISR bit alone counts as
    /// handled. The board's handler turns the answer into its `IrqReturn`.
    pub fn complete_from_irq(&self) -> bool {
        self.stats.irqs.fetch_add(1, Ordering::Relaxed);
        self.stats.irq_cpus.fetch_or(1 << self.env.cpu_id(), Ordering::Relaxed);
        let isr = self.inner.lock().blk.ack_interrupt();
        let completed = self.complete_used();
        self.stats.completed_in_irq.fetch_add(completed as u64, Ordering::Relaxed);
        if isr.0 != 0 || completed > 0 {
            true
        } else {
            self.stats.irqs_unhandled.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// The tick's poll (interrupt context; or a waiter checking deadlines): finishes what the device used without an interrupt
    /// reaching us, its line masked as stuck (`irq`'s "nobody cared") or the device silent, so
    /// that such a request completes before its deadline times it out (NVMe's `nvme_timeout`
    /// polls its completion queue before it resets, "completion polled"; we look every tick).
    pub(super) fn poll_used(&self) {
        let completed = self.complete_used();
        self.stats.completed_by_poll.fetch_add(completed as u64, Ordering::Relaxed);
    }

    /// Finishes every request the device used (virtio 1.2 §2.7.14) and returns how many, in
    /// interrupt context (the handler, the tick's poll). Each is taken from the device under
    /// the disk's lock and unmapped with the lock dropped: the copy back of a bounced read (up
    /// to a segment per data buffer) never holds up task context submitting to this disk on
    /// another CPU.
    fn complete_used(&self) -> usize {
        let mut completed = 0;
        // Bounded: each pop retires one of at most QUEUE_SIZE chains in flight.
        for _ in 0..QUEUE_SIZE {
            let (slot, params, mapped, completion) = {
                let mut inner = self.inner.lock();
                let completion = match inner.blk.pop_completed() {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) => {
                        // A queue already latched (the device reset under it) says so on every
                        // pop; only a fresh violation is news.
                        if inner.recovery.health() == DiskHealth::Live {
                            log::error!("{}: {e}", self.name);
                        }
                        break;
                    }
                };
                let Some((slot, Request { params, mapped: Some(mapped), .. })) = inner.requests.lookup(completion.token().0) else {
                    log::error!("{}: completion for unknown chain {}", self.name, completion.token().0);
                    continue;
                };
                // Completing: no timeout or abort touches it while the lock is dropped.
                inner.requests.begin_completion(slot);
                (slot, params, mapped, completion)
            };
            // For a read that bounced, this is the copy back into the caller's buffer.
            let outcome = self.unmap(&params, &mapped, NOATTR);
            let mut status = [STATUS_UNWRITTEN];
            self.mem.read(self.scratch + (slot * SCRATCH_SLOT + STATUS_OFFSET) as u64, &mut status);
            let mut inner = self.inner.lock();
            let device_says = inner.blk.complete(completion, status[0]).map_err(BlkError::Virtio);
            inner.requests.end_completion(slot, outcome.and(device_says));
            completed += 1;
        }
        {
            // The device broke the protocol (used ring, status byte): reset it now and take back
            // what it held; the recovery work (task context) initialises it again.
            let mut inner = self.inner.lock();
            if let (Some(reason), DiskHealth::Live) = (inner.blk.broken(), inner.recovery.health()) {
                self.begin_reset(&mut inner, reason, None);
            }
        }
        // Completions freed descriptors and bounce slots: start what waits for them, every one
        // that fits, with one notification at the end (Linux `virtblk_done` runs the stopped
        // hardware queue, whose dispatch marks its last request `bd->last`).
        if self.inner.lock().requests.waiting() > 0 {
            self.start_waiting(Kick::Now);
        }
        self.deliver_callbacks();
        completed
    }

    /// Unmaps a finished request's buffers: header, data (for a read that bounced, the copy
    /// back into the caller's buffer happens here unless `skip_cpu_sync`), status. Returns the
    /// first error.
    pub(super) fn unmap(&self, params: &Params, mapped: &Mapped, attrs: DmaAttrs) -> Result<(), BlkError> {
        let api = self.api;
        let dev = self.dma_dev;
        let mut first = Ok(());
        let mut keep = |r: Result<(), DmaError>| {
            if let (Err(e), Ok(())) = (r, &first) {
                first = Err(BlkError::Dma(e));
            }
        };
        keep(api.unmap_single(dev, mapped.header, HEADER_SIZE as usize, DmaDirection::ToDevice, attrs));
        if let Some((_, _, dir)) = params.data {
            for &(addr, len) in &mapped.segs[..mapped.nsegs] {
                keep(api.unmap_single(dev, addr, len, dir, attrs));
            }
        }
        keep(api.unmap_single(dev, mapped.status, 1, DmaDirection::FromDevice, attrs));
        first
    }

    /// Calls the callbacks of requests that ended (with no lock held), freeing their slots.
    pub(super) fn deliver_callbacks(&self) {
        // Requests collected by ticket have no callback: nothing to look for, no list to build.
        if self.inner.lock().nr_callbacks == 0 {
            return;
        }
        let mut due: [Option<(CompletionFn, u64, Outcome)>; MAX_IN_FLIGHT] = [const { None }; MAX_IN_FLIGHT];
        {
            let mut inner = self.inner.lock();
            let DiskInner { requests, callbacks, nr_callbacks, .. } = &mut **inner;
            for (slot, entry) in callbacks.iter_mut().enumerate() {
                if let Some((callback, cookie, ticket)) = *entry {
                    if let Some(outcome) = requests.collect(ticket) {
                        *entry = None;
                        *nr_callbacks -= 1;
                        due[slot] = Some((callback, cookie, outcome));
                    }
                }
            }
        }
        for (callback, cookie, outcome) in due.into_iter().flatten() {
            callback(cookie, outcome);
        }
    }

    /// The outcome of a submitted request once the interrupt handler recorded it; `None` while
    /// waiting or in flight. A completed request keeps its slot until collected here: a caller
    /// that drops its ticket leaks the slot (like a blk-mq tag never ended).
    pub fn poll(&self, ticket: Ticket) -> Option<Result<(), BlkError>> {
        self.inner.lock().requests.collect(ticket)
    }

    /// Requests accepted but not yet handed to the device: waiting, or being mapped by a
    /// submitter (the retry work may hold one on another CPU at any moment).
    pub fn waiting(&self) -> usize {
        self.inner.lock().requests.not_started()
    }
}
