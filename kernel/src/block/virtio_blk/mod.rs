//! The virtio-blk request engine (Linux: the request side of `drivers/block/virtio_blk.c` over
//! blk-mq): submission, waiting requests, the completion handler's used-ring loop, deadlines,
//! reset and recovery. Every byte the device touches goes through the DMA API.
//!
//! It knows no board: the board (`platform::virtio_blk` on the machine) probes the device,
//! builds the [`VirtioBlk`] over its transport, and hands it over with what the engine needs
//! ([`DiskParts`]: the [`DmaApi`], the disk's [`DmaDevice`], [`PhysMemory`], a scratch page) and
//! a [`BlkEnv`] for the rest (time, idling, the CPU, the retry and recovery work items). The
//! board keeps the disks, registers the interrupt and calls [`Disk::complete_from_irq`] from it,
//! calls [`Disk::check_timeouts`] from its tick and [`Disk::retry_waiting`] / [`Disk::recover`]
//! from its work items. The host tests (`tests.rs`) drive it against simulated devices.
//!
//! - Submit ([`Disk::submit_read`], [`Disk::submit_write`], [`Disk::submit_flush`], task
//!   context; `submit.rs`): the 16-byte header and the status byte live in the request's slot of
//!   a per-disk scratch page; header, data and status are each mapped with their direction
//!   (bounced if the device cannot reach them), and the chain is handed to the device. The slot
//!   is claimed first, so the mapping (the bounce copies) runs with no lock held and interrupts
//!   enabled; only the hand-off takes the disk's lock. The same holds wherever a request is
//!   started: no bounce copy runs under the disk's lock. A full table, queue or
//!   bounce pool is [`BlkError::Busy`]: nothing was submitted, nothing is left mapped. With
//!   indirect descriptors each request takes one ring descriptor, so the whole queue
//!   ([`QUEUE_SIZE`]) can be in flight; without, a third of it.
//! - Queue ([`Disk::queue_read`], ...; `submit.rs`): the same, but a request that finds no room
//!   waits in its slot and is started later, oldest first: by the interrupt handler once
//!   completions free room (mapping in interrupt context), or, if a mapping fails there, by a
//!   work item in task context (Linux: `BLK_STS_RESOURCE` and a delayed queue run). Busy only
//!   if the table is full.
//! - Batch ([`Disk::plug`], `plug.rs`; Linux `blk_start_plug` / `blk_finish_plug`, `bd->last`
//!   and `commit_rqs`): a chain is published to the available ring without a notification, and
//!   whoever started a batch notifies once at its end: the completion handler's refill after
//!   every waiting request that fits, a [`Plug`] when it ends (requests queued through it are
//!   started at once, published, and notified together). The device is never left unaware of a
//!   published request: waiting (`wait.rs`) and the tick notify for a plug still held.
//! - Complete (the interrupt handler; `complete.rs`, Linux `virtblk_done`): ack, pop every used
//!   chain and take its request from the device under the disk's lock, then unmap with the lock
//!   dropped (for a read the bounce copy back happens here: task context on another CPU does not
//!   wait behind it), read the status byte and record the outcome in the fixed-size in-flight
//!   table ([`crate::block::InflightTable`]) under the lock again, then start waiting requests.
//!   No allocation, bounded work.
//! - Collect ([`Disk::poll`]), or wait ([`Disk::read`], [`Disk::write`], [`Disk::flush`]:
//!   queue, then idle until the handler recorded the outcome; `wait.rs`). The synchronous calls
//!   split a buffer larger than [`Disk::max_transfer`] into several requests; one request
//!   carries up to [`MAX_SEGMENTS`] data segments (the device's SEG_MAX permitting), each at
//!   most one mapping (`max_mapping_size`, SIZE_MAX).
//! - Time out (a background tick, interrupt context; `timeout.rs`, Linux
//!   `blk_mq_timeout_work`): every request has a deadline. A waiting request past it is failed
//!   with [`BlkError::Timeout`]; if the device holds one (or the interrupt handler caught it
//!   breaking the protocol), the device is reset (after which it touches no buffer) and every
//!   request it held is taken back: unmapped without a copy back, then requeued while its retry
//!   budget (`blk_retries=`) lasts, else failed with its reason.
//! - Recover (a work item, task context; `reset.rs`, Linux `virtblk_freeze` /
//!   `virtblk_restore`): the device is initialised again ([`VirtioBlk::reinit`]: negotiate, the
//!   same rings rebuilt) and the waiting requests start again. After [`MAX_FAILED_REINITS`]
//!   failures in a row the disk is dead: every request fails at once with [`BlkError::DiskDead`].

