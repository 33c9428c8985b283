//! Virtio block disks on the machine (Linux: `drivers/block/virtio_blk.c`): found in the device
//! tree, driven from their interrupt handlers, every byte the device touches going through the
//! DMA API.
//!
//! - Probe ([`probe_all`], task context): every enabled `virtio,mmio` node with a block device
//!   gets its `DmaDevice` from the device tree, its ring memory from `dma_alloc_coherent` (from
//!   the restricted pool for a device behind one), its features negotiated (VERSION_1, and
//!   ACCESS_PLATFORM whenever offered) and its SPI registered.
//! - Submit ([`Disk::submit_read`], [`Disk::submit_write`], [`Disk::submit_flush`], task
//!   context): the 16-byte header and the status byte live in the request's slot of a per-disk
//!   scratch page; header, data and status are each mapped with their direction (bounced if the
//!   device cannot reach them), and the chain is handed to the device. A full table, queue or
//!   bounce pool is [`BlkError::Busy`]: nothing was submitted, nothing is left mapped.
//! - Queue ([`Disk::queue_read`], ...): the same, but a request that finds no room waits in its
//!   slot and is started later, oldest first: by the interrupt handler once completions free
//!   room (mapping in interrupt context), or, if a mapping fails there, by a work item in task
//!   context (Linux: `BLK_STS_RESOURCE` and a delayed queue run). Busy only if the table is full.
//! - Complete (the interrupt handler): ack, pop every used chain, unmap (for a read the bounce
//!   copy back happens here), read the status byte and record the outcome in the fixed-size
//!   in-flight table ([`crate::block::InflightTable`]), then start waiting requests. No
//!   allocation, bounded work.
//! - Collect ([`Disk::poll`]), or wait ([`Disk::read`], [`Disk::write`], [`Disk::flush`]: queue,
//!   then `idle()` until the handler recorded the outcome, with a timeout).

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use boot::exception::IrqContext;
use drivers::virtio::blk::{
    BlkConfig, DmaSegment, RequestDma, RequestHeader, RequestType, VirtioBlk, HEADER_SIZE,
    SECTOR_SIZE, STATUS_UNWRITTEN,
};
use drivers::virtio::mmio::VirtioMmio;
use drivers::virtio::{feature, Error as VirtioError, Transport, VirtioDma};

use super::dma::{dma, dma_device_from_dt, DmaSetupError, RAM};
use super::irq::{request_irq, IrqError};
use super::mm::page_allocator;
use crate::block::{InflightTable, Ticket};
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
/// Requests in flight per disk: each takes three descriptors (header, one data segment, status).
pub const MAX_IN_FLIGHT: usize = QUEUE_SIZE / 3;
/// Disks the kernel drives.
pub const MAX_DISKS: usize = 4;
/// virtio-mmio nodes looked at (QEMU virt has 32).
const MAX_TRANSPORTS: usize = 32;
/// Bytes of a request's slot in the scratch page: the header, then the status byte.
const SCRATCH_SLOT: usize = 32;
const STATUS_OFFSET: usize = HEADER_SIZE as usize;
const _: () = assert!(MAX_IN_FLIGHT * SCRATCH_SLOT <= PAGE_SIZE as usize);

const NOATTR: DmaAttrs = DmaAttrs { skip_cpu_sync: false };

/// Errors of the block layer on the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlkError {
    /// The device, or the virtio protocol, refused or failed (see the virtio error).
    Virtio(VirtioError),
    /// The DMA API refused a mapping for a reason other than a full pool.
    Dma(DmaError),
    /// Out of request slots, descriptors or bounce slots: nothing was submitted, retry later.
    Busy,
    /// The request did not complete in time.
    Timeout,
    /// A buffer that is empty, not whole sectors, or larger than one mapping may be.
    BadBuffer { len: usize, max: usize },
    /// No disk with that index.
    NoSuchDisk(usize),
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
            // The pool is full now; it drains as requests complete (and the manager may grow
            // it): the request is retryable, like Linux's BLK_STS_RESOURCE.
            DmaError::Swiotlb(SwiotlbError::BufferFull { .. }) => BlkError::Busy,
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
}

