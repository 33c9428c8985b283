//! Pool counters: atomics updated from any context, read as a [`SwiotlbStats`] snapshot.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A snapshot of a pool's counters. Counts taken at slightly different moments: exact when the
/// pool is idle, approximate while mappings are made on other CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwiotlbStats {
    /// Slots in the pool.
    pub total_slots: usize,
    /// Slots free for bounce buffers.
    pub free_slots: usize,
    /// Slots held by mappings, pad slots included.
    pub used_slots: usize,
    /// Slots lent to the page allocator.
    pub lent_slots: usize,
    /// Most slots ever used at once since creation or the last reset (Linux `used_hiwater`).
    pub used_hiwater: usize,
    /// Slots kept for IRQ-context mappings.
    pub irq_reserve_slots: usize,
    /// Successful mappings.
    pub maps: u64,
    /// Successful mappings made in IRQ context.
    pub maps_in_irq: u64,
    /// Failed mappings (all contexts).
    pub map_failures: u64,
    /// Failed mappings in IRQ context.
    pub irq_failures: u64,
    /// Bytes copied from original buffers into slots (map, sync for device).
    pub bytes_to_device: u64,
    /// Bytes copied from slots back to original buffers (unmap, sync for CPU).
    pub bytes_to_cpu: u64,
    /// Bounced from-device mappings with `DmaAttrs::no_copy_in` that got clean slots and skipped
    /// the copy-in.
    pub reads_copy_in_skipped: u64,
    /// Bounced from-device mappings with `DmaAttrs::no_copy_in` that got a dirty slot (or ran
    /// with `swiotlb_clean_slots=off`) and copied in.
    pub reads_copied_in: u64,
    /// Free slots zeroed by [`super::SwiotlbPool::scrub_step`].
    pub slots_scrubbed: u64,
    /// Times an area lock was found taken (sum of the area locks' contention counts).
    pub area_lock_contention: u64,
}

/// The live counters behind [`SwiotlbStats`]. The slot counts are the source of truth for the
/// IRQ reserve: a mapping first takes its slots from `free` with a compare-and-swap, then searches.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) free: AtomicUsize,
    pub(super) used: AtomicUsize,
    pub(super) lent: AtomicUsize,
    pub(super) used_hiwater: AtomicUsize,
    pub(super) maps: AtomicU64,
    pub(super) maps_in_irq: AtomicU64,
    pub(super) map_failures: AtomicU64,
    pub(super) irq_failures: AtomicU64,
    pub(super) bytes_to_device: AtomicU64,
    pub(super) bytes_to_cpu: AtomicU64,
    pub(super) reads_copy_in_skipped: AtomicU64,
    pub(super) reads_copied_in: AtomicU64,
    pub(super) slots_scrubbed: AtomicU64,
}

impl Counters {
    /// Counters of a pool of `nslots` free slots.
    pub(super) fn new(nslots: usize) -> Self {
        let counters = Self::default();
        counters.free.store(nslots, Ordering::Relaxed);
        counters
    }

    /// Records `nslots` newly used slots and raises the high-water mark (Linux
    /// `inc_used_and_hiwater`).
    pub(super) fn add_used(&self, nslots: usize) {
        let used = self.used.fetch_add(nslots, Ordering::Relaxed) + nslots;
        // A read first: the mark only rises, and mostly it is already above.
        if used > self.used_hiwater.load(Ordering::Relaxed) {
            self.used_hiwater.fetch_max(used, Ordering::Relaxed);
        }
    }

    /// Records a successful mapping.
    pub(super) fn count_map(&self, in_irq: bool) {
        self.maps.fetch_add(1, Ordering::Relaxed);
        if in_irq {
            self.maps_in_irq.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a failed mapping.
    pub(super) fn count_failure(&self, in_irq: bool) {
        self.map_failures.fetch_add(1, Ordering::Relaxed);
        if in_irq {
            self.irq_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records bytes bounced one way or the other.
    pub(super) fn count_bounce(&self, to_device: bool, bytes: usize) {
        let counter = if to_device { &self.bytes_to_device } else { &self.bytes_to_cpu };
        counter.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Takes `nslots` free slots if at least `keep` more stay free; returns the free count seen on
    /// failure.
    pub(super) fn take_free(&self, nslots: usize, keep: usize) -> Result<(), usize> {
        self.free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| (free >= nslots.saturating_add(keep)).then(|| free - nslots))
            .map(drop)
    }

    /// Gives back slots taken with [`Self::take_free`].
    pub(super) fn put_free(&self, nslots: usize) {
        self.free.fetch_add(nslots, Ordering::AcqRel);
    }

    /// The counts part of a snapshot; the caller fills in the rest.
    pub(super) fn snapshot(&self) -> SwiotlbStats {
        SwiotlbStats {
            free_slots: self.free.load(Ordering::Relaxed),
            used_slots: self.used.load(Ordering::Relaxed),
            lent_slots: self.lent.load(Ordering::Relaxed),
            used_hiwater: self.used_hiwater.load(Ordering::Relaxed),
            maps: self.maps.load(Ordering::Relaxed),
            maps_in_irq: self.maps_in_irq.load(Ordering::Relaxed),
            map_failures: self.map_failures.load(Ordering::Relaxed),
            irq_failures: self.irq_failures.load(Ordering::Relaxed),
            bytes_to_device: self.bytes_to_device.load(Ordering::Relaxed),
            bytes_to_cpu: self.bytes_to_cpu.load(Ordering::Relaxed),
            reads_copy_in_skipped: self.reads_copy_in_skipped.load(Ordering::Relaxed),
            reads_copied_in: self.reads_copied_in.load(Ordering::Relaxed),
            slots_scrubbed: self.slots_scrubbed.load(Ordering::Relaxed),
            ..SwiotlbStats::default()
        }
    }
}