mod complete;
mod plug;
mod reset;
mod submit;
#[cfg(test)]
mod tests;
mod timeout;
mod wait;

use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use core::time::Duration;

use drivers::virtio::blk::{feature as blk_feature, BlkConfig, RequestType, VirtioBlk, HEADER_SIZE, SECTOR_SIZE};
use drivers::virtio::{feature, BrokenReason, Error as VirtioError, Transport};

use super::recovery::MAX_FAILED_REINITS;
use super::{DiskHealth, InflightTable, Recovery, Ticket};
use crate::dma::device::DmaDevice;
use crate::dma::mapping::{DmaApi, DmaError};
use crate::dma::swiotlb::SwiotlbError;
use crate::dma::{DmaAddr, DmaAttrs, DmaDirection};
use crate::mm::phys::PhysMemory;
use crate::mm::{PhysAddr, PAGE_SIZE};
use crate::sync::IrqSafeSpinLock;

pub use plug::Plug;
pub use wait::{read_verify, wait_for};

/// Descriptors in each disk's request queue (QEMU offers up to 1024; this bounds the table).
pub const QUEUE_SIZE: usize = 64;
/// Request slots per disk: with indirect descriptors (VIRTIO_F_INDIRECT_DESC) a request takes
/// one ring descriptor, so the whole queue can be in flight. [`Disk::max_in_flight`] is what
/// the disk takes at run time.
pub const MAX_IN_FLIGHT: usize = QUEUE_SIZE;
/// Requests in flight without indirect descriptors: a request takes two descriptors plus one
/// per data segment, so a queue holds a third of its size in one-segment requests (with longer
/// chains the queue, not the table, is the limit).
pub const DIRECT_MAX_IN_FLIGHT: usize = QUEUE_SIZE / 3;
/// Data segments in one request at most (the device's SEG_MAX may lower it): a request's
/// buffer is mapped in pieces of at most one mapping each (`max_mapping_size`, SIZE_MAX).
pub const MAX_SEGMENTS: usize = 4;
/// How long a queued request may take before it is failed when the caller names no timeout
/// (Linux blk-mq: 30 s). See [`Disk::set_default_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of a request's slot in the scratch page: the header, then the status byte.
const SCRATCH_SLOT: usize = 32;
const STATUS_OFFSET: usize = HEADER_SIZE as usize;
const _: () = assert!(MAX_IN_FLIGHT * SCRATCH_SLOT <= PAGE_SIZE as usize);

const NOATTR: DmaAttrs = DmaAttrs { skip_cpu_sync: false, no_copy_in: false };

/// Who notifies the device of requests a call starts (published to the available ring).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kick {
    /// The call, once, after the last request it started (Linux `bd->last` / `commit_rqs`).
    Now,
    /// The caller's [`Plug`], when it ends (Linux `blk_finish_plug`).
    Plugged,
}

