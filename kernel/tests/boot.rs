//! In-QEMU tests of the foundation: exceptions, interrupts, the MMU, the boot memory map.
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;

use alloc::vec::Vec;
use boot::exception::{catch_fault, IrqContext};
use boot::mmu::probe;
use kernel::dt::{ReservedPlacement, ReservedRegion};
use kernel::ktest::{self, TestCase, TestResult};
use kernel::mm::page_alloc::ZoneType;
use kernel::platform::exit::ExitStatus;
use kernel::platform::mm::page_allocator;
use kernel::platform::{irq, kernel, time, Kernel};
use kernel::{kassert, kassert_eq};

kernel::entry!(main);

fn main(_k: &'static Kernel) -> ExitStatus {
    ktest::run(
        "boot",
        &[
            TestCase { name: "data_abort_is_reported_with_class_and_address", run: data_abort_is_reported },
            TestCase { name: "brk_is_reported", run: brk_is_reported },
            TestCase { name: "write_to_text_is_a_permission_fault", run: write_to_text_faults },
            TestCase { name: "timer_interrupt_fires", run: timer_interrupt_fires },
            TestCase { name: "periodic_tick_counts", run: periodic_tick_counts },
            TestCase { name: "interrupt_time_is_accounted_only_when_on", run: interrupt_time_accounting },
            TestCase { name: "interrupts_preserve_fp_simd_state", run: interrupts_preserve_fp_simd_state },
            TestCase { name: "memcpy_and_memset_match_a_byte_loop", run: memcpy_and_memset_match_a_byte_loop },
            TestCase { name: "mmu_attributes_follow_the_device_tree", run: mmu_attributes },
            TestCase { name: "memory_map_has_the_repo_fragment", run: memory_map_has_fragment },
            TestCase { name: "heap_allocates_and_frees", run: heap_works },
        ],
    )
}

/// An address no device tree entry covers: unmapped in the final map.
const UNMAPPED: u64 = 0x20_0000_0000;

fn data_abort_is_reported() -> TestResult {
    let fault = catch_fault(|| {
        // SAFETY: deliberately faulting read; `catch_fault` skips the instruction.
        unsafe { core::ptr::read_volatile(UNMAPPED as *const u64) };
    });
    let fault = fault.ok_or("reading unmapped memory did not fault")?;
    kassert_eq!(fault.esr.class(), 0x25); // data abort at the current EL
    kassert_eq!(fault.far, UNMAPPED);
    kassert!(fault.esr.fault_status_name().starts_with("translation fault"), "{}", fault.esr);
    Ok(())
}

fn brk_is_reported() -> TestResult {
    let fault = catch_fault(|| {
        // SAFETY: BRK raises a synchronous exception that `catch_fault` records and skips.
        unsafe { core::arch::asm!("brk #0x42") };
    })
    .ok_or("brk did not trap")?;
    kassert_eq!(fault.esr.class(), 0x3c);
    kassert_eq!(fault.esr.iss() & 0xffff, 0x42);
    Ok(())
}

fn write_to_text_faults() -> TestResult {
    let target = write_to_text_faults as *const () as u64;
    let fault = catch_fault(|| {
        // SAFETY: deliberately faulting write to read-only text; skipped by `catch_fault`.
        unsafe { core::ptr::write_volatile(target as *mut u32, 0) };
    })
    .ok_or("writing kernel text did not fault")?;
    kassert_eq!(fault.far, target);
    kassert!(fault.esr.is_write());
    kassert!(fault.esr.fault_status_name().starts_with("permission fault"), "{}", fault.esr);
    Ok(())
}

static SEEN: AtomicU32 = AtomicU32::new(0);

