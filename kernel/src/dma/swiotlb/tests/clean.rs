//! Clean slots: a `FromDevice` mapping with
//! `DmaAttrs::no_copy_in` that gets clean slots skips its copy-in; bytes the device does not
//! write then read back as zeros, never another mapping's stale data nor a lent page's. Dirty
//! slots fall back to the copy-in. Scrubbing makes free slots clean and never touches a used or
//! lent slot.

use super::*;
use crate::dma::sim_maps::SimPoolMaps;

const SECRET: u8 = 0xEE;
const MINE: u8 = 0x11;
const LENT_PAGE: u8 = 0x77;
const FROM: DmaDirection = DmaDirection::FromDevice;
const NO_COPY_IN: DmaAttrs = DmaAttrs { skip_cpu_sync: false, no_copy_in: true };

/// Maps every slot full of `SECRET`, then unmaps them: every slot dirty.
fn dirty_every_slot(f: &Fixture) {
    let orig = RAM_BASE + ORIG_BYTES - IO_TLB_SIZE as u64;
    f.mem.fill(orig, SECRET, IO_TLB_SIZE);
    let maps: Vec<_> = (0..f.pool.nslots() - f.pool.lent_slots())
        .map(|_| f.map(orig, IO_TLB_SIZE, DmaDirection::ToDevice, SlotAlignment::default()))
        .collect();
    for tlb in maps {
        f.unmap(tlb, IO_TLB_SIZE, DmaDirection::ToDevice);
    }
}

/// Scrubs until nothing is left; returns the slots scrubbed.
fn scrub_all(f: &Fixture) -> usize {
    let mut total = 0;
    loop {
        let n = f.pool.scrub_step(SCRUB_STEP_SLOTS);
        assert!(n <= SCRUB_STEP_SLOTS);
        if n == 0 {
            return total;
        }
        total += n;
        f.pool.assert_consistent();
    }
}

fn map_no_copy_in(f: &Fixture, orig: PhysAddr, size: usize, align: SlotAlignment) -> PhysAddr {
    f.pool.sim_map_attrs(orig, size, FROM, align, NO_COPY_IN).expect("map")
}

#[test]
fn scrubbing_makes_every_free_slot_clean_and_zero() {
    let f = Fixture::new(512, 2);
    dirty_every_slot(&f);
    assert!((0..512).all(|i| !f.pool.slot_clean(i)), "released slots are dirty");
    assert_eq!(scrub_all(&f), 512);
    assert!((0..512).all(|i| f.pool.slot_clean(i)));
    assert!(f.read(POOL_START, 512 * IO_TLB_SIZE).iter().all(|b| *b == 0), "clean slots hold zeros");
    assert_eq!(f.pool.stats().slots_scrubbed, 512);
    assert_eq!(f.pool.scrub_step(SCRUB_STEP_SLOTS), 0, "nothing left to scrub");
    f.assert_pristine();
}

/// A step that found nothing to zero is not repeated until slots come back dirty: an unmap, a
/// lend given back unscrubbed.
#[test]
fn scrubbing_resumes_after_each_way_slots_come_back_dirty() {
    let f = Fixture::new(512, 2);
    dirty_every_slot(&f);
    assert_eq!(scrub_all(&f), 512);
    assert_eq!(f.pool.scrub_step(SCRUB_STEP_SLOTS), 0, "nothing left");
    let tlb = f.map(RAM_BASE, 3 * IO_TLB_SIZE, DmaDirection::ToDevice, SlotAlignment::default());
    assert_eq!(f.pool.scrub_step(SCRUB_STEP_SLOTS), 0, "a mapping leaves no free slot dirty");
    f.unmap(tlb, 3 * IO_TLB_SIZE, DmaDirection::ToDevice);
    assert_eq!(scrub_all(&f), 3, "the unmapped slots");
    f.pool.lend(256..384).unwrap();
    f.pool.unlend(256..384, false).unwrap();
    assert_eq!(scrub_all(&f), 128, "given back unscrubbed");
    f.pool.lend(256..384).unwrap();
    f.pool.unlend(256..384, true).unwrap();
    assert_eq!(f.pool.scrub_step(SCRUB_STEP_SLOTS), 0, "given back scrubbed");
    f.assert_pristine();
}

