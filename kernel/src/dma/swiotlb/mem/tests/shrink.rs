//! Shrink: after the delay and not before, hysteresis, floors.

use super::*;

/// A `lend` fixture grown to `slot_blocks` slot pageblocks by misses.
fn grown(t: Tunables, pool_blocks: u64, runs: usize) -> Fixture {
    let f = Fixture::new(2, pool_blocks, t, false);
    for _ in 0..runs {
        f.mgr.note_miss();
        f.worker_at(0);
    }
    f
}

#[test]
fn shrinks_after_the_delay_not_before_and_spikes_reset_the_timer() {
    let f = grown(tunables(SwiotlbPolicy::Lend), 8, 1);
    assert_eq!(f.count(BlockState::AsSlots), 4);
    let lent_pages = f.nr_free_swiotlb_pages();

    assert_eq!(f.worker_at(10).pageblocks_lent, 0, "starts the timer");
    assert_eq!(f.worker_at(150).pageblocks_lent, 0, "140 ms < 200 ms");
    // A spike between worker runs (10% of 4096 usable slots) restarts the wait.
    let tlbs: Vec<_> = (0..15).map(|_| f.map_slots(32).unwrap()).collect();
    tlbs.into_iter().for_each(|t| f.unmap_slots(t, 32));
    assert_eq!(f.worker_at(250).pageblocks_lent, 0, "the spike stopped the timer");
    assert_eq!(f.worker_at(300).pageblocks_lent, 0, "timer restarts at 300");
    assert_eq!(f.worker_at(450).pageblocks_lent, 0);
    // Usage over the mark at the time of the run stops it too.
    let held: Vec<_> = (0..15).map(|_| f.map_slots(32).unwrap()).collect();
    f.mgr.high_usage_seen.store(false, core::sync::atomic::Ordering::Relaxed);
    assert_eq!(f.worker_at(600).pageblocks_lent, 0);
    held.into_iter().for_each(|t| f.unmap_slots(t, 32));
    assert_eq!(f.worker_at(700).pageblocks_lent, 0, "starts again");
    assert_eq!(f.worker_at(899).pageblocks_lent, 0);

    let report = f.worker_at(900);
    assert_eq!(report.pageblocks_lent, 2, "{report:?}");
    use BlockState::*;
    // Every area had one slot block, all free: lent from the areas filled last (3, then 1).
    assert_eq!(f.states(), [AsSlots, Lent, Lent, Lent, AsSlots, Lent, Lent, Lent]);
    assert_eq!(f.nr_free_swiotlb_pages(), lent_pages + 2 * BLOCK_PAGES);
    let s = f.mgr.stats();
    assert_eq!((s.shrinks, s.pageblocks_lent_again), (1, 2));
    f.mgr.default_pool().assert_consistent();
}

#[test]
fn shrink_lends_only_wholly_free_blocks() {
    let f = grown(tunables(SwiotlbPolicy::Lend), 4, 1);
    assert_eq!(f.count(BlockState::AsSlots), 4);
    // One small mapping in each area, here one area per pageblock.
    let tlbs = f.one_mapping_per_block(4);
    let busy: Vec<usize> = tlbs.iter().map(|t| ((t - f.pool_block(0)) / PAGEBLOCK_SIZE) as usize).collect();
    f.worker_at(0);
    assert_eq!(f.worker_at(1000).pageblocks_lent, 0, "mappings in every block: {busy:?}");
    tlbs.into_iter().for_each(|t| f.unmap_slots(t, 1));
    assert_eq!(f.worker_at(2000).pageblocks_lent, 2, "the timer kept running: usage stayed low");
}

#[test]
fn never_shrinks_below_keep_or_the_irq_reserve() {
    let t = Tunables { keep_pageblocks: 1, irq_reserve_slots: 1500, batch: 8, ..tunables(SwiotlbPolicy::Lend) };
    let f = grown(t, 8, 1);
    assert_eq!(f.count(BlockState::AsSlots), 8);
    for ms in (0..10_000).step_by(250) {
        f.worker_at(ms);
    }
    assert_eq!(f.count(BlockState::AsSlots), 2, "1500 reserved slots need two pageblocks");
    assert_eq!(f.nr_free_swiotlb_pages(), 6 * BLOCK_PAGES);

    let t = Tunables { keep_pageblocks: 3, irq_reserve_slots: 0, batch: 8, ..tunables(SwiotlbPolicy::Lend) };
    let f = grown(t, 8, 1);
    for ms in (0..10_000).step_by(250) {
        f.worker_at(ms);
    }
    assert_eq!(f.count(BlockState::AsSlots), 3);
}