fn timer_interrupt_fires() -> TestResult {
    let before = time::tick_count();
    drivers::timer::arch_timer::set_oneshot(Duration::from_millis(5));
    let deadline = time::uptime() + Duration::from_secs(2);
    while time::tick_count() == before {
        kassert!(time::uptime() < deadline, "no timer interrupt within 2 s");
        // Check and sleep with IRQs masked: WFI still wakes on the pending interrupt, which an
        // unmasked check could otherwise take just before the WFI and sleep for ever (one-shot).
        let daif = boot::cpu::local_irq_save();
        if time::tick_count() == before {
            boot::cpu::wait_for_interrupt();
        }
        boot::cpu::local_irq_restore(daif);
    }
    kassert_eq!(time::tick_count(), before + 1);
    // A second handler on another line cannot steal the timer's.
    fn other(_: &IrqContext<'_>, _: u32) -> irq::IrqReturn {
        SEEN.fetch_add(1, Ordering::Relaxed);
        irq::IrqReturn::Handled
    }
    kassert!(matches!(irq::request_irq(kernel().timer_irq, false, other), Err(irq::IrqError::Busy(_))));
    Ok(())
}

/// A 2 ms tick: ten ticks come (a loaded host may delay them, so the wait is long: only a tick
/// that never comes fails), never faster than the period, and none after `stop_tick`. Not a count
/// in a fixed window, whose verdict would depend on the host's load.
fn periodic_tick_counts() -> TestResult {
    const PERIOD: Duration = Duration::from_millis(2);
    let before = time::tick_count();
    let t0 = time::uptime();
    time::start_tick(PERIOD);
    while time::tick_count() - before < 10 && time::uptime() - t0 < Duration::from_secs(20) {
        core::hint::spin_loop();
    }
    let (ticks, took) = (time::tick_count() - before, time::uptime() - t0);
    time::stop_tick();
    kassert!(ticks >= 10, "only {ticks} ticks in {took:?} at a {PERIOD:?} period");
    kassert!(took >= PERIOD * 9, "{ticks} ticks in {took:?}: faster than the {PERIOD:?} period");
    let stopped = time::tick_count();
    time::delay(PERIOD * 5);
    kassert_eq!(time::tick_count(), stopped, "ticks after stop_tick");
    Ok(())
}

/// How long [`slow_tick`] holds each tick's handler.
const SLOW_TICK: Duration = Duration::from_micros(300);
static SLOW_TICKS: AtomicU32 = AtomicU32::new(0);

/// A tick hook that takes [`SLOW_TICK`] of the handler's time.
fn slow_tick(_: &IrqContext<'_>) {
    time::delay(SLOW_TICK);
    SLOW_TICKS.fetch_add(1, Ordering::Relaxed);
}

/// `platform::irq`'s interrupt time (the benchmarks' completion-handler time): off, ticks add
/// nothing to it; on, at least the time the handlers took (a hook holds each tick's handler for
/// 300 µs) and at most the time that passed. Bounds only, never a fixed window.
fn interrupt_time_accounting() -> TestResult {
    let ticks = |n: u32| -> TestResult {
        let before = SLOW_TICKS.load(Ordering::Relaxed);
        let t0 = time::uptime();
        while SLOW_TICKS.load(Ordering::Relaxed) - before < n {
            kassert!(time::uptime() - t0 < Duration::from_secs(20), "no tick within 20 s");
            core::hint::spin_loop();
        }
        Ok(())
    };
    kassert!(time::add_tick_hook(slow_tick), "no tick hook free");
    time::start_tick(Duration::from_millis(2));
    let off = irq::irq_time_ticks();
    ticks(5)?;
    kassert_eq!(irq::irq_time_ticks(), off, "accounted while off");
    irq::set_irq_time_accounting(true);
    let (on, t0) = (irq::irq_time_ticks(), time::uptime());
    ticks(5)?;
    irq::set_irq_time_accounting(false);
    let (accounted, took) = (drivers::timer::arch_timer::ticks_to_duration(irq::irq_time_ticks() - on), time::uptime() - t0);
    time::stop_tick();
    time::remove_tick_hook(slow_tick);
    // The first counted tick may have started before accounting was on: four whole ones at least.
    kassert!(accounted >= SLOW_TICK * 4, "{accounted:?} accounted for 5 ticks of {SLOW_TICK:?} each");
    kassert!(accounted <= took, "{accounted:?} accounted in {took:?}");
    Ok(())
}

