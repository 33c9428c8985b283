//! The transport seam and the device initialisation sequence of virtio 1.2 §3.1.1.
//!
//! [`Transport`] is the register-level interface a transport offers (virtio-mmio here; virtio-pci
//! would be another). The sequence itself is transport-independent, so it lives here and is
//! host-tested against a fake device; [`super::mmio::VirtioMmio`] is the real implementation.

use super::queue::Virtqueue;
use super::{feature, status, BrokenReason, DeviceType, Error, Result};

/// How often a config read is retried while the generation counter moves (§2.5.1, §4.2.3.1).
/// A device that changes its config this often is hostile; bounded so an interrupt handler
/// never spins forever.
pub const CONFIG_READ_RETRIES: usize = 8;

/// How many status reads to wait for a reset to complete (§4.2.3.1: "wait for a read of Status
/// to return 0"). QEMU resets synchronously; a device that never does is broken.
pub const RESET_POLLS: usize = 1000;

/// InterruptStatus bits (§4.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptStatus(pub u32);

impl InterruptStatus {
    /// The device used a buffer in at least one queue.
    pub const USED_BUFFER: u32 = 1 << 0;
    /// The device configuration changed.
    pub const CONFIG_CHANGE: u32 = 1 << 1;

    /// True if a used-buffer notification is pending.
    pub fn used_buffer(self) -> bool {
        self.0 & Self::USED_BUFFER != 0
    }

    /// True if a configuration-change notification is pending.
    pub fn config_changed(self) -> bool {
        self.0 & Self::CONFIG_CHANGE != 0
    }
}

/// What a virtio transport offers the driver: registers, not policy.
///
/// Config reads take the width of the field (§4.2.2.2: 8-bit fields with 8-bit accesses, 16 with
/// 16, 32 and 64 with 32); use [`read_config`] to get a consistent snapshot.
pub trait Transport {
    /// The device type (device ID).
    fn device_type(&self) -> DeviceType;
    /// All 64 device feature bits.
    fn device_features(&self) -> u64;
    /// Writes all 64 driver (accepted) feature bits.
    fn set_driver_features(&self, features: u64);
    /// The device status register.
    fn status(&self) -> u32;
    /// Writes the device status register (0 resets the device).
    fn set_status(&self, status: u32);
    /// The largest size queue `queue` supports; 0 if the queue does not exist.
    fn max_queue_size(&self, queue: u16) -> u16;
    /// True if queue `queue` is live (QueueReady).
    fn queue_ready(&self, queue: u16) -> bool;
    /// Gives queue `queue` its size and ring addresses and marks it ready (§4.2.3.2).
    fn activate_queue(&self, queue: u16, size: u16, desc: u64, driver: u64, device: u64);
    /// Tells the device that queue `queue` has new available buffers.
    fn notify(&self, queue: u16);
    /// Reads and acknowledges the pending interrupt causes.
    fn ack_interrupt(&self) -> InterruptStatus;
    /// The config generation counter.
    fn config_generation(&self) -> u32;
    /// Reads an 8-bit field of the device-specific config space.
    fn read_config_u8(&self, offset: usize) -> Result<u8>;
    /// Reads a 16-bit field (aligned) of the device-specific config space.
    fn read_config_u16(&self, offset: usize) -> Result<u16>;
    /// Reads a 32-bit field (aligned) of the device-specific config space.
    fn read_config_u32(&self, offset: usize) -> Result<u32>;

    /// Reads a 64-bit field as two 32-bit halves, low first; only consistent inside
    /// [`read_config`].
    fn read_config_u64(&self, offset: usize) -> Result<u64> {
        let low = self.read_config_u32(offset)?;
        let high = self.read_config_u32(offset + 4)?;
        Ok(u64::from(low) | u64::from(high) << 32)
    }
}

/// A shared reference drives the same device (lets a caller keep its transport, e.g. to look at
/// it after a failed initialisation).
impl<T: Transport + ?Sized> Transport for &T {
    fn device_type(&self) -> DeviceType {
        (**self).device_type()
    }
    fn device_features(&self) -> u64 {
        (**self).device_features()
    }
    fn set_driver_features(&self, features: u64) {
        (**self).set_driver_features(features)
    }
    fn status(&self) -> u32 {
        (**self).status()
    }
    fn set_status(&self, status: u32) {
        (**self).set_status(status)
    }
    fn max_queue_size(&self, queue: u16) -> u16 {
        (**self).max_queue_size(queue)
    }
    fn queue_ready(&self, queue: u16) -> bool {
        (**self).queue_ready(queue)
    }
    fn activate_queue(&self, queue: u16, size: u16, desc: u64, driver: u64, device: u64) {
        (**self).activate_queue(queue, size, desc, driver, device)
    }
    fn notify(&self, queue: u16) {
        (**self).notify(queue)
    }
    fn ack_interrupt(&self) -> InterruptStatus {
        (**self).ack_interrupt()
    }
    fn config_generation(&self) -> u32 {
        (**self).config_generation()
    }
    fn read_config_u8(&self, offset: usize) -> Result<u8> {
        (**self).read_config_u8(offset)
    }
    fn read_config_u16(&self, offset: usize) -> Result<u16> {
        (**self).read_config_u16(offset)
    }
    fn read_config_u32(&self, offset: usize) -> Result<u32> {
        (**self).read_config_u32(offset)
    }
}

