//! Host tests' mappings: the unsafe map entries called safely, for pools and APIs built over a
//! [`SimMemory`](crate::mm::phys::SimMemory).
//!
//! Sound because a test's pools copy only within its own simulated RAM (a buffer of the test, which
//! panics on any address outside it) and no real device is behind the fake ones: a mapping can
//! never write memory the test does not own. Each impl block states this once.

use super::mapping::{DmaApi, DmaError, ScatterEntry};
use super::pools::DevicePoolSlot;
use super::swiotlb::mem::SwiotlbMem;
use super::swiotlb::{SwiotlbError, SwiotlbPool};
use super::{device::DmaDevice, DmaAddr, DmaAttrs, DmaDirection, SlotAlignment};
use crate::mm::PhysAddr;

/// `map` and `map_attrs` of a bounce pool, over simulated RAM.
pub(crate) trait SimPoolMaps {
    /// The pool's `map`.
    fn sim_map(&self, orig: PhysAddr, size: usize, dir: DmaDirection, align: SlotAlignment) -> Result<PhysAddr, SwiotlbError> {
        self.sim_map_attrs(orig, size, dir, align, DmaAttrs::NONE)
    }
    /// The pool's `map_attrs`.
    fn sim_map_attrs(
        &self,
        orig: PhysAddr,
        size: usize,
        dir: DmaDirection,
        align: SlotAlignment,
        attrs: DmaAttrs,
    ) -> Result<PhysAddr, SwiotlbError>;
}

// The three sets of slots a test maps through, each forwarding to its own `map_attrs`.
macro_rules! sim_pool_maps {
    ($($set:ty),*) => {$(
        #[allow(unsafe_code)]
        impl SimPoolMaps for $set {
            fn sim_map_attrs(
                &self,
                orig: PhysAddr,
                size: usize,
                dir: DmaDirection,
                align: SlotAlignment,
                attrs: DmaAttrs,
            ) -> Result<PhysAddr, SwiotlbError> {
                // SAFETY: a test's pools copy only within the test's own simulated RAM (module doc).
                unsafe { self.map_attrs(orig, size, dir, align, attrs) }
            }
        }
    )*};
}
sim_pool_maps!(SwiotlbPool, SwiotlbMem, DevicePoolSlot);

/// `map_single` and `map_sg` of a DMA API, over simulated RAM.
pub(crate) trait SimApiMaps {
    /// The API's `map_single`.
    fn sim_map_single(&self, dev: &DmaDevice, addr: PhysAddr, size: usize, dir: DmaDirection, attrs: DmaAttrs)
        -> Result<DmaAddr, DmaError>;
    /// The API's `map_sg`.
    fn sim_map_sg(&self, dev: &DmaDevice, sg: &mut [ScatterEntry], dir: DmaDirection, attrs: DmaAttrs) -> Result<(), DmaError>;
}

#[allow(unsafe_code)]
impl SimApiMaps for DmaApi<'_> {
    fn sim_map_single(
        &self,
        dev: &DmaDevice,
        addr: PhysAddr,
        size: usize,
        dir: DmaDirection,
        attrs: DmaAttrs,
    ) -> Result<DmaAddr, DmaError> {
        // SAFETY: a test's API bounces only within the test's own simulated RAM, and its devices
        // are fakes (module doc).
        unsafe { self.map_single(dev, addr, size, dir, attrs) }
    }
    fn sim_map_sg(&self, dev: &DmaDevice, sg: &mut [ScatterEntry], dir: DmaDirection, attrs: DmaAttrs) -> Result<(), DmaError> {
        // SAFETY: as in `sim_map_single`.
        unsafe { self.map_sg(dev, sg, dir, attrs) }
    }
}