#[test]
fn a_hostile_device_that_writes_nothing_or_part_leaves_zeros_with_clean_slots() {
    for (size, align) in [
        (4096, SlotAlignment::default()),
        (100, SlotAlignment::default()),
        (IO_TLB_SIZE + 3, SlotAlignment::default()),
        (700, SlotAlignment::min_align(IO_TLB_SIZE as u64 - 1)),
        (3000, SlotAlignment::min_align(0xfff)),
    ] {
        for written in [0, 1, size / 2] {
            let f = Fixture::new(256, 1);
            dirty_every_slot(&f);
            scrub_all(&f);
            let orig = RAM_BASE + 0x2000 + 0x5a5;
            f.mem.fill(orig, MINE, size);
            let tlb = map_no_copy_in(&f, orig, size, align);
            assert_eq!(f.pool.stats().reads_copy_in_skipped, 1, "clean slots: no copy-in");
            // The device sees zeros only: neither the caller's bytes nor an earlier mapping's.
            let start = tlb & !(IO_TLB_SIZE as u64 - 1);
            assert!(f.read(start, (tlb - start) as usize + size).iter().all(|b| *b == 0));
            f.mem.fill(tlb, 0xD0, written); // the device writes only `written` bytes
            f.unmap(tlb, size, FROM);
            let back = f.read(orig, size);
            assert!(back[..written].iter().all(|b| *b == 0xD0), "{size} {written}: the device's bytes");
            assert!(
                back[written..].iter().all(|b| *b == 0),
                "{size} bytes, {written} written: unwritten bytes read back as zeros, found {:?}",
                back[written..].iter().find(|b| **b != 0)
            );
            f.assert_pristine();
        }
    }
}

#[test]
fn dirty_slots_fall_back_to_the_copy_in() {
    let f = Fixture::new(256, 1);
    dirty_every_slot(&f);
    let orig = RAM_BASE + 0x2000;
    let size = 5000;
    f.mem.fill(orig, MINE, size);
    let tlb = map_no_copy_in(&f, orig, size, SlotAlignment::default());
    let stats = f.pool.stats();
    assert_eq!((stats.reads_copy_in_skipped, stats.reads_copied_in), (0, 1));
    assert!(f.read(tlb, size).iter().all(|b| *b == MINE), "copied in: the device sees the caller's bytes");
    let (start, len) = (tlb & !(IO_TLB_SIZE as u64 - 1), 3 * IO_TLB_SIZE);
    assert!(!f.read(start, len).contains(&SECRET), "nor an earlier mapping's around them");
    f.mem.fill(tlb, 0xD0, 10); // partial device write
    f.unmap(tlb, size, FROM);
    let back = f.read(orig, size);
    assert!(back[..10].iter().all(|b| *b == 0xD0) && back[10..].iter().all(|b| *b == MINE), "Linux's semantic");
    f.assert_pristine();
}

#[test]
fn a_run_with_one_dirty_slot_copies_in() {
    let f = Fixture::new(128, 1);
    scrub_all(&f);
    // Dirty slot 0 alone: map and unmap it.
    let orig = RAM_BASE + ORIG_BYTES - IO_TLB_SIZE as u64;
    f.mem.fill(orig, SECRET, IO_TLB_SIZE);
    let one = f.map(orig, IO_TLB_SIZE, DmaDirection::ToDevice, SlotAlignment::default());
    f.unmap(one, IO_TLB_SIZE, DmaDirection::ToDevice);
    assert!(!f.pool.slot_clean(0) && (1..128).all(|i| f.pool.slot_clean(i)));
    // The only run of 128 slots holds the dirty one: copy-in.
    let size = 128 * IO_TLB_SIZE;
    f.mem.fill(RAM_BASE, MINE, size);
    let tlb = map_no_copy_in(&f, RAM_BASE, size, SlotAlignment::default());
    assert_eq!((f.pool.stats().reads_copy_in_skipped, f.pool.stats().reads_copied_in), (0, 1));
    assert!(f.read(tlb, size).iter().all(|b| *b == MINE));
    f.unmap(tlb, size, FROM);
    assert!(f.read(RAM_BASE, size).iter().all(|b| *b == MINE), "the device wrote nothing: the caller's bytes survive");
    f.assert_pristine();
}

#[test]
fn clean_runs_are_preferred_in_the_cursor_segment() {
    let f = Fixture::new(128, 1);
    // Slots 0..4 dirty (used and released), the rest clean.
    scrub_all(&f);
    let orig = RAM_BASE;
    let a = f.map(orig, 4 * IO_TLB_SIZE, DmaDirection::ToDevice, SlotAlignment::default());
    f.unmap(a, 4 * IO_TLB_SIZE, DmaDirection::ToDevice);
    // Wrap the cursor back to the dirty slots: fill the rest, free it.
    let rest = f.map(orig, 124 * IO_TLB_SIZE, DmaDirection::ToDevice, SlotAlignment::default());
    f.unmap(rest, 124 * IO_TLB_SIZE, DmaDirection::ToDevice);
    scrub_all(&f);
    let b = f.map(orig, 2 * IO_TLB_SIZE, DmaDirection::ToDevice, SlotAlignment::default());
    f.unmap(b, 2 * IO_TLB_SIZE, DmaDirection::ToDevice); // slots 0..2 dirty, cursor at 2
    let c = map_no_copy_in(&f, orig, IO_TLB_SIZE, SlotAlignment::default());
    assert_eq!(f.pool.stats().reads_copy_in_skipped, 1, "a clean run was found");
    f.unmap(c, IO_TLB_SIZE, FROM);
    f.assert_pristine();
}

