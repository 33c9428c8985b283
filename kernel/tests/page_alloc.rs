//! In-QEMU tests of the page allocator with MIGRATE_SWIOTLB: lending the SWIOTLB pool's
//! pageblocks, filling memory with checksummed movable pages, taking the blocks back by
//! migration, pins that block it, page-cache pages dropped instead of copied, interrupt
//! handlers that read a page while it migrates, and a CMA area and compaction under the same
//! workload.
#![no_std]
#![no_main]

extern crate alloc;

use core::ops::Range;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;

use alloc::vec;
use alloc::vec::Vec;
use boot::exception::IrqContext;
use kernel::demo::pressure::MemoryPressure;
use kernel::ktest::{self, TestCase, TestResult};
use kernel::mm::cma::CmaArea;
use kernel::mm::page_alloc::page_cache::{CacheKey, PageCache};
use kernel::mm::page_alloc::{
    FreeError, LockedPageAllocator, MigrateType, MovablePage, OwnerKind, PageOwner, ReclaimError, ReclaimMode, ZoneType, PAGEBLOCK_SIZE,
};
use kernel::mm::phys::PhysMemory;
use kernel::mm::{PhysAddr, PAGE_SIZE};
use kernel::platform::exit::ExitStatus;
use kernel::platform::mm::{cma_area, page_allocator};
use kernel::platform::phys::{ram, IdentityMappedRam};
use kernel::platform::{time, Kernel};
use kernel::{kassert, kassert_eq, kprintln};

kernel::entry!(main);

fn main(_k: &'static Kernel) -> ExitStatus {
    ktest::run(
        "page_alloc",
        &[
            TestCase { name: "reclaim_of_lent_blocks_under_a_full_movable_workload", run: reclaim_under_full_workload },
            TestCase { name: "a_pinned_page_blocks_reclaim_and_is_reported", run: pinned_page_blocks_reclaim },
            TestCase { name: "clean_page_cache_pages_are_dropped_on_reclaim", run: page_cache_pages_dropped },
            TestCase { name: "irq_readers_never_see_a_half_moved_page", run: irq_during_migration },
            TestCase { name: "heap_grows_from_unmovable_pages", run: heap_grows },
            TestCase { name: "memory_taken_to_the_last_page_fails_cleanly_and_comes_back", run: to_the_last_page },
            TestCase { name: "bad_frees_are_errors_not_corruption", run: bad_frees },
            TestCase { name: "cma_alloc_and_compaction_under_a_full_movable_workload", run: cma_and_compaction },
            TestCase { name: "the_boot_cma_area_serves_cma_alloc", run: boot_cma_area },
        ],
    )
}

/// RAM, for this test kernel: it writes only memory it allocated (its buffers, the pages of its
/// memory pressure and page caches) or, standing in for a device, what a mapping handed that device.
fn mem() -> &'static IdentityMappedRam {
    // SAFETY: see the doc comment: every write of this file goes to such memory.
    unsafe { ram() }
}

static TEST_POOL: spin::Once<Range<PhysAddr>> = spin::Once::new();

/// Up to 16 pageblocks (32 MiB) of ZONE_DMA taken out of the allocator, standing in for a
/// SWIOTLB pool's spare part: the tests lend them as MIGRATE_SWIOTLB and reclaim them (the
/// kernel's own pool is the DMA layer's, driven through its manager in the dma tests). Sized to
/// the machine: at most half of ZONE_DMA's free pageblocks (the CMA test carves its area there
/// too), at least 2.
fn pool_range() -> Result<Range<PhysAddr>, &'static str> {
    let range = TEST_POOL.call_once(|| {
        let mut a = page_allocator().lock();
        let free_blocks = a.nr_free_pages(ZoneType::Dma) / (PAGEBLOCK_SIZE / PAGE_SIZE) as usize;
        let mut blocks = (free_blocks / 2).min(16);
        while blocks >= 2 {
            if let Ok(base) = a.alloc_contig_pageblocks(blocks, ZoneType::Dma) {
                return base..base + blocks as u64 * PAGEBLOCK_SIZE;
            }
            blocks -= 1;
        }
        0..0
    });
    if range.start == 0 {
        return Err("not even 2 free pageblocks in a row in ZONE_DMA");
    }
    if range.end - range.start < 16 * PAGEBLOCK_SIZE {
        kprintln!("  test pool: {} pageblocks (ZONE_DMA has no room for 16)", (range.end - range.start) / PAGEBLOCK_SIZE);
    }
    Ok(range.clone())
}

