//! The generic kernel: device-tree interpretation, memory management and DMA bookkeeping.
//!
//! Everything in this crate builds for the host too, where it is unit-tested; the few pieces that
//! need the CPU reach it through [`arch`]. The kernel images (the demo in `main.rs` and the
//! in-QEMU tests in `tests/`) are assembled from this crate by [`platform`]; what they run on the
//! machine (the demo's workloads, memory pressure) is in [`demo`].
#![cfg_attr(target_os = "none", no_std)]

extern crate alloc;

pub mod arch;
pub mod block;
pub mod bootargs;
pub mod crc32;
pub mod demo;
pub mod dma;
pub mod dt;
pub mod irq;
#[cfg(target_os = "none")]
pub mod ktest;
pub mod mm;
#[cfg(target_os = "none")]
#[macro_use]
pub mod platform;
pub mod sync;
pub mod work;
