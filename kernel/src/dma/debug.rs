//! DMA-API debugging (Linux: `kernel/dma/debug.c`, `CONFIG_DMA_API_DEBUG`, bootarg `dma_debug=`).
//!
//! Every streaming mapping is recorded when made and checked when synced or unmapped, so that a
//! driver's misuse is reported where it happens instead of corrupting memory later. The tracker
//! works in interrupt context: a fixed-size table behind an IRQ-masking lock, no allocation.
//! Each report is returned as a [`DmaDebugError`] (and counted); the DMA API logs it.
#![forbid(unsafe_code)]

use core::fmt;

use super::{DmaAddr, DmaDirection};
use crate::sync::IrqSafeSpinLock;

/// Mappings tracked at once (Linux preallocates 65536 entries; we need far fewer).
pub const MAX_ENTRIES: usize = 1024;
/// Recently unmapped entries kept to tell a double unmap from an unknown address.
const RECENT_FREED: usize = 64;

/// A device, as the tracker knows it.
pub type DeviceId = u32;

/// Misuse found by the tracker; the names follow Linux's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaDebugError {
    /// "device driver tries to free DMA memory it has not allocated".
    UnmapUnknown {
        /// The device whose driver made the call.
        dev: DeviceId,
        /// The DMA address passed to unmap, which no live mapping of `dev` starts at.
        addr: DmaAddr,
    },
    /// The same mapping unmapped twice.
    DoubleUnmap {
        /// The device whose driver made the call.
        dev: DeviceId,
        /// The DMA address of the mapping, recently unmapped already.
        addr: DmaAddr,
    },
    /// "device driver frees DMA memory with different size".
    UnmapWrongSize {
        /// The device whose driver made the call.
        dev: DeviceId,
        /// The DMA address of the mapping.
        addr: DmaAddr,
        /// The size it was mapped with, in bytes.
        mapped: usize,
        /// The size passed to unmap, in bytes.
        unmapped: usize,
    },
    /// "device driver frees DMA memory with different direction".
    UnmapWrongDirection {
        /// The device whose driver made the call.
        dev: DeviceId,
        /// The DMA address of the mapping.
        addr: DmaAddr,
        /// The direction it was mapped with.
        mapped: DmaDirection,
        /// The direction passed to unmap.
        unmapped: DmaDirection,
    },
    /// "device driver failed to check map error".
    MapErrorNotChecked {
        /// The device whose driver made the call.
        dev: DeviceId,
        /// The DMA address of the mapping, now unmapped.
        addr: DmaAddr,
    },
    /// "device driver tries to sync DMA memory it has not allocated".
    SyncUnknown {
        /// The device whose driver made the call.
        dev: DeviceId,
        /// The DMA address passed to sync, inside no live mapping of `dev`.
        addr: DmaAddr,
    },
    /// "device driver syncs DMA memory outside allocated range".
    SyncOutOfRange {
        /// The device whose driver made the call.
        dev: DeviceId,
        /// Where the sync starts (inside the mapping).
        addr: DmaAddr,
        /// How many bytes the sync covers.
        size: usize,
        /// Where the mapping the sync starts in begins.
        mapped_addr: DmaAddr,
        /// That mapping's size in bytes, which the sync runs past.
        mapped_size: usize,
    },
    /// "device driver syncs DMA memory with different direction".
    SyncWrongDirection {
        /// The device whose driver made the call.
        dev: DeviceId,
        /// Where the sync starts.
        addr: DmaAddr,
        /// The direction the mapping was made with.
        mapped: DmaDirection,
        /// The direction passed to sync.
        synced: DmaDirection,
    },
    /// "device driver has pending DMA allocations while released from device".
    LeakedAtRemove {
        /// The device going away.
        dev: DeviceId,
        /// How many of its mappings are still live.
        count: usize,
    },
    /// The tracker's table is full; this mapping is not tracked.
    TableFull,
}

