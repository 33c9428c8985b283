//! Virtio block disks on the machine (Linux: `drivers/block/virtio_blk.c`): found in the device
//! tree, driven from their interrupt handlers, every byte the device touches going through the
//! DMA API.
//!
//! - Probe ([`probe_all`], task context): every enabled `virtio,mmio` node with a block device
//!   gets its `DmaDevice` from the device tree, its ring memory from `dma_alloc_coherent` (from
//!   the restricted pool for a device behind one), its features negotiated (VERSION_1, and
//!   ACCESS_PLATFORM whenever offered; INDIRECT_DESC only with `blk_indirect=on` and
//!   RING_EVENT_IDX only with `blk_event_idx=on`: neither paid off in the benchmark) and its SPI
//!   registered. With indirect descriptors each request takes one ring descriptor (its buffers
//!   in that head's indirect table, in the rings' coherent memory), so the whole queue
//!   ([`QUEUE_SIZE`]) can be in flight; without, a third of it.
//! - Submit ([`Disk::submit_read`], [`Disk::submit_write`], [`Disk::submit_flush`], task
//!   context): the 16-byte header and the status byte live in the request's slot of a per-disk
//!   scratch page; header, data and status are each mapped with their direction (bounced if the
//!   device cannot reach them), and the chain is handed to the device. The slot is claimed
//!   first, so the mapping (the bounce copies) runs with no lock held and interrupts enabled;
//!   only the hand-off takes the disk's lock. The same holds wherever a request is started:
//!   no bounce copy runs under the disk's lock (issue 13). A full table, queue or bounce pool is
//!   [`BlkError::Busy`]: nothing was submitted, nothing is left mapped.
//! - Queue ([`Disk::queue_read`], ...): the same, but a request that finds no room waits in its
//!   slot and is started later, oldest first: by the interrupt handler once completions free
//!   room (mapping in interrupt context), or, if a mapping fails there, by a work item in task
//!   context (Linux: `BLK_STS_RESOURCE` and a delayed queue run). Busy only if the table is full.
//! - Complete (the interrupt handler): ack, pop every used chain and take its request from the
//!   device under the disk's lock, then unmap with the lock dropped (for a read the bounce copy
//!   back happens here: task context on another CPU does not wait behind it), read the status
//!   byte and record the outcome in the fixed-size in-flight table
//!   ([`crate::block::InflightTable`]) under the lock again, then start waiting requests. No
//!   allocation, bounded work.
//! - Collect ([`Disk::poll`]), or wait ([`Disk::read`], [`Disk::write`], [`Disk::flush`]: queue,
//!   then `idle()` until the handler recorded the outcome). The synchronous calls split a
//!   buffer larger than [`Disk::max_transfer`] into several requests; one request carries up to
//!   [`MAX_SEGMENTS`] data segments (the device's SEG_MAX permitting), each at most one mapping
//!   (`max_mapping_size`, SIZE_MAX).
//! - Time out (a background tick, interrupt context): every request has a deadline. A waiting
//!   request past it is failed with [`BlkError::Timeout`]; if the device holds one (or the
//!   interrupt handler caught it breaking the protocol), the device is reset (after which it
//!   touches no buffer) and every request it held is taken back: unmapped without a copy back,
//!   then requeued while its retry budget (`blk_retries=`) lasts, else failed with its reason.
//! - Recover (a work item, task context; Linux `virtblk_freeze` / `virtblk_restore`): the device
//!   is initialised again ([`VirtioBlk::reinit`]: negotiate, the same rings rebuilt) and the
//!   waiting requests start again. After [`MAX_FAILED_REINITS`] failures in a row the disk is
//!   dead: every request fails at once with [`BlkError::DiskDead`].

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use core::time::Duration;

use boot::exception::IrqContext;
use drivers::virtio::blk::{
    BlkConfig, BlkOptions, DmaSegment, RequestDma, RequestHeader, RequestType, VirtioBlk, HEADER_SIZE, ID_BYTES,
    SECTOR_SIZE, STATUS_UNWRITTEN,
};
use drivers::virtio::mmio::VirtioMmio;
use drivers::virtio::{feature, Error as VirtioError, Transport, VirtioDma};

use super::dma::{dma, dma_device_from_dt, DmaSetupError, RAM};
use super::irq::{request_irq_spread, IrqError, IrqReturn};
use super::mm::page_allocator;
use crate::block::recovery::MAX_FAILED_REINITS;
use crate::block::{DiskHealth, InflightTable, Recovery, RetryBudget, TakeBack, Ticket};
use crate::dma::device::DmaDevice;
use crate::dma::mapping::DmaError;
use crate::dma::swiotlb::SwiotlbError;
use crate::dma::{DmaAddr, DmaAttrs, DmaDirection};
use crate::mm::page_alloc::{MigrateType, ZoneType};
use crate::mm::phys::PhysMemory;
use crate::mm::{PhysAddr, PAGE_SIZE};
use crate::sync::IrqSafeSpinLock;
use crate::work::{WorkId, SYSTEM_WQ};

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
/// The background tick on which request deadlines are checked (interrupt context).
pub const TIMEOUT_TICK: Duration = Duration::from_millis(10);
/// Disks the kernel drives.
pub const MAX_DISKS: usize = 4;
/// virtio-mmio nodes looked at (QEMU virt has 32).
const MAX_TRANSPORTS: usize = 32;
/// Bytes of a request's slot in the scratch page: the header, then the status byte.
const SCRATCH_SLOT: usize = 32;
const STATUS_OFFSET: usize = HEADER_SIZE as usize;
const _: () = assert!(MAX_IN_FLIGHT * SCRATCH_SLOT <= PAGE_SIZE as usize);