/// Every how many pressure pages to free so that `to_move` pages find migration targets: every
/// 4th where the pressure holds 8 times as many pages (512 MiB and more), else every 2nd.
fn room_stride(pressure_pages: usize, to_move: usize) -> usize {
    if pressure_pages >= 8 * to_move {
        4
    } else {
        2
    }
}

fn picture(label: &str) {
    let pa = page_allocator().lock();
    let test_pool = TEST_POOL.get().cloned().unwrap_or(0..0);
    kprintln!("  {label:>7} [{}]", pa.ram_picture(|a| test_pool.contains(&a)));
}

fn pages_in(pressure: &MemoryPressure, alloc: &LockedPageAllocator, range: &Range<PhysAddr>) -> usize {
    pressure.pages().filter(|p| alloc.pin(*p).is_ok_and(|pin| range.contains(&pin.addr()))).count()
}

fn reclaim_under_full_workload() -> TestResult {
    let alloc = page_allocator();
    let pool = pool_range()?;
    let blocks = (pool.end - pool.start) / PAGEBLOCK_SIZE;
    let lent_before = alloc.lock().nr_free_swiotlb_pages(ZoneType::Dma) as u64; // the DMA layer's own
    alloc.lock().lend_swiotlb_pageblocks(pool.clone()).map_err(|e| alloc::format!("lend: {e}"))?;
    kassert_eq!(alloc.lock().nr_free_swiotlb_pages(ZoneType::Dma) as u64, lent_before + blocks * 512);
    picture("lent");

    // Fill all movable memory (MOVABLE blocks first, then the lent SWIOTLB blocks).
    let t0 = time::uptime();
    let mut pressure = MemoryPressure::fill(alloc, mem(), ZoneType::Normal, usize::MAX, 0x5eed);
    kassert_eq!(alloc.lock().nr_free_swiotlb_pages(ZoneType::Dma), 0);
    let in_pool = pages_in(&pressure, alloc, &pool);
    kassert!(in_pool as u64 == blocks * 512, "{in_pool} pages in the lent blocks, expected them full");
    picture("full");
    // Make room outside the lent blocks for the migration targets: free every 4th page (every
    // 2nd on a small machine, where the lent blocks are a large share of what the pressure holds).
    let freed = pressure.release_every(alloc, room_stride(pressure.len(), in_pool));
    let in_pool = pages_in(&pressure, alloc, &pool);
    kprintln!("  filled {} pages in {:?}, freed {freed}; {in_pool} pages in lent blocks", pressure.len() + freed, time::uptime() - t0);
    kassert_eq!(pressure.verify(alloc, mem()).map_err(|e| alloc::format!("{e:?}"))?, pressure.len());

    let t1 = time::uptime();
    let report = alloc
        .reclaim_swiotlb_pageblocks(pool.clone(), mem(), ReclaimMode { drop_clean: false }, &mut |_| {})
        .map_err(|e| alloc::format!("reclaim: {e}"))?;
    let took = time::uptime() - t1;
    kprintln!(
        "  reclaim of {blocks} blocks: {} pages migrated, {} dropped, {} pinned, in {took:?}",
        report.migrated,
        report.dropped,
        report.pinned.len()
    );
    picture("back");
    kassert_eq!(report.migrated, in_pool);
    kassert!(report.pinned.is_empty() && report.failed.is_empty());
    kassert_eq!(pages_in(&pressure, alloc, &pool), 0);
    kassert_eq!(pressure.verify(alloc, mem()).map_err(|e| alloc::format!("{e:?}"))?, pressure.len());
    kassert_eq!(alloc.lock().pageblock_migratetype(pool.start), None);
    pressure.release(alloc).map_err(|e| alloc::format!("{e}"))?;
    Ok(())
}

