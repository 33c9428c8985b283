use super::*;

#[test]
fn masks_irqs_while_held_and_restores_nested() {
    let a = IrqSafeSpinLock::new(1);
    let b = IrqSafeSpinLock::new(2);
    assert!(!arch::host::irqs_masked());
    {
        let ga = a.lock();
        assert!(arch::host::irqs_masked());
        {
            let gb = b.lock();
            assert_eq!(*ga + *gb, 3);
        }
        assert!(arch::host::irqs_masked(), "inner unlock must not unmask while outer is held");
    }
    assert!(!arch::host::irqs_masked());
}

#[test]
fn try_lock_fails_when_held() {
    let a = IrqSafeSpinLock::new(0);
    let _g = a.lock();
    assert!(a.try_lock().is_none());
}

#[test]
fn excludes_across_threads() {
    let lock = std::sync::Arc::new(IrqSafeSpinLock::new(0u64));
    let threads: std::vec::Vec<_> = (0..4)
        .map(|_| {
            let l = lock.clone();
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    *l.lock() += 1;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*lock.lock(), 40_000);
}

/// A `lock` that finds the lock held waits (out of line) and counts it in `contended`; one that
/// finds it free does not.
#[test]
fn a_wait_for_the_lock_is_counted() {
    let lock = std::sync::Arc::new(IrqSafeSpinLock::new(0u32));
    *lock.lock() += 1;
    assert_eq!(lock.contended(), 0, "a free lock: no wait");
    // The other thread must reach `lock` while this one holds it: held longer on each try.
    for attempt in 1..=20u64 {
        let guard = lock.lock();
        let other = lock.clone();
        let t = std::thread::spawn(move || *other.lock() += 1);
        std::thread::sleep(std::time::Duration::from_millis(5 * attempt));
        drop(guard);
        t.join().unwrap();
        if lock.contended() > 0 {
            assert_eq!(*lock.lock(), 1 + attempt as u32, "every waiter got the lock once");
            return;
        }
    }
    panic!("no wait counted in 20 tries");
}
