//! In-QEMU tests of the virtio-blk driver (`platform::virtio_blk`) on two disks, driven from
//! their interrupt handlers, every buffer through the DMA API.
//!
//! Needs the disks scripts/virtio-blk-tests.sh makes and attaches (it runs this kernel):
//! - disk0 (`virtio_mmio@a003e00`, behind the device tree's DMA window: up to 0x57ff_ffff at
//!   512 MiB and more, the first half of RAM below): 4 MiB, sector `s` holds the
//!   little-endian u64 `s` 64 times ([`sector_pattern`]);
//! - disk1 (`virtio_mmio@a003c00`, behind the restricted pool): 1 MiB of zeros;
//! - disk2 (`virtio_mmio@a003a00`): 1 MiB, throttled by QEMU to 4 KiB/s, so that a request
//!   waits far longer than its timeout;
//! - disk3 (`virtio_mmio@a003800`): 64 KiB, attached `readonly=on`, every byte 0x5a.
//!
//! Writes land where the script checks them afterwards: disk0 sectors
//! `capacity - 256 .. capacity - 128` and disk1 sectors `0 .. 512` get [`written_pattern`].
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::Ordering;
use core::time::Duration;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use kernel::dma::device::BouncePolicy;
use kernel::dma::{DmaAttrs, DmaDirection};
use kernel::ktest::{self, buffer, err as e, free_buffer as free, read_phys as read_back, TestCase, TestResult};
use kernel::mm::phys::PhysMemory;
use kernel::mm::PhysAddr;
use kernel::platform::dma::dma;
use kernel::platform::exit::ExitStatus;
use kernel::platform::virtio_blk::{self, read_verify, wait_for, BlkError, Disk, DIRECT_MAX_IN_FLIGHT, QUEUE_SIZE};
use kernel::platform::{time, Kernel};
use kernel::sync::IrqSafeSpinLock;
use kernel::{kassert, kassert_eq, kprintln};

use kernel::platform::phys::{ram, IdentityMappedRam};

kernel::entry!(main);

/// RAM, for this test kernel: it writes only memory it allocated (its buffers, the pages of its
/// memory pressure and page caches) or, standing in for a device, what a mapping handed that device.
fn mem() -> &'static IdentityMappedRam {
    // SAFETY: see the doc comment: every write of this file goes to such memory.
    unsafe { ram() }
}

// SAFETY: every buffer this test kernel maps or hands a disk is one it allocated, freed only
// after the unmap or after the request's outcome was collected; where a test touches one
// meanwhile, it stands in for the device or checks on purpose what the device or a bounce did.
kernel::test_kernel_owns_its_buffers!();
use owned::{TestIo, TestMaps};

fn main(k: &'static Kernel) -> ExitStatus {
    kprintln!("virtio_blk tests: swiotlb_policy={:?} dma_debug={}", k.params.swiotlb_policy, k.params.dma_debug);
    // Several cases (the IRQ deferral, the device pool, reclaim during reads) hold completions
    // back by masking IRQs on this CPU (IRQS_OFF): with more CPUs the disks' interrupts are
    // spread over them, and masking here would hold nothing back. Route them all here; with
    // several CPUs a disk left elsewhere fails the suite rather than a case by chance.
    for disk in virtio_blk::disks() {
        if let Err(x) = kernel::platform::irq::set_affinity(disk.irq, kernel::platform::smp::cpu_id()) {
            kprintln!("disk{}: interrupt not moved to this CPU: {x}", disk.index);
            if kernel::platform::smp::num_online_cpus() > 1 {
                return ExitStatus::Failure;
            }
        }
    }
    ktest::run(
        "virtio_blk",
        &[
            TestCase { name: "probe_finds_both_disks", run: probe_finds_both_disks },
            TestCase { name: "read_verify_whole_disks_crc32", run: read_verify_whole_disks },
            TestCase { name: "reads_known_pattern_bounced_and_direct", run: reads_known_pattern },
            TestCase { name: "write_then_read_back", run: write_then_read_back },
            TestCase { name: "many_requests_in_flight_complete_from_irq", run: many_in_flight },
            TestCase { name: "disk0_hint_gives_it_a_device_pool", run: disk0_device_pool },
            TestCase { name: "reclaim_runs_while_reads_are_in_flight", run: reclaim_during_io },
            TestCase { name: "disk1_every_dma_address_in_restricted_pool", run: disk1_restricted },
            TestCase { name: "disk1_pool_full_is_busy_then_retried", run: disk1_pool_full_retry },
            TestCase { name: "disk1_queued_requests_started_from_irq", run: disk1_queued_started_from_irq },
            TestCase { name: "disk1_irq_mapping_failure_deferred_to_task", run: disk1_irq_deferral },
            TestCase { name: "flush", run: flush },
            TestCase { name: "completion_callbacks_run_once_from_irq", run: completion_callbacks },
            TestCase { name: "get_id_reads_the_serial", run: get_id },
            TestCase { name: "large_read_split_into_multi_segment_requests", run: large_read_split },
            TestCase { name: "task_context_bounce_copies_run_with_interrupts_on", run: copies_with_interrupts_on },
            TestCase { name: "read_only_disk_refuses_writes", run: read_only_disk },
            TestCase { name: "request_past_its_deadline_fails_and_resets_device", run: request_timeout },
            TestCase { name: "no_dma_api_misuse", run: no_misuse },
        ],
    )
}

const TIMEOUT: Duration = Duration::from_secs(5);
const SECTOR: usize = 512;
const NOATTR: DmaAttrs = DmaAttrs { skip_cpu_sync: false, no_copy_in: false };