fn pinned_page_blocks_reclaim() -> TestResult {
    let alloc = page_allocator();
    let pool = pool_range()?;
    alloc.lock().lend_swiotlb_pageblocks(pool.clone()).map_err(|e| alloc::format!("lend: {e}"))?;
    let pressure = MemoryPressure::fill(alloc, mem(), ZoneType::Normal, usize::MAX, 7);
    let mut pressure = pressure;
    pressure.release_every(alloc, 2);
    let victim =
        pressure.pages().find(|p| alloc.pin(*p).is_ok_and(|pin| pool.contains(&pin.addr()))).ok_or("no page in the lent blocks")?;
    let guard = alloc.pin(victim).map_err(|e| alloc::format!("{e}"))?;
    let first = alloc.reclaim_swiotlb_pageblocks(pool.clone(), mem(), ReclaimMode { drop_clean: false }, &mut |_| {});
    let ok = matches!(&first, Err(ReclaimError::Busy(r)) if r.pinned.contains(&victim));
    kassert!(ok, "reclaim with a pinned page: {first:?}");
    kassert_eq!(alloc.lock().pageblock_migratetype(pool.start), Some(MigrateType::Swiotlb));
    drop(guard);
    let second = alloc.reclaim_swiotlb_pageblocks(pool.clone(), mem(), ReclaimMode { drop_clean: false }, &mut |_| {});
    kassert!(second.is_ok(), "reclaim after unpinning: {second:?}");
    kassert_eq!(pressure.verify(alloc, mem()).map_err(|e| alloc::format!("{e:?}"))?, pressure.len());
    pressure.release(alloc).map_err(|e| alloc::format!("{e}"))?;
    Ok(())
}

fn page_cache_pages_dropped() -> TestResult {
    let alloc = page_allocator();
    let pool = pool_range()?;
    // Fill all memory first, then lend the test blocks: the cache's pages can only land there.
    // Afterwards every 8th pressure page is freed, room for the one dirty page to migrate to.
    let mut pressure = MemoryPressure::fill(alloc, mem(), ZoneType::Normal, usize::MAX, 9);
    alloc.lock().lend_swiotlb_pageblocks(pool.clone()).map_err(|e| alloc::format!("lend: {e}"))?;
    let mut cache = PageCache::new(alloc, mem(), ZoneType::Normal);
    let block = |i: u64| vec![(i % 251) as u8; PAGE_SIZE as usize];
    // 3000 clean pages and a dirty one, fewer if the test pool is smaller than 16 pageblocks
    // (about 3/8 of its pages: every clean page must find room in the lent blocks).
    let clean = ((pool.end - pool.start) / PAGE_SIZE * 3 / 8).min(3000);
    let mut result = (|| -> TestResult {
        for i in 0..clean {
            cache.insert_clean(CacheKey { device: 0, block: i }, &block(i)).map_err(|e| alloc::format!("{e:?}"))?;
        }
        cache.write(CacheKey { device: 0, block: clean }, &block(clean)).map_err(|e| alloc::format!("{e:?}"))?;
        Ok(())
    })();
    pressure.release_every(alloc, 8);
    if result.is_ok() {
        let mut dropped = Vec::new();
        result = alloc
            .reclaim_swiotlb_pageblocks(pool, mem(), ReclaimMode { drop_clean: true }, &mut |d| dropped.push(d))
            .map_err(|e| alloc::format!("reclaim: {e}"))
            .and_then(|report| {
                for d in dropped {
                    cache.page_dropped(d);
                }
                kprintln!(
                    "  page cache reclaim: {} dropped, {} migrated; {} pages still cached",
                    report.dropped,
                    report.migrated,
                    cache.len()
                );
                kassert!(report.dropped as u64 > clean * 29 / 30, "only {} of {clean} clean pages dropped", report.dropped);
                kassert_eq!(cache.len(), clean as usize + 1 - report.dropped);
                // What is still cached reads back right; the dirty page was migrated, not dropped.
                let mut buf = vec![0u8; PAGE_SIZE as usize];
                for i in 0..=clean {
                    if cache.read(CacheKey { device: 0, block: i }, &mut buf).map_err(|e| alloc::format!("{e:?}"))? {
                        kassert!(buf == block(i), "cached block {i} corrupted");
                    } else {
                        kassert!(i != clean, "the dirty page was dropped");
                    }
                }
                Ok(())
            });
    }
    drop(cache);
    pressure.release(alloc).map_err(|e| alloc::format!("{e}"))?;
    result
}

