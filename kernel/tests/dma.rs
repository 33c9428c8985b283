//! In-QEMU tests of the DMA layer on the real machine, under whichever `swiotlb_policy=` the run
//! was booted with (scripts/test-all.sh runs this kernel once per policy): bouncing beyond the
//! device tree's DMA window, restricted-pool isolation, mappings made in interrupt handlers, the
//! same scripted burst under every policy (the pool grows by reclaiming lent blocks under `lend`,
//! adds pools under `dynamic`, is big enough under `static`), per-device pools from a hint, and
//! the DMA-API debug checks.
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use core::time::Duration;

use alloc::format;
use alloc::string::String;
use boot::exception::IrqContext;
use kernel::bootargs::SwiotlbPolicy;
use kernel::demo::pressure::MemoryPressure;
use kernel::demo::workload;
use kernel::dma::debug::DmaDebugError;
use kernel::dma::device::{BouncePolicy, DmaDevice};
use kernel::dma::mapping::DmaError;
use kernel::dma::{DmaAttrs, DmaDirection};
use kernel::ktest::{self, buffer, err as e, free_buffer as free, read_phys as read, TestCase, TestResult};
use kernel::mm::page_alloc::{ReclaimError, ReclaimMode, ZoneType, PAGEBLOCK_SIZE};
use kernel::mm::phys::PhysMemory;
use kernel::mm::PAGE_SIZE;
use kernel::platform::dma::{dma_device_from_dt, set_inflight_hint, Dma, HintOutcome};
use kernel::platform::exit::ExitStatus;
use kernel::platform::mm::page_allocator;
use kernel::platform::{kernel, time, Kernel};
use kernel::{kassert, kassert_eq, kprintln};

use kernel::platform::phys::{ram, IdentityMappedRam};

kernel::entry!(main);

/// RAM, for this test kernel: it writes only memory it allocated (its buffers, the pages of its
/// memory pressure and page caches) or, standing in for a device, what a mapping handed that device.
fn mem() -> &'static IdentityMappedRam {
    // SAFETY: see the doc comment: every write of this file goes to such memory.
    unsafe { ram() }
}

// SAFETY: every buffer this test kernel maps or hands a disk is one it allocated, freed only
// after the unmap or after the request's outcome was collected; where a test touches one
// meanwhile, it stands in for the device or checks on purpose what the device or a bounce did.
kernel::test_kernel_owns_its_buffers!();
use owned::TestMaps;

fn main(k: &'static Kernel) -> ExitStatus {
    kprintln!("dma tests: swiotlb_policy={:?} dma_debug={}", k.params.swiotlb_policy, k.params.dma_debug);
    ktest::run(
        "dma",
        &[
            TestCase { name: "bounces_only_beyond_the_dma_window", run: bounces_only_beyond_window },
            TestCase { name: "restricted_pool_isolation", run: restricted_pool_isolation },
            TestCase { name: "irq_handlers_map_while_task_holds_mappings", run: irq_maps_while_task_holds },
            TestCase { name: "burst_from_irq_context_loses_nothing", run: burst_from_irq_context },
            TestCase { name: "per_device_pool_from_inflight_hint", run: per_device_pool },
            TestCase { name: "lent_page_mapped_directly_is_not_a_bounce_buffer", run: lent_page_not_bounce_buffer },
            TestCase { name: "device_pool_return_loses_no_irq_completion", run: device_pool_return_race },
            TestCase { name: "direct_mapping_pins_a_page_in_a_lent_block", run: direct_mapping_pins_lent_page },
            TestCase { name: "debug_mode_reports_misuse", run: debug_reports_misuse },
            TestCase { name: "scrubbed_slots_let_a_read_skip_its_copy_in", run: clean_slots_skip_copy_in },
        ],
    )
}

const TO: DmaDirection = DmaDirection::ToDevice;
const FROM: DmaDirection = DmaDirection::FromDevice;
const BIDI: DmaDirection = DmaDirection::Bidirectional;
const NOATTR: DmaAttrs = DmaAttrs { skip_cpu_sync: false, no_copy_in: false };

/// The kernel's DMA layer.
fn layer() -> &'static Dma {
    kernel::platform::dma::dma()
}

