//! The Arm Generic Interrupt Controller, v2 (GIC-400) or v3, driven through `arm-gic`.
//!
//! One small interface over both versions: set up, enable a line with its trigger, acknowledge,
//! end. The kernel finds the version and the register frames in the device tree.

use core::ptr::NonNull;

use arm_gic::gicv2::GicV2;
use arm_gic::gicv3::{GicCpuInterface, GicV3};
use arm_gic::{IntId, InterruptGroup, Trigger, UniqueMmioPointer};

/// An interrupt ID: 16..32 are PPIs (per CPU), 32.. are SPIs.
pub type IrqNumber = u32;

/// The first SPI's interrupt ID.
pub const SPI_BASE: IrqNumber = 32;
/// The first PPI's interrupt ID.
pub const PPI_BASE: IrqNumber = 16;

/// Where the GIC's registers are, from the device tree.
#[derive(Clone, Copy, Debug)]
pub enum GicRegs {
    /// GICv2: distributor and CPU interface.
    V2 {
        /// GICD base.
        gicd: usize,
        /// GICC base.
        gicc: usize,
    },
    /// GICv3: distributor and the first redistributor.
    V3 {
        /// GICD base.
        gicd: usize,
        /// GICR base.
        gicr: usize,
    },
}

/// Errors from the GIC.
#[derive(Debug)]
pub enum GicError {
    /// The interrupt ID is out of range for this GIC.
    InvalidIrq(IrqNumber),
    /// The redistributor frames could not be found or used.
    Redistributor,
}

impl core::fmt::Display for GicError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GicError::InvalidIrq(n) => write!(f, "GIC: interrupt {n} out of range"),
            GicError::Redistributor => write!(f, "GIC: redistributor not usable"),
        }
    }
}

/// GICD_ITARGETSR<n>: one byte per interrupt, the CPU interfaces an SPI is sent to (GICv2 §4.3.12).
/// `arm-gic` does not expose it; without it an SPI on a multi-CPU machine reaches no CPU.
const GICD_ITARGETSR: usize = 0x800;

