//! The scripted workload the demo shows and the DMA tests check, the same under every
//! `swiotlb_policy=`: memory pressure (movable pages fill RAM, the lent MIGRATE_SWIOTLB blocks
//! included), then a burst of bounce mappings made in the timer interrupt handler (failures are
//! deferred to task context and retried: nothing is lost), then idle (the pool may shrink).
//!
//! [`pressure_burst_idle`] runs that once (the demo). [`burst_idle_cycles`] runs several
//! burst/idle cycles in one boot: cycle 0 without memory pressure, then `cycles` more under it,
//! each ending with the page allocator's [`Fragmentation`] once the idle phase is over and the
//! pressure gone (the benchmark and the DMA test).
//!
//! The handler side uses fixed statics only: it never allocates and never waits. Task context
//! resets them before each burst, while no tick hook runs.
#![allow(unsafe_code)] // the workload maps buffers it allocated through the DMA API

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use core::time::Duration;

use boot::exception::IrqContext;

use super::pressure::MemoryPressure;
use crate::dma::device::DmaDevice;
use crate::dma::swiotlb::mem::LendStats;
use crate::dma::{DmaAttrs, DmaDirection};
use crate::mm::page_alloc::{Fragmentation, MigrateType, ZoneType};
use crate::mm::phys::PhysMemory;
use crate::platform::dma::dma;
use crate::platform::mm::page_allocator;
use crate::platform::phys::ram;
use crate::platform::{run_pending_work, time};

/// Requests in the burst: 256 x 64 KiB = 16 MiB of bounce buffers held at once.
pub const BURST: usize = 256;
/// Bytes per request.
pub const BURST_LEN: usize = 64 * 1024;
const SRC_ORDER: u8 = 4; // 64 KiB

static DEV: spin::Once<&'static DmaDevice> = spin::Once::new();
static SRC: AtomicU64 = AtomicU64::new(0);
static NEXT: AtomicU32 = AtomicU32::new(0);
static MAPPED: [AtomicU64; BURST] = [const { AtomicU64::new(0) }; BURST];
static DEFERRED: [AtomicBool; BURST] = [const { AtomicBool::new(false) }; BURST];
const NOATTR: DmaAttrs = DmaAttrs { skip_cpu_sync: false, no_copy_in: false };

/// What one cycle of the workload measured.
#[derive(Debug, Default)]
pub struct WorkloadReport {
    /// The cycle's number (0 for [`pressure_burst_idle`]'s one cycle).
    pub cycle: usize,
    /// The burst ran under memory pressure.
    pub under_pressure: bool,
    /// Requests mapped (must be [`BURST`]).
    pub mapped: usize,
    /// Every bounce slot held the request's data.
    pub data_ok: bool,
    /// The movable pages' checksums after the burst (reclaim migrated some of them); true
    /// without pressure.
    pub pressure_intact: bool,
    /// The burst completed while the memory pressure lasted (without pressure: within the
    /// same 10 s).
    pub done_under_pressure: bool,
    /// Movable pages the memory pressure could allocate (RAM left to movable allocations,
    /// the lent MIGRATE_SWIOTLB blocks included).
    pub pressure_pages: usize,
    /// Mappings that failed in interrupt context and were deferred.
    pub irq_failures: u64,
    /// Deferred requests completed in task context.
    pub deferred_done: usize,
    /// Usable bounce slots before, at the peak, and after idling.
    pub slots: (usize, usize, usize),
    /// How long after the burst began the pool first grew.
    pub grown_after: Option<Duration>,
    /// How long the burst took.
    pub took: Duration,
    /// The manager's counters before and after.
    pub before: LendStats,
    /// After.
    pub after: LendStats,
    /// The page allocator after the idle phase, the pressure released.
    pub fragmentation: Fragmentation,
}

fn pattern(i: usize) -> u8 {
    (i as u8).wrapping_mul(31).wrapping_add(5)
}

/// In interrupt context: the next request maps its buffer; if the pool has no room the request
/// is deferred to task context (the DMA layer has already kicked the worker).
fn burst_irq(_ctx: &IrqContext<'_>) {
    let (Some(d), src) = (DEV.get(), SRC.load(Ordering::Relaxed)) else { return };
    let i = NEXT.load(Ordering::Relaxed) as usize;
    if src == 0 || i >= BURST {
        return;
    }
    NEXT.store(i as u32 + 1, Ordering::Relaxed);
    // SAFETY: `src` is the workload's `Source`, mapped only `ToDevice`, never written after
    // `Source::alloc` and freed only after the last cycle unmapped every mapping.
    match unsafe { dma().api.map_single(d, src, BURST_LEN, DmaDirection::ToDevice, NOATTR) } {
        Ok(addr) => MAPPED[i].store(addr, Ordering::Relaxed),
        Err(_) => DEFERRED[i].store(true, Ordering::Relaxed),
    }
}

