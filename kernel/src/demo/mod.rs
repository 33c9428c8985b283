//! What the demo kernel shows and the tests drive: workloads run on the machine the platform
//! built, kept out of the board code (`platform` only brings the machine up).
//!
//! - [`pressure`]: memory pressure, movable pages filled with checksummed content, so migration
//!   and reclaim can be checked to keep every byte (host-tested through the page allocator's
//!   and the SWIOTLB's tests).
//! - `disks` (on the target): the two-disk demo, disk0 through the page cache and streamed,
//!   disk1 streamed, under memory pressure, with the lent SWIOTLB pageblocks reclaimed.
//! - `workload` (on the target): the scripted pressure/burst/idle workload without disks, its
//!   burst made from the timer interrupt.
// Unsafe only where the demo hands its own buffers to the disks and the DMA API (`disks`,
// `workload`: the block and DMA seams are `unsafe fn`); `pressure` has none.
#![deny(unsafe_code)]

#[cfg(target_os = "none")]
pub mod disks;
pub mod pressure;
#[cfg(target_os = "none")]
pub mod workload;
