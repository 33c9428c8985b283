//! Timing with the generic timer (CNTVCT: 62.5 MHz on QEMU virt; under `-icount shift=0` it
//! counts virtual nanoseconds, one per instruction) and the memcpy every ratio is set against.

use alloc::vec::Vec;
use core::time::Duration;

use drivers::timer::arch_timer;
use kernel::mm::phys::PhysMemory;
use kernel::mm::PhysAddr;
use kernel::platform::phys::ram;

/// Nanoseconds since boot, from the generic timer.
pub(crate) fn now_ns() -> u64 {
    arch_timer::ticks_to_duration(arch_timer::ticks()).as_nanos() as u64
}

/// The median of `v` (sorted in place); NaN if empty.
pub(crate) fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(core::cmp::Ordering::Equal));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs `f` `iters` times, `reps` times over, and returns the median nanoseconds per call.
/// The repetitions inside one boot take out interrupts and one-off misses; boots give min/max.
pub(crate) fn ns_per_op(reps: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    let mut per: Vec<f64> = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t0 = now_ns();
        for _ in 0..iters {
            f();
        }
        per.push((now_ns() - t0) as f64 / iters as f64);
    }
    median(&mut per)
}

/// Iterations that make a loop of `bytes`-sized operations take a few milliseconds on TCG.
pub(crate) fn iters_for(bytes: usize) -> usize {
    (4 << 20) / bytes.max(512)
}

/// Median nanoseconds of one plain copy of `len` bytes from `src` to `dst` (the same
/// `copy_nonoverlapping` a bounce uses, without the mapping around it).
pub(crate) fn memcpy_ns(dst: PhysAddr, src: PhysAddr, len: usize) -> f64 {
    // SAFETY: the callers pass buffers the benchmark allocated for this copy.
    let ram = unsafe { ram() };
    ns_per_op(5, iters_for(len), || ram.copy(dst, src, len))
}

/// Nanoseconds to fill `len` bytes at `dst` with zeros (the scrub's memset).
pub(crate) fn memset_ns(dst: PhysAddr, len: usize) -> f64 {
    // SAFETY: the callers pass a buffer the benchmark allocated for this.
    let ram = unsafe { ram() };
    // `black_box`: the same zeros over and over would otherwise be written once.
    ns_per_op(5, iters_for(len), || ram.fill(core::hint::black_box(dst), 0, len))
}

/// Entries of QEMU's softmmu TLB (direct-mapped by virtual page number; 256 is its default
/// size). Two buffers whose pages fall on the same entries evict each other on every access
/// and a copy between them runs ~10x slower under TCG: two 1 MiB-aligned buffers always do.
const SOFTMMU_TLB_ENTRIES: u64 = 256;

/// A place for `len` bytes inside `dst_buf` (`dst_len` bytes) whose pages do not share softmmu
/// TLB entries with `src..src+len`, so that the memcpy reference is an ordinary copy (as a
/// bounce's usually is: its slot and its buffer rarely alias). Falls back to `dst_buf`.
pub(crate) fn non_aliasing_dst(dst_buf: PhysAddr, dst_len: usize, src: PhysAddr, len: usize) -> PhysAddr {
    let pages = (len as u64).div_ceil(4096);
    let src_idx = (src >> 12) % SOFTMMU_TLB_ENTRIES;
    let mut off = 0u64;
    while off + len as u64 <= dst_len as u64 {
        let idx = ((dst_buf + off) >> 12) % SOFTMMU_TLB_ENTRIES;
        let apart = (idx + SOFTMMU_TLB_ENTRIES - src_idx) % SOFTMMU_TLB_ENTRIES;
        if apart >= pages && apart + pages <= SOFTMMU_TLB_ENTRIES {
            return dst_buf + off;
        }
        off += 4096;
    }
    dst_buf
}

/// A duration in nanoseconds, as f64.
pub(crate) fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}
