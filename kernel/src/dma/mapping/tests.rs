use super::*;
use crate::arch::host::{take_cache_ops, IrqContextGuard};
use crate::dma::pools::DevicePoolSlot;
use crate::dma::sim_maps::SimApiMaps;
use crate::dma::swiotlb::mem::DevicePool;
use crate::dma::swiotlb::SwiotlbPool;
use crate::mm::phys::SimMemory;
use std::boxed::Box;
use std::sync::atomic::AtomicUsize;

const RAM: PhysAddr = 0x4000_0000;
const POOL: PhysAddr = 0x4080_0000; // 2 MiB of slots, below the device limit
const LIMIT: PhysAddr = 0x40ff_ffff; // the device reaches the first 16 MiB
const HIGH: PhysAddr = 0x4100_0000; // a buffer beyond the limit

struct Setup {
    mem: &'static SimMemory,
    /// A `static` SWIOTLB of one pool, `pool`.
    swiotlb: &'static SwiotlbMem,
    pool: &'static SwiotlbPool,
}

fn setup() -> Setup {
    let mem: &'static SimMemory = Box::leak(Box::new(SimMemory::new(RAM, 32 << 20)));
    let swiotlb: &'static SwiotlbMem = Box::leak(Box::new(SwiotlbMem::static_for_test(POOL, 1024, 1, mem)));
    take_cache_ops();
    Setup { mem, swiotlb, pool: swiotlb.default_pool() }
}

fn dev(policy: BouncePolicy, coherent: bool) -> DmaDevice {
    DmaDevice::new(1, "disk0", Some(LIMIT), coherent, policy)
}

const TO: DmaDirection = DmaDirection::ToDevice;
const FROM: DmaDirection = DmaDirection::FromDevice;
const NOATTR: DmaAttrs = DmaAttrs { skip_cpu_sync: false, no_copy_in: false };

#[test]
fn reachable_buffers_of_a_coherent_device_are_not_bounced() {
    let s = setup();
    let api = DmaApi::new(s.swiotlb, None, None);
    let d = dev(BouncePolicy::WhenNeeded, true);
    let dma = api.sim_map_single(&d, RAM + 0x1000, 4096, TO, NOATTR).unwrap();
    assert_eq!(dma, RAM + 0x1000);
    assert!(!api.is_swiotlb_buffer(&d, dma));
    api.unmap_single(&d, dma, 4096, TO, NOATTR).unwrap();
    assert_eq!(s.pool.used_slots(), 0);
    assert_eq!(api.stats.maps_direct.load(Ordering::Relaxed), 1);
    assert!(take_cache_ops().is_empty(), "a coherent device needs no cache maintenance");
}

#[test]
fn buffers_beyond_the_limit_bounce_and_come_back() {
    let s = setup();
    let api = DmaApi::new(s.swiotlb, None, None);
    let d = dev(BouncePolicy::WhenNeeded, true);
    s.mem.write(HIGH, &[7u8; 3000]);
    let dma = api.sim_map_single(&d, HIGH, 3000, DmaDirection::Bidirectional, NOATTR).unwrap();
    assert!((POOL..POOL + (2 << 20)).contains(&dma) && d.dma_capable(dma, 3000));
    assert!(api.is_swiotlb_buffer(&d, dma));
    let mut seen = [0u8; 3000];
    s.mem.read(dma, &mut seen);
    assert_eq!(seen, [7u8; 3000], "copy-in on map");
    s.mem.write(dma, &[9u8; 3000]); // the device writes
    api.unmap_single(&d, dma, 3000, DmaDirection::Bidirectional, NOATTR).unwrap();
    s.mem.read(HIGH, &mut seen);
    assert_eq!(seen, [9u8; 3000], "copy-back on unmap");
    assert!(!api.is_swiotlb_buffer(&d, dma));
    assert_eq!(s.pool.used_slots(), 0);
}

