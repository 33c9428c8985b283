//! Scaling over CPUs: what Linux's SWIOTLB areas and spreading device
//! interrupts over CPUs buy, on however many CPUs the boot has (`qemu-run.sh --smp N`).
//!
//! - `bench-smp-map`: every online CPU maps and unmaps 4 KiB bounce buffers from its own timer
//!   interrupt for a fixed wall time; map+unmaps are counted per CPU, with the time spent in the
//!   handlers and how often an area lock was found taken. Booted with `swiotlb=<slots>,1` (one
//!   area: every CPU takes the same lock) and `swiotlb=<slots>,<cpus>` (one area per CPU: a
//!   mapping starts in its CPU's area, Linux `swiotlb_find_slots`).
//! - `bench-smp-io`: disks 0 and 2 read at once, bounced (buffers beyond the DMA window, so each
//!   completion copies back in the disk's interrupt handler), their interrupts where
//!   `irq_affinity=` put them (each on its own CPU, or both on one). Requests are submitted from
//!   CPU 0, as the other I/O benchmarks do, which polls for completions rather than sleeping in
//!   WFI (an interrupt routed to another CPU would not wake it), whatever the routing.
//!
//! The handlers busy-loop for a bounded slice of each tick (never waiting on anything but the
//! area locks a mapping takes anyway, never allocating): a benchmark's load, not a driver's.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;

use boot::exception::IrqContext;
use kernel::dma::device::DmaDevice;
use kernel::dma::{DmaAttrs, DmaDirection};
use kernel::ktest;
use kernel::platform::dma::dma;
use kernel::platform::smp::{self, cpu_id, smp_call_function_single, MAX_CPUS};
use kernel::platform::virtio_blk::{self, Disk};
use kernel::platform::{time, Kernel};

use super::io::{alloc_bufs, run_waiting, stream_json, Op, Stream};
use super::json::{array, Obj};
use super::measure::now_ns;
use super::Options;

/// The tick every CPU maps from, and the share of it a handler spends mapping: most of the
/// period, so that the CPUs' handlers overlap and meet at the area locks if they share one.
const TICK: Duration = Duration::from_millis(1);
const SLICE_NS: u64 = 800_000;
/// Bytes per mapping: two slots, one page.
const MAP_LEN: usize = 4096;
/// From starting the ticks to the start of the measured window: every CPU's tick is running.
const WARMUP_NS: u64 = 20_000_000;

/// One CPU's counts, written only by its own timer interrupt.
struct PerCpuMapper {
    /// The CPU's source buffer (beyond the DMA window: every mapping bounces); 0: none.
    src: AtomicU64,
    /// Map+unmap pairs completed inside the window.
    ops: AtomicU64,
    /// Nanoseconds spent mapping in the handler inside the window.
    busy_ns: AtomicU64,
    /// Handler runs that mapped.
    slices: AtomicU64,
    /// Maps refused (the pool was full) or unmaps that failed.
    failures: AtomicU64,
    /// Mappings whose slots lie outside the CPU's own area (`cpu & (nareas - 1)`): its area had
    /// no room, e.g. because the pool lent that area's pageblocks.
    outside_own_area: AtomicU64,
}

static MAPPER: [PerCpuMapper; MAX_CPUS] = [const {
    PerCpuMapper {
        src: AtomicU64::new(0),
        ops: AtomicU64::new(0),
        busy_ns: AtomicU64::new(0),
        slices: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        outside_own_area: AtomicU64::new(0),
    }
}; MAX_CPUS];

static DEV: spin::Once<&'static DmaDevice> = spin::Once::new();
/// The measured window, in [`now_ns`] time; the hook does nothing outside it.
static WINDOW_START: AtomicU64 = AtomicU64::new(u64::MAX);
static WINDOW_END: AtomicU64 = AtomicU64::new(0);
/// Whether the mappings copy into the slot (`DmaAttrs::skip_cpu_sync` false) or not.
static COPY_IN: AtomicBool = AtomicBool::new(false);

