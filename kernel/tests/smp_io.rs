//! In-QEMU test of block I/O on several CPUs at once (`scripts/smp-io-tests.sh`, `--smp 4`, two
//! fresh disks, `irq_affinity=` putting disk0's interrupt on CPU 1 and disk1's on CPU 2):
//! CPUs 1..=3 each write and read back their own regions of BOTH disks at the same time, so
//! requests are submitted from three CPUs into each disk's queue while the completions come in on
//! two others, and CPU 0 keeps RAM full of checksummed movable pages and holds most of the
//! default bounce pool, so that disk0's bounces need the pool to grow by reclaiming lent
//! pageblocks, i.e. migrating those pages, while the I/O runs. Then every checksum is checked,
//! every region compared (in the kernel, each round), and the script checks every sector of both
//! images on the host.
//!
//! Layout (the script checks the same): each disk has 8192 sectors; CPU c (1..=3) owns sectors
//! `c * REGION .. (c + 1) * REGION`; the rest is never written. Word i (u64, little-endian) of
//! sector s of disk d holds [`initial_word`] in a fresh image and [`written_word`] for the last
//! round after the test.
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use kernel::demo::pressure::MemoryPressure;
use kernel::dma::{DmaAttrs, DmaDirection};
use kernel::ktest::{self, buffer, err as e, free_buffer as free, TestCase, TestResult};
use kernel::mm::page_alloc::ZoneType;
use kernel::mm::phys::PhysMemory;
use kernel::mm::PhysAddr;
use kernel::platform::dma::dma;
use kernel::platform::exit::ExitStatus;
use kernel::platform::mm::page_allocator;
use kernel::platform::smp::{self, cpu_id, smp_call_function_single as call_on, MAX_CPUS};
use kernel::platform::virtio_blk::{self, wait_for, BlkError, Disk};
use kernel::platform::{kernel, run_pending_work, time, Kernel};
use kernel::{kassert, kassert_eq, kprintln};

use kernel::platform::phys::{ram, IdentityMappedRam};

kernel::entry!(main);

/// RAM, for this test kernel: it writes only memory it allocated (its buffers, the pages of its
/// memory pressure and page caches) or, standing in for a device, what a mapping handed that device.
fn mem() -> &'static IdentityMappedRam {
    // SAFETY: see the doc comment: every write of this file goes to such memory.
    unsafe { ram() }
}

fn main(_k: &'static Kernel) -> ExitStatus {
    kprintln!("smp_io tests: {} CPUs online, {} disks", smp::num_online_cpus(), virtio_blk::probe_all());
    ktest::run("smp_io", &[TestCase { name: "both_disks_from_three_cpus_while_reclaim_migrates", run: both_disks_from_three_cpus }])
}

const SECTOR: usize = 512;
/// Sectors each CPU owns on each disk (512 KiB).
const REGION: u64 = 1024;
/// Bytes per request.
const CHUNK: usize = 16 * 1024;
const CHUNKS: usize = REGION as usize * SECTOR / CHUNK;
/// Write-and-read-back rounds after the first read of the fresh content.
const ROUNDS: u64 = 5;
/// The I/O CPUs.
const IO_CPUS: [usize; 3] = [1, 2, 3];
/// Buffer order of one region (512 KiB).
const REGION_ORDER: u8 = 7;
const TIMEOUT: Duration = Duration::from_secs(60);
const NOATTR: DmaAttrs = DmaAttrs { skip_cpu_sync: false, no_copy_in: false };

/// Word `i` of sector `s` of disk `d` in a fresh image (the script writes the same).
fn initial_word(d: u64, s: u64, i: u64) -> u64 {
    (0x10 + d) << 56 | s << 8 | i
}

/// Word `i` of sector `s` of disk `d` as round `r` writes it (the script checks round
/// [`ROUNDS`]).
fn written_word(d: u64, r: u64, s: u64, i: u64) -> u64 {
    (0xd0 + d) << 56 | r << 48 | s << 8 | i
}

