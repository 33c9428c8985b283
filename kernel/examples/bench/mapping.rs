//! Mapping cost, CPU only (no device): map+unmap of 4 KiB and 64 KiB direct and bounced, with
//! and without the copy back, `is_swiotlb_buffer`, each with 1, 64 and 512 other live bounced
//! mappings, against a plain memcpy of the same size measured in the same boot.

use alloc::string::String;
use alloc::vec::Vec;

use kernel::dma::device::DmaDevice;
use kernel::dma::mapping::DmaApi;
use kernel::dma::{DmaAttrs, DmaDirection};
use kernel::ktest;
use kernel::mm::PhysAddr;
use kernel::platform::dma::dma;

use super::json::{array, Obj};
use super::measure::{iters_for, memcpy_ns, non_aliasing_dst, ns_per_op};

const COPY: DmaAttrs = DmaAttrs { skip_cpu_sync: false, no_copy_in: false };
const SKIP: DmaAttrs = DmaAttrs { skip_cpu_sync: true, no_copy_in: false };
const LIVE: [usize; 3] = [1, 64, 512];
const REPS: usize = 7;

/// Map then unmap `len` bytes at `addr`; panics on failure (the benchmark keeps the pool far
/// from full, so a failure is a bug worth stopping for). Only for the benchmark's own buffers.
/// `api` is looked up once by the caller: the loop measures the mapping, not the lookup.
#[inline(never)]
fn map_unmap(api: &DmaApi, dev: &DmaDevice, addr: PhysAddr, len: usize, dir: DmaDirection, attrs: DmaAttrs) {
    map_unmap_inline(api, dev, addr, len, dir, attrs)
}

/// [`map_unmap`] inlined into the caller, as a driver's submit path inlines the DMA API's
/// (`map_single` and `unmap_single` are `#[inline]`): the map+unmap costs what it adds to a
/// function that already has its stack frame and its registers saved.
#[inline(always)]
fn map_unmap_inline(api: &DmaApi, dev: &DmaDevice, addr: PhysAddr, len: usize, dir: DmaDirection, attrs: DmaAttrs) {
    // SAFETY: every caller in this file passes a buffer `mapping_cost` allocated (`inside`,
    // `beyond`), which nothing else touches, and unmapped before this returns.
    let dma_addr = unsafe { api.map_single(dev, addr, len, dir, attrs) }.expect("map_single");
    api.unmap_single(dev, dma_addr, len, dir, attrs).expect("unmap_single");
}

/// The benchmark loop's own share of a `map_unmap` call: the same arguments passed to a function
/// that does nothing, called through a pointer the optimiser cannot see through (so the call
/// stays). Subtracted from the direct map+unmap, whose cost is a few dozen instructions.
#[inline(never)]
fn call_only(_: &DmaApi, _: &DmaDevice, _: PhysAddr, _: usize, _: DmaDirection, _: DmaAttrs) {}

/// Runs the mapping benchmark on `dev` (DMA-limited: buffers beyond its window bounce).
pub(crate) fn mapping_cost(dev: &'static DmaDevice, out: &mut Obj) -> Result<(), String> {
    let api = &dma().api;
    let inside = ktest::buffer(4, false)?;
    let beyond = ktest::buffer(4, true)?;
    let live_src = ktest::buffer(0, true)?;
    let copy_dst = ktest::buffer(6, false)?;
    out.bool("coherent", dev.coherent());
    let mut rows = Vec::new();
    let mut held: Vec<u64> = Vec::new();
    for &live in &LIVE {
        // Hold `live` bounced 4 KiB mappings (2 slots each) while measuring.
        while held.len() < live {
            // SAFETY: `live_src` is the benchmark's, only read (`ToDevice`) while mapped, and freed
            // never (a test kernel's buffer).
            held.push(unsafe { api.map_single(dev, live_src, 4096, DmaDirection::ToDevice, COPY) }.map_err(ktest::err)?);
        }
        let probe = held[held.len() / 2];
        let is_buf = ns_per_op(REPS, 20_000, || {
            core::hint::black_box(api.is_swiotlb_buffer(dev, core::hint::black_box(probe)));
        });
        let not_buf = ns_per_op(REPS, 20_000, || {
            core::hint::black_box(api.is_swiotlb_buffer(dev, core::hint::black_box(inside)));
        });
        for size in [4096usize, 64 * 1024] {
            let n = iters_for(size);
            let mut o = Obj::new();
            o.int("live", live as u64)
                .int("size", size as u64)
                .num("memcpy_ns", memcpy_ns(non_aliasing_dst(copy_dst, 256 << 10, beyond, size), beyond, size))
                .num("memcpy_aliasing_ns", memcpy_ns(inside, beyond, size))
                .num("direct_call_ns", {
                    let f = core::hint::black_box(call_only as fn(&DmaApi, &DmaDevice, PhysAddr, usize, DmaDirection, DmaAttrs));
                    ns_per_op(REPS, n.max(2000), || f(api, dev, inside, size, DmaDirection::ToDevice, COPY))
                })
                // The same map+unmap inline in the measuring loop, and that loop with the same
                // opaque arguments and nothing else: the difference is what the DMA API adds.
                .num("direct_loop_ns", {
                    ns_per_op(REPS, n.max(2000), || {
                        core::hint::black_box(core::hint::black_box((dev, inside, size)));
                    })
                })
                .num("direct_inline_ns", {
                    ns_per_op(REPS, n.max(2000), || {
                        let (dev, addr, size) = core::hint::black_box((dev, inside, size));
                        map_unmap_inline(api, dev, addr, size, DmaDirection::ToDevice, COPY)
                    })
                })
                .num(
                    "direct_map_unmap_ns",
                    ns_per_op(REPS, n.max(2000), || map_unmap(api, dev, inside, size, DmaDirection::ToDevice, COPY)),
                )
                .num("bounce_to_device_ns", ns_per_op(REPS, n, || map_unmap(api, dev, beyond, size, DmaDirection::ToDevice, COPY)))
                .num(
                    "bounce_bidir_skip_sync_ns",
                    ns_per_op(REPS, n, || map_unmap(api, dev, beyond, size, DmaDirection::Bidirectional, SKIP)),
                )
                .num("bounce_bidir_ns", ns_per_op(REPS, n, || map_unmap(api, dev, beyond, size, DmaDirection::Bidirectional, COPY)))
                .num("is_swiotlb_buffer_hit_ns", is_buf)
                .num("is_swiotlb_buffer_miss_ns", not_buf);
            rows.push(o.finish());
        }
    }
    for a in held {
        api.unmap_single(dev, a, 4096, DmaDirection::ToDevice, COPY).map_err(ktest::err)?;
    }
    ktest::free_buffer(inside, 4);
    ktest::free_buffer(beyond, 4);
    ktest::free_buffer(live_src, 0);
    ktest::free_buffer(copy_dst, 6);
    out.raw("rows", array(rows));
    Ok(())
}