/// Byte `i` of sector `sector` as the script writes disk0.
fn sector_pattern(sector: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (sector + (i / SECTOR) as u64).to_le_bytes()[i % 8]).collect()
}

/// What the tests write: sector `s` holds `!s` as little-endian u64s (the script checks it).
fn written_pattern(sector: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (!(sector + (i / SECTOR) as u64)).to_le_bytes()[i % 8]).collect()
}

fn disk0() -> Result<&'static Disk, String> {
    virtio_blk::disk(0).map_err(e)
}

fn disk1() -> Result<&'static Disk, String> {
    virtio_blk::disk(1).map_err(e)
}

fn probe_finds_both_disks() -> TestResult {
    let n = virtio_blk::probe_all();
    kassert!(n >= 2, "found {n} disks; run with scripts/virtio-blk-tests.sh (two --disk)");
    let (d0, d1) = (disk0()?, disk1()?);
    kassert_eq!(d0.name, "virtio_mmio@a003e00");
    kassert_eq!(d1.name, "virtio_mmio@a003c00");
    for d in [d0, d1] {
        kprintln!(
            "  disk{}: {} sectors, features {:#x}, irq {}, max transfer {} ({:?})",
            d.index,
            d.config.capacity,
            d.features,
            d.irq,
            d.max_transfer(),
            d.dma_dev
        );
        kassert!(d.access_platform(), "iommu_platform=on: ACCESS_PLATFORM negotiated");
        kassert!(!d.readonly());
    }
    kassert_eq!(d0.config.capacity, 8192);
    // The root bus's DMA window (dts/reserved-memory.dtsi, fitted to RAM by qemu-run.sh), with
    // RAM beyond it.
    let k = kernel::platform::kernel();
    let limit = k.dt.smallest_dma_limit().map_err(e)?.ok_or("no DMA window in the device tree")?;
    kassert!(k.memblock.ram().iter().any(|r| r.end() > limit + 1), "the DMA window (to {limit:#x}) covers all RAM");
    kassert_eq!(d0.dma_dev.dma_limit(), Some(limit));
    kassert!(matches!(d1.dma_dev.policy(), BouncePolicy::Restricted(_)), "disk1 behind the restricted pool");
    Ok(())
}

fn read_verify_whole_disks() -> TestResult {
    let buf = buffer(6, true)?;
    for (d, expect) in [(disk0()?, Some(pattern_crc(disk0()?.config.capacity))), (disk1()?, None)] {
        // SAFETY: `buf` (256 KiB) is this test's, untouched until the call returns.
        let (bytes, crc) = unsafe { read_verify(d, buf, 256 * 1024, TIMEOUT) }.map_err(e)?;
        kprintln!("disk{} bytes={} crc32={:08x}", d.index, bytes, crc);
        kassert_eq!(bytes, d.size_bytes());
        if let Some(expect) = expect {
            kassert_eq!(format!("{crc:08x}"), format!("{expect:08x}"));
        }
    }
    free(buf, 6);
    Ok(())
}

/// CRC-32 of a disk holding [`sector_pattern`] throughout.
fn pattern_crc(sectors: u64) -> u32 {
    let mut crc = kernel::crc32::Crc32::new();
    for s in 0..sectors {
        crc.update(&sector_pattern(s, SECTOR));
    }
    crc.finish()
}

fn reads_known_pattern() -> TestResult {
    let d = disk0()?;
    let last = d.config.capacity;
    let cases: [(u64, usize); 7] = [(0, 512), (1, 4096), (7, 1536), (100, 65536), (last - 8, 4096), (333, 256 * 1024), (last - 1, 512)];
    for high in [true, false] {
        let buf = buffer(6, high)?;
        for (sector, len) in cases {
            mem().fill(buf, 0xee, len);
            let (bounced, direct) = (d.stats.data_bounced.load(Ordering::Relaxed), d.stats.data_direct.load(Ordering::Relaxed));
            d.test_read(sector, buf, len, TIMEOUT).map_err(|x| format!("read {len} at {sector}: {x}"))?;
            kassert!(read_back(buf, len) == sector_pattern(sector, len), "data of {len} bytes at sector {sector} (high={high})");
            // Beyond the window it bounces; inside it only under swiotlb=force.
            let bounces = high || matches!(d.dma_dev.policy(), BouncePolicy::Forced);
            let counter = if bounces { &d.stats.data_bounced } else { &d.stats.data_direct };
            let before = if bounces { bounced } else { direct };
            kassert_eq!(counter.load(Ordering::Relaxed), before + 1);
        }
        free(buf, 6);
    }
    // Not whole sectors, or more than one mapping: refused before anything is mapped.
    let buf = buffer(0, true)?;
    kassert!(matches!(d.test_submit_read(0, buf, 100), Err(BlkError::BadBuffer { .. })));
    kassert!(matches!(d.test_submit_read(0, buf, d.max_transfer() + 512), Err(BlkError::BadBuffer { .. })));
    kassert!(matches!(d.test_submit_read(last, buf, 512), Err(BlkError::Virtio(_))), "past the end");
    free(buf, 0);
    kassert_eq!(d.in_flight(), 0);
    Ok(())
}

