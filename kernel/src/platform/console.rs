//! The console: the PL011 named by `/chosen/stdout-path`, a `log` backend with timestamps, and an
//! emergency path for exception and panic reports that never waits for the console lock.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};

use drivers::timer::arch_timer;
use drivers::uart::pl011::Pl011;

use crate::sync::IrqSafeSpinLock;

static CONSOLE: IrqSafeSpinLock<Option<Pl011>> = IrqSafeSpinLock::new(None);
static EMERGENCY_BASE: AtomicUsize = AtomicUsize::new(0);

/// Starts the console on the PL011 at `base`.
///
/// # Safety
///
/// `base` must be the PL011's register block, mapped as device memory for the kernel's life.
pub unsafe fn init(base: usize) {
    // SAFETY: forwarded from the caller.
    let uart = unsafe { Pl011::new(base) };
    uart.init();
    *CONSOLE.lock() = Some(uart);
    EMERGENCY_BASE.store(base, Ordering::Release);
    log::set_logger(&LOGGER).ok();
    log::set_max_level(log::LevelFilter::Info);
}

/// Sets the log level (bootarg `loglevel=`).
pub fn set_level(level: log::LevelFilter) {
    log::set_max_level(level);
}

/// Writes formatted text to the console (under its lock).
pub fn print(args: fmt::Arguments<'_>) {
    if let Some(uart) = CONSOLE.lock().as_mut() {
        let _ = uart.write_fmt(args);
    }
}

/// Writes to the UART without taking the console lock: for exception and panic reports, which
/// may interrupt a holder of the lock. Output may interleave; it is never lost to a deadlock.
pub fn emergency_write(s: &str) {
    let base = EMERGENCY_BASE.load(Ordering::Acquire);
    if base != 0 {
        // SAFETY: `base` was stored by `init` from its caller's guarantee that it is the console
        // PL011's register block, mapped for the kernel's life.
        unsafe { Pl011::new(base) }.write_str(s);
    }
}

/// `print!` to the kernel console.
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::platform::console::print(format_args!($($arg)*)) };
}

/// `println!` to the kernel console.
#[macro_export]
macro_rules! kprintln {
    () => { $crate::kprint!("\n") };
    ($($arg:tt)*) => { $crate::platform::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}

struct Logger;
static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let t = arch_timer::uptime();
        let level = match record.level() {
            log::Level::Error => "ERROR",
            log::Level::Warn => "WARN ",
            log::Level::Info => "INFO ",
            log::Level::Debug => "DEBUG",
            log::Level::Trace => "TRACE",
        };
        print(format_args!("[{:5}.{:06}] {} {}\n", t.as_secs(), t.subsec_micros(), level, record.args()));
    }

    fn flush(&self) {}
}