/// Runs `read` until the config generation is the same before and after it (§2.5.1), so that
/// multi-field and 64-bit reads see one version of the config space.
pub fn read_config<T, R>(transport: &T, mut read: impl FnMut(&T) -> Result<R>) -> Result<R>
where
    T: Transport + ?Sized,
{
    for _ in 0..CONFIG_READ_RETRIES {
        let before = transport.config_generation();
        let value = read(transport)?;
        if transport.config_generation() == before {
            return Ok(value);
        }
    }
    Err(Error::DeviceBroken(BrokenReason::ConfigUnstable))
}

/// A device between reset and DRIVER_OK: steps 1–6 of §3.1.1 are done by [`DeviceInit::begin`],
/// step 7 (queues, config) by the device driver through this value, step 8 by
/// [`DeviceInit::driver_ok`]. Dropping it before `driver_ok` (an error path) sets FAILED, as
/// does every error returned from its methods.
pub struct DeviceInit<'a, T: Transport + ?Sized> {
    transport: &'a T,
    features: u64,
    finished: bool,
}

impl<'a, T: Transport + ?Sized> DeviceInit<'a, T> {
    /// Resets the device and negotiates features.
    ///
    /// The accepted features are `device & (supported | ACCESS_PLATFORM)`: ACCESS_PLATFORM is
    /// always accepted when offered, because this driver only ever hands the device DMA
    /// addresses. `required | VERSION_1` must all be offered, or the device is refused (a
    /// confidential VM passes ACCESS_PLATFORM in `required`, like Linux's
    /// `virtio_features_ok` under restricted memory access).
    pub fn begin(transport: &'a T, expected: DeviceType, supported: u64, required: u64) -> Result<Self> {
        // Not our device: leave it alone, without touching its status.
        let found = transport.device_type();
        if found != expected {
            return Err(Error::WrongDeviceType { expected, found });
        }
        // From here on, dropping `init` on an error path sets FAILED.
        let mut init = Self { transport, features: 0, finished: false };

        // 1. Reset the device, and wait for the reset to complete (§4.2.3.1).
        transport.set_status(0);
        if !(0..RESET_POLLS).any(|_| transport.status() == 0) {
            return Err(Error::DeviceBroken(BrokenReason::ResetIgnored));
        }
        // 2. ACKNOWLEDGE: we noticed the device.
        init.add_status(status::ACKNOWLEDGE);
        // 3. DRIVER: we know how to drive it.
        init.add_status(status::DRIVER);

        // 4. Read the device features and write the subset we understand.
        let offered = transport.device_features();
        let required = required | feature::VERSION_1;
        let missing = required & !offered;
        if missing != 0 {
            return Err(Error::MissingFeatures(missing));
        }
        let accepted = offered & (supported | required | feature::ACCESS_PLATFORM);
        transport.set_driver_features(accepted);

        // 5. FEATURES_OK: no new feature bits after this.
        init.add_status(status::FEATURES_OK);
        // 6. Re-read the status: the device clears FEATURES_OK if it refuses our subset.
        if transport.status() & status::FEATURES_OK == 0 {
            return Err(Error::FeaturesNotAccepted);
        }
        init.features = accepted;
        Ok(init)
    }

    /// The negotiated features.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The transport, for device-specific config reads during step 7.
    pub fn transport(&self) -> &'a T {
        self.transport
    }

    /// The largest size of queue `queue`; 0 if it does not exist.
    pub fn max_queue_size(&self, queue: u16) -> u16 {
        self.transport.max_queue_size(queue)
    }

    /// 7. Device-specific setup: hands virtqueue `queue`'s rings to the device (§4.2.3.2).
    pub fn setup_queue<const MAX: usize>(&mut self, queue: u16, vq: &Virtqueue<MAX>) -> Result<()> {
        let result = self.try_setup_queue(queue, vq);
        if result.is_err() {
            self.add_status(status::FAILED);
        }
        result
    }

    fn try_setup_queue<const MAX: usize>(&self, queue: u16, vq: &Virtqueue<MAX>) -> Result<()> {
        // The queue must not be live yet (§4.2.3.2: "check that QueueReady is zero").
        if self.transport.queue_ready(queue) {
            return Err(Error::QueueInUse(queue));
        }
        let max = self.transport.max_queue_size(queue);
        if max == 0 {
            return Err(Error::QueueUnavailable(queue));
        }
        if max < vq.size() {
            return Err(Error::QueueTooSmall { queue, max });
        }
        let (desc, driver, device) = vq.ring_dma_addresses();
        self.transport.activate_queue(queue, vq.size(), desc, driver, device);
        Ok(())
    }

    /// Sets FAILED and gives up on the device, for errors found by the device driver in step 7.
    pub fn fail(self) {
        // Drop sets FAILED.
    }

    /// 8. DRIVER_OK: the device is live. Returns the negotiated features.
    pub fn driver_ok(mut self) -> u64 {
        self.add_status(status::DRIVER_OK);
        self.finished = true;
        self.features
    }

    fn add_status(&mut self, bits: u32) {
        let current = self.transport.status();
        self.transport.set_status(current | bits);
    }
}

impl<T: Transport + ?Sized> Drop for DeviceInit<'_, T> {
    fn drop(&mut self) {
        if !self.finished {
            self.add_status(status::FAILED);
        }
    }
}
