//! The DMA layer on the machine: the default SWIOTLB pool from `/reserved-memory` (or bootargs),
//! restricted pools, DMA device descriptions built from the device tree, and the pool worker.

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::bootargs::{KernelParams, SwiotlbPolicy};
use crate::dma::debug::{DeviceId, DmaDebug};
use crate::dma::device::{BouncePolicy, DmaDevice};
use crate::dma::mapping::DmaApi;
use crate::dma::pools::DevicePoolSlot;
use crate::dma::swiotlb::mem::{LendError, PoolGeometry, SwiotlbMem, Tunables, SLOTS_PER_PAGEBLOCK};
use crate::dma::swiotlb::{SwiotlbError, SwiotlbPool, IO_TLB_SEGSIZE, IO_TLB_SHIFT, SCRUB_STEP_SLOTS};
use crate::dt::{self, DeviceTree, DtError};
use crate::mm::memblock::{Memblock, PoolKind, RegionKind};
use crate::mm::page_alloc::LockedPageAllocator;
use crate::mm::PhysAddr;
use crate::sync::IrqSafeSpinLock;
use crate::work::{WorkId, SYSTEM_WQ};

use super::phys::ram;

/// Why the DMA layer could not be set up, or a device could not be described.
#[derive(Debug)]
pub enum DmaSetupError {
    /// The device tree is inconsistent.
    DeviceTree(DtError<'static>),
    /// No default SWIOTLB pool: no `dmabounce,swiotlb-pool` region in `/reserved-memory`.
    NoPool,
    /// A pool's geometry is unusable.
    Pool(&'static str, SwiotlbError),
    /// A device's `memory-region` names a restricted pool the boot memory map skipped (it lies
    /// wholly outside RAM).
    PoolNotInMemoryMap {
        /// The device's node.
        device: &'static str,
        /// The pool's node.
        region: &'static str,
    },
    /// A device's `memory-region` is not a restricted DMA pool we know.
    NotRestrictedPool {
        /// The device's node (`"?"` when the pool is looked up for no particular device).
        device: &'static str,
        /// The node its `memory-region` names.
        region: &'static str,
    },
    /// A restricted pool is also `reusable`: it is shared with a device that may be hostile and
    /// must never be lent to the page allocator.
    ReusableRestrictedPool(&'static str),
    /// A device's restricted pool lies (partly) beyond the device's DMA limit: it could not
    /// reach its own bounce buffers.
    RestrictedPoolBeyondDmaLimit {
        /// The device's node.
        device: &'static str,
        /// The pool's node.
        region: &'static str,
        /// The end of the pool (exclusive).
        pool_end: PhysAddr,
        /// The highest address the device reaches (inclusive), from its `dma-ranges`.
        limit: PhysAddr,
    },
    /// Too many restricted pools.
    TooManyPools,
    /// The default pool lies beyond the reach of the most limited device.
    PoolAboveDmaLimit {
        /// The end of the pool (exclusive).
        pool_end: PhysAddr,
        /// The end (exclusive) of what every device reaches: the smallest `dma-ranges` limit.
        limit: PhysAddr,
    },
    /// The default pool's manager refused its geometry or policy.
    Manager(LendError),
}

impl fmt::Display for DmaSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DmaSetupError::DeviceTree(e) => write!(f, "{e}"),
            DmaSetupError::NoPool => {
                write!(f, "no default SWIOTLB pool (a /reserved-memory node compatible with \"dmabounce,swiotlb-pool\")")
            }
            DmaSetupError::Pool(name, e) => write!(f, "SWIOTLB pool {name}: {e}"),
            DmaSetupError::PoolNotInMemoryMap { device, region } => {
                write!(f, "{device}: restricted-dma-pool {region} is not in the memory map (it lies outside RAM)")
            }
            DmaSetupError::NotRestrictedPool { device, region } => {
                write!(f, "{device}: memory-region {region} is not a restricted-dma-pool")
            }
            DmaSetupError::ReusableRestrictedPool(name) => {
                write!(f, "{name}: a restricted-dma-pool must not be reusable (it is shared with the device and is never lent)")
            }
            DmaSetupError::RestrictedPoolBeyondDmaLimit { device, region, pool_end, limit } => {
                write!(f, "{device}: restricted-dma-pool {region} ends at {pool_end:#x}, beyond the device's DMA limit {limit:#x} (it could not reach its bounce buffers)")
            }
            DmaSetupError::TooManyPools => write!(f, "too many restricted DMA pools"),
            DmaSetupError::PoolAboveDmaLimit { pool_end, limit } => {
                write!(f, "the default SWIOTLB pool ends at {pool_end:#x}, above the DMA limit {limit:#x}")
            }
            DmaSetupError::Manager(e) => write!(f, "default SWIOTLB pool: {e:?}"),
        }
    }
}

