use super::*;

#[test]
fn matches_zlib() {
    // python3 -c 'import zlib; print(hex(zlib.crc32(b"123456789")))' -> 0xcbf43926
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
    let mut c = Crc32::new();
    c.update(b"1234");
    c.update(b"56789");
    assert_eq!(c.finish(), 0xCBF4_3926);
    assert_eq!(crc32(&[0u8; 4096]), 0xC71C_0011);
}
