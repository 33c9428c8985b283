//! Information leaks: memory that becomes bounce slots (a reclaimed lent pageblock, a
//! carved or returned device pool, a `dynamic` extra pool, a CMA chunk) shows nothing of its
//! last owner to a device. Every test first fills all of simulated RAM with `SECRET`, as the
//! page allocator's users or earlier mappings would have left it.
//!
//! The pools the worker grows by (reclaimed blocks, extra pools, CMA chunks) are zeroed at once
//! with `swiotlb_reclaim_scrub=on`; by default their slots come back dirty, and then every
//! mapping of them must show the device only the caller's bytes and zeros, and idle CPUs must
//! zero them in the end. Each such test runs both ways.

use super::cma::cma_fixture_with;
use super::*;
use crate::arch::host::IrqContextGuard;
use core::ops::Range;

const SECRET: u8 = 0xEE;

fn dirty_all_ram(f: &Fixture) {
    let end = f.mgr.default_pool().start() + f.pool_blocks as u64 * PAGEBLOCK_SIZE;
    f.mem.fill(BASE, SECRET, (end - BASE) as usize);
}

fn assert_clean(f: &Fixture, start: PhysAddr, len: usize, what: &str) {
    let bytes = f.read(start, len);
    assert!(
        !bytes.contains(&SECRET),
        "{what}: a device could read its last owner's data at {:#x}",
        start + bytes.iter().position(|b| *b == SECRET).unwrap_or(0) as u64
    );
}

/// Both ways of growing: zeroed at once, or dirty and zeroed by idle CPUs.
const SCRUB_MODES: [bool; 2] = [true, false];

/// What a device can read once the pool grew into `grown` (memory that held `SECRET`):
/// with `swiotlb_reclaim_scrub=on`, zeros; otherwise every slot of it goes to a mapping
/// (alternately to and from the device, 3000 bytes: two slots, the second's tail left over,
/// in interrupt context so that the IRQ reserve is mapped too), and no byte of any mapping's
/// slots may be `SECRET`; then, the mappings ended, idle CPUs' scrub steps zero it all.
fn assert_grown_memory_never_leaks(f: &Fixture, grown: &[Range<PhysAddr>], scrubbed_at_once: bool, what: &str) {
    let len = |r: &Range<PhysAddr>| (r.end - r.start) as usize;
    if scrubbed_at_once {
        grown.iter().for_each(|r| assert_clean(f, r.start, len(r), what));
        return;
    }
    for r in grown {
        assert!(f.read(r.start, len(r)).contains(&SECRET), "{what}: not zeroed on the way (swiotlb_reclaim_scrub=off)");
    }
    const SIZE: usize = 3000;
    f.mem.fill(ORIG, 0x5A, SIZE);
    let mut maps = Vec::new();
    {
        let _irq = IrqContextGuard::enter();
        let dirs = [DmaDirection::ToDevice, DmaDirection::FromDevice];
        while let Ok(tlb) = f.mgr.sim_map(ORIG, SIZE, dirs[maps.len() % 2], SlotAlignment::default()) {
            maps.push((tlb, dirs[maps.len() % 2]));
        }
    }
    let mut covered = 0;
    for &(tlb, _) in &maps {
        let first = tlb & !(IO_TLB_SIZE as u64 - 1);
        let end = (tlb + SIZE as u64).next_multiple_of(IO_TLB_SIZE as u64);
        assert_clean(f, first, (end - first) as usize, &format!("{what}: the slots of mapping {tlb:#x}"));
        if grown.iter().any(|r| r.contains(&first)) {
            covered += (end - first) as usize;
        }
    }
    assert_eq!(covered, grown.iter().map(len).sum::<usize>(), "{what}: every slot of it went to a mapping");
    for (tlb, dir) in maps {
        f.unmap(tlb, SIZE, dir).expect("unmap");
    }
    // The misses above ask the worker to grow; once it ran, the pool is quiet and idle CPUs scrub.
    f.worker();
    let mut steps = 0;
    while f.mgr.scrub_step(64) != 0 {
        steps += 1;
    }
    assert!(steps > 0, "{what}: idle CPUs found dirty slots to zero");
    grown.iter().for_each(|r| assert_clean(f, r.start, len(r), &format!("{what}, after idle CPUs scrubbed")));
}

fn scrub_tunables(policy: SwiotlbPolicy, scrub: bool) -> Tunables {
    Tunables { reclaim_scrub: scrub, ..tunables(policy) }
}

