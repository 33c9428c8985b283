//! In-QEMU tests of SMP (`QEMU_RUN_OPTS="--smp 4" cargo test -p kernel --test smp`): every CPU
//! `/cpus` lists comes up, takes its own timer interrupts, has its own interrupt depth, and, the
//! main case, every CPU maps, syncs and unmaps bounce buffers from its own timer interrupt while
//! one CPU reclaims lent pageblocks under memory pressure (migrating checksummed movable pages)
//! and another grows and shrinks the pool with task-context mappings. With fewer than three
//! CPUs the stress case says so and passes; the other cases hold for any count. Also here:
//! `idle()` does not sleep past work that an interrupt queued between its check and its WFI,
//! and work queued while the other CPUs sit in WFI wakes one of them (the reschedule IPI).
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use core::time::Duration;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use boot::exception::{catch_fault, irq_depth, IrqContext};
use kernel::demo::pressure::MemoryPressure;
use kernel::dma::device::DmaDevice;
use kernel::dma::{DmaAttrs, DmaDirection};
use kernel::ktest::{self, buffer, err as e, free_buffer as free, TestCase, TestResult};
use kernel::mm::page_alloc::ZoneType;
use kernel::mm::phys::PhysMemory;
use kernel::platform::dma::{dma_device_from_dt, Dma};
use kernel::platform::exit::ExitStatus;
use kernel::platform::mm::page_allocator;
use kernel::platform::smp::{self, cpu_id, smp_call_function_single as call_on, MAX_CPUS};
use kernel::platform::{kernel, run_pending_work, time, Kernel};
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

fn main(_k: &'static Kernel) -> ExitStatus {
    kprintln!("smp tests: {} of {} CPUs online", smp::num_online_cpus(), smp::nr_listed_cpus());
    ktest::run(
        "smp",
        &[
            TestCase { name: "every_listed_cpu_is_online", run: every_listed_cpu_is_online },
            TestCase { name: "stack_guard_pages_are_unmapped", run: stack_guard_pages_are_unmapped },
            TestCase { name: "each_cpu_takes_its_own_timer_interrupts", run: each_cpu_takes_its_own_timer_interrupts },
            TestCase { name: "irq_depth_is_per_cpu", run: irq_depth_is_per_cpu },
            TestCase { name: "work_item_never_runs_on_two_cpus", run: work_item_never_runs_on_two_cpus },
            TestCase { name: "idle_does_not_sleep_past_work_an_interrupt_queued", run: idle_does_not_sleep_past_work },
            TestCase { name: "queued_work_wakes_an_idle_cpu", run: queued_work_wakes_an_idle_cpu },
            TestCase { name: "irq_bounces_on_every_cpu_while_reclaim_and_resize_run", run: stress },
        ],
    )
}

fn layer() -> &'static Dma {
    kernel::platform::dma::dma()
}

fn online() -> Vec<usize> {
    smp::online_cpus().collect()
}

/// Runs `f` on every online CPU, waiting for each.
fn on_each_cpu(f: fn()) -> TestResult {
    for cpu in online() {
        call_on(cpu, f, true).map_err(e)?;
    }
    Ok(())
}

// ---- bring-up --------------------------------------------------------------------------------

static SEEN_MPIDR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];

fn every_listed_cpu_is_online() -> TestResult {
    let n = smp::num_online_cpus();
    kassert_eq!(n, smp::nr_listed_cpus(), "CPUs online against CPUs in /cpus");
    kassert_eq!(online(), (0..n).collect::<Vec<_>>());
    on_each_cpu(|| SEEN_MPIDR[cpu_id()].store(boot::smp::this_cpu_mpidr(), Ordering::SeqCst))?;
    for (cpu, seen) in SEEN_MPIDR.iter().enumerate().take(n) {
        kassert_eq!(seen.load(Ordering::SeqCst), smp::cpu_mpidr(cpu), "CPU {cpu} runs on the core /cpus names");
    }
    Ok(())
}

