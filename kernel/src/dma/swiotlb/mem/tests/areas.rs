//! Areas under `lend`: the pageblocks kept as slots at boot, reclaimed under pressure and lent
//! again when idle are spread over the default pool's areas, so that each CPU's area has slots
//! of its own (docs/DESIGN.md, "How `lend` works").

use super::*;
use crate::dma::swiotlb::SlotState;

/// Usable (free or used, not lent) slots of each area of the default pool, from the slot states.
fn usable_per_area(f: &Fixture) -> Vec<usize> {
    let pool = f.mgr.default_pool();
    let per_area = pool.nslots() / pool.nareas();
    (0..pool.nareas())
        .map(|a| (a * per_area..(a + 1) * per_area).filter(|s| pool.slot_state(*s) != Some(SlotState::Lent)).count())
        .collect()
}

const PB: usize = SLOTS_PER_PAGEBLOCK;

/// 32 MiB in 4 areas of 4 pageblocks, one kept block per area: each area keeps one at boot, gets
/// one more at growth, and lends one again at shrink, the busiest area last.
#[test]
fn kept_reclaimed_and_lent_pageblocks_are_spread_over_the_areas() {
    let t = Tunables { keep_pageblocks: 4, batch: 4, ..tunables(SwiotlbPolicy::Lend) };
    let f = Fixture::new(2, 16, t, false);
    assert_eq!(f.mgr.default_pool().nareas(), 4);
    assert_eq!(usable_per_area(&f), [PB; 4], "boot: {:?}", f.states());
    f.mgr.default_pool().assert_consistent();

    f.mgr.note_miss();
    assert_eq!(f.worker_at(0).pageblocks_reclaimed, 4);
    assert_eq!(usable_per_area(&f), [2 * PB; 4], "growth: {:?}", f.states());

    // A mapping holds a few slots of one area: shrink lends that area's other block, and one
    // block of each of the other areas.
    let tlb = f.map_slots(32).unwrap();
    let busy_area = (tlb - f.pool_block(0)) as usize / IO_TLB_SIZE / (4 * PB);
    assert_eq!(f.worker_at(10).pageblocks_lent, 0, "starts the shrink timer");
    assert_eq!(f.worker_at(300).pageblocks_lent, 4);
    assert_eq!(usable_per_area(&f), [PB; 4], "shrink: {:?}, mapping in area {busy_area}", f.states());
    f.unmap_slots(tlb, 32);
    f.mgr.default_pool().assert_consistent();
}

/// With fewer kept pageblocks than areas (the default 2 and 4 areas) the kept ones are spaced
/// out (areas 0 and 2: a CPU whose area is empty searches the next one), growth fills the empty
/// areas first, and shrink lends from the areas with the most free slots.
#[test]
fn fewer_kept_pageblocks_than_areas_are_spaced_and_growth_fills_the_empty_areas_first() {
    let t = Tunables { keep_pageblocks: 2, batch: 2, ..tunables(SwiotlbPolicy::Lend) };
    let f = Fixture::new(2, 16, t, false);
    assert_eq!(usable_per_area(&f), [PB, 0, PB, 0], "boot: {:?}", f.states());

    f.mgr.note_miss();
    assert_eq!(f.worker_at(0).pageblocks_reclaimed, 2);
    assert_eq!(usable_per_area(&f), [PB; 4], "first growth: {:?}", f.states());
    f.mgr.note_miss();
    assert_eq!(f.worker_at(0).pageblocks_reclaimed, 2);
    assert_eq!(usable_per_area(&f), [2 * PB, PB, 2 * PB, PB], "second growth: {:?}", f.states());

    assert_eq!(f.worker_at(10).pageblocks_lent, 0, "starts the shrink timer");
    assert_eq!(f.worker_at(300).pageblocks_lent, 2);
    assert_eq!(usable_per_area(&f), [PB; 4], "first shrink: {:?}", f.states());
    assert_eq!(f.worker_at(600).pageblocks_lent, 2);
    assert_eq!(usable_per_area(&f), [PB, 0, PB, 0], "second shrink, down to swiotlb_keep: {:?}", f.states());
    f.mgr.default_pool().assert_consistent();
}
