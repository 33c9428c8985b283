//! The DMA layer on the machine: the default SWIOTLB pool from `/reserved-memory` (or bootargs),
//! restricted pools, DMA device descriptions built from the device tree, and the pool worker.

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::bootargs::KernelParams;
use crate::dma::debug::{DeviceId, DmaDebug};
use crate::dma::device::{BouncePolicy, DmaDevice};
use crate::dma::mapping::DmaApi;
use crate::dma::pools::BounceBuffers;
use crate::dma::swiotlb::{SwiotlbError, SwiotlbPool, IO_TLB_SEGSIZE, IO_TLB_SHIFT};
use crate::dt::{self, DeviceTree, DtError, PoolKind};
use crate::mm::memblock::{Memblock, RegionKind};
use crate::mm::PhysAddr;
use crate::sync::IrqSafeSpinLock;
use crate::work::{WorkId, SYSTEM_WQ};

use super::phys::IdentityMappedRam;

/// Physical memory for the DMA layer's copies.
pub static RAM: IdentityMappedRam = IdentityMappedRam;

/// Why the DMA layer could not be set up, or a device could not be described.
#[derive(Debug)]
pub enum DmaSetupError {
    /// The device tree is inconsistent.
    DeviceTree(DtError<'static>),
    /// No default SWIOTLB pool: no `dmabounce,swiotlb-pool` region in `/reserved-memory`.
    NoPool,
    /// A pool's geometry is unusable.
    Pool(&'static str, SwiotlbError),
    /// A device's `memory-region` is not a restricted DMA pool we know.
    NotRestrictedPool { device: &'static str, region: &'static str },
    /// A restricted pool is also `reusable`: it is shared with a device that may be hostile and
    /// must never be lent to the page allocator.
    ReusableRestrictedPool(&'static str),
    /// Too many restricted pools.
    TooManyPools,
    /// The default pool lies beyond the reach of the most limited device.
    PoolAboveDmaLimit { pool_end: PhysAddr, limit: PhysAddr },
}

impl fmt::Display for DmaSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DmaSetupError::DeviceTree(e) => write!(f, "{e}"),
            DmaSetupError::NoPool => write!(f, "no default SWIOTLB pool (a /reserved-memory node compatible with \"dmabounce,swiotlb-pool\")"),
            DmaSetupError::Pool(name, e) => write!(f, "SWIOTLB pool {name}: {e}"),
            DmaSetupError::NotRestrictedPool { device, region } => write!(f, "{device}: memory-region {region} is not a restricted-dma-pool"),
            DmaSetupError::ReusableRestrictedPool(name) => write!(f, "{name}: a restricted-dma-pool must not be reusable (it is shared with the device and is never lent)"),
            DmaSetupError::TooManyPools => write!(f, "too many restricted DMA pools"),
            DmaSetupError::PoolAboveDmaLimit { pool_end, limit } => write!(f, "the default SWIOTLB pool ends at {pool_end:#x}, above the DMA limit {limit:#x}"),
        }
    }
}

impl From<DtError<'static>> for DmaSetupError {
    fn from(e: DtError<'static>) -> Self {
        DmaSetupError::DeviceTree(e)
    }
}