/// Errors of the block layer on the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlkError {
    /// The device, or the virtio protocol, refused or failed (see the virtio error).
    Virtio(VirtioError),
    /// The DMA API refused a mapping for a reason other than a full pool.
    Dma(DmaError),
    /// Out of request slots, descriptors or bounce slots: nothing was submitted, retry later.
    Busy,
    /// The request did not complete before its deadline (it was failed; if the device held
    /// it, the device was reset and every other request it held failed as well).
    Timeout,
    /// A buffer that is empty, not whole sectors, or larger than one mapping may be.
    BadBuffer {
        /// The buffer's length in bytes.
        len: usize,
        /// The most one request may carry ([`Disk::max_transfer`]).
        max: usize,
    },
    /// No disk with that index.
    NoSuchDisk(usize),
    /// The ticket names no request of this disk (collected already, or another disk's).
    UnknownTicket,
    /// The disk was given up on: its device failed to initialise again after a reset
    /// [`MAX_FAILED_REINITS`] times in a row (Linux: a removed disk, `BLK_STS_IOERR`).
    DiskDead,
}

impl fmt::Display for BlkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlkError::Virtio(e) => write!(f, "virtio-blk: {e}"),
            BlkError::Dma(e) => write!(f, "DMA: {e}"),
            BlkError::Busy => write!(f, "no free request slot, descriptor or bounce slot (retry)"),
            BlkError::Timeout => write!(f, "request timed out"),
            BlkError::BadBuffer { len, max } => {
                write!(f, "buffer of {len} bytes is not 1..={max} whole sectors")
            }
            BlkError::NoSuchDisk(n) => write!(f, "no disk{n}"),
            BlkError::UnknownTicket => write!(f, "no such request (ticket collected already?)"),
            BlkError::DiskDead => write!(f, "disk is dead: {MAX_FAILED_REINITS} re-initialisations in a row failed"),
        }
    }
}

impl From<VirtioError> for BlkError {
    fn from(e: VirtioError) -> Self {
        match e {
            VirtioError::QueueFull => BlkError::Busy,
            e => BlkError::Virtio(e),
        }
    }
}

impl From<DmaError> for BlkError {
    fn from(e: DmaError) -> Self {
        match e {
            // The pool is full now (or only its interrupt-context reserve is left); it drains as
            // requests complete, and the manager may grow it: the request is retryable, like
            // Linux's BLK_STS_RESOURCE.
            DmaError::Swiotlb(SwiotlbError::BufferFull { .. } | SwiotlbError::BelowReserve { .. }) => BlkError::Busy,
            e => BlkError::Dma(e),
        }
    }
}

/// What the engine needs from the board, besides the DMA API and memory (the seam, in the spirit
/// of the tutorials' per-subsystem `interface` traits). Every method may be called in interrupt
/// context except [`idle`](Self::idle) and [`alloc_page`](Self::alloc_page).
pub trait BlkEnv {
    /// Time since boot: request deadlines are uptimes.
    fn uptime(&self) -> Duration;
    /// Waits in task context until something may have changed: an interrupt (the completion,
    /// or at worst the background tick) on the machine.
    fn idle(&self);
    /// The CPU this runs on (the statistics' `irq_cpus`).
    fn cpu_id(&self) -> usize;
    /// Asks task context to run [`Disk::retry_waiting`] on every disk soon (from interrupt
    /// context too: it must not wait).
    fn schedule_retry(&self);
    /// Asks task context to run [`Disk::recover`] on every disk soon (from interrupt context
    /// too: it must not wait).
    fn schedule_recovery(&self);
    /// A page of kernel memory (ZONE_NORMAL) for a small device-written buffer (GET_ID), task
    /// context; `None` if there is none.
    fn alloc_page(&self) -> Option<PhysAddr>;
    /// Gives back a page from [`alloc_page`](Self::alloc_page).
    fn free_page(&self, page: PhysAddr);
}

