//! Interrupt dispatch: the GIC found in the device tree, a table of handlers, and the function
//! the exception code calls for every IRQ.
//!
//! Handlers run in interrupt context with IRQs masked (no nesting). They get the `IrqContext`
//! token, must not allocate or wait, and hand anything long to task context.

use boot::exception::IrqContext;
use drivers::irq::gic::{Gic, GicError, GicRegs, IrqNumber};

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
    /// The GIC refused.
    Gic(GicError),
}

impl core::fmt::Display for IrqError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IrqError::NoController => write!(f, "no interrupt controller"),
            IrqError::Busy(n) => write!(f, "interrupt {n} already has a handler"),
            IrqError::TableFull => write!(f, "interrupt handler table full ({MAX_HANDLERS})"),
            IrqError::Gic(e) => write!(f, "{e}"),
        }
    }
}

/// Sets up the GIC.
///
/// # Safety
///
/// `regs` must be this machine's GIC frames, mapped as device memory, used by nothing else.
pub unsafe fn init(regs: GicRegs) -> Result<u32, IrqError> {
    // SAFETY: forwarded from the caller.
    let mut gic = unsafe { Gic::new(regs) }.map_err(IrqError::Gic)?;
    gic.setup();
    let version = gic.version();
    *GIC.lock() = Some(gic);
    Ok(version)
}

/// Installs `handler` for line `irq` and enables the line (Linux: `request_irq`).
pub fn request_irq(irq: IrqNumber, edge: bool, handler: IrqHandler) -> Result<(), IrqError> {
    {
        let mut table = HANDLERS.lock();
        if table.iter().flatten().any(|(n, _)| *n == irq) {
            return Err(IrqError::Busy(irq));
        }
        let slot = table.iter_mut().find(|s| s.is_none()).ok_or(IrqError::TableFull)?;
        *slot = Some((irq, handler));
    }
    let mut gic = GIC.lock();
    let gic = gic.as_mut().ok_or(IrqError::NoController)?;
    gic.enable(irq, edge).map_err(IrqError::Gic)
}

/// Disables line `irq` and removes its handler (Linux: `free_irq`).
pub fn free_irq(irq: IrqNumber) {
    if let Some(gic) = GIC.lock().as_mut() {
        let _ = gic.disable(irq);
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
        let Some(irq) = GIC.lock().as_mut().and_then(Gic::acknowledge) else { return };
        let handler = HANDLERS.lock().iter().flatten().find(|(n, _)| *n == irq).map(|(_, h)| *h);
        match handler {
            Some(h) => h(ctx, irq),
            None => log::warn!("spurious interrupt {irq} (no handler)"),
        }
        if let Some(gic) = GIC.lock().as_mut() {
            gic.end_of_interrupt(irq);
        }
    }
}
