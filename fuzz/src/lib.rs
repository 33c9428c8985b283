//! Shared code of the fuzz targets in `fuzz_targets/`: what each target runs and the invariants it
//! checks. See `scripts/fuzz.sh` for how they are built and run (stable Rust, libFuzzer).

pub mod fdt_build;
pub mod fdt_check;

/// `crate::virtio` for the driver test files included below, which name the driver that way.
pub mod virtio {
    pub use drivers::virtio::*;
}

/// The simulated DMA memory and device of the driver's host tests, shared by path so that the
/// fuzz target and the unit tests drive the driver the same way.
#[path = "../../drivers/src/virtio/tests/sim.rs"]
#[allow(dead_code)]
pub mod sim;

/// The hostile-device harness (`drivers/src/virtio/tests/hostile.rs`).
#[path = "../../drivers/src/virtio/tests/hostile.rs"]
pub mod hostile;