/// A GIC of either version.
pub enum Gic {
    /// GICv2, and its distributor's base for the SPI targets.
    V2(GicV2<'static>, usize),
    /// GICv3.
    V3(GicV3<'static>),
}

/// Group used for our interrupts: GICv2 without security extensions signals Group 0 as IRQ;
/// GICv3 at non-secure EL1 uses Group 1.
fn group(gic: &Gic) -> InterruptGroup {
    match gic {
        Gic::V2(..) => InterruptGroup::Group0,
        Gic::V3(_) => InterruptGroup::Group1,
    }
}

impl Gic {
    /// # Safety
    ///
    /// `regs` must hold the addresses of this machine's GIC register frames, mapped as device
    /// memory for the kernel's life, and no other driver instance may use them.
    pub unsafe fn new(regs: GicRegs) -> Result<Self, GicError> {
        match regs {
            GicRegs::V2 { gicd, gicc } => {
                // SAFETY: the caller promises these are the GICv2 frames, mapped and unaliased.
                let gic = unsafe { GicV2::new(gicd as *mut _, gicc as *mut _) };
                Ok(Gic::V2(gic, gicd))
            }
            GicRegs::V3 { gicd, gicr } => {
                let gicd = NonNull::new(gicd as *mut _).ok_or(GicError::Redistributor)?;
                let gicr = NonNull::new(gicr as *mut _).ok_or(GicError::Redistributor)?;
                // SAFETY: the caller promises these are the GICv3 frames, mapped and unaliased;
                // we drive one CPU (the boot CPU).
                let gic = unsafe { GicV3::new(UniqueMmioPointer::new(gicd), gicr, 1) }
                    .map_err(|_| GicError::Redistributor)?;
                Ok(Gic::V3(gic))
            }
        }
    }

    /// Resets the distributor and this CPU's interface to a known state, all lines disabled.
    pub fn setup(&mut self) {
        match self {
            Gic::V2(gic, _) => {
                gic.setup();
                gic.enable_all_interrupts(false);
            }
            Gic::V3(gic) => {
                gic.setup(0);
                gic.enable_all_interrupts(false);
                GicCpuInterface::set_priority_mask(0xff);
            }
        }
    }

    /// Enables line `irq` as level- or edge-triggered, with a middle priority.
    pub fn enable(&mut self, irq: IrqNumber, edge: bool) -> Result<(), GicError> {
        let intid = intid(irq)?;
        let trigger = if edge { Trigger::Edge } else { Trigger::Level };
        let grp = group(self);
        match self {
            Gic::V2(gic, gicd) => {
                gic.set_group(intid, grp);
                gic.set_interrupt_priority(intid, 0x80);
                if !intid.is_private() {
                    gic.set_trigger(intid, trigger);
                    // Send the SPI to this CPU: ITARGETSR0 (SGI 0's byte) reads as this CPU's
                    // own interface mask; on a one-CPU GIC both read as zero and ignore writes.
                    // SAFETY: `gicd` is the distributor frame `new` was given (mapped device
                    // memory, ours alone); ITARGETSR has one byte per interrupt ID below 1020,
                    // which `intid` is, and byte accesses are allowed (GICv2 §4.3.12).
                    unsafe {
                        let targets = (*gicd + GICD_ITARGETSR) as *mut u8;
                        let this_cpu = targets.read_volatile();
                        targets.add(irq as usize).write_volatile(this_cpu);
                    }
                }
                gic.enable_interrupt(intid, true).map_err(|_| GicError::InvalidIrq(irq))
            }
            Gic::V3(gic) => {
                let cpu = intid.is_private().then_some(0);
                gic.set_group(intid, cpu, arm_gic::gicv3::Group::Group1NS).map_err(|_| GicError::InvalidIrq(irq))?;
                gic.set_interrupt_priority(intid, cpu, 0x80).map_err(|_| GicError::InvalidIrq(irq))?;
                if !intid.is_private() {
                    gic.set_trigger(intid, cpu, trigger).map_err(|_| GicError::InvalidIrq(irq))?;
                }
                gic.enable_interrupt(intid, cpu, true).map_err(|_| GicError::InvalidIrq(irq))
            }
        }
    }

    /// Disables line `irq`.
    pub fn disable(&mut self, irq: IrqNumber) -> Result<(), GicError> {
        let intid = intid(irq)?;
        match self {
            Gic::V2(gic, _) => gic.enable_interrupt(intid, false).map_err(|_| GicError::InvalidIrq(irq)),
            Gic::V3(gic) => {
                let cpu = intid.is_private().then_some(0);
                gic.enable_interrupt(intid, cpu, false).map_err(|_| GicError::InvalidIrq(irq))
            }
        }
    }

    /// Acknowledges the highest-priority pending interrupt, if any.
    pub fn acknowledge(&mut self) -> Option<IrqNumber> {
        let grp = group(self);
        let id = match self {
            Gic::V2(gic, _) => gic.get_and_acknowledge_interrupt(grp),
            Gic::V3(_) => GicCpuInterface::get_and_acknowledge_interrupt(grp),
        }?;
        Some(u32::from(id) & 0x3ff)
    }

    /// Signals the end of handling `irq` (priority drop and deactivation).
    pub fn end_of_interrupt(&mut self, irq: IrqNumber) {
        let grp = group(self);
        let Ok(intid) = intid(irq) else { return };
        match self {
            Gic::V2(gic, _) => gic.end_interrupt(intid, grp),
            Gic::V3(_) => GicCpuInterface::end_interrupt(intid, grp),
        }
    }

    /// The GIC version (2 or 3).
    pub fn version(&self) -> u32 {
        match self {
            Gic::V2(..) => 2,
            Gic::V3(_) => 3,
        }
    }
}

fn intid(irq: IrqNumber) -> Result<IntId, GicError> {
    match irq {
        0..16 => Ok(IntId::sgi(irq)),
        16..32 => Ok(IntId::ppi(irq - PPI_BASE)),
        32..1020 => Ok(IntId::spi(irq - SPI_BASE)),
        _ => Err(GicError::InvalidIrq(irq)),
    }
}
