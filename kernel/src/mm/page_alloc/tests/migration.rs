//! Movable pages: pins, migration, long-term pins, reclaim of lent SWIOTLB blocks, and the
//! page-cache and memory-pressure clients.

use std::sync::atomic::Ordering;

use super::*;
use crate::arch::host::IrqContextGuard;
use crate::demo::pressure::MemoryPressure;
use crate::mm::phys::PhysMemory;
use crate::mm::PAGE_SIZE;
use page_cache::{CacheKey, PageCache};

const DIRTY: OwnerKind = OwnerKind::Dirty;
const CLEAN: OwnerKind = OwnerKind::Clean;
const DROP_CLEAN: ReclaimMode = ReclaimMode { drop_clean: true };
const MIGRATE_ALL: ReclaimMode = ReclaimMode { drop_clean: false };

/// Lends pageblocks `free..free+lent` and returns `n` movable pages of `kind` placed in them
/// (MOVABLE memory is filled first so they have to borrow, then freed again).
fn pages_in_lent_blocks(la: &LockedPageAllocator, free: u64, lent: u64, n: usize, kind: OwnerKind) -> Vec<MovablePage> {
    let mut a = la.lock();
    a.lend_swiotlb_pageblocks(blocks(free, lent)).unwrap();
    let hog: Vec<_> = (0..free as usize * PAGEBLOCK_NR_PAGES).map(|_| a.alloc_movable(0, ZoneType::Dma, owner(DIRTY)).unwrap()).collect();
    let pages: Vec<_> = (0..n).map(|i| a.alloc_movable(0, ZoneType::Dma, PageOwner { kind, cookie: i as u64 }).unwrap()).collect();
    hog.into_iter().for_each(|p| a.free_movable(p).unwrap());
    for p in &pages {
        assert_eq!(a.pageblock_migratetype(a.movable_info(*p).unwrap().addr), Some(MigrateType::Swiotlb));
    }
    pages
}

fn addr(la: &LockedPageAllocator, page: MovablePage) -> PhysAddr {
    la.lock().movable_info(page).unwrap().addr
}

fn write_page(la: &LockedPageAllocator, mem: &SimMemory, page: MovablePage, byte: u8) {
    let pin = la.pin(page).unwrap();
    mem.fill(pin.addr(), byte, PAGE_SIZE as usize);
}

fn read_page(la: &LockedPageAllocator, mem: &SimMemory, page: MovablePage) -> Vec<u8> {
    let pin = la.pin(page).unwrap();
    let mut buf = vec![0; PAGE_SIZE as usize];
    mem.read(pin.addr(), &mut buf);
    buf
}

#[test]
fn migration_copies_the_page_and_updates_the_handle() {
    let (la, mem) = with_pool(1, 1);
    let page = pages_in_lent_blocks(&la, 1, 1, 1, DIRTY)[0];
    write_page(&la, &mem, page, 0x5A);
    let old = addr(&la, page);
    la.migrate_page(page, &mem).unwrap();
    let new = addr(&la, page);
    assert_ne!(new, old);
    assert_eq!(la.lock().pageblock_migratetype(new), Some(MigrateType::Movable));
    assert!(read_page(&la, &mem, page).iter().all(|b| *b == 0x5A));
    check_invariants(&la.lock());
}

#[test]
fn a_pinned_page_is_not_migrated() {
    let (la, mem) = with_pool(1, 1);
    let page = pages_in_lent_blocks(&la, 1, 1, 1, DIRTY)[0];
    let pin = la.pin(page).unwrap();
    assert_eq!(la.migrate_page(page, &mem), Err(MigrateError::Pinned(page)));
    assert_eq!(addr(&la, page), pin.addr());
    drop(pin);
    la.migrate_page(page, &mem).unwrap();
    check_invariants(&la.lock());
}

