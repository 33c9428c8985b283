//! Stopping the machine: semihosting `SYS_EXIT` (QEMU passes the code through as its exit status)
//! and PSCI `SYSTEM_OFF` as the fallback when semihosting is not enabled.

use core::sync::atomic::{AtomicU8, Ordering};

use drivers::power::psci::{self, Conduit};

/// How the kernel finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything worked: exit status 0.
    Success,
    /// Something failed: exit status 1.
    Failure,
}

static PSCI_CONDUIT: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 hvc, 2 smc

/// Records the PSCI conduit from the device tree.
pub fn set_psci_conduit(conduit: Conduit) {
    PSCI_CONDUIT.store(if conduit == Conduit::Hvc { 1 } else { 2 }, Ordering::Relaxed);
}

/// Stops the machine with `status`.
pub fn exit(status: ExitStatus) -> ! {
    let code = match status {
        ExitStatus::Success => 0,
        ExitStatus::Failure => 1,
    };
    // Returns only if the debugger/emulator does not implement semihosting... in which case the
    // HLT traps as an undefined instruction; QEMU always implements it when enabled, which
    // qemu-run.sh does. PSCI below is for a QEMU started by hand without semihosting.
    semihosting::process::exit(code)
}

/// Powers off through PSCI (exit status 0 on QEMU whatever happened); halts if PSCI fails.
pub fn power_off() -> ! {
    let conduit = match PSCI_CONDUIT.load(Ordering::Relaxed) {
        1 => Some(Conduit::Hvc),
        2 => Some(Conduit::Smc),
        _ => None,
    };
    if let Some(c) = conduit {
        let err = psci::system_off(c);
        log::error!("PSCI SYSTEM_OFF failed: {err:?}");
    }
    loop {
        aarch64_cpu::asm::wfe();
    }
}

/// The failure exit used by exception reports and panics.
pub fn halt_failure() -> ! {
    exit(ExitStatus::Failure)
}