/// Every CPU's tick: map and unmap until the slice or the window is over.
fn map_tick(_ctx: &IrqContext<'_>) {
    let Some(&dev) = DEV.get() else { return };
    let m = &MAPPER[cpu_id()];
    let src = m.src.load(Ordering::Relaxed);
    let t0 = now_ns();
    let (start, end) = (WINDOW_START.load(Ordering::Acquire), WINDOW_END.load(Ordering::Acquire));
    if src == 0 || t0 < start || t0 >= end {
        return;
    }
    let attrs = DmaAttrs { skip_cpu_sync: !COPY_IN.load(Ordering::Relaxed), no_copy_in: false };
    let stop = end.min(t0 + SLICE_NS);
    let api = &dma().api;
    let pool = dma().manager.default_pool();
    let area_nslots = pool.nslots() / pool.nareas();
    let own_area = cpu_id() & (pool.nareas() - 1);
    let (mut ops, mut failures, mut outside) = (0u64, 0u64, 0u64);
    let mut now = t0;
    while now < stop {
        // SAFETY: `src` is this CPU's source buffer (the benchmark's), only read while mapped.
        match unsafe { api.map_single(dev, src, MAP_LEN, DmaDirection::ToDevice, attrs) } {
            Ok(addr) => {
                if pool.slot_index(addr).is_some_and(|i| i / area_nslots != own_area) {
                    outside += 1;
                }
                match api.unmap_single(dev, addr, MAP_LEN, DmaDirection::ToDevice, attrs) {
                    Ok(()) => ops += 1,
                    Err(_) => failures += 1,
                }
            }
            Err(_) => failures += 1,
        }
        now = now_ns();
    }
    m.ops.fetch_add(ops, Ordering::Relaxed);
    m.failures.fetch_add(failures, Ordering::Relaxed);
    m.outside_own_area.fetch_add(outside, Ordering::Relaxed);
    m.busy_ns.fetch_add(now - t0, Ordering::Relaxed);
    m.slices.fetch_add(1, Ordering::Relaxed);
}

fn start_map_tick() {
    time::start_tick(TICK);
}

/// Calls `f` on every online CPU, waiting for each (on this CPU it runs now).
fn on_each_cpu(f: fn()) -> Result<(), String> {
    for cpu in smp::online_cpus() {
        smp_call_function_single(cpu, f, true).map_err(|e| format!("CPU{cpu}: {e}"))?;
    }
    Ok(())
}

fn area_lock_contention() -> u64 {
    dma().manager.default_pool().stats().area_lock_contention
}

/// `bench-smp-map`: map+unmap throughput from every CPU's timer interrupt, with the mappings'
/// copy into the slot skipped (slot search and locks only) and made (a bounce's whole cost).
pub(crate) fn irq_map(dev: &'static DmaDevice, opts: &Options, out: &mut Obj) -> Result<(), String> {
    let cpus: Vec<usize> = smp::online_cpus().collect();
    let pool = dma().manager.default_pool();
    out.int("cpus", cpus.len() as u64)
        .int("nareas", pool.nareas() as u64)
        .raw("area_free_slots", area_free_slots())
        .int("tick_us", TICK.as_micros() as u64)
        .int("slice_us", SLICE_NS / 1000)
        .int("map_len", MAP_LEN as u64);
    DEV.call_once(|| dev);
    let mut srcs = Vec::new();
    for &cpu in &cpus {
        let src = ktest::buffer(0, true)?;
        MAPPER[cpu].src.store(src, Ordering::Relaxed);
        srcs.push(src);
    }
    // This CPU's 10 ms tick (main.rs's safety net for I/O waits, not needed here) gives way to
    // the 1 ms one, and stays stopped after the last cell.
    if !time::add_tick_hook(map_tick) {
        return Err(String::from("no free tick hook"));
    }
    let window = opts.cell_ms * 1_000_000;
    let mut cells = Vec::new();
    let mut result = Ok(());
    for copy in [false, true] {
        COPY_IN.store(copy, Ordering::Relaxed);
        let before: Vec<[u64; 5]> = cpus.iter().map(|&c| counts(c)).collect();
        let contention0 = area_lock_contention();
        let start = now_ns() + WARMUP_NS;
        WINDOW_END.store(start + window, Ordering::Release);
        WINDOW_START.store(start, Ordering::Release);
        if let Err(e) = on_each_cpu(start_map_tick) {
            result = Err(e);
            break;
        }
        while now_ns() < start + window + 2 * SLICE_NS {
            core::hint::spin_loop();
        }
        WINDOW_START.store(u64::MAX, Ordering::Release);
        if let Err(e) = on_each_cpu(time::stop_tick) {
            result = Err(e);
            break;
        }
        let contended = area_lock_contention() - contention0;
        let mut per_cpu = Vec::new();
        let (mut total, mut failures) = (0u64, 0u64);
        for (i, &cpu) in cpus.iter().enumerate() {
            let [ops, busy, slices, fails, outside] = core::array::from_fn(|j| counts(cpu)[j] - before[i][j]);
            total += ops;
            failures += fails;
            let mut o = Obj::new();
            o.int("cpu", cpu as u64)
                .int("ops", ops)
                .int("busy_ns", busy)
                .int("slices", slices)
                .int("failures", fails)
                .int("outside_own_area", outside)
                .num("ops_per_s", ops as f64 / (window as f64 / 1e9))
                .num("ns_per_op", if ops > 0 { busy as f64 / ops as f64 } else { f64::NAN });
            per_cpu.push(o.finish());
        }
        let mut c = Obj::new();
        c.str("mode", if copy { "copy" } else { "skip_sync" })
            .int("window_ns", window)
            .int("ops", total)
            .num("ops_per_s", total as f64 / (window as f64 / 1e9))
            .int("failures", failures)
            .int("area_lock_contended", contended)
            .num("contended_per_op", if total > 0 { contended as f64 / total as f64 } else { f64::NAN })
            .raw("per_cpu", array(per_cpu));
        cells.push(c.finish());
    }
    time::remove_tick_hook(map_tick);
    WINDOW_START.store(u64::MAX, Ordering::Release);
    for (&cpu, src) in cpus.iter().zip(srcs) {
        MAPPER[cpu].src.store(0, Ordering::Relaxed);
        ktest::free_buffer(src, 0);
    }
    result?;
    out.raw("cells", array(cells));
    Ok(())
}

