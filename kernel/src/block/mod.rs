//! Block-device bookkeeping that does not touch hardware, host-tested.
//!
//! - [`inflight`]: the fixed-size table of requests a driver has handed its device, looked up by
//!   the device's completion tag from the interrupt handler without allocating.
//!
//! - [`recovery`]: a disk's health across resets (live, resetting, dead) and the retry budget's
//!   accounting, for a driver that re-initialises its device after a timeout.
//!
//! The virtio-blk driver on the machine that uses it is `platform::virtio_blk`.
#![forbid(unsafe_code)]

pub mod inflight;
pub mod recovery;

pub use inflight::{InflightTable, RetryBudget, TakeBack, Ticket};
pub use recovery::{DiskHealth, Recovery};
