//! Information leaks: a device reading the slots of its mapping sees only its own
//! buffer's bytes or zeros, never an earlier mapping's data nor the memory around the original;
//! and what the CPU gets back after a partial device write is never stale slot data
//! (CVE-2022-0854). The reclaim/carve scrubbing is tested in `lend/tests/`.

use super::*;

/// What "an earlier mapping" left in every slot.
const SECRET: u8 = 0xEE;
/// The original buffer's bytes.
const MINE: u8 = 0x11;
/// The bytes around the original buffer.
const NEIGHBOUR: u8 = 0xCC;

/// Maps every slot of the pool full of `SECRET`, then unmaps them: the pool is dirty.
fn dirty_every_slot(f: &Fixture) {
    let orig = RAM_BASE + ORIG_BYTES - IO_TLB_SIZE as u64;
    f.mem.fill(orig, SECRET, IO_TLB_SIZE);
    let maps: Vec<_> = (0..f.pool.nslots()).map(|_| f.map(orig, IO_TLB_SIZE, DmaDirection::ToDevice, SlotAlignment::default())).collect();
    for tlb in maps {
        f.unmap(tlb, IO_TLB_SIZE, DmaDirection::ToDevice);
    }
    assert!(f.read(POOL_START, 64).iter().all(|b| *b == SECRET));
}

/// The whole slots a mapping of `size` bytes at `tlb` occupies.
fn slots_of(tlb: PhysAddr, size: usize) -> (PhysAddr, usize) {
    let mask = IO_TLB_SIZE as u64 - 1;
    let start = tlb & !mask;
    let end = (tlb + size as u64 + mask) & !mask;
    (start, (end - start) as usize)
}

#[test]
fn a_device_reading_its_slots_sees_no_earlier_mapping() {
    for dir in DIRECTIONS {
        for (size, align) in [
            (100, SlotAlignment::default()),
            (1, SlotAlignment::default()),
            (IO_TLB_SIZE + 3, SlotAlignment::default()),
            // The original's offset kept: bytes before the mapping in its first slot too.
            (700, SlotAlignment::min_align(IO_TLB_SIZE as u64 - 1)),
        ] {
            let f = Fixture::new(256, 1);
            dirty_every_slot(&f);
            let orig = RAM_BASE + 0x2000 + 0x5a5;
            f.mem.fill(orig, MINE, size);
            let tlb = f.map(orig, size, dir, align);
            let (start, len) = slots_of(tlb, size);
            let seen = f.read(start, len);
            let offset = (tlb - start) as usize;
            assert!(seen[offset..offset + size].iter().all(|b| *b == MINE), "{dir:?} {size}");
            assert!(
                !seen.contains(&SECRET),
                "{dir:?}, {size} bytes: the device sees an earlier mapping's bytes at {:?}",
                seen.iter().position(|b| *b == SECRET)
            );
            f.unmap(tlb, size, dir);
        }
    }
}

#[test]
fn a_device_never_sees_the_memory_around_the_original() {
    for dir in DIRECTIONS {
        let f = Fixture::new(256, 1);
        let orig = RAM_BASE + 0x4000 + 0x123;
        f.mem.fill(RAM_BASE + 0x3000, NEIGHBOUR, 0x4000);
        f.mem.fill(orig, MINE, 300);
        let tlb = f.map(orig, 300, dir, SlotAlignment::min_align(IO_TLB_SIZE as u64 - 1));
        let (start, len) = slots_of(tlb, 300);
        assert!(!f.read(start, len).contains(&NEIGHBOUR), "{dir:?}: neighbouring memory bounced");
        f.unmap(tlb, 300, dir);
    }
}

#[test]
fn a_partial_device_write_returns_no_stale_data_to_the_cpu() {
    for dir in [DmaDirection::FromDevice, DmaDirection::Bidirectional] {
        for sync_first in [false, true] {
            let f = Fixture::new(256, 1);
            dirty_every_slot(&f);
            let orig = RAM_BASE + 0x8000;
            f.mem.fill(orig, MINE, 4096);
            let tlb = f.map(orig, 4096, dir, SlotAlignment::default());
            // The device writes only the first 1000 bytes.
            f.mem.fill(tlb, 0x22, 1000);
            if sync_first {
                f.pool.sync_for_cpu(tlb, 4096, dir).unwrap();
            }
            f.unmap(tlb, 4096, dir);
            let back = f.read(orig, 4096);
            assert!(back[..1000].iter().all(|b| *b == 0x22), "{dir:?}");
            assert!(back[1000..].iter().all(|b| *b == MINE), "{dir:?} (sync first: {sync_first}): stale slot data reached the CPU buffer");
        }
    }
}
