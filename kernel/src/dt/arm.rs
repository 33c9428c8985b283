//! Arm platform bindings the boot code needs: the GIC, the architected timer and PSCI.

use super::cells::{self, Node};
use super::walk::walk;
use super::{DeviceTree, DtError, MAX_DEPTH};
use crate::mm::PhysRange;

/// `compatible` strings of a GICv2 (Linux `arm,gic.yaml`).
pub(super) const GICV2_COMPATIBLE: &[&str] = &["arm,gic-400", "arm,cortex-a15-gic"];
/// `compatible` of a GICv3 (Linux `arm,gic-v3.yaml`).
pub(super) const GICV3_COMPATIBLE: &str = "arm,gic-v3";
/// `compatible` strings of the architected timer (Linux `arm,arch_timer.yaml`).
pub(super) const TIMER_COMPATIBLE: &[&str] = &["arm,armv8-timer", "arm,armv7-timer"];
/// `compatible` strings of PSCI (Linux `arm/psci.yaml`).
pub(super) const PSCI_COMPATIBLE: &[&str] = &["arm,psci-1.0", "arm,psci-0.2", "arm,psci"];

/// The first cell of a GIC interrupt specifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GicInterruptKind {
    /// Shared peripheral interrupt (cell value 0): INTID = number + 32.
    Spi,
    /// Private peripheral interrupt (cell value 1): INTID = number + 16.
    Ppi,
}

/// One interrupt in the GIC binding's 3-cell form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GicInterrupt {
    /// SPI or PPI.
    pub kind: GicInterruptKind,
    /// The number within its kind (not the INTID).
    pub number: u32,
    /// The third cell: trigger type in bits [3:0], PPI CPU mask in bits [15:8].
    pub flags: u32,
}

impl GicInterrupt {
    /// The GIC interrupt ID (INTID) as the distributor numbers it.
    pub fn intid(&self) -> u32 {
        match self.kind {
            GicInterruptKind::Spi => self.number + 32,
            GicInterruptKind::Ppi => self.number + 16,
        }
    }

    /// Level-triggered (high or low), from the trigger bits of `flags`.
    pub fn is_level(&self) -> bool {
        self.flags & 0xc != 0
    }
}

/// Decodes raw `interrupts` with the GIC binding, validating every entry up front.
pub(super) fn gic_interrupts<'a>(
    node: &'a str,
    raw: &'a [u8],
    parent_cells: Option<u32>,
) -> Result<impl Iterator<Item = GicInterrupt> + 'a, DtError<'a>> {
    if !raw.is_empty() && parent_cells != Some(3) {
        return Err(DtError::BadInterrupt { node, reason: "interrupt parent does not use 3 cells" });
    }
    if !raw.len().is_multiple_of(12) {
        return Err(DtError::BadPropertyLength { node, property: "interrupts", len: raw.len() });
    }
    let decode = |e: &[u8]| {
        let mut c = cells::u32_cells(e);
        let (kind, number, flags) = (c.next()?, c.next()?, c.next()?);
        let kind = match kind {
            0 if number < 988 => GicInterruptKind::Spi,
            1 if number < 16 => GicInterruptKind::Ppi,
            _ => return None,
        };
        Some(GicInterrupt { kind, number, flags })
    };
    if raw.chunks_exact(12).any(|e| decode(e).is_none()) {
        return Err(DtError::BadInterrupt { node, reason: "type is not SPI (0) or PPI (1), or number out of range" });
    }
    Ok(raw.chunks_exact(12).filter_map(decode))
}

/// `#interrupt-cells` of the interrupt parent of `chain.last()`, found like Linux
/// `of_irq_find_parent()`: follow `interrupt-parent`, else the tree parent, until a node with
/// `#interrupt-cells`. `None` if the search runs out.
pub(super) fn interrupt_parent_cells<'a>(dt: &DeviceTree<'a>, chain: &[Node<'_, 'a>]) -> Result<Option<u32>, DtError<'a>> {
    let mut index = chain.len().checked_sub(1);
    let Some(mut current) = index.map(|i| chain[i]) else {
        return Ok(None);
    };
    // Bounded: a phandle cycle must not hang the boot.
    for _ in 0..2 * MAX_DEPTH {
        if let Some(phandle) = cells::u32_prop(current, "interrupt-parent")? {
            current =
                dt.node_by_phandle(phandle).ok_or(DtError::UnknownPhandle { node: current.name, property: "interrupt-parent", phandle })?;
            index = None; // off the chain: only `interrupt-parent` can lead further
        } else if let Some(i) = index.filter(|&i| i > 0) {
            index = Some(i - 1);
            current = chain[i - 1];
        } else {
            return Ok(None);
        }
        if let Some(n) = cells::u32_prop(current, "#interrupt-cells")? {
            return Ok(Some(n));
        }
    }
    Ok(None)
}

/// The interrupt controller's register frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gic {
    /// GICv2: distributor (GICD) and CPU interface (GICC).
    V2 {
        /// GICD.
        distributor: PhysRange,
        /// GICC.
        cpu_interface: PhysRange,
    },
    /// GICv3: distributor (GICD) and the first redistributor region (GICR).
    V3 {
        /// GICD.
        distributor: PhysRange,
        /// First GICR region (we do not support `#redistributor-regions` > 1).
        redistributor: PhysRange,
    },
}

