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