impl From<DtError<'static>> for DmaSetupError {
    fn from(e: DtError<'static>) -> Self {
        DmaSetupError::DeviceTree(e)
    }
}

const MAX_RESTRICTED: usize = 8;
static RESTRICTED: IrqSafeSpinLock<[Option<(PhysAddr, &'static SwiotlbPool)>; MAX_RESTRICTED]> =
    IrqSafeSpinLock::new([None; MAX_RESTRICTED]);
static NEXT_DEVICE_ID: AtomicU32 = AtomicU32::new(1);

/// Slots for `bytes` of pool, rounded down to whole segments of every area.
pub fn slots_for(bytes: u64, nareas: usize) -> usize {
    let per = IO_TLB_SEGSIZE * nareas;
    ((bytes >> IO_TLB_SHIFT) as usize) / per * per
}

/// `swiotlb_colour_kib=` in bytes, for the restricted pools made after [`init`].
static COLOUR_PERIOD: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The restricted pool over the reserved region `name` (created once, shared by its devices).
fn restricted_pool(memblock: &Memblock<'static>, name: &'static str) -> Result<&'static SwiotlbPool, DmaSetupError> {
    let region = memblock.find(name).ok_or(DmaSetupError::NotRestrictedPool { device: "?", region: name })?;
    let base = region.range.base();
    let mut pools = RESTRICTED.lock();
    if let Some((_, pool)) = pools.iter().flatten().find(|(b, _)| *b == base) {
        return Ok(pool);
    }
    let slot = pools.iter_mut().find(|p| p.is_none()).ok_or(DmaSetupError::TooManyPools)?;
    // SAFETY: the pool writes only its own slots (the reserved region `name`, which memblock
    // keeps from everyone else) and the original buffers its callers hand it under the DMA
    // contract (`SwiotlbPool::map`'s `# Safety`).
    let mem = unsafe { ram() };
    let pool = SwiotlbPool::new(base, slots_for(region.range.size(), 1), 1, mem).map_err(|e| DmaSetupError::Pool(name, e))?;
    pool.set_colour_period(COLOUR_PERIOD.load(core::sync::atomic::Ordering::Relaxed));
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
            PoolKind::RestrictedDma => {
                let range = memblock
                    .find(region.name)
                    .map(|r| r.range)
                    .ok_or(DmaSetupError::PoolNotInMemoryMap { device: dev.name(), region: region.name })?;
                if !dev.dma_reaches(range) {
                    let limit = dev.dma_limit().unwrap_or(PhysAddr::MAX);
                    return Err(DmaSetupError::RestrictedPoolBeyondDmaLimit {
                        device: dev.name(),
                        region: region.name,
                        pool_end: range.end(),
                        limit,
                    });
                }
                policy = BouncePolicy::Restricted(restricted_pool(memblock, region.name)?);
            }
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
    /// The default SWIOTLB (Linux `io_tlb_default_mem`): its pools and its policy.
    pub manager: &'static SwiotlbMem,
    /// Parameters from bootargs.
    pub params: &'static KernelParams,
}

static DMA: spin::Once<Dma> = spin::Once::new();
static DEBUG: DmaDebug = DmaDebug::new();
static WORKER: AtomicU32 = AtomicU32::new(u32::MAX);
static LAST_EVENTS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
static LAST_WORKER_RUN_MS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The DMA layer. Panics before [`init`].
pub fn dma() -> &'static Dma {
    DMA.get().expect("DMA layer used before init")
}

