//! The slot cache (`swiotlb_slot_cache=`): page runs parked by an unmap and taken by a later
//! mapping of a page or less, with no search. What it must keep: a parked run is free in the
//! reported counts and is never a live mapping (a second unmap or a sync of it is refused),
//! while its slot states and the counts the IRQ reserve and the watermarks go by hold it (as
//! the pages on Linux's per-CPU lists are neither `PageBuddy` nor in `NR_FREE_PAGES`); the run the last unmap parked never goes to the very next mapping; a
//! parked run's old contents never reach a device; lending and a mapping that would fail free
//! the cached runs first; the IRQ reserve holds.

use super::*;

const PAGE: usize = 4096;
const TO: DmaDirection = DmaDirection::ToDevice;
const FROM: DmaDirection = DmaDirection::FromDevice;

/// A one-area pool of `nslots` with a slot cache of `runs`.
fn cached(nslots: usize, runs: usize) -> Fixture {
    let f = Fixture::new(nslots, 1);
    f.pool.set_slot_cache(runs);
    f
}

/// Maps and unmaps `n` pages at once, so that `n` runs are parked (while the cache has room).
fn park(f: &Fixture, n: usize) -> Vec<PhysAddr> {
    let tlbs: Vec<_> = (0..n).map(|i| f.map(RAM_BASE + (i * PAGE) as u64, PAGE, TO, SlotAlignment::default())).collect();
    for &tlb in &tlbs {
        f.unmap(tlb, PAGE, TO);
    }
    tlbs
}

#[test]
fn an_unmapped_page_run_is_parked_free_and_taken_oldest_first() {
    let f = cached(256, 4);
    let parked = park(&f, 3);
    assert_eq!(f.pool.cached_runs(), 3);
    // Parked runs: free in the reported counts; held in the slot states (no search and no
    // lend sees them free, and parking or taking one writes no state); no live mapping.
    for &tlb in &parked {
        assert!(f.pool.is_swiotlb_buffer(tlb) && !f.pool.is_free_slot(tlb));
        assert!(matches!(f.pool.unmap(tlb, PAGE, TO, DmaAttrs::default()), Err(SwiotlbError::NotMapped { .. })));
        assert!(f.pool.sync_for_cpu(tlb, PAGE, DmaDirection::Bidirectional).is_err());
    }
    assert_eq!((f.pool.used_slots(), f.pool.free_slots()), (0, 256));
    f.pool.assert_consistent();
    // The next page mappings take them, oldest first, and bounce as any mapping does.
    for (i, &want) in parked[..2].iter().enumerate() {
        let orig = RAM_BASE + 0x10_0000 + (i * PAGE) as u64;
        let data = f.write_pattern(orig, PAGE, i as u8);
        let tlb = f.map(orig, PAGE, TO, SlotAlignment::default());
        assert_eq!(tlb, want, "mapping {i}");
        assert_eq!(f.read(tlb, PAGE), data);
        assert!(f.pool.is_swiotlb_buffer(tlb));
        f.pool.assert_consistent();
    }
    assert_eq!(f.pool.cached_runs(), 1);
    assert_eq!(f.pool.used_slots(), 4);
}

#[test]
fn the_run_the_last_unmap_parked_is_not_the_next_mappings() {
    let f = cached(256, 8);
    // One run parked: the cache holds fewer than two, so the next mapping searches.
    let [first] = park(&f, 1)[..] else { unreachable!() };
    let next = f.map(RAM_BASE, PAGE, TO, SlotAlignment::default());
    assert_ne!(next, first);
    // A second unmap of the parked address is refused, and changes nothing.
    assert!(matches!(f.pool.unmap(first, PAGE, TO, DmaAttrs::default()), Err(SwiotlbError::NotMapped { .. })));
    assert!(f.pool.sync_for_cpu(first, PAGE, DmaDirection::Bidirectional).is_err());
    assert!(f.pool.is_swiotlb_buffer(next));
    f.unmap(next, PAGE, TO);
    // Now two are parked: a mapping takes the older one, never the one just parked.
    let again = f.map(RAM_BASE, PAGE, TO, SlotAlignment::default());
    assert_eq!(again, first);
    assert!(matches!(f.pool.unmap(next, PAGE, TO, DmaAttrs::default()), Err(SwiotlbError::NotMapped { .. })));
    f.unmap(again, PAGE, TO);
    f.pool.assert_consistent();
}