/// A pool above the device's limit is a configuration error: the bounce is undone (the slot
/// freed) and reported, on the coherent device's short path and on the full one alike.
#[test]
fn a_pool_above_the_device_limit_is_refused_and_the_slot_freed() {
    let s = setup();
    let api = DmaApi::new(s.swiotlb, None, None);
    let low_limit = RAM + (1 << 20) - 1; // the pool (at POOL) is beyond it
                                         // Two page runs parked in the slot cache, which the coherent device's cached path would
                                         // hand out if it did not check the pool's reach first.
    s.pool.set_slot_cache(8);
    let d = dev(BouncePolicy::WhenNeeded, true);
    let maps: Vec<_> = (0..2).map(|i| api.sim_map_single(&d, HIGH + i * 4096, 4096, TO, NOATTR).unwrap()).collect();
    for dma in maps {
        api.unmap_single(&d, dma, 4096, TO, NOATTR).unwrap();
    }
    assert_eq!(s.pool.cached_runs(), 2);
    let bounced_before = api.stats.maps_bounced.load(Ordering::Relaxed);
    for coherent in [true, false] {
        let d = DmaDevice::new(1, "disk0", Some(low_limit), coherent, BouncePolicy::WhenNeeded);
        let err = api.sim_map_single(&d, HIGH, 4096, TO, NOATTR).unwrap_err();
        match err {
            DmaError::PoolUnreachable { tlb, limit } => {
                assert!((POOL..POOL + (2 << 20)).contains(&tlb), "{tlb:#x}");
                assert_eq!(limit, low_limit);
            }
            e => panic!("coherent {coherent}: {e}"),
        }
        assert_eq!(s.pool.used_slots(), 0, "coherent {coherent}: the slot is freed");
    }
    assert_eq!(api.stats.maps_bounced.load(Ordering::Relaxed), bounced_before);
}

/// `dma_capable` checks the last byte against the limit; a range that wraps the address space
/// is reachable only without a limit; zero bytes always are.
#[test]
fn dma_capable_checks_the_last_byte() {
    let limited = dev(BouncePolicy::WhenNeeded, true);
    assert!(limited.dma_capable(LIMIT, 1));
    assert!(limited.dma_capable(LIMIT - 4095, 4096));
    assert!(!limited.dma_capable(LIMIT - 4095, 4097));
    assert!(!limited.dma_capable(PhysAddr::MAX, 2));
    assert!(limited.dma_capable(PhysAddr::MAX, 0));
    let unlimited = DmaDevice::new(2, "disk1", None, true, BouncePolicy::WhenNeeded);
    assert!(unlimited.dma_capable(PhysAddr::MAX, 1));
    assert!(unlimited.dma_capable(PhysAddr::MAX, 2));
    assert!(unlimited.dma_capable(0, usize::MAX));
}

/// A second unmap of a bounce, or a sync after the unmap, is refused and counted with
/// `dma_debug` off: the slot is free, so it is no direct mapping either.
#[test]
fn unmap_or_sync_of_a_free_slot_is_refused_without_debug() {
    let s = setup();
    let api = DmaApi::new(s.swiotlb, None, None);
    let d = dev(BouncePolicy::WhenNeeded, true);
    let dma = api.sim_map_single(&d, HIGH, 3000, DmaDirection::Bidirectional, NOATTR).unwrap();
    api.unmap_single(&d, dma, 3000, DmaDirection::Bidirectional, NOATTR).unwrap();
    let refused = Err(DmaError::Swiotlb(SwiotlbError::NotMapped { tlb_addr: dma }));
    assert_eq!(api.unmap_single(&d, dma, 3000, DmaDirection::Bidirectional, NOATTR), refused);
    assert_eq!(api.sync_single_for_cpu(&d, dma, 3000, FROM), refused);
    assert_eq!(api.sync_single_for_device(&d, dma, 3000, TO), refused);
    assert_eq!(api.stats.misuse.load(Ordering::Relaxed), 3);
    assert_eq!(s.pool.used_slots(), 0);
    // A direct mapping beside the pool is still served.
    let direct = api.sim_map_single(&d, RAM + 0x1000, 4096, TO, NOATTR).unwrap();
    api.unmap_single(&d, direct, 4096, TO, NOATTR).unwrap();
    assert_eq!(api.stats.misuse.load(Ordering::Relaxed), 3);
}