/// The DMA layer, if it was set up.
pub fn try_dma() -> Option<&'static Dma> {
    DMA.get()
}

fn kick_worker() {
    let id = WORKER.load(Ordering::Relaxed);
    if id != u32::MAX {
        SYSTEM_WQ.schedule(WorkId::from_raw(id));
    }
}

fn uptime() -> core::time::Duration {
    super::time::uptime()
}

/// The SWIOTLB worker (task context, from the system work queue): one grow or shrink batch.
fn swiotlb_worker() {
    let Some(dma) = try_dma() else { return };
    let clock: fn() -> core::time::Duration = uptime;
    LAST_WORKER_RUN_MS.store(uptime().as_millis() as u64, Ordering::Relaxed);
    let report = dma.manager.worker(super::mm::page_allocator(), &clock, &mut |_| {});
    if report != Default::default() {
        log::debug!("swiotlb worker: {report:?}");
    }
    let stats = dma.manager.stats();
    let events = stats.pageblocks_reclaimed + stats.pageblocks_lent_again;
    if events != LAST_EVENTS.swap(events, Ordering::Relaxed) {
        // A pageblock changed hands: show where RAM stands (one character per pageblock).
        let k = super::kernel();
        let picture = {
            let pa = super::mm::page_allocator().lock();
            alloc::format!("{}", pa.ram_picture(|a| super::mm::in_swiotlb_region(&k.memblock, a)))
        };
        log::info!(
            "swiotlb: {} pageblocks reclaimed, {} lent again so far; RAM [{picture}]",
            stats.pageblocks_reclaimed,
            stats.pageblocks_lent_again
        );
    }
}

/// One bounded scrub step for an idle CPU (task context, IRQs enabled, no lock held): zeroes at
/// most [`SCRUB_STEP_SLOTS`] dirty free bounce slots so that later block reads may skip their
/// copy-in (`swiotlb_clean_slots=on`). Returns the slots zeroed; 0 when there is nothing to do.
pub fn scrub_step() -> usize {
    let Some(dma) = try_dma() else { return 0 };
    dma.manager.scrub_step(SCRUB_STEP_SLOTS)
}

/// Called at task context's scheduling points: kicks the worker when the pool runs low, and
/// every `swiotlb_shrink_delay_ms / 4` so that an idle pool's shrink timer advances.
pub fn maintenance() {
    let Some(dma) = try_dma() else { return };
    let period = (dma.params.swiotlb_shrink_delay_ms / 4).max(1);
    let now = uptime().as_millis() as u64;
    if dma.manager.should_kick() || now >= LAST_WORKER_RUN_MS.load(Ordering::Relaxed) + period {
        kick_worker();
    }
}

