//! The virtio-mmio register block over plain memory: probing, and the register layout the
//! init sequence writes (a plain memory "device" reads back what was written).

extern crate std;

use super::sim::{read_bytes, write_bytes, SimDma};
use crate::virtio::mmio::{VirtioMmio, MAGIC_VALUE};
use crate::virtio::queue::{RingFeatures, Virtqueue};
use crate::virtio::status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK};
use crate::virtio::transport::{DeviceInit, Transport};
use crate::virtio::{feature, DeviceType, Error};

const REGION: usize = 0x200;

fn region(dma: &SimDma, magic: u32, version: u32, device_id: u32) -> u64 {
    let base = dma.alloc(REGION, 4096).as_ptr() as u64;
    set(base, 0x000, magic);
    set(base, 0x004, version);
    set(base, 0x008, device_id);
    base
}

fn set(base: u64, offset: u64, value: u32) {
    write_bytes(base + offset, &value.to_le_bytes());
}

fn get(base: u64, offset: u64) -> u32 {
    u32::from_le_bytes(read_bytes(base + offset, 4).try_into().unwrap())
}

fn probe(base: u64, size: usize) -> Result<VirtioMmio, Error> {
    // SAFETY: `base` is a leaked `SimDma` allocation of `REGION` bytes, used by this test only.
    unsafe { VirtioMmio::new(base as usize, size) }
}

#[test]
fn legacy_device_is_refused() {
    let dma = SimDma::default();
    let base = region(&dma, MAGIC_VALUE, 1, 2);
    assert_eq!(probe(base, REGION).err(), Some(Error::LegacyDevice));
}

#[test]
fn probe_checks_magic_version_and_presence() {
    let dma = SimDma::default();
    let bad_magic = region(&dma, 0x1234_5678, 2, 2);
    assert_eq!(probe(bad_magic, REGION).err(), Some(Error::BadMagic(0x1234_5678)));
    let future = region(&dma, MAGIC_VALUE, 3, 2);
    assert_eq!(probe(future, REGION).err(), Some(Error::UnknownVersion(3)));
    let empty_slot = region(&dma, MAGIC_VALUE, 2, 0);
    assert_eq!(probe(empty_slot, REGION).err(), Some(Error::NoDevice));
    let modern = region(&dma, MAGIC_VALUE, 2, 2);
    assert!(probe(modern, 0x80).is_err(), "a region too small for the registers");
    assert_eq!(probe(modern, REGION).unwrap().device_type(), DeviceType::BLOCK);
    dma.check_guards();
}

#[test]
fn init_writes_the_registers_of_the_spec_layout() {
    let dma = SimDma::default();
    let base = region(&dma, MAGIC_VALUE, 2, 2);
    set(base, 0x010, 1); // DeviceFeatures: bit 0 in both halves, so bits 0 and 32 (VERSION_1)
    set(base, 0x034, 16); // QueueNumMax
    let mmio = probe(base, REGION).unwrap();

    let mut init = DeviceInit::begin(&mmio, DeviceType::BLOCK, 1, 0).unwrap();
    assert_eq!(init.features(), feature::VERSION_1 | 1);
    assert_eq!(get(base, 0x070), ACKNOWLEDGE | DRIVER | FEATURES_OK);
    assert_eq!((get(base, 0x024), get(base, 0x020)), (1, 1)); // high half written last

    let queue = Virtqueue::<16>::allocate(&dma, 16, RingFeatures::default()).unwrap();
    init.setup_queue(0, &queue).unwrap();
    init.driver_ok();
    let (desc, driver, device) = queue.ring_dma_addresses();
    let address = |low| u64::from(get(base, low)) | u64::from(get(base, low + 4)) << 32;
    assert_eq!((get(base, 0x030), get(base, 0x038), get(base, 0x044)), (0, 16, 1));
    assert_eq!((address(0x080), address(0x090), address(0x0a0)), (desc, driver, device));
    assert_eq!(get(base, 0x070), ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);

    mmio.notify(0);
    assert_eq!(get(base, 0x050), 0);
    set(base, 0x060, 3);
    let pending = mmio.ack_interrupt();
    assert!(pending.used_buffer() && pending.config_changed());
    assert_eq!(get(base, 0x064), 3);
    dma.check_guards();
}

#[test]
fn config_space_reads_are_bounded_and_aligned() {
    let dma = SimDma::default();
    let base = region(&dma, MAGIC_VALUE, 2, 2);
    write_bytes(base + 0x100, &0x1122_3344_5566_7788u64.to_le_bytes());
    let mmio = probe(base, REGION).unwrap();
    assert_eq!(mmio.read_config_u64(0), Ok(0x1122_3344_5566_7788));
    assert_eq!(mmio.read_config_u16(2), Ok(0x5566));
    assert_eq!(mmio.read_config_u8(7), Ok(0x11));
    assert_eq!(mmio.read_config_u32(2), Err(Error::ConfigOutOfRange { offset: 2 }));
    assert_eq!(mmio.read_config_u32(0xfc), Ok(0));
    assert_eq!(mmio.read_config_u32(0x100), Err(Error::ConfigOutOfRange { offset: 0x100 }));
    assert_eq!(mmio.read_config_u8(usize::MAX), Err(Error::ConfigOutOfRange { offset: usize::MAX }));
    dma.check_guards();
}