const NOATTR: DmaAttrs = DmaAttrs { skip_cpu_sync: false, no_copy_in: false };

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

/// Why probing a virtio-mmio node failed.
#[derive(Debug)]
pub enum ProbeError {
    /// The node's DMA description.
    Dma(DmaSetupError),
    /// The device tree (interrupts).
    DeviceTree(&'static str),
    /// The transport or the device.
    Virtio(VirtioError),
    /// The interrupt line.
    Irq(IrqError),
    /// No memory for the scratch page.
    NoMemory,
    /// More disks than [`MAX_DISKS`].
    TooManyDisks,
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Dma(e) => write!(f, "{e}"),
            ProbeError::DeviceTree(why) => write!(f, "device tree: {why}"),
            ProbeError::Virtio(e) => write!(f, "{e}"),
            ProbeError::Irq(e) => write!(f, "{e}"),
            ProbeError::NoMemory => write!(f, "no memory for the request scratch page"),
            ProbeError::TooManyDisks => write!(f, "more than {MAX_DISKS} disks"),
        }
    }
}

/// Ring memory from `dma_alloc_coherent` for one device (the [`VirtioDma`] seam).
struct CoherentRings<'a> {
    dev: &'a DmaDevice,
}

// SAFETY: `alloc_coherent` returns whole zeroed pages (page allocator or restricted-pool slots,
// page aligned, which covers every ring alignment up to PAGE_SIZE; larger requests are refused),
// never freed, used by nothing else. The kernel identity-maps RAM, so the physical address is
// the pointer; the DMA address is what the DMA API says the device uses. Only coherent devices
// get memory (the DMA API refuses the others), so no cache maintenance is needed.
unsafe impl VirtioDma for CoherentRings<'_> {
    fn alloc_coherent(&self, size: usize, align: usize) -> Option<(NonNull<u8>, u64)> {
        if align > PAGE_SIZE as usize {
            return None;
        }
        match dma().api.alloc_coherent(self.dev, page_allocator(), size) {
            Ok((addr, dma_addr)) => NonNull::new(addr as *mut u8).map(|p| (p, dma_addr)),
            Err(e) => {
                log::warn!("{}: ring memory: {e}", self.dev.name);
                None
            }
        }
    }
}

/// What a request asks for.
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

/// The mappings made so far for one request, undone in reverse if the request cannot go.
struct Mappings {
    list: [(DmaAddr, usize, DmaDirection); MAX_SEGMENTS + 2],
    len: usize,
}

impl Mappings {
    fn push(&mut self, m: (DmaAddr, usize, DmaDirection)) {
        self.list[self.len] = m;
        self.len += 1;
    }

    /// Unmaps everything without copying back (the device never saw the request).
    fn undo(&self, dev: &DmaDevice) {
        for &(addr, len, dir) in self.list[..self.len].iter().rev() {
            let _ = dma().api.unmap_single(dev, addr, len, dir, DmaAttrs { skip_cpu_sync: true, no_copy_in: false });
        }
    }
}

type Outcome = Result<(), BlkError>;

struct DiskInner {
    blk: VirtioBlk<VirtioMmio, QUEUE_SIZE>,
    requests: InflightTable<Request, Outcome, MAX_IN_FLIGHT, QUEUE_SIZE>,
    /// Per slot: whom to call when that slot's request ends, and the ticket to collect it by.
    callbacks: [Option<(CompletionFn, u64, Ticket)>; MAX_IN_FLIGHT],
    /// Live, resetting or dead.
    recovery: Recovery,
    /// Why the device was last reset: the reason a request that runs out of retries fails with
    /// (unless its own deadline passed: then [`BlkError::Timeout`]).
    reset_reason: drivers::virtio::BrokenReason,
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
    /// Notifications (kicks) sent to the device; with RING_EVENT_IDX or NO_NOTIFY the device
    /// may spare some.
    pub kicks: AtomicU64,
    /// Lowest and highest DMA address handed to the device (rings excluded), for isolation checks.
    pub dma_lowest: AtomicU64,
    /// See `dma_lowest`; the highest byte.
    pub dma_highest: AtomicU64,
}

/// One virtio block disk.
pub struct Disk {
    /// Index in probe order (disk0 is the first `--disk`, on the highest transport).
    pub index: usize,
    /// Its device-tree node.
    pub name: &'static str,
    /// Its interrupt (INTID).
    pub irq: u32,
    /// Its description for the DMA API.
    pub dma_dev: &'static DmaDevice,
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
    retries: core::sync::atomic::AtomicU8,
    /// Re-initialisations still to fail on purpose ([`Disk::inject_reinit_failures`]).
    fail_reinits: core::sync::atomic::AtomicU32,
    /// On the heap: the in-flight table makes it about 15 KiB, and a `Disk` built with it
    /// inline took the probe's 64 KiB stack over its guard page (two or three copies of it).
    inner: IrqSafeSpinLock<alloc::boxed::Box<DiskInner>>,
}

static DISKS: [spin::Once<Disk>; MAX_DISKS] = [const { spin::Once::new() }; MAX_DISKS];
static PROBED: spin::Once<usize> = spin::Once::new();

