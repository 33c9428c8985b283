//! The page cache on a virtio-blk disk (Linux: the page cache of a block device and its
//! writeback). Each cached 4 KiB block is a movable page from [`PageCache`], so it may sit in a
//! lent MIGRATE_SWIOTLB pageblock; reclaim drops it when clean and migrates it when dirty. While
//! the device reads into a page or writes from it, the page is pinned: reclaim reports it and
//! moves on, and the device's DMA address stays valid. [`BlockCache::writeback`] writes every
//! dirty page back, as many in flight as the disk takes, then flushes the disk's own cache.
//!
//! Task context only (it waits, and the cache's map allocates). The board hands it the disk,
//! the page allocator and the RAM access (`platform`'s singletons on the machine); the clock and
//! the idle loop come from the disk's [`BlkEnv`].

use core::fmt;
use core::time::Duration;

use alloc::vec::Vec;

use drivers::virtio::Transport;

use super::virtio_blk::{BlkEnv, BlkError, Disk};
use super::Ticket;
use crate::mm::page_alloc::migrate::PinGuard;
use crate::mm::page_alloc::page_cache::{CacheError, CacheKey, PageCache};
use crate::mm::page_alloc::{LockedPageAllocator, ZoneType};
use crate::mm::phys::PhysMemory;
use crate::mm::{PhysAddr, PAGE_SIZE};

/// Bytes of a cached block (one page).
pub const BLOCK_SIZE: usize = PAGE_SIZE as usize;
const SECTORS_PER_BLOCK: u64 = BLOCK_SIZE as u64 / 512;

/// Why a cached read, write or writeback failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheIoError {
    /// The cache (no movable memory, bad length).
    Cache(CacheError),
    /// The disk.
    Blk(BlkError),
    /// The block lies beyond the end of the disk.
    OutOfRange {
        /// The block asked for.
        block: u64,
        /// The disk's size in blocks.
        blocks: u64,
    },
}

impl fmt::Display for CacheIoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheIoError::Cache(e) => write!(f, "page cache: {e:?}"),
            CacheIoError::Blk(e) => write!(f, "{e}"),
            CacheIoError::OutOfRange { block, blocks } => write!(f, "block {block} beyond the disk's {blocks} blocks"),
        }
    }
}

impl From<CacheError> for CacheIoError {
    fn from(e: CacheError) -> Self {
        CacheIoError::Cache(e)
    }
}

impl From<BlkError> for CacheIoError {
    fn from(e: BlkError) -> Self {
        CacheIoError::Blk(e)
    }
}

/// Counters of one cache.
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheStats {
    /// Reads served from the cache.
    pub hits: u64,
    /// Reads that went to the disk (into a new, pinned page).
    pub misses: u64,
    /// Dirty pages written back.
    pub written_back: u64,
    /// Most writeback requests in flight at once.
    pub max_in_flight: usize,
}

/// The page cache of one disk, its pages from `pages`, reached through `mem`.
pub struct BlockCache<'a, T: Transport, E: BlkEnv, M: PhysMemory + ?Sized> {
    disk: &'a Disk<'a, T, E>,
    cache: PageCache<'a, M>,
    mem: &'a M,
    timeout: Duration,
    /// Counters.
    pub stats: CacheStats,
}

impl<'a, T: Transport, E: BlkEnv, M: PhysMemory + ?Sized> BlockCache<'a, T, E, M> {
    /// An empty cache on `disk`, its pages movable ones (ZONE_NORMAL) from `pages`, read and
    /// written through `mem`; each request must complete within `timeout`.
    pub fn new(disk: &'a Disk<'a, T, E>, pages: &'a LockedPageAllocator, mem: &'a M, timeout: Duration) -> Self {
        let cache = PageCache::new(pages, mem, ZoneType::Normal);
        BlockCache { disk, cache, mem, timeout, stats: CacheStats::default() }
    }

    fn key(&self, block: u64) -> Result<CacheKey, CacheIoError> {
        let blocks = self.disk.size_bytes() / BLOCK_SIZE as u64;
        if block >= blocks {
            return Err(CacheIoError::OutOfRange { block, blocks });
        }
        Ok(CacheKey { device: self.disk.index as u16, block })
    }

    /// Writes a whole block into the cache (dirty until written back).
    pub fn write(&mut self, block: u64, data: &[u8]) -> Result<(), CacheIoError> {
        let key = self.key(block)?;
        Ok(self.cache.write(key, data)?)
    }

