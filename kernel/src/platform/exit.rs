//! Stopping the machine: semihosting `SYS_EXIT` (QEMU passes the code through as its exit status)
//! when the machine has semihosting, and otherwise the exit status printed on the UART and PSCI
//! `SYSTEM_OFF` (a QEMU started without `-semihosting`, or a VMM that has none: KVM guests,
//! crosvm, kvmtool). Whether it has semihosting is probed once at boot
//! ([`probe_semihosting`]): the probe's `HLT #0xF000` is an undefined instruction without it,
//! which [`boot::exception::catch_fault`] catches and skips.

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

const SEMIHOSTING_UNKNOWN: u8 = 0;
const SEMIHOSTING_YES: u8 = 1;
const SEMIHOSTING_NO: u8 = 2;
static SEMIHOSTING: AtomicU8 = AtomicU8::new(SEMIHOSTING_UNKNOWN);

/// Finds out whether the machine implements Arm semihosting, with a harmless call (`SYS_ERRNO`,
/// which only reads the host's errno). Call once the exception vectors and hooks are installed.
/// Before it runs the kernel assumes semihosting (its early failures exit through it).
pub fn probe_semihosting() -> bool {
    const SYS_ERRNO: u64 = 0x13;
    let fault = boot::exception::catch_fault(|| {
        // SAFETY: a semihosting call that reads no guest memory (its parameter is unused) and
        // writes only x0; without semihosting, the HLT is an undefined instruction whose
        // exception `catch_fault` records and skips, leaving x0 as it was.
        unsafe { core::arch::asm!("hlt #0xf000", inout("x0") SYS_ERRNO => _, in("x1") 0u64, options(nostack)) };
    });
    let present = fault.is_none();
    SEMIHOSTING.store(if present { SEMIHOSTING_YES } else { SEMIHOSTING_NO }, Ordering::Relaxed);
    present
}

/// Whether semihosting may be used (true until [`probe_semihosting`] has said otherwise).
pub fn semihosting() -> bool {
    SEMIHOSTING.load(Ordering::Relaxed) != SEMIHOSTING_NO
}

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
    if semihosting() {
        semihosting::process::exit(code)
    }
    // No semihosting: the status goes on the UART (`qemu-run.sh --no-semihosting` reads it back
    // as its own exit status), then the machine powers off.
    super::console::emergency_write(if code == 0 {
        "\nexit status 0 (no semihosting: powering off through PSCI SYSTEM_OFF)\n"
    } else {
        "\nexit status 1 (no semihosting: powering off through PSCI SYSTEM_OFF)\n"
    });
    power_off()
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
