//! Interrupt dispatch: the GIC found in the device tree, a table of handlers, and the function
//! the exception code calls for every IRQ.
//!
//! Handlers run in interrupt context with IRQs masked (no nesting). They get the `IrqContext`
//! token, must not allocate or wait, and hand anything long to task context.
//!
//! With several CPUs: SGIs and PPIs (the timer, the IPI) are per CPU, each CPU enables its own
//! ([`enable_percpu_irq`]); an SPI goes to one CPU, the boot CPU unless routed elsewhere
//! ([`set_affinity`], `irq_affinity=`, [`request_irq_spread`] for one-per-CPU devices). The GIC
//! driver state is one lock: every CPU takes it briefly to acknowledge and end its interrupts
//! (the registers behind it are banked or per-CPU system registers, so no CPU waits on
//! another's interrupt, only on the lock).
//!
//! Each handler says whether its device had raised the interrupt ([`IrqReturn`], Linux
//! `irqreturn_t`), and every line is counted as Linux `note_interrupt` counts it
//! (`crate::irq::spurious`): a line whose interrupts are almost all unhandled is disabled and
//! reported once ("irq N: nobody cared"), so that a stuck line cannot keep a CPU in this
//! dispatch loop forever. Its driver then polls the device on the tick (virtio-blk checks its
//! used rings on every tick; Linux's `poll_spurious_irqs` runs a disabled line's handlers every
//! 100 ms instead).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use boot::exception::IrqContext;
use drivers::irq::gic::{Gic, GicError, GicRegs, IrqNumber, SPI_BASE};
use drivers::timer::arch_timer;

use crate::arch::cpu_id;
pub use crate::irq::spurious::IrqReturn;
use crate::irq::spurious::{SpuriousConfig, SpuriousStats, Verdict};
use crate::sync::IrqSafeSpinLock;

/// An interrupt handler: [`IrqReturn::None`] if its device had not raised the interrupt.
pub type IrqHandler = fn(&IrqContext<'_>, IrqNumber) -> IrqReturn;

/// A line's handler and its counts (Linux `irq_desc`, reduced).
#[derive(Clone, Copy)]
struct IrqDesc {
    irq: IrqNumber,
    handler: IrqHandler,
    spurious: SpuriousStats,
}

const MAX_HANDLERS: usize = 32;

static GIC: IrqSafeSpinLock<Option<Gic>> = IrqSafeSpinLock::new(None);
static HANDLERS: IrqSafeSpinLock<[Option<IrqDesc>; MAX_HANDLERS]> = IrqSafeSpinLock::new([None; MAX_HANDLERS]);
/// Test hook ([`inject_stuck_line`]): the line to set pending again after each of its
/// interrupts, and how many more times.
static STUCK_LINE: IrqSafeSpinLock<Option<(IrqNumber, u64)>> = IrqSafeSpinLock::new(None);

/// Errors of handler registration.
#[derive(Debug)]
pub enum IrqError {
    /// No GIC has been set up.
    NoController,
    /// The line already has a handler.
    Busy(IrqNumber),
    /// The handler table is full.
    TableFull,
    /// A per-CPU line has no handler to enable.
    NoHandler(IrqNumber),
    /// The target CPU is not online.
    CpuOffline(usize),
    /// The GIC refused.
    Gic(GicError),
}

impl core::fmt::Display for IrqError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IrqError::NoController => write!(f, "no interrupt controller"),
            IrqError::Busy(n) => write!(f, "interrupt {n} already has a handler"),
            IrqError::TableFull => write!(f, "interrupt handler table full ({MAX_HANDLERS})"),
            IrqError::NoHandler(n) => write!(f, "per-CPU interrupt {n} has no handler"),
            IrqError::CpuOffline(c) => write!(f, "CPU {c} is not online"),
            IrqError::Gic(e) => write!(f, "{e}"),
        }
    }
}

/// Sets up the GIC on the boot CPU (distributor, and `cpu_count` redistributors for GICv3).
///
/// # Safety
///
/// `regs` must be this machine's GIC frames, mapped as device memory, used by nothing else.
pub unsafe fn init(regs: GicRegs, cpu_count: usize) -> Result<u32, IrqError> {
    // SAFETY: forwarded from the caller.
    let mut gic = unsafe { Gic::new(regs, cpu_count) }.map_err(IrqError::Gic)?;
    gic.setup(cpu_id(), boot::smp::this_cpu_mpidr()).map_err(IrqError::Gic)?;
    let version = gic.version();
    *GIC.lock() = Some(gic);
    Ok(version)
}

/// Sets up the calling secondary CPU's GIC interface (Linux `gic_starting_cpu`).
pub fn init_cpu() -> Result<(), IrqError> {
    let mut gic = GIC.lock();
    let gic = gic.as_mut().ok_or(IrqError::NoController)?;
    gic.init_cpu(cpu_id(), boot::smp::this_cpu_mpidr()).map_err(IrqError::Gic)
}

