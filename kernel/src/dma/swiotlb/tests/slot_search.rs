//! The slot search against a reference model: random allocations (size, `min_align_mask`,
//! `alloc_align_mask`), frees, lends and unlends, on pools of one to four areas, up to 130
//! segments per area (summaries of more than one word), starting on any page. After every step
//! the model and the pool agree on every slot's state and the pool's bitmaps and summaries match
//! its states; every allocation lies on free slots inside one segment with the alignment asked
//! for, and an allocation fails only when the model has no fitting run in any area.

use core::ops::Range;

use proptest::prelude::*;

use super::super::slots::SlotRequest;
use super::*;
use crate::mm::PAGE_SIZE;

/// Pool geometries: (areas, segments per area).
const GEOMETRIES: [(usize, usize); 7] = [(1, 1), (1, 3), (2, 2), (4, 1), (1, 66), (2, 65), (1, 130)];

const ALIGNMENTS: [SlotAlignment; 11] = [
    SlotAlignment { min_align_mask: 0, alloc_align_mask: 0 },
    SlotAlignment { min_align_mask: 0xfff, alloc_align_mask: 0 },
    SlotAlignment { min_align_mask: 0xffff, alloc_align_mask: 0 },
    SlotAlignment { min_align_mask: 0x7ff, alloc_align_mask: 0 },
    SlotAlignment { min_align_mask: 0, alloc_align_mask: 0x3fff },
    SlotAlignment { min_align_mask: 0xfff, alloc_align_mask: 0xfff },
    SlotAlignment { min_align_mask: 0x1fff, alloc_align_mask: 0xfff },
    SlotAlignment { min_align_mask: 0x1_ffff, alloc_align_mask: 0 },
    SlotAlignment { min_align_mask: 0, alloc_align_mask: 0x7fff },
    // A whole segment, and more than a segment: one start in every segment, or every other.
    SlotAlignment { min_align_mask: 0, alloc_align_mask: 0x3_ffff },
    SlotAlignment { min_align_mask: 0, alloc_align_mask: 0x7_ffff },
];

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        size: usize,
        orig_low: u64,
        align: usize,
    },
    Free {
        which: usize,
    },
    /// Release of a slot that heads no live mapping: refused.
    BadFree {
        slot: usize,
    },
    Lend {
        start: usize,
        len: usize,
    },
    /// Whole segments: big enough to empty the first summary word of a large pool.
    LendSegments {
        seg: usize,
        nsegs: usize,
    },
    Unlend {
        which: usize,
        part: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (prop_oneof![1..4_096usize, 1..70_000usize, 1..=262_144usize], 0..0x10_0000u64, 0..ALIGNMENTS.len())
            .prop_map(|(size, orig_low, align)| Op::Alloc { size, orig_low, align }),
        4 => any::<usize>().prop_map(|which| Op::Free { which }),
        1 => any::<usize>().prop_map(|slot| Op::BadFree { slot }),
        1 => (any::<usize>(), 1..400usize).prop_map(|(start, len)| Op::Lend { start, len }),
        1 => (any::<usize>(), 1..100usize).prop_map(|(seg, nsegs)| Op::LendSegments { seg, nsegs }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(which, part)| Op::Unlend { which, part }),
    ]
}

/// A live allocation: its slots and the address handed out.
struct Live {
    first: usize,
    nslots: usize,
    tlb: PhysAddr,
}

/// What every slot should be, and the pool's geometry.
struct Model {
    start: PhysAddr,
    states: Vec<SlotState>,
}

impl Model {
    fn addr(&self, slot: usize) -> PhysAddr {
        self.start + ((slot as u64) << IO_TLB_SHIFT)
    }

