//! Host tests of the engine: a [`Disk`] over the `drivers` crate's simulated transport and ring
//! (`drivers::virtio::sim`, feature `sim`), mapping through a real [`DmaApi`] over
//! [`SimMemory`] with a SWIOTLB pool, so that a buffer above the device's DMA limit bounces as on
//! the machine. The device side here executes chains through the same simulated memory (the DMA
//! addresses are physical ones; the rings, from `SimDma`, are host memory). The board is
//! [`TestEnv`]: a clock the test moves, and counters of the work items it was asked to schedule.
//! Interrupt context is [`IrqContextGuard`]; the work items are called by hand.

extern crate std;

use std::boxed::Box;
use std::vec::Vec;

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use core::time::Duration;

use drivers::virtio::blk::{feature as blk_feature, req_status, BlkOptions, VirtioBlk};
use drivers::virtio::sim::{FakeTransport, RingDevice, SimChain, SimDma};
use drivers::virtio::{feature, BrokenReason, DeviceType, Error as VirtioError};

use super::{BlkEnv, BlkError, Disk, DiskParts, QUEUE_SIZE};
use crate::arch::host::IrqContextGuard;
use crate::block::DiskHealth;
use crate::dma::device::{BouncePolicy, DmaDevice};
use crate::dma::mapping::DmaApi;
use crate::dma::swiotlb::mem::SwiotlbMem;
use crate::dma::swiotlb::SwiotlbPool;
use crate::mm::phys::{PhysMemory, SimMemory};
use crate::mm::PhysAddr;

const RAM: PhysAddr = 0x4000_0000;
/// The scratch page (headers and status bytes), below the DMA limit.
const SCRATCH: PhysAddr = RAM + 0x1000;
/// GET_ID's page.
const ID_PAGE: PhysAddr = RAM + 0x2000;
/// 2 MiB of bounce slots, below the limit.
const POOL: PhysAddr = 0x4080_0000;
/// The device reaches the first 16 MiB.
const LIMIT: PhysAddr = 0x40ff_ffff;
/// Buffers beyond the limit: they bounce.
const HIGH: PhysAddr = 0x4100_0000;
/// Sectors of the simulated disk.
const CAPACITY: u64 = 256;

/// The board, for the tests: a clock moved by hand (and by `idle`), the work items counted.
#[derive(Default)]
struct TestEnv {
    now_ms: AtomicU64,
    retries_scheduled: AtomicU32,
    recoveries_scheduled: AtomicU32,
}

