//! The virtio-mmio transport, version 2 ("modern"), virtio 1.2 §4.2.2.
//!
//! Legacy (version 1) devices are refused: they use guest page frame numbers instead of ring
//! addresses. QEMU's virt board makes them legacy unless started with
//! `-global virtio-mmio.force-legacy=false`.

use core::sync::atomic::{fence, Ordering};

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

use super::transport::{InterruptStatus, Transport};
use super::{DeviceType, Error, Result};

/// "virt" in little-endian ASCII (§4.2.2).
pub const MAGIC_VALUE: u32 = 0x7472_6976;
/// The offset of the device-specific config space.
pub const CONFIG_OFFSET: usize = 0x100;

register_bitfields! {
    u32,

    /// InterruptStatus and InterruptACK (§4.2.2).
    INTERRUPT [
        /// "Used Buffer Notification": the device used a buffer in at least one queue.
        USED_BUFFER OFFSET(0) NUMBITS(1) [],
        /// "Configuration Change Notification": the config space changed.
        CONFIG_CHANGE OFFSET(1) NUMBITS(1) []
    ]
}

register_structs! {
    /// The virtio-mmio control registers (§4.2.2, table "MMIO Device Register Layout"). The
    /// shared-memory (0x0ac..0x0bc) and QueueReset (0x0c0) registers of 1.2 are not used.
    pub VirtioMmioRegisters {
        (0x000 => magic_value: ReadOnly<u32>),
        (0x004 => version: ReadOnly<u32>),
        (0x008 => device_id: ReadOnly<u32>),
        (0x00c => vendor_id: ReadOnly<u32>),
        (0x010 => device_features: ReadOnly<u32>),
        (0x014 => device_features_sel: WriteOnly<u32>),
        (0x018 => _reserved0),
        (0x020 => driver_features: WriteOnly<u32>),
        (0x024 => driver_features_sel: WriteOnly<u32>),
        (0x028 => _reserved1),
        (0x030 => queue_sel: WriteOnly<u32>),
        (0x034 => queue_num_max: ReadOnly<u32>),
        (0x038 => queue_num: WriteOnly<u32>),
        (0x03c => _reserved2),
        (0x044 => queue_ready: ReadWrite<u32>),
        (0x048 => _reserved3),
        (0x050 => queue_notify: WriteOnly<u32>),
        (0x054 => _reserved4),
        (0x060 => interrupt_status: ReadOnly<u32, INTERRUPT::Register>),
        (0x064 => interrupt_ack: WriteOnly<u32, INTERRUPT::Register>),
        (0x068 => _reserved5),
        /// Device status, bits in [`super::status`].
        (0x070 => status: ReadWrite<u32>),
        (0x074 => _reserved6),
        (0x080 => queue_desc_low: WriteOnly<u32>),
        (0x084 => queue_desc_high: WriteOnly<u32>),
        (0x088 => _reserved7),
        (0x090 => queue_driver_low: WriteOnly<u32>),
        (0x094 => queue_driver_high: WriteOnly<u32>),
        (0x098 => _reserved8),
        (0x0a0 => queue_device_low: WriteOnly<u32>),
        (0x0a4 => queue_device_high: WriteOnly<u32>),
        (0x0a8 => _reserved9),
        (0x0fc => config_generation: ReadOnly<u32>),
        (0x100 => @END),
    }
}

/// A virtio-mmio device, version 2.
pub struct VirtioMmio {
    regs: &'static VirtioMmioRegisters,
    /// The device-specific config space: `config_len` bytes from `CONFIG_OFFSET`.
    config_base: usize,
    config_len: usize,
}

// SAFETY: `new`'s caller hands this value the only access to the registers; device memory has no
// CPU affinity, so the value may move to (and be used from) another CPU. Not `Sync`: concurrent
// users need the kernel's IRQ-safe lock, which needs `Send` only.
unsafe impl Send for VirtioMmio {}

impl VirtioMmio {
    /// Probes the virtio-mmio slot at `base`, `size` bytes long (the FDT `reg`): checks the magic
    /// value, that it is a modern (version 2) device, and that a device is present.
    ///
    /// # Safety
    ///
    /// `base..base + size` must be a virtio-mmio register region, mapped as device memory for
    /// the rest of the kernel's life, and driven by no other code.
    pub unsafe fn new(base: usize, size: usize) -> Result<Self> {
        if size < CONFIG_OFFSET {
            return Err(Error::ConfigOutOfRange { offset: size });
        }
        // SAFETY: the caller promises a live, exclusively owned virtio-mmio region at least
        // `CONFIG_OFFSET` bytes long (checked above), which covers the register block.
        let regs = unsafe { &*(base as *const VirtioMmioRegisters) };
        let magic = regs.magic_value.get();
        if magic != MAGIC_VALUE {
            return Err(Error::BadMagic(magic));
        }
        match regs.version.get() {
            1 => return Err(Error::LegacyDevice),
            2 => {}
            other => return Err(Error::UnknownVersion(other)),
        }
        if regs.device_id.get() == 0 {
            return Err(Error::NoDevice);
        }
        Ok(Self { regs, config_base: base + CONFIG_OFFSET, config_len: size - CONFIG_OFFSET })
    }

