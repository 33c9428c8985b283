//! The default SWIOTLB (Linux `struct io_tlb_mem`: the set of pools a mapping may use, where a
//! [`SwiotlbPool`](super::SwiotlbPool) is one `struct io_tlb_pool`), run under every policy:
//! how much of the reserved range is bounce slots, how the set grows and shrinks, and what happens
//! to the rest (the MIGRATE_SWIOTLB design of the seed's May 2023 LKML thread); plus per-device
//! pools carved from it.
//!
//! The slot code ([`SwiotlbPool`](super::SwiotlbPool)) and the page allocator
//! ([`LockedPageAllocator`](crate::mm::page_alloc::LockedPageAllocator)) each know one side; a
//! [`SwiotlbMem`] owns the default pool and moves whole pageblocks (2 MiB = 1024 slots)
//! between them as its [`SwiotlbPolicy`](crate::bootargs::SwiotlbPolicy) says:
//! - `static` (classic Linux): every slot is a bounce slot, for ever.
//! - `dynamic` (Linux 6.6 `CONFIG_SWIOTLB_DYNAMIC`): the boot pool is kept whole; a mapping that
//!   misses every pool gets a transient pool of just its size from the page allocator, in any
//!   context, freed at its unmap ([`crate::dma::swiotlb::transient`]); the worker adds pools of
//!   the boot pool's size (halving on failure) allocated with compaction, and never frees them.
//! - `cma` (the rival upstream asked about): a small boot pool grown by chunks `cma_alloc`ed from
//!   the CMA area, given back when idle (`cma`).
//! - `lend` (this design): `swiotlb_keep` pageblocks stay slots, the rest is lent to the page
//!   allocator as MIGRATE_SWIOTLB; the worker reclaims lent blocks under pressure (migrating or
//!   dropping the movable pages there, then scrubbing) and lends idle free blocks again. The
//!   blocks that are slots are spread over the pool's areas (`areas`).
//!
//! Interrupt context only maps, unmaps, syncs and asks [`SwiotlbMem::should_kick`]; growing
//! and shrinking run in [`SwiotlbMem::worker`], in task context (migration is unbounded work).
//!
//! Where the code lives:
//! - `config`: tunables from the command line, the pool geometry, the clock;
//! - `blocks`: the per-pageblock state of the reserved range;
//! - `areas`: which pageblocks are kept, reclaimed and lent again, spread over the pool's areas;
//! - `io_tlb_mem`: [`SwiotlbMem`], its construction, the mapping entry points over its pools, the
//!   pool lookup (`find_pool`) and the IRQ-safe kick test;
//! - `worker`: grow and shrink;
//! - `device`: per-device pools carved out of the default pool;
//! - `cma`: the `cma` policy's chunks;
//! - `stats`: counters and the table for the boot log.
//!
//! Where we differ from Linux, and why:
//! - Linux's dynamic mode allocates transient pools in atomic context when a mapping misses; so
//!   do we under `dynamic` (`swiotlb_transient=off` makes such a miss fail and be deferred, as
//!   every miss is under `lend` and `cma`, where interrupt context never allocates).
//! - Linux has no lending; the reclaim side is `alloc_contig_range()` on CMA in spirit.
#![deny(unsafe_code)]

mod areas;
mod blocks;
mod cma;
mod config;
mod device;
mod error;
mod io_tlb_mem;
mod stats;
mod worker;

#[cfg(test)]
mod tests;

pub use blocks::BlockState;
pub use config::{Clock, PoolGeometry, Tunables};
pub use device::DevicePool;
pub use error::LendError;
pub use io_tlb_mem::SwiotlbMem;
pub use stats::LendStats;
pub use worker::WorkerReport;

use crate::mm::page_alloc::PAGEBLOCK_SIZE;

/// Slots per pageblock: the unit of lending (1024).
pub const SLOTS_PER_PAGEBLOCK: usize = (PAGEBLOCK_SIZE as usize) / super::IO_TLB_SIZE;

/// Most extra pools the dynamic and cma policies add (Linux keeps an unbounded RCU list; a fixed
/// array keeps lookups lock-free without allocation).
pub const MAX_EXTRA_POOLS: usize = 128;
