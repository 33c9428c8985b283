//! Device drivers. Each is generic code: it knows its device's registers and protocol, and is
//! instantiated by the kernel's platform code with addresses found in the device tree.
//!
//! - [`uart::pl011`]: the Arm PL011 UART (console).
//! - [`irq::gic`]: the Arm GIC interrupt controller, v2 and v3 (`arm-gic`).
//! - [`timer::arch_timer`]: the Arm generic timer (virtual timer).
//! - [`power::psci`]: system off and reset through PSCI (`smccc`).
#![no_std]

#[cfg(target_arch = "aarch64")]
pub mod irq;
#[cfg(target_arch = "aarch64")]
pub mod power;
#[cfg(target_arch = "aarch64")]
pub mod timer;
pub mod uart;
pub mod virtio;
