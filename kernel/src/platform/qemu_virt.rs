//! The QEMU `virt` board: the few facts the device tree cannot give us. Everything else
//! (RAM, devices, interrupts) comes from the device tree.

/// Where QEMU puts the DTB for an ELF kernel (x0 is 0 then): the start of RAM, which on `virt`
/// is 0x4000_0000. The kernel links 2 MiB above it so the DTB fits below (see linker.ld).
pub const DTB_FALLBACK_ADDR: usize = 0x4000_0000;

/// The largest DTB we accept (QEMU's is about 1 MiB at most, with `dumpdtb` padding).
pub const DTB_MAX_SIZE: usize = 2 * 1024 * 1024;

/// QEMU attaches `-device virtio-*-device`s to the virtio-mmio transports from the highest
/// address down (hw/arm/virt.c creates the transports in reverse so that the first device lands
/// on the last one). Probing in descending address order makes disk0 the first `--disk`.
pub const VIRTIO_MMIO_PROBE_DESCENDING: bool = true;