/// A request in the table: what it asks for and, once started, its mappings.
#[derive(Clone, Copy, Debug)]
struct Request {
    params: Params,
    mapped: Option<Mapped>,
}

/// What the handler needs to finish a request: its mappings.
#[derive(Clone, Copy, Debug)]
struct Mapped {
    /// The device's name for the chain (head descriptor).
    tag: u16,
    header: DmaAddr,
    status: DmaAddr,
    /// (DMA address, length, direction) of the data; `None` for a flush.
    data: Option<(DmaAddr, usize, DmaDirection)>,
}

type Outcome = Result<(), BlkError>;

struct DiskInner {
    blk: VirtioBlk<VirtioMmio, QUEUE_SIZE>,
    requests: InflightTable<Request, Outcome, MAX_IN_FLIGHT, QUEUE_SIZE>,
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
    /// Submissions refused as [`BlkError::Busy`].
    pub busy: AtomicU64,
    /// Waiting requests started by the interrupt handler (mapped in interrupt context).
    pub started_in_irq: AtomicU64,
    /// Times the interrupt handler could not map a waiting request and handed it to task context.
    pub deferred_to_task: AtomicU64,
    /// Waiting requests started by the retry work item (task context).
    pub started_by_work: AtomicU64,
    /// Data buffers that were bounced.
    pub data_bounced: AtomicU64,
    /// Data buffers the device reached directly.
    pub data_direct: AtomicU64,
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
    inner: IrqSafeSpinLock<DiskInner>,
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
                        "disk{} on {}: {} sectors, features {:#x}, irq {}, {:?}",
                        disk.index,
                        disk.name,
                        disk.config.capacity,
                        disk.features,
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
    // ACCESS_PLATFORM is accepted whenever offered (DeviceInit::begin); nothing more is required.
    let blk = VirtioBlk::<_, QUEUE_SIZE>::new(transport, &CoherentRings { dev: dma_dev }, 0)
        .map_err(ProbeError::Virtio)?;
    // The scratch page comes from ZONE_NORMAL like any kernel data: for a DMA-limited device
    // the headers and status bytes bounce too.
    let scratch = page_allocator()
        .lock()
        .alloc_pages(0, ZoneType::Normal, MigrateType::Unmovable)
        .or_else(|_| page_allocator().lock().alloc_pages(0, ZoneType::Dma, MigrateType::Unmovable))
        .map_err(|_| ProbeError::NoMemory)?;
    let disk = Disk {
        index,
        name: node.name(),
        irq: irq.intid(),
        dma_dev,
        config: *blk.config(),
        features: blk.features(),
        stats: DiskStats { dma_lowest: AtomicU64::new(u64::MAX), ..Default::default() },
        scratch,
        inner: IrqSafeSpinLock::new(DiskInner { blk, requests: InflightTable::new() }),
    };
    let disk = DISKS[index].call_once(|| disk);
    request_irq(disk.irq, !irq.is_level(), handle_irq).map_err(ProbeError::Irq)?;
    Ok(Some(disk))
}