/// Probes every virtio-mmio node once (task context) and returns how many disks were found.
/// A node that fails is logged and skipped; empty transports are skipped silently.
pub fn probe_all() -> usize {
    *PROBED.call_once(|| {
        let k = super::kernel();
        // Device-tree order is not attach order: sort by address (see qemu_virt) so that disk
        // numbers follow the command line.
        let mut nodes: [Option<crate::dt::Device<'static>>; MAX_TRANSPORTS] = [None; MAX_TRANSPORTS];
        let mut count = 0;
        for node in k.dt.virtio_mmio_devices() {
            match node {
                Ok(n) if count < nodes.len() => {
                    nodes[count] = Some(n);
                    count += 1;
                }
                Ok(n) => log::warn!("{}: more than {} virtio-mmio nodes, ignored", n.name(), nodes.len()),
                Err(e) => log::warn!("virtio-mmio: {e}"),
            }
        }
        let nodes = &mut nodes[..count];
        nodes.sort_unstable_by_key(|n| n.map(|n| n.regs().first().map_or(0, |r| r.base())));
        if super::qemu_virt::VIRTIO_MMIO_PROBE_DESCENDING {
            nodes.reverse();
        }
        let mut found = 0;
        for node in nodes.iter().flatten() {
            match probe(node, found) {
                Ok(Some(disk)) => {
                    log::info!(
                        "disk{} on {}: {} sectors, features {:#x} (indirect {}, event_idx {}, {} in flight), irq {}, {:?}",
                        disk.index,
                        disk.name,
                        disk.config.capacity,
                        disk.features,
                        on_off(disk.indirect()),
                        on_off(disk.event_idx()),
                        disk.max_in_flight(),
                        disk.irq,
                        disk.dma_dev
                    );
                    found += 1;
                }
                Ok(None) => {}
                Err(e) => log::warn!("{}: {e}", node.name()),
            }
        }
        RETRY_WORK.call_once(|| SYSTEM_WQ.register("virtio-blk retry", retry_waiting).inspect_err(|e| log::warn!("virtio-blk: no retry work item: {e:?}")).ok());
        RECOVER_WORK.call_once(|| SYSTEM_WQ.register("virtio-blk recover", recover_disks).inspect_err(|e| log::warn!("virtio-blk: no recovery work item: {e:?}")).ok());
        if found > 0 {
            // Deadlines are checked on a slow background tick; callers waiting in task context
            // check them too (`wait_for`), so a lost tick hook only makes timeouts later.
            if !super::time::add_tick_hook(timeout_tick) {
                log::warn!("virtio-blk: no tick hook free; request timeouts checked only by waiters");
            }
            super::time::set_background_tick(TIMEOUT_TICK);
        }
        found
    })
}

/// Disk `n`, if probed.
pub fn disk(n: usize) -> Result<&'static Disk, BlkError> {
    probe_all();
    DISKS.get(n).and_then(spin::Once::get).ok_or(BlkError::NoSuchDisk(n))
}

/// The probed disks, in order.
pub fn disks() -> impl Iterator<Item = &'static Disk> {
    probe_all();
    DISKS.iter().map_while(spin::Once::get)
}