#[test]
fn scrubbing_never_touches_a_used_or_lent_slot() {
    let f = Fixture::new(1024, 1);
    dirty_every_slot(&f);
    // Lend slots 512..1024 and fill them as the page allocator's user would.
    f.pool.lend(512..1024).unwrap();
    let lent_start = POOL_START + 512 * IO_TLB_SIZE as u64;
    f.mem.fill(lent_start, LENT_PAGE, 512 * IO_TLB_SIZE);
    // A live mapping whose slots hold the device's data.
    let orig = RAM_BASE;
    f.mem.fill(orig, MINE, 8 * IO_TLB_SIZE);
    let live = f.map(orig, 8 * IO_TLB_SIZE, DmaDirection::Bidirectional, SlotAlignment::default());
    assert_eq!(scrub_all(&f), 512 - 8);
    assert!(f.read(live, 8 * IO_TLB_SIZE).iter().all(|b| *b == MINE), "a used slot was scrubbed");
    assert!(f.read(lent_start, 512 * IO_TLB_SIZE).iter().all(|b| *b == LENT_PAGE), "a lent slot was scrubbed");
    assert!((512..1024).all(|i| !f.pool.slot_clean(i)), "lent slots are never clean");
    f.unmap(live, 8 * IO_TLB_SIZE, DmaDirection::Bidirectional);
    f.pool.assert_consistent();
}

#[test]
fn a_lent_page_s_data_never_reaches_the_caller() {
    // Unlent without a scrub: dirty, so a no_copy_in mapping copies in and the lent page's
    // bytes never show.
    let f = Fixture::new(1024, 1);
    scrub_all(&f);
    f.pool.lend(0..1024).unwrap();
    f.mem.fill(POOL_START, LENT_PAGE, 1024 * IO_TLB_SIZE);
    f.pool.unlend(0..1024, false).unwrap();
    assert!((0..1024).all(|i| !f.pool.slot_clean(i)));
    let orig = RAM_BASE;
    f.mem.fill(orig, MINE, 4096);
    let tlb = map_no_copy_in(&f, orig, 4096, SlotAlignment::default());
    f.unmap(tlb, 4096, FROM); // the device wrote nothing
    assert!(f.read(orig, 4096).iter().all(|b| *b == MINE), "dirty slots copied in");
    // Unlent with a scrub (reclaim): clean at once, and the device that writes nothing leaves zeros.
    let g = Fixture::new(1024, 1);
    g.pool.lend(0..1024).unwrap();
    g.mem.fill(POOL_START, LENT_PAGE, 1024 * IO_TLB_SIZE);
    g.pool.unlend(0..1024, true).unwrap();
    assert!((0..1024).all(|i| g.pool.slot_clean(i)), "reclaimed slots are clean");
    g.mem.fill(orig, MINE, 4096);
    let tlb = map_no_copy_in(&g, orig, 4096, SlotAlignment::default());
    assert_eq!(g.pool.stats().reads_copy_in_skipped, 1);
    g.unmap(tlb, 4096, FROM);
    assert!(g.read(orig, 4096).iter().all(|b| *b == 0), "zeros, never the lent page's bytes");
}

#[test]
fn other_directions_and_attrs_off_copy_in_as_linux() {
    let f = Fixture::new(256, 1);
    scrub_all(&f);
    let orig = RAM_BASE;
    f.mem.fill(orig, MINE, 4096);
    for dir in [DmaDirection::ToDevice, DmaDirection::Bidirectional] {
        let tlb = f.pool.sim_map_attrs(orig, 4096, dir, SlotAlignment::default(), NO_COPY_IN).unwrap();
        assert!(f.read(tlb, 4096).iter().all(|b| *b == MINE), "{dir:?} copies in");
        f.unmap(tlb, 4096, dir);
    }
    scrub_all(&f);
    let tlb = f.map(orig, 4096, FROM, SlotAlignment::default()); // no attribute
    assert!(f.read(tlb, 4096).iter().all(|b| *b == MINE));
    f.unmap(tlb, 4096, FROM);
    // swiotlb_clean_slots=off: always the copy-in, and no scrubbing.
    scrub_all(&f);
    f.pool.set_clean_slots(false);
    let tlb = map_no_copy_in(&f, orig, 4096, SlotAlignment::default());
    assert!(f.read(tlb, 4096).iter().all(|b| *b == MINE), "off: copied in");
    f.unmap(tlb, 4096, FROM);
    assert_eq!(f.pool.scrub_step(SCRUB_STEP_SLOTS), 0, "off: no scrubbing");
    let s = f.pool.stats();
    assert_eq!((s.reads_copy_in_skipped, s.reads_copied_in), (0, 1));
}