static CLOBBERS: AtomicU32 = AtomicU32::new(0);

/// A tick hook that does what compiled Rust in a handler may do at any time (the target uses the
/// FP/SIMD registers for copies and zeroing): overwrite every vector register, FPSR and FPCR.
fn clobber_fp_simd(_: &IrqContext<'_>) {
    // SAFETY: only FP/SIMD state is written, and every register is declared clobbered; FPCR's FZ
    // bit changes nothing integer code depends on.
    unsafe {
        core::arch::asm!(
            "movi v0.16b, #0xa5", "movi v1.16b, #0xa5", "movi v2.16b, #0xa5", "movi v3.16b, #0xa5",
            "movi v4.16b, #0xa5", "movi v5.16b, #0xa5", "movi v6.16b, #0xa5", "movi v7.16b, #0xa5",
            "movi v8.16b, #0xa5", "movi v9.16b, #0xa5", "movi v10.16b, #0xa5", "movi v11.16b, #0xa5",
            "movi v12.16b, #0xa5", "movi v13.16b, #0xa5", "movi v14.16b, #0xa5", "movi v15.16b, #0xa5",
            "movi v16.16b, #0xa5", "movi v17.16b, #0xa5", "movi v18.16b, #0xa5", "movi v19.16b, #0xa5",
            "movi v20.16b, #0xa5", "movi v21.16b, #0xa5", "movi v22.16b, #0xa5", "movi v23.16b, #0xa5",
            "movi v24.16b, #0xa5", "movi v25.16b, #0xa5", "movi v26.16b, #0xa5", "movi v27.16b, #0xa5",
            "movi v28.16b, #0xa5", "movi v29.16b, #0xa5", "movi v30.16b, #0xa5", "movi v31.16b, #0xa5",
            "mov {t}, #0x9f",
            "msr fpsr, {t}",
            "mov {t}, #(1 << 24)",
            "msr fpcr, {t}",
            t = out(reg) _,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _, out("v5") _, out("v6") _, out("v7") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _, out("v12") _, out("v13") _, out("v14") _, out("v15") _,
            out("v16") _, out("v17") _, out("v18") _, out("v19") _, out("v20") _, out("v21") _, out("v22") _, out("v23") _,
            out("v24") _, out("v25") _, out("v26") _, out("v27") _, out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            options(nostack),
        );
    }
    CLOBBERS.fetch_add(1, Ordering::Relaxed);
}