/// What the board hands [`Disk::new`]: the probed device and the references it maps through.
pub struct DiskParts<'a, T: Transport, E: BlkEnv> {
    /// Index in probe order.
    pub index: usize,
    /// The device's name (its device-tree node).
    pub name: &'a str,
    /// Its interrupt (INTID), for the record.
    pub irq: u32,
    /// The device, initialised (features negotiated, the queue set up, DRIVER_OK).
    pub blk: VirtioBlk<T, QUEUE_SIZE>,
    /// Its description for the DMA API.
    pub dma_dev: &'a DmaDevice,
    /// The DMA API its buffers are mapped through.
    pub api: &'a DmaApi<'a>,
    /// Physical memory (the scratch page's headers and status bytes).
    pub mem: &'a dyn PhysMemory,
    /// A page for the requests' headers and status bytes, the disk's from now on.
    pub scratch: PhysAddr,
    /// Resubmissions per request after resets (`blk_retries=`).
    pub retries: u8,
    /// The board.
    pub env: E,
}

/// What a request asks for. Its buffer was handed over by the caller of an unsafe entry
/// (`submit_*`, `queue_*`, `read`, `write`: owned until the request completes), or is the disk's
/// own page (GET_ID): the one reason [`Disk::map_request`]'s mapping is sound.
#[derive(Clone, Copy, Debug)]
struct Params {
    kind: RequestType,
    sector: u64,
    /// (buffer, length, direction); `None` for a flush.
    data: Option<(PhysAddr, usize, DmaDirection)>,
    /// Uptime by which it must have completed (checked on the timer tick).
    deadline: Duration,
    /// How long it may take, in milliseconds; a requeued request gets a new deadline this far
    /// ahead. (Milliseconds, not a `Duration`: the table of requests is built on the probe's
    /// stack, and every byte here counts 64 times.)
    timeout_ms: u32,
}

/// A request in the table: what it asks for and, once started, its mappings.
#[derive(Clone, Copy, Debug)]
struct Request {
    params: Params,
    mapped: Option<Mapped>,
    /// Times it was requeued after a reset of the device (see [`RetryBudget`]).
    retries: u8,
}

/// What the handler needs to finish a request: its mappings.
#[derive(Clone, Copy, Debug)]
struct Mapped {
    /// The device's name for the chain (head descriptor).
    tag: u16,
    header: DmaAddr,
    status: DmaAddr,
    /// The data segments' (DMA address, length), `nsegs` of them (0 for a flush).
    segs: [(DmaAddr, usize); MAX_SEGMENTS],
    nsegs: usize,
}

type Outcome = Result<(), BlkError>;

struct DiskInner<T: Transport> {
    blk: VirtioBlk<T, QUEUE_SIZE>,
    requests: InflightTable<Request, Outcome, MAX_IN_FLIGHT, QUEUE_SIZE>,
    /// Per slot: whom to call when that slot's request ends, and the ticket to collect it by.
    callbacks: [Option<(CompletionFn, u64, Ticket)>; MAX_IN_FLIGHT],
    /// The `Some` entries of `callbacks`: with none, a completion has no callback to look for.
    nr_callbacks: usize,
    /// Live, resetting or dead.
    recovery: Recovery,
    /// Why the device was last reset: the reason a request that runs out of retries fails with
    /// (unless its own deadline passed: then [`BlkError::Timeout`]).
    reset_reason: BrokenReason,
    /// A request whose waiter gave up (`wait_for`'s deadline): failed, never requeued.
    given_up: Option<usize>,
    /// Uptime before which the recovery work does not try again (backs off after a failure).
    next_reinit: Duration,
}

/// Called once when a request queued with [`Disk::queue_with_callback`] ends, with the caller's
/// cookie and the outcome. Runs in interrupt context when the device completed the request (or
/// the timer tick timed it out), in task context when it failed before reaching the device. It
/// runs with no disk lock held, so it may queue more requests; it must not wait.
pub type CompletionFn = fn(cookie: u64, outcome: Result<(), BlkError>);