/// The DMA description of device-tree node `path`, leaked so interrupt handlers can use it.
fn device(path: &str) -> Result<&'static DmaDevice, String> {
    let k = kernel();
    let node = k.dt.find_path(path).map_err(e)?.ok_or_else(|| format!("no {path}"))?;
    let force = k.params.swiotlb.force == Some(true);
    let dev = dma_device_from_dt(&k.dt, &k.memblock, &node, force).map_err(e)?;
    Ok(alloc::boxed::Box::leak(alloc::boxed::Box::new(dev)))
}

/// The last address of the device tree's DMA window, which must leave RAM beyond it.
fn window() -> Result<u64, String> {
    let k = kernel();
    let limit = k.dt.smallest_dma_limit().map_err(e)?.ok_or("no DMA window in the device tree")?;
    let ram_end = k.memblock.ram().iter().map(|r| r.end()).max().unwrap_or(0);
    kassert!(limit + 1 < ram_end, "the DMA window (to {limit:#x}) covers all RAM (to {ram_end:#x}): nothing would bounce");
    Ok(limit)
}

fn disk0() -> Result<&'static DmaDevice, String> {
    device("/virtio_mmio@a003e00")
}

fn pattern(seed: u8, len: usize) -> alloc::vec::Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn bounces_only_beyond_window() -> TestResult {
    let d = disk0()?;
    // The device tree's DMA window (qemu-run.sh fits it to RAM below 512 MiB): it must leave
    // RAM beyond it, or nothing could bounce.
    let limit = window()?;
    kassert_eq!(d.dma_limit(), Some(limit));
    kassert!(d.coherent(), "QEMU's virtio-mmio nodes are dma-coherent");
    let api = &layer().api;
    let forced = matches!(d.policy(), BouncePolicy::Forced);
    let (high, low) = (buffer(0, true)?, buffer(0, false)?);
    kassert!(high > limit && low <= limit);
    mem().write(high, &pattern(1, 4096));
    let dma_high = api.test_map_single(d, high, 4096, BIDI, NOATTR).map_err(e)?;
    kassert!(dma_high != high && api.is_swiotlb_buffer(d, dma_high) && d.dma_capable(dma_high, 4096));
    kassert!(read(dma_high, 4096) == pattern(1, 4096), "copy-in on map");
    mem().write(dma_high, &pattern(2, 4096)); // the device writes
    api.unmap_single(d, dma_high, 4096, BIDI, NOATTR).map_err(e)?;
    kassert!(read(high, 4096) == pattern(2, 4096), "copy-back on unmap");
    // A second unmap of the bounce is refused, debug tracker or not (its slot is free).
    kassert!(api.unmap_single(d, dma_high, 4096, BIDI, NOATTR).is_err(), "a second unmap of a bounce succeeded");
    let direct_before = api.stats.maps_direct.load(core::sync::atomic::Ordering::Relaxed);
    let dma_low = api.test_map_single(d, low, 4096, TO, NOATTR).map_err(e)?;
    kassert_eq!(dma_low == low, !forced);
    kassert_eq!(api.stats.maps_direct.load(core::sync::atomic::Ordering::Relaxed) - direct_before, u64::from(!forced));
    kassert!(!api.is_swiotlb_buffer(d, dma_low) || forced, "a direct mapping taken for a bounce slot");
    api.unmap_single(d, dma_low, 4096, TO, NOATTR).map_err(e)?;
    free(high, 0);
    free(low, 0);
    Ok(())
}

/// Regression: once idle CPUs scrubbed the pool, a `no_copy_in` read bounced through clean slots
/// skips its copy-in, and what the device did not write reads back as zeros. Booted with
/// `swiotlb_clean_slots=off` (Linux's behaviour), the same read is copied in: the device sees the
/// caller's bytes and the unwritten ones survive.
fn clean_slots_skip_copy_in() -> TestResult {
    let clean = kernel::platform::kernel().params.swiotlb_clean_slots;
    let d = disk0()?;
    let api = &layer().api;
    let skipped = || layer().manager.pools().map(|p| p.stats().reads_copy_in_skipped).sum::<u64>();
    // Scrub everything now rather than wait for the idle loops.
    let mut scrubbed = 0;
    while kernel::platform::dma::scrub_step() != 0 {
        scrubbed += 1;
    }
    kprintln!("scrub steps run by the test: {scrubbed}");
    let high = buffer(0, true)?;
    mem().write(high, &pattern(3, 4096));
    let before = skipped();
    let attrs = DmaAttrs { no_copy_in: true, ..NOATTR };
    let dma = api.test_map_single(d, high, 4096, FROM, attrs).map_err(e)?;
    kassert!(api.is_swiotlb_buffer(d, dma));
    kassert_eq!(skipped(), before + u64::from(clean));
    if clean {
        kassert!(read(dma, 4096).iter().all(|b| *b == 0), "the device sees zeros, not the caller's bytes");
    } else {
        kassert!(read(dma, 4096) == pattern(3, 4096), "swiotlb_clean_slots=off: Linux's copy-in");
    }
    mem().write(dma, &pattern(4, 1000)); // the device writes part of the buffer
    api.unmap_single(d, dma, 4096, FROM, NOATTR).map_err(e)?;
    let back = read(high, 4096);
    kassert!(back[..1000] == pattern(4, 1000)[..], "the device's bytes");
    if clean {
        kassert!(back[1000..].iter().all(|b| *b == 0), "unwritten bytes read back as zeros");
    } else {
        kassert!(back[1000..] == pattern(3, 4096)[1000..], "unwritten bytes are the caller's own");
    }
    free(high, 0);
    Ok(())
}