/// Pool counts at which [`pool_scaling`] measures.
const POOL_COUNTS: [usize; 3] = [1, 8, 64];

/// Lookup cost as pools are added (upstream's question about many pools: Linux's dynamic mode
/// keeps a list that map, unmap, sync and `is_swiotlb_buffer` search; `lend` and `cma` keep one
/// slot manager or a short list). Under the policy booted: with `dynamic` and
/// `swiotlb_dyn_pool=1`, each worker run after a miss adds a one-pageblock pool; the default and
/// all but the newest pool are then kept full, so the measured map+unmap lands in the newest,
/// and `is_swiotlb_buffer` of a buffer outside every pool walks them all. Other policies are
/// measured once, at the pool count they have.
pub(crate) fn pool_scaling(dev: &'static DmaDevice, out: &mut Obj) -> Result<(), String> {
    use kernel::platform::mm::page_allocator;
    let api = &dma().api;
    let m = dma().manager;
    let inside = ktest::buffer(4, false)?;
    let beyond = ktest::buffer(4, true)?;
    let clock: fn() -> core::time::Duration = kernel::platform::time::uptime;
    let mut rows = Vec::new();
    let mut fill: Vec<u64> = Vec::new();
    let grows = m.policy() == kernel::bootargs::SwiotlbPolicy::Dynamic;
    for &want in &POOL_COUNTS {
        let pools = || m.pools().count();
        while grows && pools() < want {
            // Fill what exists (64 KiB mappings), then let the worker add one pool.
            // SAFETY: `beyond` is the benchmark's, only read (`ToDevice`) while mapped.
            while let Ok(a) = unsafe { api.map_single(dev, beyond, 64 << 10, DmaDirection::ToDevice, COPY) } {
                if !m.is_swiotlb_buffer(a) || m.transient_pools().contains(a) {
                    api.unmap_single(dev, a, 64 << 10, DmaDirection::ToDevice, COPY).map_err(ktest::err)?;
                    break;
                }
                fill.push(a);
            }
            let before = pools();
            m.note_miss();
            m.worker(page_allocator(), &clock, &mut |_| {});
            if pools() == before {
                return Err(alloc::format!("the worker added no pool at {before} pools"));
            }
        }
        let n = iters_for(4096);
        let mut o = Obj::new();
        o.int("pools", pools() as u64)
            .num("bounce_map_unmap_4k_ns", ns_per_op(REPS, n, || map_unmap(api, dev, beyond, 4096, DmaDirection::ToDevice, SKIP)))
            .num("memcpy_4k_ns", memcpy_ns(inside, beyond, 4096))
            .num(
                "is_swiotlb_buffer_miss_ns",
                ns_per_op(REPS, 20_000, || {
                    core::hint::black_box(api.is_swiotlb_buffer(dev, core::hint::black_box(beyond)));
                }),
            );
        rows.push(o.finish());
        if !grows {
            break;
        }
    }
    for a in fill {
        api.unmap_single(dev, a, 64 << 10, DmaDirection::ToDevice, COPY).map_err(ktest::err)?;
    }
    ktest::free_buffer(inside, 4);
    ktest::free_buffer(beyond, 4);
    out.raw("scaling", array(rows));
    Ok(())
}