#[test]
fn migration_never_targets_a_swiotlb_block() {
    let (la, mem) = with_pool(1, 2);
    let page = pages_in_lent_blocks(&la, 1, 2, 1, DIRTY)[0];
    // Fill MOVABLE again: the only free pages left are in the other lent block.
    let hog = MemoryPressure::fill(&la, &mem, ZoneType::Dma, PAGEBLOCK_NR_PAGES, 1);
    assert!(la.lock().nr_free_swiotlb_pages(ZoneType::Dma) > 0);
    assert_eq!(la.migrate_page(page, &mem), Err(MigrateError::NoMemory(page)));
    hog.release(&la).unwrap();
    check_invariants(&la.lock());
}

#[test]
fn reclaim_migrates_movable_pages_and_takes_the_blocks_back() {
    let (la, mem) = with_pool(2, 2);
    let pages = pages_in_lent_blocks(&la, 2, 2, 700, DIRTY);
    for (i, p) in pages.iter().enumerate() {
        write_page(&la, &mem, *p, i as u8);
    }
    let report = la.reclaim_swiotlb_pageblocks(blocks(2, 2), &mem, MIGRATE_ALL, &mut |_| panic!("nothing to drop")).unwrap();
    assert_eq!(report.migrated, 700);
    assert!(report.pinned.is_empty() && report.failed.is_empty() && report.unmovable.is_empty());
    let a = la.lock();
    assert_eq!(a.pageblock_migratetype(block(2)), None);
    assert_eq!(a.nr_free_swiotlb_pages(ZoneType::Dma), 0);
    assert_eq!(a.managed_pages(ZoneType::Dma), 2 * PAGEBLOCK_NR_PAGES);
    check_invariants(&a);
    drop(a);
    for (i, p) in pages.iter().enumerate() {
        assert!(addr(&la, *p) < block(2));
        assert!(read_page(&la, &mem, *p).iter().all(|b| *b == i as u8), "page {i} content");
    }
}

#[test]
fn a_pinned_page_blocks_reclaim_which_is_undone_and_reported() {
    let (la, mem) = with_pool(2, 1);
    let pages = pages_in_lent_blocks(&la, 2, 1, 3, DIRTY);
    let pin = la.pin(pages[1]).unwrap();
    let err = la.reclaim_swiotlb_pageblocks(blocks(2, 1), &mem, MIGRATE_ALL, &mut |_| {}).unwrap_err();
    let ReclaimError::Busy(report) = err else { panic!("{err:?}") };
    assert_eq!(report.pinned, vec![pages[1]]);
    assert_eq!(report.migrated, 2);
    {
        let a = la.lock();
        assert_eq!(a.pageblock_migratetype(block(2)), Some(MigrateType::Swiotlb), "isolation undone");
        assert_eq!(a.nr_free_swiotlb_pages(ZoneType::Dma), PAGEBLOCK_NR_PAGES - 1, "free pages back on SWIOTLB lists");
        assert_eq!(a.nr_free(ZoneType::Dma, MigrateType::Isolate), 0);
        assert_eq!(a.movable_info(pages[1]).unwrap().addr, pin.addr());
        check_invariants(&a);
    }
    drop(pin);
    let report = la.reclaim_swiotlb_pageblocks(blocks(2, 1), &mem, MIGRATE_ALL, &mut |_| {}).unwrap();
    assert_eq!(report.migrated, 1);
    check_invariants(&la.lock());
}

/// A reclaim that a pinned page stops puts every page back: the old frames freed into the
/// isolated block (counted as ISOLATE but on no list while it was isolated) go back on
/// SWIOTLB's lists merged with their buddies, the migration targets taken in chunks and not
/// used go back on MOVABLE's, and every counter matches.
#[test]
fn an_aborted_reclaim_puts_every_free_page_back_merged() {
    aborted_reclaim_puts_every_free_page_back_merged(false);
}

/// The same with MOVABLE's free memory in single pages: the targets come off the order-0 list
/// in batches.
#[test]
fn an_aborted_reclaim_puts_every_free_page_back_merged_fragmented() {
    aborted_reclaim_puts_every_free_page_back_merged(true);
}

