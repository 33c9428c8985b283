//! The DMA API and its bounce-buffer pools.

pub mod swiotlb;