/// The same for a page whose unmap parked its run in the slot cache: the run's slots stay held
/// (they read Used without a lock), but no mapping lives there, so a second unmap or a sync is
/// refused and counted as well (a lent page mapped directly, which the unmap's look under the
/// lock does not find either, still unmaps: `a_lent_page_in_the_pool_range_mapped_directly_...`).
#[test]
fn unmap_or_sync_of_a_parked_run_is_refused_without_debug() {
    let s = setup();
    s.pool.set_slot_cache(8);
    let api = DmaApi::new(s.swiotlb, None, None);
    let d = dev(BouncePolicy::WhenNeeded, true);
    let dma = api.sim_map_single(&d, HIGH, 4096, TO, NOATTR).unwrap();
    api.unmap_single(&d, dma, 4096, TO, NOATTR).unwrap();
    assert_eq!(s.pool.cached_runs(), 1, "the run is parked");
    let refused = Err(DmaError::Swiotlb(SwiotlbError::NotMapped { tlb_addr: dma }));
    assert_eq!(api.unmap_single(&d, dma, 4096, TO, NOATTR), refused);
    assert_eq!(api.sync_single_for_cpu(&d, dma, 4096, FROM), refused);
    assert_eq!(api.sync_single_for_device(&d, dma, 4096, TO), refused);
    assert_eq!(api.stats.misuse.load(Ordering::Relaxed), 3);
    assert_eq!((s.pool.used_slots(), s.pool.cached_runs()), (0, 1));
}

#[test]
fn non_coherent_devices_get_cache_maintenance_and_bounce_shared_lines() {
    let s = setup();
    let api = DmaApi::new(s.swiotlb, None, None);
    let d = dev(BouncePolicy::WhenNeeded, false);
    // Cache-line aligned: direct, clean on map, invalidate on unmap.
    let dma = api.sim_map_single(&d, RAM + 0x2000, 256, FROM, NOATTR).unwrap();
    assert_eq!(dma, RAM + 0x2000);
    api.unmap_single(&d, dma, 256, FROM, NOATTR).unwrap();
    assert_eq!(take_cache_ops(), [(CacheOp::Clean, RAM + 0x2000, 256), (CacheOp::Invalidate, RAM + 0x2000, 256)]);
    // Sharing a cache line with other data: bounced, and the slot maintained instead.
    let dma = api.sim_map_single(&d, RAM + 0x2010, 100, FROM, NOATTR).unwrap();
    assert!(api.is_swiotlb_buffer(&d, dma));
    api.unmap_single(&d, dma, 100, FROM, NOATTR).unwrap();
    assert_eq!(take_cache_ops(), [(CacheOp::Clean, dma, 100), (CacheOp::Invalidate, dma, 100)]);
}

#[test]
fn forced_and_restricted_devices_always_bounce_restricted_never_falls_back() {
    let s = setup();
    let api = DmaApi::new(s.swiotlb, None, None);
    let forced = dev(BouncePolicy::Forced, true);
    let dma = api.sim_map_single(&forced, RAM, 512, TO, NOATTR).unwrap();
    assert!(api.is_swiotlb_buffer(&forced, dma));
    api.unmap_single(&forced, dma, 512, TO, NOATTR).unwrap();

    let restricted_pool: &'static SwiotlbPool = Box::leak(Box::new(SwiotlbPool::new(0x40c0_0000, 128, 1, s.mem).unwrap()));
    let r = dev(BouncePolicy::Restricted(restricted_pool), true);
    let mut maps = Vec::new();
    loop {
        match api.sim_map_single(&r, RAM, 64 * 1024, TO, NOATTR) {
            Ok(dma) => {
                assert!((0x40c0_0000..0x40c0_0000 + 128 * 2048).contains(&dma), "outside the restricted pool");
                maps.push(dma);
            }
            Err(e) => {
                assert!(matches!(e, DmaError::Swiotlb(SwiotlbError::BufferFull { .. })), "{e}");
                break;
            }
        }
    }
    assert_eq!(maps.len(), 4, "128 slots hold four 64 KiB mappings");
    assert_eq!(s.pool.used_slots(), 0, "no fallback to the default pool");
    for dma in maps {
        api.unmap_single(&r, dma, 64 * 1024, TO, NOATTR).unwrap();
    }
}