fn restricted_pool_isolation() -> TestResult {
    let d = device("/virtio_mmio@a003c00")?;
    let BouncePolicy::Restricted(pool) = d.policy() else { return Err(format!("{d:?} is not behind its restricted pool")) };
    let range = pool.range();
    // Where the device tree puts it (qemu-run.sh moves it into the DMA window below 512 MiB).
    let k = kernel();
    let node =
        k.dt.reserved_regions().filter_map(Result::ok).find(|r| r.name.starts_with("restricted-dma")).ok_or("no restricted-dma node")?;
    let kernel::dt::ReservedPlacement::Static(placed) = node.placement else { return Err(format!("{} is not static", node.name)) };
    kassert_eq!(range, placed.base()..placed.end());
    kassert!(range.end - 1 <= window()?, "the restricted pool beyond the DMA window");
    let api = &layer().api;
    let default_used = layer().manager.used_slots();
    let (high, low) = (buffer(4, true)?, buffer(4, false)?);
    let mut maps = alloc::vec::Vec::new();
    let failure = loop {
        let src = if maps.len() % 2 == 0 { high } else { low };
        match api.test_map_single(d, src, 64 * 1024, TO, NOATTR) {
            Ok(dma) => {
                kassert!(range.contains(&dma), "mapping {dma:#x} outside the restricted pool");
                maps.push(dma);
            }
            Err(err) => break err,
        }
    };
    kassert!(matches!(failure, DmaError::Swiotlb(_)), "{failure}");
    kassert_eq!(maps.len() as u64, (range.end - range.start) / (64 * 1024)); // the pool's size in 64 KiB mappings, not one more
    kassert_eq!(layer().manager.used_slots(), default_used); // never the default pool
    let other = disk0()?;
    kassert!(!api.is_swiotlb_buffer(other, maps[0]), "another device's pools do not own these slots");
    for dma in maps {
        api.unmap_single(d, dma, 64 * 1024, TO, NOATTR).map_err(e)?;
    }
    kassert_eq!(pool.is_swiotlb_buffer(range.start), false);
    // Coherent memory (where its virtqueues will live) comes from the pool too.
    let (cpu, dma_addr) = api.alloc_coherent(d, page_allocator(), 8192).map_err(e)?;
    kassert!(range.contains(&cpu) && cpu == dma_addr && read(cpu, 8192).iter().all(|&b| b == 0));
    // Small blocks (request headers, status bytes) are carved from such a chunk.
    let small = kernel::dma::coherent_pool::CoherentPool::new(cpu, 8192);
    let header = small.alloc(16, 16).map_err(e)?;
    let status = small.alloc(1, 1).map_err(e)?;
    kassert!(range.contains(&header) && range.contains(&status) && header.abs_diff(status) >= 64);
    small.free(header, 16, 16).map_err(e)?;
    small.free(status, 1, 1).map_err(e)?;
    kassert_eq!(small.free_bytes(), 8192);
    api.free_coherent(d, page_allocator(), cpu, 8192).map_err(e)?;
    free(high, 4);
    free(low, 4);
    Ok(())
}

// ---- mappings from a real interrupt handler ----

static IRQ_DEV: spin::Once<&'static DmaDevice> = spin::Once::new();
static IRQ_BUF: AtomicU64 = AtomicU64::new(0);
static IRQ_OK: AtomicU32 = AtomicU32::new(0);
static IRQ_BAD: AtomicU32 = AtomicU32::new(0);

