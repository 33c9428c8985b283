//! The synchronous calls: queue, then idle until the completion path recorded the outcome
//! ([`wait_for`]); a buffer larger than one request is split into several.

use core::time::Duration;

use drivers::virtio::blk::{RequestType, ID_BYTES, SECTOR_SIZE};
use drivers::virtio::Transport;

use super::{BlkEnv, BlkError, Disk, Kick, Params, MAX_IN_FLIGHT};
use crate::block::Ticket;
use crate::dma::DmaDirection;
use crate::mm::PhysAddr;

impl<T: Transport, E: BlkEnv> Disk<'_, T, E> {
    /// Reads the device's 20-byte identifier (virtio-blk GET_ID: QEMU gives the drive's
    /// `serial`), through a bounce like any read.
    pub fn get_id(&self, timeout: Duration) -> Result<[u8; ID_BYTES as usize], BlkError> {
        let page = self.env.alloc_page().ok_or(BlkError::Busy)?;
        let params = self.params(RequestType::GetId, 0, Some((page, ID_BYTES as usize, DmaDirection::FromDevice)), Some(timeout));
        let result = self.queue_patiently(params).and_then(|t| wait_for(self, t, self.env.uptime() + timeout));
        let mut id = [0u8; ID_BYTES as usize];
        self.mem.read(page, &mut id);
        self.env.free_page(page);
        result.map(|()| id)
    }

    /// Reads `len` bytes (whole sectors, any amount) from `sector` into `buf` and waits: split
    /// into requests of at most [`max_transfer`](Self::max_transfer) bytes, as many in flight
    /// as the table takes. Each request must complete within `timeout` of being queued. On an
    /// error the requests already queued are still waited for (none is abandoned), then the
    /// first error is returned.
    ///
    /// # Safety
    ///
    /// The caller owns `[buf, buf + len)` until this returns and does not touch it meanwhile;
    /// the memory stays allocated until then.
    #[allow(unsafe_code)]
    pub unsafe fn read(&self, sector: u64, buf: PhysAddr, len: usize, timeout: Duration) -> Result<(), BlkError> {
        // SAFETY: this function's contract, handed on.
        unsafe { self.transfer(RequestType::In, sector, buf, len, timeout) }
    }

    /// Writes synchronously (see [`read`](Self::read)).
    ///
    /// # Safety
    ///
    /// The caller owns `[buf, buf + len)` until this returns and does not write it meanwhile;
    /// the memory stays allocated until then.
    #[allow(unsafe_code)]
    pub unsafe fn write(&self, sector: u64, buf: PhysAddr, len: usize, timeout: Duration) -> Result<(), BlkError> {
        // SAFETY: this function's contract, handed on.
        unsafe { self.transfer(RequestType::Out, sector, buf, len, timeout) }
    }

    /// Flushes synchronously (see [`read`](Self::read)).
    pub fn flush(&self, timeout: Duration) -> Result<(), BlkError> {
        let ticket = self.queue_patiently(self.params(RequestType::Flush, 0, None, Some(timeout)))?;
        wait_for(self, ticket, self.env.uptime() + timeout)
    }

    /// Idles (task context) after notifying the device of every request published and not yet
    /// notified: a request queued under a [`Plug`](super::Plug) still held (by this caller or
    /// another) is not waited for without the device knowing of it (Linux flushes a task's
    /// plug before it sleeps, `sched_submit_work`).
    fn idle_unplugged(&self) {
        self.kick_published(&mut self.inner.lock());
        self.env.idle();
    }

    /// Queues `params`, idling while the table is full, until its deadline.
    fn queue_patiently(&self, params: Params) -> Result<Ticket, BlkError> {
        loop {
            match self.queue(params, Kick::Now) {
                Err(BlkError::Busy) if self.env.uptime() < params.deadline => self.idle_unplugged(),
                other => return other,
            }
        }
    }

    /// Queues and waits for `len` bytes at `buf` in pieces (see [`read`](Self::read)).
    ///
    /// # Safety
    ///
    /// As [`read`](Self::read) for `In`, [`write`](Self::write) for `Out`.
    #[allow(unsafe_code)]
    unsafe fn transfer(&self, kind: RequestType, sector: u64, buf: PhysAddr, len: usize, timeout: Duration) -> Result<(), BlkError> {
        let dir = if kind == RequestType::In { DmaDirection::FromDevice } else { DmaDirection::ToDevice };
        if len == 0 || !len.is_multiple_of(SECTOR_SIZE as usize) {
            return Err(BlkError::BadBuffer { len, max: usize::MAX / 2 });
        }
        let max = self.max_transfer();
        let mut tickets: [Option<Ticket>; MAX_IN_FLIGHT] = [None; MAX_IN_FLIGHT];
        let mut first_error = None;
        let mut offset = 0;
        loop {
            // Queue what the table takes.
            while offset < len && first_error.is_none() {
                let Some(place) = tickets.iter().position(Option::is_none) else { break };
                let n = (len - offset).min(max);
                let sector = sector + (offset / SECTOR_SIZE as usize) as u64;
                let params = self.params(kind, sector, Some((buf + offset as u64, n, dir)), Some(timeout));
                match self.queue(params, Kick::Now) {
                    Ok(t) => {
                        tickets[place] = Some(t);
                        offset += n;
                    }
                    Err(BlkError::Busy) if tickets.iter().any(Option::is_some) => break,
                    Err(BlkError::Busy) if self.env.uptime() < params.deadline => {
                        self.idle_unplugged();
                        break;
                    }
                    Err(e) => first_error = Some(e),
                }
            }
            // Collect what completed.
            for t in tickets.iter_mut() {
                if let Some(outcome) = t.and_then(|ticket| self.poll(ticket)) {
                    *t = None;
                    if let Err(e) = outcome {
                        first_error.get_or_insert(e);
                    }
                }
            }
            let pending = tickets.iter().any(Option::is_some);
            if !pending && (offset >= len || first_error.is_some()) {
                return first_error.map_or(Ok(()), Err);
            }
            if pending {
                self.check_timeouts();
                self.idle_unplugged();
            }
        }
    }
}