// ---- interrupt readers during migration ----

static TARGET: AtomicU64 = AtomicU64::new(u64::MAX); // the MovablePage, as raw bits (see below)
static MIGRATING: AtomicBool = AtomicBool::new(false);
static READS: AtomicU64 = AtomicU64::new(0);
static READS_DURING_MIGRATION: AtomicU64 = AtomicU64::new(0);
static TORN: AtomicU64 = AtomicU64::new(0);
static PAGE_HANDLE: kernel::sync::IrqSafeSpinLock<Option<MovablePage>> = kernel::sync::IrqSafeSpinLock::new(None);

/// Every 8-byte word of the page is `seq << 32 | word index`: a page that is half old, half new
/// frame has words of two sequences (or garbage), which the reader detects.
fn check_page(ctx: &IrqContext<'_>) {
    let _ = ctx;
    let Some(page) = *PAGE_HANDLE.lock() else { return };
    let Ok(pin) = page_allocator().pin(page) else { return };
    let mut buf = [0u8; PAGE_SIZE as usize];
    mem().read(pin.addr(), &mut buf);
    let first = u64::from_le_bytes(buf[..8].try_into().unwrap_or_default());
    let seq = first >> 32;
    let ok = buf.chunks_exact(8).enumerate().all(|(i, w)| u64::from_le_bytes(w.try_into().unwrap_or_default()) == (seq << 32 | i as u64));
    READS.fetch_add(1, Ordering::Relaxed);
    if MIGRATING.load(Ordering::Relaxed) {
        READS_DURING_MIGRATION.fetch_add(1, Ordering::Relaxed);
    }
    if !ok {
        TORN.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes a new sequence into the page with IRQs masked: the test is about migration, so the
/// reader must never see this (CPU) write half done.
fn write_seq(page: MovablePage, seq: u64) -> TestResult {
    let pin = page_allocator().pin(page).map_err(|e| alloc::format!("{e}"))?;
    let mut buf = [0u8; PAGE_SIZE as usize];
    for (i, w) in buf.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&(seq << 32 | i as u64).to_le_bytes());
    }
    let irq = kernel::arch::irq_save();
    mem().write(pin.addr(), &buf);
    kernel::arch::irq_restore(irq);
    Ok(())
}

fn irq_during_migration() -> TestResult {
    let alloc = page_allocator();
    let page = alloc
        .lock()
        .alloc_movable(0, ZoneType::Normal, PageOwner { kind: OwnerKind::Dirty, cookie: 1 })
        .map_err(|e| alloc::format!("{e}"))?;
    write_seq(page, 1)?;
    *PAGE_HANDLE.lock() = Some(page);
    TARGET.store(0, Ordering::Relaxed);
    kassert!(time::add_tick_hook(check_page), "no room for a tick hook");
    time::start_tick(Duration::from_micros(30));
    let (mut moved, mut refused) = (0u32, 0u32);
    let mut last = alloc.pin(page).map_err(|e| alloc::format!("{e}"))?.addr();
    // At least 400 migrations, and on until interrupts have read the page during some (how many
    // land inside a migration depends on the host's speed: go on rather than fail, up to a bound
    // that only a tick that never fires would reach).
    for seq in 2..200_000u64 {
        if seq >= 400 && READS_DURING_MIGRATION.load(Ordering::Relaxed) >= 3 {
            break;
        }
        write_seq(page, seq)?; // the old frame, freed after the move, keeps an older sequence
        MIGRATING.store(true, Ordering::Relaxed);
        let r = alloc.migrate_page(page, mem());
        MIGRATING.store(false, Ordering::Relaxed);
        match r {
            Ok(()) => moved += 1,
            Err(_) => refused += 1, // pinned by the reader during every attempt
        }
        let now = alloc.pin(page).map_err(|e| alloc::format!("{e}"))?.addr();
        if r.is_ok() {
            kassert!(now != last, "migration reported success but the frame did not change");
        }
        last = now;
    }
    time::stop_tick();
    time::remove_tick_hook(check_page);
    *PAGE_HANDLE.lock() = None;
    let (reads, during, torn) =
        (READS.load(Ordering::Relaxed), READS_DURING_MIGRATION.load(Ordering::Relaxed), TORN.load(Ordering::Relaxed));
    kprintln!("  {moved} migrations ({refused} refused: pinned), {reads} IRQ reads, {during} during a migration, {torn} torn");
    kassert_eq!(torn, 0);
    kassert!(during > 0, "no interrupt fired during a migration: the test proved nothing");
    kassert!(moved > 100, "only {moved} migrations succeeded");
    alloc.lock().free_movable(page).map_err(|e| alloc::format!("{e}"))?;
    Ok(())
}