impl fmt::Display for DmaDebugError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DmaDebugError::*;
        match *self {
            UnmapUnknown { dev, addr } => write!(f, "DMA-API: dev {dev}: driver tries to free DMA memory it has not allocated [addr={addr:#x}]"),
            DoubleUnmap { dev, addr } => write!(f, "DMA-API: dev {dev}: driver unmaps [addr={addr:#x}] a second time"),
            UnmapWrongSize { dev, addr, mapped, unmapped } => write!(f, "DMA-API: dev {dev}: driver frees DMA memory with different size [addr={addr:#x}] [map size={mapped} bytes] [unmap size={unmapped} bytes]"),
            UnmapWrongDirection { dev, addr, mapped, unmapped } => write!(f, "DMA-API: dev {dev}: driver frees DMA memory with different direction [addr={addr:#x}] [mapped as {mapped:?}] [unmapped as {unmapped:?}]"),
            MapErrorNotChecked { dev, addr } => write!(f, "DMA-API: dev {dev}: driver failed to check map error [addr={addr:#x}]"),
            SyncUnknown { dev, addr } => write!(f, "DMA-API: dev {dev}: driver tries to sync DMA memory it has not allocated [addr={addr:#x}]"),
            SyncOutOfRange { dev, addr, size, mapped_addr, mapped_size } => write!(f, "DMA-API: dev {dev}: driver syncs DMA memory outside allocated range [mapping addr={mapped_addr:#x} size={mapped_size}] [sync addr={addr:#x} size={size}]"),
            SyncWrongDirection { dev, addr, mapped, synced } => write!(f, "DMA-API: dev {dev}: driver syncs DMA memory with different direction [addr={addr:#x}] [mapped as {mapped:?}] [synced as {synced:?}]"),
            LeakedAtRemove { dev, count } => write!(f, "DMA-API: dev {dev}: driver has {count} pending DMA mappings while released from device"),
            TableFull => write!(f, "DMA-API: debugging table full ({MAX_ENTRIES} entries): a mapping is not tracked"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    dev: DeviceId,
    addr: DmaAddr,
    size: usize,
    dir: DmaDirection,
    error_checked: bool,
}

struct Table {
    live: [Option<Entry>; MAX_ENTRIES],
    count: usize,
    freed: [Option<(DeviceId, DmaAddr)>; RECENT_FREED],
    freed_next: usize,
    errors: u64,
    last_error: Option<DmaDebugError>,
    /// The table overflowed: nothing is checked any more (Linux `global_disable`).
    disabled: bool,
}

/// The tracker.
pub struct DmaDebug {
    table: IrqSafeSpinLock<Table>,
}

impl Default for DmaDebug {
    fn default() -> Self {
        Self::new()
    }
}

impl DmaDebug {
    /// An empty tracker.
    pub const fn new() -> Self {
        Self {
            table: IrqSafeSpinLock::new(Table {
                live: [None; MAX_ENTRIES],
                count: 0,
                freed: [None; RECENT_FREED],
                freed_next: 0,
                errors: 0,
                last_error: None,
                disabled: false,
            }),
        }
    }

    fn report(table: &mut Table, e: DmaDebugError) -> DmaDebugError {
        table.errors += 1;
        table.last_error = Some(e);
        e
    }

    fn slot_of(addr: DmaAddr) -> usize {
        // Bounce slots are 2 KiB apart; mix the bits above that for the probe start.
        let h = (addr >> 6).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> 32) as usize % MAX_ENTRIES
    }

    fn find(table: &Table, dev: DeviceId, addr: DmaAddr) -> Option<usize> {
        let start = Self::slot_of(addr);
        (0..MAX_ENTRIES).map(|i| (start + i) % MAX_ENTRIES).find(|&i| matches!(table.live[i], Some(e) if e.dev == dev && e.addr == addr))
    }

    /// Records a new mapping (Linux: `debug_dma_map_page`).
    pub fn map(&self, dev: DeviceId, addr: DmaAddr, size: usize, dir: DmaDirection) -> Result<(), DmaDebugError> {
        let mut t = self.table.lock();
        let start = Self::slot_of(addr);
        if t.disabled {
            return Ok(());
        }
        let Some(i) = (0..MAX_ENTRIES).map(|i| (start + i) % MAX_ENTRIES).find(|&i| t.live[i].is_none()) else {
            // An untracked mapping would make its own correct unmap look like misuse (and be
            // refused, leaking its slots): stop checking altogether, as Linux does ("debugging
            // out of memory - disabling").
            t.disabled = true;
            return Err(Self::report(&mut t, DmaDebugError::TableFull));
        };
        t.live[i] = Some(Entry { dev, addr, size, dir, error_checked: false });
        t.count += 1;
        Ok(())
    }

    /// The driver checked the result of the mapping (Linux: `debug_dma_mapping_error`).
    pub fn mapping_error_checked(&self, dev: DeviceId, addr: DmaAddr) {
        let mut t = self.table.lock();
        if let Some(i) = Self::find(&t, dev, addr) {
            if let Some(e) = t.live[i].as_mut() {
                e.error_checked = true;
            }
        }
    }

    /// Checks and forgets a mapping (Linux: `debug_dma_unmap_page` / `check_unmap`). The first
    /// problem found is returned. An unmap with the wrong size or direction is refused and the
    /// entry kept; otherwise the entry is removed whenever it was found.
    pub fn unmap(&self, dev: DeviceId, addr: DmaAddr, size: usize, dir: DmaDirection) -> Result<(), DmaDebugError> {
        let mut t = self.table.lock();
        if t.disabled {
            // Nothing is checked any more; still forget what was tracked.
            if let Some(i) = Self::find(&t, dev, addr) {
                t.live[i] = None;
                t.count -= 1;
            }
            return Ok(());
        }
        let Some(i) = Self::find(&t, dev, addr) else {
            let double = t.freed.iter().flatten().any(|&(d, a)| d == dev && a == addr);
            let e = if double { DmaDebugError::DoubleUnmap { dev, addr } } else { DmaDebugError::UnmapUnknown { dev, addr } };
            return Err(Self::report(&mut t, e));
        };
        let entry = t.live[i].expect("found above");
        // A wrong size or direction refuses the unmap: the mapping stays, tracked, and the
        // caller's correct unmap afterwards ends it (Linux warns and unmaps anyway; here
        // nothing is done with a wrong size, so nothing may be forgotten either).
        if entry.size != size {
            return Err(Self::report(&mut t, DmaDebugError::UnmapWrongSize { dev, addr, mapped: entry.size, unmapped: size }));
        }
        if entry.dir != dir {
            return Err(Self::report(&mut t, DmaDebugError::UnmapWrongDirection { dev, addr, mapped: entry.dir, unmapped: dir }));
        }
        t.live[i] = None;
        t.count -= 1;
        let n = t.freed_next;
        t.freed[n] = Some((dev, addr));
        t.freed_next = (n + 1) % RECENT_FREED;
        if !entry.error_checked {
            return Err(Self::report(&mut t, DmaDebugError::MapErrorNotChecked { dev, addr }));
        }
        Ok(())
    }

    /// Checks a partial or whole sync of `[addr, addr + size)` (Linux: `check_sync`). A sync may
    /// start inside a mapping; it must end inside it and use the mapping's direction (any
    /// direction is fine for a bidirectional mapping).
    pub fn sync(&self, dev: DeviceId, addr: DmaAddr, size: usize, dir: DmaDirection) -> Result<(), DmaDebugError> {
        let mut t = self.table.lock();
        if t.disabled {
            return Ok(());
        }
        let entry = t.live.iter().flatten().find(|e| e.dev == dev && addr >= e.addr && addr < e.addr + e.size as u64).copied();
        let Some(e) = entry else {
            return Err(Self::report(&mut t, DmaDebugError::SyncUnknown { dev, addr }));
        };
        if addr + size as u64 > e.addr + e.size as u64 {
            return Err(Self::report(&mut t, DmaDebugError::SyncOutOfRange { dev, addr, size, mapped_addr: e.addr, mapped_size: e.size }));
        }
        if e.dir != DmaDirection::Bidirectional && e.dir != dir {
            return Err(Self::report(&mut t, DmaDebugError::SyncWrongDirection { dev, addr, mapped: e.dir, synced: dir }));
        }
        Ok(())
    }

    /// Checks that a device going away has no live mappings (Linux: `dma_debug_device_change`).
    pub fn device_removed(&self, dev: DeviceId) -> Result<(), DmaDebugError> {
        let mut t = self.table.lock();
        if t.disabled {
            return Ok(());
        }
        let count = t.live.iter().flatten().filter(|e| e.dev == dev).count();
        if count > 0 {
            return Err(Self::report(&mut t, DmaDebugError::LeakedAtRemove { dev, count }));
        }
        Ok(())
    }

    /// Live mappings, all devices.
    pub fn live(&self) -> usize {
        self.table.lock().count
    }

    /// Errors reported since boot, and the last one.
    pub fn errors(&self) -> (u64, Option<DmaDebugError>) {
        let t = self.table.lock();
        (t.errors, t.last_error)
    }

    /// Calls `f` for every live mapping (dev, addr, size, dir): for the `dma-mappings` views.
    pub fn for_each_live(&self, mut f: impl FnMut(DeviceId, DmaAddr, usize, DmaDirection)) {
        let t = self.table.lock();
        for e in t.live.iter().flatten() {
            f(e.dev, e.addr, e.size, e.dir);
        }
    }
}

#[cfg(test)]
mod tests;
