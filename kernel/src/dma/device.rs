//! A device as the DMA API sees it (Linux: the DMA fields of `struct device`): how far it can
//! reach, whether it snoops the CPU caches, which bounce pools it must or may use.
#![forbid(unsafe_code)]

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use super::debug::DeviceId;
use super::pools::DevicePoolSlot;
use super::swiotlb::SwiotlbPool;
use crate::mm::PhysAddr;
use crate::sync::IrqSafeSpinLock;

/// How a device's DMA must be bounced, from the device tree and the command line.
#[derive(Clone, Copy)]
pub enum BouncePolicy {
    /// Bounce only what the device cannot reach (or, if not coherent, misaligned buffers).
    WhenNeeded,
    /// `swiotlb=force`: bounce every mapping through the default pool.
    Forced,
    /// A `restricted-dma-pool`: every mapping bounces through this pool, and nothing of the
    /// device's DMA may be outside it (no fallback to the default pool).
    Restricted(&'static SwiotlbPool),
}

impl fmt::Debug for BouncePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BouncePolicy::WhenNeeded => write!(f, "when needed"),
            BouncePolicy::Forced => write!(f, "forced"),
            BouncePolicy::Restricted(p) => write!(f, "restricted pool {:#x}-{:#x}", p.range().start, p.range().end),
        }
    }
}

/// A DMA-capable device.
pub struct DmaDevice {
    /// Identifies the device to the debug tracker and in logs.
    pub id: DeviceId,
    /// Its name (the device-tree node name).
    pub name: &'static str,
    /// The highest physical address it can reach (inclusive), from `dma-ranges`; `None`: all.
    /// Fixed at construction, as `coherent` and `policy` ([`Self::direct_end`] and
    /// [`Self::last_reachable`] are derived).
    dma_limit: Option<PhysAddr>,
    /// `dma_limit`, or `PhysAddr::MAX` without one: [`dma_capable`](Self::dma_capable) in one
    /// compare, without looking at the `Option` first.
    last_reachable: PhysAddr,
    /// `dma-coherent`: the device snoops the CPU caches, so no cache maintenance is needed.
    coherent: bool,
    /// Low address bits the device needs preserved in a bounce buffer (Linux
    /// `dma_get_min_align_mask`).
    pub min_align_mask: u64,
    /// How its DMA is bounced.
    policy: BouncePolicy,
    /// The end (exclusive) of the addresses a mapping may use as they are, with no bounce and no
    /// cache maintenance, as far as the device is concerned: a coherent `WhenNeeded` device's
    /// reach (`dma_limit + 1`, or `PhysAddr::MAX`); 0 for every other device. One compare on
    /// the DMA API's inline direct path instead of the policy, the limit and coherence.
    direct_end: PhysAddr,
    /// A per-device pool carved for a device that bounces heavily (the seed's "local
    /// accelerator"), tried before the default pool.
    device_pool: IrqSafeSpinLock<Option<&'static DevicePoolSlot>>,
    /// Whether `device_pool` holds a slot: read without the lock by the unmap of a direct
    /// mapping, which needs no pool lookup when the device has no pool of its own.
    has_device_pool: AtomicBool,
}

impl fmt::Debug for DmaDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (dev {}): ", self.name, self.id)?;
        match self.dma_limit {
            Some(l) => write!(f, "DMA limit {l:#x}, ")?,
            None => write!(f, "no DMA limit, ")?,
        }
        write!(f, "{}, bounce {:?}", if self.coherent { "coherent" } else { "non-coherent" }, self.policy)?;
        if self.device_pool().is_some() {
            write!(f, ", with a per-device pool")?;
        }
        Ok(())
    }
}

impl DmaDevice {
    /// A device description.
    pub fn new(id: DeviceId, name: &'static str, dma_limit: Option<PhysAddr>, coherent: bool, policy: BouncePolicy) -> Self {
        let direct_end = match policy {
            BouncePolicy::WhenNeeded if coherent => dma_limit.map_or(PhysAddr::MAX, |last| last.saturating_add(1)),
            _ => 0,
        };
        Self {
            id,
            name,
            dma_limit,
            last_reachable: dma_limit.unwrap_or(PhysAddr::MAX),
            coherent,
            min_align_mask: 0,
            policy,
            direct_end,
            device_pool: IrqSafeSpinLock::new(None),
            has_device_pool: AtomicBool::new(false),
        }
    }

    /// The highest physical address it can reach (inclusive); `None`: all of memory.
    #[inline]
    pub fn dma_limit(&self) -> Option<PhysAddr> {
        self.dma_limit
    }

    /// Whether it snoops the CPU caches (`dma-coherent`).
    #[inline]
    pub fn coherent(&self) -> bool {
        self.coherent
    }

    /// How its DMA is bounced.
    #[inline]
    pub fn policy(&self) -> BouncePolicy {
        self.policy
    }

    /// True if a mapping of `[addr, addr + size)` (`size` > 0) needs, as far as the device is
    /// concerned, neither a bounce nor cache maintenance: a coherent device that bounces only
    /// what it cannot reach, and reaches all of it. False says nothing (the full checks decide).
    #[inline]
    pub fn direct_as_is(&self, addr: PhysAddr, size: usize) -> bool {
        addr.checked_add(size as u64).is_some_and(|end| end <= self.direct_end)
    }

    /// True if the device's mappings may all be direct and need no cache maintenance (see
    /// [`direct_as_is`](Self::direct_as_is)).
    #[inline]
    pub fn maps_direct_as_is(&self) -> bool {
        self.direct_end != 0
    }

    /// True if the device can reach all of `[addr, addr + size)` (Linux `dma_capable`).
    #[inline]
    pub fn dma_capable(&self, addr: PhysAddr, size: usize) -> bool {
        match addr.checked_add((size as u64).wrapping_sub(1)) {
            _ if size == 0 => true,
            Some(last) => last <= self.last_reachable,
            // Past the end of the address space: only a device without a limit takes it.
            None => self.dma_limit.is_none(),
        }
    }

    /// True if the device reaches every address up to `last` (inclusive): the whole of a range
    /// that ends there, one compare (its reach starts at 0).
    #[inline]
    pub fn reaches_up_to(&self, last: PhysAddr) -> bool {
        last <= self.last_reachable
    }

    /// The per-device pool, if one is attached.
    pub fn device_pool(&self) -> Option<&'static DevicePoolSlot> {
        *self.device_pool.lock()
    }

    /// Attaches (or, with `None`, detaches) a per-device pool. Returns the previous one.
    pub fn set_device_pool(&self, pool: Option<&'static DevicePoolSlot>) -> Option<&'static DevicePoolSlot> {
        let mut slot = self.device_pool.lock();
        self.has_device_pool.store(pool.is_some(), Ordering::Release);
        core::mem::replace(&mut *slot, pool)
    }

    /// Whether a per-device pool slot is attached, lock-free (see [`device_pool`](Self::device_pool)).
    #[inline]
    pub fn has_device_pool(&self) -> bool {
        self.has_device_pool.load(Ordering::Acquire)
    }
}