    /// Whether an allocation for `req` with `align` may start at `slot`, by the rules a device
    /// sees (Linux `swiotlb_search_pool_area`): the allocation starts on the allocation alignment
    /// (a page for a page or more when nothing is asked for), and the address handed out keeps
    /// the original's `min_align_mask` bits.
    fn may_start(&self, slot: usize, req: &SlotRequest, align: SlotAlignment) -> bool {
        let mut alloc_mask = align.alloc_align_mask;
        if alloc_mask == 0 && align.min_align_mask == 0 && req.alloc_size >= PAGE_SIZE as usize {
            alloc_mask = PAGE_SIZE - 1;
        }
        let first = self.addr(slot);
        let tlb = first + ((req.pad_slots as u64) << IO_TLB_SHIFT) + req.offset as u64;
        first & alloc_mask == 0 && tlb & align.min_align_mask == req.orig_addr & align.min_align_mask
    }

    /// Whether some area has `req.nslots` free slots in one segment where the request may start.
    fn has_fit(&self, req: &SlotRequest, align: SlotAlignment) -> bool {
        // Free slots from each slot to the end of its segment, counted backwards.
        let mut run = vec![0usize; self.states.len() + 1];
        for i in (0..self.states.len()).rev() {
            let to_end = if (i + 1) % IO_TLB_SEGSIZE == 0 { 0 } else { run[i + 1] };
            run[i] = if self.states[i] == SlotState::Free { to_end + 1 } else { 0 };
        }
        (0..self.states.len()).any(|i| run[i] >= req.nslots && self.may_start(i, req, align))
    }

    fn all(&self, range: Range<usize>, state: SlotState) -> bool {
        self.states[range].iter().all(|&s| s == state)
    }

    fn set(&mut self, range: Range<usize>, state: SlotState) {
        self.states[range].fill(state);
    }
}

fn check_against_model(pool: &SwiotlbPool, model: &Model) {
    pool.assert_consistent();
    for (i, &state) in model.states.iter().enumerate() {
        assert_eq!(pool.slot_state(i), Some(state), "slot {i}");
    }
}