/// Sets up the DMA layer (Linux: `swiotlb_init` + `dma_debug_init`): the default pool from its
/// `/reserved-memory` region, managed by `swiotlb_policy=`, and the worker on the system work
/// queue, kicked whenever a bounce fails.
pub fn init(
    memblock: &Memblock<'_>,
    dma_limit: Option<PhysAddr>,
    pages: &'static LockedPageAllocator,
    params: &'static KernelParams,
) -> Result<&'static Dma, DmaSetupError> {
    let (base, size) = default_pool_region(memblock).ok_or(DmaSetupError::NoPool)?;
    if let Some(limit) = dma_limit.filter(|l| base + size > *l) {
        return Err(DmaSetupError::PoolAboveDmaLimit { pool_end: base + size, limit });
    }
    // Whole pageblocks of the region (the unit of lending).
    let mut nslots = slots_for(size, 1) / SLOTS_PER_PAGEBLOCK * SLOTS_PER_PAGEBLOCK;
    if let Some(want) = params.swiotlb.slots {
        let want = (want as usize).div_ceil(SLOTS_PER_PAGEBLOCK) * SLOTS_PER_PAGEBLOCK;
        if want > nslots {
            log::warn!("swiotlb={want} slots is more than the reserved region holds ({nslots}); using {nslots}");
        } else {
            nslots = want;
        }
    }
    // Every area holds whole 128-slot segments: fewer areas if the pool is too small for those
    // asked for (Linux `limit_nareas()` also lowers the count rather than failing the boot).
    let want_areas = params.swiotlb.areas.unwrap_or(4) as usize;
    let mut nareas = want_areas.max(1);
    while nareas > 1 && !nslots.is_multiple_of(IO_TLB_SEGSIZE * nareas) {
        nareas /= 2;
    }
    if nareas != want_areas {
        log::warn!("swiotlb: {want_areas} areas do not fit a pool of {nslots} slots (each area needs whole segments of {IO_TLB_SEGSIZE} slots); using {nareas}");
    }
    let geometry = PoolGeometry { start: base, nslots, nareas };
    let mut tunables = Tunables::from_params(params);
    // The binding's `reusable`: only then may the pool's spare part be lent to the page
    // allocator (docs/bindings/swiotlb-pool.md). Without it `lend` keeps every slot, as `static`.
    if tunables.policy == SwiotlbPolicy::Lend {
        let region = memblock.reserved().find(|r| matches!(r.flags.kind, RegionKind::ReservedMemory(PoolKind::Swiotlb)));
        match region {
            Some(r) if r.flags.reusable => {
                log::info!("swiotlb: {} is reusable: its spare pageblocks are lent to the page allocator as MIGRATE_SWIOTLB", r.label)
            }
            Some(r) => {
                log::warn!("swiotlb: {} is not reusable: nothing is lent (swiotlb_policy=lend runs as static)", r.label);
                tunables.policy = SwiotlbPolicy::Static;
            }
            None => {}
        }
    }
    let cma = super::mm::cma_area();
    if tunables.policy == SwiotlbPolicy::Cma && cma.is_none() {
        log::warn!("swiotlb_policy=cma: no CMA area (neither a reusable linux,cma-default shared-dma-pool node nor cma=<size>); using swiotlb_policy=dynamic");
        tunables.policy = SwiotlbPolicy::Dynamic;
    }
    // SAFETY: the manager writes only its pools' slots (the reserved region, and pageblocks it
    // took back from the page allocator or allocated), pages it migrates while it holds both
    // ends (the page allocator's migration), and the original buffers its callers hand it under
    // the DMA contract (`SwiotlbMem::map`'s `# Safety`).
    let mem = unsafe { ram() };
    let manager = SwiotlbMem::new(geometry, tunables, false, pages, mem).map_err(DmaSetupError::Manager)?;
    let manager: &'static SwiotlbMem = alloc::boxed::Box::leak(alloc::boxed::Box::new(manager));
    manager.enable_transient_pools(pages);
    manager.set_clean_slots(params.swiotlb_clean_slots);
    manager.set_colour_period(params.swiotlb_colour_kib * 1024);
    manager.set_slot_cache(params.swiotlb_slot_cache);
    COLOUR_PERIOD.store(params.swiotlb_colour_kib * 1024, core::sync::atomic::Ordering::Relaxed);
    if let (SwiotlbPolicy::Cma, Some(area)) = (manager.policy(), cma) {
        manager.enable_cma(area);
    }
    // `swiotlb=` asked for less than the region: the rest is ordinary memory, as it would be in
    // Linux, where only the pool is reserved (whole pageblocks; a partial one stays reserved).
    let pool_end = base + ((nslots as u64) << IO_TLB_SHIFT);
    let spare = (size - (pool_end - base)) / crate::mm::page_alloc::PAGEBLOCK_SIZE;
    if spare > 0 {
        match pages.lock().free_contig_pageblocks(pool_end, spare as usize) {
            Ok(()) => log::info!("swiotlb: {spare} pageblocks of the region beyond the pool ({pool_end:#x}) given to the page allocator"),
            Err(e) => log::warn!("swiotlb: the region beyond the pool stays reserved: {e:?}"),
        }
    }
    if let Ok(id) = SYSTEM_WQ.register("swiotlb", swiotlb_worker) {
        WORKER.store(id.raw(), Ordering::Relaxed);
    }
    let debug = params.dma_debug.then_some(&DEBUG);
    let api = DmaApi::new(manager, debug, Some(kick_worker)).with_lent_page_pins(pages);
    let api = match cma {
        Some(area) => api.with_cma_range(area.range()),
        None => api,
    };
    Ok(DMA.call_once(|| Dma { api, manager, params }))
}

