//! Exception syndrome decoding (Arm ARM D17.2.37, ESR_EL1), as data via `aarch64-cpu`'s field
//! definitions, so that a fault report names the exception class and the fault status.

use aarch64_cpu::registers::ESR_EL1;
use tock_registers::LocalRegisterCopy;

/// A saved ESR_EL1 value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Esr(pub u64);

impl Esr {
    /// The exception class field.
    pub fn class(self) -> u64 {
        LocalRegisterCopy::<u64, ESR_EL1::Register>::new(self.0).read(ESR_EL1::EC)
    }

    /// The instruction-specific syndrome.
    pub fn iss(self) -> u64 {
        LocalRegisterCopy::<u64, ESR_EL1::Register>::new(self.0).read(ESR_EL1::ISS)
    }

    /// The exception class by its Arm ARM name.
    pub fn class_name(self) -> &'static str {
        use ESR_EL1::EC::Value as Ec;
        match LocalRegisterCopy::<u64, ESR_EL1::Register>::new(self.0).read_as_enum(ESR_EL1::EC) {
            Some(Ec::Unknown) => "unknown reason",
            Some(Ec::TrappedWFIorWFE) => "trapped WFI/WFE",
            Some(Ec::TrappedFP) | Some(Ec::TrappedFP64) => "trapped FP/SIMD",
            Some(Ec::IllegalExecutionState) => "illegal execution state",
            Some(Ec::SVC64) => "SVC",
            Some(Ec::HVC64) => "HVC",
            Some(Ec::SMC64) => "SMC",
            Some(Ec::TrappedMsrMrs) => "trapped MSR/MRS",
            Some(Ec::InstrAbortLowerEL) => "instruction abort from a lower EL",
            Some(Ec::InstrAbortCurrentEL) => "instruction abort at the current EL",
            Some(Ec::PCAlignmentFault) => "PC alignment fault",
            Some(Ec::DataAbortLowerEL) => "data abort from a lower EL",
            Some(Ec::DataAbortCurrentEL) => "data abort at the current EL",
            Some(Ec::SPAlignmentFault) => "SP alignment fault",
            Some(Ec::SError) => "SError",
            Some(Ec::BreakpointLowerEL) | Some(Ec::BreakpointCurrentEL) => "breakpoint",
            Some(Ec::SoftwareStepLowerEL) | Some(Ec::SoftwareStepCurrentEL) => "software step",
            Some(Ec::WatchpointLowerEL) | Some(Ec::WatchpointCurrentEL) => "watchpoint",
            Some(Ec::Brk64) => "BRK instruction",
            Some(_) => "other trapped instruction",
            None => "reserved exception class",
        }
    }

    /// True for instruction and data aborts, whose ISS holds a fault status code and FAR is valid.
    pub fn is_abort(self) -> bool {
        matches!(self.class(), 0b10_0000 | 0b10_0001 | 0b10_0100 | 0b10_0101)
    }

    /// The data/instruction fault status code (DFSC/IFSC) of an abort, by name.
    pub fn fault_status_name(self) -> &'static str {
        let fsc = self.iss() & 0x3f;
        let level = fsc & 0b11;
        match fsc & !0b11 {
            0b00_0000 => {
                ["address size fault, level 0", "address size fault, level 1", "address size fault, level 2", "address size fault, level 3"]
                    [level as usize]
            }
            0b00_0100 => {
                ["translation fault, level 0", "translation fault, level 1", "translation fault, level 2", "translation fault, level 3"]
                    [level as usize]
            }
            0b00_1000 => {
                ["access flag fault, level 0", "access flag fault, level 1", "access flag fault, level 2", "access flag fault, level 3"]
                    [level as usize]
            }
            0b00_1100 => {
                ["permission fault, level 0", "permission fault, level 1", "permission fault, level 2", "permission fault, level 3"]
                    [level as usize]
            }
            0b01_0000 if fsc == 0b01_0000 => "synchronous external abort",
            0b10_0000 if fsc == 0b10_0001 => "alignment fault",
            _ => "other fault status",
        }
    }

    /// For a data abort: whether the access was a write (ISS.WnR).
    pub fn is_write(self) -> bool {
        self.iss() & (1 << 6) != 0
    }
}

impl core::fmt::Display for Esr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ESR {:#010x}: EC {:#04x} ({})", self.0, self.class(), self.class_name())?;
        if self.is_abort() {
            write!(f, ", {}", self.fault_status_name())?;
            if self.class() & !1 == 0b10_0100 {
                write!(f, ", {}", if self.is_write() { "write" } else { "read" })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