/// Colour periods the property test runs with: off, the smallest, QEMU's softmmu TLB reach.
const COLOURS: [u64; 3] = [0, MIN_COLOUR_PERIOD, 1 << 20];

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn slot_search_matches_the_model(
        geometry in 0..GEOMETRIES.len(),
        start_page in 0..4u64,
        colour in 0..COLOURS.len(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let (nareas, segs) = GEOMETRIES[geometry];
        let area_nslots = segs * IO_TLB_SEGSIZE;
        let nslots = nareas * area_nslots;
        let start = POOL_START + start_page * PAGE_SIZE;
        // Unlend without scrubbing touches no memory: the pool's accessor is never used.
        let pool = SwiotlbPool::new(start, nslots, nareas, test_mem()).expect("valid geometry");
        let mut model = Model { start, states: vec![SlotState::Free; nslots] };
        let mut live: Vec<Live> = Vec::new();
        let mut lent: Vec<Range<usize>> = Vec::new();
        for op in ops {
            match op {
                Op::Alloc { size, orig_low, align } => {
                    let align = ALIGNMENTS[align];
                    let orig = RAM_BASE + orig_low;
                    // Colouring, like preferring clean runs, must not change what the search may
                    // return, nor make it fail where the model has a fit.
                    let Ok(req) = SlotRequest::new(orig, size, align).map(|r| r.with_colour(COLOURS[colour])) else { continue };
                    match pool.alloc_slots(&req, DmaDirection::ToDevice, size % 2 == 1) {
                        Ok((head, _)) => {
                            let first = head - req.pad_slots;
                            let n = req.nslots;
                            let tlb = model.addr(head) + req.offset as u64;
                            prop_assert!(first + n <= nslots, "{first}+{n} past the pool");
                            prop_assert_eq!(first / IO_TLB_SEGSIZE, (first + n - 1) / IO_TLB_SEGSIZE, "crosses a segment: {}+{}", first, n);
                            prop_assert_eq!(first / area_nslots, (first + n - 1) / area_nslots, "crosses an area");
                            prop_assert!(model.all(first..first + n, SlotState::Free), "{first}+{n} overlaps {:?}", &model.states[first..first + n]);
                            prop_assert!(model.may_start(first, &req, align), "{first} misaligned for {req:?}");
                            prop_assert_eq!(tlb & align.min_align_mask, orig & align.min_align_mask);
                            prop_assert!(tlb + size as u64 <= model.addr(first + n), "the mapping fits its slots");
                            prop_assert!(pool.is_swiotlb_buffer(tlb) && pool.is_swiotlb_buffer(tlb + size as u64 - 1));
                            model.set(first..first + n, SlotState::Used);
                            live.push(Live { first, nslots: n, tlb });
                        }
                        Err(e) => {
                            prop_assert!(matches!(e, SwiotlbError::BufferFull { .. }), "{e}");
                            prop_assert!(!model.has_fit(&req, align), "refused though the model has a fit: {req:?}, {align:?}");
                        }
                    }
                }
                Op::Free { which } => {
                    if live.is_empty() {
                        continue;
                    }
                    let l = live.swap_remove(which % live.len());
                    prop_assert_eq!(pool.release_slots(l.tlb), Ok(()));
                    prop_assert!(!pool.is_swiotlb_buffer(l.tlb));
                    model.set(l.first..l.first + l.nslots, SlotState::Free);
                }
                Op::BadFree { slot } => {
                    let slot = slot % nslots;
                    let addr = model.addr(slot);
                    if live.iter().any(|l| pool.slot_index(l.tlb) == Some(slot)) {
                        continue;
                    }
                    prop_assert_eq!(pool.release_slots(addr), Err(SwiotlbError::NotMapped { tlb_addr: addr }));
                }
                Op::Lend { start, len } => {
                    let start = start % nslots;
                    let range = start..(start + len).min(nslots);
                    lend(&pool, &mut model, &mut lent, range)?;
                }
                Op::LendSegments { seg, nsegs } => {
                    let start = (seg % (nslots / IO_TLB_SEGSIZE)) * IO_TLB_SEGSIZE;
                    let range = start..(start + nsegs * IO_TLB_SEGSIZE).min(nslots);
                    lend(&pool, &mut model, &mut lent, range)?;
                }
                Op::Unlend { which, part } => {
                    if lent.is_empty() {
                        continue;
                    }
                    let whole = lent.swap_remove(which % lent.len());
                    // Part: the first half back, the rest stays lent.
                    let range = if part && whole.len() > 1 { whole.start..whole.start + whole.len() / 2 } else { whole.clone() };
                    if range.end < whole.end {
                        lent.push(range.end..whole.end);
                    }
                    prop_assert_eq!(pool.unlend(range.clone(), false), Ok(()));
                    model.set(range, SlotState::Free);
                }
            }
            check_against_model(&pool, &model);
        }
        for l in live {
            prop_assert_eq!(pool.release_slots(l.tlb), Ok(()));
        }
        for range in lent {
            prop_assert_eq!(pool.unlend(range, false), Ok(()));
        }
        prop_assert_eq!(pool.free_slots(), nslots);
        pool.assert_consistent();
        // Every segment whole again: a full-segment mapping fits in each one.
        for _ in 0..nslots / IO_TLB_SEGSIZE {
            let req = SlotRequest::new(RAM_BASE, IO_TLB_SEGSIZE * IO_TLB_SIZE, SlotAlignment::default()).unwrap();
            let head = pool.alloc_slots(&req, DmaDirection::ToDevice, false);
            prop_assert!(head.is_ok(), "{head:?}");
        }
    }
}

/// Lends `range` and checks the pool said yes exactly when the model's slots were all free.
fn lend(pool: &SwiotlbPool, model: &mut Model, lent: &mut Vec<Range<usize>>, range: Range<usize>) -> Result<(), TestCaseError> {
    let all_free = model.all(range.clone(), SlotState::Free);
    let result = pool.lend(range.clone());
    prop_assert_eq!(result.is_ok(), all_free, "lend {:?}: {:?}", range, result);
    if all_free {
        model.set(range.clone(), SlotState::Lent);
        lent.push(range);
    }
    Ok(())
}