fn write_then_read_back() -> TestResult {
    let d = disk0()?;
    let base = d.config.capacity - 256;
    let (src, dst) = (buffer(4, true)?, buffer(4, false)?);
    // 128 sectors in two writes: one from above the window (bounced), one from inside it.
    let half = 64 * SECTOR;
    mem().write(src, &written_pattern(base, half));
    d.test_write(base, src, half, TIMEOUT).map_err(e)?;
    mem().write(dst, &written_pattern(base + 64, half));
    d.test_write(base + 64, dst, half, TIMEOUT).map_err(e)?;
    mem().fill(src, 0, 2 * half);
    d.test_read(base, src, 2 * half, TIMEOUT).map_err(e)?;
    kassert!(read_back(src, 2 * half) == written_pattern(base, 2 * half), "read back what was written");
    // The sectors around it are untouched.
    d.test_read(base - 1, dst, SECTOR, TIMEOUT).map_err(e)?;
    kassert!(read_back(dst, SECTOR) == sector_pattern(base - 1, SECTOR));
    d.test_read(base + 128, dst, SECTOR, TIMEOUT).map_err(e)?;
    kassert!(read_back(dst, SECTOR) == sector_pattern(base + 128, SECTOR));
    free(src, 4);
    free(dst, 4);
    Ok(())
}

/// Masks IRQs on this CPU while held: the device completes, the handler cannot run yet.
static IRQS_OFF: IrqSafeSpinLock<()> = IrqSafeSpinLock::new(());

fn many_in_flight() -> TestResult {
    let d = disk0()?;
    // With indirect descriptors the whole queue is in flight, without them a third of it (the
    // bootarg blk_indirect=off); both beyond or at the old limit of 21.
    let max = d.max_in_flight();
    let expected = if d.indirect() { QUEUE_SIZE } else { DIRECT_MAX_IN_FLIGHT };
    kprintln!("  indirect {}, event_idx {}: {max} requests in flight at most", d.indirect(), d.event_idx());
    kassert_eq!(max, expected);
    // The bootargs decide what was negotiated (QEMU offers both features).
    let params = &kernel::platform::kernel().params;
    kassert_eq!((d.indirect(), d.event_idx()), (params.blk_indirect, params.blk_event_idx));
    let n = 3 * max;
    const LEN: usize = 4096;
    let bufs = buffer(8, true)?; // n * 4 KiB, above the window
    kassert!(n * LEN <= 4096 << 8);
    mem().fill(bufs, 0xee, n * LEN);
    let kicks_before = d.stats.kicks.load(Ordering::Relaxed);
    let irqs_before = d.stats.irqs.load(Ordering::Relaxed);
    let completed_before = d.stats.completed_in_irq.load(Ordering::Relaxed);
    let polled_before = d.stats.completed_by_poll.load(Ordering::Relaxed);
    let mut tickets = Vec::new();
    // Fill the queue with interrupts masked: every request stays in flight, one more is Busy.
    {
        let _off = IRQS_OFF.lock();
        for i in 0..max {
            tickets.push(d.test_submit_read(i as u64 * 8, bufs + (i * LEN) as u64, LEN).map_err(e)?);
        }
        kassert_eq!(d.in_flight(), max);
        kassert_eq!(d.test_submit_read(0, bufs, LEN), Err(BlkError::Busy));
    }
    // The rest as slots free up: the handler completes requests while we submit, and we
    // collect their outcomes (a completed request holds its slot until collected).
    let deadline = time::uptime() + TIMEOUT;
    let mut max_in_flight_later = 0;
    let mut collected = alloc::vec![false; n];
    let collect = |tickets: &[kernel::block::Ticket], collected: &mut [bool]| -> Result<(), String> {
        for (i, t) in tickets.iter().enumerate() {
            if !collected[i] {
                if let Some(outcome) = d.poll(*t) {
                    outcome.map_err(|x| format!("request {i}: {x}"))?;
                    collected[i] = true;
                }
            }
        }
        Ok(())
    };
    while tickets.len() < n {
        let i = tickets.len();
        match d.test_submit_read(i as u64 * 8, bufs + (i * LEN) as u64, LEN) {
            Ok(t) => tickets.push(t),
            Err(BlkError::Busy) if time::uptime() < deadline => {
                kernel::platform::idle();
                collect(&tickets, &mut collected)?;
            }
            Err(x) => return Err(format!("request {i}: {x}")),
        }
        max_in_flight_later = max_in_flight_later.max(d.in_flight());
    }
    while collected.iter().any(|c| !c) {
        kassert!(time::uptime() < deadline, "timed out with {} in flight", d.in_flight());
        collect(&tickets, &mut collected)?;
        kernel::platform::idle();
    }
    for i in 0..n {
        kassert!(read_back(bufs + (i * LEN) as u64, LEN) == sector_pattern(i as u64 * 8, LEN), "request {i}'s data");
    }
    let irqs = d.stats.irqs.load(Ordering::Relaxed) - irqs_before;
    let completed = d.stats.completed_in_irq.load(Ordering::Relaxed) - completed_before;
    // The tick's used-ring poll may find a request the device used before its interrupt
    // arrives (a host thread busy elsewhere delays the interrupt): it counts as completed too,
    // but the handler must have done most of the work.
    let polled = d.stats.completed_by_poll.load(Ordering::Relaxed) - polled_before;
    let kicks = d.stats.kicks.load(Ordering::Relaxed) - kicks_before;
    kprintln!(
        "  {n} reads, {irqs} interrupts, {completed} completed by the handler, {polled} by the tick's poll, {kicks} kicks, up to {max_in_flight_later} in flight while refilling"
    );
    kassert_eq!(completed + polled, n as u64);
    kassert!(completed >= n as u64 / 2, "only {completed} of {n} completed by the interrupt handler");
    kassert!(irqs >= 1 && irqs <= n as u64);
    kassert!(kicks >= 1 && kicks <= n as u64);
    kassert_eq!(d.in_flight(), 0);
    free(bufs, 8);
    Ok(())
}