/// Task context holds values in all 32 vector registers, FPSR and FPCR while timer interrupts
/// whose handler overwrites them all come and go: the exception entry must save and restore the
/// interrupted FP/SIMD state, as it does the general registers.
fn interrupts_preserve_fp_simd_state() -> TestResult {
    let mut input = [0u8; 512];
    for (i, b) in input.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(7).wrapping_add(1);
    }
    let mut output = [0u8; 512];
    let (fpsr_in, fpcr_in) = (0x1u64, 2u64 << 22); // IOC flag; round towards minus infinity
    let (mut fpsr_out, mut fpcr_out, mut fpcr_saved): (u64, u64, u64);
    kassert!(time::add_tick_hook(clobber_fp_simd), "no tick hook free");
    let before = CLOBBERS.load(Ordering::Relaxed);
    time::start_tick(Duration::from_micros(500));
    // One asm block from load to store, so that no compiled code touches the registers between:
    // load, wait for the counter to move by 3 interrupts (bounded), store.
    // SAFETY: reads `input` and writes `output` (512 bytes each, both live); every vector
    // register is declared clobbered; FPCR is put back before the block ends.
    unsafe {
        core::arch::asm!(
            "mrs {saved}, fpcr",
            "msr fpsr, {fpsr_in}",
            "msr fpcr, {fpcr_in}",
            "ld1 {{v0.16b-v3.16b}}, [{inp}], #64", "ld1 {{v4.16b-v7.16b}}, [{inp}], #64",
            "ld1 {{v8.16b-v11.16b}}, [{inp}], #64", "ld1 {{v12.16b-v15.16b}}, [{inp}], #64",
            "ld1 {{v16.16b-v19.16b}}, [{inp}], #64", "ld1 {{v20.16b-v23.16b}}, [{inp}], #64",
            "ld1 {{v24.16b-v27.16b}}, [{inp}], #64", "ld1 {{v28.16b-v31.16b}}, [{inp}], #64",
            "ldr {want:w}, [{ctr}]",
            "add {want:w}, {want:w}, #3",
            "2:",
            "subs {budget}, {budget}, #1",
            "b.eq 3f",
            "ldr {t:w}, [{ctr}]",
            "cmp {t:w}, {want:w}",
            "b.lo 2b",
            "3:",
            "st1 {{v0.16b-v3.16b}}, [{out}], #64", "st1 {{v4.16b-v7.16b}}, [{out}], #64",
            "st1 {{v8.16b-v11.16b}}, [{out}], #64", "st1 {{v12.16b-v15.16b}}, [{out}], #64",
            "st1 {{v16.16b-v19.16b}}, [{out}], #64", "st1 {{v20.16b-v23.16b}}, [{out}], #64",
            "st1 {{v24.16b-v27.16b}}, [{out}], #64", "st1 {{v28.16b-v31.16b}}, [{out}], #64",
            "mrs {fpsr_out}, fpsr",
            "mrs {fpcr_out}, fpcr",
            "msr fpcr, {saved}",
            saved = out(reg) fpcr_saved,
            fpsr_in = in(reg) fpsr_in,
            fpcr_in = in(reg) fpcr_in,
            inp = inout(reg) input.as_ptr() => _,
            out = inout(reg) output.as_mut_ptr() => _,
            ctr = in(reg) CLOBBERS.as_ptr(),
            want = out(reg) _,
            t = out(reg) _,
            budget = inout(reg) 1u64 << 32 => _,
            fpsr_out = out(reg) fpsr_out,
            fpcr_out = out(reg) fpcr_out,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _, out("v5") _, out("v6") _, out("v7") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _, out("v12") _, out("v13") _, out("v14") _, out("v15") _,
            out("v16") _, out("v17") _, out("v18") _, out("v19") _, out("v20") _, out("v21") _, out("v22") _, out("v23") _,
            out("v24") _, out("v25") _, out("v26") _, out("v27") _, out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            options(nostack),
        );
    }
    time::stop_tick();
    time::remove_tick_hook(clobber_fp_simd);
    let seen = CLOBBERS.load(Ordering::Relaxed) - before;
    kassert!(seen >= 3, "only {seen} interrupts came while the registers were live");
    if let Some(i) = (0..512).find(|&i| output[i] != input[i]) {
        return Err(alloc::format!(
            "v{} byte {} changed across {seen} interrupts: {:#04x}, was {:#04x}",
            i / 16,
            i % 16,
            output[i],
            input[i]
        ));
    }
    kassert_eq!(fpsr_out & 0x9f, fpsr_in, "FPSR changed across interrupts");
    kassert_eq!(fpcr_out, fpcr_in, "FPCR changed across interrupts");
    let _ = fpcr_saved;
    Ok(())
}

extern "C" {
    // The kernel's own (boot/src/asm/mem.S), the ones every copy the compiler emits calls.
    fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8;
    fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8;
}