fn aborted_reclaim_puts_every_free_page_back_merged(fragmented: bool) {
    let (la, mem) = with_pool(2, 1);
    let pages = pages_in_lent_blocks(&la, 2, 1, 300, DIRTY);
    let _every_other: Vec<MovablePage> = if fragmented {
        let mut a = la.lock();
        let hog: Vec<_> = core::iter::from_fn(|| a.alloc_movable_inner(0, ZoneType::Dma, owner(DIRTY), false).ok()).collect();
        let (keep, free): (Vec<_>, Vec<_>) = hog.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
        free.into_iter().for_each(|(_, p)| a.free_movable(p).unwrap());
        assert_eq!(a.zones[ZoneType::Dma as usize].free_area[1].nr_free[MigrateType::Movable.index()], 0);
        keep.into_iter().map(|(_, p)| p).collect()
    } else {
        Vec::new()
    };
    let movable_free = la.lock().nr_free(ZoneType::Dma, MigrateType::Movable);
    let pin = la.pin(pages[150]).unwrap();
    // Owners free ten pages while the first is copied: targets were taken for them, unused.
    let hooked = CopyHook::new(&mem, || {
        let mut a = la.lock();
        pages[200..210].iter().for_each(|p| a.free_movable(*p).unwrap());
        check_invariants(&a);
    });
    let err = la.reclaim_swiotlb_pageblocks(blocks(2, 1), &hooked, MIGRATE_ALL, &mut |_| {}).unwrap_err();
    let ReclaimError::Busy(report) = err else { panic!("{err:?}") };
    assert_eq!((report.migrated, report.pinned.as_slice()), (289, [pages[150]].as_slice()));
    let a = la.lock();
    check_invariants(&a);
    assert_eq!(a.pageblock_migratetype(block(2)), Some(MigrateType::Swiotlb), "isolation undone");
    assert_eq!(a.nr_free_swiotlb_pages(ZoneType::Dma), PAGEBLOCK_NR_PAGES - 1);
    assert_eq!(a.nr_free(ZoneType::Dma, MigrateType::Isolate), 0);
    let isolate = MigrateType::Isolate.index();
    assert!(a.zones[ZoneType::Dma as usize].free_area.iter().all(|area| area.nr_free[isolate] == 0));
    // All but the pinned page free and merged: one free block of each order below the block's.
    let mut orders: Vec<u8> = free_blocks(&a).into_iter().filter(|(addr, _)| (block(2)..block(3)).contains(addr)).map(|(_, o)| o).collect();
    orders.sort();
    assert_eq!(orders, (0..MAX_PAGE_ORDER).collect::<Vec<_>>());
    assert_eq!(a.nr_free(ZoneType::Dma, MigrateType::Movable), movable_free - 289, "unused targets given back");
    assert!(a.pageblock_migratetype(a.movable_info(pages[0]).unwrap().addr) == Some(MigrateType::Movable));
    drop(a);
    drop(pin);
    let report = la.reclaim_swiotlb_pageblocks(blocks(2, 1), &mem, MIGRATE_ALL, &mut |_| {}).unwrap();
    assert_eq!(report.migrated, 1);
    check_invariants(&la.lock());
}

#[test]
fn reclaim_drops_clean_pages_when_allowed() {
    let (la, mem) = with_pool(2, 1);
    let clean = pages_in_lent_blocks(&la, 2, 1, 4, CLEAN);
    let dirty = pages_in_lent_blocks_after(&la, 1)[0];
    let mut told = Vec::new();
    let report = la.reclaim_swiotlb_pageblocks(blocks(2, 1), &mem, DROP_CLEAN, &mut |d| told.push(d)).unwrap();
    assert_eq!((report.dropped, report.migrated), (4, 1));
    let expected: Vec<_> = clean.iter().enumerate().map(|(i, p)| DroppedPage { page: *p, cookie: i as u64 }).collect();
    told.sort_by_key(|d| d.cookie);
    assert_eq!(told, expected, "each owner told, with its cookie");
    assert!(clean.iter().all(|p| la.lock().movable_info(*p) == Err(HandleError::Stale(*p))));
    assert!(la.lock().movable_info(dirty).is_ok());
    check_invariants(&la.lock());
}