#[test]
fn the_device_pool_is_tried_first_then_the_default_pool() {
    let s = setup();
    let api = DmaApi::new(s.swiotlb, None, None);
    let d = dev(BouncePolicy::WhenNeeded, true);
    let own: &'static DevicePoolSlot = Box::leak(Box::new(DevicePoolSlot::new()));
    assert!(own.attach(DevicePool::for_test(SwiotlbPool::new(0x40c0_0000, 128, 1, s.mem).unwrap())).is_ok());
    assert!(d.set_device_pool(Some(own)).is_none());
    let a = api.sim_map_single(&d, HIGH, 200 * 1024, TO, NOATTR).unwrap();
    assert!(own.is_swiotlb_buffer(a));
    let b = api.sim_map_single(&d, HIGH, 200 * 1024, TO, NOATTR).unwrap();
    assert!(s.pool.is_swiotlb_buffer(b), "the device pool is full: the default pool serves");
    api.unmap_single(&d, a, 200 * 1024, TO, NOATTR).unwrap();
    api.unmap_single(&d, b, 200 * 1024, TO, NOATTR).unwrap();
    assert_eq!(s.pool.used_slots(), 0);
    assert!(own.detach().is_ok_and(|p| p.is_some_and(|p| p.pool().used_slots() == 0)), "the device pool is empty");
}

static KICKS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn a_failed_bounce_in_irq_context_is_counted_and_kicks_the_worker() {
    let s = setup();
    let api = DmaApi::new(
        s.swiotlb,
        None,
        Some(|| {
            KICKS.fetch_add(1, Ordering::SeqCst);
        }),
    );
    let d = dev(BouncePolicy::WhenNeeded, true);
    let mut live = Vec::new();
    let _irq = IrqContextGuard::enter();
    let err = loop {
        match api.sim_map_single(&d, HIGH, 256 * 1024, TO, NOATTR) {
            Ok(dma) => live.push(dma),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, DmaError::Swiotlb(SwiotlbError::BufferFull { .. })), "{err}");
    assert_eq!(live.len(), 8);
    assert_eq!(api.stats.irq_failures.load(Ordering::Relaxed), 1);
    assert_eq!(api.stats.maps_in_irq.load(Ordering::Relaxed), 9);
    assert_eq!(KICKS.load(Ordering::SeqCst), 1);
    assert!(matches!(api.sim_map_single(&d, RAM, 0, TO, NOATTR), Err(DmaError::ZeroSize)));
    for dma in live {
        api.unmap_single(&d, dma, 256 * 1024, TO, NOATTR).unwrap();
    }
}

#[test]
fn debug_mode_refuses_misuse_without_touching_the_pool() {
    let s = setup();
    let debug: &'static DmaDebug = Box::leak(Box::new(DmaDebug::new()));
    let api = DmaApi::new(s.swiotlb, Some(debug), None);
    let d = dev(BouncePolicy::WhenNeeded, true);
    let dma = api.sim_map_single(&d, HIGH, 4096, FROM, NOATTR).unwrap();
    assert!(matches!(api.sync_single_for_cpu(&d, dma + 4000, 200, FROM), Err(DmaError::Misuse(DmaDebugError::SyncOutOfRange { .. }))));
    assert!(matches!(api.sync_single_for_device(&d, dma, 16, TO), Err(DmaError::Misuse(DmaDebugError::SyncWrongDirection { .. }))));
    api.sync_single_for_cpu(&d, dma, 16, FROM).unwrap();
    api.unmap_single(&d, dma, 4096, FROM, NOATTR).unwrap();
    assert!(matches!(api.unmap_single(&d, dma, 4096, FROM, NOATTR), Err(DmaError::Misuse(DmaDebugError::DoubleUnmap { .. }))));
    assert!(matches!(api.unmap_single(&d, 0x4123_0000, 64, FROM, NOATTR), Err(DmaError::Misuse(DmaDebugError::UnmapUnknown { .. }))));
    assert_eq!(api.stats.misuse.load(Ordering::Relaxed), 4);
    assert_eq!(debug.live(), 0);
    assert_eq!(s.pool.used_slots(), 0);
}

