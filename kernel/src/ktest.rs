//! The in-QEMU test harness. Stable Rust has no custom test frameworks, so each test kernel
//! (`kernel/tests/*.rs`, `harness = false`) lists its cases and calls [`run`]: every case runs on
//! the real (emulated) machine, prints `test NAME ... ok`, `skipped: why` (a case that cannot
//! mean anything on this machine, see [`skip`]) or `FAILED: why`, and the run ends with
//! `N passed, N failed` (`, N skipped` if any were) and a semihosting exit status (nonzero on any
//! failure). A panic or an unexpected exception inside a case fails the whole run with its report.

use alloc::string::String;

use crate::kprintln;
use crate::platform::exit::ExitStatus;

/// What a test case returns: `Err(reason)` fails it.
pub type TestResult = Result<(), String>;

/// A named test case.
pub struct TestCase {
    /// The name printed in the results.
    pub name: &'static str,
    /// The case.
    pub run: fn() -> TestResult,
}

/// Runs the selected `cases` in order and reports. Returns the exit status for the platform to
/// use.
pub fn run(suite: &str, cases: &[TestCase]) -> ExitStatus {
    let params = &crate::platform::kernel().params;
    let chosen = || cases.iter().filter(|c| params.ktest_selects(c.name));
    let filtered_out = cases.len() - chosen().count();
    kprintln!("\nrunning {} tests ({suite})", cases.len() - filtered_out);
    let (mut passed, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    for case in chosen() {
        crate::platform::set_current_test(case.name);
        SKIPPED.lock().take();
        let result = (case.run)();
        match (result, SKIPPED.lock().take()) {
            (Ok(()), None) => {
                passed += 1;
                kprintln!("test {} ... ok", case.name);
            }
            (Ok(()), Some(why)) => {
                skipped += 1;
                kprintln!("test {} ... skipped: {why}", case.name);
            }
            // A failure stands, whether or not the case also asked to be skipped.
            (Err(why), _) => {
                failed += 1;
                kprintln!("test {} ... FAILED: {why}", case.name);
            }
        }
    }
    crate::platform::set_current_test("");
    if filtered_out > 0 {
        kprintln!("{filtered_out} filtered out by ktest=/ktest_skip=");
    }
    if skipped > 0 {
        kprintln!("\n{suite}: {passed} passed, {failed} failed, {skipped} skipped");
    } else {
        kprintln!("\n{suite}: {passed} passed, {failed} failed");
    }
    if failed == 0 {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    }
}

/// The reason the running case gave for skipping itself (see [`skip`]).
static SKIPPED: spin::Mutex<Option<String>> = spin::Mutex::new(None);

/// Ends a case that cannot mean anything on this machine (too little RAM for what it needs, a
/// DMA window that covers all of it, ...): `return ktest::skip(why)`. The case is reported as
/// `skipped: why` and counted apart from the passed ones; it never turns a failure into a pass
/// (a case that returns `Err` after calling this still fails), and the run's status is unchanged
/// by skips.
pub fn skip(why: impl core::fmt::Display) -> TestResult {
    *SKIPPED.lock() = Some(alloc::format!("{why}"));
    Ok(())
}

/// Fails the case with a message unless `cond` holds.
#[macro_export]
macro_rules! kassert {
    ($cond:expr) => {
        if !$cond {
            return Err(alloc::format!("assertion failed: {} ({}:{})", stringify!($cond), file!(), line!()));
        }
    };
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(alloc::format!("{} ({}:{})", format_args!($($arg)+), file!(), line!()));
        }
    };
}

/// Fails the case unless the two values are equal.
#[macro_export]
macro_rules! kassert_eq {
    ($a:expr, $b:expr) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err(alloc::format!("{} == {} failed: {:?} != {:?} ({}:{})", stringify!($a), stringify!($b), a, b, file!(), line!()));
        }
    }};
    ($a:expr, $b:expr, $($arg:tt)+) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err(alloc::format!("{}: {:?} != {:?} ({}:{})", format_args!($($arg)+), a, b, file!(), line!()));
        }
    }};
}

/// Formats any error as a case's failure reason (`.map_err(ktest::err)`).
pub fn err(x: impl core::fmt::Display) -> String {
    alloc::format!("{x}")
}

/// `2^order` unmovable pages for a test's DMA buffers: from ZONE_NORMAL, beyond every device's
/// DMA window, when `beyond_dma_window` (mappings of it bounce); from ZONE_DMA otherwise.
pub fn buffer(order: u8, beyond_dma_window: bool) -> Result<crate::mm::PhysAddr, String> {
    use crate::mm::page_alloc::{MigrateType, ZoneType};
    let zone = if beyond_dma_window { ZoneType::Normal } else { ZoneType::Dma };
    let addr = crate::platform::mm::page_allocator().lock().alloc_pages(order, zone, MigrateType::Unmovable).map_err(err)?;
    let limit = crate::platform::kernel().dt.smallest_dma_limit().map_err(err)?;
    if limit.is_some_and(|last| beyond_dma_window != (addr > last)) {
        return Err(alloc::format!("buffer {addr:#x} on the wrong side of the DMA window"));
    }
    Ok(addr)
}

/// Frees a [`buffer`].
pub fn free_buffer(addr: crate::mm::PhysAddr, order: u8) {
    let _ = crate::platform::mm::page_allocator().lock().free_pages(addr, order);
}

