//! Host tests: helpers and the invariant checker shared by the unit tests and the proptests.

#![allow(clippy::single_range_in_vec_init)] // free-range lists of one range

mod cma;
mod compaction;
mod errors;
mod fallback;
mod migration;
mod proptests;
mod stats;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::vec::Vec;

use super::migratetype::MigrateType;
use super::page::{PageDesc, NIL};
use super::zone::ZoneType;
use super::*;
use crate::mm::phys::{PhysMemory, SimMemory};
use crate::mm::PhysAddr;

/// Where simulated RAM starts (QEMU virt's RAM base).
pub(super) const BASE: PhysAddr = 0x4000_0000;

/// An allocator over `blocks` pageblocks of RAM, all free, with ZONE_DMA covering the first
/// `dma_blocks` (all if `None`).
pub(super) fn allocator(blocks: u64, dma_blocks: Option<u64>) -> PageAllocator {
    let end = BASE + blocks * PAGEBLOCK_SIZE;
    PageAllocator::new(BASE..end, &[BASE..end], dma_blocks.map(|d| BASE + d * PAGEBLOCK_SIZE)).unwrap()
}

/// An allocator whose first `free_blocks` pageblocks are free RAM and whose next `pool_blocks`
/// are unmanaged (a SWIOTLB pool to lend), with simulated memory covering all of it.
pub(super) fn with_pool(free_blocks: u64, pool_blocks: u64) -> (LockedPageAllocator, SimMemory) {
    let end = BASE + (free_blocks + pool_blocks) * PAGEBLOCK_SIZE;
    let free_end = BASE + free_blocks * PAGEBLOCK_SIZE;
    let a = PageAllocator::new(BASE..end, &[BASE..free_end], None).unwrap();
    (LockedPageAllocator::new(a), SimMemory::new(BASE, (end - BASE) as usize))
}

/// The address of pageblock `n`.
pub(super) fn block(n: u64) -> PhysAddr {
    BASE + n * PAGEBLOCK_SIZE
}

/// The range of pageblocks `first..first+count`.
pub(super) fn blocks(first: u64, count: u64) -> core::ops::Range<PhysAddr> {
    block(first)..block(first + count)
}

pub(super) fn owner(kind: OwnerKind) -> PageOwner {
    PageOwner { kind, cookie: 0 }
}

/// Every free block as (address, order), sorted.
pub(super) fn free_blocks(a: &PageAllocator) -> Vec<(PhysAddr, u8)> {
    (0..a.mem_map.len())
        .filter_map(|i| match a.mem_map[i] {
            PageDesc::Free { order, .. } => Some((a.addr_of(i), order)),
            _ => None,
        })
        .collect()
}