// The regions are written and compared a sector at a time, on the stack: the heap has little
// room while the memory pressure holds RAM (the pressure takes pages until the heap cannot grow,
// and what it leaves the heap shrinks with RAM: at 128 MiB three CPUs' 512 KiB copies did not
// fit).

/// Sector `s` of a region as `word(s, i)` gives its words.
fn sector_of(s: u64, word: &impl Fn(u64, u64) -> u64) -> [u8; SECTOR] {
    let mut out = [0u8; SECTOR];
    for (i, w) in out.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&word(s, i as u64).to_le_bytes());
    }
    out
}

/// Writes [`REGION`] sectors from `first_sector` into the buffer at `pa`, as `word` gives them.
fn write_region(pa: PhysAddr, first_sector: u64, word: impl Fn(u64, u64) -> u64) {
    for k in 0..REGION {
        mem().write(pa + k * SECTOR as u64, &sector_of(first_sector + k, &word));
    }
}

/// The first sector of the region in the buffer at `pa` (sectors from `first_sector`) that is
/// not as `word` gives it.
fn region_differs(pa: PhysAddr, first_sector: u64, word: impl Fn(u64, u64) -> u64) -> Option<u64> {
    let mut got = [0u8; SECTOR];
    (0..REGION).find(|&k| {
        mem().read(pa + k * SECTOR as u64, &mut got);
        got != sector_of(first_sector + k, &word)
    })
}

/// The first sector at which the regions in the buffers at `a` and `b` differ.
fn regions_differ(a: PhysAddr, b: PhysAddr) -> Option<u64> {
    let (mut x, mut y) = ([0u8; SECTOR], [0u8; SECTOR]);
    (0..REGION).find(|&k| {
        mem().read(a + k * SECTOR as u64, &mut x);
        mem().read(b + k * SECTOR as u64, &mut y);
        x != y
    })
}

/// A worker CPU's buffers, one region per disk, allocated by CPU 0 before the pressure.
#[derive(Clone, Copy, Default)]
struct Buffers {
    write: [PhysAddr; 2],
    read: [PhysAddr; 2],
}

static BUFS: spin::Mutex<[Buffers; MAX_CPUS]> = spin::Mutex::new([Buffers { write: [0; 2], read: [0; 2] }; MAX_CPUS]);
static RESULT: [spin::Mutex<Option<Result<u64, String>>>; MAX_CPUS] = [const { spin::Mutex::new(None) }; MAX_CPUS];
static GO: AtomicBool = AtomicBool::new(false);

#[derive(Clone, Copy)]
enum Op {
    Read,
    Write,
}