/// Every size up to 200 at every pair of source and destination alignments mod 16, then larger
/// sizes around the block and page sizes at a few alignments: the destination holds exactly what
/// a byte loop would have written, and the bytes around it are untouched.
fn memcpy_and_memset_match_a_byte_loop() -> TestResult {
    const GUARD: usize = 64;
    const MAX: usize = 65_536 + 80;
    let src: Vec<u8> = (0..MAX + 16).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] | 1).collect();
    let mut dst = alloc::vec![0u8; MAX + 16 + 2 * GUARD];
    let mut cases: Vec<(usize, usize, usize)> = Vec::new();
    for n in 0..=200 {
        for s_off in 0..16 {
            for d_off in 0..16 {
                cases.push((n, s_off, d_off));
            }
        }
    }
    for n in [255, 256, 257, 511, 1000, 2048, 4095, 4096, 4097, 4160, 65_536, MAX] {
        for (s_off, d_off) in [(0, 0), (1, 0), (0, 7), (8, 8), (15, 3)] {
            cases.push((n, s_off, d_off));
        }
    }
    for &(n, s_off, d_off) in &cases {
        dst.fill(0);
        let d = GUARD + d_off;
        // SAFETY: both ranges lie inside their vectors (MAX + 16 bytes of source; the destination
        // has GUARD bytes on each side) and do not overlap.
        let ret = unsafe { memcpy(dst.as_mut_ptr().add(d), src.as_ptr().add(s_off), core::hint::black_box(n)) };
        kassert_eq!(ret as usize, dst.as_ptr() as usize + d, "memcpy's return value, n {n}");
        if dst[d..d + n] != src[s_off..s_off + n] {
            return Err(alloc::format!("memcpy of {n} bytes, source +{s_off}, destination +{d_off}: wrong bytes"));
        }
        kassert!(dst[..d].iter().chain(&dst[d + n..]).all(|&b| b == 0), "memcpy of {n} bytes (+{s_off}, +{d_off}) wrote outside");

        let c = 0x100 | (n as i32 & 0xff) | 1; // only the low byte counts
                                               // SAFETY: inside the destination vector, as above.
        let ret = unsafe { memset(dst.as_mut_ptr().add(d), c, core::hint::black_box(n)) };
        kassert_eq!(ret as usize, dst.as_ptr() as usize + d, "memset's return value, n {n}");
        kassert!(dst[d..d + n].iter().all(|&b| b == c as u8), "memset of {n} bytes at +{d_off}: wrong bytes");
        kassert!(dst[..d].iter().chain(&dst[d + n..]).all(|&b| b == 0), "memset of {n} bytes at +{d_off} wrote outside");
    }
    Ok(())
}

const MAIR_NORMAL_WB: u8 = 0xff;
const MAIR_DEVICE_NGNRE: u8 = 0x04;

fn mmu_attributes() -> TestResult {
    let text = mmu_attributes as *const () as u64;
    kassert_eq!(probe(text), Some((MAIR_NORMAL_WB, true)));
    static RO: [u8; 4] = [1, 2, 3, 4];
    kassert_eq!(probe(RO.as_ptr() as u64), Some((MAIR_NORMAL_WB, true)));
    let stack_var = 0u64;
    kassert_eq!(probe(&stack_var as *const u64 as u64), Some((MAIR_NORMAL_WB, false)));
    let uart = kernel().dt.stdout().map_err(|e| alloc::format!("{e}"))?.ok_or("no uart")?;
    kassert_eq!(probe(uart.regs()[0].base()), Some((MAIR_DEVICE_NGNRE, false)));
    // A no-map reserved region is left out of the map altogether (the device tree's: in RAM it
    // is a hole in the map; wholly beyond RAM, as fw-log@48000000 at 128 MiB, it was skipped and
    // is not mapped either).
    let mut no_map = 0;
    for region in kernel().dt.reserved_regions() {
        let region = region.map_err(|e| alloc::format!("{e}"))?;
        if let (true, ReservedPlacement::Static(range)) = (region.no_map, region.placement) {
            no_map += 1;
            kassert_eq!(probe(range.base()), None, "no-map region {} at {:#x}", region.name, range.base());
        }
    }
    kassert!(no_map > 0, "no no-map region in the device tree");
    kassert_eq!(probe(UNMAPPED), None);
    Ok(())
}

