//! Block-device bookkeeping that does not touch hardware, host-tested.
//!
//! - [`inflight`]: the fixed-size table of requests a driver has handed its device, looked up by
//!   the device's completion tag from the interrupt handler without allocating.
//!
//! The virtio-blk driver on the machine that uses it is `platform::virtio_blk`.

pub mod inflight;

pub use inflight::{InflightTable, Ticket};
