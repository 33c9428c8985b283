//! The Arm Generic Interrupt Controller, v2 (GIC-400) or v3, driven through `arm-gic`.
//!
//! One small interface over both versions: set up (the distributor once, each CPU's interface or
//! redistributor on that CPU), enable a line with its trigger, route an SPI to a CPU, send an SGI,
//! acknowledge, end. The kernel finds the version and the register frames in the device tree.
//!
//! CPUs are named by the kernel's logical index (0 = the boot CPU). Each CPU registers itself
//! with [`Gic::init_cpu`] (on that CPU), which records what the GIC calls it: its CPU interface
//! bit (GICv2, read from the banked ITARGETSR0) or its redistributor and affinity (GICv3).

use core::ptr::NonNull;

use arm_gic::gicv2::{GicV2, SgiTargetListFilter};
use arm_gic::gicv3::{GicCpuInterface, GicV3, SgiTargetGroup};
use arm_gic::{IntId, InterruptGroup, Trigger, UniqueMmioPointer};

/// Bytes of one GICv3 redistributor's frames (RD_base and SGI_base, 64 KiB each).
const GICR_FRAMES_SIZE: usize = 2 * 64 * 1024;

/// Most CPUs one GIC driver instance serves (GICv2's limit; the kernel's `MAX_CPUS`).
pub const MAX_CPUS: usize = 8;

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
    /// GICv3: distributor and the first redistributor region.
    V3 {
        /// GICD base.
        gicd: usize,
        /// GICR base.
        gicr: usize,
        /// GICR region size: how many redistributors there are at most.
        gicr_size: usize,
    },
}

/// Errors from the GIC.
#[derive(Debug)]
pub enum GicError {
    /// The interrupt ID is out of range for this GIC.
    InvalidIrq(IrqNumber),
    /// The redistributor frames could not be found or used.
    Redistributor,
    /// The CPU has not registered with [`Gic::init_cpu`], or is out of range.
    UnknownCpu(usize),
    /// No redistributor has this CPU's affinity (GICv3).
    NoRedistributorFor(u64),
}

impl core::fmt::Display for GicError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GicError::InvalidIrq(n) => write!(f, "GIC: interrupt {n} out of range"),
            GicError::Redistributor => write!(f, "GIC: redistributor not usable"),
            GicError::UnknownCpu(c) => write!(f, "GIC: CPU {c} has no interface set up"),
            GicError::NoRedistributorFor(m) => write!(f, "GIC: no redistributor for MPIDR {m:#x}"),
        }
    }
}

/// GICD_ITARGETSR<n>: one byte per interrupt, the CPU interfaces an SPI is sent to (GICv2 §4.3.12).
/// `arm-gic` does not expose it; without it an SPI on a multi-CPU machine reaches no CPU.
const GICD_ITARGETSR: usize = 0x800;
/// GICD_ISPENDR<n>: one bit per interrupt, writing 1 sets it pending (GICv2 §4.3.7, GICv3
/// §12.9.27; for SPIs the same offset in both). `arm-gic` does not expose it either.
const GICD_ISPENDR: usize = 0x200;

/// An interrupt taken by [`Gic::acknowledge`], to hand back to [`Gic::end_of_interrupt`]. It
/// keeps the whole GICC_IAR value: for a GICv2 SGI that includes the sending CPU, which the
/// EOI write must repeat (GICv2 §4.4.5).
#[derive(Clone, Copy, Debug)]
pub struct Acknowledged {
    raw: IntId,
}

impl Acknowledged {
    /// The interrupt ID.
    pub fn irq(&self) -> IrqNumber {
        u32::from(self.raw) & 0x3ff
    }
}

/// A GIC of either version.
pub struct Gic {
    version: Version,
    /// The distributor frame's base (both versions), for the registers `arm-gic` lacks.
    gicd: usize,
    cpus: [Option<GicCpu>; MAX_CPUS],
}

