//! Random map/unmap/sync sequences against a model of what every buffer should hold.

use super::*;
use crate::dma::sim_maps::SimPoolMaps;
use proptest::prelude::*;

/// Original buffers get a window each, so live mappings never share original bytes.
const WINDOW: u64 = 0x4_0000;
const WINDOWS: usize = (ORIG_BYTES / WINDOW) as usize;

#[derive(Clone, Debug)]
enum Op {
    Map { size: usize, offset: u64, dir: usize, align: usize },
    DeviceWrite { which: usize, seed: u8 },
    SyncForCpu { which: usize },
    Unmap { which: usize, skip_cpu_sync: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1..70_000usize, 0..0x1_0000u64, 0..3usize, 0..5usize)
            .prop_map(|(size, offset, dir, align)| Op::Map { size, offset, dir, align }),
        // A page or a little less, page aligned: what a slot cache's run fits.
        2 => (2049..=4096usize, 0..16u64, 0..3usize, 0..5usize)
            .prop_map(|(size, page, dir, align)| Op::Map { size, offset: page * 4096, dir, align }),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(which, seed)| Op::DeviceWrite { which, seed }),
        1 => any::<usize>().prop_map(|which| Op::SyncForCpu { which }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(which, skip_cpu_sync)| Op::Unmap { which, skip_cpu_sync }),
    ]
}

const ALIGNMENTS: [SlotAlignment; 5] = [
    SlotAlignment { min_align_mask: 0, alloc_align_mask: 0 },
    SlotAlignment { min_align_mask: 0xfff, alloc_align_mask: 0 },
    SlotAlignment { min_align_mask: 0xffff, alloc_align_mask: 0 },
    SlotAlignment { min_align_mask: 0, alloc_align_mask: 0x3fff },
    SlotAlignment { min_align_mask: 0xfff, alloc_align_mask: 0xfff },
];

/// A live mapping and what its slots and original should hold.
struct Live {
    window: usize,
    orig: PhysAddr,
    tlb: PhysAddr,
    size: usize,
    dir: DmaDirection,
    slots: Vec<u8>,
    original: Vec<u8>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_counts_and_contents(coloured: bool, slot_cache: bool, ops in proptest::collection::vec(op(), 1..80)) {
        let f = Fixture::new(1024, 2);
        f.pool.set_colour_period(if coloured { MIN_COLOUR_PERIOD } else { 0 });
        f.pool.set_slot_cache(if slot_cache { 4 } else { 0 });
        let mut live: Vec<Live> = Vec::new();
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Map { size, offset, dir, align } => {
                    let Some(window) = (0..WINDOWS).find(|w| live.iter().all(|l| l.window != *w)) else { continue };
                    let orig = RAM_BASE + window as u64 * WINDOW + offset;
                    let original = f.write_pattern(orig, size, n as u8);
                    let align = ALIGNMENTS[align];
                    let dir = DIRECTIONS[dir];
                    match f.pool.sim_map(orig, size, dir, align) {
                        Ok(tlb) => {
                            prop_assert_eq!(tlb & align.min_align_mask, orig & align.min_align_mask);
                            live.push(Live { window, orig, tlb, size, dir, slots: original.clone(), original });
                        }
                        Err(SwiotlbError::BufferFull { .. }) => {}
                        Err(SwiotlbError::MappingTooLarge { .. }) => prop_assert!(size > max_mapping_size(align.min_align_mask)),
                        Err(e) => prop_assert!(false, "unexpected {}", e),
                    }
                }
                Op::DeviceWrite { which, seed } if !live.is_empty() => {
                    let count = live.len();
                    let l = &mut live[which % count];
                    l.slots = f.write_pattern(l.tlb, l.size, seed);
                }
                Op::SyncForCpu { which } if !live.is_empty() => {
                    let count = live.len();
                    let l = &mut live[which % count];
                    f.pool.sync_for_cpu(l.tlb, l.size, l.dir).unwrap();
                    if l.dir.from_device() {
                        l.original = l.slots.clone();
                    }
                }
                Op::Unmap { which, skip_cpu_sync } if !live.is_empty() => {
                    let l = live.swap_remove(which % live.len());
                    f.pool.unmap(l.tlb, l.size, l.dir, DmaAttrs { skip_cpu_sync, no_copy_in: false }).unwrap();
                    let expected = if l.dir.from_device() && !skip_cpu_sync { &l.slots } else { &l.original };
                    prop_assert_eq!(&f.read(l.orig, l.size), expected);
                    // No live mapping there any more (a run parked in the slot cache still
                    // reads Used to `is_swiotlb_buffer`, but holds none).
                    prop_assert!(f.pool.find_mapping(l.tlb).is_err());
                    prop_assert!(!f.pool.is_swiotlb_buffer(l.tlb) || f.pool.cached_runs() > 0);
                }
                _ => {}
            }
            f.pool.assert_consistent();
            for l in &live {
                prop_assert!(f.pool.is_swiotlb_buffer(l.tlb) && f.pool.is_swiotlb_buffer(l.tlb + l.size as u64 - 1));
                prop_assert_eq!(&f.read(l.tlb, l.size), &l.slots, "another mapping overwrote these slots");
                prop_assert_eq!(&f.read(l.orig, l.size), &l.original);
            }
        }
        for l in live {
            f.unmap(l.tlb, l.size, l.dir);
        }
        f.assert_pristine();
    }
}
