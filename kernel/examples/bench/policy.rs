//! The design question: the scripted workload of [`kernel::demo::workload`] (memory
//! pressure, a burst of 256 x 64 KiB bounce mappings from the timer interrupt, idle) under the
//! policy the command line chose, as burst/idle cycles: cycle 0 without memory pressure, then
//! `cycles=<N>` cycles under it. Each cycle's figures and the page allocator's fragmentation
//! after its idle phase go into `cycles`; the top-level figures, the pools sampled over time
//! and the RAM pictures after each phase are those of cycle 1, the first under pressure (cycle
//! 0 when `cycles=0`).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use kernel::demo::workload;
use kernel::dma::device::DmaDevice;
use kernel::dma::swiotlb::mem::{BlockState, SLOTS_PER_PAGEBLOCK};
use kernel::dma::swiotlb::IO_TLB_SIZE;
use kernel::ktest;
use kernel::mm::page_alloc::{Fragmentation, PAGEBLOCK_SIZE};
use kernel::platform::dma::dma;
use kernel::platform::mm::{in_swiotlb_region, page_allocator};
use kernel::platform::Kernel;

use super::json::{array, numbers, Obj};
use super::measure::{memcpy_ns, now_ns, ns};

/// Samples closer than this are skipped (the idle loop wakes every millisecond).
const SAMPLE_EVERY_NS: u64 = 5_000_000;

fn ram_picture(k: &Kernel) -> String {
    let pa = page_allocator().lock();
    format!("{}", pa.ram_picture(|a| in_swiotlb_region(&k.memblock, a)))
}

/// What the RAM picture cannot tell (it knows only the page allocator): pageblocks of the
/// default pool's region by the manager's state (`u` reserved but unused, `c` carved for a
/// device) and the dynamic policy's extra pools (`e`), as `[index, "char"]` pairs, the index
/// counted in pageblocks from the start of RAM like the picture's characters.
fn picture_overlay() -> String {
    let m = dma().manager;
    let base = page_allocator().lock().span().start;
    let block_of = |a: u64| (a - base) / PAGEBLOCK_SIZE;
    let mut marks = Vec::new();
    let first = block_of(m.default_pool().start());
    for b in 0..m.nr_pageblocks() {
        match m.pageblock_state(b) {
            Some(BlockState::Unused) => marks.push(format!("[{}, \"u\"]", first + b as u64)),
            Some(BlockState::CarvedForDevice) => marks.push(format!("[{}, \"c\"]", first + b as u64)),
            _ => {}
        }
    }
    for p in m.extra_pools() {
        let n = (p.nslots() * IO_TLB_SIZE) as u64 / PAGEBLOCK_SIZE;
        for i in 0..n {
            marks.push(format!("[{}, \"e\"]", block_of(p.start()) + i));
        }
    }
    array(marks)
}

/// Bytes of bounce slots usable now: the default pool's own plus the extra pools'.
fn pool_bytes() -> u64 {
    (dma().manager.usable_slots() * IO_TLB_SIZE) as u64
}

/// The page allocator's fragmentation as a JSON object.
fn fragmentation_json(f: &Fragmentation) -> String {
    let mut o = Obj::new();
    o.int("free_pages", f.free_pages as u64)
        .int("free_pageblocks", f.free_pageblocks as u64)
        .int("largest_free_order", f.largest_free_order.map_or(-1, i64::from))
        .int("unusable_free_index", f.unusable_free_index)
        .int("movable_blocks_with_unmovable", f.movable_blocks_with_unmovable as u64)
        .int("unmovable_blocks_with_movable", f.unmovable_blocks_with_movable as u64);
    o.finish()
}