fn stack_guard_pages_are_unmapped() -> TestResult {
    for (cpu, guard) in boot::smp::stack_guard_pages().enumerate() {
        let fault = catch_fault(|| {
            // SAFETY: a deliberately faulting read of an unmapped page; `catch_fault` skips it.
            unsafe { core::ptr::read_volatile(guard as *const u64) };
        });
        let fault = fault.ok_or_else(|| format!("CPU {cpu}'s stack guard page {guard:#x} is mapped"))?;
        kassert!(fault.esr.fault_status_name().starts_with("translation fault"), "{}", fault.esr);
        let (bottom, top) = boot::smp::stack_bounds(cpu);
        kassert!(
            boot::mmu::probe(bottom as u64).is_some() && boot::mmu::probe(top as u64 - 8).is_some(),
            "CPU {cpu}'s stack is not mapped"
        );
    }
    Ok(())
}

// ---- per-CPU timer and interrupt depth --------------------------------------------------------

static HOOK_HITS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static DEPTH_IN_HOOK_WRONG: AtomicU64 = AtomicU64::new(0);

fn count_hits(_ctx: &IrqContext<'_>) {
    HOOK_HITS[cpu_id()].fetch_add(1, Ordering::Relaxed);
    if irq_depth() != 1 {
        DEPTH_IN_HOOK_WRONG.fetch_add(1, Ordering::Relaxed);
    }
    // Stay a while, so that other CPUs' task code runs while this CPU is in a handler.
    time::delay(Duration::from_micros(30));
}

fn each_cpu_takes_its_own_timer_interrupts() -> TestResult {
    let before: Vec<(u64, u64)> = (0..MAX_CPUS).map(|c| (time::tick_count_on(c), HOOK_HITS[c].load(Ordering::Relaxed))).collect();
    kassert!(time::add_tick_hook(count_hits));
    on_each_cpu(|| time::start_tick(Duration::from_millis(2)))?;
    time::delay(Duration::from_millis(400));
    on_each_cpu(time::stop_tick)?;
    time::remove_tick_hook(count_hits);
    for cpu in online() {
        let ticks = time::tick_count_on(cpu) - before[cpu].0;
        let hits = HOOK_HITS[cpu].load(Ordering::Relaxed) - before[cpu].1;
        kprintln!("  CPU{cpu}: {ticks} timer interrupts");
        kassert!(ticks > 5, "CPU {cpu} took {ticks} timer interrupts in 400 ms at a 2 ms tick");
        kassert_eq!(hits, ticks, "CPU {cpu}'s hook ran on another CPU, or missed ticks");
    }
    kassert_eq!(DEPTH_IN_HOOK_WRONG.load(Ordering::Relaxed), 0, "interrupt depth in a handler is not 1");
    Ok(())
}

static TASK_SAW_IRQ: AtomicU64 = AtomicU64::new(0);
static TASK_SAMPLES: AtomicU64 = AtomicU64::new(0);

