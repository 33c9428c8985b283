//! The virtqueue and the virtio-blk driver against a device that follows the fuzzer's script
//! (`drivers/src/virtio/tests/hostile.rs`, shared with the host tests): out-of-range or repeated
//! used ids, lengths past the buffers, used idx backwards or far ahead, config changing under
//! the driver, status never written. Guard bytes around every ring and buffer are checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = dmabounce_fuzz::hostile::run(data);
});