/// Queues every request (from this CPU, on both disks at once), collecting the oldest when a
/// disk's table is full, and waits for all.
fn run_all(reqs: &[(&'static Disk, Op, u64, PhysAddr, usize)]) -> Result<(), String> {
    let mut outstanding: VecDeque<(&'static Disk, kernel::block::Ticket)> = VecDeque::new();
    for &(d, op, sector, buf, len) in reqs {
        loop {
            // SAFETY: the callers pass pieces of this CPU's own `BUFS`, each in one request at a
            // time, untouched until every request was waited for below.
            let queued = unsafe {
                match op {
                    Op::Read => d.queue_read(sector, buf, len),
                    Op::Write => d.queue_write(sector, buf, len),
                }
            };
            match queued {
                Ok(t) => {
                    outstanding.push_back((d, t));
                    break;
                }
                Err(BlkError::Busy) => match outstanding.pop_front() {
                    Some((d, t)) => wait_for(d, t, time::uptime() + TIMEOUT).map_err(|x| format!("disk{}: {x}", d.index))?,
                    None => kernel::platform::idle(),
                },
                Err(x) => return Err(format!("disk{} sector {sector}: {x}", d.index)),
            }
        }
    }
    for (d, t) in outstanding {
        wait_for(d, t, time::uptime() + TIMEOUT).map_err(|x| format!("disk{}: {x}", d.index))?;
    }
    Ok(())
}

/// One I/O CPU's work: read its regions' fresh content, then [`ROUNDS`] times write both
/// regions and read them back, each step on both disks at once. Returns the bytes moved.
fn io_worker() -> Result<u64, String> {
    let cpu = cpu_id();
    let b = BUFS.lock()[cpu];
    let disks = [virtio_blk::disk(0).map_err(e)?, virtio_blk::disk(1).map_err(e)?];
    let first = cpu as u64 * REGION;
    let reqs = |op: Op, bufs: [PhysAddr; 2]| -> Vec<(&'static Disk, Op, u64, PhysAddr, usize)> {
        // Interleaved: disk0 chunk 0, disk1 chunk 0, disk0 chunk 1, ...
        (0..CHUNKS)
            .flat_map(|c| (0..2).map(move |d| (d, c)))
            .map(|(d, c)| (disks[d], op, first + (c * CHUNK / SECTOR) as u64, bufs[d] + (c * CHUNK) as u64, CHUNK))
            .collect()
    };
    let len = REGION as usize * SECTOR;
    let mut moved = 0;
    run_all(&reqs(Op::Read, b.read))?;
    for d in 0..2 {
        if let Some(k) = region_differs(b.read[d], first, |s, i| initial_word(d as u64, s, i)) {
            return Err(format!("CPU{cpu}: disk{d} region's fresh content read wrong (sector {})", first + k));
        }
    }
    moved += 2 * len as u64;
    for r in 1..=ROUNDS {
        for d in 0..2 {
            write_region(b.write[d], first, |s, i| written_word(d as u64, r, s, i));
            mem().fill(b.read[d], 0xee, len);
        }
        run_all(&reqs(Op::Write, b.write))?;
        run_all(&reqs(Op::Read, b.read))?;
        for d in 0..2 {
            if let Some(k) = regions_differ(b.read[d], b.write[d]) {
                return Err(format!("CPU{cpu}: round {r}: disk{d} region read back differs from what was written (sector {})", first + k));
            }
        }
        moved += 4 * len as u64;
    }
    Ok(moved)
}

fn io_cpu() {
    while !GO.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    let result = io_worker();
    *RESULT[cpu_id()].lock() = Some(result);
}

/// The routing `irq_affinity=` asked for `irq`, if any.
fn routed_to(irq: u32) -> Option<usize> {
    kernel().params.irq_affinity.iter().find(|(n, _)| *n == irq).map(|&(_, cpu)| cpu)
}

fn both_disks_from_three_cpus() -> TestResult {
    let cpus = smp::num_online_cpus();
    kassert!(cpus >= 4, "needs 4 CPUs (run with --smp 4): {cpus} online");
    let (d0, d1) = (virtio_blk::disk(0).map_err(e)?, virtio_blk::disk(1).map_err(e)?);
    kassert_eq!((d0.config.capacity, d1.config.capacity), (8192, 8192), "two fresh 4 MiB images (scripts/smp-io-tests.sh)");
    let (cpu0, cpu1) =
        (routed_to(d0.irq).ok_or("irq_affinity= does not route disk0")?, routed_to(d1.irq).ok_or("irq_affinity= does not route disk1")?);
    kassert!(cpu0 != cpu1 && cpu0 != 0 && cpu1 != 0, "the disks' interrupts on two different secondaries: {cpu0}, {cpu1}");
    let m = dma().manager;
    let api = &dma().api;
    let _ = virtio_blk::hint_inflight(d0, 0); // without its own pool, disk0 bounces through the default pool
    kassert!(d0.dma_dev.device_pool().is_none(), "disk0 bounces through the default pool");
    let (used0, live0) = (m.used_slots(), api.debug().map(|t| t.live()));

    // Buffers before the pressure (above the DMA window: every byte bounces).
    let mut owned = Vec::new();
    {
        let mut bufs = BUFS.lock();
        for &cpu in &IO_CPUS {
            for d in 0..2 {
                let (w, r) = (buffer(REGION_ORDER, true)?, buffer(REGION_ORDER, true)?);
                bufs[cpu].write[d] = w;
                bufs[cpu].read[d] = r;
                owned.extend([w, r]);
            }
        }
    }
    let filler = buffer(6, true)?;

    // RAM full of checksummed movable pages (the lent pageblocks too), every fourth page freed
    // again as room for migration targets and the heap.
    let pages = page_allocator();
    let mut pressure = MemoryPressure::fill(pages, mem(), ZoneType::Normal, usize::MAX, 0x5a10);
    pressure.release_every(pages, 4);
    kassert!(!pressure.is_empty(), "no memory pressure");

    // Hold the default pool's free slots, large mappings first: disk0's bounces must wait for
    // the worker to reclaim lent pageblocks.
    let before = m.stats();
    let mut held = Vec::new();
    for size in [256 * 1024, 2048] {
        // SAFETY: `filler` is this test's buffer, only read (`ToDevice`) while mapped.
        while let Ok(dma_addr) = unsafe { api.map_single(d0.dma_dev, filler, size, DmaDirection::ToDevice, NOATTR) } {
            held.push((dma_addr, size));
        }
    }
    let held_slots = m.used_slots() - used0;
    kprintln!(
        "  CPU0 holds {} mappings ({held_slots} slots) of the default pool; {} movable pages checksummed",
        held.len(),
        pressure.len()
    );

    for &cpu in &IO_CPUS {
        call_on(cpu, io_cpu, false).map_err(e)?;
    }
    GO.store(true, Ordering::Release);
    let t0 = time::uptime();
    while !IO_CPUS.iter().all(|&c| smp::call_done(c)) {
        run_pending_work(); // the SWIOTLB worker may run here or on any other CPU
        time::delay(Duration::from_micros(200));
    }
    let elapsed = time::uptime() - t0;
    let after = m.stats();
    for (dma_addr, size) in held.drain(..) {
        api.unmap_single(d0.dma_dev, dma_addr, size, DmaDirection::ToDevice, NOATTR).map_err(e)?;
    }
    let checked = pressure.verify(pages, mem()).map_err(|x| format!("movable pages corrupted: {x:?}"));
    pressure.release(pages).map_err(|x| format!("{x:?}"))?;
    owned.iter().for_each(|&b| free(b, REGION_ORDER));
    free(filler, 6);

    let mut moved = 0;
    for &cpu in &IO_CPUS {
        let r = RESULT[cpu].lock().take().ok_or(format!("CPU{cpu} did not report"))?;
        moved += r?;
    }
    let migrated = after.pages_migrated - before.pages_migrated;
    kprintln!(
        "  CPUs 1-3 moved {} KiB in {elapsed:?}; {} pageblocks reclaimed, {migrated} pages migrated meanwhile; {} checksums intact",
        moved / 1024,
        after.pageblocks_reclaimed - before.pageblocks_reclaimed,
        checked.clone().unwrap_or(0)
    );
    // Routed at request_irq time, so every interrupt since boot counts.
    let (irq_cpus0, irq_cpus1) = (d0.stats.irq_cpus.load(Ordering::Relaxed), d1.stats.irq_cpus.load(Ordering::Relaxed));
    kprintln!(
        "  disk0's interrupts taken on CPUs {irq_cpus0:#b}, disk1's on {irq_cpus1:#b}; disk lock contention {} / {}",
        d0.lock_contention(),
        d1.lock_contention()
    );
    checked?;
    kassert!(migrated > 0, "the pool never grew by migrating pages");
    kassert_eq!(irq_cpus0, 1 << cpu0, "disk0's interrupt only on CPU {cpu0}");
    kassert_eq!(irq_cpus1, 1 << cpu1, "disk1's interrupt only on CPU {cpu1}");
    kassert_eq!((d0.in_flight(), d0.waiting(), d1.in_flight(), d1.waiting()), (0, 0, 0, 0));
    kassert_eq!(m.used_slots(), used0, "slots leaked");
    kassert_eq!(api.debug().map(|t| t.live()), live0, "live mappings in the DMA-API tracker");
    Ok(())
}
