//! A kernel that exhausts its heap: it allocates 1 MiB blocks and keeps them until no page is
//! left to grow the heap. The boot check (scripts/boot-checks.sh) expects the out-of-memory
//! report (what was asked, what the heap had) and a failure exit status, never a hang.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod image {
    extern crate alloc;

    use alloc::vec::Vec;

    use kernel::platform::exit::ExitStatus;
    use kernel::platform::Kernel;

    kernel::entry!(main);

    fn main(_k: &'static Kernel) -> ExitStatus {
        log::info!("allocating 1 MiB blocks until the heap cannot grow");
        let mut kept: Vec<Vec<u8>> = Vec::with_capacity(4096);
        for i in 0..4096 {
            kept.push(alloc::vec![i as u8; 1 << 20]);
        }
        log::error!("4 GiB allocated: the heap never ran out");
        ExitStatus::Success
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