/// Task context on a secondary: must never see itself in interrupt context, whatever other CPUs do.
fn sample_in_interrupt() {
    let end = time::uptime() + Duration::from_millis(300);
    while time::uptime() < end {
        TASK_SAMPLES.fetch_add(1, Ordering::Relaxed);
        if boot::exception::in_interrupt() {
            TASK_SAW_IRQ.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn irq_depth_is_per_cpu() -> TestResult {
    kassert_eq!(irq_depth(), 0);
    let cpus = online();
    let sampler = *cpus.last().unwrap_or(&0);
    let hits_before: u64 = HOOK_HITS.iter().map(|h| h.load(Ordering::Relaxed)).sum();
    kassert!(time::add_tick_hook(count_hits));
    for &cpu in &cpus {
        if cpu != sampler {
            call_on(cpu, || time::start_tick(Duration::from_millis(1)), true).map_err(e)?;
        }
    }
    let r = call_on(sampler, sample_in_interrupt, true);
    for &cpu in &cpus {
        if cpu != sampler {
            call_on(cpu, time::stop_tick, true).map_err(e)?;
        }
    }
    time::remove_tick_hook(count_hits);
    r.map_err(e)?;
    let hits: u64 = HOOK_HITS.iter().map(|h| h.load(Ordering::Relaxed)).sum::<u64>() - hits_before;
    kprintln!(
        "  CPU{sampler} sampled in_interrupt() {} times while other CPUs took {hits} interrupts",
        TASK_SAMPLES.load(Ordering::Relaxed)
    );
    kassert_eq!(TASK_SAW_IRQ.load(Ordering::Relaxed), 0, "task context on CPU {sampler} saw another CPU's interrupt depth");
    kassert_eq!(DEPTH_IN_HOOK_WRONG.load(Ordering::Relaxed), 0);
    kassert_eq!(irq_depth(), 0);
    Ok(())
}

// ---- the work queue from several CPUs ----------------------------------------------------------

static WQ: kernel::work::WorkQueue = kernel::work::WorkQueue::new();
static WQ_ID: AtomicUsize = AtomicUsize::new(usize::MAX);
static WQ_INSIDE: AtomicUsize = AtomicUsize::new(0);
static WQ_OVERLAP: AtomicUsize = AtomicUsize::new(0);
static WQ_RUNS: AtomicUsize = AtomicUsize::new(0);

fn wq_item() {
    if WQ_INSIDE.fetch_add(1, Ordering::SeqCst) != 0 {
        WQ_OVERLAP.fetch_add(1, Ordering::SeqCst);
    }
    time::delay(Duration::from_micros(100));
    WQ_RUNS.fetch_add(1, Ordering::SeqCst);
    WQ_INSIDE.fetch_sub(1, Ordering::SeqCst);
}

fn wq_hammer() {
    let id = kernel::work::WorkId::from_raw(WQ_ID.load(Ordering::SeqCst) as u32);
    for _ in 0..300 {
        WQ.schedule(id);
        WQ.run_pending();
    }
}

fn work_item_never_runs_on_two_cpus() -> TestResult {
    let id = WQ.register("smp test", wq_item).map_err(|x| format!("{x:?}"))?;
    WQ_ID.store(id.raw() as usize, Ordering::SeqCst);
    let others: Vec<usize> = online().into_iter().filter(|&c| c != cpu_id()).collect();
    for &cpu in &others {
        call_on(cpu, wq_hammer, false).map_err(e)?;
    }
    wq_hammer();
    while !others.iter().all(|&c| smp::call_done(c)) {
        core::hint::spin_loop();
    }
    while WQ.has_pending() {
        WQ.run_pending();
    }
    kprintln!("  {} runs from {} CPUs", WQ_RUNS.load(Ordering::SeqCst), others.len() + 1);
    kassert_eq!(WQ_OVERLAP.load(Ordering::SeqCst), 0, "a work item ran on two CPUs at once");
    Ok(())
}

// ---- idle() and an interrupt between its check for work and WFI ----------------------------------

static IDLE_ARMED: AtomicBool = AtomicBool::new(false);
static IDLE_WORK_RAN: AtomicBool = AtomicBool::new(false);
static IDLE_WORK: spin::Once<kernel::work::WorkId> = spin::Once::new();

fn idle_hook(_ctx: &IrqContext<'_>) {
    if IDLE_ARMED.swap(false, Ordering::SeqCst) {
        if let Some(&id) = IDLE_WORK.get() {
            kernel::work::SYSTEM_WQ.schedule(id);
        }
    }
}

/// Between idle()'s check for work and its WFI: fire this CPU's timer now, its hook queues work.
fn fire_timer_in_window() {
    use drivers::timer::arch_timer;
    IDLE_ARMED.store(true, Ordering::SeqCst);
    arch_timer::set_deadline(arch_timer::ticks());
    while !arch_timer::is_pending() {
        core::hint::spin_loop();
    }
}

fn idle_does_not_sleep_past_work() -> TestResult {
    IDLE_WORK.call_once(|| {
        kernel::work::SYSTEM_WQ.register("idle test", || IDLE_WORK_RAN.store(true, Ordering::SeqCst)).expect("a free work slot")
    });
    kassert!(time::add_tick_hook(idle_hook));
    // A slow tick: after the forced interrupt the next one is seconds away.
    time::start_tick(Duration::from_secs(2));
    let t0 = time::uptime();
    kernel::platform::idle_with_window(fire_timer_in_window);
    let slept = time::uptime() - t0;
    run_pending_work();
    // Another CPU's idle loop may have taken the work first and still be running it: give it a
    // bounded while (the assertion on `slept` below is what checks idle()).
    let deadline = time::uptime() + Duration::from_secs(5);
    while !IDLE_WORK_RAN.load(Ordering::SeqCst) && time::uptime() < deadline {
        run_pending_work();
        core::hint::spin_loop();
    }
    time::stop_tick();
    time::remove_tick_hook(idle_hook);
    kprintln!("  idle returned after {slept:?}");
    kassert!(IDLE_WORK_RAN.load(Ordering::SeqCst), "the interrupt's work never ran");
    kassert!(slept < Duration::from_millis(500), "idle slept {slept:?} with work queued (until the next tick)");
    Ok(())
}

static WAKE_WORK: spin::Once<kernel::work::WorkId> = spin::Once::new();
static WAKE_RAN_ON: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Work queued while every other CPU sits in WFI with no tick wakes one of them (the reschedule
/// IPI): this CPU queues it and spins without running work, so only a secondary can run it, and
/// nothing but the IPI would wake one. Without the waker the deadline passes.
fn queued_work_wakes_an_idle_cpu() -> TestResult {
    let cpus = online();
    if cpus.len() < 2 {
        kprintln!("  needs 2 CPUs; {} online: skipped", cpus.len());
        return Ok(());
    }
    let id = *WAKE_WORK.call_once(|| {
        kernel::work::SYSTEM_WQ.register("wake test", || WAKE_RAN_ON.store(cpu_id(), Ordering::SeqCst)).expect("a free work slot")
    });
    on_each_cpu(time::stop_tick)?; // no tick wakes anyone
    let secondaries = cpus.iter().filter(|&&c| c != cpu_id()).fold(0u32, |m, &c| m | 1 << c);
    let deadline = time::uptime() + Duration::from_secs(10);
    while smp::cpu_idle_mask() & secondaries != secondaries {
        kassert!(time::uptime() < deadline, "the secondaries never went idle: idle mask {:#b}", smp::cpu_idle_mask());
        core::hint::spin_loop();
    }
    WAKE_RAN_ON.store(usize::MAX, Ordering::SeqCst);
    let t0 = time::uptime();
    kernel::work::SYSTEM_WQ.schedule(id);
    // Spin, never running work here: only an idle CPU that was woken can run it.
    while WAKE_RAN_ON.load(Ordering::SeqCst) == usize::MAX && time::uptime() < t0 + Duration::from_secs(10) {
        core::hint::spin_loop();
    }
    let ran_on = WAKE_RAN_ON.load(Ordering::SeqCst);
    kassert!(ran_on != usize::MAX, "queued work never ran while CPU {} spun: no idle CPU was woken", cpu_id());
    kprintln!("  ran on CPU{ran_on} after {:?}", time::uptime() - t0);
    kassert!(ran_on != cpu_id() && secondaries & (1 << ran_on) != 0);
    Ok(())
}

// ---- the stress case ---------------------------------------------------------------------------

const NOATTR: DmaAttrs = DmaAttrs { skip_cpu_sync: false, no_copy_in: false };
const BIDI: DmaDirection = DmaDirection::Bidirectional;
const TO: DmaDirection = DmaDirection::ToDevice;
/// Largest IRQ-context mapping (its source buffer is this big).
const IRQ_MAX_LEN: usize = 16 * 1024;
const IRQ_SRC_ORDER: u8 = 2;
/// How long every role runs.
const STRESS_TIME: Duration = Duration::from_secs(6);
/// Task-context mappings the resizer holds at its peak (64 KiB each: 6 MiB, more than the 4 MiB
/// of slots the pool keeps when idle, so that it must grow).
const RESIZE_MAPS: usize = 96;
const RESIZE_LEN: usize = 64 * 1024;
const RESIZE_SOURCES: usize = 8;

static DEV: spin::Once<&'static DmaDevice> = spin::Once::new();
static RUNNING: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);

/// Per-CPU state of the IRQ-context mapper: the source buffer, the mapping held from the
/// previous tick (0: none), its length and seed; written only by that CPU's handler (and by
/// CPU 0 after every tick stopped).
struct IrqMapper {
    src: AtomicU64,
    held: AtomicU64,
    len: AtomicUsize,
    seed: AtomicU64,
    maps: AtomicU64,
    unmaps: AtomicU64,
    misses: AtomicU64,
    bad: AtomicU64,
    first_bad: AtomicU64,
}

static MAPPER: [IrqMapper; MAX_CPUS] = [const {
    IrqMapper {
        src: AtomicU64::new(0),
        held: AtomicU64::new(0),
        len: AtomicUsize::new(0),
        seed: AtomicU64::new(0),
        maps: AtomicU64::new(0),
        unmaps: AtomicU64::new(0),
        misses: AtomicU64::new(0),
        bad: AtomicU64::new(0),
        first_bad: AtomicU64::new(0),
    }
}; MAX_CPUS];

/// Byte `i` of stream `seed` (`kind` tells the CPU's bytes from the device's).
fn byte(seed: u64, kind: u64, i: usize) -> u8 {
    let x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ kind.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ (i as u64 / 8);
    (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> ((i % 8) * 8)) as u8
}

/// Writes stream (`seed`, `kind`) to `[addr, addr + len)` in 512-byte pieces (no big stack buffer
/// in a handler).
fn fill(addr: u64, len: usize, seed: u64, kind: u64) {
    let mut chunk = [0u8; 512];
    for off in (0..len).step_by(chunk.len()) {
        let n = chunk.len().min(len - off);
        chunk[..n].iter_mut().enumerate().for_each(|(j, b)| *b = byte(seed, kind, off + j));
        mem().write(addr + off as u64, &chunk[..n]);
    }
}

/// Whether `[addr, addr + len)` holds stream (`seed`, `kind`).
fn holds(addr: u64, len: usize, seed: u64, kind: u64) -> bool {
    let mut chunk = [0u8; 512];
    (0..len).step_by(chunk.len()).all(|off| {
        let n = chunk.len().min(len - off);
        mem().read(addr + off as u64, &mut chunk[..n]);
        chunk[..n].iter().enumerate().all(|(j, &b)| b == byte(seed, kind, off + j))
    })
}

const CPU_BYTES: u64 = 1;
const DEVICE_BYTES: u64 = 2;
const DEVICE_AGAIN: u64 = 3;

fn bad(m: &IrqMapper, what: u64) {
    m.bad.fetch_add(1, Ordering::Relaxed);
    let _ = m.first_bad.compare_exchange(0, what, Ordering::Relaxed, Ordering::Relaxed);
}

/// Ends the mapping a mapper holds: the device's bytes still in the bounce slot (nobody else got
/// the slot meanwhile), sync for the CPU copies them back, the device writes again, unmap copies
/// that back.
fn finish_held(d: &DmaDevice, m: &IrqMapper) {
    let dma = m.held.load(Ordering::Relaxed);
    if dma == 0 {
        return;
    }
    let (len, seed, src) = (m.len.load(Ordering::Relaxed), m.seed.load(Ordering::Relaxed), m.src.load(Ordering::Relaxed));
    let api = &layer().api;
    if !holds(dma, len, seed, DEVICE_BYTES) {
        bad(m, 1); // another mapping shares the slot
    }
    if api.sync_single_for_cpu(d, dma, len, BIDI).is_err() || !holds(src, len, seed, DEVICE_BYTES) {
        bad(m, 2);
    }
    fill(dma, len, seed, DEVICE_AGAIN);
    if api.unmap_single(d, dma, len, BIDI, NOATTR).is_err() {
        bad(m, 3);
    } else {
        m.unmaps.fetch_add(1, Ordering::Relaxed);
        if !holds(src, len, seed, DEVICE_AGAIN) {
            bad(m, 4);
        }
    }
    m.held.store(0, Ordering::Relaxed);
}

/// Every CPU's tick: end last tick's mapping, make a new one and play the device on it.
fn stress_tick(_ctx: &IrqContext<'_>) {
    let (Some(d), true) = (DEV.get(), RUNNING.load(Ordering::Acquire)) else { return };
    let m = &MAPPER[cpu_id()];
    let src = m.src.load(Ordering::Relaxed);
    if src == 0 {
        return;
    }
    finish_held(d, m);
    let seed = m.seed.load(Ordering::Relaxed) + 1;
    let len = 512 + (seed as usize * 1536 + cpu_id() * 512) % (IRQ_MAX_LEN - 511);
    m.seed.store(seed, Ordering::Relaxed);
    m.len.store(len, Ordering::Relaxed);
    fill(src, len, seed, CPU_BYTES);
    match layer().api.test_map_single(d, src, len, BIDI, NOATTR) {
        Ok(dma) => {
            m.maps.fetch_add(1, Ordering::Relaxed);
            if dma == src || !holds(dma, len, seed, CPU_BYTES) {
                bad(m, 5); // not bounced, or the copy-in is wrong
            }
            fill(dma, len, seed, DEVICE_BYTES);
            m.held.store(dma, Ordering::Relaxed);
        }
        Err(_) => {
            m.misses.fetch_add(1, Ordering::Relaxed); // the pool was full: a real driver defers
        }
    }
}

// The reclaimer (task context, its own CPU): fill RAM with checksummed movable pages (the lent
// pageblocks included), run the worker (which reclaims lent pageblocks by migrating them) until
// told to stop, and every so often fill what the pool lent again, so that later reclaims have
// pages to migrate too; then check every page.
static RECLAIMER: spin::Mutex<Option<Result<(usize, usize), String>>> = spin::Mutex::new(None);
static FILLED: AtomicBool = AtomicBool::new(false);
const TOP_UP_EVERY: Duration = Duration::from_millis(1500);

fn reclaimer() {
    let pages = page_allocator();
    let mut fills = Vec::with_capacity(16);
    let fill_all = |seed: u64| {
        let mut p = MemoryPressure::fill(pages, mem(), ZoneType::Normal, usize::MAX, seed);
        p.release_every(pages, 4); // room for migration targets
        p
    };
    fills.push(fill_all(0x5eed));
    FILLED.store(true, Ordering::Release);
    let mut next_top_up = time::uptime() + TOP_UP_EVERY;
    while !STOP.load(Ordering::Acquire) {
        run_pending_work();
        if time::uptime() >= next_top_up && fills.len() < fills.capacity() {
            fills.push(fill_all(0x5eed + fills.len() as u64));
            next_top_up = time::uptime() + TOP_UP_EVERY;
        }
        time::delay(Duration::from_micros(200));
    }
    let mut result = Ok((0, 0));
    for p in fills {
        let checked = p.verify(pages, mem()).map_err(|x| format!("movable pages corrupted: {x:?}"));
        let released = p.release(pages).map_err(|x| format!("{x:?}"));
        if let (Ok((filled, total)), Ok(n), Ok(())) = (&result, &checked, &released) {
            result = Ok((filled + n, total + n));
        } else if result.is_ok() {
            result = checked.and(released).map(|()| (0, 0));
        }
    }
    *RECLAIMER.lock() = Some(result);
}

// The resizer (task context, its own CPU): map until the pool has to grow, check, unmap, let it
// shrink, again, until told to stop.
static RESIZER: spin::Mutex<Option<Result<ResizeReport, String>>> = spin::Mutex::new(None);
static RESIZE_SRC: [AtomicU64; RESIZE_SOURCES] = [const { AtomicU64::new(0) }; RESIZE_SOURCES];

#[derive(Debug, Default, Clone, Copy)]
struct ResizeReport {
    cycles: usize,
    maps: usize,
    peak_usable: usize,
    low_usable: usize,
}

fn resizer() {
    *RESIZER.lock() = Some(resize_cycles());
}

fn resize_cycles() -> Result<ResizeReport, String> {
    let d = *DEV.get().ok_or("no device")?;
    let api = &layer().api;
    let m = layer().manager;
    let mut held: Vec<(u64, usize)> = Vec::with_capacity(RESIZE_MAPS);
    let mut r = ResizeReport { low_usable: usize::MAX, ..Default::default() };
    let shrink_wait = Duration::from_millis(layer().params.swiotlb_shrink_delay_ms * 3);
    while !STOP.load(Ordering::Acquire) {
        let give_up = time::uptime() + Duration::from_secs(3);
        while held.len() < RESIZE_MAPS && !STOP.load(Ordering::Acquire) && time::uptime() < give_up {
            let i = held.len() % RESIZE_SOURCES;
            match api.test_map_single(d, RESIZE_SRC[i].load(Ordering::Relaxed), RESIZE_LEN, TO, NOATTR) {
                Ok(dma) => held.push((dma, i)),
                Err(_) => {
                    run_pending_work(); // the worker grows the pool
                    time::delay(Duration::from_micros(200));
                }
            }
        }
        r.maps += held.len();
        r.peak_usable = r.peak_usable.max(m.usable_slots());
        for &(dma, i) in &held {
            if !holds(dma, RESIZE_LEN, i as u64, 0x10) {
                return Err(format!("task-context bounce at {dma:#x} lost its bytes (source {i})"));
            }
        }
        for (dma, _) in held.drain(..) {
            api.unmap_single(d, dma, RESIZE_LEN, TO, NOATTR).map_err(e)?;
        }
        r.cycles += 1;
        let idle_until = time::uptime() + shrink_wait;
        while time::uptime() < idle_until && !STOP.load(Ordering::Acquire) {
            run_pending_work(); // the worker shrinks the pool
            time::delay(Duration::from_millis(1));
        }
        r.low_usable = r.low_usable.min(m.usable_slots());
    }
    Ok(r)
}

fn stress() -> TestResult {
    let cpus = online();
    if cpus.len() < 3 {
        kprintln!("  needs 3 CPUs (one mapping, one reclaiming, one resizing); {} online: skipped", cpus.len());
        return Ok(());
    }
    let (reclaim_cpu, resize_cpu) = (cpus[1], cpus[2]);
    let k = kernel();
    let node = k.dt.find_path("/virtio_mmio@a003e00").map_err(e)?.ok_or("no virtio_mmio@a003e00")?;
    let dev = dma_device_from_dt(&k.dt, &k.memblock, &node, false).map_err(e)?;
    let d: &'static DmaDevice = alloc::boxed::Box::leak(alloc::boxed::Box::new(dev));
    DEV.call_once(|| d);
    let m = layer().manager;
    let pool = m.default_pool();
    let api = &layer().api;
    let (used0, live0) = (m.used_slots(), api.debug().map(|t| t.live()));
    let before = m.stats();
    let mut srcs = Vec::new();
    for &cpu in &cpus {
        let src = buffer(IRQ_SRC_ORDER, true)?;
        MAPPER[cpu].src.store(src, Ordering::Relaxed);
        srcs.push((src, IRQ_SRC_ORDER));
    }
    for (i, s) in RESIZE_SRC.iter().enumerate() {
        let src = buffer(4, true)?;
        fill(src, RESIZE_LEN, i as u64, 0x10);
        s.store(src, Ordering::Relaxed);
        srcs.push((src, 4));
    }

    // Every CPU maps from its own tick; two of them also run a task.
    kassert!(time::add_tick_hook(stress_tick));
    RUNNING.store(true, Ordering::Release);
    on_each_cpu(|| time::start_tick(Duration::from_millis(2)))?;
    call_on(reclaim_cpu, reclaimer, false).map_err(e)?;
    while !FILLED.load(Ordering::Acquire) {
        run_pending_work();
        time::delay(Duration::from_millis(1));
    }
    call_on(resize_cpu, resizer, false).map_err(e)?;
    let t0 = time::uptime();
    while time::uptime() < t0 + STRESS_TIME {
        run_pending_work(); // the worker may run here too (never on two CPUs at once)
        time::delay(Duration::from_millis(1));
    }
    STOP.store(true, Ordering::Release);
    while !(smp::call_done(reclaim_cpu) && smp::call_done(resize_cpu)) {
        run_pending_work();
        core::hint::spin_loop();
    }
    RUNNING.store(false, Ordering::Release);
    on_each_cpu(time::stop_tick)?;
    time::remove_tick_hook(stress_tick);
    for &cpu in &cpus {
        finish_held(d, &MAPPER[cpu]); // the last tick's mapping
    }

    let after = m.stats();
    let reclaim = RECLAIMER.lock().take().ok_or("the reclaimer did not report")?;
    let resize = RESIZER.lock().take().ok_or("the resizer did not report")?;
    for &cpu in &cpus {
        let x = &MAPPER[cpu];
        kprintln!(
            "  CPU{cpu}: {} IRQ-context maps, {} unmaps, {} misses (pool full), {} bad",
            x.maps.load(Ordering::Relaxed),
            x.unmaps.load(Ordering::Relaxed),
            x.misses.load(Ordering::Relaxed),
            x.bad.load(Ordering::Relaxed)
        );
    }
    kprintln!("  reclaimer on CPU{reclaim_cpu}: {reclaim:?}; resizer on CPU{resize_cpu}: {resize:?}");
    kprintln!(
        "  pool: reclaimed {} pageblocks ({} pages migrated, {} busy), lent again {}, worker runs {}; area lock contention {}",
        after.pageblocks_reclaimed - before.pageblocks_reclaimed,
        after.pages_migrated - before.pages_migrated,
        after.reclaims_busy - before.reclaims_busy,
        after.pageblocks_lent_again - before.pageblocks_lent_again,
        after.worker_runs - before.worker_runs,
        pool.stats().area_lock_contention
    );
    for (src, order) in srcs {
        free(src, order);
    }
    for &cpu in &cpus {
        let x = &MAPPER[cpu];
        kassert_eq!(
            x.bad.load(Ordering::Relaxed),
            0,
            "CPU {cpu}: a bounce held the wrong bytes (first check failed: {})",
            x.first_bad.load(Ordering::Relaxed)
        );
        kassert!(x.maps.load(Ordering::Relaxed) > 0, "CPU {cpu} never mapped from its interrupt handler");
        kassert_eq!(x.maps.load(Ordering::Relaxed), x.unmaps.load(Ordering::Relaxed), "CPU {cpu}: a mapping was lost");
    }
    let (filled, checked) = reclaim?;
    kassert!(filled > 0 && checked > 0, "no memory pressure");
    let resize = resize?;
    kassert!(resize.cycles > 0 && resize.maps > 0, "the resizer did nothing: {resize:?}");
    kassert!(after.pageblocks_reclaimed > before.pageblocks_reclaimed, "the pool never grew by reclaim");
    kassert!(after.pages_migrated > before.pages_migrated, "reclaim migrated no page");
    kassert!(after.pageblocks_lent_again > before.pageblocks_lent_again, "the pool never shrank");
    kassert_eq!(m.used_slots(), used0, "slots leaked");
    kassert_eq!(pool.free_slots() + pool.used_slots() + pool.lent_slots(), pool.nslots(), "default pool counters do not add up");
    kassert_eq!(api.debug().map(|t| t.live()), live0, "live mappings in the DMA-API tracker");
    Ok(())
}