/// Checks every structural invariant of the allocator; panics with what broke.
pub(super) fn check_invariants(a: &PageAllocator) {
    let n = a.mem_map.len();
    // Every managed page belongs to exactly one block, whose head is aligned to its order and
    // whose other pages are tails.
    let mut managed = [0usize; 2];
    let mut heads: BTreeMap<(ZoneType, u8, MigrateType), usize> = BTreeMap::new();
    let mut movable_heads = 0;
    let mut isolated_pages: BTreeMap<ZoneType, usize> = BTreeMap::new();
    let mut isolated_in_block: BTreeMap<usize, usize> = BTreeMap::new();
    let mut idx = 0;
    while idx < n {
        let desc = a.mem_map[idx];
        let order = match desc {
            PageDesc::Unmanaged => {
                idx += 1;
                continue;
            }
            PageDesc::Tail => panic!("tail page {idx} without a head"),
            PageDesc::Free { order, .. } | PageDesc::Allocated { order } | PageDesc::Movable { order, .. } => order,
        };
        assert_eq!(idx % (1 << order), 0, "block at {idx} misaligned for order {order}");
        for t in idx + 1..idx + (1 << order) {
            assert_eq!(a.mem_map[t], PageDesc::Tail, "page {t} inside block {idx} is not a tail");
        }
        let mt = a.pageblock_type[idx >> PAGEBLOCK_ORDER].unwrap_or_else(|| panic!("block {idx} in unmanaged pageblock"));
        let zone = a.zone_of(idx);
        managed[zone as usize] += 1 << order;
        match desc {
            PageDesc::Free { prev, next, .. } if mt == MigrateType::Isolate => {
                // Isolated free blocks: on no list, not merged, counted in pages only.
                assert_eq!((prev, next), (NIL, NIL), "isolated free block {idx} linked");
                *isolated_pages.entry(zone).or_default() += 1 << order;
                *isolated_in_block.entry(idx >> PAGEBLOCK_ORDER).or_default() += 1 << order;
            }
            PageDesc::Free { .. } => {
                *heads.entry((zone, order, mt)).or_default() += 1;
                if order < MAX_PAGE_ORDER {
                    let buddy = idx ^ (1 << order);
                    assert!(
                        !matches!(a.mem_map[buddy], PageDesc::Free { order: o, .. } if o == order),
                        "free buddies {idx} and {buddy} of order {order} not merged"
                    );
                }
            }
            PageDesc::Allocated { .. } => assert!(
                !matches!(mt, MigrateType::Swiotlb | MigrateType::Cma | MigrateType::Isolate),
                "unmovable block at {idx} in a {mt:?} pageblock"
            ),
            PageDesc::Movable { order: o, slot } => {
                movable_heads += 1;
                let page = a.movable.handle(slot);
                let e = a.movable.get(page).expect("movable head without a live handle");
                assert_eq!((e.idx, e.order), (idx, o), "handle and page descriptor disagree");
            }
            _ => unreachable!(),
        }
        idx += 1 << order;
    }
    assert_eq!(a.movable.live().count(), movable_heads, "live handles without a movable page");
    for (block, free) in a.isolated_free.iter().enumerate() {
        let expected =
            if a.pageblock_type[block] == Some(MigrateType::Isolate) { isolated_in_block.get(&block).copied().unwrap_or(0) } else { 0 };
        assert_eq!(*free as usize, expected, "isolated_free of pageblock {block}");
    }
    // Free lists: well linked, right zone, order and type, counters equal a recount.
    for zone in ZoneType::ALL {
        let z = &a.zones[zone as usize];
        assert_eq!(z.managed_pages, managed[zone as usize], "managed_pages of {zone:?}");
        for mt in MigrateType::ALL {
            let mut pages = 0;
            for order in 0..=MAX_PAGE_ORDER {
                let mut prev = NIL;
                let mut cur = z.free_area[order as usize].free_list[mt.index()];
                let mut count = 0;
                if mt == MigrateType::Isolate {
                    assert_eq!(cur, NIL, "an ISOLATE free list is not empty");
                }
                while cur != NIL {
                    let PageDesc::Free { order: o, prev: p, next } = a.mem_map[cur as usize] else {
                        panic!("page {cur} on a free list is not free");
                    };
                    assert_eq!((o, p), (order, prev), "free list links at {cur}");
                    assert_eq!(a.zone_of(cur as usize), zone);
                    assert_eq!(a.pageblock_type[cur as usize >> PAGEBLOCK_ORDER], Some(mt), "page {cur} on wrong type's list");
                    count += 1;
                    prev = cur;
                    cur = next;
                }
                assert_eq!(count, z.free_area[order as usize].nr_free[mt.index()], "nr_free {zone:?} {order} {mt:?}");
                assert_eq!(count, heads.get(&(zone, order, mt)).copied().unwrap_or(0), "free heads not on a list");
                pages += count << order;
            }
            if mt == MigrateType::Isolate {
                pages = isolated_pages.get(&zone).copied().unwrap_or(0);
            }
            assert_eq!(pages, z.nr_free_pages[mt.index()], "nr_free_pages {zone:?} {mt:?}");
        }
    }
}

/// Simulated RAM that runs a hook once, right after the first page copy (so while a migration
/// is between its copy and its commit, with the allocator unlocked).
pub(super) struct CopyHook<'a, F: Fn() + Sync> {
    mem: &'a SimMemory,
    hook: F,
    pub(super) fired: AtomicBool,
}

impl<'a, F: Fn() + Sync> CopyHook<'a, F> {
    pub(super) fn new(mem: &'a SimMemory, hook: F) -> Self {
        CopyHook { mem, hook, fired: AtomicBool::new(false) }
    }
}

impl<F: Fn() + Sync> PhysMemory for CopyHook<'_, F> {
    fn read(&self, pa: PhysAddr, buf: &mut [u8]) {
        self.mem.read(pa, buf)
    }
    fn write(&self, pa: PhysAddr, data: &[u8]) {
        self.mem.write(pa, data)
    }
    fn copy(&self, dst: PhysAddr, src: PhysAddr, len: usize) {
        self.mem.copy(dst, src, len);
        if !self.fired.swap(true, Ordering::SeqCst) {
            (self.hook)();
        }
    }
    fn fill(&self, pa: PhysAddr, byte: u8, len: usize) {
        self.mem.fill(pa, byte, len)
    }
}
