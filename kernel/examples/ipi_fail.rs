//! A kernel whose boot CPU fails to register one IPI (`IPI_CALL_FUNC`, by fault injection): the
//! secondaries must still come up, enabling only the IPIs that were registered, and the other
//! IPI must still work. The boot check in scripts/boot-checks.sh expects every CPU online and
//! queued work run on a secondary, woken by the reschedule IPI.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod image {
    use core::sync::atomic::{AtomicUsize, Ordering};
    use core::time::Duration;

    use kernel::platform::exit::ExitStatus;
    use kernel::platform::smp::{self, cpu_id, FAIL_IPI_REGISTRATION, IPI_CALL_FUNC};
    use kernel::platform::{time, Kernel};
    use kernel::work::SYSTEM_WQ;

    /// The Rust entry point, called by `_start` (boot/src/asm/entry.S) with the loader's x0: as
    /// `kernel::entry!`, with the fault injected first.
    #[no_mangle]
    pub(crate) extern "C" fn kernel_main(x0: usize) -> ! {
        FAIL_IPI_REGISTRATION.store(1 << IPI_CALL_FUNC, Ordering::Relaxed);
        kernel::platform::kernel_start(x0, main)
    }

    static RAN_ON: AtomicUsize = AtomicUsize::new(usize::MAX);

    fn main(_k: &'static Kernel) -> ExitStatus {
        log::info!("ipi_fail: {} of {} CPUs online", smp::num_online_cpus(), smp::nr_listed_cpus());
        if smp::num_online_cpus() != smp::nr_listed_cpus() {
            return ExitStatus::Failure;
        }
        let Ok(id) = SYSTEM_WQ.register("ipi_fail", || RAN_ON.store(cpu_id(), Ordering::SeqCst)) else { return ExitStatus::Failure };
        // Wait until the secondaries sleep (no tick runs there), then queue work and spin
        // without running it: only a secondary woken by IPI_RESCHEDULE can.
        let others = smp::online_cpus().filter(|&c| c != cpu_id()).fold(0u32, |m, c| m | 1 << c);
        let deadline = time::uptime() + Duration::from_secs(10);
        while smp::cpu_idle_mask() & others != others && time::uptime() < deadline {
            core::hint::spin_loop();
        }
        SYSTEM_WQ.schedule(id);
        while RAN_ON.load(Ordering::SeqCst) == usize::MAX && time::uptime() < deadline {
            core::hint::spin_loop();
        }
        match RAN_ON.load(Ordering::SeqCst) {
            usize::MAX => {
                log::error!("ipi_fail: queued work never ran on a secondary");
                ExitStatus::Failure
            }
            cpu => {
                log::info!("ipi_fail: work ran on CPU{cpu}, woken by the reschedule IPI");
                ExitStatus::Success
            }
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