/// The memory-pressure workload taken to the last page: every further allocation fails with a
/// typed error (movable and unmovable, from the page allocator), nothing panics or hangs, the
/// pages keep their contents, and once they are released allocations work again.
fn to_the_last_page() -> TestResult {
    use kernel::mm::page_alloc::{AllocError, MigrateType, OwnerKind, PageOwner};
    let alloc = page_allocator();
    let free_before = {
        let a = alloc.lock();
        a.nr_free_pages(ZoneType::Normal) + a.nr_free_pages(ZoneType::Dma)
    };
    let pressure = MemoryPressure::fill(alloc, mem(), ZoneType::Normal, usize::MAX, 7);
    let owner = PageOwner { kind: OwnerKind::Dirty, cookie: 0 };
    let movable = alloc.lock().alloc_movable(0, ZoneType::Normal, owner);
    let unmovable = alloc.lock().alloc_pages(0, ZoneType::Normal, MigrateType::Unmovable);
    let left = {
        let a = alloc.lock();
        a.nr_free_pages(ZoneType::Normal) + a.nr_free_pages(ZoneType::Dma)
    };
    kprintln!(
        "  {} pages taken of {free_before} free; then movable: {movable:?}, unmovable: {unmovable:?}; {left} pages left free",
        pressure.len()
    );
    let checked = pressure.verify(alloc, mem()).map_err(|x| alloc::format!("{x:?}"));
    pressure.release(alloc).map_err(|x| alloc::format!("{x:?}"))?;
    if let Ok(p) = movable {
        alloc.lock().free_movable(p).map_err(|x| alloc::format!("{x:?}"))?;
    }
    if let Ok(a) = unmovable {
        let _ = alloc.lock().free_pages(a, 0);
    }
    kassert!(movable == Err(AllocError::NoMemory), "a movable allocation after the last page: {movable:?}");
    kassert!(pressure_len_ok(checked?, free_before), "the pressure took too little of RAM");
    let again = alloc.lock().alloc_movable(0, ZoneType::Normal, owner).map_err(|x| alloc::format!("after release: {x:?}"))?;
    alloc.lock().free_movable(again).map_err(|x| alloc::format!("{x:?}"))?;
    Ok(())
}

/// The pressure must have held most of what was free (pages kept for the heap's own growth and
/// the unmovable reserve aside).
fn pressure_len_ok(held: usize, free_before: usize) -> bool {
    held * 10 >= free_before * 9
}

fn heap_grows() -> TestResult {
    let heap = &kernel::platform::HEAP;
    let unmovable_blocks = || {
        let info = page_allocator().lock().pagetypeinfo();
        info.pageblocks.iter().map(|zone| zone[MigrateType::Unmovable as usize]).sum::<usize>()
    };
    let (before, unmovable_before) = (heap.stats(), unmovable_blocks());
    // Many 1 MiB allocations: the heap grows by unmovable pages (blocks claimed as UNMOVABLE).
    let chunks: Vec<Vec<u8>> = (0..24u8).map(|i| vec![i; 1 << 20]).collect();
    let after = heap.stats();
    let did_not_fit = (24 << 20) - (before.size - before.used).min(24 << 20);
    kassert!(after.arenas > before.arenas && after.size - before.size >= did_not_fit, "{before:?} -> {after:?}");
    kassert!(unmovable_blocks() > unmovable_before, "the heap's pages did not come from unmovable blocks");
    // One allocation larger than a pageblock: whole pageblocks taken out of the allocator.
    let big: Vec<u8> = vec![0xa5; 12 << 20];
    kassert!(heap.stats().size >= after.size + (12 << 20));
    kassert!(chunks.iter().enumerate().all(|(i, c)| c.iter().all(|&b| b == i as u8)) && big.iter().all(|&b| b == 0xa5));
    Ok(())
}

