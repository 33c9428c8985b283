//! A block cache made of movable pages: the first real client of movable memory. Clean pages
//! (same as on the device) may be dropped when lent SWIOTLB memory is taken back; dirty pages are
//! migrated. Generic over [`PhysMemory`]; the block device plugs in later (it reads blocks into
//! [`PageCache::insert_clean`] and writes back [`PageCache::dirty_keys`]).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::error::{AllocError, HandleError};
use super::migrate::{DroppedPage, LockedPageAllocator, PinGuard};
use super::movable::{MovablePage, OwnerKind, PageOwner};
use super::zone::ZoneType;
use crate::mm::phys::PhysMemory;
use crate::mm::PAGE_SIZE;

/// A cached block: device number and block number (one 4 KiB page per block).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CacheKey {
    /// Device number.
    pub device: u16,
    /// Block number, below 2^48.
    pub block: u64,
}

const BLOCK_BITS: u32 = 48;

impl CacheKey {
    /// The key packed into a page-owner cookie.
    fn cookie(self) -> u64 {
        (u64::from(self.device) << BLOCK_BITS) | self.block
    }

    fn from_cookie(cookie: u64) -> Self {
        CacheKey { device: (cookie >> BLOCK_BITS) as u16, block: cookie & ((1 << BLOCK_BITS) - 1) }
    }
}

/// Why a cache operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheError {
    /// No movable memory for a new page.
    Alloc(AllocError),
    /// The block number does not fit in 48 bits.
    BadKey(CacheKey),
    /// The buffer is not exactly one page.
    BadLength(usize),
    /// The block is not cached.
    Missing(CacheKey),
}

/// Pages of cached blocks, keyed by (device, block).
pub struct PageCache<'a, M: PhysMemory + ?Sized> {
    allocator: &'a LockedPageAllocator,
    mem: &'a M,
    highest_zone: ZoneType,
    pages: BTreeMap<CacheKey, MovablePage>,
}

impl<'a, M: PhysMemory + ?Sized> PageCache<'a, M> {
    /// An empty cache taking movable pages from `allocator` in `highest_zone` or below.
    pub fn new(allocator: &'a LockedPageAllocator, mem: &'a M, highest_zone: ZoneType) -> Self {
        PageCache { allocator, mem, highest_zone, pages: BTreeMap::new() }
    }

    /// Caches a block just read from the device (clean).
    pub fn insert_clean(&mut self, key: CacheKey, data: &[u8]) -> Result<(), CacheError> {
        self.store(key, data, OwnerKind::Clean)
    }

    /// Writes a block in the cache (dirty until [`mark_clean`](Self::mark_clean)).
    pub fn write(&mut self, key: CacheKey, data: &[u8]) -> Result<(), CacheError> {
        self.store(key, data, OwnerKind::Dirty)
    }

    fn store(&mut self, key: CacheKey, data: &[u8], kind: OwnerKind) -> Result<(), CacheError> {
        if data.len() != PAGE_SIZE as usize {
            return Err(CacheError::BadLength(data.len()));
        }
        if key.block >> BLOCK_BITS != 0 {
            return Err(CacheError::BadKey(key));
        }
        loop {
            let page = match self.live_page(key) {
                Some(page) => page,
                None => {
                    // Dirty until the content is written, so reclaim cannot drop a blank page.
                    let owner = PageOwner { kind: OwnerKind::Dirty, cookie: key.cookie() };
                    let page = self.allocator.lock().alloc_movable(0, self.highest_zone, owner).map_err(CacheError::Alloc)?;
                    self.pages.insert(key, page);
                    page
                }
            };
            // A clean page may be dropped by reclaim between lookup and pin: start again.
            let Ok(pin) = self.allocator.pin(page) else { continue };
            self.mem.write(pin.addr(), data);
            // Set the kind while still pinned: reclaim cannot drop the page before it is marked.
            self.allocator.lock().set_owner_kind(page, kind).expect("a pinned page stays live");
            return Ok(());
        }
    }

    /// Reads a cached block into `buf`; `Ok(false)` on a miss (never cached, or dropped).
    pub fn read(&mut self, key: CacheKey, buf: &mut [u8]) -> Result<bool, CacheError> {
        if buf.len() != PAGE_SIZE as usize {
            return Err(CacheError::BadLength(buf.len()));
        }
        let Some(pin) = self.live_page(key).and_then(|page| self.allocator.pin(page).ok()) else {
            self.pages.remove(&key);
            return Ok(false);
        };
        self.mem.read(pin.addr(), buf);
        Ok(true)
    }

