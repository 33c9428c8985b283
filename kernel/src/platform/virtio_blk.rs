//! Virtio block disks on the machine (Linux: `drivers/block/virtio_blk.c`'s probe): found in
//! the device tree, their interrupts wired, each driven by the request engine
//! ([`crate::block::virtio_blk`]: submission, completion, deadlines, reset and recovery).
//!
//! - Probe ([`probe_all`], task context): every enabled `virtio,mmio` node with a block device
//!   gets its `DmaDevice` from the device tree, its ring memory from `dma_alloc_coherent` (from
//!   the restricted pool for a device behind one), its features negotiated (VERSION_1, and
//!   ACCESS_PLATFORM whenever offered; INDIRECT_DESC only with `blk_indirect=on` and
//!   RING_EVENT_IDX only with `blk_event_idx=on`: neither paid off in the benchmark) and its SPI
//!   registered. With indirect descriptors each request takes one ring descriptor (its buffers
//!   in that head's indirect table, in the rings' coherent memory), so the whole queue
//!   ([`QUEUE_SIZE`]) can be in flight; without, a third of it.
//! - The disks ([`disk`], [`disks`]): the engine's [`Disk`] over virtio-mmio, with [`Board`]
//!   as its [`BlkEnv`]: uptime, idling, the CPU id, and the two work items on the system work
//!   queue (retry: start requests the interrupt handler could not map; recover: re-initialise
//!   reset disks, Linux `virtblk_restore`).
//! - The interrupt ([`handle_irq`]) and the background tick ([`TIMEOUT_TICK`]) call the engine:
//!   [`Disk::complete_from_irq`](crate::block::virtio_blk::Disk::complete_from_irq) and
//!   [`Disk::check_timeouts`](crate::block::virtio_blk::Disk::check_timeouts).

use core::fmt;
use core::ptr::NonNull;
use core::time::Duration;

use boot::exception::IrqContext;
use drivers::virtio::blk::{BlkOptions, VirtioBlk};
use drivers::virtio::mmio::VirtioMmio;
use drivers::virtio::{feature, Error as VirtioError, Transport, VirtioDma};

use super::dma::{dma, dma_device_from_dt, DmaSetupError};
use super::irq::{request_irq_spread, IrqError, IrqReturn};
use super::mm::page_allocator;
use super::phys::ram;
use crate::block::virtio_blk::{BlkEnv, DiskParts};
use crate::dma::device::DmaDevice;
use crate::mm::page_alloc::{MigrateType, ZoneType};
use crate::mm::{PhysAddr, PAGE_SIZE};
use crate::work::{WorkId, SYSTEM_WQ};

pub use crate::block::virtio_blk::{
    read_verify, wait_for, BlkError, BlockRequest, CompletionFn, DiskStats, DEFAULT_TIMEOUT, DIRECT_MAX_IN_FLIGHT, MAX_IN_FLIGHT,
    MAX_SEGMENTS, QUEUE_SIZE,
};

/// A virtio block disk of the machine: the request engine over virtio-mmio, on this board.
pub type Disk = crate::block::virtio_blk::Disk<'static, VirtioMmio, Board>;

/// A batch of requests to one of the machine's disks, notified once when it ends
/// ([`Disk::plug`]).
pub type Plug<'d> = crate::block::virtio_blk::Plug<'d, 'static, VirtioMmio, Board>;

/// The background tick on which request deadlines are checked (interrupt context).
pub const TIMEOUT_TICK: Duration = Duration::from_millis(10);
/// Disks the kernel drives.
pub const MAX_DISKS: usize = 4;
/// virtio-mmio nodes looked at (QEMU virt has 32).
const MAX_TRANSPORTS: usize = 32;

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

/// The machine as the disks' [`BlkEnv`]: the platform's clock, idle loop and CPU id, the system
/// work queue's retry and recovery items, and the page allocator.
pub struct Board;

impl BlkEnv for Board {
    fn uptime(&self) -> Duration {
        super::time::uptime()
    }

    fn idle(&self) {
        super::idle()
    }

    fn cpu_id(&self) -> usize {
        super::smp::cpu_id()
    }

