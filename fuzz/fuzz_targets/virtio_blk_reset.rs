//! The virtio-blk driver against the hostile device of `virtio_blk`, with resets in the script:
//! the driver gives up on the device with requests in flight (`VirtioBlk::abort`), initialises
//! it again (`VirtioBlk::reinit`, `Virtqueue::reset`), and the device may ignore resets for a
//! while (`drivers/src/virtio/tests/hostile.rs`, `run_with_resets`). Checked besides the
//! `virtio_blk` target's rules: every request ends once (completed or taken back), nothing is
//! taken back or newly accepted while the device ignores its reset, a descriptor is never
//! published twice while in flight, a successful reinit leaves a fresh queue.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = dmabounce_fuzz::hostile::run_with_resets(data);
});
