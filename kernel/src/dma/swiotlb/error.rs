//! The errors of the SWIOTLB pool.
#![forbid(unsafe_code)]

use core::fmt;
use core::ops::Range;

use super::{DmaDirection, SlotAlignment, SlotState};
use crate::mm::PhysAddr;

/// Why a pool operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwiotlbError {
    /// The geometry given to `SwiotlbPool::new` is unusable.
    InvalidGeometry {
        /// What is wrong.
        reason: &'static str,
    },
    /// A mapping of zero bytes (Linux: `BUG_ON(!nslots)`).
    ZeroSize,
    /// An alignment mask that is not of the form 2^k - 1.
    InvalidAlignment {
        /// The masks given.
        alignment: SlotAlignment,
    },
    /// The mapping, with its alignment padding, needs more than one segment of slots.
    MappingTooLarge {
        /// Requested mapping size in bytes.
        size: usize,
        /// The largest mapping the device's `min_align_mask` always allows.
        max: usize,
    },
    /// No free run of slots fits (Linux prints the same words).
    BufferFull {
        /// Bytes asked for, alignment padding included.
        size: usize,
        /// Slots in the pool.
        total: usize,
        /// Slots in use by mappings.
        used: usize,
    },
    /// A task-context request would leave fewer free slots than the IRQ reserve.
    BelowReserve {
        /// Slots asked for.
        nslots: usize,
        /// Free slots.
        free: usize,
        /// Slots kept for IRQ context.
        reserve: usize,
    },
    /// The address is not a live bounce buffer (unmap: not the start of one).
    NotMapped {
        /// The address given.
        tlb_addr: PhysAddr,
    },
    /// A sync starts before the first byte of the mapping.
    AccessBeforeStart {
        /// The address given.
        tlb_addr: PhysAddr,
    },
    /// A sync or unmap reaches past the end of the mapping; nothing was copied.
    Overflow {
        /// The address given.
        tlb_addr: PhysAddr,
        /// Bytes asked for.
        size: usize,
        /// Bytes of the mapping from `tlb_addr` on.
        available: usize,
    },
    /// Unmap or sync with a direction the mapping was not made for.
    DirectionMismatch {
        /// The direction given at map time.
        mapped: DmaDirection,
        /// The direction given now.
        requested: DmaDirection,
    },
    /// A slot range that is empty or reaches outside the pool.
    InvalidSlotRange {
        /// The range given.
        range: Range<usize>,
    },
    /// Lend: a slot of the range is not free; nothing was lent.
    SlotNotFree {
        /// The first such slot.
        slot: usize,
        /// Its state.
        state: SlotState,
    },
    /// Unlend: a slot of the range is not lent; nothing was returned.
    SlotNotLent {
        /// The first such slot.
        slot: usize,
        /// Its state.
        state: SlotState,
    },
    /// Another lend or unlend is running on this pool.
    LendInProgress,
}

impl fmt::Display for SwiotlbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidGeometry { reason } => write!(f, "invalid swiotlb pool: {reason}"),
            Self::ZeroSize => write!(f, "swiotlb mapping of zero bytes"),
            Self::InvalidAlignment { alignment } => {
                write!(f, "swiotlb alignment masks {:#x}/{:#x} are not 2^k - 1", alignment.min_align_mask, alignment.alloc_align_mask)
            }
            Self::MappingTooLarge { size, max } => {
                write!(f, "swiotlb mapping too large ({size} bytes, max {max})")
            }
            Self::BufferFull { size, total, used } => {
                write!(f, "swiotlb buffer is full (sz: {size} bytes), total {total} (slots), used {used} (slots)")
            }
            Self::BelowReserve { nslots, free, reserve } => {
                write!(f, "swiotlb: {nslots} slots would leave {free} free below the IRQ reserve of {reserve}")
            }
            Self::NotMapped { tlb_addr } => write!(f, "{tlb_addr:#x} is not a swiotlb mapping"),
            Self::AccessBeforeStart { tlb_addr } => {
                write!(f, "swiotlb access before mapping start at {tlb_addr:#x}")
            }
            Self::Overflow { tlb_addr, size, available } => {
                write!(f, "swiotlb buffer overflow detected at {tlb_addr:#x}: {size} bytes, mapping has {available}")
            }
            Self::DirectionMismatch { mapped, requested } => {
                write!(f, "swiotlb mapping made {mapped:?} used as {requested:?}")
            }
            Self::InvalidSlotRange { range } => {
                write!(f, "swiotlb slot range {}..{} invalid", range.start, range.end)
            }
            Self::SlotNotFree { slot, state } => {
                write!(f, "swiotlb slot {slot} is {state:?}, cannot lend")
            }
            Self::SlotNotLent { slot, state } => {
                write!(f, "swiotlb slot {slot} is {state:?}, not lent")
            }
            Self::LendInProgress => write!(f, "swiotlb lend/unlend already in progress"),
        }
    }
}
