//! In-QEMU tests of a disk whose interrupt misbehaves (`platform::irq`'s unhandled-interrupt
//! accounting, Linux `note_interrupt`; `platform::virtio_blk`'s tick poll):
//! - silent: the disk's SPI is masked on purpose, so the device completes without interrupting;
//!   the tick's used-ring poll finishes its requests before their deadline (no reset);
//! - storm: the disk's SPI behaves as a line stuck high with nothing in the used ring (set
//!   pending again through GICD_ISPENDR after each of its interrupts); after one window of
//!   unhandled interrupts (`irq_spurious=`, 1,000) the line is disabled, reported once and
//!   counted, task context runs on, and the disk's I/O completes by polling.
//!
//! Needs the disk scripts/virtio-blk-storm-tests.sh makes and attaches (it runs this kernel and
//! checks on the host that "nobody cared" was reported once and what was written): disk0
//! (`virtio_mmio@a003e00`, DMA-limited), 1 MiB, sector `s` holds the little-endian u64 `s` 64
//! times. Sectors 200..208 get `!s` (silent case), 300..308 get `!s` (storm case).
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::Ordering;
use core::time::Duration;

use alloc::format;
use kernel::block::DiskHealth;
use kernel::ktest::{self, buffer, err as e, free_buffer as free, holds_sectors, sector_pattern, TestCase, TestResult};
use kernel::mm::phys::PhysMemory;
use kernel::mm::PhysAddr;
use kernel::platform::dma::dma;
use kernel::platform::exit::ExitStatus;
use kernel::platform::virtio_blk::{self, BlkError, Disk};
use kernel::platform::{irq, smp, time, Kernel};
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
use owned::TestIo;

/// Interrupts the stuck line is given at most: far more than a window, so that without the
/// detection the test sees them all (and fails) instead of hanging for good.
const STORM: u64 = 100_000;

fn main(k: &'static Kernel) -> ExitStatus {
    kprintln!("virtio_blk_storms tests: irq_spurious={:?} dma_debug={}", k.params.irq_spurious, k.params.dma_debug);
    kprintln!("{} disks", virtio_blk::disks().count());
    // The storm must reach this CPU (the cases measure what it does to task context here).
    if let Ok(d) = virtio_blk::disk(0) {
        if let Err(x) = irq::set_affinity(d.irq, smp::cpu_id()) {
            kprintln!("disk0's irq not routed here: {x}");
        }
    }
    ktest::run(
        "virtio_blk_storms",
        &[
            TestCase { name: "silent_device_completes_by_tick_poll_before_deadline", run: silent_device },
            // Last: the line stays disabled.
            TestCase { name: "interrupt_storm_line_disabled_reported_and_polled", run: storm },
            TestCase { name: "no_dma_api_misuse", run: no_misuse },
        ],
    )
}

fn disk0() -> Result<&'static Disk, alloc::string::String> {
    virtio_blk::disk(0).map_err(|x| format!("{x}; run with scripts/virtio-blk-storm-tests.sh"))
}

/// Live DMA mappings (DMA-API debug tracker: every pool, the per-device one included).
fn live() -> Result<usize, alloc::string::String> {
    Ok(dma().api.debug().ok_or("run with dma_debug=on (the script does)")?.live())
}

/// Polls until every ticket has an outcome, at most `limit` (no `wait_for`: only the tick and
/// the work queue act).
fn poll_all<const N: usize>(d: &Disk, tickets: [kernel::block::Ticket; N], limit: Duration) -> [Option<Result<(), BlkError>>; N] {
    let t0 = time::uptime();
    let mut outcomes = [const { None }; N];
    while outcomes.iter().any(Option::is_none) && time::uptime() < t0 + limit {
        for (o, t) in outcomes.iter_mut().zip(tickets) {
            if o.is_none() {
                *o = d.poll(t);
            }
        }
        kernel::platform::idle();
    }
    outcomes
}

/// A write of sectors `first..first+8` (`!s`) then a read of them and of sectors 0..8, each
/// with a `deadline`, collected by polling; returns the outcomes and how long they took.
fn write_then_read(
    d: &Disk,
    first: u64,
    deadline: Duration,
) -> Result<([Option<Result<(), BlkError>>; 3], Duration, [PhysAddr; 3]), alloc::string::String> {
    let (w, r, z) = (buffer(0, true)?, buffer(0, true)?, buffer(0, true)?);
    for i in 0..8u64 {
        mem().write(w + i * 512, &sector_pattern(!(first + i)));
    }
    mem().fill(r, 0xa5, 4096);
    mem().fill(z, 0xa5, 4096);
    d.set_default_timeout(deadline);
    let t0 = time::uptime();
    let tw = d.test_queue_write(first, w, 4096).map_err(e)?;
    let [ow] = poll_all(d, [tw], deadline * 2);
    let tr = d.test_queue_read(first, r, 4096).map_err(e)?;
    let tz = d.test_queue_read(0, z, 4096).map_err(e)?;
    let [or, oz] = poll_all(d, [tr, tz], deadline * 2);
    Ok(([ow, or, oz], time::uptime() - t0, [w, r, z]))
}

