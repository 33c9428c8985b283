//! PSCI (Arm DEN 0022): system off and reset, and CPU_ON for secondary CPUs, through the conduit
//! the FDT's `/psci` `method` names.

/// How PSCI calls reach the firmware or hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    /// `hvc #0` (QEMU without EL2 emulation).
    Hvc,
    /// `smc #0` (QEMU with `virtualization=on`, or with EL3 firmware).
    Smc,
}

impl Conduit {
    /// Parses the FDT `method` property.
    pub fn from_method(method: &str) -> Option<Self> {
        match method {
            "hvc" => Some(Conduit::Hvc),
            "smc" => Some(Conduit::Smc),
            _ => None,
        }
    }
}

/// Powers the machine off. Returns only if PSCI refused.
pub fn system_off(conduit: Conduit) -> smccc::psci::Error {
    let result = match conduit {
        Conduit::Hvc => smccc::psci::system_off::<smccc::Hvc>(),
        Conduit::Smc => smccc::psci::system_off::<smccc::Smc>(),
    };
    match result {
        Ok(()) => smccc::psci::Error::NotSupported,
        Err(e) => e,
    }
}

/// Resets the machine. Returns only if PSCI refused.
pub fn system_reset(conduit: Conduit) -> smccc::psci::Error {
    let result = match conduit {
        Conduit::Hvc => smccc::psci::system_reset::<smccc::Hvc>(),
        Conduit::Smc => smccc::psci::system_reset::<smccc::Smc>(),
    };
    match result {
        Ok(()) => smccc::psci::Error::NotSupported,
        Err(e) => e,
    }
}

/// Starts the CPU whose MPIDR affinity is `target_mpidr` at physical address `entry`, with
/// `context_id` in its x0 (PSCI CPU_ON, DEN 0022 §5.6). Returns when the firmware has accepted
/// the request; the CPU comes up asynchronously.
pub fn cpu_on(conduit: Conduit, target_mpidr: u64, entry: u64, context_id: u64) -> Result<(), smccc::psci::Error> {
    match conduit {
        Conduit::Hvc => smccc::psci::cpu_on::<smccc::Hvc>(target_mpidr, entry, context_id),
        Conduit::Smc => smccc::psci::cpu_on::<smccc::Smc>(target_mpidr, entry, context_id),
    }
}