#[test]
fn map_sg_is_all_or_nothing() {
    let s = setup();
    let api = DmaApi::new(s.swiotlb, None, None);
    let d = dev(BouncePolicy::WhenNeeded, true);
    let mut sg: Vec<ScatterEntry> = (0..10).map(|i| ScatterEntry { addr: HIGH + i * 0x40000, len: 240 * 1024, dma_addr: 0 }).collect();
    let err = api.sim_map_sg(&d, &mut sg, TO, NOATTR).unwrap_err();
    assert!(matches!(err, DmaError::Swiotlb(SwiotlbError::BufferFull { .. })));
    assert_eq!(s.pool.used_slots(), 0, "the entries mapped before the failure were unmapped");
    sg.truncate(4);
    api.sim_map_sg(&d, &mut sg, TO, NOATTR).unwrap();
    assert!(sg.iter().all(|e| api.is_swiotlb_buffer(&d, e.dma_addr)));
    api.unmap_sg(&d, &sg, TO, NOATTR).unwrap();
    assert_eq!(s.pool.used_slots(), 0);
}

#[test]
fn a_lent_page_in_the_pool_range_mapped_directly_is_not_a_bounce_buffer() {
    let s = setup();
    s.pool.lend(0..1024).unwrap(); // the whole pool lent to the page allocator
    let api = DmaApi::new(s.swiotlb, None, None);
    let d = dev(BouncePolicy::WhenNeeded, true);
    // A movable page the page allocator placed in the lent range, DMA-mapped directly.
    let page = POOL + 0x3000;
    s.mem.write(page, &[1u8; 4096]);
    let dma = api.sim_map_single(&d, page, 4096, FROM, NOATTR).unwrap();
    assert_eq!(dma, page);
    assert!(!api.is_swiotlb_buffer(&d, dma));
    s.mem.write(dma, &[2u8; 4096]);
    api.unmap_single(&d, dma, 4096, FROM, NOATTR).unwrap();
    let mut buf = [0u8; 4096];
    s.mem.read(page, &mut buf);
    assert_eq!(buf, [2u8; 4096]);
}

/// Allocates movable pages in ZONE_DMA until one lands in `range` (they fill MOVABLE blocks
/// first, then borrow lent or CMA ones): that page, and the others, still allocated.
fn first_movable_page_in(
    pages: &LockedPageAllocator,
    range: &core::ops::Range<PhysAddr>,
) -> (crate::mm::page_alloc::MovablePage, Vec<crate::mm::page_alloc::MovablePage>) {
    use crate::mm::page_alloc::{OwnerKind, PageOwner};
    let owner = PageOwner { kind: OwnerKind::Dirty, cookie: 0 };
    let mut others = Vec::new();
    loop {
        let p = pages.lock().alloc_movable(0, ZoneType::Dma, owner).unwrap();
        if range.contains(&pages.lock().movable_info(p).unwrap().addr) {
            return (p, others);
        }
        others.push(p);
    }
}