/// A request for [`Disk::queue_with_callback`]: physical buffers, lengths in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockRequest {
    /// Read `len` bytes (whole sectors) from `sector` into `buf`.
    Read {
        /// The first sector.
        sector: u64,
        /// The buffer the data goes into (physical; the request maps it through the DMA API).
        buf: PhysAddr,
        /// Bytes, whole sectors.
        len: usize,
    },
    /// Write `len` bytes (whole sectors) from `buf` to `sector`.
    Write {
        /// The first sector.
        sector: u64,
        /// The buffer the data goes from (physical; the request maps it through the DMA API).
        buf: PhysAddr,
        /// Bytes, whole sectors.
        len: usize,
    },
    /// Flush the device's write cache.
    Flush,
    /// Read the device's 20-byte identifier (its serial) into `buf`.
    GetId {
        /// Where the 20 bytes go (physical).
        buf: PhysAddr,
    },
}

/// Counters of one disk.
#[derive(Default, Debug)]
pub struct DiskStats {
    /// Requests handed to the device.
    pub submitted: AtomicU64,
    /// Requests completed by the interrupt handler.
    pub completed_in_irq: AtomicU64,
    /// Interrupts taken.
    pub irqs: AtomicU64,
    /// Interrupts with nothing to do (no ISR bit, nothing used: Linux `IRQ_NONE`).
    pub irqs_unhandled: AtomicU64,
    /// Requests completed by the tick's used-ring poll (their interrupt late, masked as stuck,
    /// or never raised).
    pub completed_by_poll: AtomicU64,
    /// Which CPUs took this disk's interrupt (bit n: CPU n), to check its routing.
    pub irq_cpus: AtomicU32,
    /// Submissions refused as [`BlkError::Busy`].
    pub busy: AtomicU64,
    /// Waiting requests started by the interrupt handler (mapped in interrupt context).
    pub started_in_irq: AtomicU64,
    /// Times the interrupt handler could not map a waiting request and handed it to task context.
    pub deferred_to_task: AtomicU64,
    /// Requests failed because their deadline passed.
    pub timeouts: AtomicU64,
    /// Times the device was reset because it held a request past its deadline or broke the
    /// protocol.
    pub aborts: AtomicU64,
    /// Requests taken back from a reset device and queued again (retries).
    pub requeued: AtomicU64,
    /// Requests failed because they ran out of retries.
    pub retries_exhausted: AtomicU64,
    /// Re-initialisations that brought the device back / that failed.
    pub reinits: AtomicU64,
    /// See `reinits`.
    pub reinit_failures: AtomicU64,
    /// Waiting requests started by the retry work item (task context).
    pub started_by_work: AtomicU64,
    /// Data buffers that were bounced.
    pub data_bounced: AtomicU64,
    /// Data buffers the device reached directly.
    pub data_direct: AtomicU64,
    /// Notifications (kicks) written to the device: one per batch of requests published (a
    /// plug's end, the completion handler's refill, a `queue_*` call), none if the device did
    /// not want one (RING_EVENT_IDX's `avail_event`, NO_NOTIFY).
    pub kicks: AtomicU64,
    /// Lowest and highest DMA address handed to the device (rings excluded), for isolation checks.
    pub dma_lowest: AtomicU64,
    /// See `dma_lowest`; the highest byte.
    pub dma_highest: AtomicU64,
}

