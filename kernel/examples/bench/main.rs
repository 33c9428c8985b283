//! The benchmark kernel: `scripts/bench.sh` boots it once per configuration and round.
//!
//! `demo=bench-<kind>[,<option>...]` on the command line picks what one boot measures:
//! - `bench-io`: bounce cost on disk 0 (sequential and random reads and writes, 4 KiB and
//!   64 KiB, queue depth 1 and 16, direct and bounced buffers alternated in the same boot);
//! - `bench-clean`: what clean bounce slots save: bounced reads on disk 0 with
//!   `swiotlb_clean_slots` on (the loop scrubs while idle) and off, alternated in the same boot;
//! - `bench-features`: what INDIRECT_DESC and RING_EVENT_IDX buy (random I/O at queue depths
//!   1 to 64, interrupts and kicks per request), under the boot's `blk_indirect=` and
//!   `blk_event_idx=`;
//! - `bench-map`: mapping cost (map+unmap, `is_swiotlb_buffer`, with 1..512 live mappings);
//! - `bench-scaling`: map+unmap and `is_swiotlb_buffer` as the pool list grows to 1, 8 and 64
//!   pools (under `dynamic`), or at the pools the booted policy has;
//! - `bench-policy`: the scripted workload under `swiotlb_policy=` (the design table);
//! - `bench-pools`: disk 0 with and without its in-flight hint while disks 1 and 2 compete;
//! - `bench-smp-map`: map+unmap from every CPU's timer interrupt (booted with `--smp N` and one
//!   SWIOTLB area or one per CPU);
//! - `bench-smp-io`: disks 0 and 2 reading at once, their interrupts where `irq_affinity=` says.
//!
//! Options: `ms=<N>` time per I/O cell (default 300), `slices=<N>` each `bench-io` cell's time
//! split into N slices, direct and bounced alternated ABBA (direct first in the even slices,
//! bounced first in the odd ones; default 1: one after the other), `qd1` only queue depth 1,
//! `rounds=<N>` hint on/off pairs in `bench-pools` (default 2), `cycles=<N>` burst/idle cycles
//! under memory pressure in `bench-policy`, after its cycle 0 without pressure (default 3),
//! `throttle=<B/s>` the limit `scripts/bench.sh` put on disk 0 (QEMU `throttling.bps-total`),
//! recorded in the results of `bench-io`, `warmup=<N>` milliseconds each `bench-io` cell first runs
//! unmeasured (default 0), `untimed` no timing of `bench-io`'s bounce copies (for `-icount` runs,
//! where the timer reads would count as the bounce's instructions).
//!
//! The results go to `bench.json` in QEMU's working directory through semihosting
//! (`SYS_OPEN`/`SYS_WRITE`), with the command line, the timer frequency and what ran; the
//! console shows the same JSON's size and the kernel exits 0, or 1 with the reason.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod io;
#[cfg(target_os = "none")]
mod json;
#[cfg(target_os = "none")]
mod mapping;
#[cfg(target_os = "none")]
mod measure;
#[cfg(target_os = "none")]
mod policy;
#[cfg(target_os = "none")]
mod smp;

/// What the command line asked this boot to measure.
#[cfg(target_os = "none")]
pub struct Options {
    kind: alloc::string::String,
    /// Milliseconds per I/O cell.
    pub cell_ms: u64,
    /// Slices of each `bench-io` cell, the placements alternated ABBA (1: one after the other).
    pub slices: u32,
    /// Only queue depth 1 (for `-icount` runs, where deep queues add little).
    pub qd1_only: bool,
    /// `bench-io` times each bounce copy where it runs (off with `untimed`, for `-icount` runs).
    pub time_copies: bool,
    /// Hint off/on pairs in the pools benchmark.
    pub pool_rounds: usize,
    /// Burst/idle cycles under memory pressure in the policy benchmark, after cycle 0.
    pub cycles: usize,
    /// The bandwidth limit the host put on disk 0 (QEMU `throttling.bps-total`, bytes/s; 0:
    /// none), recorded in the results: the guest cannot see it.
    pub throttle_bps: u64,
    /// Milliseconds each `bench-io` cell first runs unmeasured: a throttled disk's burst
    /// allowance (QEMU lets 1/10 s of the limit through at full speed) is spent before the
    /// measurement in both placements alike, not only after a slower cell left it unused.
    pub warmup_ms: u64,
}

#[cfg(target_os = "none")]
mod image {
    use alloc::format;
    use alloc::string::{String, ToString};
    use core::time::Duration;

    use kernel::kprintln;
    use kernel::platform::dma::{dma, dma_device_from_dt};
    use kernel::platform::exit::ExitStatus;
    use kernel::platform::{time, Kernel};

    use super::json::Obj;
    use super::Options;

    kernel::entry!(bench_main);

    /// Where the results go, relative to QEMU's working directory.
    const OUT: &core::ffi::CStr = c"bench.json";

