use super::*;

#[test]
fn blocks_are_disjoint_aligned_and_merge_back() {
    let pool = CoherentPool::new(0x4000_0000, 16 * 1024);
    let a = pool.alloc(16, 1).unwrap(); // a request header: one unit
    let b = pool.alloc(1, 1).unwrap(); // a status byte: its own cache line
    let c = pool.alloc(3000, 4096).unwrap(); // a ring: page aligned
    assert_ne!(a, b);
    assert!(c.is_multiple_of(4096) && pool.range().contains(&c));
    assert!(b + 64 <= c || b >= c + 4096, "blocks overlap");
    assert_eq!(pool.free_bytes(), 16 * 1024 - 64 - 64 - 4096);
    pool.free(c, 3000, 4096).unwrap();
    pool.free(b, 1, 1).unwrap();
    pool.free(a, 16, 1).unwrap();
    assert_eq!(pool.free_bytes(), 16 * 1024);
    // Everything merged back: the whole pool is one block again.
    let all = pool.alloc(16 * 1024, 1).unwrap();
    assert_eq!(all, 0x4000_0000);
}

#[test]
fn exhaustion_and_bad_frees_are_errors() {
    let pool = CoherentPool::new(0x4000_0000, 1024);
    let blocks: Vec<_> = (0..16).map(|_| pool.alloc(64, 1).unwrap()).collect();
    assert_eq!(pool.alloc(1, 1), Err(CoherentPoolError::Full { size: 1, free: 0 }));
    assert_eq!(pool.alloc(0, 1), Err(CoherentPoolError::ZeroSize));
    assert_eq!(pool.free(0x3fff_ffc0, 64, 1), Err(CoherentPoolError::BadFree { addr: 0x3fff_ffc0 }));
    assert_eq!(pool.free(0x4000_0020, 64, 1), Err(CoherentPoolError::BadFree { addr: 0x4000_0020 }));
    for b in blocks {
        pool.free(b, 64, 1).unwrap();
    }
    assert_eq!(pool.free(0x4000_0000, 64, 1), Err(CoherentPoolError::BadFree { addr: 0x4000_0000 }), "double free of an empty pool");
}

#[test]
#[should_panic(expected = "task-context")]
fn allocating_in_irq_context_is_caught() {
    let pool = CoherentPool::new(0x4000_0000, 1024);
    let _irq = crate::arch::host::IrqContextGuard::enter();
    let _ = pool.alloc(64, 1);
}