    /// The vendor ID ("QEMU" is 0x554d4551).
    pub fn vendor_id(&self) -> u32 {
        self.regs.vendor_id.get()
    }

    /// The address of a naturally aligned config field of `width` bytes at `offset`.
    fn config_field(&self, offset: usize, width: usize) -> Result<usize> {
        let in_range = offset.checked_add(width).is_some_and(|end| end <= self.config_len);
        if !in_range || !offset.is_multiple_of(width) {
            return Err(Error::ConfigOutOfRange { offset });
        }
        Ok(self.config_base + offset)
    }
}

impl Transport for VirtioMmio {
    fn device_type(&self) -> DeviceType {
        DeviceType(self.regs.device_id.get())
    }

    fn device_features(&self) -> u64 {
        self.regs.device_features_sel.set(0);
        let low = self.regs.device_features.get();
        self.regs.device_features_sel.set(1);
        let high = self.regs.device_features.get();
        u64::from(low) | u64::from(high) << 32
    }

    fn set_driver_features(&self, features: u64) {
        self.regs.driver_features_sel.set(0);
        self.regs.driver_features.set(features as u32);
        self.regs.driver_features_sel.set(1);
        self.regs.driver_features.set((features >> 32) as u32);
    }

    fn status(&self) -> u32 {
        self.regs.status.get()
    }

    fn set_status(&self, status: u32) {
        self.regs.status.set(status);
    }

    fn max_queue_size(&self, queue: u16) -> u16 {
        self.regs.queue_sel.set(queue.into());
        // The spec caps split queues at 32768; anything larger is clamped, not trusted.
        self.regs.queue_num_max.get().min(32768) as u16
    }

    fn queue_ready(&self, queue: u16) -> bool {
        self.regs.queue_sel.set(queue.into());
        self.regs.queue_ready.get() != 0
    }

    fn activate_queue(&self, queue: u16, size: u16, desc: u64, driver: u64, device: u64) {
        // §4.2.3.2: select, size, the three ring addresses, then QueueReady.
        self.regs.queue_sel.set(queue.into());
        self.regs.queue_num.set(size.into());
        self.regs.queue_desc_low.set(desc as u32);
        self.regs.queue_desc_high.set((desc >> 32) as u32);
        self.regs.queue_driver_low.set(driver as u32);
        self.regs.queue_driver_high.set((driver >> 32) as u32);
        self.regs.queue_device_low.set(device as u32);
        self.regs.queue_device_high.set((device >> 32) as u32);
        self.regs.queue_ready.set(1);
    }

    fn notify(&self, queue: u16) {
        // The avail ring (normal memory) must be visible before the doorbell (device memory):
        // Linux's writel() puts a dma_wmb (DMB OSHST) in front of the store.
        #[cfg(target_arch = "aarch64")]
        aarch64_cpu::asm::barrier::dmb(aarch64_cpu::asm::barrier::OSHST);
        #[cfg(not(target_arch = "aarch64"))]
        fence(Ordering::SeqCst);
        self.regs.queue_notify.set(queue.into());
    }

    fn ack_interrupt(&self) -> InterruptStatus {
        let pending = self.regs.interrupt_status.get();
        self.regs.interrupt_ack.set(pending);
        // Ring reads that follow must not be satisfied before the ack (Linux vm_interrupt).
        fence(Ordering::Acquire);
        InterruptStatus(pending)
    }

    fn config_generation(&self) -> u32 {
        let generation = self.regs.config_generation.get();
        // Config reads must not move before the generation read, nor after the second one.
        fence(Ordering::SeqCst);
        generation
    }

    fn read_config_u8(&self, offset: usize) -> Result<u8> {
        let address = self.config_field(offset, 1)?;
        // SAFETY: `address` is inside the config space of the region `new`'s caller vouched
        // for (checked by `config_field`); device memory is read with a volatile access.
        Ok(unsafe { (address as *const u8).read_volatile() })
    }

    fn read_config_u16(&self, offset: usize) -> Result<u16> {
        let address = self.config_field(offset, 2)?;
        // SAFETY: as in `read_config_u8`; `config_field` checked the alignment.
        Ok(u16::from_le(unsafe { (address as *const u16).read_volatile() }))
    }

    fn read_config_u32(&self, offset: usize) -> Result<u32> {
        let address = self.config_field(offset, 4)?;
        // SAFETY: as in `read_config_u8`; `config_field` checked the alignment.
        Ok(u32::from_le(unsafe { (address as *const u32).read_volatile() }))
    }
}
