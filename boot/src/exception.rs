//! Exception handling: trap frames, IRQ dispatch, fault reports.
//!
//! `asm/vectors.S` saves a [`TrapFrame`] and calls [`boot_handle_exception`]. IRQs go to the one
//! handler the kernel registered (its GIC dispatcher), with an [`IrqContext`] token that only this
//! module can create: code that takes `&IrqContext` provably runs in an interrupt handler.
//! Anything unexpected (a synchronous fault, an SError, an exception from a lower EL) prints a
//! report through the emergency console hook, never through a lock the interrupted code may hold,
//! and stops the machine with a failure exit code.

use core::fmt::{self, Write};
use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::esr::Esr;
use crate::smp::{cpu_id, MAX_CPUS};

/// Registers saved on exception entry (layout shared with `asm/vectors.S`).
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    /// x0..x30.
    pub x: [u64; 31],
    /// ELR_EL1: where the exception was taken (and where `eret` returns).
    pub elr: u64,
    /// SPSR_EL1: the interrupted PSTATE.
    pub spsr: u64,
    /// ESR_EL1: the syndrome.
    pub esr: u64,
    /// FAR_EL1: the faulting address (valid for aborts).
    pub far: u64,
    /// The interrupted stack pointer.
    pub sp: u64,
}

/// Proof that the holder runs in an interrupt handler. Only the exception code creates one.
pub struct IrqContext<'a> {
    _not_send: PhantomData<*const &'a ()>,
}

/// Hooks the kernel installs: where reports go and how the machine stops.
#[derive(Clone, Copy)]
pub struct Hooks {
    /// Writes to a console without taking any lock the interrupted code might hold.
    pub emergency_write: fn(&str),
    /// Stops the machine with a failure status (semihosting exit or PSCI).
    pub halt_failure: fn() -> !,
    /// Called for every IRQ, in interrupt context.
    pub irq: fn(&IrqContext<'_>),
}

static HOOKS: AtomicPtr<Hooks> = AtomicPtr::new(core::ptr::null_mut());
/// Interrupt nesting depth of each CPU (Linux: the hardirq count in `preempt_count`, per CPU).
/// Only CPU n writes entry n; atomics only so that the array can be a plain `static`.
static IRQ_DEPTH: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static IN_FATAL: AtomicBool = AtomicBool::new(false);

/// Installs the kernel's hooks. Exceptions before this stop the CPU silently (there is no console).
pub fn set_hooks(hooks: &'static Hooks) {
    HOOKS.store(hooks as *const Hooks as *mut Hooks, Ordering::Release);
}

fn hooks() -> Option<&'static Hooks> {
    let ptr = HOOKS.load(Ordering::Acquire);
    // SAFETY: the only non-null value ever stored comes from a `&'static Hooks` in `set_hooks`.
    unsafe { ptr.as_ref() }
}

/// True while an IRQ handler runs on this CPU (Linux: `in_interrupt()`). Inline: the DMA API's
/// direct path asks on every mapping.
#[inline]
pub fn in_interrupt() -> bool {
    irq_depth() > 0
}

/// This CPU's interrupt nesting depth (0 in task context).
#[inline]
pub fn irq_depth() -> u32 {
    // Unchecked: a bounced DMA mapping asks several times (the DMA API, the pool, the copy),
    // and the bounds check was two of the few instructions each question takes.
    // SAFETY: `cpu_id()` < `MAX_CPUS`: TPIDR_EL1 holds 0 on the boot CPU (`_start`) and, on a
    // secondary, the index `SecondaryBootData::new` checked against `MAX_CPUS`.
    unsafe { IRQ_DEPTH.get_unchecked(cpu_id()) }.load(Ordering::Relaxed)
}

/// What [`catch_fault`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaughtFault {
    /// The syndrome.
    pub esr: Esr,
    /// The faulting address.
    pub far: u64,
    /// The faulting instruction.
    pub elr: u64,
}