    fn options(k: &Kernel) -> Result<Options, String> {
        let spec = k.params.demo.as_deref().unwrap_or("");
        let mut words = spec.split(',');
        let kind = words.next().and_then(|w| w.strip_prefix("bench-")).ok_or_else(|| {
            format!("demo={spec}: expected demo=bench-<io|clean|features|map|scaling|policy|pools|smp-map|smp-io>[,options]")
        })?;
        let mut o = Options {
            kind: kind.to_string(),
            cell_ms: 300,
            slices: 1,
            qd1_only: false,
            time_copies: true,
            pool_rounds: 2,
            cycles: 3,
            throttle_bps: 0,
            warmup_ms: 0,
        };
        for w in words {
            match w.split_once('=') {
                Some(("ms", v)) => o.cell_ms = v.parse().map_err(|_| format!("ms={v}: not a number"))?,
                Some(("slices", v)) => {
                    o.slices = v
                        .parse()
                        .ok()
                        .filter(|&n| (1..=64).contains(&n))
                        .ok_or_else(|| format!("slices={v}: not a number of slices (1..=64)"))?
                }
                Some(("rounds", v)) => o.pool_rounds = v.parse().map_err(|_| format!("rounds={v}: not a number"))?,
                Some(("warmup", v)) => o.warmup_ms = v.parse().map_err(|_| format!("warmup={v}: not a number of ms"))?,
                Some(("throttle", v)) => o.throttle_bps = v.parse().map_err(|_| format!("throttle={v}: not a number of bytes/s"))?,
                Some(("cycles", v)) => {
                    o.cycles = v.parse().ok().filter(|&n| n <= 16).ok_or_else(|| format!("cycles={v}: not a number of cycles (0..=16)"))?
                }
                None if w == "qd1" => o.qd1_only = true,
                None if w == "untimed" => o.time_copies = false,
                _ => return Err(format!("demo=...,{w}: unknown benchmark option")),
            }
        }
        Ok(o)
    }

    /// The DMA-limited device the CPU-only benchmarks map for (disk 0's transport, whose DMA
    /// window is the board's; no disk needs to be attached).
    fn limited_device(k: &'static Kernel) -> Result<&'static kernel::dma::device::DmaDevice, String> {
        let node = k.dt.find_path("/virtio_mmio@a003e00").map_err(|e| format!("{e}"))?.ok_or("no /virtio_mmio@a003e00")?;
        let force = k.params.swiotlb.force == Some(true);
        let dev = dma_device_from_dt(&k.dt, &k.memblock, &node, force).map_err(|e| format!("{e}"))?;
        Ok(&*alloc::boxed::Box::leak(alloc::boxed::Box::new(dev)))
    }

    fn run(k: &'static Kernel, o: &Options) -> Result<String, String> {
        let mut out = Obj::new();
        out.str("kind", &o.kind)
            .str("bootargs", k.bootargs)
            .int("timer_hz", drivers::timer::arch_timer::frequency())
            .str("policy", &format!("{:?}", k.params.swiotlb_policy).to_lowercase())
            .int("cell_ms", o.cell_ms);
        // The periodic tick wakes the I/O loop's WFI should a completion ever be missed.
        time::start_tick(Duration::from_millis(10));
        let result = match o.kind.as_str() {
            "io" => super::io::bounce_cost(k, o, &mut out),
            "clean" => super::io::clean_slots(o, &mut out),
            "features" => super::io::virtio_features(k, o, &mut out),
            "map" => limited_device(k).and_then(|d| super::mapping::mapping_cost(d, &mut out)),
            "scaling" => limited_device(k).and_then(|d| super::mapping::pool_scaling(d, &mut out)),
            "policy" => {
                time::stop_tick(); // the workload drives the tick itself
                limited_device(k).and_then(|d| super::policy::design_table(k, d, o.cycles, &mut out))
            }
            "pools" => super::io::device_pools(k, o, &mut out),
            "smp-map" => limited_device(k).and_then(|d| super::smp::irq_map(d, o, &mut out)),
            "smp-io" => super::smp::two_disks(k, o, &mut out),
            other => Err(format!("bench-{other}: unknown benchmark")),
        };
        time::stop_tick();
        result?;
        out.int("dma_misuse", dma().api.stats.misuse.load(core::sync::atomic::Ordering::Relaxed));
        Ok(out.finish())
    }

    fn bench_main(k: &'static Kernel) -> ExitStatus {
        let o = match options(k) {
            Ok(o) => o,
            Err(e) => {
                log::error!("bench: {e}");
                return ExitStatus::Failure;
            }
        };
        let t0 = time::uptime();
        let json = match run(k, &o) {
            Ok(j) => j,
            Err(e) => {
                log::error!("bench-{}: {e}", o.kind);
                return ExitStatus::Failure;
            }
        };
        match semihosting::fs::write(OUT, json.as_bytes()) {
            Ok(()) => {
                kprintln!(
                    "bench-{}: {} bytes of results written to {} in {:?}",
                    o.kind,
                    json.len(),
                    OUT.to_string_lossy(),
                    time::uptime() - t0
                );
                ExitStatus::Success
            }
            Err(e) => {
                log::error!("bench: writing {}: {e:?}", OUT.to_string_lossy());
                ExitStatus::Failure
            }
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the benchmark kernel runs on aarch64-unknown-none: use scripts/bench.sh");
    std::process::exit(2);
}