#[test]
fn only_mappings_a_page_run_fits_take_one() {
    let f = cached(256, 8);
    let parked = park(&f, 4);
    let orig = RAM_BASE + 0x2_0000;
    // Too small (one slot), too large, a kept offset, a larger alignment: each searches.
    for (size, align, orig) in [
        (IO_TLB_SIZE, SlotAlignment::default(), orig),
        (PAGE + 1, SlotAlignment::default(), orig),
        (PAGE - 0x100, SlotAlignment::min_align(0xfff), orig + 0x100),
        (PAGE, SlotAlignment { min_align_mask: 0, alloc_align_mask: 0x3fff }, orig),
    ] {
        let tlb = f.map(orig, size, TO, align);
        assert!(!parked.contains(&(tlb & !(PAGE as u64 - 1))), "{size} bytes, {align:?}: took a parked run");
        assert_eq!(tlb & align.min_align_mask, orig & align.min_align_mask);
        f.unmap(tlb, size, TO);
    }
    // A read that may skip its copy-in looks for clean slots, not for a parked (dirty) run.
    let tlb =
        f.pool.sim_map_attrs(orig, PAGE, FROM, SlotAlignment::default(), DmaAttrs { skip_cpu_sync: false, no_copy_in: true }).unwrap();
    assert!(!parked.contains(&tlb));
    f.unmap(tlb, PAGE, FROM);
    // Off, nothing is parked and the parked runs are freed.
    f.pool.set_slot_cache(0);
    assert_eq!(f.pool.cached_runs(), 0);
    f.assert_pristine();
}

#[test]
fn a_parked_runs_old_contents_never_reach_the_device_nor_the_cpu() {
    const SECRET: u8 = 0xEE;
    const MINE: u8 = 0x11;
    for dir in DIRECTIONS {
        let f = cached(256, 4);
        // Two runs parked full of an earlier mapping's bytes.
        let secret = RAM_BASE + 0x3_0000;
        f.mem.fill(secret, SECRET, 2 * PAGE);
        let tlbs: Vec<_> = (0..2).map(|i| f.map(secret + (i * PAGE) as u64, PAGE, TO, SlotAlignment::default())).collect();
        for &tlb in &tlbs {
            f.unmap(tlb, PAGE, TO);
        }
        // A shorter mapping takes one: the device sees the buffer, then zeros, never the secret.
        let size = PAGE - 700;
        let orig = RAM_BASE + 0x5_0000;
        f.mem.fill(orig, MINE, size);
        let tlb = f.map(orig, size, dir, SlotAlignment::default());
        assert!(tlbs.contains(&tlb), "{dir:?}: no parked run taken");
        let seen = f.read(tlb, PAGE);
        assert!(seen[..size].iter().all(|b| *b == MINE) && seen[size..].iter().all(|b| *b == 0), "{dir:?}");
        // A device that writes only part of it: the CPU gets its own bytes for the rest.
        f.mem.fill(tlb, 0x22, 100);
        f.unmap(tlb, size, dir);
        let back = f.read(orig, size);
        let device_wrote = if dir.from_device() { 0x22 } else { MINE };
        assert!(back[..100].iter().all(|b| *b == device_wrote) && back[100..].iter().all(|b| *b == MINE), "{dir:?}");
    }
}

#[test]
fn lending_frees_the_parked_runs_it_covers() {
    let f = cached(1024, 8);
    park(&f, 6);
    assert!(f.pool.cached_runs() > 0);
    // Every slot is free, so all of the pool can be lent: the cache gives its runs up.
    f.pool.lend(0..1024).expect("a pool with only parked runs lends whole");
    assert_eq!((f.pool.cached_runs(), f.pool.lent_slots()), (0, 1024));
    f.pool.assert_consistent();
    f.pool.unlend(0..1024, false).unwrap();
    f.assert_pristine();
}