/// Idles until `ticket`'s request has an outcome and returns it. If `deadline` passes first,
/// the request is timed out now (if the device holds it, the device is reset and all its
/// requests fail: see [`Disk::check_timeouts`]) and the outcome is [`BlkError::Timeout`]. The
/// request is never abandoned: its slot and mappings are always taken back.
pub fn wait_for<T: Transport, E: BlkEnv>(disk: &Disk<'_, T, E>, ticket: Ticket, deadline: Duration) -> Result<(), BlkError> {
    loop {
        let now = disk.env.uptime();
        let mut inner = disk.inner.lock();
        if let Some(outcome) = inner.requests.collect(ticket) {
            return outcome;
        }
        if !inner.requests.is_pending(ticket) {
            return Err(BlkError::UnknownTicket);
        }
        disk.expire(&mut inner, now, (now >= deadline).then_some(ticket));
        let outcome = inner.requests.collect(ticket);
        drop(inner);
        disk.deliver_callbacks(); // requests the expiry failed may have callbacks
        if let Some(outcome) = outcome {
            return outcome;
        }
        disk.idle_unplugged(); // the completion interrupt, or at worst the background tick, wakes us
    }
}

/// Reads the whole of `disk` in chunks of `chunk` bytes into `buf` (physical, at least `chunk`
/// bytes; above the DMA window it bounces) and returns (bytes, CRC-32).
///
/// # Safety
///
/// The caller owns `[buf, buf + chunk)` until this returns and does not touch it meanwhile;
/// the memory stays allocated until then.
#[allow(unsafe_code)]
pub unsafe fn read_verify<T: Transport, E: BlkEnv>(
    disk: &Disk<'_, T, E>,
    buf: PhysAddr,
    chunk: usize,
    timeout: Duration,
) -> Result<(u64, u32), BlkError> {
    let chunk = chunk.min(disk.max_transfer());
    let size = disk.size_bytes();
    let mut crc = crate::crc32::Crc32::new();
    let mut bytes = [0u8; 4096];
    let mut offset = 0u64;
    while offset < size {
        let len = (size - offset).min(chunk as u64) as usize;
        // SAFETY: this function's contract, handed on (`len <= chunk`).
        unsafe { disk.read(offset / u64::from(SECTOR_SIZE), buf, len, timeout) }?;
        let mut done = 0;
        while done < len {
            let n = (len - done).min(bytes.len());
            disk.mem.read(buf + done as u64, &mut bytes[..n]);
            crc.update(&bytes[..n]);
            done += n;
        }
        offset += len as u64;
    }
    Ok((size, crc.finish()))
}