    /// Pins a cached block's page for I/O: its frame neither moves nor is dropped until the
    /// guard goes (reclaim reports it as pinned). `None` if the block is not cached.
    pub fn pin(&mut self, key: CacheKey) -> Option<PinGuard<'a>> {
        let page = self.live_page(key)?;
        self.allocator.pin(page).ok()
    }

    /// A new page for `key`, pinned, for the device to read the block into. It counts as dirty
    /// (reclaim must not drop a page whose content has not arrived) until
    /// [`mark_clean`](Self::mark_clean); on a failed read, [`remove`](Self::remove) it.
    pub fn insert_for_read(&mut self, key: CacheKey) -> Result<PinGuard<'a>, CacheError> {
        if key.block >> BLOCK_BITS != 0 {
            return Err(CacheError::BadKey(key));
        }
        self.remove(key);
        let owner = PageOwner { kind: OwnerKind::Dirty, cookie: key.cookie() };
        let page = self.allocator.lock().alloc_movable(0, self.highest_zone, owner).map_err(CacheError::Alloc)?;
        self.pages.insert(key, page);
        Ok(self.allocator.pin(page).expect("just allocated"))
    }

    /// Forgets a block and frees its page (a no-op if it is not cached).
    pub fn remove(&mut self, key: CacheKey) {
        if let Some(page) = self.pages.remove(&key).filter(|p| self.allocator.lock().is_movable_live(*p)) {
            match self.allocator.lock().free_movable(page) {
                Ok(()) | Err(super::FreeError::Handle(HandleError::Stale(_))) => {}
                Err(e) => log::error!("page_cache: page {page:?} not freed: {e:?}"),
            }
        }
    }

    /// The cached blocks, in order (some may have been dropped by reclaim since).
    pub fn keys(&self) -> impl Iterator<Item = CacheKey> + '_ {
        self.pages.keys().copied()
    }

    /// Marks a block clean after it was written back to the device.
    pub fn mark_clean(&mut self, key: CacheKey) -> Result<(), CacheError> {
        let page = self.live_page(key).ok_or(CacheError::Missing(key))?;
        self.allocator.lock().set_owner_kind(page, OwnerKind::Clean).map_err(|_| CacheError::Missing(key))
    }

    /// Blocks that must be written back.
    pub fn dirty_keys(&self) -> Vec<CacheKey> {
        // Lock per page: the Vec grows with the lock dropped (no heap use under the lock).
        self.pages
            .iter()
            .filter(|(_, p)| {
                let a = self.allocator.lock();
                a.is_movable_live(**p) && a.movable_info(**p).is_ok_and(|i| i.owner.kind == OwnerKind::Dirty)
            })
            .map(|(k, _)| *k)
            .collect()
    }

    /// Reclaim dropped one of our clean pages: forget it (pass this as reclaim's `on_drop`).
    pub fn page_dropped(&mut self, dropped: DroppedPage) {
        let key = CacheKey::from_cookie(dropped.cookie);
        if self.pages.get(&key) == Some(&dropped.page) {
            self.pages.remove(&key);
        }
    }

    /// Whether a block is cached.
    pub fn contains(&mut self, key: CacheKey) -> bool {
        self.live_page(key).is_some()
    }

    /// Number of cached blocks (including ones dropped but not yet noticed).
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// The handle of a cached block, forgetting it if its page is gone.
    fn live_page(&mut self, key: CacheKey) -> Option<MovablePage> {
        let page = *self.pages.get(&key)?;
        if self.allocator.lock().is_movable_live(page) {
            Some(page)
        } else {
            self.pages.remove(&key);
            None
        }
    }
}

impl<M: PhysMemory + ?Sized> Drop for PageCache<'_, M> {
    fn drop(&mut self) {
        let mut a = self.allocator.lock();
        for page in self.pages.values() {
            if !a.is_movable_live(*page) {
                continue; // dropped by reclaim
            }
            match a.free_movable(*page) {
                Ok(()) | Err(super::FreeError::Handle(HandleError::Stale(_))) => {}
                Err(e) => log::error!("page_cache: page {page:?} not freed: {e:?}"),
            }
        }
    }
}
