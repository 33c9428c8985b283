//! Mapping cost, CPU only (no device): map+unmap of 4 KiB and 64 KiB direct and bounced, with
//! and without the copy back, `is_swiotlb_buffer`, each with 1, 64 and 512 other live bounced
//! mappings, against a plain memcpy of the same size measured in the same boot.

use alloc::string::String;
use alloc::vec::Vec;

use kernel::dma::device::DmaDevice;
use kernel::dma::{DmaAttrs, DmaDirection};
use kernel::ktest;
use kernel::mm::PhysAddr;
use kernel::platform::dma::dma;

use super::json::{array, Obj};
use super::measure::{iters_for, memcpy_ns, non_aliasing_dst, ns_per_op};

const COPY: DmaAttrs = DmaAttrs { skip_cpu_sync: false };
const SKIP: DmaAttrs = DmaAttrs { skip_cpu_sync: true };
const LIVE: [usize; 3] = [1, 64, 512];
const REPS: usize = 7;

/// Map then unmap `len` bytes at `addr`; panics on failure (the benchmark keeps the pool far
/// from full, so a failure is a bug worth stopping for).
fn map_unmap(dev: &DmaDevice, addr: PhysAddr, len: usize, dir: DmaDirection, attrs: DmaAttrs) {
    let api = &dma().api;
    let dma_addr = api.map_single(dev, addr, len, dir, attrs).expect("map_single");
    api.unmap_single(dev, dma_addr, len, dir, attrs).expect("unmap_single");
}

/// Runs the mapping benchmark on `dev` (DMA-limited: buffers beyond its window bounce).
pub fn mapping_cost(dev: &'static DmaDevice, out: &mut Obj) -> Result<(), String> {
    let api = &dma().api;
    let inside = ktest::buffer(4, false)?;
    let beyond = ktest::buffer(4, true)?;
    let live_src = ktest::buffer(0, true)?;
    let copy_dst = ktest::buffer(6, false)?;
    out.bool("coherent", dev.coherent);
    let mut rows = Vec::new();
    let mut held: Vec<u64> = Vec::new();
    for &live in &LIVE {
        // Hold `live` bounced 4 KiB mappings (2 slots each) while measuring.
        while held.len() < live {
            held.push(api.map_single(dev, live_src, 4096, DmaDirection::ToDevice, COPY).map_err(ktest::err)?);
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
                .num("direct_map_unmap_ns", ns_per_op(REPS, n.max(2000), || map_unmap(dev, inside, size, DmaDirection::ToDevice, COPY)))
                .num("bounce_to_device_ns", ns_per_op(REPS, n, || map_unmap(dev, beyond, size, DmaDirection::ToDevice, COPY)))
                .num("bounce_bidir_skip_sync_ns", ns_per_op(REPS, n, || map_unmap(dev, beyond, size, DmaDirection::Bidirectional, SKIP)))
                .num("bounce_bidir_ns", ns_per_op(REPS, n, || map_unmap(dev, beyond, size, DmaDirection::Bidirectional, COPY)))
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
