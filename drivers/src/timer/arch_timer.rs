//! The Arm generic timer (Arm ARM D11): the virtual counter for time, the EL1 virtual timer for
//! one-shot interrupts (a PPI, the third entry of the FDT's `/timer` `interrupts`).

use core::time::Duration;

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{Readable, Writeable, CNTFRQ_EL0, CNTVCT_EL0, CNTV_CTL_EL0, CNTV_CVAL_EL0};

/// Counter ticks per second.
pub fn frequency() -> u64 {
    CNTFRQ_EL0.get()
}

/// The virtual counter, ordered after earlier instructions.
pub fn ticks() -> u64 {
    barrier::isb(barrier::SY);
    CNTVCT_EL0.get()
}

/// Time since the counter started (boot, on QEMU).
pub fn uptime() -> Duration {
    ticks_to_duration(ticks())
}

/// Converts counter ticks to a duration.
pub fn ticks_to_duration(ticks: u64) -> Duration {
    let freq = frequency().max(1);
    Duration::new(ticks / freq, ((ticks % freq) * 1_000_000_000 / freq) as u32)
}

/// Converts a duration to counter ticks (saturating).
pub fn duration_to_ticks(d: Duration) -> u64 {
    let freq = frequency() as u128;
    (d.as_nanos() * freq / 1_000_000_000).min(u64::MAX as u128) as u64
}

/// Arms the virtual timer to fire once, `after` from now, with its interrupt unmasked.
pub fn set_oneshot(after: Duration) {
    CNTV_CVAL_EL0.set(ticks().saturating_add(duration_to_ticks(after)));
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::CLEAR);
}

/// Arms the virtual timer for an absolute counter value.
pub fn set_deadline(ticks: u64) {
    CNTV_CVAL_EL0.set(ticks);
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::CLEAR);
}

/// Stops the virtual timer (its interrupt line drops).
pub fn disable() {
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::CLEAR + CNTV_CTL_EL0::IMASK::SET);
}

/// True when the timer condition is met (the interrupt is asserted unless masked).
pub fn is_pending() -> bool {
    CNTV_CTL_EL0.is_set(CNTV_CTL_EL0::ISTATUS)
}