impl core::fmt::Debug for Esr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// The CPU (index + 1) that expects a fault from [`catch_fault`]; 0: none. A fault on another
/// CPU meanwhile is not swallowed.
static EXPECT_FAULT: AtomicUsize = AtomicUsize::new(0);
static CAUGHT: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
static CAUGHT_VALID: AtomicBool = AtomicBool::new(false);

/// Runs `f`, expecting it to take one synchronous exception: the exception is recorded, the
/// faulting instruction skipped, and its report returned. For tests of the fault path (and for
/// probing memory); `None` if `f` did not fault.
pub fn catch_fault(f: impl FnOnce()) -> Option<CaughtFault> {
    CAUGHT_VALID.store(false, Ordering::SeqCst);
    EXPECT_FAULT.store(cpu_id() + 1, Ordering::SeqCst);
    f();
    EXPECT_FAULT.store(0, Ordering::SeqCst);
    CAUGHT_VALID.load(Ordering::SeqCst).then(|| CaughtFault {
        esr: Esr(CAUGHT[0].load(Ordering::SeqCst)),
        far: CAUGHT[1].load(Ordering::SeqCst),
        elr: CAUGHT[2].load(Ordering::SeqCst),
    })
}

/// Each CPU's emergency stack, for reporting an overflow of its kernel stack (`asm/vectors.S`
/// `stack_overflow` switches to it; 8 KiB each, `OVERFLOW_STACK_SHIFT`). Only the assembly
/// touches it, by address.
#[no_mangle]
static OVERFLOW_STACKS: OverflowStacks = OverflowStacks(core::cell::UnsafeCell::new([[0; 8192]; MAX_CPUS]));

/// Writable (an `UnsafeCell`, so it lands in .bss, not in read-only data).
#[repr(C, align(16))]
struct OverflowStacks(core::cell::UnsafeCell<[[u8; 8192]; MAX_CPUS]>);

// SAFETY: the Rust side never reads or writes it; each CPU's assembly uses only its own slice,
// once, on its way to stopping the machine.
unsafe impl Sync for OverflowStacks {}

/// The vector code's kind for "a kernel stack overflowed" (`asm/vectors.S`).
const KIND_STACK_OVERFLOW: u64 = 16;

const KIND_NAMES: [&str; 4] = ["synchronous", "IRQ", "FIQ", "SError"];
const ORIGIN_NAMES: [&str; 4] = ["current EL with SP_EL0", "current EL with SP_ELx", "lower EL (AArch64)", "lower EL (AArch32)"];

/// Called by `asm/vectors.S` for every exception. `kind` is the vector index (0..16).
#[no_mangle]
extern "C" fn boot_handle_exception(frame: &mut TrapFrame, kind: u64) {
    if kind == KIND_STACK_OVERFLOW {
        stack_overflow(frame);
    }
    let origin = (kind / 4) as usize;
    let class = (kind % 4) as usize;
    match (origin, class) {
        (1, 1) => handle_irq(),
        (1, 0) if EXPECT_FAULT.compare_exchange(cpu_id() + 1, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok() => {
            CAUGHT[0].store(frame.esr, Ordering::SeqCst);
            CAUGHT[1].store(frame.far, Ordering::SeqCst);
            CAUGHT[2].store(frame.elr, Ordering::SeqCst);
            CAUGHT_VALID.store(true, Ordering::SeqCst);
            frame.elr += 4; // skip the faulting instruction (A64 instructions are 4 bytes)
        }
        _ => fatal(frame, KIND_NAMES[class], ORIGIN_NAMES[origin.min(3)]),
    }
}

/// On the emergency stack: report the overflow (the SP it happened at is in SP_EL0) and the
/// exception that found the stack full, then stop the machine.
fn stack_overflow(frame: &mut TrapFrame) -> ! {
    use aarch64_cpu::registers::{Readable, SP_EL0};
    frame.sp = SP_EL0.get();
    let cpu = cpu_id();
    let (bottom, top) = crate::smp::stack_bounds(cpu);
    if let Some(hooks) = hooks() {
        let mut out = Emergency(hooks.emergency_write);
        let _ = writeln!(
            out,
            "\n*** Kernel stack overflow on CPU {cpu}: SP {:#x}, stack [{bottom:#x}-{top:#x}) (the guard page below it was hit)",
            frame.sp
        );
    }
    fatal(frame, "synchronous", "current EL with SP_ELx, on a full stack")
}

fn handle_irq() {
    let depth = &IRQ_DEPTH[cpu_id()];
    depth.fetch_add(1, Ordering::Relaxed);
    let ctx = IrqContext { _not_send: PhantomData };
    if let Some(hooks) = hooks() {
        (hooks.irq)(&ctx);
    }
    depth.fetch_sub(1, Ordering::Relaxed);
}

struct Emergency(fn(&str));

impl Write for Emergency {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        (self.0)(s);
        Ok(())
    }
}

