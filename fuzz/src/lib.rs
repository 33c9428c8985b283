//! Shared code of the fuzz targets in `fuzz_targets/`: what each target runs and the invariants it
//! checks. See `scripts/fuzz.sh` for how they are built and run (stable Rust, libFuzzer).

pub mod fdt_build;
pub mod fdt_check;