#[test]
fn reclaim_migrates_clean_pages_when_dropping_is_not_allowed() {
    let (la, mem) = with_pool(2, 1);
    let clean = pages_in_lent_blocks(&la, 2, 1, 2, CLEAN);
    let report = la.reclaim_swiotlb_pageblocks(blocks(2, 1), &mem, MIGRATE_ALL, &mut |_| panic!("must not drop")).unwrap();
    assert_eq!((report.dropped, report.migrated), (0, 2));
    assert!(clean.iter().all(|p| la.lock().movable_info(*p).is_ok()));
    check_invariants(&la.lock());
}

/// `n` more dirty pages in the blocks already lent (MOVABLE filled, then freed, again).
fn pages_in_lent_blocks_after(la: &LockedPageAllocator, n: usize) -> Vec<MovablePage> {
    let mut a = la.lock();
    let hog: Vec<_> = core::iter::from_fn(|| {
        let p = a.alloc_movable(0, ZoneType::Dma, owner(DIRTY)).ok()?;
        let in_movable = a.pageblock_migratetype(a.movable_info(p).unwrap().addr) == Some(MigrateType::Movable);
        if !in_movable {
            a.free_movable(p).unwrap();
        }
        in_movable.then_some(p)
    })
    .collect();
    let pages = (0..n).map(|_| a.alloc_movable(0, ZoneType::Dma, owner(DIRTY)).unwrap()).collect();
    hog.into_iter().for_each(|p| a.free_movable(p).unwrap());
    pages
}

#[test]
fn a_long_term_pin_first_migrates_the_page_out_of_swiotlb() {
    let (la, mem) = with_pool(1, 1);
    let page = pages_in_lent_blocks(&la, 1, 1, 1, DIRTY)[0];
    write_page(&la, &mem, page, 0x77);
    let old = addr(&la, page);
    let pin = la.pin_longterm(page, &mem).unwrap();
    assert_ne!(pin.addr(), old);
    assert_eq!(la.lock().pageblock_migratetype(pin.addr()), Some(MigrateType::Movable));
    assert_eq!(la.lock().movable_info(page).unwrap().longterm_pins, 1);
    assert!(read_page(&la, &mem, page).iter().all(|b| *b == 0x77));
    // The lent block can now be taken back although the page stays pinned.
    la.reclaim_swiotlb_pageblocks(blocks(1, 1), &mem, MIGRATE_ALL, &mut |_| {}).unwrap();
    drop(pin);
    assert_eq!(la.lock().movable_info(page).unwrap().pins, 0);
    check_invariants(&la.lock());
}

#[test]
fn a_long_term_pin_outside_swiotlb_does_not_migrate() {
    let (la, mem) = with_pool(1, 0);
    let page = la.lock().alloc_movable(0, ZoneType::Dma, owner(DIRTY)).unwrap();
    let old = addr(&la, page);
    assert_eq!(la.pin_longterm(page, &mem).unwrap().addr(), old);
}

#[test]
fn a_long_term_pin_is_refused_if_the_page_cannot_leave_swiotlb() {
    let (la, mem) = with_pool(1, 1);
    let page = pages_in_lent_blocks(&la, 1, 1, 1, DIRTY)[0];
    let short = la.pin(page).unwrap();
    assert_eq!(la.pin_longterm(page, &mem).err(), Some(PinError::CannotMigrate(MigrateError::Pinned(page))));
    drop(short);
    // Fill all the rest: no page is left to migrate to.
    let hog = MemoryPressure::fill(&la, &mem, ZoneType::Dma, 2 * PAGEBLOCK_NR_PAGES, 2);
    assert_eq!(hog.len(), 2 * PAGEBLOCK_NR_PAGES - 1);
    assert_eq!(la.pin_longterm(page, &mem).err(), Some(PinError::CannotMigrate(MigrateError::NoMemory(page))));
    assert_eq!(la.lock().movable_info(page).unwrap().pins, 0, "refused pin leaves no pin behind");
    hog.release(&la).unwrap();
    check_invariants(&la.lock());
}