fn disk1_restricted() -> TestResult {
    let d = disk1()?;
    let BouncePolicy::Restricted(pool) = d.dma_dev.policy() else { return Err("disk1 not restricted".into()) };
    let range = pool.range();
    let (src, dst) = (buffer(6, true)?, buffer(6, false)?);
    let len = 128 * 1024;
    mem().write(src, &written_pattern(0, len));
    d.test_write(0, src, len, TIMEOUT).map_err(e)?;
    mem().write(dst, &written_pattern(256, len));
    d.test_write(256, dst, len, TIMEOUT).map_err(e)?;
    mem().fill(src, 0, len);
    mem().fill(dst, 0, len);
    d.test_read(0, dst, len, TIMEOUT).map_err(e)?;
    d.test_read(256, src, len, TIMEOUT).map_err(e)?;
    kassert!(read_back(dst, len) == written_pattern(0, len));
    kassert!(read_back(src, len) == written_pattern(256, len));
    let (lo, hi) = (d.stats.dma_lowest.load(Ordering::Relaxed), d.stats.dma_highest.load(Ordering::Relaxed));
    kprintln!("  disk1 DMA addresses {lo:#x}..={hi:#x}, pool {:#x}..{:#x}", range.start, range.end);
    kassert!(range.contains(&lo) && range.contains(&hi), "every request address inside the pool");
    let (desc, avail, used) = d.ring_dma_addresses();
    kassert!(range.contains(&desc) && range.contains(&avail) && range.contains(&used), "rings inside the pool");
    kassert_eq!(d.stats.data_direct.load(Ordering::Relaxed), 0);
    free(src, 6);
    free(dst, 6);
    Ok(())
}

fn disk1_pool_full_retry() -> TestResult {
    let d = disk1()?;
    const LEN: usize = 256 * 1024; // one SWIOTLB segment: 16 of these are the whole 4 MiB pool
    const N: usize = 16;
    let mut bufs = Vec::new();
    for _ in 0..N {
        let b = buffer(6, true)?; // 256 KiB each
        mem().fill(b, 0xee, LEN);
        bufs.push(b);
    }
    let failures_before = dma().api.stats.map_failures.load(Ordering::Relaxed);
    let mut tickets = Vec::new();
    let busy_at = {
        let _off = IRQS_OFF.lock();
        loop {
            let i = tickets.len();
            match d.test_submit_read((i * LEN / SECTOR) as u64 % 2048, bufs[i], LEN) {
                Ok(t) => tickets.push(t),
                Err(BlkError::Busy) => {
                    kassert_eq!(d.in_flight(), i); // IRQs masked: nothing completed yet
                    break i;
                }
                Err(x) => return Err(e(x)),
            }
            kassert!(i < N, "the pool never filled");
        }
    };
    kprintln!("  restricted pool full after {busy_at} reads of 256 KiB in flight");
    kassert!(busy_at < d.max_in_flight(), "Busy from the pool, not from the request table");
    kassert!(dma().api.stats.map_failures.load(Ordering::Relaxed) > failures_before);
    // Retry the rest as completions free bounce slots.
    let deadline = time::uptime() + TIMEOUT;
    while tickets.len() < N {
        let i = tickets.len();
        match d.test_submit_read((i * LEN / SECTOR) as u64 % 2048, bufs[i], LEN) {
            Ok(t) => tickets.push(t),
            Err(BlkError::Busy) if time::uptime() < deadline => kernel::platform::idle(),
            Err(x) => return Err(format!("request {i}: {x}")),
        }
    }
    for t in &tickets {
        wait_for(d, *t, deadline).map_err(e)?;
    }
    check_disk1_reads(&bufs, LEN)?;
    kassert_eq!(d.in_flight(), 0);
    bufs.into_iter().for_each(|b| free(b, 6));
    Ok(())
}

/// Request `i` of `bufs` read `len` bytes from sector `i * len / SECTOR % 2048` of disk1, which
/// holds written_pattern over sectors 0..512 (an earlier test) and zeros after.
fn check_disk1_reads(bufs: &[PhysAddr], len: usize) -> TestResult {
    for (i, buf) in bufs.iter().enumerate() {
        let sector = (i * len / SECTOR) as u64 % 2048;
        let expect = if sector < 512 { written_pattern(sector, len) } else { alloc::vec![0; len] };
        kassert!(read_back(*buf, len) == expect, "request {i} (sector {sector})");
    }
    Ok(())
}

/// Queued requests that do not fit the pool wait; the interrupt handler starts them (mapping
/// in interrupt context) as completions free bounce slots.
fn disk1_queued_started_from_irq() -> TestResult {
    let d = disk1()?;
    const LEN: usize = 256 * 1024;
    const N: usize = 16;
    let mut bufs = Vec::new();
    for _ in 0..N {
        let b = buffer(6, true)?;
        mem().fill(b, 0xee, LEN);
        bufs.push(b);
    }
    let started_in_irq_before = d.stats.started_in_irq.load(Ordering::Relaxed);
    let maps_in_irq_before = dma().api.stats.maps_in_irq.load(Ordering::Relaxed);
    let mut tickets = Vec::new();
    {
        let _off = IRQS_OFF.lock();
        for (i, buf) in bufs.iter().enumerate() {
            tickets.push(d.test_queue_read((i * LEN / SECTOR) as u64 % 2048, *buf, LEN).map_err(e)?);
        }
        kprintln!("  {} started, {} waiting for bounce slots", d.in_flight(), d.waiting());
        kassert!(d.waiting() > 0 && d.in_flight() + d.waiting() == N);
    }
    let deadline = time::uptime() + TIMEOUT;
    for t in &tickets {
        wait_for(d, *t, deadline).map_err(e)?;
    }
    check_disk1_reads(&bufs, LEN)?;
    let started = d.stats.started_in_irq.load(Ordering::Relaxed) - started_in_irq_before;
    kprintln!("  {started} started by the interrupt handler");
    kassert!(started > 0);
    kassert!(dma().api.stats.maps_in_irq.load(Ordering::Relaxed) >= maps_in_irq_before + 3 * started);
    kassert_eq!((d.in_flight(), d.waiting()), (0, 0));
    bufs.into_iter().for_each(|b| free(b, 6));
    Ok(())
}