/// One virtio block disk: its device (`T`, the transport: virtio-mmio on the machine), the DMA
/// API it maps through, and what it needs from the board (`E`, see [`BlkEnv`]).
pub struct Disk<'a, T: Transport, E: BlkEnv> {
    /// Index in probe order (disk0 is the first `--disk`, on the highest transport).
    pub index: usize,
    /// Its device-tree node (the name it logs under).
    pub name: &'a str,
    /// Its interrupt (INTID; the board routes it, the engine only reports it).
    pub irq: u32,
    /// Its description for the DMA API.
    pub dma_dev: &'a DmaDevice,
    /// The configuration read at probe.
    pub config: BlkConfig,
    /// The negotiated features.
    pub features: u64,
    /// Counters.
    pub stats: DiskStats,
    /// Scratch page: slot `i` holds request `i`'s header and status byte.
    scratch: PhysAddr,
    /// Timeout of requests queued without one, in milliseconds.
    default_timeout_ms: AtomicU64,
    /// Resubmissions per request after resets (`blk_retries=`; [`Disk::set_retries`]).
    retries: AtomicU8,
    /// Re-initialisations still to fail on purpose ([`Disk::inject_reinit_failures`]).
    fail_reinits: AtomicU32,
    /// On the heap: the in-flight table makes it about 15 KiB, and a `Disk` built with it
    /// inline took the probe's 64 KiB stack over its guard page (two or three copies of it).
    inner: IrqSafeSpinLock<alloc::boxed::Box<DiskInner<T>>>,
    /// The DMA API every buffer is mapped through.
    api: &'a DmaApi<'a>,
    /// Physical memory: the scratch page's headers and status bytes.
    mem: &'a dyn PhysMemory,
    /// The board: time, idling, the work items.
    env: E,
}

impl<'a, T: Transport, E: BlkEnv> Disk<'a, T, E> {
    /// A disk over an initialised device. Requests in flight at once: the queue size with
    /// indirect descriptors (a request takes one ring descriptor), a third of it without (a
    /// request of one segment takes three); at most [`MAX_IN_FLIGHT`].
    pub fn new(parts: DiskParts<'a, T, E>) -> Self {
        let DiskParts { index, name, irq, blk, dma_dev, api, mem, scratch, retries, env } = parts;
        // Every request is one chain of at most 2 + MAX_SEGMENTS buffers; with indirect tables
        // it takes one ring descriptor, else at least three.
        let queue_size = usize::from(blk.queue().size());
        let max_in_flight = if blk.indirect() { queue_size } else { queue_size / 3 }.clamp(1, MAX_IN_FLIGHT);
        Disk {
            index,
            name,
            irq,
            dma_dev,
            config: *blk.config(),
            features: blk.features(),
            stats: DiskStats { dma_lowest: AtomicU64::new(u64::MAX), ..Default::default() },
            scratch,
            default_timeout_ms: AtomicU64::new(DEFAULT_TIMEOUT.as_millis() as u64),
            retries: AtomicU8::new(retries),
            fail_reinits: AtomicU32::new(0),
            inner: IrqSafeSpinLock::new(alloc::boxed::Box::new(DiskInner {
                blk,
                requests: InflightTable::with_limit(max_in_flight),
                callbacks: [None; MAX_IN_FLIGHT],
                nr_callbacks: 0,
                recovery: Recovery::new(),
                reset_reason: BrokenReason::ResetIgnored,
                given_up: None,
                next_reinit: Duration::ZERO,
            })),
            api,
            mem,
            env,
        }
    }

    /// The board this disk runs on.
    pub fn env(&self) -> &E {
        &self.env
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.config.capacity * u64::from(SECTOR_SIZE)
    }

    /// True if the device refuses writes (RO).
    pub fn readonly(&self) -> bool {
        self.features & blk_feature::RO != 0
    }

    /// True if the device negotiated ACCESS_PLATFORM (it uses DMA addresses).
    pub fn access_platform(&self) -> bool {
        self.features & feature::ACCESS_PLATFORM != 0
    }

    /// True if requests use indirect descriptors (INDIRECT_DESC negotiated).
    pub fn indirect(&self) -> bool {
        self.features & feature::INDIRECT_DESC != 0
    }

    /// True if notifications are suppressed with event indices (RING_EVENT_IDX negotiated).
    pub fn event_idx(&self) -> bool {
        self.features & feature::RING_EVENT_IDX != 0
    }

    /// Requests the disk takes at once: the queue size with indirect descriptors, a third of
    /// it without (see [`DIRECT_MAX_IN_FLIGHT`]).
    pub fn max_in_flight(&self) -> usize {
        self.inner.lock().requests.limit()
    }

