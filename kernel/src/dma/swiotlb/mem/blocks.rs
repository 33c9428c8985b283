//! The state of each pageblock of the reserved range, readable without a lock. Written only by
//! the task that holds the manager's worker guard.
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// What a pageblock of the reserved range is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BlockState {
    /// Bounce slots of the default pool (free or used).
    AsSlots = 0,
    /// Lent to the page allocator (MIGRATE_SWIOTLB); its slots are `Lent` in the pool.
    Lent = 1,
    /// Being taken back from the page allocator by the worker.
    Reclaiming = 2,
    /// The slots of a per-device pool; `Lent` in the default pool's slot states, so its slot
    /// search skips them, but not in the page allocator.
    CarvedForDevice = 3,
    /// Not part of the pool: given to the page allocator as ordinary MOVABLE memory (the `cma`
    /// policy's boot pool is only `swiotlb_keep` pageblocks).
    Unused = 4,
}

impl BlockState {
    /// Every state, in table order.
    pub const ALL: [BlockState; 5] = [Self::AsSlots, Self::Lent, Self::Reclaiming, Self::CarvedForDevice, Self::Unused];

    /// Short name for the stats table.
    pub const fn name(self) -> &'static str {
        match self {
            Self::AsSlots => "slots",
            Self::Lent => "lent",
            Self::Reclaiming => "reclaiming",
            Self::CarvedForDevice => "device",
            Self::Unused => "unused",
        }
    }

    fn from_u8(v: u8) -> Self {
        Self::ALL[v as usize]
    }
}

/// One state per pageblock and a count per state; allocated once, at construction.
pub(super) struct BlockStates {
    states: Vec<AtomicU8>,
    counts: [AtomicUsize; BlockState::ALL.len()],
}

impl BlockStates {
    /// `n` pageblocks, all in `initial`.
    pub(super) fn new(n: usize, initial: BlockState) -> Self {
        let counts = core::array::from_fn(|i| AtomicUsize::new(if i == initial as usize { n } else { 0 }));
        Self { states: (0..n).map(|_| AtomicU8::new(initial as u8)).collect(), counts }
    }

    pub(super) fn len(&self) -> usize {
        self.states.len()
    }

    pub(super) fn get(&self, block: usize) -> BlockState {
        BlockState::from_u8(self.states[block].load(Ordering::Acquire))
    }

    /// Moves `block` to `state`. Worker guard held.
    pub(super) fn set(&self, block: usize, state: BlockState) {
        let old = BlockState::from_u8(self.states[block].swap(state as u8, Ordering::AcqRel));
        self.counts[old as usize].fetch_sub(1, Ordering::Relaxed);
        self.counts[state as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Pageblocks in `state`.
    pub(super) fn count(&self, state: BlockState) -> usize {
        self.counts[state as usize].load(Ordering::Relaxed)
    }

    /// Pageblocks in `state`, lowest first.
    pub(super) fn in_state(&self, state: BlockState) -> impl DoubleEndedIterator<Item = usize> + '_ {
        (0..self.len()).filter(move |b| self.get(*b) == state)
    }
}