fn probe(node: &crate::dt::Device<'static>, index: usize) -> Result<Option<&'static Disk>, ProbeError> {
    let k = super::kernel();
    let Some(reg) = node.regs().first() else { return Err(ProbeError::DeviceTree("no reg")) };
    // SAFETY: the device tree says a virtio-mmio transport lives here; the final identity map
    // maps every device's `reg` as Device memory; this driver probes each node once
    // (`probe_all` runs once) and is the only code driving virtio-mmio transports.
    let transport = match unsafe { VirtioMmio::new(reg.base() as usize, reg.size() as usize) } {
        Ok(t) => t,
        Err(VirtioError::NoDevice) => return Ok(None),
        Err(e) => return Err(ProbeError::Virtio(e)),
    };
    if transport.device_type() != drivers::virtio::DeviceType::BLOCK {
        return Ok(None);
    }
    if index >= MAX_DISKS {
        return Err(ProbeError::TooManyDisks);
    }
    let irq = node
        .gic_interrupts()
        .map_err(|_| ProbeError::DeviceTree("bad interrupts"))?
        .next()
        .ok_or(ProbeError::DeviceTree("no interrupt"))?;
    let force = k.params.swiotlb.force == Some(true);
    let dma_dev = dma_device_from_dt(&k.dt, &k.memblock, node, force).map_err(ProbeError::Dma)?;
    let dma_dev: &'static DmaDevice = alloc::boxed::Box::leak(alloc::boxed::Box::new(dma_dev));
    // ACCESS_PLATFORM is accepted whenever offered (DeviceInit::begin); nothing more is
    // required. INDIRECT_DESC and RING_EVENT_IDX as the command line says. The
    // indirect tables come from the rings' coherent memory (a restricted pool's, if any).
    let mut declined = 0;
    if !k.params.blk_indirect {
        declined |= feature::INDIRECT_DESC;
    }
    if !k.params.blk_event_idx {
        declined |= feature::RING_EVENT_IDX;
    }
    let options = BlkOptions { required: 0, declined, max_segments: MAX_SEGMENTS as u16 };
    let blk = VirtioBlk::<_, QUEUE_SIZE>::with_options(transport, &CoherentRings { dev: dma_dev }, options)
        .map_err(ProbeError::Virtio)?;
    // Every request is one chain of at most 2 + MAX_SEGMENTS buffers; with indirect tables
    // it takes one ring descriptor, else at least three.
    let queue_size = usize::from(blk.queue().size());
    let max_in_flight = if blk.indirect() { queue_size } else { queue_size / 3 }.clamp(1, MAX_IN_FLIGHT);
    // The scratch page comes from ZONE_NORMAL like any kernel data: for a DMA-limited device
    // the headers and status bytes bounce too.
    let scratch = page_allocator()
        .lock()
        .alloc_pages(0, ZoneType::Normal, MigrateType::Unmovable)
        .or_else(|_| page_allocator().lock().alloc_pages(0, ZoneType::Dma, MigrateType::Unmovable))
        .map_err(|_| ProbeError::NoMemory)?;
    // Built inside `call_once`, in place as far as the compiler can: the in-flight table is
    // kilobytes, and each copy on the probe's stack counts (64 KiB in all).
    let disk = DISKS[index].call_once(|| Disk {
        index,
        name: node.name(),
        irq: irq.intid(),
        dma_dev,
        config: *blk.config(),
        features: blk.features(),
        stats: DiskStats { dma_lowest: AtomicU64::new(u64::MAX), ..Default::default() },
        scratch,
        default_timeout_ms: AtomicU64::new(DEFAULT_TIMEOUT.as_millis() as u64),
        retries: core::sync::atomic::AtomicU8::new(k.params.blk_retries),
        fail_reinits: core::sync::atomic::AtomicU32::new(0),
        inner: IrqSafeSpinLock::new(alloc::boxed::Box::new(DiskInner {
            blk,
            requests: InflightTable::with_limit(max_in_flight),
            callbacks: [None; MAX_IN_FLIGHT],
            recovery: Recovery::new(),
            reset_reason: drivers::virtio::BrokenReason::ResetIgnored,
            given_up: None,
            next_reinit: Duration::ZERO,
        })),
    });
    request_irq_spread(disk.irq, !irq.is_level(), handle_irq, index).map_err(ProbeError::Irq)?;
    disk.hint_inflight(k.params.blk_inflight_kib as usize * 1024);
    Ok(Some(disk))
}

/// The interrupt handler of every disk: [`IrqReturn::None`] if no disk on the line had raised
/// it, which `irq` counts towards disabling a stuck line (Linux `vm_interrupt`).
fn handle_irq(_ctx: &IrqContext<'_>, irq: u32) -> IrqReturn {
    let mut ret = IrqReturn::None;
    for disk in DISKS.iter().filter_map(spin::Once::get).filter(|d| d.irq == irq) {
        if disk.complete_from_irq() == IrqReturn::Handled {
            ret = IrqReturn::Handled;
        }
    }
    ret
}

impl Disk {
    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.config.capacity * u64::from(SECTOR_SIZE)
    }

    /// True if the device refuses writes (RO).
    pub fn readonly(&self) -> bool {
        self.features & drivers::virtio::blk::feature::RO != 0
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
        let mut max = dma().api.max_mapping_size(self.dma_dev).min(1 << 20);
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
    pub fn broken(&self) -> Option<drivers::virtio::BrokenReason> {
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

    /// Tells the DMA layer how much DMA this disk keeps in flight (task context): a DMA-limited
    /// disk that hints at least [`super::dma::DEVICE_POOL_HINT_THRESHOLD`] gets its own bounce
    /// pool (the seed's per-device pools), 0 gives it back. Its bounces try that pool first,
    /// then the default one. Logs what happened; a refusal is not an error for the disk.
    pub fn hint_inflight(&self, bytes: usize) -> Option<super::dma::HintOutcome> {
        match super::dma::set_inflight_hint(self.dma_dev, bytes) {
            Ok(outcome) => {
                if outcome != super::dma::HintOutcome::Unchanged {
                    log::info!("disk{}: hinted {} KiB in flight: {outcome:?}", self.index, bytes / 1024);
                }
                Some(outcome)
            }
            Err(e) => {
                log::info!("disk{}: in-flight hint of {} KiB refused: {e}", self.index, bytes / 1024);
                None
            }
        }
    }

    /// The timeout of requests queued without one (`submit_*`, `queue_*`).
    pub fn set_default_timeout(&self, timeout: Duration) {
        self.default_timeout_ms.store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    fn params(&self, kind: RequestType, sector: u64, data: Option<(PhysAddr, usize, DmaDirection)>, timeout: Option<Duration>) -> Params {
        let timeout = timeout.unwrap_or_else(|| Duration::from_millis(self.default_timeout_ms.load(Ordering::Relaxed)));
        let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        Params { kind, sector, data, deadline: super::time::uptime() + timeout, timeout_ms }
    }

    /// Submits a read of `len` bytes from `sector` into the physical buffer `buf`, now or not at
    /// all: [`BlkError::Busy`] if the table, the queue or the bounce pool is full.
    pub fn submit_read(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<Ticket, BlkError> {
        self.submit(self.params(RequestType::In, sector, Some((buf, len, DmaDirection::FromDevice)), None))
    }

    /// Submits a write of `len` bytes from the physical buffer `buf` to `sector` (see
    /// [`submit_read`](Self::submit_read)).
    pub fn submit_write(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<Ticket, BlkError> {
        self.submit(self.params(RequestType::Out, sector, Some((buf, len, DmaDirection::ToDevice)), None))
    }

    /// Submits a cache flush (see [`submit_read`](Self::submit_read)).
    pub fn submit_flush(&self) -> Result<Ticket, BlkError> {
        self.submit(self.params(RequestType::Flush, 0, None, None))
    }

    /// Queues a read: started now if there is room, else as soon as there is, from the
    /// interrupt handler when a completion frees room or from task context (the retry work item)
    /// when a mapping failed in interrupt context. [`BlkError::Busy`] only if the table is full.
    pub fn queue_read(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<Ticket, BlkError> {
        self.queue(self.params(RequestType::In, sector, Some((buf, len, DmaDirection::FromDevice)), None))
    }

    /// Queues a write (see [`queue_read`](Self::queue_read)).
    pub fn queue_write(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<Ticket, BlkError> {
        self.queue(self.params(RequestType::Out, sector, Some((buf, len, DmaDirection::ToDevice)), None))
    }

    /// Queues a flush (see [`queue_read`](Self::queue_read)).
    pub fn queue_flush(&self) -> Result<Ticket, BlkError> {
        self.queue(self.params(RequestType::Flush, 0, None, None))
    }

    /// Queues `request` (see [`queue_read`](Self::queue_read)); when it ends, `callback` gets
    /// `cookie` and the outcome (see [`CompletionFn`]) and the request's slot is free again: no
    /// ticket to collect. [`BlkError::Busy`] if the table is full (the callback is not called).
    pub fn queue_with_callback(&self, request: BlockRequest, callback: CompletionFn, cookie: u64) -> Result<(), BlkError> {
        let params = match request {
            BlockRequest::Read { sector, buf, len } => self.params(RequestType::In, sector, Some((buf, len, DmaDirection::FromDevice)), None),
            BlockRequest::Write { sector, buf, len } => self.params(RequestType::Out, sector, Some((buf, len, DmaDirection::ToDevice)), None),
            BlockRequest::Flush => self.params(RequestType::Flush, 0, None, None),
            BlockRequest::GetId { buf } => self.params(RequestType::GetId, 0, Some((buf, ID_BYTES as usize, DmaDirection::FromDevice)), None),
        };
        self.check(&params)?;
        {
            let mut inner = self.inner.lock();
            let ticket = inner.requests.reserve(Request { params, mapped: None, retries: 0 }).ok_or_else(|| self.refused(BlkError::Busy))?;
            inner.callbacks[ticket.slot()] = Some((callback, cookie, ticket));
        }
        self.start_waiting();
        self.deliver_callbacks();
        Ok(())
    }

    /// Calls the callbacks of requests that ended (with no lock held), freeing their slots.
    fn deliver_callbacks(&self) {
        let mut due: [Option<(CompletionFn, u64, Outcome)>; MAX_IN_FLIGHT] = [const { None }; MAX_IN_FLIGHT];
        {
            let mut inner = self.inner.lock();
            let DiskInner { requests, callbacks, .. } = &mut **inner;
            for (slot, entry) in callbacks.iter_mut().enumerate() {
                if let Some((callback, cookie, ticket)) = *entry {
                    if let Some(outcome) = requests.collect(ticket) {
                        *entry = None;
                        due[slot] = Some((callback, cookie, outcome));
                    }
                }
            }
        }
        for (callback, cookie, outcome) in due.into_iter().flatten() {
            callback(cookie, outcome);
        }
    }

    /// Reads the device's 20-byte identifier (virtio-blk GET_ID: QEMU gives the drive's
    /// `serial`), through a bounce like any read.
    pub fn get_id(&self, timeout: Duration) -> Result<[u8; ID_BYTES as usize], BlkError> {
        let page = page_allocator().lock().alloc_pages(0, ZoneType::Normal, MigrateType::Unmovable).map_err(|_| BlkError::Busy)?;
        let params = self.params(RequestType::GetId, 0, Some((page, ID_BYTES as usize, DmaDirection::FromDevice)), Some(timeout));
        let result = self.queue_patiently(params).and_then(|t| wait_for(self, t, super::time::uptime() + timeout));
        let mut id = [0u8; ID_BYTES as usize];
        RAM.read(page, &mut id);
        let _ = page_allocator().lock().free_pages(page, 0);
        result.map(|()| id)
    }

    /// Requests accepted but not yet handed to the device: waiting, or being mapped by a
    /// submitter (the retry work may hold one on another CPU at any moment).
    pub fn waiting(&self) -> usize {
        self.inner.lock().requests.not_started()
    }

    /// The outcome of a submitted request once the interrupt handler recorded it; `None` while
    /// waiting or in flight. A completed request keeps its slot until collected here: a caller
    /// that drops its ticket leaks the slot (like a blk-mq tag never ended).
    pub fn poll(&self, ticket: Ticket) -> Option<Result<(), BlkError>> {
        self.inner.lock().requests.collect(ticket)
    }

    /// Reads `len` bytes (whole sectors, any amount) from `sector` into `buf` and waits: split
    /// into requests of at most [`max_transfer`](Self::max_transfer) bytes, as many in flight
    /// as the table takes. Each request must complete within `timeout` of being queued. On an
    /// error the requests already queued are still waited for (none is abandoned), then the
    /// first error is returned.
    pub fn read(&self, sector: u64, buf: PhysAddr, len: usize, timeout: Duration) -> Result<(), BlkError> {
        self.transfer(RequestType::In, sector, buf, len, timeout)
    }

    /// Writes synchronously (see [`read`](Self::read)).
    pub fn write(&self, sector: u64, buf: PhysAddr, len: usize, timeout: Duration) -> Result<(), BlkError> {
        self.transfer(RequestType::Out, sector, buf, len, timeout)
    }

    /// Flushes synchronously (see [`read`](Self::read)).
    pub fn flush(&self, timeout: Duration) -> Result<(), BlkError> {
        let ticket = self.queue_patiently(self.params(RequestType::Flush, 0, None, Some(timeout)))?;
        wait_for(self, ticket, super::time::uptime() + timeout)
    }

    /// Queues `params`, idling while the table is full, until its deadline.
    fn queue_patiently(&self, params: Params) -> Result<Ticket, BlkError> {
        loop {
            match self.queue(params) {
                Err(BlkError::Busy) if super::time::uptime() < params.deadline => super::idle(),
                other => return other,
            }
        }
    }

    fn transfer(&self, kind: RequestType, sector: u64, buf: PhysAddr, len: usize, timeout: Duration) -> Result<(), BlkError> {
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
                match self.queue(params) {
                    Ok(t) => {
                        tickets[place] = Some(t);
                        offset += n;
                    }
                    Err(BlkError::Busy) if tickets.iter().any(Option::is_some) => break,
                    Err(BlkError::Busy) if super::time::uptime() < params.deadline => {
                        super::idle();
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
                super::idle();
            }
        }
    }

    fn note_dma(&self, addr: DmaAddr, len: usize) {
        self.stats.dma_lowest.fetch_min(addr, Ordering::Relaxed);
        self.stats.dma_highest.fetch_max(addr + len as u64 - 1, Ordering::Relaxed);
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
                Ok(ticket)
            }
            Err(e) => {
                // Now or not at all: the slot is free again, nothing was mapped or submitted.
                inner.requests.release_claimed(slot);
                Err(self.refused(e))
            }
        }
    }

    fn queue(&self, params: Params) -> Result<Ticket, BlkError> {
        self.check(&params)?;
        let ticket = self.inner.lock().requests.reserve(Request { params, mapped: None, retries: 0 }).ok_or_else(|| self.refused(BlkError::Busy))?;
        // Older waiting requests go first; this one is started now if there is room (the
        // outcome is in its slot either way).
        self.start_waiting();
        Ok(ticket)
    }

    /// Starts waiting requests, oldest first, until one finds no room; returns how many
    /// started. Each is claimed under the disk's lock and mapped with it dropped
    /// ([`start_claimed`](Self::start_claimed)): its bounce copies never run under the lock, in
    /// task context (interrupts stay enabled) or in the interrupt handler (task context on
    /// another CPU does not wait behind them). A request that finds no room goes back to
    /// waiting in its place; from interrupt context task context retries it.
    fn start_waiting(&self) -> usize {
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
        started
    }

    /// Maps request `slot`'s buffers (the bounce copies happen here). Needs no lock: the slot's
    /// scratch bytes belong to whoever holds the slot, and the DMA API is safe anywhere.
    fn map_request(&self, slot: usize, params: Params) -> Result<Mappings, BlkError> {
        let Params { kind, sector, data, .. } = params;
        let api = &dma().api;
        let dev = self.dma_dev;
        let header_pa = self.scratch + (slot * SCRATCH_SLOT) as u64;
        let status_pa = header_pa + STATUS_OFFSET as u64;
        RAM.write(header_pa, &RequestHeader { request_type: kind, sector }.to_bytes());
        RAM.write(status_pa, &[STATUS_UNWRITTEN]);

        let mut maps = Mappings { list: [(0, 0, DmaDirection::ToDevice); MAX_SEGMENTS + 2], len: 0 };
        let mut map = |pa: PhysAddr, len: usize, dir: DmaDirection, attrs: DmaAttrs| match api.map_single(dev, pa, len, dir, attrs) {
            Ok(addr) => {
                maps.push((addr, len, dir));
                Ok(())
            }
            Err(e) => {
                maps.undo(dev);
                Err(BlkError::from(e))
            }
        };
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
                map(buf + offset as u64, n, dir, attrs)?;
                offset += n;
            }
        }
        map(status_pa, 1, DmaDirection::FromDevice, NOATTR)?;
        Ok(maps)
    }

    /// Hands a mapped request to the device (under the disk's lock). On failure it unmaps
    /// everything (no copy back) and nothing reaches the device.
    fn hand_to_device(&self, inner: &mut DiskInner, params: Params, maps: Mappings) -> Result<Mapped, BlkError> {
        let dev = self.dma_dev;
        match inner.recovery.health() {
            // Being reset (or about to be: the queue is latched broken): the request waits
            // for the re-initialisation, which starts it.
            DiskHealth::Resetting => {
                maps.undo(dev);
                return Err(BlkError::Busy);
            }
            DiskHealth::Dead => {
                maps.undo(dev);
                return Err(BlkError::DiskDead);
            }
            DiskHealth::Live => {}
        }
        if inner.blk.broken().is_some() {
            maps.undo(dev);
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
        let sector = params.sector;
        let kicks_before = inner.blk.notifications();
        let submitted = match params.kind {
            RequestType::In => inner.blk.read_blocks_nb(sector, &request),
            RequestType::Out => inner.blk.write_blocks_nb(sector, &request),
            RequestType::Flush => inner.blk.flush_nb(&request),
            RequestType::GetId => inner.blk.get_id_nb(&request),
        };
        let token = submitted.inspect_err(|_| maps.undo(dev))?;
        let kicks = inner.blk.notifications() - kicks_before;
        if kicks > 0 {
            self.stats.kicks.fetch_add(kicks, Ordering::Relaxed);
        }
        for &(addr, len, _) in list {
            self.note_dma(addr, len);
        }
        for &(addr, _) in &segs[..nsegs] {
            let counter = if dma().api.is_swiotlb_buffer(dev, addr) { &self.stats.data_bounced } else { &self.stats.data_direct };
            counter.fetch_add(1, Ordering::Relaxed);
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
                    schedule_retry();
                } else if inner.requests.in_flight() == 0 && inner.recovery.health() == DiskHealth::Live {
                    schedule_retry(); // no completion will come to start it
                }
                // While the disk is resetting, the recovery work starts it.
            }
            Err(ref e) => {
                inner.requests.fail_claimed(slot, Err(e.clone()));
            }
        }
        result
    }

    /// Unmaps a finished request's buffers: header, data (for a read that bounced, the copy
    /// back into the caller's buffer happens here unless `skip_cpu_sync`), status. Returns the
    /// first error.
    fn unmap(&self, params: &Params, mapped: &Mapped, attrs: DmaAttrs) -> Result<(), BlkError> {
        let api = &dma().api;
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

    /// Fails what is past its deadline (interrupt context from the tick, or task context).
    pub fn check_timeouts(&self) {
        // What the device finished is not late, interrupt or none: look first.
        if self.inner.lock().requests.in_flight() > 0 {
            self.poll_used();
        }
        let mut inner = self.inner.lock();
        if inner.recovery.health() == DiskHealth::Resetting && super::time::uptime() >= inner.next_reinit {
            schedule_recovery(); // a failed re-initialisation is tried again from here
        }
        if inner.requests.in_flight() + inner.requests.waiting() > 0 {
            self.expire(&mut inner, super::time::uptime(), None);
            drop(inner);
            self.deliver_callbacks();
        }
    }

    /// Fails waiting requests whose deadline passed (or the one `force` names); if the device
    /// holds a request past its deadline (or `force`), it is not doing its job: reset it and
    /// take back what it held (Linux `blk_mq_timeout_work`, whose driver then resets the
    /// controller; see [`begin_reset`](Self::begin_reset)).
    fn expire(&self, inner: &mut DiskInner, now: Duration, force: Option<Ticket>) {
        let due = |slot: usize, r: &Request| r.params.deadline <= now || force.is_some_and(|t| t.slot() == slot);
        let mut slots = [0usize; MAX_IN_FLIGHT];
        let mut n = 0;
        for (slot, r) in inner.requests.waiting_requests() {
            if due(slot, &r) {
                slots[n] = slot;
                n += 1;
            }
        }
        for &slot in &slots[..n] {
            inner.requests.fail_waiting(slot, Err(BlkError::Timeout));
            self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
        }
        if inner.recovery.health() != DiskHealth::Live {
            // Reset already: what the device still holds (a reset it ignored) is taken back by
            // the recovery work once a reset completes, or failed when the disk is declared dead.
            return;
        }
        let Some((slot, late)) = inner.requests.in_flight_requests().find(|(slot, r)| due(*slot, r)) else { return };
        let tag = late.mapped.map_or(0, |m| m.tag);
        let given_up = force.filter(|t| t.slot() == slot).map(|t| t.slot());
        self.begin_reset(inner, drivers::virtio::BrokenReason::RequestTimedOut { id: tag }, given_up);
    }

    /// The device timed out or broke the protocol (any context, the disk's lock held): reset it
    /// now (bounded polling; afterwards it touches no buffer, virtio 1.2 §2.1.2), take back
    /// every request it held ([`take_back`](Self::take_back)) and have the recovery work
    /// initialise it again in task context. If the device ignores the reset, its requests stay
    /// its own (it may still write into their buffers) until a later reset completes.
    fn begin_reset(&self, inner: &mut DiskInner, reason: drivers::virtio::BrokenReason, given_up: Option<usize>) {
        let error = inner.blk.abort(reason);
        self.stats.aborts.fetch_add(1, Ordering::Relaxed);
        let reset = !matches!(error, VirtioError::DeviceBroken(drivers::virtio::BrokenReason::ResetIgnored));
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
            schedule_recovery();
        }
    }

    /// After a completed reset (the disk's lock held, any context): every request the device
    /// held is unmapped without a copy back (the caller's buffer keeps what it held, not a
    /// partial transfer; a bounce slot, device-pool slot or page pin is released here, once),
    /// then requeued in its old place with a new deadline while its retry budget lasts (Linux
    /// `blk_mq_requeue_request`), else failed: with [`BlkError::Timeout`] if its deadline
    /// passed, else with the reason the device was reset. A request whose waiter gave up is
    /// failed with `Timeout`. One request at a time: no copy of the table on the stack.
    fn take_back(&self, inner: &mut DiskInner) {
        let budget = RetryBudget { max_retries: self.retries.load(Ordering::Relaxed) };
        let now = super::time::uptime();
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
    /// waiting requests; on failure try again later, and after [`MAX_FAILED_REINITS`] failures
    /// in a row declare the disk dead and fail every request. Returns true if it should run
    /// again (the disk is still resetting).
    fn recover(&self) -> bool {
        let mut inner = self.inner.lock();
        let now = super::time::uptime();
        if inner.recovery.health() != DiskHealth::Resetting || now < inner.next_reinit {
            return inner.recovery.health() == DiskHealth::Resetting;
        }
        // Under the disk's lock (IRQs masked on this CPU): the reset polls a bounded number of
        // times and nothing is allocated (the rings are rebuilt where they are).
        let mut result = inner.blk.reinit();
        let inject = self.fail_reinits.load(Ordering::Relaxed);
        if result.is_ok() && inject > 0 {
            self.fail_reinits.store(inject - 1, Ordering::Relaxed);
            let _ = inner.blk.abort(drivers::virtio::BrokenReason::ReinitFailed);
            result = Err(VirtioError::DeviceBroken(drivers::virtio::BrokenReason::ReinitFailed));
        }
        let reset_done = !matches!(result, Err(VirtioError::DeviceBroken(drivers::virtio::BrokenReason::ResetIgnored)));
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
            self.start_waiting();
        }
        self.deliver_callbacks();
        health == DiskHealth::Resetting
    }

    /// A dead disk: every request fails with [`BlkError::DiskDead`]. Requests a device that
    /// ignored its reset still holds keep their mappings (it may still write into them; their
    /// bounce slots are never handed out again), which is logged.
    fn fail_everything(&self, inner: &mut DiskInner) {
        let held = inner.requests.in_flight();
        if held > 0 {
            log::error!("{}: {held} requests' buffers stay mapped: the device never confirmed a reset", self.name);
        }
        inner.requests.take_back(|_, _| TakeBack::End(Err(BlkError::DiskDead)));
        while let Some((slot, _)) = inner.requests.oldest_waiting() {
            inner.requests.fail_waiting(slot, Err(BlkError::DiskDead));
        }
    }

    fn refused(&self, e: BlkError) -> BlkError {
        if e == BlkError::Busy {
            self.stats.busy.fetch_add(1, Ordering::Relaxed);
        }
        e
    }

    /// The interrupt: ack, then finish every request the device used. Handled if the device
    /// had raised it (an ISR bit) or left something in the used ring. Linux's `vring_interrupt`
    /// answers `IRQ_NONE` to an empty ring even with the ISR bit set; here the tick's poll may
    /// have emptied the ring first, so the ISR bit alone counts as handled.
    fn complete_from_irq(&self) -> IrqReturn {
        self.stats.irqs.fetch_add(1, Ordering::Relaxed);
        self.stats.irq_cpus.fetch_or(1 << super::smp::cpu_id(), Ordering::Relaxed);
        let isr = self.inner.lock().blk.ack_interrupt();
        let completed = self.complete_used();
        self.stats.completed_in_irq.fetch_add(completed as u64, Ordering::Relaxed);
        if isr.0 != 0 || completed > 0 {
            IrqReturn::Handled
        } else {
            self.stats.irqs_unhandled.fetch_add(1, Ordering::Relaxed);
            IrqReturn::None
        }
    }

    /// The tick's poll (interrupt context; or a waiter checking deadlines): finishes what the device used without an interrupt
    /// reaching us, its line masked as stuck (`irq`'s "nobody cared") or the device silent, so
    /// that such a request completes before its deadline times it out (NVMe's `nvme_timeout`
    /// polls its completion queue before it resets, "completion polled"; we look every tick).
    fn poll_used(&self) {
        let completed = self.complete_used();
        self.stats.completed_by_poll.fetch_add(completed as u64, Ordering::Relaxed);
    }

    /// Finishes every request the device used (virtio 1.2 §2.7.14) and returns how many, in
    /// interrupt context (the handler, the tick's poll). Each is taken from the device under
    /// the disk's lock and unmapped with the lock dropped: the copy back of a bounced read (up
    /// to a segment per data buffer) never holds up task context submitting to this disk on
    /// another CPU (issue 13).
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
            RAM.read(self.scratch + (slot * SCRATCH_SLOT + STATUS_OFFSET) as u64, &mut status);
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
        // Completions freed descriptors and bounce slots: start what waits for them.
        if self.inner.lock().requests.waiting() > 0 {
            self.start_waiting();
        }
        self.deliver_callbacks();
        completed
    }
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

static RETRY_WORK: spin::Once<Option<WorkId>> = spin::Once::new();
static RECOVER_WORK: spin::Once<Option<WorkId>> = spin::Once::new();

/// Asks task context to re-initialise reset disks (safe in interrupt context: one atomic OR).
fn schedule_recovery() {
    if let Some(Some(id)) = RECOVER_WORK.get() {
        SYSTEM_WQ.schedule(*id);
    }
}

/// The recovery work item (task context, never in the interrupt handler: Linux runs
/// `virtblk_restore` from a work queue too): re-initialises every disk that is resetting. One
/// that fails is tried again from the timeout tick after a back-off.
fn recover_disks() {
    debug_assert!(!crate::arch::in_interrupt());
    for disk in DISKS.iter().filter_map(spin::Once::get) {
        disk.recover();
    }
}

/// Asks task context to retry waiting requests (safe in interrupt context: one atomic OR).
fn schedule_retry() {
    if let Some(Some(id)) = RETRY_WORK.get() {
        SYSTEM_WQ.schedule(*id);
    }
}

/// The retry work item (task context): starts waiting requests that the interrupt handler
/// could not map. It runs again while a disk has requests waiting and none in flight (no
/// completion interrupt would retry them); with requests in flight the next completion does.
fn retry_waiting() {
    let mut again = false;
    for disk in DISKS.iter().filter_map(spin::Once::get) {
        let started = disk.start_waiting();
        disk.stats.started_by_work.fetch_add(started as u64, Ordering::Relaxed);
        let inner = disk.inner.lock();
        // A resetting disk's requests are started by the recovery work.
        again |= inner.requests.waiting() > 0 && inner.requests.in_flight() == 0 && inner.recovery.health() == DiskHealth::Live;
        drop(inner);
        disk.deliver_callbacks();
    }
    if again {
        schedule_retry();
    }
}

/// Checks every disk's deadlines on the background tick (interrupt context; no allocation, a
/// bounded scan of each disk's table).
fn timeout_tick(_ctx: &IrqContext<'_>) {
    for disk in DISKS.iter().filter_map(spin::Once::get) {
        disk.check_timeouts();
    }
}

/// Idles until `ticket`'s request has an outcome and returns it. If `deadline` passes first,
/// the request is timed out now (if the device holds it, the device is reset and all its
/// requests fail: see [`Disk::check_timeouts`]) and the outcome is [`BlkError::Timeout`]. The
/// request is never abandoned: its slot and mappings are always taken back.
pub fn wait_for(disk: &Disk, ticket: Ticket, deadline: Duration) -> Result<(), BlkError> {
    loop {
        let now = super::time::uptime();
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
        super::idle(); // the completion interrupt, or at worst the background tick, wakes us
    }
}

/// Reads the whole of `disk` in chunks of `chunk` bytes into `buf` (physical, at least `chunk`
/// bytes; above the DMA window it bounces) and returns (bytes, CRC-32).
pub fn read_verify(disk: &Disk, buf: PhysAddr, chunk: usize, timeout: Duration) -> Result<(u64, u32), BlkError> {
    let chunk = chunk.min(disk.max_transfer());
    let size = disk.size_bytes();
    let mut crc = crate::crc32::Crc32::new();
    let mut bytes = [0u8; 4096];
    let mut offset = 0u64;
    while offset < size {
        let len = (size - offset).min(chunk as u64) as usize;
        disk.read(offset / u64::from(SECTOR_SIZE), buf, len, timeout)?;
        let mut done = 0;
        while done < len {
            let n = (len - done).min(bytes.len());
            RAM.read(buf + done as u64, &mut bytes[..n]);
            crc.update(&bytes[..n]);
            done += n;
        }
        offset += len as u64;
    }
    Ok((size, crc.finish()))
}
