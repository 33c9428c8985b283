//! Movable pages: allocations held through a handle so their frame can change, with pin counts
//! that hold the frame still while the CPU or a device uses it.
//!
//! A [`MovablePage`] names a slot of the handle table plus the slot's generation, so a handle
//! kept after its page was freed (or dropped by reclaim) is detected as stale, never resolved to
//! someone else's page. The table is allocated once, one slot per page of the span.

use alloc::vec::Vec;

use super::error::{AllocError, FreeError, HandleError};
use super::migratetype::MigrateType;
use super::page::{PageDesc, NIL};
use super::zone::ZoneType;
use super::PageAllocator;
use crate::mm::PhysAddr;

/// A handle on a movable allocation. Copyable; using it after the page was freed gives
/// [`HandleError::Stale`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MovablePage {
    slot: u32,
    generation: u32,
}

impl MovablePage {
    /// The handle table slot; a movable page's descriptor (`PageDesc::Movable`) names it.
    pub(super) fn slot(self) -> u32 {
        self.slot
    }
}

/// Whether the owner can rebuild a page's content, which decides what reclaim does with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerKind {
    /// A clean cache page: reclaim may drop it and tell the owner (Linux: clean file pages).
    Clean,
    /// Dirty or anonymous: the content exists nowhere else, so reclaim must migrate it.
    Dirty,
}

/// Who owns a movable page: its kind and an opaque cookie handed back when the page is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageOwner {
    /// Whether reclaim may drop the page or must migrate it.
    pub kind: OwnerKind,
    /// The owner's own name for the page (the page cache packs its [`CacheKey`] here), given
    /// back in a [`DroppedPage`].
    ///
    /// [`CacheKey`]: super::page_cache::CacheKey
    /// [`DroppedPage`]: super::DroppedPage
    pub cookie: u64,
}

/// What a handle resolves to now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MovableInfo {
    /// The current frame. Only stable while the page is pinned.
    pub addr: PhysAddr,
    /// The allocation's order (`2^order` pages).
    pub order: u8,
    /// Who owns it.
    pub owner: PageOwner,
    /// Pins held, long-term ones included.
    pub pins: u32,
    /// Of those, pins taken with `pin_longterm`.
    pub longterm_pins: u32,
}

/// A live movable allocation.
#[derive(Clone, Copy, Debug)]
pub(super) struct MovableEntry {
    /// Page index of the frame's head.
    pub(super) idx: usize,
    pub(super) order: u8,
    /// Highest zone the owner accepts; migration targets respect it.
    pub(super) highest_zone: ZoneType,
    pub(super) owner: PageOwner,
    pub(super) pins: u32,
    pub(super) longterm_pins: u32,
    /// Bumped by every pin: a migration whose copy saw a different value retries, because the
    /// page may have been written through that pin while being copied.
    pub(super) pin_seq: u32,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    generation: u32,
    entry: Option<MovableEntry>,
    /// Next vacant slot while this one is vacant.
    next_vacant: u32,
}

/// The handle table: fixed size, so handing out a handle never allocates from the heap.
pub(super) struct MovableTable {
    slots: Vec<Slot>,
    first_vacant: u32,
}

impl MovableTable {
    pub(super) fn new(capacity: usize) -> Self {
        let slots = (0..capacity)
            .map(|i| Slot { generation: 0, entry: None, next_vacant: if i + 1 < capacity { i as u32 + 1 } else { NIL } })
            .collect();
        MovableTable { slots, first_vacant: if capacity > 0 { 0 } else { NIL } }
    }

    fn insert(&mut self, entry: MovableEntry) -> Option<MovablePage> {
        let slot = self.first_vacant;
        let s = self.slots.get_mut(slot as usize)?;
        self.first_vacant = s.next_vacant;
        s.entry = Some(entry);
        Some(MovablePage { slot, generation: s.generation })
    }

    fn remove(&mut self, page: MovablePage) -> Option<MovableEntry> {
        let s = self.slots.get_mut(page.slot as usize).filter(|s| s.generation == page.generation)?;
        let entry = s.entry.take()?;
        s.generation = s.generation.wrapping_add(1);
        s.next_vacant = self.first_vacant;
        self.first_vacant = page.slot;
        Some(entry)
    }

    pub(super) fn get(&self, page: MovablePage) -> Option<&MovableEntry> {
        self.slots.get(page.slot as usize).filter(|s| s.generation == page.generation)?.entry.as_ref()
    }

    pub(super) fn get_mut(&mut self, page: MovablePage) -> Option<&mut MovableEntry> {
        self.slots.get_mut(page.slot as usize).filter(|s| s.generation == page.generation)?.entry.as_mut()
    }

    /// The handle currently held in `slot`.
    pub(super) fn handle(&self, slot: u32) -> MovablePage {
        MovablePage { slot, generation: self.slots[slot as usize].generation }
    }

    /// Live handles (for the invariant checks of the tests).
    #[cfg(test)]
    pub(super) fn live(&self) -> impl Iterator<Item = (MovablePage, &MovableEntry)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.entry.as_ref().map(|e| (MovablePage { slot: i as u32, generation: s.generation }, e)))
    }
}

