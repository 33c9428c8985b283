//! A kernel that powers the machine off through PSCI (the `/psci` conduit from the device tree)
//! instead of a semihosting exit: the boot-check in scripts/boot-checks.sh expects QEMU to stop
//! with status 0 after the log line.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod image {
    use kernel::platform::exit::{power_off, ExitStatus};
    use kernel::platform::Kernel;

    kernel::entry!(main);

    fn main(_k: &'static Kernel) -> ExitStatus {
        log::info!("powering off through PSCI SYSTEM_OFF");
        power_off()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
