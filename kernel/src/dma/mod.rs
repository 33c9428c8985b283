//! The DMA API and its bounce-buffer pools.
//!
//! - [`swiotlb`]: the slot pools (one slot manager for every pool: default, per-device,
//!   restricted) and the bounce copies.
//! - [`debug`]: the DMA-API debug tracker (Linux: `kernel/dma/debug.c`).

pub mod debug;
pub mod swiotlb;

/// A bus address as the device sees it. Our devices sit behind identity-mapped buses (the
/// `dma-ranges` windows of QEMU virt have no offset), so it equals the physical address.
pub type DmaAddr = u64;

/// Which way the data of a streaming mapping moves (Linux: `enum dma_data_direction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaDirection {
    /// The device reads the buffer (`DMA_TO_DEVICE`).
    ToDevice,
    /// The device writes the buffer (`DMA_FROM_DEVICE`).
    FromDevice,
    /// Both (`DMA_BIDIRECTIONAL`).
    Bidirectional,
}

impl DmaDirection {
    /// True if the device may read the buffer (the CPU's data must reach it).
    pub fn to_device(self) -> bool {
        matches!(self, DmaDirection::ToDevice | DmaDirection::Bidirectional)
    }

    /// True if the device may write the buffer (its data must reach the CPU).
    pub fn from_device(self) -> bool {
        matches!(self, DmaDirection::FromDevice | DmaDirection::Bidirectional)
    }
}
