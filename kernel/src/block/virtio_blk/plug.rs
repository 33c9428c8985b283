//! Plugging (Linux `blk_start_plug` / `blk_finish_plug`): requests queued through a [`Plug`]
//! are started at once (mapped, their chains published to the available ring) but the device is
//! notified only when the plug ends, once for all of them (or not at all if RING_EVENT_IDX or
//! NO_NOTIFY says it needs none). A submitter filling a queue of depth 16 thus writes one
//! notification instead of 16.
//!
//! Where we differ from Linux: its plug holds requests back in a per-task list until the
//! flush; here they reach the ring at once and only the notification waits, so a device that
//! looks at the ring anyway (one that was notified earlier and still works through it, or whose
//! completion interrupt refills the queue meanwhile and notifies for everything published) may
//! start them before the plug ends. Nothing published waits forever for a plug: the plug
//! notifies when dropped (every early return), waiting for a request notifies first (Linux
//! flushes the plug before a task sleeps), the background tick notifies for a plug that was
//! leaked, and a reset takes the requests back and the recovery publishes them again.

use drivers::virtio::Transport;

use super::{BlkEnv, BlkError, BlockRequest, CompletionFn, Disk, Kick};
use crate::block::Ticket;
use crate::dma::DmaDirection;
use crate::mm::PhysAddr;

use drivers::virtio::blk::RequestType;

/// A batch of requests to one disk, notified once when the plug ends ([`finish`](Self::finish)
/// or drop). Task context: its requests are mapped (bounce copies) like [`Disk::queue_read`]'s.
#[must_use = "a plug notifies the device when it ends: dropped at once, it batches nothing"]
pub struct Plug<'d, 'a, T: Transport, E: BlkEnv> {
    disk: &'d Disk<'a, T, E>,
}

impl<'a, T: Transport, E: BlkEnv> Disk<'a, T, E> {
    /// Starts a batch (Linux `blk_start_plug`): requests queued through the plug are published
    /// without a notification until it ends.
    pub fn plug(&self) -> Plug<'_, 'a, T, E> {
        Plug { disk: self }
    }
}

impl<T: Transport, E: BlkEnv> Plug<'_, '_, T, E> {
    /// [`Disk::queue_read`], its notification left to the plug's end.
    ///
    /// # Safety
    ///
    /// As [`Disk::queue_read`]: the caller owns `[buf, buf + len)` until the request completes
    /// (its ticket collected), does not touch it meanwhile, and the memory stays allocated.
    #[allow(unsafe_code)]
    pub unsafe fn queue_read(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<Ticket, BlkError> {
        let disk = self.disk;
        disk.queue(disk.params(RequestType::In, sector, Some((buf, len, DmaDirection::FromDevice)), None), Kick::Plugged)
    }

    /// [`Disk::queue_write`], its notification left to the plug's end.
    ///
    /// # Safety
    ///
    /// As [`Disk::queue_write`]: the caller owns `[buf, buf + len)` until the request completes
    /// (its ticket collected), does not write it meanwhile, and the memory stays allocated.
    #[allow(unsafe_code)]
    pub unsafe fn queue_write(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<Ticket, BlkError> {
        let disk = self.disk;
        disk.queue(disk.params(RequestType::Out, sector, Some((buf, len, DmaDirection::ToDevice)), None), Kick::Plugged)
    }

    /// [`Disk::queue_flush`], its notification left to the plug's end.
    pub fn queue_flush(&self) -> Result<Ticket, BlkError> {
        let disk = self.disk;
        disk.queue(disk.params(RequestType::Flush, 0, None, None), Kick::Plugged)
    }

    /// [`Disk::queue_with_callback`], its notification left to the plug's end.
    ///
    /// # Safety
    ///
    /// As [`Disk::queue_with_callback`]: for a request with a buffer, the caller owns it until
    /// `callback` runs and the memory stays allocated until then.
    #[allow(unsafe_code)]
    pub unsafe fn queue_with_callback(&self, request: BlockRequest, callback: CompletionFn, cookie: u64) -> Result<(), BlkError> {
        self.disk.queue_callback(request, callback, cookie, Kick::Plugged)
    }

    /// Ends the batch (Linux `blk_finish_plug`): one notification for every request published
    /// and not yet notified, if the device wants it. The same as dropping the plug.
    pub fn finish(self) {}
}

impl<T: Transport, E: BlkEnv> Drop for Plug<'_, '_, T, E> {
    fn drop(&mut self) {
        self.disk.kick_published(&mut self.disk.inner.lock());
    }
}
