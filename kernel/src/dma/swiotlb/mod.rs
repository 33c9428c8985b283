//! SWIOTLB: bounce-buffer slot pools (Linux `kernel/dma/swiotlb.c`, v6.10 semantics).
//!
//! A [`SwiotlbPool`] is a physically contiguous range cut into 2 KiB slots ([`IO_TLB_SIZE`]),
//! grouped in segments of [`IO_TLB_SEGSIZE`] slots (no mapping crosses a segment) and split into
//! areas, each behind its own IRQ-safe lock so CPUs mapping at once rarely meet.
//!
//! Where the code lives:
//! - `slots`: per-slot metadata, what a request needs, the search inside one segment's free map;
//! - `area`: one area's segment maps, their summary, search cursor and counts;
//! - `pool`: the pool, the IRQ reserve and lending spare slots to the page allocator;
//! - `bounce`: `map`/`unmap`/`sync_*`, the copies between the original buffer and the slots;
//! - `find`: which pool owns a bounce address (Linux `swiotlb_find_pool`);
//! - `stats`: counters;
//! - `transient`: one-mapping pools allocated when every pool misses (Linux 6.6 `SWIOTLB_DYNAMIC`);
//! - `mem`: [`mem::SwiotlbMem`], the default SWIOTLB's set of pools under its policy (Linux
//!   `struct io_tlb_mem`), its worker and the per-device pools carved from it.
//!
//! Where we differ from Linux, and why:
//! - Each slot has a state ([`SlotState`]): besides Free and Used, a slot may be Lent to the page
//!   allocator (MIGRATE_SWIOTLB), so [`SwiotlbPool::is_swiotlb_buffer`] looks at the slot, not
//!   only at the pool range.
//! - Every used slot records the mapping's first data slot, which records the mapping's offset
//!   and slot count: unmap and sync need no device (Linux re-derives the offset from the device's
//!   `min_align_mask`), and an address that is not a live mapping is refused instead of freeing
//!   the wrong slots.
//! - A sync or unmap that reaches past the mapping is refused without copying (Linux warns and
//!   clamps).
//! - No segment boundary mask (`dma_get_seg_boundary`): our devices have none.
#![deny(unsafe_code)]

mod area;
mod bounce;
mod error;
mod find;
pub mod mem;
mod pool;
mod slots;
mod stats;
pub mod transient;

#[cfg(test)]
mod tests;

pub use area::SLOT_CACHE_MAX;
pub use bounce::{copy_timing, may_take_cached_run, set_copy_timing, task_copy_stats};
pub use error::SwiotlbError;
pub use find::{FoundPool, SlotLookup};
pub use pool::{AreaUsage, SwiotlbPool, SCRUB_STEP_SLOTS};
pub use slots::{SlotState, MIN_COLOUR_PERIOD};
pub use stats::SwiotlbStats;

/// log2 of the slot size (Linux `IO_TLB_SHIFT`).
pub const IO_TLB_SHIFT: u32 = 11;
/// The slot size: 2 KiB (Linux `IO_TLB_SIZE`).
pub const IO_TLB_SIZE: usize = 1 << IO_TLB_SHIFT;
/// Slots per segment; a mapping never crosses a segment (Linux `IO_TLB_SEGSIZE`).
pub const IO_TLB_SEGSIZE: usize = 128;

pub use super::DmaDirection;

/// Mapping attributes (the subset of Linux `DMA_ATTR_*` that matters to bouncing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaAttrs {
    /// `DMA_ATTR_SKIP_CPU_SYNC`: unmap does not copy back. Map ignores it and always fills the
    /// slots (CVE-2022-0854: the device must never see stale slot data).
    pub skip_cpu_sync: bool,
    /// Ours, Linux has no such attribute: a `FromDevice` mapping whose caller will not read the
    /// bytes the device does not write (a block read overwrites its whole buffer) need not have
    /// its buffer copied into the slots. If the slots it gets are all clean (zeros), the copy-in
    /// is skipped and unwritten bytes read back as zeros; otherwise it copies in as without the
    /// attribute, and the caller's own bytes survive. Never another mapping's stale data either
    /// way. Ignored for other directions and by unmap and sync.
    pub no_copy_in: bool,
}

impl DmaAttrs {
    /// No attribute.
    pub const NONE: Self = Self { skip_cpu_sync: false, no_copy_in: false };
}

/// Placement constraints for the bounce buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotAlignment {
    /// The device's `min_align_mask`: these low bits of the original address are kept in the
    /// bounce address (NVMe, for one, needs its 4 KiB page offsets preserved).
    pub min_align_mask: u64,
    /// The caller's `alloc_align_mask`: the allocation starts on this alignment (plus 1).
    pub alloc_align_mask: u64,
}

impl SlotAlignment {
    /// A device-side `min_align_mask` only.
    pub const fn min_align(min_align_mask: u64) -> Self {
        Self { min_align_mask, alloc_align_mask: 0 }
    }
}

/// The largest mapping a device with this `min_align_mask` can always get (Linux
/// `swiotlb_max_mapping_size`): one segment, less the slots the offset may cost.
pub const fn max_mapping_size(min_align_mask: u64) -> usize {
    let min_align = if min_align_mask == 0 {
        0
    } else {
        // Round the mask up to whole slots, as Linux's roundup(min_align_mask, IO_TLB_SIZE).
        let slots = (min_align_mask as usize).div_ceil(IO_TLB_SIZE);
        slots * IO_TLB_SIZE
    };
    IO_TLB_SIZE * IO_TLB_SEGSIZE - min_align
}

/// Slots needed for `bytes` (Linux `nr_slots`).
const fn nr_slots(bytes: usize) -> usize {
    bytes.div_ceil(IO_TLB_SIZE)
}