/// The architected timer's interrupts, in the binding's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchTimer {
    /// Secure EL1 physical timer.
    pub secure_phys: GicInterrupt,
    /// Non-secure EL1 physical timer.
    pub nonsecure_phys: GicInterrupt,
    /// EL1 virtual timer: the one a guest kernel uses.
    pub virt: GicInterrupt,
    /// EL2 (hypervisor) physical timer.
    pub hyp_phys: GicInterrupt,
}

/// How to call PSCI firmware (`/psci` `method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsciMethod {
    /// `HVC #0`.
    Hvc,
    /// `SMC #0`.
    Smc,
}

/// One CPU of `/cpus` (Linux `arm/cpus.yaml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuNode<'a> {
    /// The node's name (`cpu@1`).
    pub name: &'a str,
    /// `reg`: the CPU's MPIDR affinity fields (Aff3..Aff0 in MPIDR_EL1's layout).
    pub mpidr: u64,
    /// `enable-method` is `psci` (the only method we can start a CPU with).
    pub psci: bool,
}

/// The MPIDR bits `/cpus` `reg` may hold (Aff3 in 39:32, Aff2..Aff0 in 23:0).
const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

impl<'a> DeviceTree<'a> {
    /// The enabled CPUs of `/cpus` in tree order, into `out` (Linux `of_parse_and_init_cpus`).
    /// Returns how many the tree lists (more than `out.len()` if it holds fewer). `/cpus` must
    /// say `#address-cells` (1 or 2); a `reg` with affinity bits outside MPIDR's is an error.
    pub fn cpus(&self, out: &mut [Option<CpuNode<'a>>]) -> Result<usize, DtError<'a>> {
        let mut walk = walk(&self.fdt)?;
        let mut count = 0;
        while let Some(chain) = walk.next_node() {
            let chain = chain?;
            let [.., parent, node] = chain else { continue };
            if chain.len() != 3
                || parent.name != "cpus"
                || cells::str_prop(*node, "device_type")? != Some("cpu")
                || !cells::is_enabled(*node)
            {
                continue;
            }
            let address_cells = cells::u32_prop(*parent, "#address-cells")?.ok_or(DtError::MissingAddressCells { node: parent.name })?;
            cells::check_cells(parent.name, "#address-cells", address_cells)?;
            let reg = cells::prop(*node, "reg").ok_or(DtError::MissingReg { node: node.name })?;
            if reg.len() != 4 * address_cells as usize {
                return Err(DtError::BadPropertyLength { node: node.name, property: "reg", len: reg.len() });
            }
            let mpidr = cells::read_cells(reg, address_cells);
            if mpidr & !MPIDR_AFFINITY_MASK != 0 {
                return Err(DtError::BadValue { node: node.name, property: "reg" });
            }
            let psci = cells::str_prop(*node, "enable-method")? == Some("psci");
            if let Some(slot) = out.get_mut(count) {
                *slot = Some(CpuNode { name: node.name, mpidr, psci });
            }
            count += 1;
        }
        Ok(count)
    }

    /// The first enabled GIC (v2: `arm,gic-400`/`arm,cortex-a15-gic`; v3: `arm,gic-v3`).
    pub fn gic(&self) -> Result<Gic, DtError<'a>> {
        let mut all = [GICV3_COMPATIBLE; 3];
        all[..2].copy_from_slice(GICV2_COMPATIBLE);
        let gic = self.find_compatible(&all)?.ok_or(DtError::NotFound { what: "GIC node" })?;
        let [first, second, ..] = gic.regs() else {
            return Err(DtError::MissingReg { node: gic.name() });
        };
        Ok(if gic.is_compatible(GICV3_COMPATIBLE) {
            Gic::V3 { distributor: *first, redistributor: *second }
        } else {
            Gic::V2 { distributor: *first, cpu_interface: *second }
        })
    }

    /// The architected timer's interrupts (the first 4 of its `interrupts`).
    pub fn arch_timer(&self) -> Result<ArchTimer, DtError<'a>> {
        let timer = self.find_compatible(TIMER_COMPATIBLE)?.ok_or(DtError::NotFound { what: "architected timer node" })?;
        let mut irqs = timer.gic_interrupts()?;
        let mut next = || {
            irqs.next().ok_or(DtError::BadPropertyLength {
                node: timer.name(),
                property: "interrupts",
                len: timer.interrupt_cells().count() * 4,
            })
        };
        Ok(ArchTimer { secure_phys: next()?, nonsecure_phys: next()?, virt: next()?, hyp_phys: next()? })
    }

    /// The PSCI conduit from the PSCI node's `method`.
    pub fn psci_method(&self) -> Result<PsciMethod, DtError<'a>> {
        let node = self.find_compatible_node(PSCI_COMPATIBLE)?.ok_or(DtError::NotFound { what: "PSCI node" })?;
        match cells::str_prop(node, "method")? {
            Some("hvc") => Ok(PsciMethod::Hvc),
            Some("smc") => Ok(PsciMethod::Smc),
            _ => Err(DtError::BadValue { node: node.name, property: "method" }),
        }
    }
}
