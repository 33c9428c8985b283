//! The DMA API and its bounce-buffer pools.
//!
//! - [`swiotlb`]: the slot pools (one slot manager for every pool: default, per-device,
//!   restricted), the bounce copies, the pool lookup, and the default SWIOTLB with its policies
//!   (`swiotlb::mem`, Linux `struct io_tlb_mem`).
//! - [`coherent_pool`]: small coherent blocks (headers, status bytes, rings) from one chunk.
//! - [`debug`]: the DMA-API debug tracker (Linux: `kernel/dma/debug.c`).
//! - [`device`]: a device's DMA description (limit, coherence, which pools).
//! - [`mapping`]: the streaming and coherent API: map/unmap/sync, bounce only when needed.
//! - [`pools`]: where a device's carved pool lives while it is attached.
#![deny(unsafe_code)]

pub mod coherent_pool;
pub mod debug;
pub mod device;
pub mod mapping;
pub mod pools;
#[cfg(test)]
pub(crate) mod sim_maps;
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
    /// Whether the device may read the buffer, so syncing for the device copies into the slots.
    pub const fn to_device(self) -> bool {
        matches!(self, Self::ToDevice | Self::Bidirectional)
    }

    /// Whether the device may write the buffer, so syncing for the CPU copies out of the slots.
    pub const fn from_device(self) -> bool {
        matches!(self, Self::FromDevice | Self::Bidirectional)
    }
}

pub use swiotlb::{DmaAttrs, SlotAlignment};