impl TestEnv {
    fn advance(&self, ms: u64) {
        self.now_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

impl BlkEnv for TestEnv {
    fn uptime(&self) -> Duration {
        Duration::from_millis(self.now_ms.load(Ordering::Relaxed))
    }
    fn idle(&self) {
        self.advance(1); // time passes; no interrupt will come
    }
    fn cpu_id(&self) -> usize {
        0
    }
    fn schedule_retry(&self) {
        self.retries_scheduled.fetch_add(1, Ordering::Relaxed);
    }
    fn schedule_recovery(&self) {
        self.recoveries_scheduled.fetch_add(1, Ordering::Relaxed);
    }
    fn alloc_page(&self) -> Option<PhysAddr> {
        Some(ID_PAGE)
    }
    fn free_page(&self, _page: PhysAddr) {}
}

type TestDisk = Disk<'static, &'static FakeTransport, TestEnv>;

/// The unsafe queue entries called safely: a test's disk maps through a DMA API over the test's
/// own [`SimMemory`] and a simulated device, so a request can only touch the test's simulated RAM.
trait SimQueue {
    fn sim_queue_read(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<crate::block::Ticket, BlkError>;
    fn sim_queue_write(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<crate::block::Ticket, BlkError>;
}

#[allow(unsafe_code)]
impl SimQueue for TestDisk {
    fn sim_queue_read(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<crate::block::Ticket, BlkError> {
        // SAFETY: only the test's simulated RAM is reached (see the trait).
        unsafe { self.queue_read(sector, buf, len) }
    }
    fn sim_queue_write(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<crate::block::Ticket, BlkError> {
        // SAFETY: only the test's simulated RAM is reached (see the trait).
        unsafe { self.queue_write(sector, buf, len) }
    }
}

type TestPlug<'d> = super::Plug<'d, 'static, &'static FakeTransport, TestEnv>;

/// [`SimQueue`] for a plug.
#[allow(unsafe_code)]
fn sim_plug_read(plug: &TestPlug<'_>, sector: u64, buf: PhysAddr, len: usize) -> Result<crate::block::Ticket, BlkError> {
    // SAFETY: only the test's simulated RAM is reached (see `SimQueue`).
    unsafe { plug.queue_read(sector, buf, len) }
}

/// The device side: takes chains off the ring and executes them against its sectors, reading
/// and writing the buffers through physical memory (what a DMA master does).
struct SimBlockDevice {
    ring: RingDevice,
    sectors: Vec<u8>,
    mem: &'static SimMemory,
    transport: &'static FakeTransport,
}

impl SimBlockDevice {
    /// The device over `disk`'s queue as it is now (again after a re-initialisation, which
    /// zeroes the rings).
    fn attach(disk: &TestDisk, mem: &'static SimMemory, transport: &'static FakeTransport, sectors: Vec<u8>) -> Self {
        let ring = RingDevice::new(disk.inner.lock().blk.queue().memory());
        Self { ring, sectors, mem, transport }
    }

    fn take_all(&mut self) -> Vec<SimChain> {
        std::iter::from_fn(|| self.ring.pop_avail()).collect()
    }

    /// Executes `chain` and returns it used with the real status, or `status` if given; raises
    /// the interrupt.
    fn complete(&mut self, chain: &SimChain, status: Option<u8>) {
        let mut header = [0u8; 16];
        self.mem.read(chain.descs[0].addr, &mut header);
        let kind = u32::from_le_bytes(header[0..4].try_into().unwrap());
        let mut offset = 512 * u64::from_le_bytes(header[8..16].try_into().unwrap()) as usize;
        let mut written = 1;
        let mut real = req_status::OK;
        for seg in &chain.descs[1..chain.descs.len() - 1] {
            let len = seg.len as usize;
            match kind {
                0 => self.mem.write(seg.addr, &self.sectors[offset..offset + len]),
                1 => self.mem.read(seg.addr, &mut self.sectors[offset..offset + len]),
                _ => real = req_status::UNSUPP,
            }
            offset += len;
            if seg.writable {
                written += seg.len;
            }
        }
        let status_addr = chain.descs[chain.descs.len() - 1].addr;
        self.mem.write(status_addr, &[status.unwrap_or(real)]);
        self.ring.push_used(chain.head.into(), written);
        self.transport.interrupt.set(1); // VIRTIO_MMIO_INT_VRING
    }

    /// Executes everything the driver made available; returns how many.
    fn serve(&mut self) -> usize {
        let chains = self.take_all();
        for chain in &chains {
            self.complete(chain, None);
        }
        chains.len()
    }
}

struct Setup {
    disk: &'static TestDisk,
    dev: SimBlockDevice,
    mem: &'static SimMemory,
    pool: &'static SwiotlbPool,
    transport: &'static FakeTransport,
}

/// A disk of [`CAPACITY`] sectors (sector `s` holds bytes `s * 512 + i`), a queue of
/// `queue_size` descriptors without indirect descriptors (so `queue_size / 3` requests in
/// flight), `retries` resubmissions after resets.
fn setup(queue_size: u16, retries: u8) -> Setup {
    setup_with(queue_size, retries, false)
}

/// [`setup`], with RING_EVENT_IDX negotiated if `event_idx`.
fn setup_with(queue_size: u16, retries: u8, event_idx: bool) -> Setup {
    let mem: &'static SimMemory = Box::leak(Box::new(SimMemory::new(RAM, 32 << 20)));
    let swiotlb: &'static SwiotlbMem = Box::leak(Box::new(SwiotlbMem::static_for_test(POOL, 1024, 1, mem)));
    let pool = swiotlb.default_pool();
    let api: &'static DmaApi<'static> = Box::leak(Box::new(DmaApi::new(swiotlb, None, None)));
    let dma_dev: &'static DmaDevice = Box::leak(Box::new(DmaDevice::new(1, "disk0", Some(LIMIT), true, BouncePolicy::WhenNeeded)));
    let offered = if event_idx { feature::RING_EVENT_IDX } else { 0 };
    let mut transport = FakeTransport::new(DeviceType::BLOCK, feature::VERSION_1 | blk_feature::SEG_MAX | blk_feature::SIZE_MAX | offered);
    transport.queue_max = queue_size;
    transport.set_config_u64(0, CAPACITY);
    transport.set_config_u32(8, 4096); // size_max
    transport.set_config_u32(12, 2); // seg_max
    let transport: &'static FakeTransport = Box::leak(Box::new(transport));
    let rings: &'static SimDma = Box::leak(Box::new(SimDma::default()));
    let declined = if event_idx { 0 } else { feature::RING_EVENT_IDX };
    let options = BlkOptions { required: 0, declined: feature::INDIRECT_DESC | declined, max_segments: 4 };
    let blk = VirtioBlk::<_, QUEUE_SIZE>::with_options(transport, rings, options).unwrap();
    let disk: &'static TestDisk = Box::leak(Box::new(Disk::new(DiskParts {
        index: 0,
        name: "virtio_mmio@a003e00",
        irq: 79,
        blk,
        dma_dev,
        api,
        mem,
        scratch: SCRATCH,
        retries,
        env: TestEnv::default(),
    })));
    let sectors = (0..CAPACITY as usize * 512).map(|i| i as u8).collect();
    let dev = SimBlockDevice::attach(disk, mem, transport, sectors);
    Setup { disk, dev, mem, pool, transport }
}

fn sector_bytes(sector: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (sector as usize * 512 + i) as u8).collect()
}

fn read_mem(mem: &SimMemory, pa: PhysAddr, len: usize) -> Vec<u8> {
    let mut bytes = std::vec![0u8; len];
    mem.read(pa, &mut bytes);
    bytes
}

/// The device's interrupt, handled as the board's handler does (interrupt context).
fn interrupt(disk: &TestDisk) -> bool {
    let _irq = IrqContextGuard::enter();
    disk.complete_from_irq()
}

/// The background tick (interrupt context).
fn tick(disk: &TestDisk) {
    let _irq = IrqContextGuard::enter();
    disk.check_timeouts();
}

#[test]
fn a_write_then_a_read_bounce_and_come_back() {
    let mut s = setup(64, 3);
    let disk = s.disk;
    let data: Vec<u8> = (0..2048).map(|i| (i * 7 + 3) as u8).collect();
    s.mem.write(HIGH, &data);

    let write = disk.sim_queue_write(5, HIGH, data.len()).unwrap();
    let chains = s.dev.take_all();
    assert_eq!(chains.len(), 1);
    // Header, one data segment (size_max 4096), status: the data is in the bounce pool, not at
    // the caller's address the device cannot reach.
    let seg = chains[0].descs[1];
    assert_eq!(chains[0].descs.len(), 3);
    assert!((POOL..POOL + (2 << 20)).contains(&seg.addr), "data at {:#x} did not bounce", seg.addr);
    s.dev.complete(&chains[0], None);
    assert!(interrupt(disk), "handled");
    assert_eq!(disk.poll(write), Some(Ok(())));
    assert!(s.dev.sectors[5 * 512..5 * 512 + data.len()] == data[..], "the device got the caller's bytes");

    let buf = HIGH + 0x10_0000;
    s.mem.fill(buf, 0, data.len());
    let read = disk.sim_queue_read(5, buf, data.len()).unwrap();
    assert_eq!(s.dev.serve(), 1);
    assert!(interrupt(disk));
    assert_eq!(disk.poll(read), Some(Ok(())));
    assert!(read_mem(s.mem, buf, data.len()) == data, "copied back from the bounce on unmap");

    assert_eq!(disk.stats.data_bounced.load(Ordering::Relaxed), 2);
    assert_eq!(disk.stats.completed_in_irq.load(Ordering::Relaxed), 2);
    assert_eq!(s.pool.used_slots(), 0, "every bounce slot released");
    assert_eq!(disk.in_flight(), 0);
}

#[test]
fn a_waiting_request_is_started_by_the_completion_path() {
    // A queue of 16 descriptors without indirect tables: the table takes five requests, but
    // the queue fewer of two segments (header, two data, status: four descriptors each).
    let mut s = setup(16, 3);
    let disk = s.disk;
    assert_eq!(disk.max_in_flight(), 5);
    const LEN: usize = 8192; // two segments of size_max
    let bufs: Vec<PhysAddr> = (0..5).map(|i| HIGH + i * 0x4000).collect();
    let sector = |i: usize| 8 + 16 * i as u64;
    let tickets: Vec<_> = bufs.iter().enumerate().map(|(i, &b)| disk.sim_queue_read(sector(i), b, LEN).unwrap()).collect();
    let held = disk.in_flight();
    assert!(held < 5);
    assert_eq!(disk.waiting(), 5 - held, "the rest find the queue full and wait in their slots");
    assert_eq!(disk.env().retries_scheduled.load(Ordering::Relaxed), 0, "completions will start them");
    assert_eq!(s.dev.serve(), held);

    // The interrupt finishes those the device held and starts the rest, in interrupt context.
    assert!(interrupt(disk));
    for t in &tickets[..held] {
        assert_eq!(disk.poll(*t), Some(Ok(())));
    }
    assert_eq!(disk.poll(tickets[4]), None);
    assert_eq!(disk.waiting(), 0);
    assert_eq!(disk.in_flight(), 5 - held);
    assert_eq!(disk.stats.started_in_irq.load(Ordering::Relaxed), (5 - held) as u64);
    assert_eq!(disk.env().retries_scheduled.load(Ordering::Relaxed), 0, "no work item needed");

    assert_eq!(s.dev.serve(), 5 - held);
    assert!(interrupt(disk));
    for t in &tickets[held..] {
        assert_eq!(disk.poll(*t), Some(Ok(())));
    }
    for (i, &b) in bufs.iter().enumerate() {
        assert!(read_mem(s.mem, b, LEN) == sector_bytes(sector(i), LEN), "request {i}");
    }
    assert_eq!(s.pool.used_slots(), 0);
}

#[test]
fn a_request_that_times_out_resets_the_device_and_is_requeued_until_its_budget_ends() {
    let mut s = setup(64, 1);
    let disk = s.disk;
    disk.set_default_timeout(Duration::from_millis(100));
    let ticket = disk.sim_queue_read(7, HIGH, 512).unwrap();
    assert_eq!(s.dev.take_all().len(), 1, "the device took it and never answers");

    disk.env().advance(99);
    tick(disk);
    assert_eq!(disk.health(), DiskHealth::Live, "not late yet");
    disk.env().advance(1);
    tick(disk);
    // Reset (status 0 written and read back), the request taken back and requeued.
    assert_eq!(disk.health(), DiskHealth::Resetting);
    assert_eq!(disk.stats.aborts.load(Ordering::Relaxed), 1);
    assert_eq!(disk.stats.requeued.load(Ordering::Relaxed), 1);
    assert!(s.transport.status_log.borrow().contains(&0), "the device was reset");
    assert!(disk.env().recoveries_scheduled.load(Ordering::Relaxed) >= 1);
    assert_eq!((disk.in_flight(), disk.waiting()), (0, 1));
    assert_eq!(disk.poll(ticket), None);
    assert_eq!(s.pool.used_slots(), 0, "the bounce slots were released by the take-back");

    // The recovery work: re-initialised, the request started again on the fresh rings.
    assert!(!disk.recover(), "live again: no need to run again");
    assert_eq!(disk.health(), DiskHealth::Live);
    assert_eq!(disk.stats.reinits.load(Ordering::Relaxed), 1);
    assert_eq!(disk.in_flight(), 1);
    let mut dev = SimBlockDevice::attach(disk, s.mem, s.transport, core::mem::take(&mut s.dev.sectors));
    assert_eq!(dev.serve(), 1);
    assert!(interrupt(disk));
    assert_eq!(disk.poll(ticket), Some(Ok(())));
    assert!(read_mem(s.mem, HIGH, 512) == sector_bytes(7, 512));

    // Another one times out twice: requeued once (the budget), then failed with Timeout.
    let ticket = disk.sim_queue_read(8, HIGH, 512).unwrap();
    dev.take_all();
    disk.env().advance(100);
    tick(disk);
    assert_eq!(disk.stats.requeued.load(Ordering::Relaxed), 2);
    disk.recover();
    let mut dev = SimBlockDevice::attach(disk, s.mem, s.transport, dev.sectors);
    assert_eq!(dev.take_all().len(), 1, "started again, and again never answered");
    disk.env().advance(100);
    tick(disk);
    assert_eq!(disk.poll(ticket), Some(Err(BlkError::Timeout)));
    assert_eq!(disk.stats.retries_exhausted.load(Ordering::Relaxed), 1);
    assert_eq!(disk.stats.requeued.load(Ordering::Relaxed), 2);
    assert_eq!(s.pool.used_slots(), 0);
}

#[test]
fn garbage_fails_the_request_with_its_reason_and_failed_reinits_kill_the_disk() {
    let mut s = setup(64, 0);
    let disk = s.disk;
    let garbage = disk.sim_queue_read(1, HIGH, 512).unwrap();
    let held = disk.sim_queue_read(2, HIGH + 0x1000, 512).unwrap();
    let chains = s.dev.take_all();
    assert_eq!(chains.len(), 2);
    // The device answers the first with a status byte that is no status.
    s.dev.complete(&chains[0], Some(0x77));
    assert!(interrupt(disk));
    let bad = Err(BlkError::Virtio(VirtioError::DeviceBroken(BrokenReason::BadStatus { id: chains[0].head, status: 0x77 })));
    assert_eq!(disk.poll(garbage), Some(bad.clone()), "ends with the device's error, not retried");
    // The device was reset at once; the request it held ran out of retries (none allowed) and
    // fails with the reason of the reset.
    assert_eq!(disk.health(), DiskHealth::Resetting);
    assert_eq!(disk.poll(held), Some(bad));
    assert_eq!(disk.stats.retries_exhausted.load(Ordering::Relaxed), 1);
    assert_eq!(s.pool.used_slots(), 0);

    // The device comes back as another (its capacity changed): every re-initialisation fails.
    s.transport.set_config_u64(0, CAPACITY * 2);
    let waiting = disk.sim_queue_read(3, HIGH, 512).unwrap();
    assert_eq!(disk.waiting(), 1, "waits for the re-initialisation");
    assert!(disk.recover(), "failed once: run again");
    assert!(disk.recover(), "backing off: nothing tried");
    assert_eq!(disk.stats.reinit_failures.load(Ordering::Relaxed), 1);
    disk.env().advance(100);
    assert!(disk.recover());
    assert_eq!(disk.health(), DiskHealth::Resetting);
    disk.env().advance(200);
    assert!(!disk.recover(), "dead: nothing more to do");
    assert_eq!(disk.stats.reinit_failures.load(Ordering::Relaxed), 3);
    assert_eq!(disk.health(), DiskHealth::Dead);
    assert_eq!(disk.poll(waiting), Some(Err(BlkError::DiskDead)));
    assert_eq!(disk.sim_queue_read(4, HIGH, 512), Err(BlkError::DiskDead));
    assert!(s.transport.failed(), "FAILED set on the device");
    assert_eq!(s.pool.used_slots(), 0);
}

#[test]
fn requests_queued_under_a_plug_take_one_notification() {
    let mut s = setup(64, 3);
    let disk = s.disk;
    let buf = |i: u64| HIGH + i * 0x1000;
    let plug = disk.plug();
    let tickets: Vec<_> = (0..8).map(|i| sim_plug_read(&plug, 3 * i, buf(i), 1024).unwrap()).collect();
    // Started (mapped, bounced, published), the device not told yet.
    assert_eq!((disk.in_flight(), s.dev.ring.avail_idx()), (8, 8));
    assert_eq!(s.transport.notifications.get(), 0, "no notification while the plug is held");
    plug.finish();
    assert_eq!(s.transport.notifications.get(), 1, "one for the batch");
    assert_eq!(disk.stats.kicks.load(Ordering::Relaxed), 1, "kicks counts what the device got");

    assert_eq!(s.dev.serve(), 8);
    assert!(interrupt(disk));
    for (i, t) in tickets.into_iter().enumerate() {
        assert_eq!(disk.poll(t), Some(Ok(())));
        assert!(read_mem(s.mem, buf(i as u64), 1024) == sector_bytes(3 * i as u64, 1024), "request {i}");
    }
    assert_eq!(s.transport.notifications.get(), 1, "nothing waited: the completion notified nothing");
    // An empty plug notifies nothing; an unplugged request still notifies at once.
    disk.plug().finish();
    assert_eq!(s.transport.notifications.get(), 1);
    let t = disk.sim_queue_read(1, buf(0), 512).unwrap();
    assert_eq!(s.transport.notifications.get(), 2);
    assert_eq!(s.dev.serve(), 1);
    assert!(interrupt(disk));
    assert_eq!(disk.poll(t), Some(Ok(())));
    assert_eq!(s.pool.used_slots(), 0);
}

#[test]
fn the_refill_after_a_completion_notifies_once_for_the_requests_it_starts() {
    // 64 descriptors without indirect tables, 21 slots: sixteen requests of two segments
    // (four descriptors each) fill the ring, five wait.
    let mut s = setup(64, 3);
    let disk = s.disk;
    const LEN: usize = 8192;
    let buf = |i: usize| HIGH + (i * LEN) as u64;
    let sector = |i: usize| (i * 8 % 240) as u64;
    let tickets: Vec<_> = (0..21).map(|i| disk.sim_queue_read(sector(i), buf(i), LEN).unwrap()).collect();
    assert_eq!((disk.in_flight(), disk.waiting()), (16, 5));
    assert_eq!(s.transport.notifications.get(), 16, "unplugged: one per request started");

    // Three complete: their descriptors make room for three of the five, started by the
    // interrupt handler with one notification.
    let chains = s.dev.take_all();
    for chain in &chains[..3] {
        s.dev.complete(chain, None);
    }
    assert!(interrupt(disk));
    assert_eq!(disk.stats.started_in_irq.load(Ordering::Relaxed), 3);
    assert_eq!((disk.in_flight(), disk.waiting()), (16, 2));
    assert_eq!(s.transport.notifications.get(), 17, "one notification for the three");

    // The rest: all thirteen complete, the last two start, one more notification.
    for chain in &chains[3..] {
        s.dev.complete(chain, None);
    }
    assert!(interrupt(disk));
    assert_eq!((disk.in_flight(), disk.waiting()), (5, 0));
    assert_eq!(s.transport.notifications.get(), 18);
    assert_eq!(s.dev.serve(), 5);
    assert!(interrupt(disk));
    for (i, t) in tickets.into_iter().enumerate() {
        assert_eq!(disk.poll(t), Some(Ok(())));
        assert!(read_mem(s.mem, buf(i), LEN) == sector_bytes(sector(i), LEN), "request {i}");
    }
    assert_eq!(disk.stats.kicks.load(Ordering::Relaxed), 18);
    assert_eq!(s.pool.used_slots(), 0);
}

/// A device like QEMU's under RING_EVENT_IDX: it looks at the ring only when notified, takes
/// everything, and asks for a notification at the next chain (`avail_event` = its next idx).
fn serve_if_notified(s: &mut Setup, seen: &mut usize) -> usize {
    if s.transport.notifications.get() == *seen {
        return 0;
    }
    *seen = s.transport.notifications.get();
    let served = s.dev.serve();
    let next = s.dev.ring.avail_idx();
    s.dev.ring.set_avail_event(next);
    served
}

#[test]
fn with_event_idx_no_published_request_is_left_without_a_notification() {
    let mut s = setup_with(64, 3, true);
    let disk = s.disk;
    assert!(disk.event_idx());
    let mut seen = 0;
    let buf = |i: u64| HIGH + i * 0x1000;
    let mut tickets = Vec::new();

    // avail_event 0 (a fresh ring): the batch [0, 4) passes it.
    let plug = disk.plug();
    tickets.extend((0..4).map(|i| sim_plug_read(&plug, i, buf(i), 512).unwrap()));
    drop(plug);
    assert_eq!(serve_if_notified(&mut s, &mut seen), 4);
    assert_eq!(s.transport.notifications.get(), 1);
    assert!(interrupt(disk));

    // A batch whose first half reaches the device before the plug ends: an unplugged request
    // (another CPU, or the completion handler's refill) notifies for everything published
    // ([4, 7)), the device takes it and moves avail_event to 7, behind the plug's end (9).
    let plug = disk.plug();
    tickets.extend((4..6).map(|i| sim_plug_read(&plug, i, buf(i), 512).unwrap()));
    tickets.push(disk.sim_queue_read(6, buf(6), 512).unwrap());
    assert_eq!(serve_if_notified(&mut s, &mut seen), 3);
    tickets.extend((7..9).map(|i| sim_plug_read(&plug, i, buf(i), 512).unwrap()));
    plug.finish();
    assert_eq!(serve_if_notified(&mut s, &mut seen), 2, "the plug's end notified for [7, 9)");
    assert!(interrupt(disk));

    // The device asks for a notification only at the last chain of the next batch ([9, 13)).
    s.dev.ring.set_avail_event(12);
    let plug = disk.plug();
    tickets.extend((9..13).map(|i| sim_plug_read(&plug, i, buf(i), 512).unwrap()));
    drop(plug);
    assert_eq!(serve_if_notified(&mut s, &mut seen), 4);
    assert!(interrupt(disk));

    assert_eq!(s.transport.notifications.get(), 4, "one per batch, and the unplugged request's");
    assert_eq!(disk.stats.kicks.load(Ordering::Relaxed), 4);
    for (i, t) in tickets.into_iter().enumerate() {
        assert_eq!(disk.poll(t), Some(Ok(())), "request {i}");
        assert!(read_mem(s.mem, buf(i as u64), 512) == sector_bytes(i as u64, 512), "request {i}");
    }
    assert_eq!(s.pool.used_slots(), 0);
}

#[test]
fn a_leaked_plug_is_notified_by_the_tick() {
    let mut s = setup(64, 3);
    let disk = s.disk;
    let plug = disk.plug();
    let ticket = sim_plug_read(&plug, 2, HIGH, 512).unwrap();
    core::mem::forget(plug);
    assert_eq!(s.transport.notifications.get(), 0);
    tick(disk);
    assert_eq!(s.transport.notifications.get(), 1, "the tick notified for it");
    tick(disk);
    assert_eq!(s.transport.notifications.get(), 1, "once");
    assert_eq!(s.dev.serve(), 1);
    assert!(interrupt(disk));
    assert_eq!(disk.poll(ticket), Some(Ok(())));
}