/// Task context: run the worker, retry deferred requests, until all are mapped or `until`.
fn drive(d: &DmaDevice, src: u64, until: Duration, t0: Duration, report: &mut WorkloadReport, sample: &mut dyn FnMut(&str)) -> bool {
    let m = dma().manager;
    loop {
        run_pending_work(); // the worker grows the pool here
        sample("burst");
        if report.grown_after.is_none() && m.usable_slots() > report.slots.0 {
            report.grown_after = Some(time::uptime() - t0);
        }
        for i in 0..BURST {
            if DEFERRED[i].load(Ordering::Relaxed) {
                // SAFETY: as in `burst_irq`: the workload's `Source`, only read while mapped.
                if let Ok(addr) = unsafe { dma().api.map_single(d, src, BURST_LEN, DmaDirection::ToDevice, NOATTR) } {
                    MAPPED[i].store(addr, Ordering::Relaxed);
                    DEFERRED[i].store(false, Ordering::Relaxed);
                    report.deferred_done += 1;
                }
            }
        }
        let done = NEXT.load(Ordering::Relaxed) as usize == BURST && DEFERRED.iter().all(|f| !f.load(Ordering::Relaxed));
        if done || time::uptime() > until {
            return done;
        }
        time::delay(Duration::from_micros(500));
    }
}

/// Runs the three phases once for device `d` (which must be DMA-limited so its buffers from
/// ZONE_NORMAL bounce). `phase` is called after each phase with its name (the demo prints the
/// RAM picture and the pools there).
pub fn pressure_burst_idle(d: &'static DmaDevice, phase: &mut dyn FnMut(&str)) -> Result<WorkloadReport, String> {
    let src = Source::alloc()?;
    let r = one_cycle(d, &src, 0, true, phase, &mut |_| {});
    src.free();
    r
}

/// Cycle 0 without memory pressure, then `cycles` cycles under it, on device `d`: each a burst
/// from the timer interrupt and an idle phase, so that one boot measures interrupt-context
/// mapping failures with and without pressure and what repeated bursts leave behind
/// (fragmentation after each idle). `phase(cycle, name)` is called after each phase, `sample(cycle,
/// name)` once before the burst and at every pass of the task-context loops (about every 0.5 ms
/// during the burst, every idle wakeup after it): the benchmark records the pools over time there.
pub fn burst_idle_cycles(
    d: &'static DmaDevice,
    cycles: usize,
    phase: &mut dyn FnMut(usize, &str),
    sample: &mut dyn FnMut(usize, &str),
) -> Result<Vec<WorkloadReport>, String> {
    let src = Source::alloc()?;
    let mut reports = Vec::with_capacity(cycles + 1);
    for cycle in 0..=cycles {
        match one_cycle(d, &src, cycle, cycle > 0, &mut |name| phase(cycle, name), &mut |name| sample(cycle, name)) {
            Ok(r) => reports.push(r),
            Err(e) => {
                src.free();
                return Err(alloc::format!("cycle {cycle}: {e}"));
            }
        }
    }
    src.free();
    Ok(reports)
}

/// The burst's source buffer: 64 KiB of the pattern in ZONE_NORMAL (beyond the DMA window).
struct Source {
    addr: u64,
    data: Vec<u8>,
}

impl Source {
    fn alloc() -> Result<Self, String> {
        let addr = page_allocator().lock().alloc_pages(SRC_ORDER, ZoneType::Normal, MigrateType::Unmovable).map_err(|e| e.to_string())?;
        let data: Vec<u8> = (0..BURST_LEN).map(pattern).collect();
        // SAFETY: the pages were just allocated for the source.
        unsafe { ram() }.write(addr, &data);
        Ok(Source { addr, data })
    }

    fn free(self) {
        let _ = page_allocator().lock().free_pages(self.addr, SRC_ORDER);
    }
}

/// Resets the handler's statics for a new burst. Called with no tick hook installed, so the
/// handler cannot run meanwhile.
fn reset_burst() {
    SRC.store(0, Ordering::Relaxed);
    NEXT.store(0, Ordering::Relaxed);
    for (m, f) in MAPPED.iter().zip(&DEFERRED) {
        m.store(0, Ordering::Relaxed);
        f.store(false, Ordering::Relaxed);
    }
}

