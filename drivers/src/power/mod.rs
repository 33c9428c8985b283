//! Power control.

pub mod psci;
