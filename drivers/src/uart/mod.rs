//! Serial ports.

pub mod pl011;
