//! In-QEMU tests of virtio-blk recovery (`platform::virtio_blk`): a request the device holds
//! past its deadline makes the driver reset the device, take back what it held, initialise it
//! again in task context and resubmit, up to `blk_retries` times; afterwards the disk serves
//! requests again.
//!
//! Needs the disk scripts/virtio-blk-recovery-tests.sh makes and attaches (it runs this kernel):
//! disk0 (`virtio_mmio@a003e00`, DMA-limited: every buffer here bounces): 1 MiB, sector `s`
//! holds the little-endian u64 `s` 64 times, throttled by QEMU to 4 KiB/s. QEMU's throttle lets
//! a request through while its bucket is empty and accounts its bytes, so one read of N KiB
//! makes the requests behind it wait about N/4 seconds: a backend that stalls, then recovers.
//! A reset drains the held request inside QEMU (its completion is dropped with the reset).
//! Writes land where the script checks them: sectors 100..108 get `!s` as u64s.
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::Ordering;
use core::time::Duration;

use alloc::format;
use kernel::block::DiskHealth;
use kernel::ktest::{
    self, buffer, err as e, free_buffer as free, holds_sectors, read_phys as read_back, sector_pattern, TestCase, TestResult,
};
use kernel::mm::phys::PhysMemory;
use kernel::platform::dma::dma;
use kernel::platform::exit::ExitStatus;
use kernel::platform::virtio_blk::{self, BlkError, Disk};
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
use owned::TestIo;

fn main(k: &'static Kernel) -> ExitStatus {
    kprintln!("virtio_blk_recovery tests: blk_retries={} dma_debug={}", k.params.blk_retries, k.params.dma_debug);
    // Probe here, not inside a case: the probe's frames are large, and ktest::run's below them
    // took the 64 KiB boot stack over its guard page (seen: a fault in the exception entry).
    kprintln!("{} disks", virtio_blk::disks().count());
    ktest::run(
        "virtio_blk_recovery",
        &[
            TestCase { name: "stalled_request_reset_retried_and_completes", run: stalled_then_completes },
            TestCase { name: "request_out_of_retries_fails_then_disk_serves_again", run: out_of_retries },
            // Last: a dead disk stays dead.
            TestCase { name: "disk_dead_after_failed_reinits_fails_everything_once", run: dead_disk },
            TestCase { name: "no_dma_api_misuse", run: no_misuse },
        ],
    )
}

/// Polls until every ticket has an outcome (only the tick and the work queue act: no
/// `wait_for`, which would time the request out itself), at most `limit`.
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

/// What mappings hold: the default pool's used slots and the DMA-API debug tracker's live
/// mappings (every device, every pool, direct ones too: disk0's bounces go to the per-device
/// pool its hint earned, which the default pool's count does not see). Needs `dma_debug=on`.
fn held() -> Result<(usize, usize), alloc::string::String> {
    let debug = dma().api.debug().ok_or("run with dma_debug=on (the script does)")?;
    Ok((dma().manager.used_slots(), debug.live()))
}

fn disk0() -> Result<&'static Disk, alloc::string::String> {
    virtio_blk::disk(0).map_err(|x| format!("{x}; run with scripts/virtio-blk-recovery-tests.sh"))
}

/// A 16 KiB read goes through and leaves the throttle ~4 s in debt; a 512-byte read behind it
/// (deadline 1.8 s) is held: the device is reset, the read requeued, and a later attempt gets
/// through as the debt drains.
fn stalled_then_completes() -> TestResult {
    let d = disk0()?;
    d.set_retries(8);
    d.set_default_timeout(Duration::from_millis(1800));
    let (a, b) = (buffer(2, true)?, buffer(0, true)?);
    mem().fill(a, 0xa5, 16 * 1024);
    mem().fill(b, 0xa5, 512);
    let used_before = held()?;
    let resets_before = d.resets();
    let t0 = time::uptime();
    let ta = d.test_queue_read(0, a, 16 * 1024).map_err(e)?;
    let tb = d.test_queue_read(64, b, 512).map_err(e)?;
    let [oa, ob] = poll_all(d, [ta, tb], Duration::from_secs(30));
    let took = time::uptime() - t0;
    kprintln!(
        "  outcomes {oa:?} {ob:?} after {took:?}; resets {}; health {:?}; stats {:?}",
        d.resets() - resets_before,
        d.health(),
        d.stats
    );
    kassert_eq!(oa, Some(Ok(())), "the first read went through");
    kassert_eq!(ob, Some(Ok(())), "the held read completed after its retries");
    kassert!(d.resets() > resets_before, "the device was reset");
    kassert!(d.stats.requeued.load(Ordering::Relaxed) >= 1, "the held read was requeued");
    kassert!(took > Duration::from_millis(1800), "not before its first deadline ({took:?})");
    kassert!(holds_sectors(a, 0, 32, sector_pattern) && holds_sectors(b, 64, 1, sector_pattern), "both read the disk's bytes");
    kassert_eq!(d.health(), DiskHealth::Live);
    kassert_eq!(d.broken(), None);
    kassert_eq!((d.in_flight(), d.waiting()), (0, 0));
    kassert_eq!(held()?, used_before, "every mapping released (bounce slots, live mappings)");
    free(a, 2);
    free(b, 0);
    Ok(())
}

