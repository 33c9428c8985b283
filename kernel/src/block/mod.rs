//! Block-device bookkeeping that does not touch hardware, host-tested.
//!
//! - [`inflight`]: the fixed-size table of requests a driver has handed its device, looked up by
//!   the device's completion tag from the interrupt handler without allocating.
//!
//! - [`recovery`]: a disk's health across resets (live, resetting, dead) and the retry budget's
//!   accounting, for a driver that re-initialises its device after a timeout.
//!
//! - [`cache`]: the page cache on a disk of that engine (pinned I/O, writeback), its pages
//!   movable ones from the page allocator.
//!
//! - [`virtio_blk`]: the virtio-blk request engine (submission, waiting requests, completion,
//!   deadlines, reset and recovery) over the `drivers` crate's [`drivers::virtio::blk`]
//!   protocol; the board (`platform::virtio_blk` on the machine) probes the disks and wires
//!   their interrupts.
#![deny(unsafe_code)]

pub mod cache;
pub mod inflight;
pub mod recovery;
pub mod virtio_blk;

pub use inflight::{InflightTable, RetryBudget, TakeBack, Ticket};
pub use recovery::{DiskHealth, Recovery};