#[test]
fn a_write_through_a_pin_during_the_copy_makes_migration_retry() {
    let (la, mem) = with_pool(1, 1);
    let page = pages_in_lent_blocks(&la, 1, 1, 1, DIRTY)[0];
    write_page(&la, &mem, page, 0x11);
    // After the copy read 0x11, a writer pins the page (still the old frame) and writes 0x22.
    let hooked = CopyHook::new(&mem, || write_page(&la, &mem, page, 0x22));
    la.migrate_page(page, &hooked).unwrap();
    assert!(hooked.fired.load(Ordering::SeqCst));
    assert!(read_page(&la, &mem, page).iter().all(|b| *b == 0x22), "the write is not lost");
    check_invariants(&la.lock());
}

#[test]
fn an_interrupt_handler_mid_migration_sees_the_old_frame_whole() {
    let (la, mem) = with_pool(1, 1);
    let page = pages_in_lent_blocks(&la, 1, 1, 1, DIRTY)[0];
    write_page(&la, &mem, page, 0x33);
    let old = addr(&la, page);
    let hooked = CopyHook::new(&mem, || {
        let _irq = IrqContextGuard::enter();
        let buf = {
            let pin = la.pin(page).unwrap();
            assert_eq!(pin.addr(), old, "not switched before commit");
            let mut buf = vec![0; PAGE_SIZE as usize];
            mem.read(pin.addr(), &mut buf);
            buf
        };
        assert!(buf.iter().all(|b| *b == 0x33));
    });
    la.migrate_page(page, &hooked).unwrap();
    assert_ne!(addr(&la, page), old);
    assert!(read_page(&la, &mem, page).iter().all(|b| *b == 0x33));
}

#[test]
fn writes_during_a_reclaim_batchs_copies_make_its_pages_retry() {
    // Reclaim prepares a batch of pages under one lock hold, then copies them all; a write to
    // any of them during the first copy (copied already or not yet) must make its commit fail
    // and its migration retry, and pages after the batch must see the writes too.
    let (la, mem) = with_pool(1, 1);
    let pages = pages_in_lent_blocks(&la, 1, 1, 40, DIRTY);
    for (i, p) in pages.iter().enumerate() {
        write_page(&la, &mem, *p, i as u8);
    }
    let hooked = CopyHook::new(&mem, || pages.iter().enumerate().for_each(|(i, p)| write_page(&la, &mem, *p, 0x80 + i as u8)));
    let report = la.reclaim_swiotlb_pageblocks(blocks(1, 1), &hooked, MIGRATE_ALL, &mut |_| panic!("nothing to drop")).unwrap();
    assert!(hooked.fired.load(Ordering::SeqCst));
    assert_eq!(report.migrated, 40);
    check_invariants(&la.lock());
    for (i, p) in pages.iter().enumerate() {
        assert!(addr(&la, *p) < block(1));
        assert!(read_page(&la, &mem, *p).iter().all(|b| *b == 0x80 + i as u8), "page {i}: the write is not lost");
    }
}

#[test]
fn a_page_freed_during_its_copy_is_not_resurrected() {
    let (la, mem) = with_pool(1, 1);
    let page = pages_in_lent_blocks(&la, 1, 1, 1, DIRTY)[0];
    let hooked = CopyHook::new(&mem, || la.lock().free_movable(page).unwrap());
    let report = la.reclaim_swiotlb_pageblocks(blocks(1, 1), &hooked, MIGRATE_ALL, &mut |_| {}).unwrap();
    assert_eq!((report.freed_meanwhile, report.migrated), (1, 0));
    let a = la.lock();
    assert_eq!(a.nr_free_pages(ZoneType::Dma), PAGEBLOCK_NR_PAGES, "target frame freed too");
    check_invariants(&a);
}