impl PageAllocator {
    /// Allocates a movable block of `2^order` pages: from MOVABLE blocks, else borrowed from lent
    /// SWIOTLB blocks or CMA blocks, else stolen from UNMOVABLE ones (see the table in
    /// [`migratetype`](super::migratetype)).
    pub fn alloc_movable(&mut self, order: u8, highest_zone: ZoneType, owner: PageOwner) -> Result<MovablePage, AllocError> {
        self.alloc_movable_inner(order, highest_zone, owner, true)
    }

    pub(super) fn alloc_movable_inner(
        &mut self,
        order: u8,
        highest_zone: ZoneType,
        owner: PageOwner,
        allow_borrow: bool,
    ) -> Result<MovablePage, AllocError> {
        let idx = self.rmqueue(order, highest_zone, MigrateType::Movable, allow_borrow)?;
        let entry = MovableEntry { idx, order, highest_zone, owner, pins: 0, longterm_pins: 0, pin_seq: 0 };
        let Some(page) = self.movable.insert(entry) else {
            // Cannot happen: there is a slot per page. Stay correct anyway.
            self.free_one_page(idx, order);
            return Err(AllocError::NoMemory);
        };
        self.mem_map[idx] = PageDesc::Movable { order, slot: page.slot };
        Ok(page)
    }

    /// Frees a movable page. Refused while it is pinned.
    pub fn free_movable(&mut self, page: MovablePage) -> Result<(), FreeError> {
        let entry = self.entry(page)?;
        if entry.pins > 0 {
            log::error!("page_alloc: free of pinned movable page {page:?}");
            return Err(HandleError::Pinned(page).into());
        }
        let (idx, order) = (entry.idx, entry.order);
        self.movable.remove(page);
        self.mem_map[idx] = PageDesc::Allocated { order };
        self.free_one_page(idx, order);
        Ok(())
    }

    /// Drops a clean, unpinned page during reclaim: the frame is freed and the handle goes stale.
    pub(super) fn drop_movable(&mut self, page: MovablePage) -> Option<PageOwner> {
        let entry = self.movable.remove(page)?;
        self.mem_map[entry.idx] = PageDesc::Allocated { order: entry.order };
        self.free_one_page(entry.idx, entry.order);
        Some(entry.owner)
    }

    /// True if `page` is a live handle (for owners, like the page cache, whose clean pages
    /// reclaim may drop: for them a stale handle is news, not a bug, and is not logged).
    pub fn is_movable_live(&self, page: MovablePage) -> bool {
        self.movable.get(page).is_some()
    }

    /// The entry of a live handle, logging a stale one.
    pub(super) fn entry(&self, page: MovablePage) -> Result<&MovableEntry, HandleError> {
        self.movable.get(page).ok_or_else(|| {
            log::error!("page_alloc: stale movable page handle {page:?}");
            HandleError::Stale(page)
        })
    }

    fn entry_mut(&mut self, page: MovablePage) -> Result<&mut MovableEntry, HandleError> {
        self.entry(page)?;
        Ok(self.movable.get_mut(page).expect("checked above"))
    }

    /// Where the page is now and who owns it. The address may change as soon as the lock is
    /// dropped unless the page is pinned.
    pub fn movable_info(&self, page: MovablePage) -> Result<MovableInfo, HandleError> {
        let e = self.entry(page)?;
        Ok(MovableInfo { addr: self.addr_of(e.idx), order: e.order, owner: e.owner, pins: e.pins, longterm_pins: e.longterm_pins })
    }

    /// Marks the page clean (droppable) or dirty (must be migrated).
    pub fn set_owner_kind(&mut self, page: MovablePage, kind: OwnerKind) -> Result<(), HandleError> {
        self.entry_mut(page)?.owner.kind = kind;
        Ok(())
    }

    /// Pins the page so its frame stays put (short-term: CPU access, a streaming DMA mapping) and
    /// returns the frame. Prefer [`LockedPageAllocator::pin`](super::LockedPageAllocator::pin),
    /// whose guard unpins.
    pub fn pin(&mut self, page: MovablePage) -> Result<PhysAddr, HandleError> {
        let e = self.entry_mut(page)?;
        e.pins += 1;
        e.pin_seq = e.pin_seq.wrapping_add(1);
        let idx = e.idx;
        Ok(self.addr_of(idx))
    }

    /// Marks a pin long-term. The caller has made sure the page is outside SWIOTLB and CMA blocks.
    pub(super) fn pin_longterm_here(&mut self, page: MovablePage) -> Result<PhysAddr, HandleError> {
        let addr = self.pin(page)?;
        self.entry_mut(page)?.longterm_pins += 1;
        Ok(addr)
    }

    /// Drops one pin taken by [`pin`](Self::pin) (`longterm` for one from `pin_longterm`).
    pub fn unpin(&mut self, page: MovablePage, longterm: bool) -> Result<(), HandleError> {
        let e = self.entry_mut(page)?;
        let held = if longterm { e.longterm_pins } else { e.pins - e.longterm_pins };
        if held == 0 {
            log::error!("page_alloc: unpin of unpinned movable page {page:?}");
            return Err(HandleError::NotPinned(page));
        }
        e.pins -= 1;
        if longterm {
            e.longterm_pins -= 1;
        }
        Ok(())
    }
}