#[test]
fn a_reclaimed_lent_block_never_shows_its_pages_to_a_device() {
    for scrub in SCRUB_MODES {
        let f = Fixture::new(2, 6, scrub_tunables(SwiotlbPolicy::Lend, scrub), false);
        dirty_all_ram(&f);
        let before = f.states();
        f.mgr.note_miss();
        let report = f.worker();
        assert_eq!(report.pageblocks_reclaimed, 2, "{report:?}");
        let reclaimed: Vec<usize> = (0..6).filter(|b| before[*b] == BlockState::Lent && f.states()[*b] == BlockState::AsSlots).collect();
        assert_eq!(reclaimed.len(), 2);
        let blocks: Vec<_> = reclaimed.iter().map(|&b| f.pool_block(b)..f.pool_block(b) + PAGEBLOCK_SIZE).collect();
        assert_grown_memory_never_leaks(&f, &blocks, scrub, "reclaimed pageblocks");
    }
}

#[test]
fn a_carved_device_pool_is_scrubbed() {
    for policy in [SwiotlbPolicy::Lend, SwiotlbPolicy::Static] {
        let f = Fixture::new(2, 8, tunables(policy), false);
        dirty_all_ram(&f);
        let dev = f.mgr.carve_device_pool(f.pages, 2, &mut ignore_drop).unwrap();
        let pool = dev.pool();
        assert_clean(&f, pool.start(), (pool.end() - pool.start()) as usize, "carved device pool");
        f.mgr.return_device_pool(dev, f.pages).map_err(|(_, e)| e).unwrap();
    }
}

#[test]
fn a_returned_device_pool_is_scrubbed_before_the_default_pool_uses_it() {
    // `static`: the returned pageblocks become slots of the default pool again.
    let f = Fixture::new(2, 8, tunables(SwiotlbPolicy::Static), false);
    let dev = f.mgr.carve_device_pool(f.pages, 1, &mut ignore_drop).unwrap();
    let (start, end) = (dev.pool().start(), dev.pool().end());
    // The device's data, left in its pool's slots by its mappings.
    f.mem.fill(start, SECRET, (end - start) as usize);
    f.mgr.return_device_pool(dev, f.pages).map_err(|(_, e)| e).unwrap();
    assert_clean(&f, start, (end - start) as usize, "returned device pool");
}

#[test]
fn a_dynamic_extra_pool_never_shows_its_pages_to_a_device() {
    for scrub in SCRUB_MODES {
        let t = Tunables { dyn_pool_pageblocks: 2, ..scrub_tunables(SwiotlbPolicy::Dynamic, scrub) };
        let f = Fixture::new(8, 8, t, false);
        dirty_all_ram(&f);
        f.mgr.note_miss();
        assert_eq!(f.worker().pageblocks_added, 2);
        let extra = f.mgr.extra_pools().next().expect("an extra pool");
        assert_grown_memory_never_leaks(&f, &[extra.start()..extra.end()], scrub, "extra pool");
    }
}

#[test]
fn a_cma_chunk_never_shows_its_pages_to_a_device() {
    for scrub in SCRUB_MODES {
        let (f, _area) = cma_fixture_with(6, 4, scrub_tunables(SwiotlbPolicy::Cma, scrub));
        dirty_all_ram(&f);
        f.mgr.note_miss();
        assert_eq!(f.worker_at(1_000).pageblocks_added, 2);
        let chunk = f.mgr.extra_pools().next().expect("a chunk pool");
        let range = chunk.start()..chunk.end();
        assert_grown_memory_never_leaks(&f, core::slice::from_ref(&range), scrub, "new CMA chunk");
        // Idle: the chunk goes back to the CMA area; RAM is dirtied again; the next growth
        // revives the chunk's pool (`unlend`, the other path).
        for ms in (0..2000).step_by(100) {
            f.worker_at(10_000 + ms);
        }
        assert_eq!(f.mgr.cma_chunks_in_use(), 0);
        dirty_all_ram(&f);
        f.mgr.note_miss();
        assert_eq!(f.worker_at(20_000).pageblocks_added, 2);
        assert_eq!(f.mgr.extra_pools().next().map(|p| p.start()), Some(range.start), "the same chunk again");
        assert_grown_memory_never_leaks(&f, &[range], scrub, "revived CMA chunk");
    }
}
