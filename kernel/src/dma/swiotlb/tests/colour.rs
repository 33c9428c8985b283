//! Slot colouring (`swiotlb_colour_kib=`): a bounce run avoids the page colours of its original
//! when another free run fits, so that its copies do not evict their own TLB entries (QEMU's
//! softmmu TLB is direct-mapped: pages 1 MiB apart share an entry).

use super::*;
use crate::dma::swiotlb::slots::{SlotRequest, MIN_COLOURED_BYTES};
use crate::mm::PAGE_SIZE;

const PERIOD: u64 = 1 << 20;

/// Whether the pages of `[a, a + a_len)` and `[b, b + b_len)` meet modulo `period`.
fn share_colour(a: PhysAddr, a_len: u64, b: PhysAddr, b_len: u64, period: u64) -> bool {
    let colours = |start: PhysAddr, len: u64| {
        let q = period / PAGE_SIZE;
        (start / PAGE_SIZE..=(start + len - 1) / PAGE_SIZE).map(move |p| p % q).collect::<std::collections::HashSet<_>>()
    };
    !colours(a, a_len).is_disjoint(&colours(b, b_len))
}

#[test]
fn the_colour_mask_marks_every_run_that_shares_a_page_colour_and_no_far_one() {
    let slot = IO_TLB_SIZE as u64;
    for period in [MIN_COLOUR_PERIOD, PERIOD, 4 * PERIOD] {
        for size in [MIN_COLOURED_BYTES, 20_000, 65536, 200_000] {
            for orig in [RAM_BASE, RAM_BASE + 0x800, RAM_BASE + 0x3_1234, RAM_BASE + 0xf_f000, RAM_BASE + 0x1f_c100] {
                let req = SlotRequest::new(orig, size, SlotAlignment::default()).unwrap().with_colour(period);
                for base in [POOL_START, POOL_START + 0x2_0000, POOL_START + 0x7_f800] {
                    let starts = req.run_starts(base);
                    for seg in 0..(2 * period as usize / (IO_TLB_SEGSIZE * IO_TLB_SIZE)) {
                        let mask = starts.same_colour(seg);
                        for i in 0..IO_TLB_SEGSIZE {
                            let a = base + ((seg * IO_TLB_SEGSIZE + i) as u64) * slot;
                            let run = (req.nslots as u64) * slot;
                            let marked = mask >> i & 1 == 1;
                            if share_colour(a, run, orig, size as u64, period) {
                                assert!(
                                    marked,
                                    "period {period:#x} size {size} orig {orig:#x} base {base:#x} seg {seg} slot {i}: shares, not marked"
                                );
                            }
                            if marked {
                                // At most a slot more than the page test, on each side.
                                assert!(
                                    share_colour(a - slot, run + 2 * slot, orig - slot, size as u64 + 2 * slot, period),
                                    "period {period:#x} size {size} orig {orig:#x} base {base:#x} seg {seg} slot {i}: marked, far"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn no_colour_when_off_or_when_every_run_would_share_one() {
    let req = SlotRequest::new(RAM_BASE, 65536, SlotAlignment::default()).unwrap();
    assert_eq!(req.run_starts(POOL_START).same_colour(0), 0, "off by default");
    assert_eq!(req.with_colour(PERIOD / 4).run_starts(POOL_START).same_colour(0), 0, "a period below the minimum is off");
    assert_eq!(req.with_colour(PERIOD + 4096).run_starts(POOL_START).same_colour(0), 0, "a period not a power of two is off");
    // A buffer at the top of the address space (a caller's mistake the map refuses elsewhere)
    // must not overflow the colour arithmetic.
    let top = SlotRequest::new(u64::MAX - 100, 65536, SlotAlignment::default()).unwrap().with_colour(PERIOD);
    let _ = top.run_starts(POOL_START).same_colour(0);
    // Small mappings are not coloured.
    let small = SlotRequest::new(RAM_BASE, MIN_COLOURED_BYTES - 1, SlotAlignment::default()).unwrap().with_colour(PERIOD);
    assert_eq!(small.run_starts(POOL_START).same_colour(0), 0);
    // A mapping as long as the period shares a colour with every run: nothing to prefer.
    let whole = SlotRequest::new(RAM_BASE, 256 << 10, SlotAlignment::default()).unwrap().with_colour(MIN_COLOUR_PERIOD);
    assert_eq!(whole.run_starts(POOL_START).same_colour(0), 0);
}

/// Maps buffers at many offsets into a pool of two colour periods, with spacers moving the
/// search's start; every mapping's slots must avoid the buffer's page colours (there is always
/// room elsewhere). Returns how many mappings shared a colour.
fn shared_colours(period: u64) -> usize {
    let f = Fixture::new(2 * (PERIOD as usize) / IO_TLB_SIZE, 1);
    f.pool.set_colour_period(period);
    let mut shared = 0;
    for round in 0..64usize {
        let (spacer, spacer_size) = f.spacer(round);
        let size = [16384, 40000, 65536][round % 3];
        let orig = RAM_BASE + ((round as u64 * 0x2_3000) % (ORIG_BYTES - 0x1_0000));
        let data = f.write_pattern(orig, size, round as u8);
        let tlb = f.map(orig, size, DmaDirection::ToDevice, SlotAlignment::default());
        assert_eq!(f.read(tlb, size), data);
        if share_colour(tlb, size as u64, orig, size as u64, PERIOD) {
            shared += 1;
        }
        f.unmap(tlb, size, DmaDirection::ToDevice);
        f.unmap(spacer, spacer_size, DmaDirection::ToDevice);
    }
    f.assert_pristine();
    shared
}

#[test]
fn a_bounce_run_avoids_its_originals_page_colours() {
    assert_eq!(shared_colours(PERIOD), 0);
    // The test means something: without colouring the same mappings do share colours.
    assert!(shared_colours(0) > 0);
}

/// Maps `size` bytes from buffers of changing colours until the pool is full; returns how many
/// mappings it took.
fn fill(period: u64, size: usize) -> usize {
    let f = Fixture::new(2 * (PERIOD as usize) / IO_TLB_SIZE, 1);
    f.pool.set_colour_period(period);
    let mut live = Vec::new();
    loop {
        let orig = RAM_BASE + ((live.len() as u64 * 0x3_5000) % (ORIG_BYTES - 0x1_0000));
        match f.pool.sim_map(orig, size, DmaDirection::ToDevice, SlotAlignment::default()) {
            Ok(tlb) => live.push(tlb),
            Err(SwiotlbError::BufferFull { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let n = live.len();
    for tlb in live {
        f.unmap(tlb, size, DmaDirection::ToDevice);
    }
    f.assert_pristine();
    n
}

#[test]
fn colouring_costs_no_capacity() {
    for size in [16384, 65536, 128 << 10] {
        let whole = 2 * PERIOD as usize / size;
        assert_eq!(fill(0, size), whole, "{size} without colouring");
        assert_eq!(fill(PERIOD, size), whole, "{size} coloured");
    }
}