/// Installs `handler` for line `irq` and enables the line (Linux: `request_irq`): a PPI or SGI
/// on the calling CPU, an SPI routed as `irq_affinity=` says, else to the calling CPU.
pub fn request_irq(irq: IrqNumber, edge: bool, handler: IrqHandler) -> Result<(), IrqError> {
    request_irq_on(irq, edge, handler, None)
}

/// [`request_irq`] for the `nth` of several like devices (disk N): unless `irq_affinity=` names
/// the line, its SPI goes to the `nth` online CPU, counted modulo the online CPUs, so that the
/// devices' interrupts spread over the CPUs (CPU 0 with one CPU).
pub fn request_irq_spread(irq: IrqNumber, edge: bool, handler: IrqHandler, nth: usize) -> Result<(), IrqError> {
    request_irq_on(irq, edge, handler, Some(super::smp::nth_online_cpu(nth)))
}

fn request_irq_on(irq: IrqNumber, edge: bool, handler: IrqHandler, default_cpu: Option<usize>) -> Result<(), IrqError> {
    {
        let mut table = HANDLERS.lock();
        if table.iter().flatten().any(|d| d.irq == irq) {
            return Err(IrqError::Busy(irq));
        }
        let slot = table.iter_mut().find(|s| s.is_none()).ok_or(IrqError::TableFull)?;
        *slot = Some(IrqDesc { irq, handler, spurious: SpuriousStats::default() });
    }
    {
        let mut gic = GIC.lock();
        let gic = gic.as_mut().ok_or(IrqError::NoController)?;
        gic.enable(irq, edge, cpu_id()).map_err(IrqError::Gic)?;
    }
    if irq < SPI_BASE {
        return Ok(());
    }
    let chosen =
        super::try_kernel().and_then(|k| k.params.irq_affinity.iter().rev().find(|(n, _)| *n == irq).map(|(_, cpu)| *cpu)).or(default_cpu);
    match chosen {
        Some(cpu) if cpu != cpu_id() => {
            match set_affinity(irq, cpu) {
                Ok(()) => log::info!("irq {irq} routed to CPU {cpu}"),
                Err(e) => log::warn!("irq {irq}: not routed to CPU {cpu} ({e}); it stays on CPU {}", cpu_id()),
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Enables per-CPU line `irq` (a PPI or SGI with a handler) on the calling CPU (Linux
/// `enable_percpu_irq`).
pub fn enable_percpu_irq(irq: IrqNumber, edge: bool) -> Result<(), IrqError> {
    if !HANDLERS.lock().iter().flatten().any(|d| d.irq == irq) {
        return Err(IrqError::NoHandler(irq));
    }
    let mut gic = GIC.lock();
    let gic = gic.as_mut().ok_or(IrqError::NoController)?;
    gic.enable(irq, edge, cpu_id()).map_err(IrqError::Gic)
}

/// Routes SPI `irq` to CPU `cpu` (Linux `irq_set_affinity`).
pub fn set_affinity(irq: IrqNumber, cpu: usize) -> Result<(), IrqError> {
    if !super::smp::cpu_online(cpu) {
        return Err(IrqError::CpuOffline(cpu));
    }
    let mut gic = GIC.lock();
    let gic = gic.as_mut().ok_or(IrqError::NoController)?;
    gic.set_affinity(irq, cpu).map_err(IrqError::Gic)
}

/// Sends SGI `sgi` to CPU `cpu` (Linux `smp_cross_call`).
pub fn send_sgi(sgi: IrqNumber, cpu: usize) -> Result<(), IrqError> {
    let mut gic = GIC.lock();
    let gic = gic.as_mut().ok_or(IrqError::NoController)?;
    gic.send_sgi(sgi, cpu).map_err(IrqError::Gic)
}

/// Disables line `irq` (a per-CPU line on the calling CPU) and removes its handler (Linux:
/// `free_irq`).
pub fn free_irq(irq: IrqNumber) {
    if let Some(gic) = GIC.lock().as_mut() {
        let _ = gic.disable(irq, cpu_id());
    }
    for slot in HANDLERS.lock().iter_mut() {
        if matches!(slot, Some(d) if d.irq == irq) {
            *slot = None;
        }
    }
}

/// Masks SPI `irq` at the GIC, its handler kept (Linux `disable_irq`, without the wait for a
/// running handler): tests use it to make a device that completes without interrupting.
pub fn disable_irq(irq: IrqNumber) -> Result<(), IrqError> {
    let mut gic = GIC.lock();
    let gic = gic.as_mut().ok_or(IrqError::NoController)?;
    gic.disable(irq, cpu_id()).map_err(IrqError::Gic)
}

/// Unmasks SPI `irq` after [`disable_irq`] (Linux `enable_irq`). A line `handle_irq` disabled
/// as stuck stays disabled.
pub fn enable_irq(irq: IrqNumber) -> Result<(), IrqError> {
    if spurious_stats(irq).is_some_and(|s| s.spurious_disabled) {
        return Ok(());
    }
    let mut gic = GIC.lock();
    let gic = gic.as_mut().ok_or(IrqError::NoController)?;
    gic.reenable(irq, cpu_id()).map_err(IrqError::Gic)
}

/// Sets SPI `irq` pending as if its device had raised it (tests: an interrupt with nothing to
/// do).
pub fn set_pending(irq: IrqNumber) -> Result<(), IrqError> {
    let mut gic = GIC.lock();
    let gic = gic.as_mut().ok_or(IrqError::NoController)?;
    gic.set_pending(irq).map_err(IrqError::Gic)
}

/// Test hook: SPI `irq` behaves as a level-triggered line stuck high, set pending again after
/// each of its next `times` interrupts (so the dispatch loop below takes it again at once, as
/// it would a line nobody clears), then quiet. Pends it once to start. `times` 0 stops it.
pub fn inject_stuck_line(irq: IrqNumber, times: u64) -> Result<(), IrqError> {
    *STUCK_LINE.lock() = (times > 0).then_some((irq, times));
    if times > 0 {
        set_pending(irq)?;
    }
    Ok(())
}

/// Line `irq`'s interrupt counts (Linux `/proc/irq/N/spurious`), if it has a handler.
pub fn spurious_stats(irq: IrqNumber) -> Option<SpuriousStats> {
    HANDLERS.lock().iter().flatten().find(|d| d.irq == irq).map(|d| d.spurious)
}

/// Counts an interrupt of `irq` that its handler answered with `ret` (Linux `note_interrupt`);
/// disables the line and reports it the one time its counts say nobody cares.
fn note_interrupt(irq: IrqNumber, ret: IrqReturn) {
    let config = super::try_kernel().map_or(SpuriousConfig::DEFAULT, |k| k.params.irq_spurious);
    let now = super::time::uptime();
    let (verdict, total, total_unhandled) = {
        let mut table = HANDLERS.lock();
        let Some(desc) = table.iter_mut().flatten().find(|d| d.irq == irq) else { return };
        let verdict = desc.spurious.note_interrupt(ret, now, config);
        (verdict, desc.spurious.total, desc.spurious.total_unhandled)
    };
    if let Verdict::NobodyCared { unhandled, window } = verdict {
        let masked = GIC.lock().as_mut().map(|gic| gic.disable(irq, cpu_id()));
        // Linux `__report_bad_irq`: once per line, with the counts that decided.
        log::error!(
            "irq {irq}: nobody cared ({unhandled} of the last {window} interrupts unhandled, {total_unhandled} of {total} since requested); Disabling IRQ #{irq}{}",
            match masked {
                Some(Ok(())) => "; its driver polls the device on the tick",
                _ => " FAILED: the GIC refused",
            }
        );
    }
}

/// Whether interrupt time is accounted (see [`set_irq_time_accounting`]).
static IRQ_TIME_ACCOUNTING: AtomicBool = AtomicBool::new(false);
/// Generic-timer ticks spent in [`handle_irq`] while accounted.
static IRQ_TIME_TICKS: AtomicU64 = AtomicU64::new(0);

/// Turns interrupt time accounting on or off (off at boot; Linux `CONFIG_IRQ_TIME_ACCOUNTING`,
/// reduced to one sum for all CPUs). On, [`handle_irq`] reads the generic timer at entry and
/// exit and [`irq_time_ticks`] sums the difference: the benchmarks' time of completion
/// handlers, apart from the loop that waits for them. Off, it costs an interrupt one load and
/// branch.
pub fn set_irq_time_accounting(on: bool) {
    IRQ_TIME_ACCOUNTING.store(on, Ordering::Relaxed);
}

/// Generic-timer ticks spent handling interrupts while [`set_irq_time_accounting`] was on.
pub fn irq_time_ticks() -> u64 {
    IRQ_TIME_TICKS.load(Ordering::Relaxed)
}

/// Called by the exception code for every IRQ: acknowledge, dispatch, count, end, until none
/// pending.
pub fn handle_irq(ctx: &IrqContext<'_>) {
    if IRQ_TIME_ACCOUNTING.load(Ordering::Relaxed) {
        let start = arch_timer::ticks();
        dispatch_pending(ctx);
        IRQ_TIME_TICKS.fetch_add(arch_timer::ticks() - start, Ordering::Relaxed);
    } else {
        dispatch_pending(ctx);
    }
}

/// [`handle_irq`]'s loop.
#[inline(always)]
fn dispatch_pending(ctx: &IrqContext<'_>) {
    loop {
        let Some(ack) = GIC.lock().as_mut().and_then(Gic::acknowledge) else { return };
        let irq = ack.irq();
        let handler = HANDLERS.lock().iter().flatten().find(|d| d.irq == irq).map(|d| d.handler);
        match handler {
            Some(h) => {
                let ret = h(ctx, irq);
                note_interrupt(irq, ret);
            }
            None => log::warn!("spurious interrupt {irq} on CPU {} (no handler)", cpu_id()),
        }
        {
            let mut stuck = STUCK_LINE.lock();
            if let Some((line, left)) = stuck.as_mut().filter(|(line, _)| *line == irq) {
                *left -= 1;
                let line = *line;
                if *left == 0 {
                    *stuck = None;
                }
                drop(stuck);
                let _ = set_pending(line);
            }
        }
        if let Some(gic) = GIC.lock().as_mut() {
            gic.end_of_interrupt(ack);
        }
    }
}
