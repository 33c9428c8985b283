//! Zones and their free areas (Linux: `struct zone`, `struct free_area`).

use super::migratetype::MIGRATE_TYPES;
use super::page::NIL;
use super::NR_PAGE_ORDERS;

/// A zone: a range of physical memory with an addressing property.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ZoneType {
    /// RAM below the DMA limit (all RAM if the platform gives none). SWIOTLB pools live here.
    Dma = 0,
    /// RAM above the DMA limit.
    Normal = 1,
}

/// Number of zones (Linux: `MAX_NR_ZONES`).
pub(super) const NR_ZONES: usize = 2;

impl ZoneType {
    /// All zones, lowest first.
    pub const ALL: [ZoneType; NR_ZONES] = [ZoneType::Dma, ZoneType::Normal];

    /// Name as in `/proc/pagetypeinfo`.
    pub const fn name(self) -> &'static str {
        match self {
            ZoneType::Dma => "DMA",
            ZoneType::Normal => "Normal",
        }
    }

    /// The zones an allocation with this highest zone may use, highest first (the zonelist).
    pub(super) fn zonelist(self) -> impl Iterator<Item = ZoneType> {
        ZoneType::ALL.into_iter().rev().filter(move |z| *z <= self)
    }
}

/// Free blocks of one order in a zone, one list per migrate type.
#[derive(Clone, Copy, Debug)]
pub(super) struct FreeArea {
    /// Head page index of each list, or `NIL`.
    pub(super) free_list: [u32; MIGRATE_TYPES],
    /// Number of blocks on each list.
    pub(super) nr_free: [usize; MIGRATE_TYPES],
}

/// One zone: its page-index range and free lists.
#[derive(Clone, Debug)]
pub(super) struct Zone {
    /// First page index (pageblock aligned).
    pub(super) start: usize,
    /// One past the last page index (pageblock aligned).
    pub(super) end: usize,
    pub(super) free_area: [FreeArea; NR_PAGE_ORDERS],
    /// Free pages per migrate type (Linux: `NR_FREE_PAGES`, and `NR_FREE_CMA_PAGES` for ours).
    pub(super) nr_free_pages: [usize; MIGRATE_TYPES],
    /// Pages the allocator manages in this zone (Linux: `managed_pages`).
    pub(super) managed_pages: usize,
}

impl Zone {
    pub(super) fn new(start: usize, end: usize) -> Self {
        Zone {
            start,
            end,
            free_area: [FreeArea { free_list: [NIL; MIGRATE_TYPES], nr_free: [0; MIGRATE_TYPES] }; NR_PAGE_ORDERS],
            nr_free_pages: [0; MIGRATE_TYPES],
            managed_pages: 0,
        }
    }
}
