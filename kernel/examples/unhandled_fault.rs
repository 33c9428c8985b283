//! A kernel that takes an unexpected data abort: the boot-check in scripts/test-all.sh expects
//! the exception report on the console and a failure exit status.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod image {
    use kernel::platform::exit::ExitStatus;
    use kernel::platform::Kernel;

    kernel::entry!(main);

    fn main(_k: &'static Kernel) -> ExitStatus {
        log::info!("about to read unmapped memory at 0x2000000000");
        // SAFETY: the read faults on purpose; the exception handler reports it and stops the
        // machine, so no value is ever produced from unmapped memory.
        let v = unsafe { core::ptr::read_volatile(0x20_0000_0000 as *const u64) };
        log::error!("the read returned {v:#x}: the fault was not taken");
        ExitStatus::Success
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