/// The interrupt handler of every disk.
fn handle_irq(_ctx: &IrqContext<'_>, irq: u32) {
    for disk in DISKS.iter().filter_map(spin::Once::get).filter(|d| d.irq == irq) {
        disk.complete_from_irq();
    }
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

    /// The largest data buffer of one request: one mapping (a bounce is at most one SWIOTLB
    /// segment) and the device's SIZE_MAX, in whole sectors.
    pub fn max_transfer(&self) -> usize {
        let mut max = dma().api.max_mapping_size(self.dma_dev).min(1 << 20);
        if let Some(size_max) = self.config.size_max.filter(|m| *m != 0) {
            max = max.min(size_max as usize);
        }
        max / SECTOR_SIZE as usize * SECTOR_SIZE as usize
    }

    /// The DMA addresses of the request queue's descriptor, driver and device rings.
    pub fn ring_dma_addresses(&self) -> (u64, u64, u64) {
        self.inner.lock().blk.queue().ring_dma_addresses()
    }

    /// Requests the device holds.
    pub fn in_flight(&self) -> usize {
        self.inner.lock().requests.in_flight()
    }

    /// Submits a read of `len` bytes from `sector` into the physical buffer `buf`, now or not at
    /// all: [`BlkError::Busy`] if the table, the queue or the bounce pool is full.
    pub fn submit_read(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<Ticket, BlkError> {
        self.submit(Params { kind: RequestType::In, sector, data: Some((buf, len, DmaDirection::FromDevice)) })
    }

    /// Submits a write of `len` bytes from the physical buffer `buf` to `sector` (see
    /// [`submit_read`](Self::submit_read)).
    pub fn submit_write(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<Ticket, BlkError> {
        self.submit(Params { kind: RequestType::Out, sector, data: Some((buf, len, DmaDirection::ToDevice)) })
    }

    /// Submits a cache flush (see [`submit_read`](Self::submit_read)).
    pub fn submit_flush(&self) -> Result<Ticket, BlkError> {
        self.submit(Params { kind: RequestType::Flush, sector: 0, data: None })
    }

    /// Queues a read: started now if there is room, else as soon as there is, from the
    /// interrupt handler when a completion frees room or from task context (the retry work item)
    /// when a mapping failed in interrupt context. [`BlkError::Busy`] only if the table is full.
    pub fn queue_read(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<Ticket, BlkError> {
        self.queue(Params { kind: RequestType::In, sector, data: Some((buf, len, DmaDirection::FromDevice)) })
    }

    /// Queues a write (see [`queue_read`](Self::queue_read)).
    pub fn queue_write(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<Ticket, BlkError> {
        self.queue(Params { kind: RequestType::Out, sector, data: Some((buf, len, DmaDirection::ToDevice)) })
    }

    /// Queues a flush (see [`queue_read`](Self::queue_read)).
    pub fn queue_flush(&self) -> Result<Ticket, BlkError> {
        self.queue(Params { kind: RequestType::Flush, sector: 0, data: None })
    }

    /// Requests accepted but not yet handed to the device.
    pub fn waiting(&self) -> usize {
        self.inner.lock().requests.waiting()
    }

    /// The outcome of a submitted request once the interrupt handler recorded it; `None` while
    /// waiting or in flight. A completed request keeps its slot until collected here: a caller
    /// that drops its ticket leaks the slot (like a blk-mq tag never ended).
    pub fn poll(&self, ticket: Ticket) -> Option<Result<(), BlkError>> {
        self.inner.lock().requests.collect(ticket)
    }

    /// Reads synchronously: queues the request (idling while the table is full), then idles
    /// until the interrupt handler completes it or `timeout` passes.
    pub fn read(&self, sector: u64, buf: PhysAddr, len: usize, timeout: Duration) -> Result<(), BlkError> {
        self.wait(timeout, || self.queue_read(sector, buf, len))
    }

    /// Writes synchronously (see [`read`](Self::read)).
    pub fn write(&self, sector: u64, buf: PhysAddr, len: usize, timeout: Duration) -> Result<(), BlkError> {
        self.wait(timeout, || self.queue_write(sector, buf, len))
    }

    /// Flushes synchronously (see [`read`](Self::read)).
    pub fn flush(&self, timeout: Duration) -> Result<(), BlkError> {
        self.wait(timeout, || self.queue_flush())
    }

    fn wait(&self, timeout: Duration, mut submit: impl FnMut() -> Result<Ticket, BlkError>) -> Result<(), BlkError> {
        let deadline = super::time::uptime() + timeout;
        let ticket = loop {
            match submit() {
                Err(BlkError::Busy) if super::time::uptime() < deadline => super::idle(),
                other => break other?,
            }
        };
        wait_for(self, ticket, deadline)
    }

    fn note_dma(&self, addr: DmaAddr, len: usize) {
        self.stats.dma_lowest.fetch_min(addr, Ordering::Relaxed);
        self.stats.dma_highest.fetch_max(addr + len as u64 - 1, Ordering::Relaxed);
    }

    /// Refuses what no device could do, before anything is accepted.
    fn check(&self, params: &Params) -> Result<(), BlkError> {
        if let Some((_, len, _)) = params.data {
            let max = self.max_transfer();
            if len == 0 || len > max || len % SECTOR_SIZE as usize != 0 {
                return Err(BlkError::BadBuffer { len, max });
            }
        }
        Ok(())
    }

    fn submit(&self, params: Params) -> Result<Ticket, BlkError> {
        self.check(&params)?;
        let mut inner = self.inner.lock();
        let Some(slot) = inner.requests.free_slot() else {
            return Err(self.refused(BlkError::Busy));
        };
        let mapped = self.map_and_submit(&mut inner, slot, params).map_err(|e| self.refused(e))?;
        // The slot was free and the device just gave out this head: `start` cannot refuse.
        inner.requests.start(slot, mapped.tag, Request { params, mapped: Some(mapped) }).ok_or(BlkError::Virtio(VirtioError::BadToken))
    }

    fn queue(&self, params: Params) -> Result<Ticket, BlkError> {
        self.check(&params)?;
        let mut inner = self.inner.lock();
        let ticket = inner.requests.reserve(Request { params, mapped: None }).ok_or_else(|| self.refused(BlkError::Busy))?;
        self.start_waiting(&mut inner);
        Ok(ticket)
    }

    /// Starts waiting requests, oldest first, until one finds no room. Returns how many are
    /// still waiting. In interrupt context a request that cannot be mapped is handed to task
    /// context (the retry work item) if no completion will come to retry it.
    fn start_waiting(&self, inner: &mut DiskInner) -> usize {
        while let Some((slot, request)) = inner.requests.oldest_waiting() {
            match self.map_and_submit(inner, slot, request.params) {
                Ok(mapped) => {
                    let started = inner.requests.start(slot, mapped.tag, Request { mapped: Some(mapped), ..request });
                    debug_assert!(started.is_some());
                    if crate::arch::in_interrupt() {
                        self.stats.started_in_irq.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(BlkError::Busy) => {
                    self.refused(BlkError::Busy);
                    if crate::arch::in_interrupt() {
                        // Linux would return BLK_STS_RESOURCE and rerun the queue later; the
                        // request keeps its slot and task context retries it.
                        self.stats.deferred_to_task.fetch_add(1, Ordering::Relaxed);
                        schedule_retry();
                    } else if inner.requests.in_flight() == 0 {
                        // No completion will come to retry it: the work item polls.
                        schedule_retry();
                    }
                    break;
                }
                Err(e) => {
                    inner.requests.fail_waiting(slot, Err(e));
                }
            }
        }
        inner.requests.waiting()
    }

    /// Maps a request's header, data and status and hands the chain to the device. On failure
    /// nothing reaches the device and nothing stays mapped.
    fn map_and_submit(&self, inner: &mut DiskInner, slot: usize, params: Params) -> Result<Mapped, BlkError> {
        let Params { kind, sector, data } = params;
        let api = &dma().api;
        let header_pa = self.scratch + (slot * SCRATCH_SLOT) as u64;
        let status_pa = header_pa + STATUS_OFFSET as u64;
        RAM.write(header_pa, &RequestHeader { request_type: kind, sector }.to_bytes());
        RAM.write(status_pa, &[STATUS_UNWRITTEN]);

        let dev = self.dma_dev;
        let header = api.map_single(dev, header_pa, HEADER_SIZE as usize, DmaDirection::ToDevice, NOATTR)?;
        let undo_header = || {
            let _ = api.unmap_single(dev, header, HEADER_SIZE as usize, DmaDirection::ToDevice, DmaAttrs { skip_cpu_sync: true });
        };
        let data_dma = match data {
            Some((buf, len, dir)) => match api.map_single(dev, buf, len, dir, NOATTR) {
                Ok(d) => Some((d, len, dir)),
                Err(e) => {
                    undo_header();
                    return Err(e.into());
                }
            },
            None => None,
        };
        let undo_data = || {
            if let Some((d, len, dir)) = data_dma {
                let _ = api.unmap_single(dev, d, len, dir, DmaAttrs { skip_cpu_sync: true });
            }
        };
        let status = match api.map_single(dev, status_pa, 1, DmaDirection::FromDevice, NOATTR) {
            Ok(s) => s,
            Err(e) => {
                undo_data();
                undo_header();
                return Err(e.into());
            }
        };
        let segment = data_dma.map(|(d, len, _)| DmaSegment { dma_addr: d, len: len as u32 });
        let request = RequestDma { header, data: segment.as_slice(), status };
        let submitted = match kind {
            RequestType::In => inner.blk.read_blocks_nb(sector, &request),
            RequestType::Out => inner.blk.write_blocks_nb(sector, &request),
            RequestType::Flush => inner.blk.flush_nb(&request),
            RequestType::GetId => Err(VirtioError::Unsupported),
        };
        let token = match submitted {
            Ok(t) => t,
            Err(e) => {
                let _ = api.unmap_single(dev, status, 1, DmaDirection::FromDevice, DmaAttrs { skip_cpu_sync: true });
                undo_data();
                undo_header();
                return Err(e.into());
            }
        };
        self.note_dma(header, HEADER_SIZE as usize);
        self.note_dma(status, 1);
        if let Some((d, len, _)) = data_dma {
            self.note_dma(d, len);
            let bounced = api.is_swiotlb_buffer(dev, d);
            let counter = if bounced { &self.stats.data_bounced } else { &self.stats.data_direct };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.submitted.fetch_add(1, Ordering::Relaxed);
        Ok(Mapped { tag: token.0, header, status, data: data_dma })
    }

    fn refused(&self, e: BlkError) -> BlkError {
        if e == BlkError::Busy {
            self.stats.busy.fetch_add(1, Ordering::Relaxed);
        }
        e
    }

    /// Interrupt context: ack, then finish every request the device used (virtio 1.2 §2.7.14).
    fn complete_from_irq(&self) {
        self.stats.irqs.fetch_add(1, Ordering::Relaxed);
        let api = &dma().api;
        let mut inner = self.inner.lock();
        inner.blk.ack_interrupt();
        // Bounded: each pop retires one of at most QUEUE_SIZE chains in flight.
        for _ in 0..QUEUE_SIZE {
            let completion = match inner.blk.pop_completed() {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    log::error!("{}: {e}", self.name);
                    break;
                }
            };
            let Some((slot, Request { mapped: Some(mapped), .. })) = inner.requests.lookup(completion.token().0) else {
                log::error!("{}: completion for unknown chain {}", self.name, completion.token().0);
                continue;
            };
            let dev = self.dma_dev;
            let mut outcome: Outcome = Ok(());
            let mut keep_first = |r: Result<(), DmaError>| {
                if let (Err(e), Ok(())) = (r, &outcome) {
                    outcome = Err(BlkError::Dma(e));
                }
            };
            keep_first(api.unmap_single(dev, mapped.header, HEADER_SIZE as usize, DmaDirection::ToDevice, NOATTR));
            if let Some((d, len, dir)) = mapped.data {
                // For a read that bounced, this is the copy back into the caller's buffer.
                keep_first(api.unmap_single(dev, d, len, dir, NOATTR));
            }
            keep_first(api.unmap_single(dev, mapped.status, 1, DmaDirection::FromDevice, NOATTR));
            let mut status = [STATUS_UNWRITTEN];
            RAM.read(self.scratch + (slot * SCRATCH_SLOT + STATUS_OFFSET) as u64, &mut status);
            let device_says = inner.blk.complete(completion, status[0]).map_err(BlkError::Virtio);
            let outcome = outcome.and(device_says);
            inner.requests.finish(slot, outcome);
            self.stats.completed_in_irq.fetch_add(1, Ordering::Relaxed);
        }
        // Completions freed descriptors and bounce slots: start what waits for them.
        if inner.requests.waiting() > 0 {
            self.start_waiting(&mut inner);
        }
    }
}

static RETRY_WORK: spin::Once<Option<WorkId>> = spin::Once::new();

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
        let mut inner = disk.inner.lock();
        let before = inner.requests.waiting();
        let left = disk.start_waiting(&mut inner);
        disk.stats.started_by_work.fetch_add((before - left) as u64, Ordering::Relaxed);
        again |= left > 0 && inner.requests.in_flight() == 0;
    }
    if again {
        schedule_retry();
    }
}

/// Idles until `ticket`'s request completes or `deadline` passes.
pub fn wait_for(disk: &Disk, ticket: Ticket, deadline: Duration) -> Result<(), BlkError> {
    loop {
        if let Some(outcome) = disk.poll(ticket) {
            return outcome;
        }
        if super::time::uptime() >= deadline {
            return Err(BlkError::Timeout);
        }
        super::idle();
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
