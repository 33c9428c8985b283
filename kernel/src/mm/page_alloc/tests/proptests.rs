//! Random sequences of allocations, frees, pins, migrations, lending and reclaim, and CMA
//! allocations against a model:
//! after every step the structural invariants hold, no page is handed out twice, every page's
//! content is what its owner last wrote, and pins are respected. At the end, freeing everything
//! restores the initial free lists.

use proptest::prelude::*;

use super::*;
use crate::mm::phys::PhysMemory;
use crate::mm::PAGE_SIZE;

/// RAM: 5 pageblocks, small enough that random sequences run out of memory; free RAM from 3
/// pages in to 5 pages before block 2 (unaligned edges); ZONE_DMA is block 0; blocks 2 and 3
/// are a SWIOTLB pool that can be lent; block 4 is a CMA area.
const POOL_BLOCKS: [u64; 2] = [2, 3];
const CMA_BLOCK: u64 = 4;

#[derive(Clone, Debug)]
enum Op {
    AllocUnmovable {
        order: u8,
        normal: bool,
    },
    AllocMovable {
        order: u8,
        normal: bool,
        clean: bool,
    },
    /// Order-0 unmovable pages until memory runs out.
    FillUnmovable {
        normal: bool,
    },
    FreeUnmovable(usize),
    FreeMovable(usize),
    Write(usize),
    Pin(usize),
    PinLongterm(usize),
    Unpin(usize),
    Migrate(usize),
    Lend(usize),
    Reclaim {
        pool: usize,
        drop_clean: bool,
    },
    CmaAlloc {
        drop_clean: bool,
    },
    CmaRelease,
    BadFree(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..=6, any::<bool>()).prop_map(|(order, normal)| Op::AllocUnmovable { order, normal }),
        1 => any::<bool>().prop_map(|normal| Op::FillUnmovable { normal }),
        8 => (0u8..=5, any::<bool>(), any::<bool>()).prop_map(|(order, normal, clean)| Op::AllocMovable { order, normal, clean }),
        3 => any::<usize>().prop_map(Op::FreeUnmovable),
        3 => any::<usize>().prop_map(Op::FreeMovable),
        2 => any::<usize>().prop_map(Op::Write),
        2 => any::<usize>().prop_map(Op::Pin),
        1 => any::<usize>().prop_map(Op::PinLongterm),
        2 => any::<usize>().prop_map(Op::Unpin),
        2 => any::<usize>().prop_map(Op::Migrate),
        2 => (0usize..2).prop_map(Op::Lend),
        2 => (0usize..2, any::<bool>()).prop_map(|(pool, drop_clean)| Op::Reclaim { pool, drop_clean }),
        2 => any::<bool>().prop_map(|drop_clean| Op::CmaAlloc { drop_clean }),
        1 => Just(Op::CmaRelease),
        1 => any::<usize>().prop_map(Op::BadFree),
    ]
}

struct MovableModel {
    page: MovablePage,
    order: u8,
    tag: u64,
    kind: OwnerKind,
}

/// Writes `tag` (mixed with the page number) at both ends of every page of a block.
fn write_tags(mem: &SimMemory, addr: PhysAddr, order: u8, tag: u64) {
    for i in 0..1u64 << order {
        let page = addr + i * PAGE_SIZE;
        let v = (tag ^ i).to_le_bytes();
        mem.write(page, &v);
        mem.write(page + PAGE_SIZE - 8, &v);
    }
}

fn check_tags(mem: &SimMemory, addr: PhysAddr, order: u8, tag: u64) {
    for i in 0..1u64 << order {
        let page = addr + i * PAGE_SIZE;
        let (mut head, mut tail) = ([0; 8], [0; 8]);
        mem.read(page, &mut head);
        mem.read(page + PAGE_SIZE - 8, &mut tail);
        assert_eq!((u64::from_le_bytes(head), u64::from_le_bytes(tail)), (tag ^ i, tag ^ i), "content of {page:#x}");
    }
}

