//! The §3.1.1 initialisation sequence against a fake device state machine.

extern crate std;

use super::sim::{FakeTransport, SimDma};
use crate::virtio::queue::{RingFeatures, Virtqueue};
use crate::virtio::status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK};
use crate::virtio::transport::{read_config, DeviceInit, Transport};
use crate::virtio::{feature, BrokenReason, DeviceType, Error};

const BLOCK: DeviceType = DeviceType::BLOCK;
const A: u64 = 1 << 1;
const B: u64 = 1 << 5;

#[test]
fn sequence_follows_the_spec_steps() {
    let dev = FakeTransport::new(BLOCK, feature::VERSION_1 | A | B);
    let dma = SimDma::default();
    let mut init = DeviceInit::begin(&dev, BLOCK, A, 0).unwrap();
    assert_eq!(init.features(), feature::VERSION_1 | A);
    assert_eq!(dev.driver_features.get(), feature::VERSION_1 | A);
    let queue = Virtqueue::<16>::allocate(&dma, 16, RingFeatures::default()).unwrap();
    init.setup_queue(0, &queue).unwrap();
    assert_eq!(init.driver_ok(), feature::VERSION_1 | A);

    let steps = [0, ACKNOWLEDGE, ACKNOWLEDGE | DRIVER, ACKNOWLEDGE | DRIVER | FEATURES_OK, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK];
    assert_eq!(*dev.status_log.borrow(), steps);
    let (desc, driver, device) = queue.ring_dma_addresses();
    assert_eq!(dev.activated.get(), Some((0, 16, desc, driver, device)));
}

#[test]
fn missing_version_1_is_refused_with_failed() {
    let dev = FakeTransport::new(BLOCK, A | B);
    let result = DeviceInit::begin(&dev, BLOCK, A, 0).map(|_| ());
    assert_eq!(result, Err(Error::MissingFeatures(feature::VERSION_1)));
    assert!(dev.failed());
    assert_eq!(dev.status_log.borrow()[..3], [0, ACKNOWLEDGE, ACKNOWLEDGE | DRIVER]);
}

#[test]
fn features_ok_not_accepted_sets_failed() {
    let mut dev = FakeTransport::new(BLOCK, feature::VERSION_1 | A | B);
    dev.acceptable_features = feature::VERSION_1 | B; // the device refuses A once offered
    let result = DeviceInit::begin(&dev, BLOCK, A, 0).map(|_| ());
    assert_eq!(result, Err(Error::FeaturesNotAccepted));
    assert!(dev.failed());
    assert_eq!(dev.status.get() & FEATURES_OK, 0);
}

#[test]
fn access_platform_is_accepted_when_offered() {
    let dev = FakeTransport::new(BLOCK, feature::VERSION_1 | feature::ACCESS_PLATFORM | B);
    let init = DeviceInit::begin(&dev, BLOCK, A, 0).unwrap();
    assert_eq!(init.features(), feature::VERSION_1 | feature::ACCESS_PLATFORM);
    init.driver_ok();
    assert!(!dev.failed());
}

#[test]
fn required_access_platform_missing_is_refused() {
    let dev = FakeTransport::new(BLOCK, feature::VERSION_1);
    let result = DeviceInit::begin(&dev, BLOCK, 0, feature::ACCESS_PLATFORM).map(|_| ());
    assert_eq!(result, Err(Error::MissingFeatures(feature::ACCESS_PLATFORM)));
    assert!(dev.failed());
}

#[test]
fn wrong_device_type_is_left_alone() {
    let dev = FakeTransport::new(DeviceType::NET, feature::VERSION_1);
    let result = DeviceInit::begin(&dev, BLOCK, 0, 0).map(|_| ());
    let expected = Error::WrongDeviceType { expected: BLOCK, found: DeviceType::NET };
    assert_eq!(result, Err(expected));
    assert!(dev.status_log.borrow().is_empty());
}

#[test]
fn reset_never_completing_is_refused() {
    let mut dev = FakeTransport::new(BLOCK, feature::VERSION_1);
    dev.status.set(ACKNOWLEDGE | DRIVER);
    dev.ignores_reset = true;
    let result = DeviceInit::begin(&dev, BLOCK, 0, 0).map(|_| ());
    assert_eq!(result, Err(Error::DeviceBroken(BrokenReason::ResetIgnored)));
    assert!(dev.failed());
}

#[test]
fn queue_errors_set_failed() {
    let dma = SimDma::default();
    let queue = Virtqueue::<16>::allocate(&dma, 16, RingFeatures::default()).unwrap();
    for (max, ready, expected) in
        [(0, false, Error::QueueUnavailable(0)), (8, false, Error::QueueTooSmall { queue: 0, max: 8 }), (16, true, Error::QueueInUse(0))]
    {
        let mut dev = FakeTransport::new(BLOCK, feature::VERSION_1);
        dev.queue_max = max;
        let mut init = DeviceInit::begin(&dev, BLOCK, 0, 0).unwrap();
        dev.queue_ready.set(ready);
        assert_eq!(init.setup_queue(0, &queue), Err(expected));
        assert!(dev.failed(), "{expected:?}");
        assert_eq!(dev.activated.get(), None);
    }
}

#[test]
fn abandoning_init_sets_failed() {
    let dev = FakeTransport::new(BLOCK, feature::VERSION_1);
    let init = DeviceInit::begin(&dev, BLOCK, 0, 0).unwrap();
    assert!(!dev.failed());
    init.fail();
    assert!(dev.failed());
    assert_eq!(dev.status.get() & DRIVER_OK, 0);
}

#[test]
fn config_read_retries_until_generation_is_stable() {
    let dev = FakeTransport::new(BLOCK, feature::VERSION_1);
    dev.set_config_u64(0, 0x0000_0001_ffff_ffff);
    dev.config_changes.set(1); // changes once, between the two halves of the first read
    let value = read_config(&dev, |t| t.read_config_u64(0)).unwrap();
    // The first try read the old low half and the new high half (0x0101_0102_ffff_ffff); the
    // generation moved, so it was discarded and the new value read whole.
    assert_eq!(value, 0x0101_0102_0000_0000);
    assert_eq!(dev.generation_reads.get(), 4);
}

#[test]
fn config_changing_forever_is_broken() {
    let dev = FakeTransport::new(BLOCK, feature::VERSION_1);
    dev.config_changes.set(u32::MAX);
    let result = read_config(&dev, |t| t.read_config_u32(0));
    assert_eq!(result, Err(Error::DeviceBroken(BrokenReason::ConfigUnstable)));
}

#[test]
fn config_reads_outside_the_space_fail() {
    let dev = FakeTransport::new(BLOCK, feature::VERSION_1);
    assert_eq!(dev.read_config_u32(62), Err(Error::ConfigOutOfRange { offset: 62 }));
}
