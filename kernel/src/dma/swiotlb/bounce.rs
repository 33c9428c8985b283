//! Bouncing: map, unmap and sync copy between the original buffer and its slots (Linux
//! `swiotlb_tbl_map_single`, `swiotlb_tbl_unmap_single`, `swiotlb_sync_single_for_*`,
//! `swiotlb_bounce`).
//!
//! Every operation here may run in IRQ context: no allocation, locks only around metadata, the
//! copies done without any lock held (and callers in task context must hold none either:
//! [`task_copy_stats`] counts the copies that ran with interrupts masked).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::area::{MappingInfo, CACHED_RUN_SLOTS};
use super::slots::SlotRequest;
use super::{DmaAttrs, DmaDirection, SlotAlignment, SwiotlbError, SwiotlbPool, IO_TLB_SHIFT, IO_TLB_SIZE};
use crate::arch;
use crate::mm::phys::PhysMemory;
use crate::mm::PhysAddr;

/// Bounce copies made in task context while copies are timed, and how many task-context copies
/// ran with interrupts masked (always counted).
static TASK_COPIES: AtomicU64 = AtomicU64::new(0);
static TASK_COPIES_IRQS_MASKED: AtomicU64 = AtomicU64::new(0);

/// Bounce copies made in task context while copies were timed ([`set_copy_timing`]: the
/// count is the timed path's, so that an untimed bounce pays no shared counter for it), and
/// how many task-context copies, timed or not, ran with interrupts masked (under an IRQ-safe
/// lock: a pool's, a disk's). The I/O path keeps the second at 0 (a copy of up to 256 KiB would
/// delay every interrupt of this CPU); the virtio-blk test checks it, deterministically, where
/// counting timer ticks depended on the machine's load, and times the copies meanwhile so that
/// the first shows it bounced in task context at all.
pub fn task_copy_stats() -> (u64, u64) {
    (TASK_COPIES.load(Ordering::Relaxed), TASK_COPIES_IRQS_MASKED.load(Ordering::Relaxed))
}

/// Whether bounce copies are timed (see [`set_copy_timing`]).
static TIME_COPIES: AtomicBool = AtomicBool::new(false);
static TIMED_COPIES: AtomicU64 = AtomicU64::new(0);
static TIMED_COPY_BYTES: AtomicU64 = AtomicU64::new(0);
static TIMED_COPY_TICKS: AtomicU64 = AtomicU64::new(0);

/// Turns the timing of bounce copies on or off (off at boot). On, each copy reads the generic
/// timer before and after, and [`copy_timing`] sums them: what the copies cost where they run
/// (their pages as the TLB and caches find them then), against a memcpy measured on its own.
/// For benchmarks; off, it costs a bounce one load and branch.
pub fn set_copy_timing(on: bool) {
    TIME_COPIES.store(on, Ordering::Relaxed);
}

/// Bounce copies timed so far, their bytes, and the generic-timer ticks they took (see
/// [`set_copy_timing`]).
pub fn copy_timing() -> (u64, u64, u64) {
    (TIMED_COPIES.load(Ordering::Relaxed), TIMED_COPY_BYTES.load(Ordering::Relaxed), TIMED_COPY_TICKS.load(Ordering::Relaxed))
}

/// Copies `size` bytes for a bounce, noting the context (see [`task_copy_stats`]).
#[inline(always)]
fn bounce_copy(mem: &dyn PhysMemory, dst: PhysAddr, src: PhysAddr, size: usize) {
    bounce_copy_in(mem, dst, src, size, arch::in_interrupt());
}

/// [`bounce_copy`] for a caller that already knows whether it runs in interrupt context.
#[inline(always)]
fn bounce_copy_in(mem: &dyn PhysMemory, dst: PhysAddr, src: PhysAddr, size: usize, in_irq: bool) {
    if !in_irq && arch::irqs_masked() {
        TASK_COPIES_IRQS_MASKED.fetch_add(1, Ordering::Relaxed);
    }
    if TIME_COPIES.load(Ordering::Relaxed) {
        timed_copy(mem, dst, src, size, in_irq);
    } else {
        mem.copy(dst, src, size);
    }
}

/// [`bounce_copy`]'s copy, timed and counted (see [`task_copy_stats`]).
#[cold]
#[inline(never)]
fn timed_copy(mem: &dyn PhysMemory, dst: PhysAddr, src: PhysAddr, size: usize, in_irq: bool) {
    if !in_irq {
        TASK_COPIES.fetch_add(1, Ordering::Relaxed);
    }
    let t0 = arch::counter_ticks();
    mem.copy(dst, src, size);
    let ticks = arch::counter_ticks() - t0;
    TIMED_COPIES.fetch_add(1, Ordering::Relaxed);
    TIMED_COPY_BYTES.fetch_add(size as u64, Ordering::Relaxed);
    TIMED_COPY_TICKS.fetch_add(ticks, Ordering::Relaxed);
}