/// A waiting request the interrupt handler cannot map (the pool is full) is handed to task
/// context, which starts it once the pool has room: not lost, completed once.
fn disk1_irq_deferral() -> TestResult {
    let d = disk1()?;
    let api = &dma().api;
    const BIG: usize = 256 * 1024;
    let (small, big, filler) = (buffer(0, true)?, buffer(6, true)?, buffer(6, false)?);
    mem().fill(small, 0xee, SECTOR);
    mem().fill(big, 0xee, BIG);
    let deferred_before = d.stats.deferred_to_task.load(Ordering::Relaxed);
    let by_work_before = d.stats.started_by_work.load(Ordering::Relaxed);
    let irq_failures_before = api.stats.irq_failures.load(Ordering::Relaxed);
    let mut fillers = Vec::new();
    let (a, b) = {
        let _off = IRQS_OFF.lock();
        let a = d.test_queue_read(0, small, SECTOR).map_err(e)?;
        kassert_eq!(d.in_flight(), 1);
        // Fill the restricted pool from task context, large mappings first, then single slots.
        for size in [BIG, 2048] {
            while let Ok(dma_addr) = api.test_map_single(d.dma_dev, filler, size, DmaDirection::ToDevice, NOATTR) {
                fillers.push((dma_addr, size));
            }
        }
        // Accepted, but it cannot be mapped: it waits in its slot.
        let b = d.test_queue_read(512, big, BIG).map_err(e)?;
        kassert_eq!((d.in_flight(), d.waiting()), (1, 1));
        (a, b)
    };
    // `a` completes in the handler, which frees a few slots and tries `b`: too big, deferred.
    let deadline = time::uptime() + TIMEOUT;
    while d.stats.deferred_to_task.load(Ordering::Relaxed) == deferred_before {
        kassert!(time::uptime() < deadline, "the handler never tried the waiting request");
        kernel::platform::idle();
    }
    kassert_eq!(wait_for(d, a, deadline), Ok(()));
    kassert!(read_back(small, SECTOR) == written_pattern(0, SECTOR));
    kassert!(api.stats.irq_failures.load(Ordering::Relaxed) > irq_failures_before, "a mapping failed in interrupt context");
    kassert_eq!(d.waiting(), 1);
    kernel::platform::idle(); // the work item retries: still no room
    kassert_eq!((d.waiting(), d.in_flight()), (1, 0));
    for (dma_addr, size) in fillers.drain(..) {
        api.unmap_single(d.dma_dev, dma_addr, size, DmaDirection::ToDevice, NOATTR).map_err(e)?;
    }
    wait_for(d, b, deadline).map_err(e)?;
    kassert!(read_back(big, BIG).iter().all(|&x| x == 0), "disk1 sectors 512.. are zeros");
    kassert_eq!(d.stats.started_by_work.load(Ordering::Relaxed), by_work_before + 1);
    kassert_eq!(d.poll(b), None); // completed once, collected once
    kprintln!(
        "  deferred {} time(s) from IRQ context, started by the work item",
        d.stats.deferred_to_task.load(Ordering::Relaxed) - deferred_before
    );
    free(small, 0);
    free(big, 6);
    free(filler, 6);
    Ok(())
}

fn flush() -> TestResult {
    let d = disk0()?;
    if d.features & drivers::virtio::blk::feature::FLUSH == 0 {
        kassert_eq!(d.submit_flush(), Err(BlkError::Virtio(drivers::virtio::Error::Unsupported)));
        return Ok(());
    }
    d.flush(TIMEOUT).map_err(e)?;
    disk1()?.flush(TIMEOUT).map_err(e)
}

fn disk0_device_pool() -> TestResult {
    let d = disk0()?;
    let policy = dma().manager.policy();
    let Some(pool) = d.dma_dev.device_pool() else {
        // Under `dynamic` and `cma` the hint is refused (Linux has no per-device pools).
        kassert!(
            matches!(policy, kernel::bootargs::SwiotlbPolicy::Dynamic | kernel::bootargs::SwiotlbPolicy::Cma),
            "disk0 hinted {} KiB but has no device pool under {policy:?}",
            kernel::platform::kernel().params.blk_inflight_kib
        );
        return Ok(());
    };
    const LEN: usize = 64 * 1024;
    let buf = buffer(4, true)?;
    let default = dma().manager.default_pool();
    let (before, bounced) = (default.used_slots(), d.stats.data_bounced.load(Ordering::Relaxed));
    let irqs = IRQS_OFF.lock(); // the request stays in flight while we look
    let t = d.test_submit_read(0, buf, LEN);
    let during = default.used_slots();
    drop(irqs);
    let t = t.map_err(e)?;
    wait_for(d, t, time::uptime() + TIMEOUT).map_err(e)?;
    kprintln!("  device pool {:#x?}; default pool used slots {before} -> {during}", pool.range());
    kassert_eq!(d.stats.data_bounced.load(Ordering::Relaxed), bounced + 1, "the read bounced");
    kassert_eq!(during, before, "header, data and status bounced through the device pool, not the default one");
    kassert!(read_back(buf, LEN) == sector_pattern(0, LEN));
    free(buf, 4);
    Ok(())
}

