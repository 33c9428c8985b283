//! Finding a mapping from any of its slots: the area keeps one record per allocation, at its
//! first slot, and finds it through the segment's start bitmap (`area.rs`). Every byte of a
//! mapping, pad slots included, must lead to that mapping's record, never a neighbour's; every
//! other slot to none.

use super::*;

/// A live mapping as the test placed it.
struct Live {
    orig: PhysAddr,
    tlb: PhysAddr,
    size: usize,
    /// Slots of the allocation: `first..first + nslots`, the head at `first + pad`.
    first: usize,
    nslots: usize,
}

/// Slot alignment with one pad slot for an original at 0x900 into a page.
const PADDED: SlotAlignment = SlotAlignment { min_align_mask: 0xfff, alloc_align_mask: 0xfff };
/// Three pad slots for an original at 0x1900 into 16 KiB.
const PADDED_3: SlotAlignment = SlotAlignment { min_align_mask: 0x3fff, alloc_align_mask: 0x3fff };

/// Maps the `i`th buffer of the sequence; `None` once the pool has no room for it.
fn map_nth(f: &Fixture, i: usize) -> Option<Live> {
    let block = RAM_BASE + 0x4000 * (i as u64 % 200);
    let (orig, size, align) = match i % 5 {
        0 => (block + 0x900, 100 + i, PADDED),
        1 => (block + 0x1900, 3000 + 17 * i, PADDED_3),
        2 => (block + 0x123, 2 * IO_TLB_SIZE + i, SlotAlignment::min_align(0x7ff)),
        3 => (block + 0x7ff, 1, SlotAlignment::min_align(0x7ff)),
        _ => (block, IO_TLB_SIZE, SlotAlignment::default()),
    };
    let used = f.pool.used_slots();
    let tlb = f.pool.sim_map(orig, size, DmaDirection::ToDevice, align).ok()?;
    let nslots = f.pool.used_slots() - used;
    let offset = orig & align.min_align_mask & (align.alloc_align_mask | (IO_TLB_SIZE as u64 - 1));
    let pad = (offset >> IO_TLB_SHIFT) as usize;
    let first = f.pool.slot_index(tlb).unwrap() - pad;
    Some(Live { orig, tlb, size, first, nslots })
}

/// Looks up bytes of every slot of the pool and checks each against `live`.
fn check_every_slot(f: &Fixture, live: &[Live]) {
    f.pool.assert_consistent();
    let mut owner = vec![None; f.pool.nslots()];
    for (n, m) in live.iter().enumerate() {
        for slot in &mut owner[m.first..m.first + m.nslots] {
            assert!(slot.is_none(), "allocations overlap");
            *slot = Some(n);
        }
    }
    for (i, owner) in owner.iter().enumerate() {
        for in_slot in [0, 1, 0x400, IO_TLB_SIZE as u64 - 1] {
            let addr = f.pool.slot_addr(i).unwrap() + in_slot;
            let found = f.pool.find_mapping(addr);
            match owner {
                Some(n) => {
                    let m = &live[*n];
                    let found = found.unwrap_or_else(|e| panic!("slot {i} + {in_slot:#x} of mapping {n}: {e:?}"));
                    assert_eq!(found.head_slot.orig_addr, m.orig, "slot {i} + {in_slot:#x}: the record of mapping {n}");
                    assert_eq!(found.head_slot.alloc_size as usize, m.size, "slot {i} + {in_slot:#x}");
                    assert_eq!(found.position, addr as i64 - m.tlb as i64, "slot {i} + {in_slot:#x}: position in mapping {n}");
                    assert!(f.pool.is_swiotlb_buffer(addr));
                    assert_eq!(f.pool.slot_state(i), Some(SlotState::Used));
                }
                None => {
                    assert_eq!(found.map(|m| m.head_slot.orig_addr), Err(SwiotlbError::NotMapped { tlb_addr: addr }), "free slot {i}");
                    assert!(!f.pool.is_swiotlb_buffer(addr));
                    assert_eq!(f.pool.slot_state(i), Some(SlotState::Free));
                }
            }
        }
    }
}

/// A release or unmap at any slot of a mapping but its head is refused and changes nothing.
fn check_non_heads_refused(f: &Fixture, live: &[Live]) {
    for m in live {
        let head = f.pool.slot_index(m.tlb).unwrap();
        for i in (m.first..m.first + m.nslots).filter(|&i| i != head) {
            let addr = f.pool.slot_addr(i).unwrap() + (m.tlb & (IO_TLB_SIZE as u64 - 1));
            assert_eq!(f.pool.release_slots(addr), Err(SwiotlbError::NotMapped { tlb_addr: addr }), "slot {i} is not the head {head}");
            assert!(f.pool.unmap(addr, 1, DmaDirection::ToDevice, DmaAttrs::default()).is_err(), "unmap at slot {i}, not the head {head}");
        }
    }
    f.pool.assert_consistent();
}

#[test]
fn every_byte_of_a_mapping_finds_its_own_record() {
    // Two segments in each of two areas: mappings packed up to both ends of a segment.
    let f = Fixture::new(512, 2);
    let mut live: Vec<Live> = Vec::new();
    let mut i = 0;
    // Fill the pool, then free every other mapping and fill the holes, twice.
    for round in 0..3 {
        // Until five in a row fail: the sequence's one-slot mappings fit in any free slot, so
        // the pool is then full.
        let mut misses = 0;
        while misses < 5 {
            match map_nth(&f, i) {
                Some(m) => {
                    live.push(m);
                    misses = 0;
                }
                None => misses += 1,
            }
            i += 1;
        }
        assert_eq!(f.pool.free_slots(), 0);
        check_every_slot(&f, &live);
        check_non_heads_refused(&f, &live);
        assert!(live.iter().any(|m| m.first % IO_TLB_SEGSIZE == 0), "a mapping at a segment's first slot");
        assert!(live.iter().any(|m| f.pool.slot_index(m.tlb).unwrap() - m.first == 3), "a mapping with three pad slots");
        assert!(live.iter().any(|m| (m.first + m.nslots) % IO_TLB_SEGSIZE == 0), "a mapping up to a segment's end");
        let mut n = 0;
        live.retain(|m| {
            n += 1;
            let keep = (n + round) % 2 == 0;
            if !keep {
                f.unmap(m.tlb, m.size, DmaDirection::ToDevice);
            }
            keep
        });
        check_every_slot(&f, &live);
    }
    for m in live.drain(..) {
        f.unmap(m.tlb, m.size, DmaDirection::ToDevice);
    }
    check_every_slot(&f, &live);
    f.assert_pristine();
}