/// In interrupt context: map a buffer beyond the window, check the bounce, play the device,
/// unmap, check the copy-back. Never allocates, never waits.
fn irq_round_trip(_ctx: &IrqContext<'_>) {
    let (Some(d), buf) = (IRQ_DEV.get(), IRQ_BUF.load(Ordering::Relaxed)) else { return };
    if buf == 0 || IRQ_OK.load(Ordering::Relaxed) >= 200 {
        return;
    }
    let api = &layer().api;
    let n = IRQ_OK.load(Ordering::Relaxed) as u8;
    let mut block = [0u8; 512];
    block.iter_mut().enumerate().for_each(|(i, b)| *b = (i as u8) ^ n);
    mem().write(buf, &block);
    let Ok(dma) = api.test_map_single(d, buf, 512, BIDI, NOATTR) else {
        IRQ_BAD.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut seen = [0u8; 512];
    mem().read(dma, &mut seen);
    let copied_in = seen == block;
    block.iter_mut().for_each(|b| *b = !*b);
    mem().write(dma, &block);
    let unmapped = api.unmap_single(d, dma, 512, BIDI, NOATTR).is_ok();
    mem().read(buf, &mut seen);
    if copied_in && unmapped && seen == block {
        IRQ_OK.fetch_add(1, Ordering::Relaxed);
    } else {
        IRQ_BAD.fetch_add(1, Ordering::Relaxed);
    }
}

fn irq_maps_while_task_holds() -> TestResult {
    let d = disk0()?;
    let api = &layer().api;
    let held_src = buffer(4, true)?;
    mem().write(held_src, &pattern(9, 64 * 1024));
    let mut held = alloc::vec::Vec::new();
    for _ in 0..8 {
        held.push(api.test_map_single(d, held_src, 64 * 1024, TO, NOATTR).map_err(e)?);
    }
    IRQ_DEV.call_once(|| d);
    IRQ_BUF.store(buffer(0, true)?, Ordering::Relaxed);
    let irq_maps_before = api.stats.maps_in_irq.load(Ordering::Relaxed);
    kassert!(time::add_tick_hook(irq_round_trip));
    time::start_tick(Duration::from_micros(200));
    let deadline = time::uptime() + Duration::from_secs(10);
    while IRQ_OK.load(Ordering::Relaxed) + IRQ_BAD.load(Ordering::Relaxed) < 200 && time::uptime() < deadline {
        // Task context keeps checking its own mappings meanwhile.
        for &dma in &held {
            kassert!(read(dma, 64) == pattern(9, 64), "a held mapping changed under IRQ-context traffic");
        }
    }
    time::stop_tick();
    time::remove_tick_hook(irq_round_trip);
    let (ok, bad) = (IRQ_OK.load(Ordering::Relaxed), IRQ_BAD.load(Ordering::Relaxed));
    kprintln!(
        "  {ok} round trips in interrupt context, {bad} bad; {} maps in IRQ context",
        api.stats.maps_in_irq.load(Ordering::Relaxed) - irq_maps_before
    );
    kassert_eq!(bad, 0);
    kassert_eq!(ok, 200);
    for dma in held {
        api.unmap_single(d, dma, 64 * 1024, TO, NOATTR).map_err(e)?;
    }
    free(held_src, 4);
    free(IRQ_BUF.swap(0, Ordering::Relaxed), 0);
    Ok(())
}

// ---- the scripted workload (kernel::demo::workload), checked per policy ----

fn burst_from_irq_context() -> TestResult {
    let policy = kernel().params.swiotlb_policy;
    // The burst holds BURST x BURST_LEN of bounce buffers at once: a default pool region that
    // cannot hold twice that (qemu-run.sh gives 1/8 of RAM below 256 MiB) cannot serve it.
    // Only `static` and `lend` are confined to the region: `dynamic` adds pools from the page
    // allocator and `cma` from its CMA area (their boot pool may be smaller than the burst).
    let pool = layer().manager.default_pool();
    let burst_bytes = (workload::BURST * workload::BURST_LEN) as u64;
    if matches!(policy, SwiotlbPolicy::Static | SwiotlbPolicy::Lend) && pool.end() - pool.start() < 2 * burst_bytes {
        return ktest::skip(format!(
            "the default pool region ({} MiB) is smaller than twice the burst ({} MiB)",
            (pool.end() - pool.start()) >> 20,
            burst_bytes >> 20
        ));
    }
    // Cycle 0 without memory pressure, cycle 1 under it.
    let reports = workload::burst_idle_cycles(disk0()?, 1, &mut |_, _| {}, &mut |_, _| {})?;
    kassert_eq!(reports.len(), 2);
    for r in &reports {
        kprintln!("  policy {policy:?}: {r}");
        kassert_eq!(r.under_pressure, r.cycle == 1);
        check_burst_cycle(policy, r)?;
    }
    if policy == SwiotlbPolicy::Dynamic {
        // Only failed GFP_NOWAIT transient allocations may fail an IRQ-context mapping.
        let t = layer().manager.transient_pools().stats();
        let failures: u64 = reports.iter().map(|r| r.irq_failures).sum();
        kprintln!("  transient pools: {t:?}");
        kassert!(failures <= t.failed, "{failures} IRQ-context failures but {} failed transient allocations", t.failed);
        kassert_eq!(layer().manager.transient_pools().live(), 0);
    }
    Ok(())
}

/// What every cycle of the workload must show under `policy`; `r.under_pressure` says whether
/// the burst ran with RAM full of movable pages (the lent blocks and the CMA area included).
fn check_burst_cycle(policy: SwiotlbPolicy, r: &workload::WorkloadReport) -> TestResult {
    let ((before, peak, idle), (a, b)) = (r.slots, (&r.after, &r.before));
    kassert_eq!(r.mapped, workload::BURST); // every request served exactly once, none lost
    kassert!(r.data_ok, "a bounce buffer held the wrong data");
    kassert!(r.pressure_intact, "movable pages corrupted by reclaim");
    // Each mapping that failed in interrupt context was deferred and completed in task context.
    kassert_eq!(r.deferred_done as u64, r.irq_failures);
    let f = &r.fragmentation;
    kassert!(f.free_pages > 0 && f.unusable_free_index <= 1000, "{f}");
    match policy {
        SwiotlbPolicy::Lend => {
            kassert!(r.done_under_pressure, "lend stalled (cycle {})", r.cycle);
            kassert!(a.pageblocks_reclaimed > b.pageblocks_reclaimed, "the pool never grew by reclaim");
            if r.under_pressure {
                kassert!(a.pages_migrated > b.pages_migrated, "reclaim migrated no page out of the lent blocks");
            }
            kassert!(idle < peak, "the idle pool did not shrink");
        }
        SwiotlbPolicy::Dynamic => {
            // Linux 6.6: a miss gets a transient pool in any context, and the worker adds pools
            // (compacting movable pages out of the way); nothing ever shrinks. With the whole
            // boot pool (32 MiB) the burst fits and nothing grows.
            let t = layer().manager.transient_pools().stats();
            kassert!(r.done_under_pressure, "dynamic stalled (cycle {})", r.cycle);
            kassert!(peak >= before && idle == peak, "dynamic pools shrank");
            // Every miss tried a transient pool (under pressure GFP_NOWAIT may find no page:
            // then it counts a failure), and the worker added pools after the misses.
            if a.misses > b.misses && kernel().params.swiotlb_transient {
                kassert!(
                    t.allocated + t.failed >= a.misses - b.misses,
                    "{} misses but only {} transient pools tried",
                    a.misses - b.misses,
                    t.allocated + t.failed
                );
                kassert!(a.extra_pools > b.extra_pools, "pools missed but the worker added none");
            }
        }
        SwiotlbPolicy::Cma => {
            kassert!(r.done_under_pressure, "cma stalled (cycle {})", r.cycle);
            kassert!(a.cma_chunks_allocated > b.cma_chunks_allocated, "the pool never grew from the CMA area");
            if r.under_pressure {
                kassert!(a.pages_migrated > b.pages_migrated, "cma_alloc migrated no page out of the CMA area");
            }
            kassert!(idle < peak, "the idle pool did not give chunks back");
        }
        SwiotlbPolicy::Static => {
            kassert!(r.done_under_pressure);
            kassert_eq!(r.irq_failures, 0); // 32 MiB of slots hold the burst
            kassert_eq!((peak, idle), (before, before));
        }
    }
    Ok(())
}

fn per_device_pool() -> TestResult {
    let d = disk0()?;
    let api = &layer().api;
    let outcome = set_inflight_hint(d, 4 << 20);
    if matches!(layer().manager.policy(), SwiotlbPolicy::Dynamic | SwiotlbPolicy::Cma) {
        kassert!(outcome.is_err(), "no device pools under dynamic and cma: {outcome:?}");
        return Ok(());
    }
    kassert_eq!(outcome.map_err(|x| format!("{x:?}"))?, HintOutcome::Carved(2));
    let own = d.device_pool().ok_or("no device pool attached")?;
    let src = buffer(0, true)?;
    let dma = api.test_map_single(d, src, 4096, TO, NOATTR).map_err(e)?;
    kassert!(own.is_swiotlb_buffer(dma) && !layer().manager.is_swiotlb_buffer(dma), "the mapping did not use the device pool");
    // Returning it with a live mapping is refused; the pool stays attached.
    kassert!(set_inflight_hint(d, 0).is_err());
    kassert!(d.device_pool().is_some());
    api.unmap_single(d, dma, 4096, TO, NOATTR).map_err(e)?;
    kassert_eq!(set_inflight_hint(d, 0).map_err(|x| format!("{x:?}"))?, HintOutcome::Returned);
    kassert!(d.device_pool().is_none());
    // Small hints and unlimited devices get nothing.
    kassert_eq!(set_inflight_hint(d, 4096).map_err(|x| format!("{x:?}"))?, HintOutcome::Unchanged);
    free(src, 0);
    Ok(())
}

fn lent_page_not_bounce_buffer() -> TestResult {
    if kernel().params.swiotlb_policy != SwiotlbPolicy::Lend {
        return Ok(()); // nothing is lent under the other policies
    }
    let d = disk0()?;
    let api = &layer().api;
    let pool = layer().manager.default_pool();
    let range = pool.start()..pool.end();
    let pages = page_allocator();
    // Fill memory until movable pages sit in the default pool's lent blocks.
    let pressure = MemoryPressure::fill(pages, mem(), ZoneType::Normal, usize::MAX, 3);
    let lent_page = pressure.pages().find_map(|p| pages.pin(p).ok().map(|pin| pin.addr()).filter(|a| range.contains(a)));
    let result = (|| -> TestResult {
        let page = lent_page.ok_or("no movable page in the pool's lent blocks")?;
        let dma = api.test_map_single(d, page, PAGE_SIZE as usize, FROM, NOATTR).map_err(e)?;
        kassert_eq!(dma, page); // reachable, aligned: mapped directly
        kassert!(!api.is_swiotlb_buffer(d, dma), "a lent page inside the pool's range taken for a bounce buffer");
        api.unmap_single(d, dma, PAGE_SIZE as usize, FROM, NOATTR).map_err(e)?;
        Ok(())
    })();
    pressure.release(pages).map_err(e)?;
    result?;
    let high = buffer(0, true)?;
    let dma = api.test_map_single(d, high, 2048, TO, NOATTR).map_err(e)?;
    kassert!(range.contains(&dma) && api.is_swiotlb_buffer(d, dma));
    api.unmap_single(d, dma, 2048, TO, NOATTR).map_err(e)?;
    free(high, 0);
    Ok(())
}

// ---- the device-pool return against completions in interrupt context ----

static RACE_DEV: spin::Once<&'static DmaDevice> = spin::Once::new();
static RACE_BUF: AtomicU64 = AtomicU64::new(0);
/// The mapping the "device" holds (0: none); only the tick hook touches it while it runs.
static RACE_DMA: AtomicU64 = AtomicU64::new(0);
static RACE_TICKS: AtomicU32 = AtomicU32::new(0);
static RACE_OK: AtomicU32 = AtomicU32::new(0);
static RACE_BAD: AtomicU32 = AtomicU32::new(0);
static RACE_STOP: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

fn race_block(n: u32) -> [u8; 512] {
    core::array::from_fn(|i| (i as u8).wrapping_add(n as u8).wrapping_mul(7) | 1)
}

/// In interrupt context: "the device" completes the read it holds (writes the slot, then the
/// driver unmaps and checks the copy back), then maps the next one on three ticks of four, so a
/// mapping is live most of the time and the pool can still be returned now and then.
fn race_tick(_ctx: &IrqContext<'_>) {
    let (Some(d), buf) = (RACE_DEV.get(), RACE_BUF.load(Ordering::Relaxed)) else { return };
    if buf == 0 {
        return;
    }
    let api = &layer().api;
    let n = RACE_TICKS.fetch_add(1, Ordering::Relaxed);
    let dma = RACE_DMA.swap(0, Ordering::Relaxed);
    if dma != 0 {
        let block = race_block(n);
        mem().write(dma, &block);
        let unmapped = api.unmap_single(d, dma, 512, FROM, NOATTR).is_ok();
        let mut seen = [0u8; 512];
        mem().read(buf, &mut seen);
        let counter = if unmapped && seen == block { &RACE_OK } else { &RACE_BAD };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    if RACE_STOP.load(Ordering::Relaxed) || n % 4 == 3 {
        return;
    }
    mem().fill(buf, 0, 512);
    if let Ok(dma) = api.test_map_single(d, buf, 512, FROM, NOATTR) {
        RACE_DMA.store(dma, Ordering::Relaxed);
    }
}

/// Regression: returning a device pool detached it before checking for live mappings, so a
/// completion in between unmapped as if direct (no copy back, slots leaked, reported Ok).
fn device_pool_return_race() -> TestResult {
    if matches!(layer().manager.policy(), SwiotlbPolicy::Dynamic | SwiotlbPolicy::Cma) {
        return Ok(()); // no device pools under dynamic
    }
    let d = disk0()?;
    let hint = |bytes| set_inflight_hint(d, bytes).map_err(|x| format!("{x:?}"));
    kassert_eq!(hint(4 << 20)?, HintOutcome::Carved(2));
    let default_used = layer().manager.default_pool().used_slots();
    RACE_DEV.call_once(|| d);
    RACE_BUF.store(buffer(0, true)?, Ordering::Relaxed);
    kassert!(time::add_tick_hook(race_tick));
    time::start_tick(Duration::from_micros(200));
    let (mut returned, mut refused, mut rounds) = (0u32, 0u32, 0u32);
    let deadline = time::uptime() + Duration::from_secs(3);
    let mut result = Ok(());
    while time::uptime() < deadline && RACE_BAD.load(Ordering::Relaxed) == 0 {
        rounds += 1;
        match set_inflight_hint(d, 0) {
            Ok(HintOutcome::Returned) => {
                returned += 1;
                if let Err(x) = hint(4 << 20) {
                    result = Err(format!("carving the pool again: {x}"));
                    break;
                }
            }
            Ok(other) => {
                result = Err(format!("returning the pool: {other:?}"));
                break;
            }
            Err(_) => refused += 1, // live mappings: it stays attached
        }
    }
    RACE_STOP.store(true, Ordering::Relaxed);
    time::stop_tick();
    time::remove_tick_hook(race_tick);
    // The mapping the "device" may still hold completes here (task context).
    let held = RACE_DMA.swap(0, Ordering::Relaxed);
    if held != 0 {
        let block = race_block(u32::MAX);
        mem().write(held, &block);
        let unmapped = layer().api.unmap_single(d, held, 512, FROM, NOATTR);
        let counter = if unmapped.is_ok() && read(RACE_BUF.load(Ordering::Relaxed), 512) == block { &RACE_OK } else { &RACE_BAD };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    let (ok, bad) = (RACE_OK.load(Ordering::Relaxed), RACE_BAD.load(Ordering::Relaxed));
    kprintln!("  {rounds} hint rounds: pool returned {returned} times, refused {refused} times (live mappings); {ok} completions in IRQ context, {bad} lost");
    result?;
    kassert_eq!(bad, 0, "a completion lost its copy back while the pool was being returned");
    kassert!(ok > 0, "no completion in interrupt context");
    // Nothing leaked: the device pool is empty (it can be returned), the default pool as before.
    kassert_eq!(hint(0)?, HintOutcome::Returned, "the device pool kept slots of a finished mapping");
    kassert_eq!(layer().manager.default_pool().used_slots(), default_used);
    free(RACE_BUF.swap(0, Ordering::Relaxed), 0);
    Ok(())
}

// ---- direct mappings of pages inside lent blocks ----

/// Regression: a movable page of a lent pageblock, mapped directly, must not be migrated (and its
/// frame turned into bounce slots) while the device may still write to it.
fn direct_mapping_pins_lent_page() -> TestResult {
    if kernel().params.swiotlb_policy != SwiotlbPolicy::Lend {
        return Ok(()); // nothing is lent under the other policies
    }
    let d = disk0()?;
    let api = &layer().api;
    let pool = layer().manager.default_pool();
    let range = pool.start()..pool.end();
    let pages = page_allocator();
    let mut pressure = MemoryPressure::fill(pages, mem(), ZoneType::Normal, usize::MAX, 5);
    pressure.release_every(pages, 2); // room for migration targets
    let info = |p| pages.lock().movable_info(p).map_err(e);
    let lent = pressure.pages().find(|p| info(*p).is_ok_and(|i| range.contains(&i.addr)));
    let result = (|| -> TestResult {
        let page = lent.ok_or("no movable page in the pool's lent blocks")?;
        let addr = info(page)?.addr;
        let block = addr & !(PAGEBLOCK_SIZE - 1)..(addr & !(PAGEBLOCK_SIZE - 1)) + PAGEBLOCK_SIZE;
        let dma = api.test_map_single(d, addr, PAGE_SIZE as usize, FROM, NOATTR).map_err(e)?;
        kassert_eq!(dma, addr); // reachable, aligned: mapped directly
        let reclaim = || pages.reclaim_swiotlb_pageblocks(block.clone(), mem(), ReclaimMode { drop_clean: true }, &mut |_| {});
        let first = reclaim();
        if first.is_ok() {
            // The block left the page allocator behind the pool manager's back: give it back.
            let _ = pages.lock().lend_swiotlb_pageblocks(block.clone());
        }
        let moved = info(page)?.addr != addr;
        api.unmap_single(d, dma, PAGE_SIZE as usize, FROM, NOATTR).map_err(e)?;
        match first {
            Err(ReclaimError::Busy(report)) => {
                kassert!(report.pinned.contains(&page), "reclaim did not report the mapped page pinned: {report:?}")
            }
            Ok(report) => return Err(format!("reclaim took the pageblock of a page mapped for DMA ({} pages migrated)", report.migrated)),
            Err(other) => return Err(format!("reclaim: {other:?}")),
        }
        kassert!(!moved, "the mapped page was migrated during DMA");
        kassert_eq!(info(page)?.pins, 0, "unmap left the page pinned");
        // Unmapped, the block comes back (and is lent again, as the pool manager expects).
        pages
            .reclaim_swiotlb_pageblocks(block.clone(), mem(), ReclaimMode { drop_clean: true }, &mut |_| {})
            .map_err(|x| format!("{x:?}"))?;
        pages.lock().lend_swiotlb_pageblocks(block.clone()).map_err(e)?;
        kassert!(info(page)?.addr != addr, "reclaim did not move the page out");
        Ok(())
    })();
    let verified = pressure.verify(pages, mem()).map_err(|x| format!("{x:?}"));
    pressure.release(pages).map_err(e)?;
    result?;
    verified?;
    Ok(())
}

fn debug_reports_misuse() -> TestResult {
    if !kernel().params.dma_debug {
        return ktest::skip("booted with dma_debug=off (the CI step that runs the direct path inline)");
    }
    let d = disk0()?;
    let api = &layer().api;
    let high = buffer(0, true)?;
    let dma = api.test_map_single(d, high, 4096, FROM, NOATTR).map_err(e)?;
    let r = api.unmap_single(d, dma, 1024, FROM, NOATTR);
    kassert!(matches!(r, Err(DmaError::Misuse(DmaDebugError::UnmapWrongSize { .. }))), "{r:?}");
    let r = api.unmap_single(d, dma, 4096, TO, NOATTR);
    kassert!(matches!(r, Err(DmaError::Misuse(DmaDebugError::UnmapWrongDirection { .. }))), "{r:?}");
    // The refused unmaps changed nothing: the mapping is live and tracked, and the right unmap
    // ends it; a second one is a double unmap.
    kassert!(api.is_swiotlb_buffer(d, dma));
    api.unmap_single(d, dma, 4096, FROM, NOATTR).map_err(e)?;
    // The page run is free again, or parked in the slot cache (held: its slots still read Used).
    kassert!(!api.is_swiotlb_buffer(d, dma) || layer().manager.default_pool().cached_runs() > 0);
    let r = api.unmap_single(d, dma, 4096, FROM, NOATTR);
    kassert!(matches!(r, Err(DmaError::Misuse(DmaDebugError::DoubleUnmap { .. }))), "{r:?}");
    let dma = api.test_map_single(d, high, 4096, TO, NOATTR).map_err(e)?;
    let r = api.sync_single_for_cpu(d, dma, 4096, FROM);
    kassert!(matches!(r, Err(DmaError::Misuse(DmaDebugError::SyncWrongDirection { .. }))), "{r:?}");
    api.unmap_single(d, dma, 4096, TO, NOATTR).map_err(e)?;
    kassert!(api.debug().is_some_and(|t| t.device_removed(d.id).is_ok()), "live mappings left behind");
    free(high, 0);
    Ok(())
}