fn pick<T>(v: &[T], i: usize) -> Option<usize> {
    (!v.is_empty()).then(|| i % v.len())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_the_invariants(ops in prop::collection::vec(op(), 1..120)) {
        let ram = BASE..block(5);
        let free = BASE + 3 * PAGE_SIZE..block(2) - 5 * PAGE_SIZE;
        let la = LockedPageAllocator::new(PageAllocator::new(ram.clone(), &[free], Some(block(1))).unwrap());
        let mem = SimMemory::new(BASE, (ram.end - ram.start) as usize);
        let area = crate::mm::cma::CmaArea::activate("cma", &la, blocks(CMA_BLOCK, 1)).unwrap();
        let mut cma_taken = false;
        let initial_free = free_blocks(&la.lock());
        let initial_info = la.lock().pagetypeinfo();

        let mut unmovable: Vec<(PhysAddr, u8, u64)> = Vec::new();
        let mut movable: Vec<MovableModel> = Vec::new();
        let mut pins: Vec<PinGuard<'_>> = Vec::new();
        let mut lent = [false; 2];
        let mut next_tag = 1u64;

        for op in ops {
            match op {
                Op::AllocUnmovable { order, normal } => {
                    let zone = if normal { ZoneType::Normal } else { ZoneType::Dma };
                    if let Ok(addr) = la.lock().alloc_pages(order, zone, MigrateType::Unmovable) {
                        if !normal {
                            prop_assert!(addr < block(1), "ZONE_DMA allocation above the limit");
                        }
                        next_tag += 1;
                        write_tags(&mem, addr, order, next_tag);
                        unmovable.push((addr, order, next_tag));
                    }
                }
                Op::FillUnmovable { normal } => {
                    let zone = if normal { ZoneType::Normal } else { ZoneType::Dma };
                    while let Ok(addr) = la.lock().alloc_pages(0, zone, MigrateType::Unmovable) {
                        next_tag += 1;
                        write_tags(&mem, addr, 0, next_tag);
                        unmovable.push((addr, 0, next_tag));
                    }
                }
                Op::AllocMovable { order, normal, clean } => {
                    let zone = if normal { ZoneType::Normal } else { ZoneType::Dma };
                    let kind = if clean { OwnerKind::Clean } else { OwnerKind::Dirty };
                    next_tag += 1;
                    let owner = PageOwner { kind, cookie: next_tag };
                    let page = la.lock().alloc_movable(order, zone, owner);
                    if let Ok(page) = page {
                        let pin = la.pin(page).unwrap();
                        write_tags(&mem, pin.addr(), order, next_tag);
                        movable.push(MovableModel { page, order, tag: next_tag, kind });
                    }
                }
                Op::FreeUnmovable(i) => {
                    if let Some(i) = pick(&unmovable, i) {
                        let (addr, order, _) = unmovable.swap_remove(i);
                        la.lock().free_pages(addr, order).unwrap();
                        // Freeing it again is a double free.
                        prop_assert!(la.lock().free_pages(addr, order).is_err());
                    }
                }
                Op::FreeMovable(i) => {
                    if let Some(i) = pick(&movable, i) {
                        let page = movable[i].page;
                        let pinned = pins.iter().any(|p| p.page() == page);
                        let r = la.lock().free_movable(page);
                        if pinned {
                            prop_assert_eq!(r, Err(FreeError::Handle(HandleError::Pinned(page))));
                        } else {
                            prop_assert_eq!(r, Ok(()));
                            movable.swap_remove(i);
                            prop_assert_eq!(la.lock().free_movable(page), Err(FreeError::Handle(HandleError::Stale(page))));
                        }
                    }
                }
                Op::Write(i) => {
                    if let Some(i) = pick(&movable, i) {
                        next_tag += 1;
                        let m = &mut movable[i];
                        let pin = la.pin(m.page).unwrap();
                        write_tags(&mem, pin.addr(), m.order, next_tag);
                        m.tag = next_tag;
                        m.kind = OwnerKind::Dirty;
                        la.lock().set_owner_kind(m.page, OwnerKind::Dirty).unwrap();
                    }
                }
                Op::Pin(i) => {
                    if let Some(i) = pick(&movable, i) {
                        pins.push(la.pin(movable[i].page).unwrap());
                    }
                }
                Op::PinLongterm(i) => {
                    if let Some(i) = pick(&movable, i) {
                        let page = movable[i].page;
                        let pinned = pins.iter().any(|p| p.page() == page);
                        match la.pin_longterm(page, &mem) {
                            Ok(pin) => {
                                let mt = la.lock().pageblock_migratetype(pin.addr());
                                prop_assert!(matches!(mt, Some(MigrateType::Movable | MigrateType::Unmovable)), "long-term pin in {:?}", mt);
                                pins.push(pin);
                            }
                            Err(PinError::CannotMigrate(MigrateError::Pinned(p))) => prop_assert!(pinned && p == page),
                            Err(PinError::CannotMigrate(MigrateError::NoMemory(_))) => {}
                            Err(e) => prop_assert!(false, "unexpected {:?}", e),
                        }
                    }
                }
                Op::Unpin(i) => {
                    if let Some(i) = pick(&pins, i) {
                        pins.swap_remove(i);
                    }
                }
                Op::Migrate(i) => {
                    if let Some(i) = pick(&movable, i) {
                        let page = movable[i].page;
                        let before = la.lock().movable_info(page).unwrap().addr;
                        let pinned = pins.iter().any(|p| p.page() == page);
                        match la.migrate_page(page, &mem) {
                            Ok(()) => {
                                prop_assert!(!pinned, "a pinned page moved");
                                let after = la.lock().movable_info(page).unwrap().addr;
                                prop_assert_ne!(after, before);
                                let mt = la.lock().pageblock_migratetype(after);
                                prop_assert!(matches!(mt, Some(MigrateType::Movable | MigrateType::Unmovable)), "migrated into {:?}", mt);
                            }
                            Err(MigrateError::Pinned(_)) => prop_assert!(pinned),
                            Err(MigrateError::NoMemory(_)) => prop_assert!(!pinned),
                            Err(e) => prop_assert!(false, "unexpected {:?}", e),
                        }
                    }
                }
                Op::Lend(pool) => {
                    let r = la.lock().lend_swiotlb_pageblocks(blocks(POOL_BLOCKS[pool], 1));
                    prop_assert_eq!(r.is_ok(), !lent[pool]);
                    lent[pool] = true;
                }
                Op::Reclaim { pool, drop_clean } => {
                    let range = blocks(POOL_BLOCKS[pool], 1);
                    let pinned_inside: Vec<MovablePage> = pins
                        .iter()
                        .filter(|p| range.contains(&p.addr()))
                        .map(|p| p.page())
                        .collect();
                    let mut dropped = Vec::new();
                    let r = la.reclaim_swiotlb_pageblocks(range.clone(), &mem, ReclaimMode { drop_clean }, &mut |d| dropped.push(d));
                    for d in &dropped {
                        let i = movable.iter().position(|m| m.page == d.page).expect("dropped an unknown page");
                        prop_assert!(drop_clean && movable[i].kind == OwnerKind::Clean, "dropped a dirty page");
                        prop_assert_eq!(d.cookie, movable[i].tag, "owner told with its cookie");
                        movable.swap_remove(i);
                    }
                    match r {
                        Ok(report) => {
                            prop_assert!(lent[pool] && pinned_inside.is_empty());
                            prop_assert!(report.pinned.is_empty());
                            lent[pool] = false;
                            prop_assert_eq!(la.lock().pageblock_migratetype(range.start), None);
                        }
                        Err(ReclaimError::Range(_)) => prop_assert!(!lent[pool]),
                        Err(ReclaimError::Busy(report)) => {
                            for p in &pinned_inside {
                                prop_assert!(report.pinned.contains(p), "pinned page {:?} not reported", p);
                            }
                            prop_assert!(!report.pinned.is_empty() || !report.failed.is_empty());
                            prop_assert_eq!(la.lock().pageblock_migratetype(range.start), Some(MigrateType::Swiotlb));
                        }
                    }
                }
                Op::CmaAlloc { drop_clean } => {
                    let range = blocks(CMA_BLOCK, 1);
                    let pinned_inside = pins.iter().any(|p| range.contains(&p.addr()));
                    let mut dropped = Vec::new();
                    let r = area.cma_alloc(&la, &mem, 1, ReclaimMode { drop_clean }, &mut |d| dropped.push(d));
                    for d in &dropped {
                        let i = movable.iter().position(|m| m.page == d.page).expect("dropped an unknown page");
                        prop_assert!(drop_clean && movable[i].kind == OwnerKind::Clean, "dropped a dirty page");
                        movable.swap_remove(i);
                    }
                    match r {
                        Ok((addr, _)) => {
                            prop_assert!(!cma_taken && !pinned_inside);
                            prop_assert_eq!(addr, range.start);
                            prop_assert_eq!(la.lock().pageblock_migratetype(addr), None);
                            cma_taken = true;
                        }
                        Err(crate::mm::cma::CmaError::NoSpace { .. }) => prop_assert!(cma_taken),
                        Err(crate::mm::cma::CmaError::Busy { last, .. }) => {
                            prop_assert!(!last.pinned.is_empty() || !last.failed.is_empty(), "busy without a reason");
                            prop_assert_eq!(la.lock().pageblock_migratetype(range.start), Some(MigrateType::Cma));
                        }
                        Err(e) => prop_assert!(false, "unexpected {:?}", e),
                    }
                }
                Op::CmaRelease => {
                    prop_assert_eq!(area.cma_release(&la, block(CMA_BLOCK), 1).is_ok(), cma_taken);
                    cma_taken = false;
                }
                Op::BadFree(i) => {
                    let before = la.lock().pagetypeinfo();
                    if let Some(i) = pick(&unmovable, i) {
                        let (addr, order, _) = unmovable[i];
                        prop_assert!(la.lock().free_pages(addr, order + 1).is_err(), "wrong order accepted");
                        if order > 0 {
                            prop_assert!(la.lock().free_pages(addr + PAGE_SIZE, 0).is_err(), "tail page accepted");
                        }
                    }
                    if let Some(i) = pick(&movable, i) {
                        let addr = la.lock().movable_info(movable[i].page).unwrap().addr;
                        prop_assert_eq!(la.lock().free_pages(addr, movable[i].order), Err(FreeError::IsMovable(addr)));
                    }
                    prop_assert_eq!(la.lock().pagetypeinfo(), before);
                }
            }

            // After every step.
            let a = la.lock();
            check_invariants(&a);
            let mut taken: Vec<(PhysAddr, u64)> = unmovable.iter().map(|(addr, order, _)| (*addr, PAGE_SIZE << order)).collect();
            for m in &movable {
                let info = a.movable_info(m.page).unwrap();
                prop_assert_eq!(info.order, m.order);
                taken.push((info.addr, PAGE_SIZE << m.order));
                check_tags(&mem, info.addr, m.order, m.tag);
            }
            for (addr, order, tag) in &unmovable {
                check_tags(&mem, *addr, *order, *tag);
                let mt = a.pageblock_migratetype(*addr);
                prop_assert!(matches!(mt, Some(MigrateType::Unmovable | MigrateType::Movable)), "unmovable page in {:?}", mt);
            }
            taken.sort();
            for w in taken.windows(2) {
                prop_assert!(w[0].0 + w[0].1 <= w[1].0, "{:#x} handed out twice", w[1].0);
            }
            let used: u64 = taken.iter().map(|t| t.1 / PAGE_SIZE).sum();
            let managed = a.managed_pages(ZoneType::Dma) + a.managed_pages(ZoneType::Normal);
            let free = a.nr_free_pages(ZoneType::Dma) + a.nr_free_pages(ZoneType::Normal);
            prop_assert_eq!(used as usize + free, managed, "every page free or owned exactly once");
        }

        // Free everything, take back what was lent: the free lists are as at the start.
        pins.clear();
        for (addr, order, _) in unmovable {
            la.lock().free_pages(addr, order).unwrap();
        }
        for m in movable {
            la.lock().free_movable(m.page).unwrap();
        }
        if cma_taken {
            area.cma_release(&la, block(CMA_BLOCK), 1).unwrap();
        }
        for pool in 0..2 {
            if lent[pool] {
                la.reclaim_swiotlb_pageblocks(blocks(POOL_BLOCKS[pool], 1), &mem, ReclaimMode { drop_clean: false }, &mut |_| {}).unwrap();
            }
        }
        let a = la.lock();
        check_invariants(&a);
        prop_assert_eq!(free_blocks(&a), initial_free);
        let info = a.pagetypeinfo();
        for z in 0..2 {
            prop_assert_eq!(info.free_pages[z].iter().sum::<usize>(), initial_info.free_pages[z].iter().sum::<usize>());
        }
    }
}