/// One cycle's figures.
fn cycle_json(r: &workload::WorkloadReport) -> String {
    let (s0, s1) = (&r.before, &r.after);
    let mut o = Obj::new();
    o.int("cycle", r.cycle as u64)
        .bool("under_pressure", r.under_pressure)
        .int("mapped", r.mapped as u64)
        .int("lost", (workload::BURST - r.mapped) as u64)
        .bool("data_ok", r.data_ok)
        .bool("pressure_intact", r.pressure_intact)
        .bool("done_in_time", r.done_under_pressure)
        .int("irq_failures", r.irq_failures)
        .int("deferred_done", r.deferred_done as u64)
        .num("burst_ms", ns(r.took) / 1e6)
        .opt("grown_after_ms", r.grown_after.map(|d| ns(d) / 1e6))
        .int("slots_before", r.slots.0 as u64)
        .int("slots_after_burst", r.slots.1 as u64)
        .int("slots_after_idle", r.slots.2 as u64)
        .int("pages_migrated", s1.pages_migrated - s0.pages_migrated)
        .int("pages_dropped", s1.pages_dropped - s0.pages_dropped)
        .int("grown_pageblocks", (s1.pageblocks_reclaimed - s0.pageblocks_reclaimed) + (s1.extra_pageblocks - s0.extra_pageblocks))
        .int("given_back_bytes", (s1.pageblocks_lent_again - s0.pageblocks_lent_again) * PAGEBLOCK_SIZE)
        .raw("fragmentation", fragmentation_json(&r.fragmentation));
    o.finish()
}