// ---- per-device pools (the seed's "local accelerator") ----

const MAX_DEVICE_POOLS: usize = 4;

/// Places for carved device pools that a `DmaDevice` can point at for the kernel's life.
static DEVICE_POOLS: [DevicePoolSlot; MAX_DEVICE_POOLS] = [const { DevicePoolSlot::new() }; MAX_DEVICE_POOLS];

/// Bytes of in-flight DMA from which a DMA-limited device gets its own pool.
pub const DEVICE_POOL_HINT_THRESHOLD: usize = 1 << 20;

/// What [`set_inflight_hint`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum HintOutcome {
    /// The device got a pool of this many pageblocks.
    Carved(usize),
    /// The device's pool was returned.
    Returned,
    /// Nothing to do (no limit, hint below the threshold, or already as asked).
    Unchanged,
}

/// A driver says how much DMA it keeps in flight (Linux has no such call; the seed's idea). If
/// the device is DMA-limited and the hint reaches [`DEVICE_POOL_HINT_THRESHOLD`], it gets its own
/// pool carved from the default pool's MIGRATE_SWIOTLB range, sized to the hint; a hint of 0 (or
/// below the threshold) returns it. Task context only.
pub fn set_inflight_hint(dev: &DmaDevice, bytes: usize) -> Result<HintOutcome, LendError> {
    assert!(!crate::arch::in_interrupt(), "set_inflight_hint: task context only");
    let dma = dma();
    let wants = dev.dma_limit().is_some() && !matches!(dev.policy(), BouncePolicy::Restricted(_)) && bytes >= DEVICE_POOL_HINT_THRESHOLD;
    let current = dev.device_pool();
    match (wants, current) {
        (true, None) => {
            let slot = DEVICE_POOLS.iter().find(|s| s.is_empty()).ok_or(LendError::NotEnoughPageblocks { wanted: 1, available: 0 })?;
            let blocks = bytes.div_ceil(crate::mm::page_alloc::PAGEBLOCK_SIZE as usize);
            let pool = dma.manager.carve_device_pool(super::mm::page_allocator(), blocks, &mut |_| {})?;
            if let Err(pool) = slot.attach(pool) {
                // Cannot happen (hints are task context, one at a time); give the blocks back.
                return dma
                    .manager
                    .return_device_pool(pool, super::mm::page_allocator())
                    .map_err(|(_, e)| e)
                    .map(|()| HintOutcome::Unchanged);
            }
            dev.set_device_pool(Some(slot));
            Ok(HintOutcome::Carved(blocks))
        }
        (false, Some(current)) => {
            let Some(slot) = DEVICE_POOLS.iter().find(|s| core::ptr::eq(*s, current)) else {
                return Ok(HintOutcome::Unchanged);
            };
            // The pool leaves the slot only once nothing is mapped in it (a completion in
            // interrupt context meanwhile still finds it); until then the device keeps pointing
            // at it. Regression: detaching first lost such a completion's copy back.
            let Some(pool) = slot.detach()? else { return Ok(HintOutcome::Unchanged) };
            dev.set_device_pool(None);
            match dma.manager.return_device_pool(pool, super::mm::page_allocator()) {
                Ok(()) => Ok(HintOutcome::Returned),
                Err((pool, e)) => {
                    // The manager is busy (its worker runs): the pool, empty, goes back in place.
                    if slot.attach(pool).is_ok() {
                        dev.set_device_pool(Some(slot));
                    }
                    Err(e)
                }
            }
        }
        _ => Ok(HintOutcome::Unchanged),
    }
}