    fn schedule_retry(&self) {
        schedule_retry()
    }

    fn schedule_recovery(&self) {
        schedule_recovery()
    }

    fn alloc_page(&self) -> Option<PhysAddr> {
        page_allocator().lock().alloc_pages(0, ZoneType::Normal, MigrateType::Unmovable).ok()
    }

    fn free_page(&self, page: PhysAddr) {
        let _ = page_allocator().lock().free_pages(page, 0);
    }
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
        RETRY_WORK.call_once(|| {
            SYSTEM_WQ.register("virtio-blk retry", retry_waiting).inspect_err(|e| log::warn!("virtio-blk: no retry work item: {e:?}")).ok()
        });
        RECOVER_WORK.call_once(|| {
            SYSTEM_WQ
                .register("virtio-blk recover", recover_disks)
                .inspect_err(|e| log::warn!("virtio-blk: no recovery work item: {e:?}"))
                .ok()
        });
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
    let blk = VirtioBlk::<_, QUEUE_SIZE>::with_options(transport, &CoherentRings { dev: dma_dev }, options).map_err(ProbeError::Virtio)?;
    // The scratch page comes from ZONE_NORMAL like any kernel data: for a DMA-limited device
    // the headers and status bytes bounce too.
    let scratch = page_allocator()
        .lock()
        .alloc_pages(0, ZoneType::Normal, MigrateType::Unmovable)
        .or_else(|_| page_allocator().lock().alloc_pages(0, ZoneType::Dma, MigrateType::Unmovable))
        .map_err(|_| ProbeError::NoMemory)?;
    // Built inside `call_once`, in place as far as the compiler can: the in-flight table is
    // kilobytes, and each copy on the probe's stack counts (64 KiB in all).
    // SAFETY: the engine writes through it only its scratch page (allocated above, the disk's
    // from now on) and the GET_ID page it allocates; request buffers are written by the DMA API
    // under the callers' contract (`Disk::submit_read`'s `# Safety`).
    let mem = unsafe { ram() };
    let disk = DISKS[index].call_once(|| {
        Disk::new(DiskParts {
            index,
            name: node.name(),
            irq: irq.intid(),
            blk,
            dma_dev,
            api: &dma().api,
            mem,
            scratch,
            retries: k.params.blk_retries,
            env: Board,
        })
    });
    request_irq_spread(disk.irq, !irq.is_level(), handle_irq, index).map_err(ProbeError::Irq)?;
    hint_inflight(disk, k.params.blk_inflight_kib as usize * 1024);
    Ok(Some(disk))
}

/// The interrupt handler of every disk: [`IrqReturn::None`] if no disk on the line had raised
/// it, which `irq` counts towards disabling a stuck line (Linux `vm_interrupt`).
fn handle_irq(_ctx: &IrqContext<'_>, irq: u32) -> IrqReturn {
    let mut ret = IrqReturn::None;
    for disk in DISKS.iter().filter_map(spin::Once::get).filter(|d| d.irq == irq) {
        if disk.complete_from_irq() {
            ret = IrqReturn::Handled;
        }
    }
    ret
}

/// Tells the DMA layer how much DMA `disk` keeps in flight (task context): a DMA-limited disk
/// that hints at least [`super::dma::DEVICE_POOL_HINT_THRESHOLD`] gets its own bounce pool (the
/// seed's per-device pools), 0 gives it back. Its bounces try that pool first, then the default
/// one. Logs what happened; a refusal is not an error for the disk.
pub fn hint_inflight(disk: &Disk, bytes: usize) -> Option<super::dma::HintOutcome> {
    match super::dma::set_inflight_hint(disk.dma_dev, bytes) {
        Ok(outcome) => {
            if outcome != super::dma::HintOutcome::Unchanged {
                log::info!("disk{}: hinted {} KiB in flight: {outcome:?}", disk.index, bytes / 1024);
            }
            Some(outcome)
        }
        Err(e) => {
            log::info!("disk{}: in-flight hint of {} KiB refused: {e}", disk.index, bytes / 1024);
            None
        }
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
        again |= disk.retry_waiting();
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
