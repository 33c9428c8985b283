//! Exhaustion: the pool full in task and in interrupt context, the page allocator
//! unable to supply migration targets, pinned pages blocking reclaim, a device pool that cannot
//! be carved. Each is an error or a deferral, never a panic, and nothing is lost: every mapping
//! keeps its data and comes back, every movable page keeps its contents, every pageblock ends in
//! a consistent state.

use super::*;
use crate::arch::host::IrqContextGuard;
use crate::demo::pressure::MemoryPressure;
use crate::dma::swiotlb::SwiotlbError;

/// Maps 32-slot buffers, each from its own original with its own byte, until the pool refuses;
/// returns the mappings and the error.
fn map_until_full(f: &Fixture, tag: u8, live: &mut Vec<(PhysAddr, u8)>) -> SwiotlbError {
    loop {
        let byte = tag.wrapping_add(live.len() as u8);
        f.mem.fill(ORIG, byte, 32 * IO_TLB_SIZE);
        match f.map_slots(32) {
            Ok(tlb) => live.push((tlb, byte)),
            Err(e) => return e,
        }
        assert!(live.len() < 10_000, "the pool never fills");
    }
}

#[test]
fn a_full_pool_fails_in_task_context_keeps_the_reserve_for_irqs_then_fails_there_too() {
    let f = Fixture::new(2, 2, tunables(SwiotlbPolicy::Static), false);
    let mut live = Vec::new();
    let task = map_until_full(&f, 1, &mut live);
    assert!(matches!(task, SwiotlbError::BelowReserve { .. }), "task context stops at the IRQ reserve: {task}");
    let irq = {
        let _irq = IrqContextGuard::enter();
        map_until_full(&f, 101, &mut live)
    };
    assert!(matches!(irq, SwiotlbError::BufferFull { .. }), "{irq}");
    assert_eq!(f.mgr.default_pool().free_slots(), 0);
    // Nothing lost: every mapping still holds its own bytes and comes back.
    for &(tlb, byte) in &live {
        assert!(f.read(tlb, 32 * IO_TLB_SIZE).iter().all(|b| *b == byte), "mapping at {tlb:#x}");
        f.unmap_slots(tlb, 32);
    }
    assert_eq!(f.mgr.default_pool().used_slots(), 0);
    f.mgr.default_pool().assert_consistent();
}

#[test]
fn no_migration_targets_leaves_the_blocks_lent_and_every_page_intact() {
    let f = Fixture::new(2, 6, tunables(SwiotlbPolicy::Lend), false);
    // Every free page, lent blocks included, holds checksummed data: nowhere to migrate to.
    let mut work = MemoryPressure::fill(f.pages, f.mem, ZoneType::Dma, usize::MAX, 11);
    assert_eq!(f.nr_free_swiotlb_pages(), 0);
    let mut live = Vec::new();
    {
        let _irq = IrqContextGuard::enter();
        map_until_full(&f, 1, &mut live);
    }
    assert!(f.mgr.should_kick());
    let report = f.worker();
    assert_eq!(report.pageblocks_reclaimed, 0, "{report:?}");
    assert!(report.pageblocks_busy > 0, "{report:?}");
    use BlockState::*;
    assert_eq!(f.states(), [AsSlots, Lent, Lent, AsSlots, Lent, Lent], "failed reclaims left the blocks lent");
    assert_eq!(work.verify(f.pages, f.mem), Ok(work.len()), "no page lost or corrupted");
    assert!(f.map_slots(32).is_err(), "still full: an error, no panic");

    // Memory comes back: the next run reclaims.
    work.release_every(f.pages, 2);
    f.mgr.note_miss();
    assert!(f.worker().pageblocks_reclaimed > 0);
    assert_eq!(work.verify(f.pages, f.mem), Ok(work.len()));
    f.map_slots(32).expect("room after the reclaim");
    f.mgr.default_pool().assert_consistent();
}

#[test]
fn pinned_pages_in_every_lent_block_block_reclaim_until_unpinned() {
    let t = Tunables { batch: 4, ..tunables(SwiotlbPolicy::Lend) };
    let f = Fixture::new(4, 6, t, false);
    let mut work = MemoryPressure::fill(f.pages, f.mem, ZoneType::Dma, usize::MAX, 5);
    // Kept at boot: blocks 0 and 3 (areas 0 and 2 of 1.5 pageblocks each).
    let lent: Vec<usize> = (0..6).filter(|b| f.states()[*b] == BlockState::Lent).collect();
    assert_eq!(lent, [1, 2, 4, 5]);
    let in_lent = |pa: PhysAddr| lent.iter().any(|b| (f.pool_block(*b)..f.pool_block(b + 1)).contains(&pa));
    // One pinned page in each lent block (a DMA mapping of a page cache page, say).
    let mut pins = Vec::new();
    for &b in &lent {
        let block = f.pool_block(b)..f.pool_block(b + 1);
        let page = work.pages().find(|p| block.contains(&f.pages.pin(*p).unwrap().addr())).expect("a page in the block");
        pins.push(f.pages.pin(page).unwrap());
    }
    assert!(pins.iter().all(|p| in_lent(p.addr())));
    work.release_every(f.pages, 2); // migration targets exist: only the pins stand in the way
    f.mgr.note_miss();
    let report = f.worker();
    assert_eq!((report.pageblocks_reclaimed, report.pageblocks_busy, report.pages_pinned), (0, 4, 4), "{report:?}");
    use BlockState::*;
    assert_eq!(f.states(), [AsSlots, Lent, Lent, AsSlots, Lent, Lent]);
    assert_eq!(work.verify(f.pages, f.mem), Ok(work.len()));
    // A device pool cannot be carved either: an error, and the blocks stay lent.
    let err = f.mgr.carve_device_pool(f.pages, 1, &mut ignore_drop).err();
    assert!(matches!(err, Some(LendError::NotEnoughPageblocks { .. })), "{err:?}");
    assert_eq!(f.states(), [AsSlots, Lent, Lent, AsSlots, Lent, Lent]);

    // The failed runs moved the unpinned pages out already, filling RAM: free some more (free
    // pages inside other lent blocks are no migration targets), then unpin.
    work.release_every(f.pages, 2);
    drop(pins);
    f.mgr.note_miss();
    let report = f.worker();
    assert_eq!(report.pageblocks_reclaimed, 4, "{report:?}");
    assert_eq!(work.verify(f.pages, f.mem), Ok(work.len()), "migration kept every page");
    f.mgr.default_pool().assert_consistent();
}
