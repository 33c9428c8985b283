//! Page descriptors: one per 4 KiB page of the RAM span (Linux: `struct page` in `mem_map`).

/// "No page" in the intrusive free-list links.
pub(super) const NIL: u32 = u32::MAX;

/// What a page is doing. Only the first page of a block (its head) carries the block's state;
/// every other page of a free or allocated block is `Tail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PageDesc {
    /// Not managed: a hole, reserved memory, or a pageblock handed out whole (contig pools,
    /// reclaimed SWIOTLB blocks).
    Unmanaged,
    /// Part of a larger block whose head is an earlier page.
    Tail,
    /// Head of a free buddy block, linked into `free_area[order].free_list[type of its block]`
    /// (Linux: `PageBuddy` with `buddy_order` and `buddy_list`).
    Free { order: u8, prev: u32, next: u32 },
    /// Head of a block handed out by `alloc_pages` (or a migration target being filled).
    Allocated { order: u8 },
    /// Head of a movable block owned by handle slot `slot`.
    Movable { order: u8, slot: u32 },
}