/// A 32 KiB read leaves the throttle ~8 s in debt; a read behind it with one retry and a 1 s
/// deadline fails with `Timeout` after two attempts (buffer untouched, slots released); then the
/// disk serves a write and a read (checked on the host afterwards).
fn out_of_retries() -> TestResult {
    let d = disk0()?;
    // Let the previous case's throttle debt drain first.
    let settle = time::uptime() + Duration::from_secs(6);
    while time::uptime() < settle {
        kernel::platform::idle();
    }
    d.set_retries(1);
    d.set_default_timeout(Duration::from_millis(1000));
    let (a, b) = (buffer(3, true)?, buffer(0, true)?);
    mem().fill(b, 0xa5, 512);
    let used_before = held()?;
    let (resets_before, exhausted_before) = (d.resets(), d.stats.retries_exhausted.load(Ordering::Relaxed));
    let t0 = time::uptime();
    let ta = d.test_queue_read(128, a, 32 * 1024).map_err(e)?;
    let tb = d.test_queue_read(300, b, 512).map_err(e)?;
    let [oa, ob] = poll_all(d, [ta, tb], Duration::from_secs(10));
    let took = time::uptime() - t0;
    kprintln!("  outcomes {oa:?} {ob:?} after {took:?}; resets {}; stats {:?}", d.resets() - resets_before, d.stats);
    kassert_eq!(oa, Some(Ok(())));
    kassert_eq!(ob, Some(Err(BlkError::Timeout)), "out of retries: fails with its reason");
    kassert_eq!(d.resets() - resets_before, 2, "one reset per attempt");
    kassert_eq!(d.stats.retries_exhausted.load(Ordering::Relaxed) - exhausted_before, 1);
    kassert!(took >= Duration::from_millis(2000) && took < Duration::from_secs(5), "two deadlines ({took:?})");
    kassert!(read_back(b, 512).iter().all(|&x| x == 0xa5), "buffer of the failed read untouched");
    kassert_eq!(held()?, used_before, "every mapping released (bounce slots, live mappings)");
    // The disk comes back: a write and a read, patient enough for the throttle's debt.
    d.set_retries(3);
    let slow = Duration::from_secs(30);
    for i in 0..8u64 {
        mem().write(a + i * 512, &sector_pattern(!(100 + i)));
    }
    d.test_write(100, a, 4096, slow).map_err(e)?;
    mem().fill(a, 0, 4096);
    d.test_read(100, a, 4096, slow).map_err(e)?;
    kassert!(holds_sectors(a, 100, 8, |s| sector_pattern(!s)), "the write reads back");
    kassert_eq!(d.health(), DiskHealth::Live);
    kassert_eq!(held()?, used_before);
    free(a, 3);
    free(b, 0);
    Ok(())
}

static CALLBACKS: IrqSafeSpinLock<[u32; 2]> = IrqSafeSpinLock::new([0; 2]);
static LAST_OUTCOME: IrqSafeSpinLock<Option<Result<(), BlkError>>> = IrqSafeSpinLock::new(None);

fn count_callback(cookie: u64, outcome: Result<(), BlkError>) {
    CALLBACKS.lock()[cookie as usize] += 1;
    *LAST_OUTCOME.lock() = Some(outcome);
}

/// Every re-initialisation fails (injected, `Disk::inject_reinit_failures`): after three in a
/// row the disk is dead. The held request's callback runs once with `DiskDead`, every mapping
/// is released, and new requests fail at once.
fn dead_disk() -> TestResult {
    let d = disk0()?;
    let settle = time::uptime() + Duration::from_secs(3);
    while time::uptime() < settle {
        kernel::platform::idle();
    }
    d.set_retries(3);
    d.set_default_timeout(Duration::from_millis(1000));
    d.inject_reinit_failures(3);
    let (a, b) = (buffer(3, true)?, buffer(0, true)?);
    let before = held()?;
    let t0 = time::uptime();
    let ta = d.test_queue_read(128, a, 32 * 1024).map_err(e)?;
    d.test_queue_with_callback(virtio_blk::BlockRequest::Read { sector: 300, buf: b, len: 512 }, count_callback, 1).map_err(e)?;
    while d.health() != DiskHealth::Dead && time::uptime() < t0 + Duration::from_secs(10) {
        kernel::platform::idle();
    }
    let took = time::uptime() - t0;
    for _ in 0..10 {
        kernel::platform::idle(); // let late callbacks run, were there any
    }
    let oa = d.poll(ta);
    kprintln!(
        "  health {:?} after {took:?}; first read {oa:?}; callbacks {:?} last {:?}; stats {:?}",
        d.health(),
        *CALLBACKS.lock(),
        *LAST_OUTCOME.lock(),
        d.stats
    );
    kassert_eq!(d.health(), DiskHealth::Dead);
    kassert_eq!(d.stats.reinit_failures.load(Ordering::Relaxed), 3);
    kassert_eq!(*CALLBACKS.lock(), [0, 1], "the callback ran exactly once");
    kassert_eq!(*LAST_OUTCOME.lock(), Some(Err(BlkError::DiskDead)));
    kassert!(matches!(oa, Some(Ok(()) | Err(BlkError::DiskDead))), "the first read completed or died: {oa:?}");
    kassert_eq!(held()?, before, "every mapping released");
    kassert_eq!((d.in_flight(), d.waiting()), (0, 0));
    // A dead disk fails new requests at once, before anything is mapped.
    let submitted = d.stats.submitted.load(Ordering::Relaxed);
    let t1 = time::uptime();
    kassert_eq!(d.test_read(0, a, 512, Duration::from_secs(5)), Err(BlkError::DiskDead));
    kassert_eq!(d.test_queue_read(0, a, 512).map(|_| ()), Err(BlkError::DiskDead));
    kassert!(time::uptime() - t1 < Duration::from_millis(100), "at once");
    kassert_eq!(d.stats.submitted.load(Ordering::Relaxed), submitted);
    free(a, 3);
    free(b, 0);
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
