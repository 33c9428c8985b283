//! The kernel heap: `linked_list_allocator` arenas that grow from a pluggable page source.
//!
//! At boot the heap is one arena taken from the boot memory map. Once the page allocator runs it
//! becomes the heap's [`HeapSource`] and the heap grows by whole unmovable pages. Growth never
//! happens with the heap lock held (the source may itself allocate from the heap, as the page
//! allocator's bookkeeping does): when an allocation leaves less than [`GROW_WATERMARK`] free, or
//! fails, the heap drops its lock, asks the source for a new arena, and retries. Allocation in
//! interrupt context is a bug (handlers must not allocate) and never grows the heap.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{null_mut, NonNull};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use linked_list_allocator::Heap;

use crate::sync::IrqSafeSpinLock;

/// Most arenas the heap holds.
pub const MAX_ARENAS: usize = 32;
/// Grow when less than this is left free after an allocation.
pub const GROW_WATERMARK: usize = 256 * 1024;
/// The smallest arena asked of the source.
pub const GROW_MIN: usize = 1024 * 1024;

/// Where the heap gets more memory.
pub trait HeapSource: Sync {
    /// Returns a new region of at least `min_bytes` (address, length), or `None`. The region must
    /// be mapped read/write, unused by anything else, and stay so for the kernel's life.
    fn grow(&self, min_bytes: usize) -> Option<(usize, usize)>;
}

struct Arenas {
    heaps: [Heap; MAX_ARENAS],
    count: usize,
}

impl Arenas {
    fn free(&self) -> usize {
        self.heaps[..self.count].iter().map(Heap::free).sum()
    }
}

/// The heap. Put one in a `static` and register it with `#[global_allocator]`.
pub struct KernelHeap {
    arenas: IrqSafeSpinLock<Arenas>,
    source: IrqSafeSpinLock<Option<&'static dyn HeapSource>>,
    growing: AtomicBool,
    /// The last allocation that failed even after growing: size, alignment, and the heap's
    /// arenas, size and use then (0 size: none). Atomics, so that the panic handler that
    /// reports it reads them without a lock.
    last_failure: [AtomicUsize; 5],
}

/// An allocation the heap could not serve (see [`KernelHeap::last_failure`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocFailure {
    /// Bytes asked for.
    pub size: usize,
    /// Alignment asked for.
    pub align: usize,
    /// The heap at that moment.
    pub heap: HeapStats,
}

/// Heap usage figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Arenas in use.
    pub arenas: usize,
    /// Bytes managed.
    pub size: usize,
    /// Bytes allocated.
    pub used: usize,
}

impl Default for KernelHeap {
    fn default() -> Self {
        Self::new()
    }
}

impl KernelHeap {
    /// An empty heap: every allocation fails until [`KernelHeap::add_arena`].
    pub const fn new() -> Self {
        const EMPTY: Heap = Heap::empty();
        Self {
            arenas: IrqSafeSpinLock::new(Arenas { heaps: [EMPTY; MAX_ARENAS], count: 0 }),
            source: IrqSafeSpinLock::new(None),
            growing: AtomicBool::new(false),
            last_failure: [const { AtomicUsize::new(0) }; 5],
        }
    }

    /// Adds `[addr, addr + len)` to the heap. Returns false if the heap has no room for another
    /// arena (the memory is then not used).
    ///
    /// # Safety
    ///
    /// The range must be valid, writable memory that nothing else uses, for the heap's life.
    pub unsafe fn add_arena(&self, addr: usize, len: usize) -> bool {
        let mut arenas = self.arenas.lock();
        if arenas.count == MAX_ARENAS {
            return false;
        }
        let i = arenas.count;
        // SAFETY: forwarded from the caller.
        unsafe { arenas.heaps[i].init(addr as *mut u8, len) };
        arenas.count += 1;
        true
    }

    /// Makes `source` the place the heap grows from.
    pub fn set_source(&self, source: &'static dyn HeapSource) {
        *self.source.lock() = Some(source);
    }

