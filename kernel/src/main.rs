//! The demo kernel: `cargo run` boots it under QEMU (through qemu-run.sh).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod demo {
    use kernel::platform::exit::ExitStatus;
    use kernel::platform::Kernel;

    kernel::entry!(demo_main);

    fn demo_main(kernel: &'static Kernel) -> ExitStatus {
        log::info!("demo: {} bytes of RAM free after boot", kernel.memblock.free_ranges().map(|r| r.size()).sum::<u64>());
        log::info!("demo: nothing more to show yet; powering off");
        ExitStatus::Success
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the kernel runs on aarch64-unknown-none: use `cargo run` (see README.md)");
    std::process::exit(2);
}
