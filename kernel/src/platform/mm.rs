//! The page allocator on the real machine: built from the boot memory map, the heap's source,
//! the default CMA area, and the boot-log views (zones, pagetypeinfo, the RAM picture).

use core::ops::Range;

use crate::mm::cma::CmaArea;
use crate::mm::heap::HeapSource;
use crate::mm::memblock::{Memblock, PoolKind, RegionKind};
use crate::mm::page_alloc::{InitError, LockedPageAllocator, MigrateType, PageAllocator, ZoneType, MAX_PAGE_ORDER, PAGEBLOCK_SIZE};
use crate::mm::{align_down, align_up, PhysAddr, PAGE_SHIFT, PAGE_SIZE};

static PAGE_ALLOCATOR: spin::Once<LockedPageAllocator> = spin::Once::new();
static CMA_AREA: spin::Once<CmaArea> = spin::Once::new();

/// The kernel's page allocator. Panics before [`init`].
pub fn page_allocator() -> &'static LockedPageAllocator {
    PAGE_ALLOCATOR.get().expect("page allocator used before init")
}

/// Hands every free page of the boot memory map to the page allocator (Linux: `memblock_free_all`).
/// `dma_limit` is the end of ZONE_DMA (the smallest `dma-ranges` limit), if any.
pub fn init(memblock: &Memblock<'_>, dma_limit: Option<PhysAddr>) -> Result<&'static LockedPageAllocator, InitError> {
    let ram = memblock.ram();
    let span = align_down(ram.first().map_or(0, |r| r.base()), PAGEBLOCK_SIZE)
        ..align_up(ram.last().map_or(0, |r| r.end()), PAGEBLOCK_SIZE).unwrap_or(u64::MAX);
    let mut free: alloc::vec::Vec<Range<PhysAddr>> = alloc::vec::Vec::new();
    for r in memblock.free_ranges() {
        let (start, end) = (align_up(r.base(), PAGE_SIZE).unwrap_or(u64::MAX), align_down(r.end(), PAGE_SIZE));
        if start < end {
            free.push(start..end);
        }
    }
    let allocator = PageAllocator::new(span, &free, dma_limit)?;
    let pages = PAGE_ALLOCATOR.call_once(|| LockedPageAllocator::new(allocator));
    if let Some(region) = memblock.cma_region() {
        // Linux `cma_init_reserved_areas()`: the reserved range becomes MIGRATE_CMA blocks.
        match CmaArea::activate(region.label, pages, region.range.base()..region.range.end()) {
            Ok(area) => log::info!("{}", CMA_AREA.call_once(|| area)),
            Err(e) => log::warn!("cma: {}: {e}; booting without a CMA area", region.label),
        }
    }
    Ok(pages)
}

/// The default CMA area (a `linux,cma-default` node or `cma=`), if the boot made one.
pub fn cma_area() -> Option<&'static CmaArea> {
    CMA_AREA.get()
}

/// True if `addr` lies in a SWIOTLB pool's reserved region (the `b` of the RAM picture).
pub fn in_swiotlb_region(memblock: &Memblock<'_>, addr: PhysAddr) -> bool {
    memblock.reserved().any(|r| {
        matches!(r.flags.kind, RegionKind::ReservedMemory(PoolKind::Swiotlb | PoolKind::RestrictedDma))
            && r.range.base() <= addr
            && addr < r.range.end()
    })
}

/// The heap grows by unmovable pages from the page allocator.
pub struct PageHeapSource;

impl HeapSource for PageHeapSource {
    fn grow(&self, min_bytes: usize) -> Option<(usize, usize)> {
        let pages = min_bytes.div_ceil(PAGE_SIZE as usize).max(1);
        let mut pa = page_allocator().lock();
        if pages <= 1 << MAX_PAGE_ORDER {
            let order = pages.next_power_of_two().trailing_zeros() as u8;
            let addr = pa.alloc_pages(order, ZoneType::Normal, MigrateType::Unmovable).ok()?;
            Some((addr as usize, (PAGE_SIZE as usize) << order))
        } else {
            // Whole pageblocks, taken out of the allocator; prefer ZONE_NORMAL, keep ZONE_DMA for DMA.
            let blocks = (min_bytes as u64).div_ceil(PAGEBLOCK_SIZE) as usize;
            let addr =
                pa.alloc_contig_pageblocks(blocks, ZoneType::Normal).or_else(|_| pa.alloc_contig_pageblocks(blocks, ZoneType::Dma)).ok()?;
            Some((addr as usize, blocks * PAGEBLOCK_SIZE as usize))
        }
    }
}

/// Bytes of page-allocator metadata for `ram_bytes` of RAM (page descriptors and the movable
/// handle table), to size the initial heap.
pub const fn metadata_bytes(ram_bytes: u64) -> u64 {
    (ram_bytes >> PAGE_SHIFT) * 64
}
