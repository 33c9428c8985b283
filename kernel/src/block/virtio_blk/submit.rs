//! Submission (Linux `virtio_queue_rq`): a request is checked, takes a slot in the in-flight
//! table, is mapped with no lock held (the bounce copies) and handed to the device under the
//! disk's lock; one that finds no room waits in its slot and is started later, oldest first
//! ([`Disk::start_waiting`]), from the completion path or the retry work.
//!
//! A chain is published to the available ring without a notification ([`Disk::hand_to_device`],
//! Linux `virtio_queue_rq` with `bd->last` false); whoever started a batch notifies once at its
//! end ([`Disk::kick_published`], Linux `virtio_commit_rqs`): [`Disk::start_waiting`] after the
//! requests it started, a [`Plug`](super::Plug) when it ends, the now-or-never `submit_*` after
//! its one request.

use core::sync::atomic::Ordering;

use drivers::virtio::blk::{DmaSegment, RequestDma, RequestHeader, RequestType, HEADER_SIZE, ID_BYTES, SECTOR_SIZE, STATUS_UNWRITTEN};
use drivers::virtio::{Error as VirtioError, Transport};

use super::{
    BlkEnv, BlkError, BlockRequest, CompletionFn, Disk, DiskInner, Kick, Mapped, Params, Request, MAX_IN_FLIGHT, MAX_SEGMENTS, NOATTR,
    SCRATCH_SLOT, STATUS_OFFSET,
};
use crate::block::{DiskHealth, Ticket};
use crate::dma::device::DmaDevice;
use crate::dma::mapping::DmaApi;
use crate::dma::{DmaAddr, DmaAttrs, DmaDirection};
use crate::mm::PhysAddr;

/// The mappings made so far for one request, undone in reverse if the request cannot go.
struct Mappings {
    list: [(DmaAddr, usize, DmaDirection); MAX_SEGMENTS + 2],
    len: usize,
    /// Data segments that bounced (the DMA API handed back another address than the buffer's:
    /// a direct mapping is the buffer's own address), for the disk's statistics.
    data_bounced: usize,
}

impl Mappings {
    fn push(&mut self, m: (DmaAddr, usize, DmaDirection)) {
        self.list[self.len] = m;
        self.len += 1;
    }

    /// Unmaps everything without copying back (the device never saw the request).
    fn undo(&self, api: &DmaApi<'_>, dev: &DmaDevice) {
        for &(addr, len, dir) in self.list[..self.len].iter().rev() {
            let _ = api.unmap_single(dev, addr, len, dir, DmaAttrs { skip_cpu_sync: true, no_copy_in: false });
        }
    }
}