const MAX_RESTRICTED: usize = 8;
static RESTRICTED: IrqSafeSpinLock<[Option<(PhysAddr, &'static SwiotlbPool)>; MAX_RESTRICTED]> = IrqSafeSpinLock::new([None; MAX_RESTRICTED]);
static NEXT_DEVICE_ID: AtomicU32 = AtomicU32::new(1);

/// Slots for `bytes` of pool, rounded down to whole segments of every area.
pub fn slots_for(bytes: u64, nareas: usize) -> usize {
    let per = IO_TLB_SEGSIZE * nareas;
    ((bytes >> IO_TLB_SHIFT) as usize) / per * per
}

/// The restricted pool over the reserved region `name` (created once, shared by its devices).
fn restricted_pool(memblock: &Memblock<'static>, name: &'static str) -> Result<&'static SwiotlbPool, DmaSetupError> {
    let region = memblock.find(name).ok_or(DmaSetupError::NotRestrictedPool { device: "?", region: name })?;
    let base = region.range.base();
    let mut pools = RESTRICTED.lock();
    if let Some((_, pool)) = pools.iter().flatten().find(|(b, _)| *b == base) {
        return Ok(pool);
    }
    let slot = pools.iter_mut().find(|p| p.is_none()).ok_or(DmaSetupError::TooManyPools)?;
    let pool = SwiotlbPool::new(base, slots_for(region.range.size(), 1), 1).map_err(|e| DmaSetupError::Pool(name, e))?;
    let pool: &'static SwiotlbPool = alloc::boxed::Box::leak(alloc::boxed::Box::new(pool));
    *slot = Some((base, pool));
    Ok(pool)
}

/// Describes device-tree node `dev` for the DMA API (Linux: `of_dma_configure`): its
/// `dma-ranges` limit, `dma-coherent`, and its restricted pool (`memory-region` naming a
/// `restricted-dma-pool`). `force` is `swiotlb=force`.
pub fn dma_device_from_dt(
    dt: &DeviceTree<'static>,
    memblock: &Memblock<'static>,
    dev: &dt::Device<'static>,
    force: bool,
) -> Result<DmaDevice, DmaSetupError> {
    let mut policy = if force { BouncePolicy::Forced } else { BouncePolicy::WhenNeeded };
    for phandle in dev.memory_region_phandles() {
        let Some(region) = dt.reserved_by_phandle(phandle)? else {
            return Err(DtError::UnknownPhandle { node: dev.name(), property: "memory-region", phandle }.into());
        };
        match region.kind {
            PoolKind::RestrictedDma if region.reusable => return Err(DmaSetupError::ReusableRestrictedPool(region.name)),
            PoolKind::RestrictedDma => policy = BouncePolicy::Restricted(restricted_pool(memblock, region.name)?),
            _ => return Err(DmaSetupError::NotRestrictedPool { device: dev.name(), region: region.name }),
        }
    }
    let id: DeviceId = NEXT_DEVICE_ID.fetch_add(1, Ordering::Relaxed);
    Ok(DmaDevice::new(id, dev.name(), dev.dma_limit(), dev.dma_coherent(), policy))
}

/// The default pool's reserved region: (base, size).
pub fn default_pool_region(memblock: &Memblock<'_>) -> Option<(PhysAddr, u64)> {
    memblock
        .reserved()
        .find(|r| matches!(r.flags.kind, RegionKind::ReservedMemory(PoolKind::Swiotlb)))
        .map(|r| (r.range.base(), r.range.size()))
}

/// The DMA layer's global state.
pub struct Dma {
    /// The streaming and coherent API.
    pub api: DmaApi<'static>,
    /// The default pool (and its policy).
    pub default_pool: &'static dyn BounceBuffers,
    /// Parameters from bootargs.
    pub params: &'static KernelParams,
}

static DMA: spin::Once<Dma> = spin::Once::new();
static DEBUG: DmaDebug = DmaDebug::new();
static WORKER: AtomicU32 = AtomicU32::new(u32::MAX);

/// The DMA layer. Panics before [`init`].
pub fn dma() -> &'static Dma {
    DMA.get().expect("DMA layer used before init")
}

fn kick_worker() {
    let id = WORKER.load(Ordering::Relaxed);
    if id != u32::MAX {
        SYSTEM_WQ.schedule(WorkId::from_raw(id));
    }
}

/// Sets up the DMA layer over `default_pool`, with the worker `worker` registered on the system
/// work queue (kicked whenever a bounce fails).
pub fn init(default_pool: &'static dyn BounceBuffers, params: &'static KernelParams, worker: Option<fn()>) -> &'static Dma {
    if let Some(work) = worker {
        if let Ok(id) = SYSTEM_WQ.register("swiotlb", work) {
            WORKER.store(id.raw(), Ordering::Relaxed);
        }
    }
    let debug = params.dma_debug.then_some(&DEBUG);
    DMA.call_once(|| Dma { api: DmaApi::new(&RAM, default_pool, debug, Some(kick_worker)), default_pool, params })
}