/// Under memory pressure that fills the lent pageblocks, 20 bounced reads of 256 KiB outgrow the
/// default pool: under `lend` the worker reclaims lent pageblocks (migrating the pressure's
/// pages) while the other reads are in flight. Every read and every migrated page must be intact.
fn reclaim_during_io() -> TestResult {
    use kernel::demo::pressure::MemoryPressure;
    use kernel::mm::page_alloc::ZoneType;
    use kernel::platform::mm::page_allocator;
    const N: usize = 20;
    const LEN: usize = 256 * 1024;
    let d = disk0()?;
    let m = dma().manager;
    let had_pool = d.dma_dev.device_pool().is_some();
    virtio_blk::hint_inflight(d, 0); // without its own pool, disk0 bounces through the default pool
    kassert!(d.dma_dev.device_pool().is_none());
    let bufs: Vec<PhysAddr> = (0..N).map(|_| buffer(6, true)).collect::<Result<_, _>>()?;
    let pages = page_allocator();
    let nfree = {
        let a = pages.lock(); // one guard: two in one expression would deadlock
        a.nr_free_pages(ZoneType::Normal) + a.nr_free_pages(ZoneType::Dma)
    };
    // Fill RAM to the last 512 pages, the lent pageblocks included, then free every fourth page:
    // every lent pageblock holds pages, so whichever the pool reclaims (it prefers no particular
    // one), it must migrate some.
    let mut pressure = MemoryPressure::fill(pages, mem(), ZoneType::Normal, nfree.saturating_sub(512), 99);
    pressure.release_every(pages, 4);
    let sector = |i: usize| (i * LEN / SECTOR) as u64 % (d.config.capacity - (LEN / SECTOR) as u64);
    let before = m.stats();
    let t0 = time::uptime();
    // The reads and checks; the clean-up below runs whatever they say.
    let run = || -> TestResult {
        let mut tickets = Vec::new();
        // With this CPU's interrupts masked the device's completions wait: the reads stay in
        // flight (their data in bounce slots) while the worker reclaims, as on a slow device.
        let irqs = IRQS_OFF.lock();
        for (i, b) in bufs.iter().enumerate() {
            tickets.push(d.test_queue_read(sector(i), *b, LEN).map_err(e)?);
        }
        let (in_flight, waiting) = (d.in_flight(), d.waiting());
        // The worker runs here or on another CPU (every idle loop runs the queue): each pass
        // waits for its run to finish wherever it ran, so a reclaim under way is counted.
        for _ in 0..50 {
            kernel::platform::dma::maintenance();
            kernel::work::SYSTEM_WQ.flush(); // the SWIOTLB worker, in task context
            if m.stats().pageblocks_reclaimed > before.pageblocks_reclaimed {
                break;
            }
        }
        let during = m.stats();
        drop(irqs);
        for t in &tickets {
            wait_for(d, *t, t0 + Duration::from_secs(60)).map_err(e)?;
        }
        let reclaimed = during.pageblocks_reclaimed - before.pageblocks_reclaimed;
        let migrated = during.pages_migrated - before.pages_migrated;
        kprintln!("  {N} reads of {} KiB: {in_flight} in flight, {waiting} waiting for slots; meanwhile {reclaimed} pageblocks reclaimed ({migrated} pages migrated); all done in {:?}", LEN / 1024, time::uptime() - t0);
        for (i, b) in bufs.iter().enumerate() {
            kassert!(read_back(*b, LEN) == sector_pattern(sector(i), LEN), "read {i} intact");
        }
        kassert!(pressure.verify(pages, mem()).is_ok(), "every migrated page intact");
        if m.policy() == kernel::bootargs::SwiotlbPolicy::Lend {
            kassert!(reclaimed > 0 && migrated > 0, "the pool grew by reclaim during the reads");
        }
        Ok(())
    };
    let result = run();
    pressure.release(pages).map_err(|x| format!("{x:?}"))?;
    bufs.into_iter().for_each(|b| free(b, 6));
    if had_pool {
        virtio_blk::hint_inflight(d, kernel::platform::kernel().params.blk_inflight_kib as usize * 1024);
    }
    result
}

static CALLED: [core::sync::atomic::AtomicU32; 8] = [const { core::sync::atomic::AtomicU32::new(0) }; 8];
static CALLED_IN_IRQ: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
static CALLED_OK: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

fn on_complete(cookie: u64, outcome: Result<(), BlkError>) {
    CALLED[cookie as usize].fetch_add(1, Ordering::Relaxed);
    if kernel::arch::in_interrupt() {
        CALLED_IN_IRQ.fetch_add(1, Ordering::Relaxed);
    }
    if outcome.is_ok() {
        CALLED_OK.fetch_add(1, Ordering::Relaxed);
    }
}