    /// Reads a whole block: from the cache, or from the disk straight into a new cache page
    /// (pinned while the device writes it). Returns whether it was a hit.
    #[allow(unsafe_code)] // the block seam: reads into its own pinned pages
    pub fn read(&mut self, block: u64, buf: &mut [u8]) -> Result<bool, CacheIoError> {
        let key = self.key(block)?;
        if self.cache.read(key, buf)? {
            self.stats.hits += 1;
            return Ok(true);
        }
        if buf.len() != BLOCK_SIZE {
            return Err(CacheError::BadLength(buf.len()).into());
        }
        self.stats.misses += 1;
        let pin = self.cache.insert_for_read(key)?;
        // SAFETY: the page is the cache's, new and pinned (`pin`) until after the read returned;
        // nothing else touches it meanwhile (`&mut self`).
        let read = unsafe { self.disk.read(block * SECTORS_PER_BLOCK, pin.addr(), BLOCK_SIZE, self.timeout) };
        match read {
            Ok(()) => {
                self.mem.read(pin.addr(), buf);
                drop(pin);
                self.cache.mark_clean(key)?;
                Ok(false)
            }
            Err(e) => {
                drop(pin);
                self.cache.remove(key);
                Err(e.into())
            }
        }
    }

    /// Writes every dirty block back (each page pinned while its write is in flight), then
    /// flushes the disk. Returns how many blocks were written. On an error the blocks not
    /// written stay dirty; every request started is waited for before returning.
    #[allow(unsafe_code)] // the block seam: writes its own pinned pages back
    pub fn writeback(&mut self) -> Result<usize, CacheIoError> {
        let keys = self.cache.dirty_keys();
        let max_in_flight = self.disk.max_in_flight();
        let mut in_flight: Vec<(Ticket, CacheKey, PinGuard<'a>)> = Vec::with_capacity(max_in_flight);
        let mut next = 0;
        let mut written = 0;
        let mut first_error: Option<CacheIoError> = None;
        let give_up = self.disk.env().uptime() + self.timeout;
        while (next < keys.len() && first_error.is_none()) || !in_flight.is_empty() {
            let mut busy = false;
            // One notification for the pages queued in this pass (Linux writeback plugs too).
            let plug = self.disk.plug();
            while next < keys.len() && in_flight.len() < max_in_flight && first_error.is_none() {
                let key = keys[next];
                // A dirty page is never dropped; if it is gone, it was removed meanwhile.
                let Some(pin) = self.cache.pin(key) else {
                    next += 1;
                    continue;
                };
                // SAFETY: the page is the cache's and stays pinned in `in_flight` until its ticket
                // is collected below; nothing writes it meanwhile (`&mut self`).
                let queued = unsafe { plug.queue_write(key.block * SECTORS_PER_BLOCK, pin.addr(), BLOCK_SIZE) };
                match queued {
                    Ok(ticket) => {
                        in_flight.push((ticket, key, pin));
                        next += 1;
                    }
                    Err(BlkError::Busy) => {
                        busy = true;
                        break;
                    }
                    Err(e) => first_error = Some(e.into()),
                }
            }
            plug.finish();
            self.stats.max_in_flight = self.stats.max_in_flight.max(in_flight.len());
            let mut i = 0;
            while i < in_flight.len() {
                match self.disk.poll(in_flight[i].0) {
                    None => i += 1,
                    Some(outcome) => {
                        let (_, key, pin) = in_flight.swap_remove(i);
                        drop(pin);
                        match outcome {
                            Ok(()) => {
                                self.cache.mark_clean(key)?;
                                written += 1;
                            }
                            Err(e) => {
                                first_error.get_or_insert(e.into());
                            }
                        }
                    }
                }
            }
            if busy && in_flight.is_empty() && self.disk.env().uptime() > give_up {
                first_error.get_or_insert(BlkError::Timeout.into());
            }
            if !in_flight.is_empty() || busy {
                // Each request has its own deadline: the loop ends even if the device hangs.
                self.disk.check_timeouts();
                self.disk.env().idle();
            }
        }
        self.stats.written_back += written as u64;
        if let Some(e) = first_error {
            return Err(e);
        }
        if self.disk.features & drivers::virtio::blk::feature::FLUSH != 0 {
            self.disk.flush(self.timeout)?;
        }
        Ok(written)
    }

    /// Cached blocks (some may have been dropped by reclaim since).
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Dirty blocks.
    pub fn dirty(&self) -> usize {
        self.cache.dirty_keys().len()
    }

    /// How many cached pages lie where `pred` says (e.g. in lent SWIOTLB pageblocks), and how
    /// many are still cached at all.
    pub fn count_pages(&mut self, pred: impl Fn(PhysAddr) -> bool) -> (usize, usize) {
        let keys: Vec<CacheKey> = self.cache.keys().collect();
        let (mut matching, mut live) = (0, 0);
        for key in keys {
            if let Some(pin) = self.cache.pin(key) {
                live += 1;
                if pred(pin.addr()) {
                    matching += 1;
                }
            }
        }
        (matching, live)
    }
}