proptest! {
    /// The shift-and run search against a walk over the slots.
    #[test]
    fn free_run_starts_matches_a_slot_walk(
        runs in proptest::collection::vec((0..IO_TLB_SEGSIZE, 1..=IO_TLB_SEGSIZE), 0..6),
        nslots in 1..=IO_TLB_SEGSIZE,
    ) {
        use super::super::slots::{free_run_starts, run_mask, summary_levels};
        let free = runs.iter().fold(0, |free, &(first, n)| free | run_mask(first, n.min(IO_TLB_SEGSIZE - first)));
        let is_free = |i: usize| free >> i & 1 == 1;
        let mut expected = 0u128;
        for i in 0..=IO_TLB_SEGSIZE - nslots {
            if (i..i + nslots).all(is_free) {
                expected |= 1 << i;
            }
        }
        prop_assert_eq!(free_run_starts(free, nslots), expected, "free {:#x}, {} slots", free, nslots);
        let longest = (0..IO_TLB_SEGSIZE).map(|i| (i..IO_TLB_SEGSIZE).take_while(|&j| is_free(j)).count()).max().unwrap_or(0);
        let levels = if longest == 0 { 0 } else { longest.ilog2() as usize + 1 };
        prop_assert_eq!(summary_levels(free), levels, "free {:#x}", free);
    }
}

/// The segment masks built a 64-bit half at a time (`slots_from`, `slots_below`, `run_mask`) and
/// the one-slot test `has_slot`, against the 128-bit shifts they stand for, for every first
/// slot, end and length.
#[test]
fn segment_masks_match_128_bit_shifts() {
    use super::super::slots::{has_slot, run_mask, slots_below, slots_from};
    for first in 0..IO_TLB_SEGSIZE {
        assert_eq!(slots_from(first), u128::MAX << first, "slots_from({first})");
        for map in [u128::MAX, 0x5555_0000_ffff_0000_1234_5678_9abc_def0, 1 << first, !(1 << first)] {
            assert_eq!(has_slot(map, first), map >> first & 1 == 1, "has_slot({map:#x}, {first})");
        }
        for nslots in 1..=IO_TLB_SEGSIZE - first {
            assert_eq!(run_mask(first, nslots), (u128::MAX >> (IO_TLB_SEGSIZE - nslots)) << first, "run_mask({first}, {nslots})");
        }
    }
    for end in 1..=IO_TLB_SEGSIZE {
        assert_eq!(slots_below(end), u128::MAX >> (IO_TLB_SEGSIZE - end), "slots_below({end})");
    }
}

/// The slots where a run may start (`RunStarts::fits` on an all-free segment, one slot), for
/// every allocation alignment from a slot to a segment, with and without a `min_align_mask` (up
/// to twice a segment), from originals and area bases at many slot phases, against the address
/// rules of [`Model::may_start`] slot by slot: the 64-bit pattern of the strides below a segment,
/// and the one start per segment (or per other segment) from there up.
#[test]
fn run_starts_allow_exactly_the_aligned_slots() {
    let model = Model { start: POOL_START, states: vec![SlotState::Free; 4 * IO_TLB_SEGSIZE] };
    for align_slots in (0..=7).map(|k| 1u64 << k) {
        for min_align_mask in [0, 0x7ff, 0xfff, 0x3fff, 0x3_ffff, 0x7_ffff] {
            let align = SlotAlignment { min_align_mask, alloc_align_mask: (align_slots << IO_TLB_SHIFT) - 1 };
            for orig_slot in [0, 1, 3, 5, 6, 7, 100, 128, 200] {
                let orig = RAM_BASE + (orig_slot << IO_TLB_SHIFT) + 0x123;
                let req = SlotRequest::new(orig, 3000, align).expect("request");
                for base_slot in [0, 1, 2, 5, 64, 127, 128, 200] {
                    let base = POOL_START + (base_slot << IO_TLB_SHIFT);
                    let starts = req.run_starts(base);
                    for seg in 0..4 {
                        let fits = starts.fits(seg, u128::MAX, 1);
                        for i in 0..IO_TLB_SEGSIZE {
                            let slot = base_slot as usize + seg * IO_TLB_SEGSIZE + i;
                            assert_eq!(
                                fits >> i & 1 == 1,
                                model.may_start(slot, &req, align),
                                "align {align:?} orig {orig:#x} base {base:#x}: slot {i} of segment {seg}"
                            );
                        }
                    }
                }
            }
        }
    }
}