fn completion_callbacks() -> TestResult {
    use virtio_blk::BlockRequest;
    const LEN: usize = 64 * 1024;
    let d = disk0()?;
    let buf = buffer(9, true)?; // 8 x 64 KiB, bounced
    mem().fill(buf, 0xee, 8 * LEN);
    for i in 0..8u64 {
        let sector = i * (LEN / SECTOR) as u64;
        d.test_queue_with_callback(BlockRequest::Read { sector, buf: buf + i * LEN as u64, len: LEN }, on_complete, i).map_err(e)?;
    }
    let t0 = time::uptime();
    while CALLED.iter().map(|c| c.load(Ordering::Relaxed)).sum::<u32>() < 8 && time::uptime() < t0 + TIMEOUT {
        kernel::platform::idle();
    }
    // A little longer: a second call would show up now.
    time::delay(Duration::from_millis(20));
    let calls: Vec<u32> = CALLED.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    kprintln!(
        "  calls per request {calls:?}, {} in interrupt context, {} ok",
        CALLED_IN_IRQ.load(Ordering::Relaxed),
        CALLED_OK.load(Ordering::Relaxed)
    );
    kassert!(calls.iter().all(|&c| c == 1), "each callback ran exactly once: {calls:?}");
    kassert_eq!(CALLED_OK.load(Ordering::Relaxed), 8);
    kassert_eq!(CALLED_IN_IRQ.load(Ordering::Relaxed), 8, "completed by the interrupt handler");
    kassert!(read_back(buf, 8 * LEN) == sector_pattern(0, 8 * LEN), "data read back");
    kassert_eq!((d.in_flight(), d.waiting()), (0, 0));
    // The slots were freed without a ticket: the table is whole again.
    let tickets: Vec<_> =
        (0..d.max_in_flight()).map(|_| d.queue_flush()).collect::<Result<_, _>>().map_err(|x| format!("a slot was not freed: {x}"))?;
    for t in tickets {
        wait_for(d, t, time::uptime() + TIMEOUT).map_err(e)?;
    }
    free(buf, 9);
    Ok(())
}

fn get_id() -> TestResult {
    let d = disk0()?;
    let id = d.get_id(TIMEOUT).map_err(e)?;
    let end = id.iter().position(|&b| b == 0).unwrap_or(id.len());
    let serial = core::str::from_utf8(&id[..end]).map_err(e)?;
    kprintln!("  disk0 serial {serial:?}");
    kassert_eq!(serial, "dmabounce-disk0", "the serial given to QEMU");
    Ok(())
}

/// Regression: no bounce copy in task context runs with interrupts masked (under a disk's, a
/// device pool's or any other IRQ-safe lock). The bounce routine counts such copies, so the
/// verdict does not depend on timer ticks landing between copies (the old version of this
/// test counted ticks during a submission and failed once on a loaded machine).
fn copies_with_interrupts_on() -> TestResult {
    let buf = buffer(9, true)?;
    // Timed copies are counted by context too: the count shows the workload bounced in task
    // context (the masked ones are counted either way).
    kernel::dma::swiotlb::set_copy_timing(true);
    let (copies0, masked0) = kernel::dma::swiotlb::task_copy_stats();
    for d in [disk0()?, disk1()?] {
        let size = (d.size_bytes() as usize).min(2 << 20);
        // One request submitted now, mapped by its submitter.
        let ticket = d.test_submit_read(0, buf, d.max_transfer()).map_err(e)?;
        wait_for(d, ticket, time::uptime() + TIMEOUT).map_err(e)?;
        // More requests than the table holds at once: the later ones wait and are started by
        // the interrupt handler or the retry work item, and requests queued behind waiting
        // ones are started oldest first.
        let piece = 16 * 1024;
        let mut tickets = Vec::new();
        for i in 0..(d.max_in_flight() + 8).min(size / piece) {
            match d.test_queue_read((i * piece / SECTOR) as u64, buf + (i * piece) as u64, piece) {
                Ok(t) => tickets.push(t),
                Err(BlkError::Busy) => break,
                Err(x) => return Err(e(x)),
            }
        }
        for t in tickets {
            wait_for(d, t, time::uptime() + TIMEOUT).map_err(e)?;
        }
        // The synchronous call: split, queued, refilled as it collects.
        d.test_read(0, buf, size, TIMEOUT).map_err(e)?;
        if d.index == 0 {
            kassert!(read_back(buf, size) == sector_pattern(0, size), "disk0 read back");
        }
        d.flush(TIMEOUT).map_err(e)?;
    }
    let (copies, masked) = kernel::dma::swiotlb::task_copy_stats();
    kernel::dma::swiotlb::set_copy_timing(false);
    let (copies, masked) = (copies - copies0, masked - masked0);
    kprintln!("  {copies} bounce copies in task context, {masked} of them with interrupts masked");
    kassert!(copies > 0, "the workload bounced nothing in task context");
    kassert_eq!(masked, 0, "bounce copies ran with interrupts masked in task context");
    free(buf, 9);
    Ok(())
}

fn large_read_split() -> TestResult {
    let d = disk0()?;
    kassert!(d.segments_max() > 1, "QEMU offers SEG_MAX > 1; got {} segments of {}", d.segments_max(), d.segment_max());
    kassert_eq!(d.max_transfer(), d.segment_max() * d.segments_max());
    let order = 9; // 2 MiB, the largest block the page allocator hands out
    let len = (d.size_bytes() as usize).min(4096 << order);
    kassert!(len > d.max_transfer(), "{len} bytes are more than one request ({})", d.max_transfer());
    let buf = buffer(order, true)?;
    mem().fill(buf, 0xee, len);
    let (submitted, bounced) = (d.stats.submitted.load(Ordering::Relaxed), d.stats.data_bounced.load(Ordering::Relaxed));
    d.test_read(0, buf, len, Duration::from_secs(60)).map_err(e)?;
    kassert!(read_back(buf, len) == sector_pattern(0, len), "{len} bytes read in one call");
    let requests = d.stats.submitted.load(Ordering::Relaxed) - submitted;
    let segments = d.stats.data_bounced.load(Ordering::Relaxed) - bounced;
    kprintln!("  {len} bytes: {requests} requests of up to {} segments of {} bytes", d.segments_max(), d.segment_max());
    kassert_eq!(requests as usize, len.div_ceil(d.max_transfer()));
    kassert_eq!(segments as usize, len.div_ceil(d.segment_max()), "each segment mapped (bounced) on its own");
    free(buf, order);
    Ok(())
}

