//! aarch64 arch code: everything between the loader and `kernel_main`, and the CPU services the
//! generic kernel needs (interrupt masking, exception handling, the MMU).
//!
//! - `asm/entry.S`: `_start`, EL2 to EL1, FP/SIMD, stack, BSS, vectors, then [`early_mmu`] and
//!   `kernel_main`.
//! - `asm/vectors.S` + [`exception`]: the vector table, trap frames, fault reports, IRQ dispatch.
//! - [`mmu`]: the kernel's identity map built from the device tree (`aarch64-paging`).
//! - [`smp`] + `asm/entry.S` `secondary_entry`: per-CPU stacks and the secondary CPUs' entry.
//! - [`esr`]: decoding of exception syndromes (pure; unit-tested on the host).
#![no_std]

pub mod esr;

#[cfg(target_os = "none")]
pub mod cpu;
#[cfg(target_os = "none")]
mod early_mmu;
#[cfg(target_os = "none")]
pub mod exception;
#[cfg(target_os = "none")]
pub mod mmu;
#[cfg(target_os = "none")]
pub mod smp;

#[cfg(target_os = "none")]
core::arch::global_asm!(include_str!("asm/entry.S"));
#[cfg(target_os = "none")]
core::arch::global_asm!(include_str!("asm/vectors.S"));
#[cfg(target_os = "none")]
core::arch::global_asm!(include_str!("asm/mem.S"));

#[cfg(target_os = "none")]
pub use early_mmu::{MAIR_DEVICE_INDEX, MAIR_NORMAL_INDEX};