#[test]
fn pinning_works_in_interrupt_context() {
    let (la, _mem) = with_pool(1, 0);
    let page = la.lock().alloc_movable(0, ZoneType::Dma, owner(DIRTY)).unwrap();
    let _irq = IrqContextGuard::enter();
    assert!(la.pin(page).is_ok());
}

#[test]
#[should_panic(expected = "task context only")]
fn reclaim_in_interrupt_context_panics() {
    let (la, mem) = with_pool(1, 1);
    la.lock().lend_swiotlb_pageblocks(blocks(1, 1)).unwrap();
    let _irq = IrqContextGuard::enter();
    let _ = la.reclaim_swiotlb_pageblocks(blocks(1, 1), &mem, MIGRATE_ALL, &mut |_| {});
}

#[test]
#[should_panic(expected = "task context only")]
fn migration_in_interrupt_context_panics() {
    let (la, mem) = with_pool(1, 0);
    let page = la.lock().alloc_movable(0, ZoneType::Dma, owner(DIRTY)).unwrap();
    let _irq = IrqContextGuard::enter();
    let _ = la.migrate_page(page, &mem);
}

#[test]
#[should_panic(expected = "task context only")]
fn long_term_pin_in_interrupt_context_panics() {
    let (la, mem) = with_pool(1, 0);
    let page = la.lock().alloc_movable(0, ZoneType::Dma, owner(DIRTY)).unwrap();
    let _irq = IrqContextGuard::enter();
    let _ = la.pin_longterm(page, &mem);
}

#[test]
fn page_cache_keeps_dirty_blocks_and_forgets_dropped_clean_ones() {
    let (la, mem) = with_pool(1, 1);
    la.lock().lend_swiotlb_pageblocks(blocks(1, 1)).unwrap();
    let hog = MemoryPressure::fill(&la, &mem, ZoneType::Dma, PAGEBLOCK_NR_PAGES, 3);
    let mut cache = PageCache::new(&la, &mem, ZoneType::Dma);
    let key = |block| CacheKey { device: 1, block };
    for b in 0..8u64 {
        cache.insert_clean(key(b), &vec![b as u8; PAGE_SIZE as usize]).unwrap();
    }
    cache.write(key(3), &vec![0xD3; PAGE_SIZE as usize]).unwrap();
    cache.write(key(9), &vec![0xD9; PAGE_SIZE as usize]).unwrap();
    assert_eq!(cache.dirty_keys(), vec![key(3), key(9)]);
    assert_eq!(cache.write(key(1 << 48), &[0; 4096]), Err(page_cache::CacheError::BadKey(key(1 << 48))));
    assert_eq!(cache.write(key(1), &[0; 4]), Err(page_cache::CacheError::BadLength(4)));
    hog.release(&la).unwrap();

    let mut dropped = Vec::new();
    let report = la.reclaim_swiotlb_pageblocks(blocks(1, 1), &mem, DROP_CLEAN, &mut |d| dropped.push(d)).unwrap();
    assert_eq!((report.dropped, report.migrated), (7, 2));
    dropped.into_iter().for_each(|d| cache.page_dropped(d));
    assert_eq!(cache.len(), 2);
    let mut buf = vec![0; PAGE_SIZE as usize];
    assert!(!cache.read(key(0), &mut buf).unwrap(), "clean block dropped: a miss");
    assert!(cache.read(key(3), &mut buf).unwrap());
    assert!(buf.iter().all(|b| *b == 0xD3));
    cache.mark_clean(key(3)).unwrap();
    assert_eq!(cache.dirty_keys(), vec![key(9)]);
    assert_eq!(cache.mark_clean(key(0)), Err(page_cache::CacheError::Missing(key(0))));
    drop(cache);
    let a = la.lock();
    assert_eq!(a.nr_free_pages(ZoneType::Dma), PAGEBLOCK_NR_PAGES, "cache freed its pages");
    check_invariants(&a);
}