/// Whether a mapping of `size` bytes in `dir` with `attrs` may take a run of a slot cache
/// (`SwiotlbPool::map_cached`): more than a slot and at most a page (a cached run), and not a
/// read that may skip its copy-in (it looks for clean slots; parked runs are dirty). Two
/// compares for most mappings that do not fit (a request's header and status, a large buffer).
#[inline(always)]
pub fn may_take_cached_run(size: usize, dir: DmaDirection, attrs: DmaAttrs) -> bool {
    size > IO_TLB_SIZE && size <= CACHED_RUN_SLOTS * IO_TLB_SIZE && !(attrs.no_copy_in && dir == DmaDirection::FromDevice)
}

/// Which way a bounce copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BounceWay {
    /// Original buffer to slots.
    ToSlots,
    /// Slots to original buffer.
    FromSlots,
}

impl SwiotlbPool {
    /// Bounces `size` bytes at `orig_addr` for a device: takes slots placed as `align` asks and
    /// returns the bounce address, which keeps `orig_addr & min_align_mask`.
    ///
    /// Always copies the original into the slots, whatever `dir` says: a device writing only part
    /// of the buffer must leave the rest as it was, and must never see what an earlier mapping
    /// left in the slots (CVE-2022-0854). `DmaAttrs::skip_cpu_sync` does not apply here. See
    /// [`map_attrs`](Self::map_attrs) for the one exception.
    ///
    /// # Safety
    ///
    /// The caller owns `[orig_addr, orig_addr + size)` until the matching unmap (whose copy-back
    /// writes it): it does not touch it meanwhile (for `FromDevice` and `Bidirectional` neither
    /// reads nor writes it; for `ToDevice` does not write it), and the memory stays allocated
    /// until the unmap.
    #[allow(unsafe_code)]
    pub unsafe fn map(&self, orig_addr: PhysAddr, size: usize, dir: DmaDirection, align: SlotAlignment) -> Result<PhysAddr, SwiotlbError> {
        // SAFETY: this function's contract, handed on.
        unsafe { self.map_attrs(orig_addr, size, dir, align, DmaAttrs::NONE) }
    }

    /// [`map`](Self::map) with attributes. Only `no_copy_in` matters here: a `FromDevice`
    /// mapping that asks for it, and gets slots that are all clean (zeros, see
    /// [`scrub_step`](Self::scrub_step)), skips the copy-in; the bytes the device does not write
    /// then read back as zeros, never an earlier mapping's data. Any other case copies in, as
    /// `map` does (and as Linux always does).
    ///
    /// # Safety
    ///
    /// As [`map`](Self::map).
    #[allow(unsafe_code)]
    pub unsafe fn map_attrs(
        &self,
        orig_addr: PhysAddr,
        size: usize,
        dir: DmaDirection,
        align: SlotAlignment,
        attrs: DmaAttrs,
    ) -> Result<PhysAddr, SwiotlbError> {
        // Read once for the slot search's reserve and counters and for the copy's statistics.
        let in_irq = arch::in_interrupt();
        if may_take_cached_run(size, dir, attrs) {
            // SAFETY: this function's contract, handed on; `may_take_cached_run` holds.
            if let Some(tlb_addr) = unsafe { self.map_cached(orig_addr, size, dir, align, attrs, in_irq) } {
                return Ok(tlb_addr);
            }
        }
        // SAFETY: this function's contract, handed on.
        unsafe { self.map_searched(orig_addr, size, dir, align, attrs, in_irq) }
    }

    /// The first half of [`map_attrs`](Self::map_attrs), inline in the callers on the bounce
    /// path (no call, no frame): a mapping that fits a cached run (the caller checked
    /// [`may_take_cached_run`]) takes a run of its CPU's slot cache, if there is one, copies in
    /// and zeroes the run's tail. `None` if its alignment does not fit a cached run or the cache
    /// has none to give (then [`map_searched`](Self::map_searched) maps it). `in_irq` is
    /// `arch::in_interrupt()`.
    ///
    /// # Safety
    ///
    /// As [`map`](Self::map), and [`may_take_cached_run`]`(size, dir, attrs)` holds: a larger
    /// mapping would overflow the page run it takes.
    #[allow(unsafe_code)]
    #[inline(always)]
    pub(crate) unsafe fn map_cached(
        &self,
        orig_addr: PhysAddr,
        size: usize,
        dir: DmaDirection,
        align: SlotAlignment,
        attrs: DmaAttrs,
        in_irq: bool,
    ) -> Option<PhysAddr> {
        debug_assert!(may_take_cached_run(size, dir, attrs));
        let head = self.alloc_cached(orig_addr, size, dir, align, in_irq)?;
        let tlb_addr = self.start() + ((head as u64) << IO_TLB_SHIFT);
        // The copy-in writes every byte of the run the device can see but the tail, which it
        // zeroes: a parked run's old contents never show.
        self.copy_in(tlb_addr, orig_addr, size, in_irq);
        Some(tlb_addr)
    }

