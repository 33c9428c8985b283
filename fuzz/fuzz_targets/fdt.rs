//! The whole boot-time interpretation of a device tree (memory, reserved-memory static and
//! dynamic, dma-ranges, memory-region, interrupts, /chosen bootargs) and the memblock map built
//! from it, with its invariants checked (`dmabounce_fuzz::fdt_check`).
//!
//! An input that starts with the FDT magic is a raw blob (the seed corpus: QEMU's own DTBs);
//! anything else drives a structure-aware builder so most inputs reach the semantics.
#![no_main]

use dmabounce_fuzz::{fdt_build, fdt_check};
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.starts_with(&kernel::dt::FDT_MAGIC.to_be_bytes()) {
        fdt_check::check(data);
        return;
    }
    let mut u = Unstructured::new(data);
    if let Ok(Some(blob)) = fdt_build::build(&mut u) {
        fdt_check::check(&blob);
    }
    // The leftover bytes as a command line too.
    if let Ok(cmdline) = core::str::from_utf8(u.take_rest()) {
        fdt_check::check_bootargs(cmdline);
    }
});
