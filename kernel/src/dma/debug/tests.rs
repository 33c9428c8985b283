use super::*;
use DmaDirection::*;

fn tracker() -> Box<DmaDebug> {
    Box::new(DmaDebug::new())
}

#[test]
fn correct_use_reports_nothing() {
    let d = tracker();
    d.map(1, 0x1000, 512, FromDevice).unwrap();
    d.mapping_error_checked(1, 0x1000);
    d.sync(1, 0x1100, 256, FromDevice).unwrap();
    d.unmap(1, 0x1000, 512, FromDevice).unwrap();
    assert_eq!(d.live(), 0);
    assert_eq!(d.errors(), (0, None));
    d.device_removed(1).unwrap();
}

#[test]
fn each_misuse_is_reported() {
    let d = tracker();
    assert_eq!(d.unmap(1, 0x5000, 8, ToDevice), Err(DmaDebugError::UnmapUnknown { dev: 1, addr: 0x5000 }));

    d.map(1, 0x1000, 512, ToDevice).unwrap();
    d.mapping_error_checked(1, 0x1000);
    assert_eq!(d.unmap(1, 0x1000, 256, ToDevice), Err(DmaDebugError::UnmapWrongSize { dev: 1, addr: 0x1000, mapped: 512, unmapped: 256 }));
    assert_eq!(d.unmap(1, 0x1000, 512, ToDevice), Ok(()), "the refused unmap kept the entry");
    assert_eq!(d.unmap(1, 0x1000, 512, ToDevice), Err(DmaDebugError::DoubleUnmap { dev: 1, addr: 0x1000 }));

    d.map(1, 0x2000, 64, ToDevice).unwrap();
    d.mapping_error_checked(1, 0x2000);
    assert!(matches!(d.unmap(1, 0x2000, 64, FromDevice), Err(DmaDebugError::UnmapWrongDirection { .. })));

    d.map(1, 0x3000, 64, ToDevice).unwrap();
    assert_eq!(d.unmap(1, 0x3000, 64, ToDevice), Err(DmaDebugError::MapErrorNotChecked { dev: 1, addr: 0x3000 }));

    d.map(2, 0x4000, 100, ToDevice).unwrap();
    assert!(matches!(d.sync(2, 0x4050, 100, ToDevice), Err(DmaDebugError::SyncOutOfRange { .. })));
    assert!(matches!(d.sync(2, 0x4000, 10, FromDevice), Err(DmaDebugError::SyncWrongDirection { .. })));
    assert!(matches!(d.sync(2, 0x9000, 10, ToDevice), Err(DmaDebugError::SyncUnknown { .. })));
    assert!(matches!(d.sync(1, 0x4000, 10, ToDevice), Err(DmaDebugError::SyncUnknown { .. })), "another device's mapping");
    assert_eq!(d.device_removed(2), Err(DmaDebugError::LeakedAtRemove { dev: 2, count: 1 }));
    assert_eq!(d.errors().0, 10);
}

#[test]
fn table_full_is_an_error_not_a_panic_and_works_in_irq_context() {
    let d = tracker();
    let _irq = crate::arch::host::IrqContextGuard::enter();
    for i in 0..MAX_ENTRIES as u64 {
        d.map(7, 0x10_0000 + i * 2048, 2048, Bidirectional).unwrap();
    }
    assert_eq!(d.map(7, 0x1, 1, ToDevice), Err(DmaDebugError::TableFull));
    // From then on nothing is checked (Linux disables dma-debug): the untracked mapping's
    // unmap is no misuse.
    assert_eq!(d.unmap(7, 0x1, 1, ToDevice), Ok(()));
    for i in 0..MAX_ENTRIES as u64 {
        d.mapping_error_checked(7, 0x10_0000 + i * 2048);
        d.unmap(7, 0x10_0000 + i * 2048, 2048, Bidirectional).unwrap();
    }
    assert_eq!(d.live(), 0);
}