#[test]
fn page_cache_pages_pinned_for_io_are_neither_dropped_nor_moved() {
    let (la, mem) = with_pool(1, 1);
    la.lock().lend_swiotlb_pageblocks(blocks(1, 1)).unwrap();
    let hog = MemoryPressure::fill(&la, &mem, ZoneType::Dma, PAGEBLOCK_NR_PAGES, 3);
    let mut cache = PageCache::new(&la, &mem, ZoneType::Dma);
    let key = |block| CacheKey { device: 2, block };
    // A block being read: a new page, pinned, "dirty" until its content arrived.
    let reading = cache.insert_for_read(key(0)).unwrap();
    let frame = reading.addr();
    mem.fill(frame, 0x42, PAGE_SIZE as usize); // the device's DMA
                                               // A clean block being written back: pinned for the duration.
    cache.insert_clean(key(1), &vec![0x11; PAGE_SIZE as usize]).unwrap();
    let writing = cache.pin(key(1)).unwrap();
    assert!(cache.pin(key(7)).is_none(), "not cached");
    hog.release(&la).unwrap();
    assert_eq!(la.lock().pageblock_migratetype(frame), Some(MigrateType::Swiotlb), "the pages sit in the lent block");

    let busy = la.reclaim_swiotlb_pageblocks(blocks(1, 1), &mem, DROP_CLEAN, &mut |_| panic!("a pinned page was dropped"));
    assert!(busy.is_err(), "pinned pages block the reclaim");
    assert_eq!((reading.addr(), writing.addr()), (frame, cache.pin(key(1)).unwrap().addr()), "nothing moved");
    drop((reading, writing));
    cache.mark_clean(key(0)).unwrap();
    let mut buf = vec![0; PAGE_SIZE as usize];
    assert!(cache.read(key(0), &mut buf).unwrap() && buf.iter().all(|b| *b == 0x42));
    cache.remove(key(0));
    assert!(!cache.contains(key(0)));
    // Unpinned, the clean pages go.
    let mut dropped = Vec::new();
    la.reclaim_swiotlb_pageblocks(blocks(1, 1), &mem, DROP_CLEAN, &mut |d| dropped.push(d)).unwrap();
    assert_eq!(dropped.len(), 1);
    dropped.into_iter().for_each(|d| cache.page_dropped(d));
    assert!(cache.is_empty());
    check_invariants(&la.lock());
}

#[test]
fn memory_pressure_survives_reclaim_byte_for_byte() {
    let (la, mem) = with_pool(3, 2);
    la.lock().lend_swiotlb_pageblocks(blocks(3, 2)).unwrap();
    let mut load = MemoryPressure::fill(&la, &mem, ZoneType::Dma, 5 * PAGEBLOCK_NR_PAGES, 42);
    assert_eq!(load.len(), 5 * PAGEBLOCK_NR_PAGES, "movable memory fills MOVABLE and lent blocks");
    // Free 2 in 5 so the lent pages have somewhere to go.
    assert_eq!(load.release_every(&la, 5), PAGEBLOCK_NR_PAGES);
    load.release_every(&la, 4);
    assert_eq!(la.reclaim_swiotlb_pageblocks(blocks(3, 2), &mem, DROP_CLEAN, &mut |_| {}).map(|r| r.dropped), Ok(0));
    assert_eq!(load.verify(&la, &mem), Ok(load.len()));
    assert!(load.pages().all(|p| addr(&la, p) < block(3)));
    check_invariants(&la.lock());
    load.release(&la).unwrap();
    assert_eq!(la.lock().nr_free_pages(ZoneType::Dma), 3 * PAGEBLOCK_NR_PAGES);
}