fn bad_frees() -> TestResult {
    let alloc = page_allocator();
    let mut a = alloc.lock();
    let p = a.alloc_pages(1, ZoneType::Normal, MigrateType::Unmovable).map_err(|e| alloc::format!("{e}"))?;
    kassert_eq!(a.free_pages(p, 0), Err(FreeError::WrongOrder { addr: p, allocated: 1, freed: 0 }));
    kassert_eq!(a.free_pages(p + PAGE_SIZE, 0), Err(FreeError::NotAllocated(p + PAGE_SIZE)));
    kassert_eq!(a.free_pages(p, 1), Ok(()));
    kassert_eq!(a.free_pages(p, 1), Err(FreeError::DoubleFree(p)));
    kassert_eq!(a.free_pages(0x1000, 0), Err(FreeError::OutOfRange(0x1000)));
    kassert_eq!(a.free_pages(p + 0x10, 0), Err(FreeError::Misaligned { addr: p + 0x10, order: 0 }));
    let m = a.alloc_movable(0, ZoneType::Normal, PageOwner { kind: OwnerKind::Dirty, cookie: 0 }).map_err(|e| alloc::format!("{e}"))?;
    a.free_movable(m).map_err(|e| alloc::format!("{e}"))?;
    kassert!(a.free_movable(m).is_err(), "a handle used after free was accepted");
    Ok(())
}

/// Pageblocks of each migrate type, all zones.
fn pageblocks_of(mt: MigrateType) -> usize {
    page_allocator().lock().pagetypeinfo().pageblocks.iter().map(|zone| zone[mt.index()]).sum()
}

