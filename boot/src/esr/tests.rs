extern crate std;
use super::*;
use std::string::ToString;

#[test]
fn decodes_a_data_abort_translation_fault_on_read() {
    // EC 0x25, IL, DFSC 0b000110 (translation fault, level 2).
    let esr = Esr((0x25 << 26) | (1 << 25) | 0b00_0110);
    assert_eq!(esr.class(), 0x25);
    assert!(esr.is_abort());
    assert_eq!(esr.to_string(), "ESR 0x96000006: EC 0x25 (data abort at the current EL), translation fault, level 2, read");
}

#[test]
fn decodes_a_permission_fault_on_write_and_brk() {
    let esr = Esr((0x25 << 26) | (1 << 6) | 0b00_1111);
    assert_eq!(esr.fault_status_name(), "permission fault, level 3");
    assert!(esr.is_write());
    let brk = Esr(0x3c << 26);
    assert_eq!(brk.class_name(), "BRK instruction");
    assert!(!brk.is_abort());
}