/// Regression: a movable page of a lent pageblock, mapped directly, is pinned until the
/// unmap: reclaim reports its block busy and does not move it; after the unmap it does.
#[test]
fn a_direct_mapping_pins_a_page_of_a_lent_block_until_unmap() {
    use crate::mm::page_alloc::{PageAllocator, ReclaimError, ReclaimMode};
    let s = setup();
    s.pool.lend(0..1024).unwrap(); // the whole pool lent to the page allocator
    let lent = POOL..POOL + (2 << 20);
    let pages = LockedPageAllocator::new(
        PageAllocator::new(RAM..RAM + (32 << 20), &[RAM + (12 << 20)..RAM + (32 << 20)], Some(LIMIT + 1)).unwrap(),
    );
    pages.lock().lend_swiotlb_pageblocks(lent.clone()).unwrap();
    let api = DmaApi::new(s.swiotlb, None, None).with_lent_page_pins(&pages);
    let d = dev(BouncePolicy::WhenNeeded, true);
    // Movable pages fill ZONE_DMA's movable blocks, then spill into the lent one.
    let addr_of = |p| pages.lock().movable_info(p).unwrap().addr;
    let (page, others) = first_movable_page_in(&pages, &lent);
    // A page outside the lent block, mapped directly, is not pinned.
    let outside = others[0];
    let dma = api.sim_map_single(&d, addr_of(outside), 4096, FROM, NOATTR).unwrap();
    assert_eq!(pages.lock().movable_info(outside).unwrap().pins, 0);
    api.unmap_single(&d, dma, 4096, FROM, NOATTR).unwrap();
    others.into_iter().for_each(|p| pages.lock().free_movable(p).unwrap()); // migration targets

    let addr = addr_of(page);
    let dma = api.sim_map_single(&d, addr, 4096, FROM, NOATTR).unwrap();
    assert_eq!(dma, addr, "mapped directly");
    assert_eq!(pages.lock().movable_info(page).unwrap().pins, 1);
    assert_eq!(api.stats.direct_pins.load(Ordering::Relaxed), 1);
    s.mem.write(dma, &[6u8; 4096]); // the device writes
    let reclaim = || pages.reclaim_swiotlb_pageblocks(lent.clone(), s.mem, ReclaimMode { drop_clean: true }, &mut |_| {});
    match reclaim() {
        Err(ReclaimError::Busy(report)) => assert_eq!(report.pinned, [page]),
        other => panic!("reclaim took the block of a page mapped for DMA: {other:?}"),
    }
    assert_eq!(addr_of(page), addr, "not moved during DMA");
    api.unmap_single(&d, dma, 4096, FROM, NOATTR).unwrap();
    assert_eq!(pages.lock().movable_info(page).unwrap().pins, 0, "unpinned by the unmap");
    reclaim().unwrap();
    assert!(!lent.contains(&addr_of(page)), "migrated out once unmapped");
    let mut buf = [0u8; 4096];
    s.mem.read(addr_of(page), &mut buf);
    assert_eq!(buf, [6u8; 4096], "what the device wrote moved with the page");
}

/// The same for a movable page borrowed from a CMA area: `cma_alloc` must not migrate it
/// while a device writes to it.
#[test]
fn a_direct_mapping_pins_a_page_borrowed_from_the_cma_area_until_unmap() {
    use crate::mm::cma::{CmaArea, CmaError};
    use crate::mm::page_alloc::{PageAllocator, ReclaimMode};
    let s = setup();
    let area_range = RAM + (10 << 20)..RAM + (12 << 20);
    let pages = LockedPageAllocator::new(
        PageAllocator::new(RAM..RAM + (32 << 20), &[RAM + (12 << 20)..RAM + (32 << 20)], Some(LIMIT + 1)).unwrap(),
    );
    let area = CmaArea::activate("test", &pages, area_range.clone()).unwrap();
    let api = DmaApi::new(s.swiotlb, None, None).with_lent_page_pins(&pages).with_cma_range(area_range.clone());
    let d = dev(BouncePolicy::WhenNeeded, true);
    let addr_of = |p| pages.lock().movable_info(p).unwrap().addr;
    let (page, others) = first_movable_page_in(&pages, &area_range);
    others.into_iter().for_each(|p| pages.lock().free_movable(p).unwrap()); // migration targets
    let addr = addr_of(page);
    let dma = api.sim_map_single(&d, addr, 4096, FROM, NOATTR).unwrap();
    assert_eq!((dma, pages.lock().movable_info(page).unwrap().pins), (addr, 1), "mapped directly and pinned");
    s.mem.write(dma, &[9u8; 4096]);
    let alloc = || area.cma_alloc(&pages, s.mem, 1, ReclaimMode { drop_clean: true }, &mut |_| {});
    assert!(matches!(alloc(), Err(CmaError::Busy { .. })), "cma_alloc took the block of a page mapped for DMA");
    assert_eq!(addr_of(page), addr, "not moved during DMA");
    api.unmap_single(&d, dma, 4096, FROM, NOATTR).unwrap();
    assert_eq!(pages.lock().movable_info(page).unwrap().pins, 0, "unpinned by the unmap");
    alloc().unwrap();
    let mut buf = [0u8; 4096];
    s.mem.read(addr_of(page), &mut buf);
    assert_eq!(buf, [9u8; 4096], "what the device wrote moved with the page");
}

