//! Changing a pageblock's type and isolating it (Linux: `move_freepages_block`,
//! `set_migratetype_isolate`, `unset_migratetype_isolate` in `mm/page_isolation.c`).

use super::migrate::ReclaimReport;
use super::migratetype::MigrateType;
use super::page::PageDesc;
use super::{PageAllocator, MAX_PAGE_ORDER, PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER};

impl PageAllocator {
    /// The first block head (free, allocated or movable) at or after `from`, before `end`.
    pub(super) fn next_head(&self, from: usize, end: usize) -> Option<(usize, PageDesc)> {
        (from..end).map(|idx| (idx, self.mem_map[idx])).find(|(_, d)| !matches!(d, PageDesc::Tail | PageDesc::Unmanaged))
    }

    /// Every block head of a pageblock, skipping the tails of each block.
    pub(super) fn pageblock_heads(&self, block: usize) -> impl Iterator<Item = (usize, PageDesc)> + '_ {
        let end = (block + 1) << PAGEBLOCK_ORDER;
        let mut from = block << PAGEBLOCK_ORDER;
        core::iter::from_fn(move || {
            let (idx, desc) = self.next_head(from, end)?;
            from = idx + (1usize << desc_order(desc));
            Some((idx, desc))
        })
    }

    /// Free pages in a pageblock.
    pub(super) fn free_pages_in_block(&self, block: usize) -> usize {
        self.pageblock_heads(block)
            .map(|(_, d)| match d {
                PageDesc::Free { order, .. } => 1 << order,
                _ => 0,
            })
            .sum()
    }

    /// Sets the pageblock's type and moves its free pages to the new type's lists.
    pub(super) fn move_freepages_block(&mut self, block: usize, to: MigrateType) {
        let from = self.pageblock_type[block].expect("moving free pages of an unmanaged pageblock");
        let (mut from_idx, end) = (block << PAGEBLOCK_ORDER, (block + 1) << PAGEBLOCK_ORDER);
        while let Some((idx, desc)) = self.next_head(from_idx, end) {
            if let PageDesc::Free { order, .. } = desc {
                self.del_from_free_list(idx, order, from);
                self.add_to_free_list(idx, order, to);
            }
            from_idx = idx + (1 << desc_order(desc));
        }
        self.pageblock_type[block] = Some(to);
    }

    /// Isolates a pageblock: no allocation lands there any more and its free pages (and pages
    /// freed later) are counted as ISOLATE, unmerged and on no list (see `add_to_free_list`).
    /// Reclaim and compaction use [`isolate_pageblock_checked`](Self::isolate_pageblock_checked).
    #[cfg(test)]
    pub(super) fn start_isolate_pageblock(&mut self, block: usize) {
        self.move_freepages_block(block, MigrateType::Isolate);
    }

    /// Isolates a pageblock (its free pages counted as ISOLATE, on no list, as
    /// `move_freepages_block` to ISOLATE does) and, in the same walk of the block's heads,
    /// Linux's `has_unmovable_pages()` check: notes in `report` the unmovable blocks and, if
    /// `pinned_too`, the pinned movable pages. Linux checks before it isolates;
    /// here one walk does both, and a caller whose report says busy undoes the isolation
    /// ([`undo_isolate_pageblock`](Self::undo_isolate_pageblock)) before it drops the lock, so
    /// nobody sees the difference. Returns the order-0 movable pages: how many migration
    /// targets reclaim may need (it counts down the pinned and dropped ones as it meets them).
    pub(super) fn isolate_pageblock_checked(&mut self, block: usize, pinned_too: bool, report: &mut ReclaimReport) -> usize {
        let from = self.pageblock_type[block].expect("isolating an unmanaged pageblock");
        let (mut idx, end) = (block << PAGEBLOCK_ORDER, (block + 1) << PAGEBLOCK_ORDER);
        let mut to_migrate = 0;
        while idx < end {
            idx += match self.mem_map[idx] {
                PageDesc::Free { order, .. } => {
                    self.del_from_free_list(idx, order, from);
                    self.add_to_free_list(idx, order, MigrateType::Isolate);
                    1 << order
                }
                PageDesc::Allocated { order } => {
                    report.unmovable.push(self.addr_of(idx));
                    1 << order
                }
                PageDesc::Movable { order, slot } => {
                    to_migrate += usize::from(order == 0);
                    if pinned_too {
                        let page = self.movable.handle(slot);
                        if self.movable.get(page).expect("movable page without a live handle").pins > 0 {
                            report.pinned.push(page);
                        }
                    }
                    1 << order
                }
                PageDesc::Tail | PageDesc::Unmanaged => 1,
            };
        }
        self.pageblock_type[block] = Some(MigrateType::Isolate);
        to_migrate
    }

    /// Ends isolation, giving the block back to type `mt`: its free blocks (unmerged, on no
    /// list, see `add_to_free_list`) go on `mt`'s lists, merged with their buddies. They are
    /// taken in address order, each merged only with buddies below it, which are already on a
    /// list: a buddy above it is still one of the block's unlisted free blocks (or in use), and
    /// the merge with it happens when the walk reaches it.
    pub(super) fn undo_isolate_pageblock(&mut self, block: usize, mt: MigrateType) {
        debug_assert_eq!(self.pageblock_type[block], Some(MigrateType::Isolate));
        let (mut idx, end) = (block << PAGEBLOCK_ORDER, (block + 1) << PAGEBLOCK_ORDER);
        let zone = self.zone_of(idx);
        self.zones[zone as usize].nr_free_pages[MigrateType::Isolate.index()] -= self.isolated_free[block] as usize;
        self.isolated_free[block] = 0;
        self.pageblock_type[block] = Some(mt);
        while idx < end {
            let desc = self.mem_map[idx];
            let next = idx + (1 << desc_order(desc));
            if let PageDesc::Free { order, .. } = desc {
                let (mut head, mut order) = (idx, order);
                while order < MAX_PAGE_ORDER {
                    let buddy = head ^ (1 << order);
                    if buddy > head || !matches!(self.mem_map[buddy], PageDesc::Free { order: o, .. } if o == order) {
                        break;
                    }
                    self.del_from_free_list(buddy, order, mt);
                    self.mem_map[head] = PageDesc::Tail;
                    head = buddy;
                    order += 1;
                }
                self.add_to_free_list(head, order, mt);
            }
            idx = next;
        }
    }

    /// Whether an isolated pageblock is entirely free.
    pub(super) fn isolated_pageblock_is_free(&self, block: usize) -> bool {
        self.pageblock_type[block] == Some(MigrateType::Isolate) && self.isolated_free[block] as usize == PAGEBLOCK_NR_PAGES
    }
}

/// The order of a block head.
pub(super) fn desc_order(desc: PageDesc) -> u8 {
    match desc {
        PageDesc::Free { order, .. } | PageDesc::Allocated { order } | PageDesc::Movable { order, .. } => order,
        PageDesc::Tail | PageDesc::Unmanaged => 0,
    }
}