/// The disk's SPI masked on purpose: its requests complete through the tick's used-ring poll,
/// well before their 2 s deadline; no interrupt is taken, no reset happens.
fn silent_device() -> TestResult {
    let d = disk0()?;
    let before = live()?;
    let (irqs, polled, resets) = (d.stats.irqs.load(Ordering::Relaxed), d.stats.completed_by_poll.load(Ordering::Relaxed), d.resets());
    irq::disable_irq(d.irq).map_err(e)?;
    let run = write_then_read(d, 200, Duration::from_secs(2));
    let irqs_masked = d.stats.irqs.load(Ordering::Relaxed) - irqs;
    // The device's ISR bit is still set: this takes one (handled) interrupt.
    irq::enable_irq(d.irq).map_err(e)?;
    let (outcomes, took, bufs) = run?;
    let polled = d.stats.completed_by_poll.load(Ordering::Relaxed) - polled;
    kprintln!("  outcomes {outcomes:?} in {took:?}; {polled} completed by the poll; stats {:?}", d.stats);
    kassert_eq!(outcomes, [const { Some(Ok(())) }; 3], "each request completed");
    kassert_eq!(irqs_masked, 0, "no interrupt was taken while masked");
    kassert_eq!(polled, 3, "all three found by the tick's poll");
    kassert_eq!(d.resets(), resets, "no reset: nothing reached its deadline");
    kassert!(took < Duration::from_secs(2), "each well before its 2 s deadline ({took:?})");
    kassert!(
        holds_sectors(bufs[1], 200, 8, |s| sector_pattern(!s)) && holds_sectors(bufs[2], 0, 8, sector_pattern),
        "the reads hold the disk's bytes"
    );
    kassert_eq!(d.health(), DiskHealth::Live);
    kassert_eq!(live()?, before, "every mapping released");
    for b in bufs {
        free(b, 0);
    }
    Ok(())
}

/// The disk's line stuck high with nothing used: disabled after one window, counted, task
/// context back within a fraction of a second; then I/O completes by the tick's poll.
fn storm() -> TestResult {
    let d = disk0()?;
    let config = kernel::platform::kernel().params.irq_spurious;
    let s0 = irq::spurious_stats(d.irq).ok_or("disk0's line has no handler")?;
    kassert!(!s0.spurious_disabled, "not disabled before the storm");
    let unhandled0 = d.stats.irqs_unhandled.load(Ordering::Relaxed);
    let ticks0 = time::tick_count();
    let t0 = time::uptime();
    irq::inject_stuck_line(d.irq, STORM).map_err(e)?;
    // Task context again: the storm ended (the line disabled) or ran out.
    let back = time::uptime() - t0;
    irq::inject_stuck_line(d.irq, 0).map_err(e)?;
    let s = irq::spurious_stats(d.irq).ok_or("no stats")?;
    let (total, unhandled) = (s.total - s0.total, s.total_unhandled - s0.total_unhandled);
    let disk_unhandled = d.stats.irqs_unhandled.load(Ordering::Relaxed) - unhandled0;
    kprintln!(
        "  storm: {total} interrupts ({unhandled} unhandled, the disk says {disk_unhandled}) in {back:?}, {} ticks; {s:?}",
        time::tick_count() - ticks0
    );
    kassert!(s.spurious_disabled, "the line was disabled ({total} interrupts, {unhandled} unhandled)");
    // The window began before the storm (`s0.irq_count` interrupts in it already).
    let in_window = total + u64::from(s0.irq_count);
    kassert!(
        in_window >= u64::from(config.window) && in_window <= u64::from(config.window) + 16,
        "disabled after one window of {} ({in_window})",
        config.window
    );
    kassert_eq!(unhandled, total, "every storm interrupt unhandled");
    kassert_eq!(disk_unhandled, total, "the disk's handler said IRQ_NONE to each");
    kassert!(back < Duration::from_secs(2), "task context back soon ({back:?})");
    // Later pends reach no CPU: the line stays disabled, nothing more is counted.
    for _ in 0..100 {
        irq::set_pending(d.irq).map_err(e)?;
    }
    kassert_eq!(irq::spurious_stats(d.irq).map(|s| s.total), Some(s.total), "no interrupt after disabling");
    // I/O still completes, by the tick's poll.
    let before = live()?;
    let (polled, resets) = (d.stats.completed_by_poll.load(Ordering::Relaxed), d.resets());
    let (outcomes, took, bufs) = write_then_read(d, 300, Duration::from_secs(2))?;
    let polled = d.stats.completed_by_poll.load(Ordering::Relaxed) - polled;
    kprintln!("  outcomes {outcomes:?} in {took:?}; {polled} completed by the poll; stats {:?}", d.stats);
    kassert_eq!(outcomes, [const { Some(Ok(())) }; 3], "each request completed");
    kassert_eq!(polled, 3, "by the tick's poll");
    kassert_eq!(d.resets(), resets, "no reset");
    kassert!(
        holds_sectors(bufs[1], 300, 8, |s| sector_pattern(!s)) && holds_sectors(bufs[2], 0, 8, sector_pattern),
        "the reads hold the disk's bytes"
    );
    kassert_eq!(live()?, before, "every mapping released");
    for b in bufs {
        free(b, 0);
    }
    Ok(())
}

fn no_misuse() -> TestResult {
    let stats = &dma().api.stats;
    kprintln!("  DMA {stats}");
    kassert_eq!(stats.misuse.load(Ordering::Relaxed), 0);
    for d in virtio_blk::disks() {
        kprintln!("  disk{}: {:?}; irq {:?}", d.index, d.stats, irq::spurious_stats(d.irq));
    }
    Ok(())
}