#[test]
fn coherent_memory_of_a_restricted_device_comes_from_its_pool() {
    let s = setup();
    let api = DmaApi::new(s.swiotlb, None, None);
    let restricted_pool: &'static SwiotlbPool = Box::leak(Box::new(SwiotlbPool::new(0x40c0_0000, 128, 1, s.mem).unwrap()));
    let r = dev(BouncePolicy::Restricted(restricted_pool), true);
    let pages = crate::mm::page_alloc::LockedPageAllocator::new(
        crate::mm::page_alloc::PageAllocator::new(RAM..RAM + (32 << 20), &[RAM + (12 << 20)..RAM + (32 << 20)], Some(LIMIT + 1)).unwrap(),
    );
    s.mem.fill(0x40c0_0000, 0xee, 128 * 2048);
    let (cpu, dma) = api.alloc_coherent(&r, &pages, 5000).unwrap();
    assert_eq!(cpu, dma);
    assert!((0x40c0_0000..0x40c4_0000).contains(&cpu) && cpu % 4096 == 0);
    let mut buf = vec![1u8; 5000];
    s.mem.read(cpu, &mut buf);
    assert!(buf.iter().all(|&b| b == 0), "coherent memory is zeroed");
    assert_eq!(restricted_pool.used_slots(), 4, "two whole pages of slots");
    api.free_coherent(&r, &pages, cpu, 5000).unwrap();
    assert_eq!(restricted_pool.used_slots(), 0);
    assert!(api.free_coherent(&r, &pages, cpu, 5000).is_err(), "double free refused");
    // Other devices get pages.
    let d = dev(BouncePolicy::WhenNeeded, true);
    let (cpu, _) = api.alloc_coherent(&d, &pages, 5000).unwrap();
    assert!(cpu >= RAM + (12 << 20) && d.dma_capable(cpu, 8192), "from ZONE_DMA: {cpu:#x}");
    api.free_coherent(&d, &pages, cpu, 5000).unwrap();
}

#[test]
fn max_mapping_size_follows_the_bounce_limit() {
    let s = setup();
    let api = DmaApi::new(s.swiotlb, None, None);
    assert_eq!(api.max_mapping_size(&dev(BouncePolicy::WhenNeeded, true)), 256 * 1024);
    let unlimited = DmaDevice::new(2, "x", None, true, BouncePolicy::WhenNeeded);
    assert_eq!(api.max_mapping_size(&unlimited), usize::MAX);
    let mut forced = DmaDevice::new(2, "x", None, true, BouncePolicy::Forced);
    forced.min_align_mask = 0xfff;
    assert_eq!(api.max_mapping_size(&forced), 256 * 1024 - 4096);
}

/// `DmaDevice::direct_as_is`, the inline direct path's one compare, says yes exactly where the
/// full checks would map as is with no cache maintenance: a coherent `WhenNeeded` device and a
/// buffer it reaches (at the limit's edges, with no limit, with a limit at the top of the address
/// space); never for a forced, restricted or non-coherent device.
#[test]
fn direct_as_is_agrees_with_the_full_checks() {
    let s = setup();
    let api = DmaApi::new(s.swiotlb, None, None);
    let restricted = BouncePolicy::Restricted(s.pool);
    for limit in [Some(LIMIT), None, Some(PhysAddr::MAX), Some(0)] {
        for (policy, coherent) in
            [(BouncePolicy::WhenNeeded, true), (BouncePolicy::WhenNeeded, false), (BouncePolicy::Forced, true), (restricted, true)]
        {
            let d = DmaDevice::new(1, "d", limit, coherent, policy);
            let edge = limit.unwrap_or(PhysAddr::MAX);
            for addr in [0, 64, RAM, edge.saturating_sub(4096), edge.saturating_sub(63), edge, edge.saturating_add(1), PhysAddr::MAX - 4095]
            {
                for size in [1usize, 64, 4096, 1 << 20] {
                    let full = matches!(policy, BouncePolicy::WhenNeeded) && coherent && !api.needs_bounce(&d, addr, size);
                    let as_is = d.direct_as_is(addr, size);
                    // The one compare may send a mappable buffer at the very top of the address
                    // space to the full path (its end does not fit), never the other way round.
                    let top = addr.checked_add(size as u64).is_none_or(|end| end == PhysAddr::MAX);
                    assert!(as_is == full || (top && !as_is), "{d:?}: addr {addr:#x} size {size:#x}: as is {as_is}, full checks {full}");
                }
            }
        }
    }
}
