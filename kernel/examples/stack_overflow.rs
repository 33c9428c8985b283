//! A kernel whose stack overflows, on the boot CPU or (`cpu=N` in `demo=`, e.g.
//! `demo=overflow,cpu=1` booted with `--smp 2`) on a secondary through
//! `smp_call_function_single`: the boot checks (scripts/boot-checks.sh) expect the overflow
//! report naming the CPU, and a failure exit status, never a hang or a silent corruption.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod image {
    use core::hint::black_box;

    use kernel::platform::exit::ExitStatus;
    use kernel::platform::{smp, Kernel};

    kernel::entry!(main);

    /// Recurses for ever, each frame holding 1 KiB the optimiser cannot remove.
    #[inline(never)]
    #[allow(unconditional_recursion)] // on purpose
    fn recurse(depth: u64) -> u64 {
        let mut buf = [0u8; 1024];
        buf[(depth % 1024) as usize] = depth as u8;
        black_box(&mut buf);
        recurse(black_box(depth + 1)) + u64::from(buf[0])
    }

    fn overflow() {
        log::info!("overflowing the stack of CPU {}", smp::cpu_id());
        let n = recurse(0);
        log::error!("recursion returned {n}: the stack did not overflow");
    }

    fn main(k: &'static Kernel) -> ExitStatus {
        let cpu = k
            .params
            .demo
            .as_deref()
            .and_then(|d| d.split(',').find_map(|w| w.strip_prefix("cpu=")))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if cpu == 0 {
            overflow();
        } else if let Err(e) = smp::smp_call_function_single(cpu, overflow, true) {
            log::error!("CPU {cpu}: {e:?}");
        }
        ExitStatus::Success
    }
}

#[cfg(not(target_os = "none"))]
fn main() {}
