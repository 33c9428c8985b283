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

use boot::exception::IrqContext;
use drivers::irq::gic::{Gic, GicError, GicRegs, IrqNumber, SPI_BASE};

use crate::arch::cpu_id;
use crate::sync::IrqSafeSpinLock;

/// An interrupt handler.
pub type IrqHandler = fn(&IrqContext<'_>, IrqNumber);

const MAX_HANDLERS: usize = 32;

static GIC: IrqSafeSpinLock<Option<Gic>> = IrqSafeSpinLock::new(None);
static HANDLERS: IrqSafeSpinLock<[Option<(IrqNumber, IrqHandler)>; MAX_HANDLERS]> =
    IrqSafeSpinLock::new([None; MAX_HANDLERS]);

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
        if table.iter().flatten().any(|(n, _)| *n == irq) {
            return Err(IrqError::Busy(irq));
        }
        let slot = table.iter_mut().find(|s| s.is_none()).ok_or(IrqError::TableFull)?;
        *slot = Some((irq, handler));
    }
    {
        let mut gic = GIC.lock();
        let gic = gic.as_mut().ok_or(IrqError::NoController)?;
        gic.enable(irq, edge, cpu_id()).map_err(IrqError::Gic)?;
    }
    if irq < SPI_BASE {
        return Ok(());
    }
    let chosen = super::try_kernel()
        .and_then(|k| k.params.irq_affinity.iter().rev().find(|(n, _)| *n == irq).map(|(_, cpu)| *cpu))
        .or(default_cpu);
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
    if !HANDLERS.lock().iter().flatten().any(|(n, _)| *n == irq) {
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
        if matches!(slot, Some((n, _)) if *n == irq) {
            *slot = None;
        }
    }
}

/// Called by the exception code for every IRQ: acknowledge, dispatch, end, until none pending.
pub fn handle_irq(ctx: &IrqContext<'_>) {
    loop {
        let Some(ack) = GIC.lock().as_mut().and_then(Gic::acknowledge) else { return };
        let irq = ack.irq();
        let handler = HANDLERS.lock().iter().flatten().find(|(n, _)| *n == irq).map(|(_, h)| *h);
        match handler {
            Some(h) => h(ctx, irq),
            None => log::warn!("spurious interrupt {irq} on CPU {} (no handler)", cpu_id()),
        }
        if let Some(gic) = GIC.lock().as_mut() {
            gic.end_of_interrupt(ack);
        }
    }
}
