//! Interrupt controllers.

pub mod gic;