    /// Current figures.
    pub fn stats(&self) -> HeapStats {
        let arenas = self.arenas.lock();
        let heaps = &arenas.heaps[..arenas.count];
        HeapStats { arenas: arenas.count, size: heaps.iter().map(Heap::size).sum(), used: heaps.iter().map(Heap::used).sum() }
    }

    /// Allocates; grows once and retries on failure. A failure is recorded for
    /// [`last_failure`](Self::last_failure).
    pub fn allocate(&self, layout: Layout) -> Option<NonNull<u8>> {
        let (ptr, low) = self.try_allocate(layout);
        if ptr.is_some() && !low {
            return ptr;
        }
        // Out of memory, or running low: grow outside the lock.
        let want = layout.size().saturating_add(layout.align()).saturating_add(4096).max(GROW_MIN);
        self.grow(want);
        let ptr = ptr.or_else(|| self.try_allocate(layout).0);
        if ptr.is_none() {
            let heap = self.stats();
            for (slot, v) in self.last_failure.iter().zip([layout.size().max(1), layout.align(), heap.arenas, heap.size, heap.used]) {
                slot.store(v, Ordering::Relaxed);
            }
        }
        ptr
    }

    /// The last allocation that failed, and the heap then: what an out-of-memory report says
    /// (stable Rust has no `alloc_error_handler`; the panic handler reads this when the panic
    /// is the allocation failure's).
    pub fn last_failure(&self) -> Option<AllocFailure> {
        let v: [usize; 5] = core::array::from_fn(|i| self.last_failure[i].load(Ordering::Relaxed));
        (v[0] != 0).then_some(AllocFailure { size: v[0], align: v[1], heap: HeapStats { arenas: v[2], size: v[3], used: v[4] } })
    }

    fn try_allocate(&self, layout: Layout) -> (Option<NonNull<u8>>, bool) {
        let mut arenas = self.arenas.lock();
        let count = arenas.count;
        let ptr = arenas.heaps[..count].iter_mut().find_map(|h| h.allocate_first_fit(layout).ok());
        (ptr, arenas.free() < GROW_WATERMARK)
    }

    fn grow(&self, want: usize) {
        if crate::arch::in_interrupt() {
            return; // handlers must not allocate; never make it worse by growing here
        }
        // One grower at a time; a nested allocation from the source must not recurse into here.
        if self.growing.swap(true, Ordering::Acquire) {
            return;
        }
        let source = *self.source.lock();
        if let Some((addr, len)) = source.and_then(|s| s.grow(want)) {
            // SAFETY: the `HeapSource` contract: the region is ours, mapped and unused.
            unsafe { self.add_arena(addr, len) };
        }
        self.growing.store(false, Ordering::Release);
    }

    /// Frees an allocation made by [`KernelHeap::allocate`] with the same layout.
    ///
    /// # Safety
    ///
    /// `ptr` must come from this heap's `allocate` with `layout`, and not be freed already.
    pub unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        let mut arenas = self.arenas.lock();
        let count = arenas.count;
        let addr = ptr.as_ptr() as usize;
        if let Some(heap) = arenas.heaps[..count].iter_mut().find(|h| (h.bottom() as usize..h.top() as usize).contains(&addr)) {
            // SAFETY: the caller promises `ptr`/`layout` came from this heap; we picked the arena
            // that contains it.
            unsafe { heap.deallocate(ptr, layout) };
        }
    }
}

// SAFETY: `allocate` returns blocks that satisfy `layout` and are not handed out twice (each
// arena's linked-list allocator guarantees it, arenas do not overlap); `dealloc` returns a block
// to the arena it came from.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.allocate(layout).map_or(null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(ptr) = NonNull::new(ptr) {
            // SAFETY: forwarded from the `GlobalAlloc` contract.
            unsafe { self.deallocate(ptr, layout) };
        }
    }
}

#[cfg(test)]
mod tests;
