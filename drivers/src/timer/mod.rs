//! Timers.

pub mod arch_timer;