fn cma_and_compaction() -> TestResult {
    let alloc = page_allocator();
    let mode = ReclaimMode { drop_clean: false };
    // An 8-pageblock CMA area of our own (the boot's comes only with cma= or a node); on a small
    // machine, where the test pool and the heap took most of ZONE_DMA, down to the 4 pageblocks
    // cma_alloc takes below, compacting movable pages out of the way if need be.
    let carved = (4..=8u64).rev().find_map(|n| alloc.lock().alloc_contig_pageblocks(n as usize, ZoneType::Dma).ok().map(|base| (base, n)));
    let carved = carved.or_else(|| {
        (4..=8u64).rev().find_map(|n| {
            alloc.alloc_contig_pageblocks_compact(n as usize, ZoneType::Dma, mem(), mode, &mut |_| {}).ok().map(|(base, _)| (base, n))
        })
    });
    let Some((base, blocks)) = carved else {
        let free = alloc.lock().nr_free_pages(ZoneType::Dma);
        return ktest::skip(alloc::format!(
            "ZONE_DMA has no 4 pageblocks in a row for a CMA area, even by compaction ({free} free pages, scattered among the heap's)"
        ));
    };
    if blocks < 8 {
        kprintln!("  CMA area: {blocks} pageblocks (ZONE_DMA has no room for 8)");
    }
    let area = CmaArea::activate("test-cma", alloc, base..base + blocks * PAGEBLOCK_SIZE).map_err(|e| alloc::format!("{e}"))?;
    let swiotlb_blocks = pageblocks_of(MigrateType::Swiotlb);
    let mut pressure = MemoryPressure::fill(alloc, mem(), ZoneType::Normal, usize::MAX, 0xc3a);
    kassert_eq!(alloc.lock().nr_free_cma_pages(ZoneType::Dma), 0);
    // Room for the area's pages and two compacted pageblocks' to move to.
    pressure.release_every(alloc, room_stride(pressure.len(), 12 * 512));
    let in_area = pages_in(&pressure, alloc, &area.range());
    picture("cma full");
    kassert!(in_area > 0, "no movable page borrowed the CMA blocks");

    let (addr, report) = area.cma_alloc(alloc, mem(), 4, mode, &mut |_| {}).map_err(|e| alloc::format!("cma_alloc: {e}"))?;
    let taken = addr..addr + 4 * PAGEBLOCK_SIZE;
    kprintln!("  cma_alloc: 4 pageblocks at {addr:#x}, {} pages migrated; {area}", report.migrated);
    picture("cma 4");
    kassert!(area.range().contains(&addr) && taken.end <= area.range().end);
    kassert_eq!(pages_in(&pressure, alloc, &taken), 0);
    kassert_eq!(alloc.lock().pageblock_migratetype(addr), None);
    kassert_eq!(pageblocks_of(MigrateType::Swiotlb), swiotlb_blocks);
    kassert_eq!(pressure.verify(alloc, mem()).map_err(|e| alloc::format!("{e:?}"))?, pressure.len());

    // Compaction of partly used MOVABLE blocks (some may hold a heap page: those fail).
    let mut tried = Vec::new();
    let mut compacted = 0;
    for page in pressure.pages().step_by(97) {
        let block = alloc.pin(page).map(|p| p.addr() & !(PAGEBLOCK_SIZE - 1)).map_err(|e| alloc::format!("{e}"))?;
        if tried.contains(&block) || alloc.lock().pageblock_migratetype(block) != Some(MigrateType::Movable) {
            continue;
        }
        tried.push(block);
        if let Ok(r) = alloc.compact_pageblock(block, mem()) {
            compacted += 1;
            kassert_eq!(pages_in(&pressure, alloc, &(block..block + PAGEBLOCK_SIZE)), 0);
            kassert!(r.migrated > 0);
        }
        if compacted == 2 {
            break;
        }
    }
    let stats = alloc.lock().compact_stats();
    kprintln!("  {compacted} of {} blocks compacted; {stats}", tried.len());
    kassert!(compacted > 0);
    let (contig, r) =
        alloc.alloc_contig_pageblocks_compact(2, ZoneType::Normal, mem(), mode, &mut |_| {}).map_err(|e| alloc::format!("contig: {e}"))?;
    kprintln!("  alloc_contig_pageblocks_compact: 2 pageblocks at {contig:#x}, {} pages migrated", r.migrated);
    kassert_eq!(pages_in(&pressure, alloc, &(contig..contig + 2 * PAGEBLOCK_SIZE)), 0);
    kassert_eq!(pressure.verify(alloc, mem()).map_err(|e| alloc::format!("{e:?}"))?, pressure.len());
    alloc.lock().free_contig_pageblocks(contig, 2).map_err(|e| alloc::format!("{e}"))?;
    area.cma_release(alloc, addr, 4).map_err(|e| alloc::format!("{e}"))?;
    kassert_eq!(area.allocated_pageblocks(), 0);
    pressure.release(alloc).map_err(|e| alloc::format!("{e}"))?;
    Ok(())
}

/// The area the boot made from `cma=` or a `linux,cma-default` node (run with
/// `QEMU_RUN_OPTS="--bootargs cma=16M"`); without one there is nothing to check.
fn boot_cma_area() -> TestResult {
    let Some(area) = cma_area() else {
        return ktest::skip("no boot CMA area (boot with cma=<size> to check it)");
    };
    let alloc = page_allocator();
    kassert_eq!(alloc.lock().pageblock_migratetype(area.range().start), Some(MigrateType::Cma));
    let mut pressure = MemoryPressure::fill(alloc, mem(), ZoneType::Normal, usize::MAX, 0xb007);
    pressure.release_every(alloc, 4);
    let in_area = pages_in(&pressure, alloc, &area.range());
    let (addr, report) = area
        .cma_alloc(alloc, mem(), area.pageblocks(), ReclaimMode { drop_clean: false }, &mut |_| {})
        .map_err(|e| alloc::format!("cma_alloc: {e}"))?;
    kprintln!("  {area}; {in_area} pages were in it, {} migrated", report.migrated);
    kassert_eq!((addr, report.migrated), (area.range().start, in_area));
    kassert_eq!(pages_in(&pressure, alloc, &area.range()), 0);
    kassert_eq!(pressure.verify(alloc, mem()).map_err(|e| alloc::format!("{e:?}"))?, pressure.len());
    area.cma_release(alloc, addr, area.pageblocks()).map_err(|e| alloc::format!("{e}"))?;
    pressure.release(alloc).map_err(|e| alloc::format!("{e}"))?;
    Ok(())
}