    /// A new mapping's copy-in, for both halves of [`map_attrs`](Self::map_attrs): copies
    /// `size` bytes of the original to `tlb_addr`, zeroes the rest of the last slot if the
    /// mapping ends inside one (so it never shows an earlier mapping's data), counts the bytes.
    #[inline(always)]
    fn copy_in(&self, tlb_addr: PhysAddr, orig_addr: PhysAddr, size: usize, in_irq: bool) {
        // The tail and the count first: the copy last, so that little lives across its call.
        let end = tlb_addr + size as u64;
        let slots_end = (end + IO_TLB_SIZE as u64 - 1) & !(IO_TLB_SIZE as u64 - 1);
        if slots_end != end {
            self.phys().fill(end, 0, (slots_end - end) as usize);
        }
        self.counters().count_bounce(true, size);
        bounce_copy_in(self.phys(), tlb_addr, orig_addr, size, in_irq);
    }

    /// The second half of [`map_attrs`](Self::map_attrs), out of line: the slot search, for a
    /// mapping [`map_cached`](Self::map_cached) did not take.
    ///
    /// # Safety
    ///
    /// As [`map`](Self::map).
    #[allow(unsafe_code)]
    #[inline(never)]
    pub(super) unsafe fn map_searched(
        &self,
        orig_addr: PhysAddr,
        size: usize,
        dir: DmaDirection,
        align: SlotAlignment,
        attrs: DmaAttrs,
        in_irq: bool,
    ) -> Result<PhysAddr, SwiotlbError> {
        let copy_in_optional = attrs.no_copy_in && dir == DmaDirection::FromDevice;
        let req = SlotRequest::new(orig_addr, size, align)?.with_colour(self.colour_period());
        let wants_clean = copy_in_optional && self.clean_slots();
        let (head, clean) = self.alloc_slots_in(&req, dir, wants_clean, in_irq)?;
        let head_addr = self.start() + ((head as u64) << IO_TLB_SHIFT);
        let tlb_addr = head_addr + req.offset as u64;
        if copy_in_optional {
            let counter = if clean { &self.counters().reads_copy_in_skipped } else { &self.counters().reads_copied_in };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if clean {
            // Every byte of the allocation is already zero: nothing stale to hide, nothing of
            // the caller's the device needs (it overwrites what the caller will read).
            return Ok(tlb_addr);
        }
        // A device reaches whole slots (DMA in cache lines or pages, or a hostile one): the
        // allocation's bytes around the mapping (pad slots, the kept offset, the last slot's
        // tail, the last in `copy_in`) are zeroed, so they never show an earlier mapping's
        // data. Linux leaves them. Most mappings have neither (no offset kept, whole slots): no
        // call for nothing.
        let first = head_addr - ((req.pad_slots as u64) << IO_TLB_SHIFT);
        if first != tlb_addr {
            self.phys().fill(first, 0, (tlb_addr - first) as usize);
        }
        self.copy_in(tlb_addr, orig_addr, size, in_irq);
        Ok(tlb_addr)
    }

    /// Ends the mapping that `map` returned as `tlb_addr`: copies the slots back to the original
    /// for `FromDevice` and `Bidirectional` unless `attrs.skip_cpu_sync`, then frees the slots
    /// (pad slots included).
    ///
    /// All or nothing: on error (not a mapping start, wrong direction, `size` past the mapping)
    /// nothing is copied and nothing freed.
    ///
    /// Inline: an unmap with nothing to copy back (to the device, or `skip_cpu_sync`) checks and
    /// frees in its caller's frame; a copy-back goes out of line.
    #[inline(always)]
    pub fn unmap(&self, tlb_addr: PhysAddr, size: usize, dir: DmaDirection, attrs: DmaAttrs) -> Result<(), SwiotlbError> {
        if attrs.skip_cpu_sync || !dir.from_device() {
            // Nothing to copy back: check and free in one hold of the area lock.
            return self.release_checked(tlb_addr, |mapping| Self::check_unmap(tlb_addr, size, dir, mapping));
        }
        self.unmap_copy_back(tlb_addr, size, dir)
    }

    /// What [`unmap`](Self::unmap) checks of the live mapping it ends: looked up at its first
    /// byte, mapped in the same direction, at least `size` bytes.
    #[inline(always)]
    fn check_unmap(tlb_addr: PhysAddr, size: usize, dir: DmaDirection, mapping: &MappingInfo) -> Result<(), SwiotlbError> {
        if mapping.position != 0 {
            return Err(SwiotlbError::NotMapped { tlb_addr });
        }
        if mapping.head_slot.dir != dir {
            return Err(SwiotlbError::DirectionMismatch { mapped: mapping.head_slot.dir, requested: dir });
        }
        let available = mapping.head_slot.alloc_size as usize;
        if size > available {
            return Err(SwiotlbError::Overflow { tlb_addr, size, available });
        }
        Ok(())
    }

    /// [`unmap`](Self::unmap) with a copy back, out of line: the copy runs with no lock held,
    /// between the check and the release.
    #[inline(never)]
    fn unmap_copy_back(&self, tlb_addr: PhysAddr, size: usize, dir: DmaDirection) -> Result<(), SwiotlbError> {
        let (mapping, area) = self.find_mapping_in(tlb_addr)?;
        Self::check_unmap(tlb_addr, size, dir, &mapping)?;
        bounce_copy(self.phys(), mapping.head_slot.orig_addr, tlb_addr, size);
        self.counters().count_bounce(false, size);
        self.release_found(tlb_addr, &mapping, area)
    }

    /// Takes page-aligned slots for `size` bytes of DMA-coherent memory, zeroed (Linux
    /// `swiotlb_alloc`, which serves `dma_alloc_coherent` for devices behind a restricted pool:
    /// nothing of theirs may live outside it). Task context; free with
    /// [`free_coherent`](Self::free_coherent). At most one segment (256 KiB).
    pub fn alloc_coherent(&self, size: usize) -> Result<PhysAddr, SwiotlbError> {
        let page_aligned = SlotAlignment { min_align_mask: 0, alloc_align_mask: crate::mm::PAGE_SIZE - 1 };
        let req = SlotRequest::new(0, size, page_aligned)?;
        let (head, _) = self.alloc_slots(&req, DmaDirection::Bidirectional, false)?;
        let addr = self.start() + ((head as u64) << IO_TLB_SHIFT) + req.offset as u64;
        self.phys().fill(addr, 0, size);
        Ok(addr)
    }

    /// Gives back memory from [`alloc_coherent`](Self::alloc_coherent).
    pub fn free_coherent(&self, addr: PhysAddr) -> Result<(), SwiotlbError> {
        let mapping = self.find_mapping(addr)?;
        if mapping.position != 0 || mapping.head_slot.orig_addr != 0 {
            return Err(SwiotlbError::NotMapped { tlb_addr: addr });
        }
        self.release_slots(addr)
    }

    /// Makes what the device wrote visible to the CPU: copies `size` bytes at `tlb_addr` (anywhere
    /// inside a mapping) back to the original for `FromDevice` and `Bidirectional`; nothing to do
    /// for `ToDevice`.
    pub fn sync_for_cpu(&self, tlb_addr: PhysAddr, size: usize, dir: DmaDirection) -> Result<(), SwiotlbError> {
        if !dir.from_device() {
            return Ok(());
        }
        self.bounce(tlb_addr, size, dir, BounceWay::FromSlots)
    }

    /// Makes what the CPU wrote visible to the device: copies `size` bytes of the original into
    /// the slots at `tlb_addr` for `ToDevice` and `Bidirectional`; nothing to do for `FromDevice`.
    pub fn sync_for_device(&self, tlb_addr: PhysAddr, size: usize, dir: DmaDirection) -> Result<(), SwiotlbError> {
        if !dir.to_device() {
            return Ok(());
        }
        self.bounce(tlb_addr, size, dir, BounceWay::ToSlots)
    }

    /// Copies part of a mapping (Linux `swiotlb_bounce`): `tlb_addr` may point anywhere inside it;
    /// the original address is found from the mapping's head. A range that starts before the
    /// mapping or ends after it is refused without copying (Linux warns, then copies what fits).
    fn bounce(&self, tlb_addr: PhysAddr, size: usize, dir: DmaDirection, way: BounceWay) -> Result<(), SwiotlbError> {
        let mapping = self.find_mapping(tlb_addr)?;
        let head = mapping.head_slot;
        if head.dir != dir && head.dir != DmaDirection::Bidirectional {
            return Err(SwiotlbError::DirectionMismatch { mapped: head.dir, requested: dir });
        }
        let Ok(position) = u64::try_from(mapping.position) else {
            return Err(SwiotlbError::AccessBeforeStart { tlb_addr });
        };
        let available = u64::from(head.alloc_size).saturating_sub(position) as usize;
        if size > available {
            return Err(SwiotlbError::Overflow { tlb_addr, size, available });
        }
        let orig_addr = head.orig_addr + position;
        match way {
            BounceWay::ToSlots => bounce_copy(self.phys(), tlb_addr, orig_addr, size),
            BounceWay::FromSlots => bounce_copy(self.phys(), orig_addr, tlb_addr, size),
        }
        self.counters().count_bounce(way == BounceWay::ToSlots, size);
        Ok(())
    }
}
