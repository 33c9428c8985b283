//! Bad input: every error case gives its typed error and leaves the allocator intact.

use super::*;
use crate::mm::PAGE_SIZE;

#[test]
fn init_counts_pages_and_splits_zones_at_the_dma_limit() {
    let a = allocator(4, Some(1));
    check_invariants(&a);
    assert_eq!(a.managed_pages(ZoneType::Dma), PAGEBLOCK_NR_PAGES);
    assert_eq!(a.managed_pages(ZoneType::Normal), 3 * PAGEBLOCK_NR_PAGES);
    assert_eq!(a.nr_free(ZoneType::Normal, MigrateType::Movable), 3 * PAGEBLOCK_NR_PAGES);
    assert_eq!(free_blocks(&a).len(), 4, "each free pageblock is one order-9 block");
}

#[test]
fn init_takes_ranges_not_aligned_to_pageblocks() {
    let end = BASE + 2 * PAGEBLOCK_SIZE;
    let a = PageAllocator::new(BASE..end, &[BASE + 3 * PAGE_SIZE..end - 5 * PAGE_SIZE], None).unwrap();
    check_invariants(&a);
    assert_eq!(a.nr_free_pages(ZoneType::Dma), 2 * PAGEBLOCK_NR_PAGES - 8);
    assert_eq!(a.pageblock_migratetype(BASE), Some(MigrateType::Movable));
}

#[test]
fn init_refuses_bad_ranges() {
    let end = BASE + 2 * PAGEBLOCK_SIZE;
    assert_eq!(PageAllocator::new(BASE..BASE, &[], None).err(), Some(InitError::BadSpan));
    let unaligned = BASE + 1..end;
    assert_eq!(
        PageAllocator::new(BASE..end, core::slice::from_ref(&unaligned), None).err(),
        Some(InitError::BadRange { start: unaligned.start, end: unaligned.end })
    );
    let outside = BASE..end + PAGE_SIZE;
    assert!(matches!(PageAllocator::new(BASE..end, &[outside], None), Err(InitError::BadRange { .. })));
    let overlap = [BASE..BASE + 4 * PAGE_SIZE, BASE + 3 * PAGE_SIZE..end];
    assert_eq!(PageAllocator::new(BASE..end, &overlap, None).err(), Some(InitError::Overlap(BASE + 3 * PAGE_SIZE)));
}

#[test]
fn alloc_refuses_large_orders_and_non_unmovable_types() {
    let mut a = allocator(1, None);
    assert_eq!(a.alloc_pages(MAX_PAGE_ORDER + 1, ZoneType::Normal, MigrateType::Unmovable), Err(AllocError::OrderTooLarge(10)));
    for mt in [MigrateType::Movable, MigrateType::Swiotlb, MigrateType::Isolate] {
        assert_eq!(a.alloc_pages(0, ZoneType::Normal, mt), Err(AllocError::WrongMigrateType(mt)));
    }
    assert_eq!(a.alloc_contig_pageblocks(0, ZoneType::Dma), Err(AllocError::ZeroCount));
    check_invariants(&a);
}

#[test]
fn running_out_of_memory_is_an_error() {
    let mut a = allocator(1, None);
    let whole = a.alloc_pages(MAX_PAGE_ORDER, ZoneType::Dma, MigrateType::Unmovable).unwrap();
    assert_eq!(a.alloc_pages(0, ZoneType::Dma, MigrateType::Unmovable), Err(AllocError::NoMemory));
    a.free_pages(whole, MAX_PAGE_ORDER).unwrap();
    check_invariants(&a);
}

#[test]
fn double_free_is_refused() {
    let mut a = allocator(1, None);
    let p = a.alloc_pages(2, ZoneType::Dma, MigrateType::Unmovable).unwrap();
    let before = a.alloc_pages(2, ZoneType::Dma, MigrateType::Unmovable).unwrap();
    a.free_pages(p, 2).unwrap();
    let snapshot = a.pagetypeinfo();
    assert_eq!(a.free_pages(p, 2), Err(FreeError::DoubleFree(p)));
    assert_eq!(a.pagetypeinfo(), snapshot);
    a.free_pages(before, 2).unwrap();
    check_invariants(&a);
}

#[test]
fn freeing_what_was_never_allocated_is_refused() {
    let mut a = allocator(2, None);
    let p = a.alloc_pages(3, ZoneType::Dma, MigrateType::Unmovable).unwrap();
    let snapshot = a.pagetypeinfo();
    // A tail page of an allocation.
    assert_eq!(a.free_pages(p + PAGE_SIZE, 0), Err(FreeError::NotAllocated(p + PAGE_SIZE)));
    // A page inside a free block.
    let free_tail = BASE + PAGEBLOCK_SIZE + 7 * PAGE_SIZE;
    assert_eq!(a.free_pages(free_tail, 0), Err(FreeError::NotAllocated(free_tail)));
    // Outside the span, and not page aligned.
    assert_eq!(a.free_pages(BASE - PAGE_SIZE, 0), Err(FreeError::OutOfRange(BASE - PAGE_SIZE)));
    assert_eq!(a.free_pages(BASE + 2 * PAGEBLOCK_SIZE, 0), Err(FreeError::OutOfRange(BASE + 2 * PAGEBLOCK_SIZE)));
    assert_eq!(a.free_pages(p + 8, 3), Err(FreeError::Misaligned { addr: p + 8, order: 3 }));
    assert_eq!(a.pagetypeinfo(), snapshot);
    check_invariants(&a);
}