/// Runs the workload on `dev` (cycle 0 without memory pressure, then `cycles` under it) and
/// writes the design table's row into `out`.
pub(crate) fn design_table(k: &'static Kernel, dev: &'static DmaDevice, cycles: usize, out: &mut Obj) -> Result<(), String> {
    let m = dma().manager;
    // 4 MiB copied, as four 1 MiB copies between two pageblocks (the largest allocation),
    // half a block apart so that source and destination pages do not alias in QEMU's TLB.
    let (a, b) = (ktest::buffer(9, true)?, ktest::buffer(9, false)?);
    let memcpy_4m_ns = 4.0 * memcpy_ns(b + (512 << 10), a, 1 << 20);
    ktest::free_buffer(a, 9);
    ktest::free_buffer(b, 9);

    let nr_blocks = m.nr_pageblocks();
    let lent_at_boot = m.pageblocks_in(BlockState::Lent);
    let mut pictures = Vec::new();
    let mut picture = |phase: &str| {
        let mut o = Obj::new();
        o.str("phase", phase).str("ram", &ram_picture(k)).raw("overlay", picture_overlay());
        pictures.push(o.finish());
    };
    picture("boot");
    let fragmentation_boot = page_allocator().lock().fragmentation();
    // The cycle whose timeline, pictures and figures make the design table.
    let shown = cycles.min(1);

    let t0 = now_ns();
    let (mut ts, mut phases, mut usable, mut used, mut lent) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut last = 0u64;
    let mut peak_usable = m.usable_slots();
    let mut sample = |cycle: usize, phase: &str| {
        if cycle != shown {
            return;
        }
        let now = now_ns();
        peak_usable = peak_usable.max(m.usable_slots());
        if now < last + SAMPLE_EVERY_NS {
            return;
        }
        last = now;
        ts.push((now - t0) as f64 / 1e6);
        phases.push(format!("\"{phase}\""));
        usable.push(pool_bytes() as f64);
        used.push((m.used_slots() * IO_TLB_SIZE) as f64);
        lent.push((m.pageblocks_in(BlockState::Lent) as u64 * PAGEBLOCK_SIZE) as f64);
    };
    let mut phase_marks = Vec::new();
    let reports = workload::burst_idle_cycles(
        dev,
        cycles,
        &mut |cycle, phase| {
            if cycle == shown {
                phase_marks.push(format!("[\"{phase}\", {}]", (now_ns() - t0) as f64 / 1e6));
                picture(phase);
            }
        },
        &mut sample,
    )?;
    let report = &reports[shown];
    let lent_after_idle = m.pageblocks_in(BlockState::Lent);
    let (s0, s1) = (&report.before, &report.after);
    let grown_blocks = (s1.pageblocks_reclaimed - s0.pageblocks_reclaimed) + (s1.extra_pageblocks - s0.extra_pageblocks);
    let grow_ns = ns(s1.grow_time - s0.grow_time);
    let blocks_per_4m = (4u64 << 20) / PAGEBLOCK_SIZE;
    let per_4m = |x: f64| if grown_blocks > 0 { Some(x / grown_blocks as f64 * blocks_per_4m as f64) } else { None };

    out.str("policy", &format!("{:?}", k.params.swiotlb_policy).to_lowercase())
        .int("pool_pageblocks", nr_blocks as u64)
        .int("pool_first_block", (m.default_pool().start() - page_allocator().lock().span().start) / PAGEBLOCK_SIZE)
        // The region less what the policy gave to the page allocator (`cma`'s unused blocks).
        .int("pool_bytes_reserved", ((nr_blocks - m.pageblocks_in(BlockState::Unused)) as u64) * PAGEBLOCK_SIZE)
        .int("cma_area_bytes", m.cma_area().map_or(0, |a| a.pageblocks() as u64 * PAGEBLOCK_SIZE))
        .int("cma_chunks_allocated", s1.cma_chunks_allocated - s0.cma_chunks_allocated)
        .int("lent_pageblocks_boot", lent_at_boot as u64)
        .int("lent_pageblocks_after_idle", lent_after_idle as u64)
        .int("unused_pageblocks", m.pageblocks_in(BlockState::Unused) as u64)
        .num("idle_pool_lent_share_boot", lent_at_boot as f64 / nr_blocks as f64)
        .num("idle_pool_lent_share_after", lent_after_idle as f64 / nr_blocks as f64)
        .int("movable_available_bytes", report.pressure_pages as u64 * 4096)
        .int("slots_before", report.slots.0 as u64)
        .int("slots_after_burst", report.slots.1 as u64)
        .int("slots_after_idle", report.slots.2 as u64)
        .int("peak_pool_bytes", (peak_usable * IO_TLB_SIZE) as u64)
        .int("irq_failures", report.irq_failures)
        .int("deferred_done", report.deferred_done as u64)
        .int("mapped", report.mapped as u64)
        .int("lost", (workload::BURST - report.mapped) as u64)
        .bool("done_under_pressure", report.done_under_pressure)
        .bool("data_ok", report.data_ok)
        .bool("pressure_intact", report.pressure_intact)
        .opt("grown_after_ms", report.grown_after.map(|d| ns(d) / 1e6))
        .num("burst_ms", ns(report.took) / 1e6)
        .int("grown_pageblocks", grown_blocks)
        .num("grow_ns_total", grow_ns)
        .opt("grow_4m_ns", per_4m(grow_ns))
        .opt("grow_4m_pages_migrated", per_4m((s1.pages_migrated - s0.pages_migrated) as f64))
        .opt("grow_4m_pages_dropped", per_4m((s1.pages_dropped - s0.pages_dropped) as f64))
        .int("pages_migrated", s1.pages_migrated - s0.pages_migrated)
        .int("pages_dropped", s1.pages_dropped - s0.pages_dropped)
        .int("reclaims_busy", s1.reclaims_busy - s0.reclaims_busy)
        .int("extra_pools", s1.extra_pools - s0.extra_pools)
        .int("given_back_bytes", (s1.pageblocks_lent_again - s0.pageblocks_lent_again) * PAGEBLOCK_SIZE)
        .num("memcpy_4m_ns", memcpy_4m_ns)
        .int("slots_per_pageblock", SLOTS_PER_PAGEBLOCK as u64)
        .int("cycles_under_pressure", cycles as u64)
        .int("shown_cycle", shown as u64)
        .raw("fragmentation_boot", fragmentation_json(&fragmentation_boot))
        .raw("cycles", array(reports.iter().map(cycle_json)))
        .raw("phase_marks_ms", array(phase_marks))
        .raw("pictures", array(pictures));
    let mut series = Obj::new();
    series
        .raw("t_ms", numbers(ts))
        .raw("phase", array(phases))
        .raw("pool_bytes", numbers(usable))
        .raw("used_bytes", numbers(used))
        .raw("lent_bytes", numbers(lent));
    out.raw("series", series.finish());
    Ok(())
}