    /// The largest piece of a request's buffer one descriptor carries: one mapping (a bounce
    /// is at most one SWIOTLB segment) and the device's SIZE_MAX, in whole sectors.
    pub fn segment_max(&self) -> usize {
        let mut max = self.api.max_mapping_size(self.dma_dev).min(1 << 20);
        if let Some(size_max) = self.config.size_max.filter(|m| *m != 0) {
            max = max.min(size_max as usize);
        }
        max / SECTOR_SIZE as usize * SECTOR_SIZE as usize
    }

    /// Data segments one request may carry: [`MAX_SEGMENTS`], the device's SEG_MAX, and what
    /// fits in the queue beside the header and status descriptors.
    pub fn segments_max(&self) -> usize {
        let seg_max = self.config.seg_max.filter(|m| *m != 0).map_or(MAX_SEGMENTS, |m| m as usize);
        MAX_SEGMENTS.min(seg_max).clamp(1, QUEUE_SIZE - 2)
    }

    /// The largest data buffer of one request ([`segment_max`](Self::segment_max) times
    /// [`segments_max`](Self::segments_max)). The synchronous calls split larger buffers into
    /// several requests.
    pub fn max_transfer(&self) -> usize {
        self.segment_max() * self.segments_max()
    }

    /// The DMA addresses of the request queue's descriptor, driver and device rings.
    pub fn ring_dma_addresses(&self) -> (u64, u64, u64) {
        self.inner.lock().blk.queue().ring_dma_addresses()
    }

    /// Requests the device holds.
    pub fn in_flight(&self) -> usize {
        self.inner.lock().requests.in_flight()
    }

    /// How many times taking this disk's lock had to wait (always 0 on one CPU: the lock masks
    /// interrupts, so nothing on this CPU can hold it when another path wants it).
    pub fn lock_contention(&self) -> u64 {
        self.inner.contended()
    }

    /// Why the disk stopped working, if it is not working now (a lying device, or a reset
    /// after a timeout, until the device is initialised again).
    pub fn broken(&self) -> Option<BrokenReason> {
        self.inner.lock().blk.broken()
    }

    /// Live, resetting (requests wait for the re-initialisation) or dead.
    pub fn health(&self) -> DiskHealth {
        self.inner.lock().recovery.health()
    }

    /// Resets started so far (timeouts, protocol violations).
    pub fn resets(&self) -> u64 {
        self.inner.lock().recovery.resets()
    }

    /// How many times a request is resubmitted after resets before it fails (`blk_retries=`).
    pub fn set_retries(&self, retries: u8) {
        self.retries.store(retries, Ordering::Relaxed);
    }

    /// Fault injection for tests (in the spirit of Linux's `fail_make_request`): the next `n`
    /// re-initialisations fail after the device came back (it is reset again and the queue
    /// latched broken, as if the device had refused its features), so that a dead disk can be
    /// reached with a device that always recovers (QEMU's).
    pub fn inject_reinit_failures(&self, n: u32) {
        self.fail_reinits.store(n, Ordering::Relaxed);
    }

    /// The timeout of requests queued without one (`submit_*`, `queue_*`).
    pub fn set_default_timeout(&self, timeout: Duration) {
        self.default_timeout_ms.store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    fn params(&self, kind: RequestType, sector: u64, data: Option<(PhysAddr, usize, DmaDirection)>, timeout: Option<Duration>) -> Params {
        let timeout = timeout.unwrap_or_else(|| Duration::from_millis(self.default_timeout_ms.load(Ordering::Relaxed)));
        let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        Params { kind, sector, data, deadline: self.env.uptime() + timeout, timeout_ms }
    }

    fn refused(&self, e: BlkError) -> BlkError {
        if e == BlkError::Busy {
            self.stats.busy.fetch_add(1, Ordering::Relaxed);
        }
        e
    }
}