#[test]
fn freeing_with_the_wrong_order_is_refused() {
    let mut a = allocator(1, None);
    let p = a.alloc_pages(3, ZoneType::Dma, MigrateType::Unmovable).unwrap();
    assert_eq!(a.free_pages(p, 2), Err(FreeError::WrongOrder { addr: p, allocated: 3, freed: 2 }));
    assert_eq!(a.free_pages(p, 4), Err(FreeError::WrongOrder { addr: p, allocated: 3, freed: 4 }));
    a.free_pages(p, 3).unwrap();
    check_invariants(&a);
}

#[test]
fn a_movable_page_is_freed_through_its_handle_only() {
    let mut a = allocator(1, None);
    let page = a.alloc_movable(0, ZoneType::Dma, owner(OwnerKind::Dirty)).unwrap();
    let addr = a.movable_info(page).unwrap().addr;
    assert_eq!(a.free_pages(addr, 0), Err(FreeError::IsMovable(addr)));
    a.free_movable(page).unwrap();
    check_invariants(&a);
}

#[test]
fn a_handle_used_after_free_is_stale() {
    let mut a = allocator(1, None);
    let page = a.alloc_movable(0, ZoneType::Dma, owner(OwnerKind::Dirty)).unwrap();
    a.free_movable(page).unwrap();
    // The slot is reused by the next allocation; the old handle must not reach it.
    let next = a.alloc_movable(0, ZoneType::Dma, owner(OwnerKind::Dirty)).unwrap();
    assert_ne!(next, page);
    assert_eq!(a.free_movable(page), Err(FreeError::Handle(HandleError::Stale(page))));
    assert_eq!(a.pin(page), Err(HandleError::Stale(page)));
    assert_eq!(a.movable_info(page), Err(HandleError::Stale(page)));
    assert_eq!(a.set_owner_kind(page, OwnerKind::Clean), Err(HandleError::Stale(page)));
    assert!(a.movable_info(next).is_ok());
    check_invariants(&a);
}

#[test]
fn a_pinned_page_cannot_be_freed_and_unpin_needs_a_pin() {
    let mut a = allocator(1, None);
    let page = a.alloc_movable(0, ZoneType::Dma, owner(OwnerKind::Dirty)).unwrap();
    assert_eq!(a.unpin(page, false), Err(HandleError::NotPinned(page)));
    a.pin(page).unwrap();
    assert_eq!(a.unpin(page, true), Err(HandleError::NotPinned(page)), "a short-term pin is not a long-term one");
    assert_eq!(a.free_movable(page), Err(FreeError::Handle(HandleError::Pinned(page))));
    a.unpin(page, false).unwrap();
    a.free_movable(page).unwrap();
    check_invariants(&a);
}

#[test]
fn lending_or_giving_back_managed_blocks_is_refused() {
    let (la, _mem) = with_pool(2, 2);
    let mut a = la.lock();
    assert_eq!(a.lend_swiotlb_pageblocks(blocks(1, 2)), Err(RangeError::AlreadyManaged(block(1))));
    assert_eq!(a.free_contig_pageblocks(block(0), 1), Err(RangeError::AlreadyManaged(block(0))));
    let unaligned = block(2) + PAGE_SIZE..block(3);
    assert_eq!(a.lend_swiotlb_pageblocks(unaligned.clone()), Err(RangeError::NotPageblocks { start: unaligned.start, end: unaligned.end }));
    assert!(matches!(a.lend_swiotlb_pageblocks(blocks(3, 2)), Err(RangeError::NotPageblocks { .. })), "beyond the span");
    a.lend_swiotlb_pageblocks(blocks(2, 1)).unwrap();
    assert_eq!(a.lend_swiotlb_pageblocks(blocks(2, 1)), Err(RangeError::AlreadyManaged(block(2))));
    check_invariants(&a);
}

#[test]
fn reclaiming_blocks_that_were_not_lent_is_refused() {
    let (la, mem) = with_pool(2, 1);
    let mode = ReclaimMode { drop_clean: true };
    let err = la.reclaim_swiotlb_pageblocks(blocks(1, 1), &mem, mode, &mut |_| {}).unwrap_err();
    assert_eq!(err, ReclaimError::Range(RangeError::NotSwiotlb(block(1))));
    let err = la.reclaim_swiotlb_pageblocks(blocks(2, 1), &mem, mode, &mut |_| {}).unwrap_err();
    assert_eq!(err, ReclaimError::Range(RangeError::NotSwiotlb(block(2))), "unmanaged pool block");
    assert_eq!(la.lock().pageblock_migratetype(block(1)), Some(MigrateType::Movable));
    check_invariants(&la.lock());
}