fn read_only_disk() -> TestResult {
    let d = virtio_blk::disk(3).map_err(|x| format!("{x}; run with scripts/virtio-blk-tests.sh (four --disk)"))?;
    kassert!(d.readonly(), "disk3 attached readonly=on offers VIRTIO_BLK_F_RO");
    let buf = buffer(4, true)?;
    mem().fill(buf, 0x11, 4096);
    let submitted = d.stats.submitted.load(Ordering::Relaxed);
    let refused = |r: Result<(), BlkError>| r == Err(BlkError::Virtio(drivers::virtio::Error::ReadOnly));
    kassert!(refused(d.test_write(0, buf, 4096, TIMEOUT)), "write refused");
    kassert!(refused(d.test_submit_write(0, buf, 4096).map(|_| ())), "submit_write refused");
    kassert!(refused(d.test_queue_write(8, buf, 512).map(|_| ())), "queue_write refused");
    kassert_eq!(d.stats.submitted.load(Ordering::Relaxed), submitted, "nothing reached the device");
    kassert_eq!((d.in_flight(), d.waiting()), (0, 0));
    // Reads work, and show what the host put there.
    d.test_read(0, buf, 64 * 1024, TIMEOUT).map_err(e)?;
    kassert!(read_back(buf, 64 * 1024).iter().all(|&b| b == 0x5a), "disk3 reads back its 0x5a bytes");
    free(buf, 4);
    Ok(())
}

fn request_timeout() -> TestResult {
    let d = virtio_blk::disk(2).map_err(|x| format!("{x}; run with scripts/virtio-blk-tests.sh (four --disk)"))?;
    let (a, b) = (buffer(4, true)?, buffer(4, true)?);
    const LEN: usize = 64 * 1024;
    mem().fill(a, 0xa5, LEN);
    mem().fill(b, 0xa5, LEN);
    // Live mappings as the DMA-API debug tracker counts them (every pool, the per-device one a
    // DMA-limited disk bounces through first included); the default pool's used slots alone
    // would not see a leak there.
    let live = || dma().api.debug().map(|t| t.live()).ok_or("run with dma_debug=on (scripts/virtio-blk-tests.sh does)");
    let used_before = dma().manager.used_slots();
    let live_before = live()?;
    d.set_default_timeout(Duration::from_millis(1500));
    // No resubmission after the reset (retries: tests/virtio_blk_recovery.rs).
    d.set_retries(0);
    // QEMU lets the first request through the throttle and holds the second for ~16 s.
    let t0 = time::uptime();
    let ta = d.test_queue_read(0, a, LEN).map_err(e)?;
    let tb = d.test_queue_read(128, b, LEN).map_err(e)?;
    // Only the tick (interrupt context) can time the request out here: poll, do not wait_for.
    let mut outcomes = [None, None];
    while outcomes.iter().any(Option::is_none) && time::uptime() < t0 + Duration::from_secs(10) {
        for (o, t) in outcomes.iter_mut().zip([ta, tb]) {
            if o.is_none() {
                *o = d.poll(t);
            }
        }
        kernel::platform::idle();
    }
    let took = time::uptime() - t0;
    kprintln!("  outcomes {outcomes:?} after {took:?}; broken: {:?}; stats {:?}", d.broken(), d.stats);
    let [Some(oa), Some(ob)] = outcomes else { return Err(format!("no outcome after {took:?}: the timeout never fired")) };
    kassert!(ob == Err(BlkError::Timeout), "the held request timed out: {ob:?}");
    kassert!(oa.is_ok() || oa == Err(BlkError::Timeout), "the first request completed or timed out: {oa:?}");
    kassert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(5), "failed at its deadline ({took:?})");
    kassert!(d.stats.aborts.load(Ordering::Relaxed) == 1);
    // The timed-out read's buffer was not touched (no copy back of a partial transfer), its
    // bounce slots are free again, and the disk was initialised again (task context).
    kassert!(read_back(b, LEN).iter().all(|&x| x == 0xa5), "buffer of the timed-out read untouched");
    kassert_eq!(dma().manager.used_slots(), used_before, "every default-pool bounce slot taken back");
    kassert_eq!(live()?, live_before, "every mapping taken back (live mappings, any pool)");
    kassert_eq!((d.in_flight(), d.waiting()), (0, 0));
    let settle = time::uptime() + Duration::from_secs(1);
    while d.health() != kernel::block::DiskHealth::Live && time::uptime() < settle {
        kernel::platform::idle();
    }
    kassert_eq!((d.health(), d.broken(), d.resets()), (kernel::block::DiskHealth::Live, None, 1));
    free(a, 4);
    free(b, 4);
    Ok(())
}

fn no_misuse() -> TestResult {
    let stats = &dma().api.stats;
    kprintln!("  DMA {stats}");
    kassert_eq!(stats.misuse.load(Ordering::Relaxed), 0);
    for d in virtio_blk::disks() {
        kprintln!("  disk{}: {:?}", d.index, d.stats);
    }
    Ok(())
}