impl<T: Transport, E: BlkEnv> Disk<'_, T, E> {
    /// Submits a read of `len` bytes from `sector` into the physical buffer `buf`, now or not at
    /// all: [`BlkError::Busy`] if the table, the queue or the bounce pool is full.
    ///
    /// # Safety
    ///
    /// The caller owns `[buf, buf + len)` until the request completes (its ticket collected, by
    /// [`poll`](Self::poll) or [`wait_for`](super::wait_for)): the device or the bounce's
    /// copy-back writes it. It does not touch it meanwhile, and the memory stays allocated.
    #[allow(unsafe_code)]
    pub unsafe fn submit_read(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<Ticket, BlkError> {
        self.submit(self.params(RequestType::In, sector, Some((buf, len, DmaDirection::FromDevice)), None))
    }

    /// Submits a write of `len` bytes from the physical buffer `buf` to `sector` (see
    /// [`submit_read`](Self::submit_read)).
    ///
    /// # Safety
    ///
    /// The caller owns `[buf, buf + len)` until the request completes (its ticket collected): it
    /// does not write it meanwhile, and the memory stays allocated.
    #[allow(unsafe_code)]
    pub unsafe fn submit_write(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<Ticket, BlkError> {
        self.submit(self.params(RequestType::Out, sector, Some((buf, len, DmaDirection::ToDevice)), None))
    }

    /// Submits a cache flush (see [`submit_read`](Self::submit_read)).
    pub fn submit_flush(&self) -> Result<Ticket, BlkError> {
        self.submit(self.params(RequestType::Flush, 0, None, None))
    }

    /// Queues a read: started now if there is room, else as soon as there is, from the
    /// interrupt handler when a completion frees room or from task context (the retry work item)
    /// when a mapping failed in interrupt context. [`BlkError::Busy`] only if the table is full.
    ///
    /// # Safety
    ///
    /// The caller owns `[buf, buf + len)` until the request completes (its ticket collected, by
    /// [`poll`](Self::poll) or [`wait_for`](super::wait_for)): the device or the bounce's
    /// copy-back writes it. It does not touch it meanwhile, and the memory stays allocated.
    #[allow(unsafe_code)]
    pub unsafe fn queue_read(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<Ticket, BlkError> {
        self.queue(self.params(RequestType::In, sector, Some((buf, len, DmaDirection::FromDevice)), None), Kick::Now)
    }

    /// Queues a write (see [`queue_read`](Self::queue_read)).
    ///
    /// # Safety
    ///
    /// The caller owns `[buf, buf + len)` until the request completes (its ticket collected): it
    /// does not write it meanwhile, and the memory stays allocated.
    #[allow(unsafe_code)]
    pub unsafe fn queue_write(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<Ticket, BlkError> {
        self.queue(self.params(RequestType::Out, sector, Some((buf, len, DmaDirection::ToDevice)), None), Kick::Now)
    }

    /// Queues a flush (see [`queue_read`](Self::queue_read)).
    pub fn queue_flush(&self) -> Result<Ticket, BlkError> {
        self.queue(self.params(RequestType::Flush, 0, None, None), Kick::Now)
    }

    /// Queues `request` (see [`queue_read`](Self::queue_read)); when it ends, `callback` gets
    /// `cookie` and the outcome (see [`CompletionFn`]) and the request's slot is free again: no
    /// ticket to collect. [`BlkError::Busy`] if the table is full (the callback is not called).
    ///
    /// # Safety
    ///
    /// For a request with a buffer: the caller owns it until `callback` runs (it does not
    /// touch a read's or GET_ID's buffer meanwhile, nor write a write's), and the memory stays
    /// allocated until then.
    #[allow(unsafe_code)]
    pub unsafe fn queue_with_callback(&self, request: BlockRequest, callback: CompletionFn, cookie: u64) -> Result<(), BlkError> {
        self.queue_callback(request, callback, cookie, Kick::Now)
    }

    /// [`queue_with_callback`](Self::queue_with_callback), notifying as `kick` says. Its
    /// caller's `# Safety` covers the buffer.
    pub(super) fn queue_callback(&self, request: BlockRequest, callback: CompletionFn, cookie: u64, kick: Kick) -> Result<(), BlkError> {
        let params = match request {
            BlockRequest::Read { sector, buf, len } => {
                self.params(RequestType::In, sector, Some((buf, len, DmaDirection::FromDevice)), None)
            }
            BlockRequest::Write { sector, buf, len } => {
                self.params(RequestType::Out, sector, Some((buf, len, DmaDirection::ToDevice)), None)
            }
            BlockRequest::Flush => self.params(RequestType::Flush, 0, None, None),
            BlockRequest::GetId { buf } => {
                self.params(RequestType::GetId, 0, Some((buf, ID_BYTES as usize, DmaDirection::FromDevice)), None)
            }
        };
        self.check(&params)?;
        {
            let mut inner = self.inner.lock();
            let ticket =
                inner.requests.reserve(Request { params, mapped: None, retries: 0 }).ok_or_else(|| self.refused(BlkError::Busy))?;
            inner.callbacks[ticket.slot()] = Some((callback, cookie, ticket));
            inner.nr_callbacks += 1;
        }
        self.start_waiting(kick);
        self.deliver_callbacks();
        Ok(())
    }

    /// Refuses what no device could do, before anything is accepted; a dead disk refuses
    /// everything.
    fn check(&self, params: &Params) -> Result<(), BlkError> {
        if self.inner.lock().recovery.health() == DiskHealth::Dead {
            return Err(BlkError::DiskDead);
        }
        if params.kind == RequestType::GetId {
            return match params.data {
                Some((_, len, DmaDirection::FromDevice)) if len == ID_BYTES as usize => Ok(()),
                _ => Err(BlkError::BadBuffer { len: params.data.map_or(0, |d| d.1), max: ID_BYTES as usize }),
            };
        }
        if let Some((_, len, _)) = params.data {
            let max = self.max_transfer();
            if len == 0 || len > max || len % SECTOR_SIZE as usize != 0 {
                return Err(BlkError::BadBuffer { len, max });
            }
        }
        if params.kind == RequestType::Out && self.readonly() {
            return Err(BlkError::Virtio(VirtioError::ReadOnly));
        }
        Ok(())
    }

    fn submit(&self, params: Params) -> Result<Ticket, BlkError> {
        self.check(&params)?;
        let mut inner = self.inner.lock();
        let ticket = inner.requests.reserve(Request { params, mapped: None, retries: 0 }).ok_or_else(|| self.refused(BlkError::Busy))?;
        let slot = ticket.slot();
        inner.requests.claim(slot);
        // The copies with no lock held (in any context); only the hand-off under it.
        drop(inner);
        let maps = self.map_request(slot, params);
        inner = self.inner.lock();
        let result = maps.and_then(|maps| self.hand_to_device(&mut inner, params, maps));
        match result {
            Ok(mapped) => {
                inner.requests.start(slot, mapped.tag, Request { params, mapped: Some(mapped), retries: 0 });
                // Now or not at all, so not batched: notified at once.
                self.kick_published(&mut inner);
                Ok(ticket)
            }
            Err(e) => {
                // Now or not at all: the slot is free again, nothing was mapped or submitted.
                inner.requests.release_claimed(slot);
                Err(self.refused(e))
            }
        }
    }

    /// Queues a request (see [`queue_read`](Self::queue_read)); `kick` says whether the
    /// requests this starts are notified now or left to a plug's end.
    pub(super) fn queue(&self, params: Params, kick: Kick) -> Result<Ticket, BlkError> {
        self.check(&params)?;
        let ticket =
            self.inner.lock().requests.reserve(Request { params, mapped: None, retries: 0 }).ok_or_else(|| self.refused(BlkError::Busy))?;
        // Older waiting requests go first; this one is started now if there is room (the
        // outcome is in its slot either way).
        self.start_waiting(kick);
        Ok(ticket)
    }

    /// Starts waiting requests, oldest first, until one finds no room; returns how many
    /// started. Each is claimed under the disk's lock and mapped with it dropped
    /// ([`start_claimed`](Self::start_claimed)): its bounce copies never run under the lock, in
    /// task context (interrupts stay enabled) or in the interrupt handler (task context on
    /// another CPU does not wait behind them). A request that finds no room goes back to
    /// waiting in its place; from interrupt context task context retries it.
    ///
    /// The requests it starts are published without a notification; with [`Kick::Now`] one
    /// notification follows for all of them (Linux: `blk_mq_dispatch_rq_list` marks the last
    /// request `bd->last`, or calls `commit_rqs` when it stops early). With [`Kick::Plugged`]
    /// the caller's plug notifies when it ends.
    pub(super) fn start_waiting(&self, kick: Kick) -> usize {
        let mut started = 0;
        // Bounded: each round starts or ends one request, or stops.
        for _ in 0..MAX_IN_FLIGHT {
            let (slot, params) = {
                let mut inner = self.inner.lock();
                let Some((slot, request)) = inner.requests.oldest_waiting() else { break };
                match inner.recovery.health() {
                    DiskHealth::Dead => {
                        inner.requests.fail_waiting(slot, Err(BlkError::DiskDead));
                        continue;
                    }
                    // The recovery work starts it once the device is back.
                    DiskHealth::Resetting => break,
                    DiskHealth::Live if inner.blk.broken().is_some() => break, // a reset is coming
                    DiskHealth::Live => {}
                }
                inner.requests.claim(slot);
                (slot, request)
            };
            match self.start_claimed(slot, params) {
                Ok(_) => {
                    started += 1;
                    if crate::arch::in_interrupt() {
                        self.stats.started_in_irq.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(BlkError::Busy) => break,
                Err(_) => {} // it ended with its error
            }
        }
        if kick == Kick::Now {
            self.kick_published(&mut self.inner.lock());
        }
        started
    }

    /// Notifies the device once for every chain published since the last notification, if
    /// there is one and the device wants it ([`VirtioBlk::kick`](drivers::virtio::blk::VirtioBlk::kick):
    /// NO_NOTIFY, or RING_EVENT_IDX's `avail_event` against the whole batch). Under the disk's
    /// lock, any context: one MMIO write at most, nothing allocated or waited for. `kicks`
    /// counts the notifications written. A queue latched broken is not notified: a reset is
    /// coming, and the recovery publishes its requests again.
    pub(super) fn kick_published(&self, inner: &mut DiskInner<T>) {
        if let Ok(true) = inner.blk.kick() {
            self.stats.kicks.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Maps request `slot`'s buffers (the bounce copies happen here). Needs no lock: the slot's
    /// scratch bytes belong to whoever holds the slot, and the DMA API is safe anywhere.
    fn map_request(&self, slot: usize, params: Params) -> Result<Mappings, BlkError> {
        let Params { kind, sector, data, .. } = params;
        let api = self.api;
        let dev = self.dma_dev;
        let header_pa = self.scratch + (slot * SCRATCH_SLOT) as u64;
        let status_pa = header_pa + STATUS_OFFSET as u64;
        self.mem.write(header_pa, &RequestHeader { request_type: kind, sector }.to_bytes());
        self.mem.write(status_pa, &[STATUS_UNWRITTEN]);

        let mut maps = Mappings { list: [(0, 0, DmaDirection::ToDevice); MAX_SEGMENTS + 2], len: 0, data_bounced: 0 };
        // SAFETY: the header and status bytes are this slot's part of the disk's scratch page;
        // a data buffer was handed over by the caller of `submit_*`/`queue_*`/`read`/`write`
        // (their `# Safety`: owned until the request completes, not touched meanwhile), or is
        // GET_ID's page, the disk's. Unmapped before the request completes.
        #[allow(unsafe_code)]
        let mut map =
            |pa: PhysAddr, len: usize, dir: DmaDirection, attrs: DmaAttrs| match unsafe { api.map_single(dev, pa, len, dir, attrs) } {
                Ok(addr) => {
                    maps.push((addr, len, dir));
                    Ok(addr)
                }
                Err(e) => {
                    maps.undo(self.api, dev);
                    Err(BlkError::from(e))
                }
            };
        let mut bounced = 0;
        // The list's order is the chain's: header, the data segments, status.
        map(header_pa, HEADER_SIZE as usize, DmaDirection::ToDevice, NOATTR)?;
        if let Some((buf, len, dir)) = data {
            // A block read overwrites its whole buffer: its bounce needs no copy-in when its
            // slots are clean (`DmaAttrs::no_copy_in`). Not the status byte: a device that
            // does not write it must leave STATUS_UNWRITTEN.
            let attrs = DmaAttrs { no_copy_in: kind == RequestType::In, ..NOATTR };
            let piece = self.segment_max();
            let mut offset = 0;
            while offset < len {
                let n = (len - offset).min(piece);
                let pa = buf + offset as u64;
                if map(pa, n, dir, attrs)? != pa {
                    bounced += 1;
                }
                offset += n;
            }
        }
        map(status_pa, 1, DmaDirection::FromDevice, NOATTR)?;
        maps.data_bounced = bounced;
        Ok(maps)
    }

    /// Hands a mapped request to the device (under the disk's lock): its chain is published
    /// without a notification (the caller kicks, [`kick_published`](Self::kick_published)). On
    /// failure it unmaps everything (no copy back) and nothing reaches the device.
    fn hand_to_device(&self, inner: &mut DiskInner<T>, params: Params, maps: Mappings) -> Result<Mapped, BlkError> {
        let dev = self.dma_dev;
        match inner.recovery.health() {
            // Being reset (or about to be: the queue is latched broken): the request waits
            // for the re-initialisation, which starts it.
            DiskHealth::Resetting => {
                maps.undo(self.api, dev);
                return Err(BlkError::Busy);
            }
            DiskHealth::Dead => {
                maps.undo(self.api, dev);
                return Err(BlkError::DiskDead);
            }
            DiskHealth::Live => {}
        }
        if inner.blk.broken().is_some() {
            maps.undo(self.api, dev);
            return Err(BlkError::Busy);
        }
        let list = &maps.list[..maps.len];
        let (header, status) = (list[0].0, list[list.len() - 1].0);
        let data = &list[1..list.len() - 1];
        let mut segs = [(0, 0); MAX_SEGMENTS];
        let mut segments = [DmaSegment { dma_addr: 0, len: 0 }; MAX_SEGMENTS];
        for (i, &(addr, len, _)) in data.iter().enumerate() {
            segs[i] = (addr, len);
            segments[i] = DmaSegment { dma_addr: addr, len: len as u32 };
        }
        let nsegs = data.len();
        let request = RequestDma { header, data: &segments[..nsegs], status };
        let described = RequestHeader { request_type: params.kind, sector: params.sector };
        let token = inner.blk.add_request(described, &request).inspect_err(|_| maps.undo(self.api, dev))?;
        for &(addr, len, _) in list {
            self.note_dma(addr, len);
        }
        if maps.data_bounced != 0 {
            self.stats.data_bounced.fetch_add(maps.data_bounced as u64, Ordering::Relaxed);
        }
        if nsegs != maps.data_bounced {
            self.stats.data_direct.fetch_add((nsegs - maps.data_bounced) as u64, Ordering::Relaxed);
        }
        self.stats.submitted.fetch_add(1, Ordering::Relaxed);
        Ok(Mapped { tag: token.0, header, status, segs, nsegs })
    }

    /// Maps the claimed request in `slot` with no lock held (in task context with interrupts
    /// enabled: the bounce copies of a large request take a while), then hands it to the device
    /// under the lock. If the pool is full it goes back to waiting (started later by a
    /// completion or the retry work); another error ends it.
    fn start_claimed(&self, slot: usize, request: Request) -> Result<Mapped, BlkError> {
        let params = request.params;
        let maps = self.map_request(slot, params);
        let mut inner = self.inner.lock();
        let result = maps.and_then(|maps| self.hand_to_device(&mut inner, params, maps));
        match result {
            Ok(mapped) => {
                let started = inner.requests.start(slot, mapped.tag, Request { mapped: Some(mapped), ..request });
                debug_assert!(started.is_some());
            }
            Err(BlkError::Busy) => {
                self.refused(BlkError::Busy);
                inner.requests.unclaim(slot);
                if crate::arch::in_interrupt() {
                    // Linux would return BLK_STS_RESOURCE and rerun the queue later; the
                    // request keeps its slot and task context retries it.
                    self.stats.deferred_to_task.fetch_add(1, Ordering::Relaxed);
                    self.env.schedule_retry();
                } else if inner.requests.in_flight() == 0 && inner.recovery.health() == DiskHealth::Live {
                    self.env.schedule_retry(); // no completion will come to start it
                }
                // While the disk is resetting, the recovery work starts it.
            }
            Err(ref e) => {
                inner.requests.fail_claimed(slot, Err(e.clone()));
            }
        }
        result
    }

    fn note_dma(&self, addr: DmaAddr, len: usize) {
        self.stats.dma_lowest.fetch_min(addr, Ordering::Relaxed);
        self.stats.dma_highest.fetch_max(addr + len as u64 - 1, Ordering::Relaxed);
    }

    /// The retry work's part for this disk (task context): starts waiting requests that the
    /// interrupt handler could not map. True if the work should run again: requests wait and
    /// none is in flight (no completion interrupt would retry them); with requests in flight
    /// the next completion does.
    pub fn retry_waiting(&self) -> bool {
        let started = self.start_waiting(Kick::Now);
        self.stats.started_by_work.fetch_add(started as u64, Ordering::Relaxed);
        let inner = self.inner.lock();
        // A resetting disk's requests are started by the recovery work.
        let again = inner.requests.waiting() > 0 && inner.requests.in_flight() == 0 && inner.recovery.health() == DiskHealth::Live;
        drop(inner);
        self.deliver_callbacks();
        again
    }
}