/// Reads `len` bytes of physical memory (what a device wrote, what a bounce slot holds).
pub fn read_phys(addr: crate::mm::PhysAddr, len: usize) -> alloc::vec::Vec<u8> {
    use crate::mm::phys::PhysMemory;
    let mut v = alloc::vec![0u8; len];
    // SAFETY: only reads, and writes nothing.
    let ram = unsafe { crate::platform::phys::ram() };
    ram.read(addr, &mut v);
    v
}

/// A 512-byte sector holding `s` as little-endian u64s: what the virtio-blk test scripts write
/// into their disk images, sector by sector (`!s` marks what a test wrote itself).
pub fn sector_pattern(s: u64) -> [u8; 512] {
    let mut b = [0u8; 512];
    for chunk in b.chunks_exact_mut(8) {
        chunk.copy_from_slice(&s.to_le_bytes());
    }
    b
}

/// Whether the `count` sectors at physical `buf` hold `pattern(first)`, `pattern(first + 1)`, ...
pub fn holds_sectors(buf: crate::mm::PhysAddr, first: u64, count: u64, pattern: impl Fn(u64) -> [u8; 512]) -> bool {
    let bytes = read_phys(buf, (count * 512) as usize);
    (0..count).all(|i| bytes[(i * 512) as usize..((i + 1) * 512) as usize] == pattern(first + i))
}

/// Declares `mod owned` in a test kernel: the traits `TestMaps` (on `DmaApi`) and `TestIo` (on
/// the board's `Disk`), safe wrappers of the DMA and block seams' `unsafe fn`s, named `test_*`.
///
/// Invoking it is the test kernel's promise, to be written as a `// SAFETY:` comment at the
/// invocation: every buffer it maps or hands a disk is one it allocated, freed only after the
/// unmap or after the request's outcome was collected; where a test touches such a buffer
/// meanwhile, it stands in for the device or checks on purpose what the device or a bounce did.
/// The wrappers live in the test kernel that makes the promise, never in the library.
#[macro_export]
macro_rules! test_kernel_owns_its_buffers {
    () => {
        #[allow(dead_code)]
        mod owned {
            use core::time::Duration;
            use $crate::block::virtio_blk::{BlockRequest, CompletionFn};
            use $crate::block::Ticket;
            use $crate::dma::device::DmaDevice;
            use $crate::dma::mapping::{DmaApi, DmaError};
            use $crate::dma::{DmaAddr, DmaAttrs, DmaDirection};
            use $crate::mm::PhysAddr;
            use $crate::platform::virtio_blk::{BlkError, Disk};

            /// `map_single` for this test kernel's buffers.
            pub(super) trait TestMaps {
                fn test_map_single(
                    &self,
                    dev: &DmaDevice,
                    addr: PhysAddr,
                    size: usize,
                    dir: DmaDirection,
                    attrs: DmaAttrs,
                ) -> Result<DmaAddr, DmaError>;
            }

            impl TestMaps for DmaApi<'_> {
                fn test_map_single(
                    &self,
                    dev: &DmaDevice,
                    addr: PhysAddr,
                    size: usize,
                    dir: DmaDirection,
                    attrs: DmaAttrs,
                ) -> Result<DmaAddr, DmaError> {
                    // SAFETY: the invoking test kernel's promise (see the macro's doc).
                    unsafe { self.map_single(dev, addr, size, dir, attrs) }
                }
            }

            /// The disk's requests for this test kernel's buffers.
            pub(super) trait TestIo {
                fn test_queue_read(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<Ticket, BlkError>;
                fn test_queue_write(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<Ticket, BlkError>;
                fn test_submit_read(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<Ticket, BlkError>;
                fn test_submit_write(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<Ticket, BlkError>;
                fn test_read(&self, sector: u64, buf: PhysAddr, len: usize, timeout: Duration) -> Result<(), BlkError>;
                fn test_write(&self, sector: u64, buf: PhysAddr, len: usize, timeout: Duration) -> Result<(), BlkError>;
                fn test_queue_with_callback(&self, request: BlockRequest, callback: CompletionFn, cookie: u64) -> Result<(), BlkError>;
            }

            // SAFETY (every block below): the invoking test kernel's promise (see the macro's doc).
            impl TestIo for Disk {
                fn test_queue_read(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<Ticket, BlkError> {
                    // SAFETY: as above.
                    unsafe { self.queue_read(sector, buf, len) }
                }
                fn test_queue_write(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<Ticket, BlkError> {
                    // SAFETY: as above.
                    unsafe { self.queue_write(sector, buf, len) }
                }
                fn test_submit_read(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<Ticket, BlkError> {
                    // SAFETY: as above.
                    unsafe { self.submit_read(sector, buf, len) }
                }
                fn test_submit_write(&self, sector: u64, buf: PhysAddr, len: usize) -> Result<Ticket, BlkError> {
                    // SAFETY: as above.
                    unsafe { self.submit_write(sector, buf, len) }
                }
                fn test_read(&self, sector: u64, buf: PhysAddr, len: usize, timeout: Duration) -> Result<(), BlkError> {
                    // SAFETY: as above.
                    unsafe { self.read(sector, buf, len, timeout) }
                }
                fn test_write(&self, sector: u64, buf: PhysAddr, len: usize, timeout: Duration) -> Result<(), BlkError> {
                    // SAFETY: as above.
                    unsafe { self.write(sector, buf, len, timeout) }
                }
                fn test_queue_with_callback(&self, request: BlockRequest, callback: CompletionFn, cookie: u64) -> Result<(), BlkError> {
                    // SAFETY: as above.
                    unsafe { self.queue_with_callback(request, callback, cookie) }
                }
            }
        }
    };
}