fn counts(cpu: usize) -> [u64; 5] {
    let m = &MAPPER[cpu];
    [&m.ops, &m.busy_ns, &m.slices, &m.failures, &m.outside_own_area].map(|c| c.load(Ordering::Relaxed))
}

/// Free slots in each area of the default pool (where a CPU's mappings can land without
/// leaving its area), read from the lock-free slot states.
fn area_free_slots() -> String {
    use kernel::dma::swiotlb::SlotState;
    let pool = dma().manager.default_pool();
    let per = pool.nslots() / pool.nareas();
    super::json::numbers(
        (0..pool.nareas()).map(|a| (a * per..(a + 1) * per).filter(|&i| pool.slot_state(i) == Some(SlotState::Free)).count() as f64),
    )
}

/// The CPU disk `d`'s interrupt goes to, as `platform::irq::request_irq_spread` chose it:
/// `irq_affinity=` if it names the line, else the `index`-th online CPU.
fn irq_cpu(k: &Kernel, d: &Disk) -> usize {
    k.params.irq_affinity.iter().rev().find(|(n, _)| *n == d.irq).map_or_else(|| smp::nth_online_cpu(d.index), |&(_, cpu)| cpu)
}

/// `bench-smp-io`: disks 0 and 2 reading at once, bounced: 64 KiB sequential at QD 8 and 4 KiB
/// random at QD 16, each cell for `ms=`; throughput per disk and in total.
pub(crate) fn two_disks(k: &'static Kernel, opts: &Options, out: &mut Obj) -> Result<(), String> {
    let disks: Vec<&'static Disk> = [0, 2].iter().map(|&i| virtio_blk::disk(i).map_err(ktest::err)).collect::<Result<_, _>>()?;
    let routing: Vec<String> = disks
        .iter()
        .map(|d| {
            let mut o = Obj::new();
            o.int("disk", d.index as u64).int("irq", d.irq).int("cpu", irq_cpu(k, d) as u64);
            o.finish()
        })
        .collect();
    let cpus_used = {
        let mut c: Vec<usize> = disks.iter().map(|d| irq_cpu(k, d)).collect();
        c.sort_unstable();
        c.dedup();
        c.len()
    };
    out.int("cpus", smp::num_online_cpus() as u64).int("irq_cpus", cpus_used as u64).str("wait", "poll").raw("irq_routing", array(routing));
    let bufs: Vec<Vec<u64>> = disks.iter().map(|_| alloc_bufs(16, true)).collect::<Result<_, _>>()?;
    let budget = Duration::from_millis(opts.cell_ms);
    let mut cells = Vec::new();
    for (random, size, qd) in [(false, 64 * 1024, 8), (true, 4096, 16)] {
        let irqs0: Vec<(u64, u64)> = disks.iter().map(|d| (d.stats.irqs.load(Ordering::Relaxed), d.lock_contention())).collect();
        let mut streams: Vec<Stream> = disks.iter().zip(&bufs).map(|(&d, b)| Stream::new(d, Op::Read, random, size, qd, b)).collect();
        let elapsed = run_waiting(&mut streams, budget, false)?;
        let per_disk: Vec<String> = streams
            .iter()
            .zip(&irqs0)
            .map(|(s, i0)| {
                let mut o = stream_json(s, elapsed);
                o.int("irqs", s.disk.stats.irqs.load(Ordering::Relaxed) - i0.0)
                    .int("disk_lock_contended", s.disk.lock_contention() - i0.1)
                    .int("irq_cpu", irq_cpu(k, s.disk) as u64);
                o.finish()
            })
            .collect();
        let bytes: f64 = streams.iter().map(|s| (s.ops * s.size as u64) as f64).sum();
        let mut c = Obj::new();
        c.str("pattern", if random { "rand" } else { "seq" })
            .int("size", size as u64)
            .int("qd", qd as u64)
            .int("elapsed_ns", elapsed)
            .num("total_mib_s", bytes / (elapsed as f64 / 1e9) / (1024.0 * 1024.0))
            .num("total_iops", streams.iter().map(|s| s.ops as f64).sum::<f64>() / (elapsed as f64 / 1e9))
            .raw("disks", array(per_disk));
        cells.push(c.finish());
    }
    for b in bufs {
        b.into_iter().for_each(|a| ktest::free_buffer(a, super::io::BUF_ORDER));
    }
    out.raw("cells", array(cells));
    Ok(())
}