/// One cycle: (memory pressure,) burst, idle; then the pressure released and the page
/// allocator's fragmentation taken.
fn one_cycle(
    d: &'static DmaDevice,
    src: &Source,
    cycle: usize,
    under_pressure: bool,
    phase: &mut dyn FnMut(&str),
    sample: &mut dyn FnMut(&str),
) -> Result<WorkloadReport, String> {
    let api = &dma().api;
    let m = dma().manager;
    let pages = page_allocator();
    // SAFETY: written only through `MemoryPressure`, which fills pages it allocates; the bounce
    // slots are only read.
    let ram = unsafe { ram() };
    if !core::ptr::eq(*DEV.call_once(|| d), d) {
        return Err("the workload runs on one device per boot".to_string());
    }
    reset_burst();

    // 1. Memory pressure.
    let mut pressure = None;
    let mut pressure_pages = 0;
    if under_pressure {
        let mut p = MemoryPressure::fill(pages, ram, ZoneType::Normal, usize::MAX, 42 + cycle as u64);
        pressure_pages = p.len();
        p.release_every(pages, 4); // room for migration targets
        pressure = Some(p);
    }
    let mut report =
        WorkloadReport { cycle, under_pressure, slots: (m.usable_slots(), 0, 0), pressure_pages, before: m.stats(), ..Default::default() };
    phase("memory pressure");
    sample("pressure");

    // 2. The burst, from the timer interrupt.
    SRC.store(src.addr, Ordering::Relaxed);
    let failures_before = api.stats.irq_failures.load(Ordering::Relaxed);
    let t0 = time::uptime();
    if !time::add_tick_hook(burst_irq) {
        return Err("no room for a tick hook".to_string());
    }
    time::start_tick(Duration::from_micros(300));
    report.done_under_pressure = drive(d, src.addr, t0 + Duration::from_secs(10), t0, &mut report, sample);
    report.pressure_intact = pressure.as_ref().is_none_or(|p| p.verify(pages, ram).is_ok());
    if !report.done_under_pressure {
        // The pool could not grow under memory pressure: the requests wait; once the pressure
        // goes they must complete.
        if let Some(p) = pressure.take() {
            p.release(pages).map_err(|e| e.to_string())?;
        }
        drive(d, src.addr, time::uptime() + Duration::from_secs(10), t0, &mut report, sample);
    }
    time::stop_tick();
    time::remove_tick_hook(burst_irq);
    report.took = time::uptime() - t0;
    report.irq_failures = api.stats.irq_failures.load(Ordering::Relaxed) - failures_before;
    report.slots.1 = m.usable_slots();
    report.mapped = MAPPED.iter().filter(|a| a.load(Ordering::Relaxed) != 0).count();
    let mut seen = alloc::vec![0u8; BURST_LEN];
    report.data_ok = MAPPED.iter().map(|a| a.load(Ordering::Relaxed)).filter(|&a| a != 0).all(|a| {
        ram.read(a, &mut seen);
        seen == src.data
    });
    phase("I/O burst from interrupt handlers");

    // 3. Idle: everything unmapped; the pool may shrink.
    for a in &MAPPED {
        let addr = a.swap(0, Ordering::Relaxed);
        if addr != 0 {
            api.unmap_single(d, addr, BURST_LEN, DmaDirection::ToDevice, NOATTR).map_err(|e| e.to_string())?;
        }
    }
    let idle_from = time::uptime();
    while time::uptime() < idle_from + Duration::from_millis(dma().params.swiotlb_shrink_delay_ms * 6) {
        crate::platform::idle();
        sample("idle");
    }
    report.slots.2 = m.usable_slots();
    report.after = m.stats();
    if let Some(p) = pressure.take() {
        p.release(pages).map_err(|e| e.to_string())?;
    }
    report.fragmentation = pages.lock().fragmentation();
    SRC.store(0, Ordering::Relaxed);
    phase("idle");
    Ok(report)
}

impl core::fmt::Display for WorkloadReport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (a, b) = (&self.after, &self.before);
        write!(
            f,
            "cycle {} ({}): {}/{BURST} requests mapped in {:?} ({}), {} IRQ-context failures deferred and retried ({}); \
             pool slots {} -> peak {} -> idle {}; grew after {:?}; reclaimed {} pageblocks ({} pages migrated, {} dropped), \
             {} extra pools, lent again {} pageblocks; data {}, movable pages {}; {}",
            self.cycle,
            if self.under_pressure { "under memory pressure" } else { "no memory pressure" },
            self.mapped,
            self.took,
            match (self.under_pressure, self.done_under_pressure) {
                (_, true) => "in time",
                (true, false) => "only after the memory pressure was released",
                (false, false) => "late",
            },
            self.irq_failures,
            self.deferred_done,
            self.slots.0,
            self.slots.1,
            self.slots.2,
            self.grown_after,
            a.pageblocks_reclaimed - b.pageblocks_reclaimed,
            a.pages_migrated - b.pages_migrated,
            a.pages_dropped - b.pages_dropped,
            a.extra_pools - b.extra_pools,
            a.pageblocks_lent_again - b.pageblocks_lent_again,
            if self.data_ok { "intact" } else { "CORRUPT" },
            if self.pressure_intact { "intact" } else { "CORRUPT" },
            self.fragmentation,
        )
    }
}
