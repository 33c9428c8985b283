//! The in-QEMU test harness. Stable Rust has no custom test frameworks, so each test kernel
//! (`kernel/tests/*.rs`, `harness = false`) lists its cases and calls [`run`]: every case runs on
//! the real (emulated) machine, prints `test NAME ... ok` or `FAILED: why`, and the run ends with
//! `N passed, N failed` and a semihosting exit status (nonzero on any failure). A panic or an
//! unexpected exception inside a case fails the whole run with its report.

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
    let (mut passed, mut failed) = (0usize, 0usize);
    for case in chosen() {
        crate::platform::set_current_test(case.name);
        match (case.run)() {
            Ok(()) => {
                passed += 1;
                kprintln!("test {} ... ok", case.name);
            }
            Err(why) => {
                failed += 1;
                kprintln!("test {} ... FAILED: {why}", case.name);
            }
        }
    }
    crate::platform::set_current_test("");
    if filtered_out > 0 {
        kprintln!("{filtered_out} filtered out by ktest=/ktest_skip=");
    }
    kprintln!("\n{suite}: {passed} passed, {failed} failed");
    if failed == 0 {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    }
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