fn fatal(frame: &TrapFrame, kind: &str, origin: &str) -> ! {
    let Some(hooks) = hooks() else { halt_forever() };
    if IN_FATAL.swap(true, Ordering::SeqCst) {
        // A fault while reporting a fault (or in the halt path itself, or on another CPU that
        // is already reporting one): do not recurse; the first report stops the machine.
        (hooks.emergency_write)("\n*** Nested exception while reporting one: CPU stopped.\n");
        halt_forever();
    }
    let mut out = Emergency(hooks.emergency_write);
    let _ = write_report(&mut out, frame, kind, origin);
    (hooks.halt_failure)()
}

/// Formats the report of an unhandled exception.
fn write_report(out: &mut impl Write, frame: &TrapFrame, kind: &str, origin: &str) -> fmt::Result {
    let esr = Esr(frame.esr);
    writeln!(out, "\n*** Unhandled {kind} exception from {origin}")?;
    writeln!(out, "    {esr}")?;
    writeln!(out, "    FAR  {:#018x}  (faulting address{})", frame.far, if esr.is_abort() { "" } else { ", not valid for this class" })?;
    writeln!(out, "    ELR  {:#018x}  (faulting instruction)", frame.elr)?;
    writeln!(out, "    SPSR {:#018x}  SP {:#018x}", frame.spsr, frame.sp)?;
    for row in 0..8 {
        write!(out, "   ")?;
        for col in 0..4 {
            let r = row * 4 + col;
            if r < 31 {
                write!(out, " x{r:<2} {:#018x}", frame.x[r])?;
            }
        }
        writeln!(out)?;
    }
    writeln!(out, "    Backtrace (frame pointers):")?;
    writeln!(out, "      {:#018x}", frame.elr)?;
    for pc in FrameWalk::new(frame.x[29]) {
        writeln!(out, "      {pc:#018x}")?;
    }
    writeln!(out, "*** Stopping the machine.")
}

/// Walks the frame-pointer chain, staying inside this CPU's stack (so a corrupt chain can never
/// fault the reporter, nor walk into a guard page).
struct FrameWalk {
    fp: u64,
    depth: usize,
}

impl FrameWalk {
    fn new(fp: u64) -> Self {
        Self { fp, depth: 0 }
    }
}

impl Iterator for FrameWalk {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        let (bottom, top) = crate::smp::stack_bounds(cpu_id().min(MAX_CPUS - 1));
        let (bottom, top) = (bottom as u64, top as u64);
        if self.depth >= 32 || self.fp < bottom || self.fp + 16 > top || !self.fp.is_multiple_of(8) {
            return None;
        }
        let record = self.fp as *const u64;
        // SAFETY: `fp` is 8-byte aligned and the 16-byte frame record lies inside this CPU's
        // stack, which is mapped read/write for the kernel's whole life.
        let (next_fp, lr) = unsafe { (record.read_volatile(), record.add(1).read_volatile()) };
        self.depth += 1;
        if lr == 0 {
            return None;
        }
        self.fp = next_fp;
        Some(lr.wrapping_sub(4))
    }
}

fn halt_forever() -> ! {
    loop {
        aarch64_cpu::asm::wfe();
    }
}