fn memory_map_has_fragment() -> TestResult {
    let k = kernel();
    let mb = &k.memblock;
    let labels: Vec<&str> = mb.reserved().map(|r| r.label).collect();
    for want in ["kernel", "dtb", "heap", "swiotlb-pool", "restricted-dma"] {
        kassert!(labels.iter().any(|l| l.starts_with(want)), "no '{want}' region in {labels:?}");
    }
    // The fragment's regions are where its nodes say (qemu-run.sh fits the fragment to RAM
    // below 512 MiB: the device tree is what the kernel must follow, not a constant).
    let node = |name: &str| -> Result<ReservedRegion<'_>, alloc::string::String> {
        for region in k.dt.reserved_regions() {
            let region = region.map_err(|e| alloc::format!("{e}"))?;
            if region.name.starts_with(name) {
                return Ok(region);
            }
        }
        Err(alloc::format!("no {name} node in /reserved-memory"))
    };
    let placed = |region: &ReservedRegion<'_>| match region.placement {
        ReservedPlacement::Static(range) => Ok(range),
        other => Err(alloc::format!("{} is not static: {other:?}", region.name)),
    };
    // The static fragment region is where the fragment says, and is not usable RAM; wholly
    // beyond RAM (at 128 MiB) it is skipped, and counted.
    let fw_node = node("fw-log")?;
    let fw_range = placed(&fw_node)?;
    kassert_eq!((fw_range.base(), fw_range.size()), (0x4800_0000, 0x20_0000), "fw-log@48000000 is never fitted");
    match mb.reserved().find(|r| r.label.starts_with("fw-log")) {
        Some(fw) => {
            kassert!(!mb.outside_ram(&fw_range), "fw-log beyond RAM is in the map");
            kassert_eq!(fw.range, fw_range);
            kassert!(mb.free_ranges().all(|r| !r.overlaps(&fw.range)));
        }
        None => {
            kassert!(mb.outside_ram(&fw_range), "fw-log lies in RAM but is not in the map: {labels:?}");
            kassert!(mb.skipped_outside_ram() >= 1, "fw-log beyond RAM was not counted as skipped");
        }
    }
    // The dynamic pool was placed inside its alloc-ranges, aligned and sized as asked.
    let pool_node = node("swiotlb-pool")?;
    let ReservedPlacement::Dynamic { size, alignment, .. } = pool_node.placement else {
        return Err("swiotlb-pool is not a dynamic region".into());
    };
    let pool = mb.find("swiotlb-pool").ok_or("swiotlb-pool missing")?;
    kassert!(pool.flags.reusable && pool.flags.dynamic);
    kassert_eq!(pool.range.size(), size);
    kassert!(pool.range.base() % alignment.unwrap_or(1) == 0, "pool misaligned");
    kassert!(
        pool_node.alloc_ranges().any(|r| r.base() <= pool.range.base() && pool.range.end() <= r.end()),
        "pool outside its alloc-ranges"
    );
    // The root dma-ranges window bounds ZONE_DMA, and lies within RAM with RAM beyond it (so
    // that buffers there bounce); the restricted pool is where its node says, inside the window.
    let limit = k.dt.smallest_dma_limit().map_err(|e| alloc::format!("{e}"))?.ok_or("no DMA window")?;
    let ram_end = mb.ram().iter().map(|r| r.end()).max().ok_or("no RAM")?;
    kassert!(limit + 1 < ram_end, "the DMA window (up to {limit:#x}) covers all RAM (to {ram_end:#x})");
    kassert!(pool.range.end() <= limit + 1, "pool beyond the DMA window");
    let managed_dma = page_allocator().lock().managed_pages(ZoneType::Dma) as u64 * kernel::mm::PAGE_SIZE;
    kassert!(managed_dma <= limit + 1 - mb.ram()[0].base(), "ZONE_DMA ({managed_dma:#x} bytes) beyond the window");
    let restricted_node = node("restricted-dma")?;
    let restricted_range = placed(&restricted_node)?;
    let restricted = mb.find(restricted_node.name).ok_or("restricted pool missing")?;
    kassert_eq!(restricted.range, restricted_range);
    kassert!(restricted.range.end() <= limit + 1, "the restricted pool beyond the DMA window");
    Ok(())
}

fn heap_works() -> TestResult {
    let before = kernel::platform::HEAP.stats().used;
    let v: Vec<u64> = (0..10_000).collect();
    kassert_eq!(v.iter().sum::<u64>(), 49_995_000);
    kassert!(kernel::platform::HEAP.stats().used >= before + 80_000);
    drop(v);
    kassert_eq!(kernel::platform::HEAP.stats().used, before);
    Ok(())
}