enum Version {
    /// GICv2, and its distributor's base for the SPI targets.
    V2(GicV2<'static>, usize),
    /// GICv3.
    V3(GicV3<'static>),
}

/// What the GIC calls a CPU.
#[derive(Clone, Copy, Debug)]
struct GicCpu {
    /// GICv2: the CPU interface bit (ITARGETSR, GICD_SGIR target list).
    target_mask: u8,
    /// GICv3: the index of its redistributor frame.
    redistributor: usize,
    /// MPIDR affinity (GICv3 IROUTER, ICC_SGI1R_EL1).
    mpidr: u64,
}

/// Group used for our interrupts: GICv2 without security extensions signals Group 0 as IRQ;
/// GICv3 at non-secure EL1 uses Group 1.
fn group(gic: &Gic) -> InterruptGroup {
    match gic.version {
        Version::V2(..) => InterruptGroup::Group0,
        Version::V3(_) => InterruptGroup::Group1,
    }
}

impl Gic {
    /// # Safety
    ///
    /// `regs` must hold the addresses of this machine's GIC register frames, mapped as device
    /// memory for the kernel's life, and no other driver instance may use them. With GICv3,
    /// the redistributor region must hold at least `cpu_count` frames (one per CPU).
    pub unsafe fn new(regs: GicRegs, cpu_count: usize) -> Result<Self, GicError> {
        let gicd_base = match regs {
            GicRegs::V2 { gicd, .. } | GicRegs::V3 { gicd, .. } => gicd,
        };
        let version = match regs {
            GicRegs::V2 { gicd, gicc } => {
                // SAFETY: the caller promises these are the GICv2 frames, mapped and unaliased.
                let gic = unsafe { GicV2::new(gicd as *mut _, gicc as *mut _) };
                Version::V2(gic, gicd)
            }
            GicRegs::V3 { gicd, gicr, gicr_size } => {
                // Never drive more redistributors than there are, whatever /cpus says (a CPU
                // without one fails its own set-up and is reported).
                // SAFETY: the caller promises `gicr` is the mapped redistributor region of
                // `gicr_size` bytes.
                let cpu_count = cpu_count.min(unsafe { count_redistributors(gicr, gicr_size) }).max(1);
                let gicd = NonNull::new(gicd as *mut _).ok_or(GicError::Redistributor)?;
                let gicr = NonNull::new(gicr as *mut _).ok_or(GicError::Redistributor)?;
                // SAFETY: the caller promises these are the GICv3 frames, mapped and unaliased,
                // with a redistributor frame for each of the `cpu_count` CPUs.
                let gic = unsafe { GicV3::new(UniqueMmioPointer::new(gicd), gicr, cpu_count.clamp(1, MAX_CPUS)) }
                    .map_err(|_| GicError::Redistributor)?;
                Version::V3(gic)
            }
        };
        Ok(Self { version, gicd: gicd_base, cpus: [None; MAX_CPUS] })
    }

    /// Resets the distributor, every redistributor (GICv3) and the calling CPU's interface to a
    /// known state, all lines disabled, and registers the calling CPU as `cpu` (Linux
    /// `gic_init_bases` + `gic_cpu_init` on the boot CPU). Once, on the boot CPU.
    pub fn setup(&mut self, cpu: usize, mpidr: u64) -> Result<(), GicError> {
        match &mut self.version {
            Version::V2(gic, _) => {
                gic.setup();
                gic.enable_all_interrupts(false);
            }
            Version::V3(gic) => {
                let redistributor = redistributor_of(gic, mpidr)?;
                gic.setup(redistributor);
                gic.enable_all_interrupts(false);
                GicCpuInterface::set_priority_mask(0xff);
            }
        }
        self.register_cpu(cpu, mpidr)
    }

    /// Sets up the calling CPU's interface (GICv2: GICC and its banked SGI/PPI registers;
    /// GICv3: its redistributor, woken, and its ICC system registers), SGIs and PPIs disabled,
    /// and registers it as `cpu` (Linux `gic_cpu_init` / `gic_starting_cpu` on a secondary).
    pub fn init_cpu(&mut self, cpu: usize, mpidr: u64) -> Result<(), GicError> {
        match &mut self.version {
            Version::V2(gic, _) => {
                // GICC_CTLR and GICC_PMR are banked per CPU interface, and so are the SGI/PPI
                // registers of the distributor (IGROUPR0, ISENABLER0, IPRIORITYR0-7); `setup`
                // rewrites the distributor's shared group registers with the values they have.
                gic.setup();
                for intid in IntId::private() {
                    let _ = gic.enable_interrupt(intid, false);
                }
            }
            Version::V3(gic) => {
                let redistributor = redistributor_of(gic, mpidr)?;
                gic.init_cpu(redistributor);
                GicCpuInterface::enable_group1(true);
                GicCpuInterface::set_priority_mask(0xff);
            }
        }
        self.register_cpu(cpu, mpidr)
    }

    fn register_cpu(&mut self, cpu: usize, mpidr: u64) -> Result<(), GicError> {
        let slot = self.cpus.get_mut(cpu).ok_or(GicError::UnknownCpu(cpu))?;
        let (target_mask, redistributor) = match &mut self.version {
            Version::V2(_, gicd) => {
                // SAFETY: `gicd` is the distributor frame `new` was given (mapped device memory,
                // ours alone); ITARGETSR0's first byte reads as the calling CPU's own interface
                // bit (GICv2 §4.3.12), a byte read is allowed.
                let mask = unsafe { ((*gicd + GICD_ITARGETSR) as *const u8).read_volatile() };
                (mask, 0)
            }
            Version::V3(gic) => (0, redistributor_of(gic, mpidr)?),
        };
        *slot = Some(GicCpu { target_mask, redistributor, mpidr });
        Ok(())
    }

    fn cpu(&self, cpu: usize) -> Result<GicCpu, GicError> {
        self.cpus.get(cpu).copied().flatten().ok_or(GicError::UnknownCpu(cpu))
    }

    /// Routes SPI `irq` to CPU `cpu` only (GICv2 GICD_ITARGETSR, GICv3 GICD_IROUTER with
    /// IRM = 0; Linux `gic_set_affinity`). A single-CPU GICv2 ignores it (and needs none).
    pub fn set_affinity(&mut self, irq: IrqNumber, cpu: usize) -> Result<(), GicError> {
        let intid = intid(irq)?;
        if intid.is_private() {
            return Err(GicError::InvalidIrq(irq));
        }
        let target = self.cpu(cpu)?;
        match &mut self.version {
            Version::V2(_, gicd) => {
                // SAFETY: `gicd` is the distributor frame (mapped device memory, ours alone);
                // ITARGETSR has one byte per interrupt ID below 1020, which `irq` is, and byte
                // accesses are allowed (GICv2 §4.3.12).
                unsafe { ((*gicd + GICD_ITARGETSR) as *mut u8).add(irq as usize).write_volatile(target.target_mask) };
                Ok(())
            }
            Version::V3(gic) => gic.distributor().set_routing(intid, Some(target.mpidr)).map_err(|_| GicError::InvalidIrq(irq)),
        }
    }

    /// Sends SGI `sgi` (0..16) to CPU `cpu` (Linux `smp_cross_call`).
    pub fn send_sgi(&mut self, sgi: IrqNumber, cpu: usize) -> Result<(), GicError> {
        if sgi >= PPI_BASE {
            return Err(GicError::InvalidIrq(sgi));
        }
        let target = self.cpu(cpu)?;
        match &mut self.version {
            Version::V2(gic, _) => gic.send_sgi(
                IntId::sgi(sgi),
                arm_gic::gicv2::SgiTarget::List {
                    target_list_filter: SgiTargetListFilter::CPUTargetList,
                    target_list: target.target_mask.into(),
                },
            ),
            Version::V3(_) => {
                let aff = |n: u32| (target.mpidr >> n) as u8;
                let list = arm_gic::gicv3::SgiTarget::List {
                    affinity3: aff(32),
                    affinity2: aff(16),
                    affinity1: aff(8),
                    target_list: 1 << (aff(0) & 15),
                };
                GicCpuInterface::send_sgi(IntId::sgi(sgi), list, SgiTargetGroup::CurrentGroup1).map_err(|_| GicError::InvalidIrq(sgi))?;
            }
        }
        Ok(())
    }

    /// Enables line `irq` as level- or edge-triggered, with a middle priority. An SGI or PPI is
    /// enabled on the calling CPU, registered as `cpu` (each CPU enables its own); an SPI is sent
    /// to the calling CPU until [`set_affinity`](Self::set_affinity) says otherwise.
    pub fn enable(&mut self, irq: IrqNumber, edge: bool, cpu: usize) -> Result<(), GicError> {
        let intid = intid(irq)?;
        let trigger = if edge { Trigger::Edge } else { Trigger::Level };
        let grp = group(self);
        let this = self.cpu(cpu)?;
        match &mut self.version {
            Version::V2(gic, gicd) => {
                gic.set_group(intid, grp);
                gic.set_interrupt_priority(intid, 0x80);
                if !intid.is_private() {
                    gic.set_trigger(intid, trigger);
                    // Send the SPI to this CPU (its interface bit, read from ITARGETSR0 when it
                    // registered); on a one-CPU GIC both read as zero and ignore writes.
                    // SAFETY: `gicd` is the distributor frame `new` was given (mapped device
                    // memory, ours alone); ITARGETSR has one byte per interrupt ID below 1020,
                    // which `intid` is, and byte accesses are allowed (GICv2 §4.3.12).
                    unsafe { ((*gicd + GICD_ITARGETSR) as *mut u8).add(irq as usize).write_volatile(this.target_mask) };
                }
                gic.enable_interrupt(intid, true).map_err(|_| GicError::InvalidIrq(irq))
            }
            Version::V3(gic) => {
                let redist = intid.is_private().then_some(this.redistributor);
                gic.set_group(intid, redist, arm_gic::gicv3::Group::Group1NS).map_err(|_| GicError::InvalidIrq(irq))?;
                gic.set_interrupt_priority(intid, redist, 0x80).map_err(|_| GicError::InvalidIrq(irq))?;
                if !intid.is_private() {
                    gic.set_trigger(intid, redist, trigger).map_err(|_| GicError::InvalidIrq(irq))?;
                    gic.distributor().set_routing(intid, Some(this.mpidr)).map_err(|_| GicError::InvalidIrq(irq))?;
                }
                gic.enable_interrupt(intid, redist, true).map_err(|_| GicError::InvalidIrq(irq))
            }
        }
    }

    /// Disables line `irq` (an SGI or PPI on the calling CPU, registered as `cpu`).
    pub fn disable(&mut self, irq: IrqNumber, cpu: usize) -> Result<(), GicError> {
        let intid = intid(irq)?;
        let this = self.cpu(cpu)?;
        match &mut self.version {
            Version::V2(gic, _) => gic.enable_interrupt(intid, false).map_err(|_| GicError::InvalidIrq(irq)),
            Version::V3(gic) => {
                let redist = intid.is_private().then_some(this.redistributor);
                gic.enable_interrupt(intid, redist, false).map_err(|_| GicError::InvalidIrq(irq))
            }
        }
    }

    /// Sets SPI `irq` pending, as if its device had raised it (Linux `irq_set_irqchip_state(..,
    /// IRQCHIP_STATE_PENDING, true)`): tests use it to make a device's line fire with nothing
    /// to do. An edge-triggered SPI is delivered once; a level-triggered one too, since no
    /// device holds the line (GICv2 §4.3.7).
    pub fn set_pending(&mut self, irq: IrqNumber) -> Result<(), GicError> {
        let intid = intid(irq)?;
        if intid.is_private() {
            return Err(GicError::InvalidIrq(irq));
        }
        let (word, bit) = (irq as usize / 32, irq % 32);
        // SAFETY: `gicd` is the distributor frame `new` was given (mapped device memory, ours
        // alone); ISPENDR<n> is a 32-bit register per 32 interrupt IDs below 1020, which `irq`
        // is, and writing 0 bits has no effect, so this touches only `irq`.
        unsafe { ((self.gicd + GICD_ISPENDR) as *mut u32).add(word).write_volatile(1 << bit) };
        Ok(())
    }

    /// Enables line `irq` again after [`disable`](Self::disable), keeping the trigger, priority
    /// and routing [`enable`](Self::enable) set.
    pub fn reenable(&mut self, irq: IrqNumber, cpu: usize) -> Result<(), GicError> {
        let intid = intid(irq)?;
        let this = self.cpu(cpu)?;
        match &mut self.version {
            Version::V2(gic, _) => gic.enable_interrupt(intid, true).map_err(|_| GicError::InvalidIrq(irq)),
            Version::V3(gic) => {
                let redist = intid.is_private().then_some(this.redistributor);
                gic.enable_interrupt(intid, redist, true).map_err(|_| GicError::InvalidIrq(irq))
            }
        }
    }

    /// Acknowledges the highest-priority pending interrupt of the calling CPU, if any.
    pub fn acknowledge(&mut self) -> Option<Acknowledged> {
        let grp = group(self);
        let raw = match &mut self.version {
            Version::V2(gic, _) => gic.get_and_acknowledge_interrupt(grp),
            Version::V3(_) => GicCpuInterface::get_and_acknowledge_interrupt(grp),
        }?;
        Some(Acknowledged { raw })
    }

    /// Signals the end of handling an acknowledged interrupt (priority drop and deactivation).
    pub fn end_of_interrupt(&mut self, ack: Acknowledged) {
        let grp = group(self);
        match &mut self.version {
            Version::V2(gic, _) => gic.end_interrupt(ack.raw, grp),
            Version::V3(_) => GicCpuInterface::end_interrupt(ack.raw, grp),
        }
    }

    /// The GIC version (2 or 3).
    pub fn version(&self) -> u32 {
        match self.version {
            Version::V2(..) => 2,
            Version::V3(_) => 3,
        }
    }
}

/// How many redistributors the region at `gicr` holds: walk their GICR_TYPER until the one with
/// Last set (GICv3 §12.11.35; a GICv4 redistributor has two more frames, GICR_TYPER.VLPIS).
///
/// # Safety
///
/// `gicr` must be the start of a redistributor region of `size` bytes, mapped as device memory.
unsafe fn count_redistributors(gicr: usize, size: usize) -> usize {
    const GICR_TYPER: usize = 0x8;
    const LAST: u64 = 1 << 4;
    const VLPIS: u64 = 1 << 1;
    let mut frame = 0;
    let mut count = 0;
    while frame + GICR_FRAMES_SIZE <= size && count < MAX_CPUS {
        // SAFETY: the frame lies inside the region (checked above), which the caller promises is
        // mapped; GICR_TYPER is a read-only 64-bit register at offset 8 of RD_base.
        let typer = unsafe { ((gicr + frame + GICR_TYPER) as *const u64).read_volatile() };
        count += 1;
        if typer & LAST != 0 {
            break;
        }
        frame += if typer & VLPIS != 0 { 2 * GICR_FRAMES_SIZE } else { GICR_FRAMES_SIZE };
    }
    count
}

/// The index of the redistributor frame whose GICR_TYPER affinity is `mpidr` (GICv3 §9.11.35).
fn redistributor_of(gic: &mut GicV3<'static>, mpidr: u64) -> Result<usize, GicError> {
    (0..MAX_CPUS).find(|&r| gic.gicr_typer(r).is_ok_and(|t| t.core_mpidr() == mpidr)).ok_or(GicError::NoRedistributorFor(mpidr))
}

fn intid(irq: IrqNumber) -> Result<IntId, GicError> {
    match irq {
        0..16 => Ok(IntId::sgi(irq)),
        16..32 => Ok(IntId::ppi(irq - PPI_BASE)),
        32..1020 => Ok(IntId::spi(irq - SPI_BASE)),
        _ => Err(GicError::InvalidIrq(irq)),
    }
}
