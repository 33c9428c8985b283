//! Information leaks: memory that becomes bounce slots (a reclaimed lent pageblock, a
//! carved or returned device pool, a `dynamic` extra pool) holds nothing of its last owner.
//! Every test first fills all of simulated RAM with `SECRET`, as the page allocator's users or
//! earlier mappings would have left it.

use super::*;

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

#[test]
fn a_reclaimed_lent_block_is_scrubbed_before_it_becomes_slots() {
    let f = Fixture::new(2, 6, tunables(SwiotlbPolicy::Lend), false);
    dirty_all_ram(&f);
    let before = f.states();
    f.mgr.note_miss();
    let report = f.worker();
    assert_eq!(report.pageblocks_reclaimed, 2, "{report:?}");
    let reclaimed: Vec<usize> = (0..6).filter(|b| before[*b] == BlockState::Lent && f.states()[*b] == BlockState::AsSlots).collect();
    assert_eq!(reclaimed.len(), 2);
    for b in reclaimed {
        assert_clean(&f, f.pool_block(b), PAGEBLOCK_SIZE as usize, "reclaimed pageblock");
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
fn a_dynamic_extra_pool_is_scrubbed() {
    let f = Fixture::new(8, 8, Tunables { dyn_pool_pageblocks: 2, ..tunables(SwiotlbPolicy::Dynamic) }, false);
    dirty_all_ram(&f);
    f.mgr.note_miss();
    assert_eq!(f.worker().pageblocks_added, 2);
    let extra = f.mgr.extra_pools().next().expect("an extra pool");
    assert_clean(&f, extra.start(), (extra.end() - extra.start()) as usize, "extra pool");
}
