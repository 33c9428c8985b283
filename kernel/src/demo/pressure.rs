//! A memory-pressure workload: fills movable memory with checksummed pages so migration and
//! reclaim can be checked to preserve every byte.
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;

use crate::mm::page_alloc::{AllocError, FreeError, LockedPageAllocator, MovablePage, OwnerKind, PageOwner, ZoneType};
use crate::mm::phys::PhysMemory;
use crate::mm::PAGE_SIZE;

/// A page whose content no longer matches what was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PressureError {
    /// The page's handle went stale (dirty pages must never be dropped).
    Stale(MovablePage),
    /// The content changed.
    Corrupt {
        /// The page's handle.
        page: MovablePage,
        /// The checksum of what was written.
        expected: u64,
        /// The checksum of what was read back.
        found: u64,
    },
}

/// Dirty movable pages filled with pseudo-random content, and their checksums.
pub struct MemoryPressure {
    pages: Vec<(MovablePage, u64)>,
}

impl MemoryPressure {
    /// Allocates up to `max_pages` dirty order-0 movable pages (fewer if memory runs out) and
    /// fills each with a stream derived from `seed`. Taken to the last page (`usize::MAX`), it
    /// stops at the first allocation that fails, or when its own list could not grow (the heap
    /// grows from the pages it takes): out of memory is an answer, never a panic.
    pub fn fill<M: PhysMemory + ?Sized>(
        allocator: &LockedPageAllocator,
        mem: &M,
        highest_zone: ZoneType,
        max_pages: usize,
        seed: u64,
    ) -> Self {
        let mut buf = vec![0u8; PAGE_SIZE as usize];
        let mut pages = Vec::new();
        for i in 0..max_pages {
            if pages.try_reserve(1).is_err() {
                break;
            }
            let owner = PageOwner { kind: OwnerKind::Dirty, cookie: i as u64 };
            let page = match allocator.lock().alloc_movable(0, highest_zone, owner) {
                Ok(page) => page,
                Err(AllocError::NoMemory) => break,
                Err(e) => unreachable!("order-0 movable allocation: {e:?}"),
            };
            fill_pattern(&mut buf, seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let pin = allocator.pin(page).expect("just allocated");
            mem.write(pin.addr(), &buf);
            pages.push((page, checksum(&buf)));
        }
        MemoryPressure { pages }
    }

    /// Number of pages held.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether no page is held.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// The handles held.
    pub fn pages(&self) -> impl Iterator<Item = MovablePage> + '_ {
        self.pages.iter().map(|(p, _)| *p)
    }

    /// Re-reads every page through a pin and compares checksums; returns pages checked.
    pub fn verify<M: PhysMemory + ?Sized>(&self, allocator: &LockedPageAllocator, mem: &M) -> Result<usize, PressureError> {
        let mut buf = vec![0u8; PAGE_SIZE as usize];
        for &(page, expected) in &self.pages {
            let pin = allocator.pin(page).map_err(|_| PressureError::Stale(page))?;
            mem.read(pin.addr(), &mut buf);
            let found = checksum(&buf);
            if found != expected {
                return Err(PressureError::Corrupt { page, expected, found });
            }
        }
        Ok(self.pages.len())
    }

    /// Frees every page.
    pub fn release(self, allocator: &LockedPageAllocator) -> Result<(), FreeError> {
        let mut a = allocator.lock();
        self.pages.iter().try_for_each(|(p, _)| a.free_movable(*p))
    }

    /// Frees every `n`th page (to make room for migration targets); pinned pages are kept.
    /// Returns how many were freed.
    pub fn release_every(&mut self, allocator: &LockedPageAllocator, n: usize) -> usize {
        let mut a = allocator.lock();
        let before = self.pages.len();
        let mut i = 0;
        self.pages.retain(|(page, _)| {
            i += 1;
            !((i - 1) % n.max(1) == 0 && a.free_movable(*page).is_ok())
        });
        before - self.pages.len()
    }
}

/// xorshift64* stream: cheap, deterministic, different for every page.
fn fill_pattern(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// FNV-1a, 64 bit.
pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}