#[test]
fn parked_runs_are_counted_held_until_a_drain() {
    let f = cached(256, 4);
    park(&f, 3);
    // Reported free, counted held: the counters the IRQ reserve and the watermarks go by.
    assert_eq!((f.pool.used_slots(), f.pool.free_slots()), (0, 256));
    assert_eq!((f.pool.held_slots(), f.pool.free_map_slots()), (6, 250));
    // Taking one moves no count: it was held, it is held.
    let tlb = f.map(RAM_BASE, PAGE, TO, SlotAlignment::default());
    assert_eq!((f.pool.held_slots(), f.pool.free_map_slots(), f.pool.used_slots()), (6, 250, 2));
    f.unmap(tlb, PAGE, TO);
    assert_eq!((f.pool.held_slots(), f.pool.free_map_slots()), (6, 250));
    // A drain (here: the cache turned off) moves its runs to the free count.
    f.pool.set_slot_cache(0);
    assert_eq!((f.pool.held_slots(), f.pool.free_map_slots()), (0, 256));
    f.pool.assert_consistent();
}

#[test]
fn a_search_that_finds_no_run_frees_the_parked_runs_and_tries_again() {
    // One segment of 128 slots, all mapped in pages; the 8 pages in its middle are unmapped
    // first and parked, the rest freed: 112 slots free, the longest run of them 56.
    let f = cached(IO_TLB_SEGSIZE, 8);
    let pages = IO_TLB_SEGSIZE / 2;
    let tlbs: Vec<_> = (0..pages).map(|i| f.map(RAM_BASE + (i * PAGE) as u64, PAGE, TO, SlotAlignment::default())).collect();
    let middle = pages / 2 - 4..pages / 2 + 4;
    for &tlb in tlbs[middle.clone()].iter().chain(&tlbs[..middle.start]).chain(&tlbs[middle.end..]) {
        f.unmap(tlb, PAGE, TO);
    }
    assert_eq!((f.pool.cached_runs(), f.pool.free_map_slots()), (8, 112));
    // 64 slots: the count has them, the free map has no run that long until the parked runs
    // are back in it.
    let run = f.map(RAM_BASE, 64 * IO_TLB_SIZE, TO, SlotAlignment::default());
    assert_eq!(f.pool.cached_runs(), 0);
    assert_eq!(f.pool.stats().map_failures, 0);
    f.unmap(run, 64 * IO_TLB_SIZE, TO);
    f.pool.assert_consistent();
}

#[test]
fn a_mapping_the_free_count_cannot_cover_frees_the_parked_runs_and_tries_again() {
    // 128 slots, 64 page runs: the first 32 unmapped are parked, the other 32 freed.
    let f = cached(IO_TLB_SEGSIZE, SLOT_CACHE_MAX);
    park(&f, IO_TLB_SEGSIZE / 2);
    assert_eq!(f.pool.cached_runs(), SLOT_CACHE_MAX);
    // All 128 slots in one run fit only once the parked runs are back in the free count and
    // the free map.
    let whole = f.map(RAM_BASE, IO_TLB_SEGSIZE * IO_TLB_SIZE, TO, SlotAlignment::default());
    assert_eq!(whole, POOL_START);
    assert_eq!(f.pool.cached_runs(), 0);
    assert_eq!(f.pool.stats().map_failures, 0);
    f.unmap(whole, IO_TLB_SEGSIZE * IO_TLB_SIZE, TO);
    f.pool.assert_consistent();
}

#[test]
fn a_parked_run_honours_the_irq_reserve() {
    let f = cached(256, 4);
    park(&f, 4);
    // Every free slot kept for interrupt handlers: a task-context mapping gets none, not even
    // a parked run, and the run stays parked.
    f.pool.set_irq_reserve_slots(256);
    let r = f.pool.sim_map(RAM_BASE, PAGE, TO, SlotAlignment::default());
    assert!(matches!(r, Err(SwiotlbError::BelowReserve { .. })), "{r:?}");
    assert_eq!(f.pool.cached_runs(), 4);
    f.pool.assert_consistent();
}
