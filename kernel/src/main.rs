//! The demo kernel: `cargo run` boots it under QEMU (through qemu-run.sh).
//!
//! It runs the scripted workload of [`kernel::platform::workload`] and shows after each phase
//! the RAM picture (one character per 2 MiB pageblock) and the SWIOTLB pools:
//! 1. boot: memory map, zones, pools, how much of the SWIOTLB is lent (printed by the platform);
//! 2. memory pressure: movable pages fill RAM, the lent MIGRATE_SWIOTLB blocks included;
//! 3. an I/O burst from interrupt handlers: the pool grows back by reclaiming lent blocks;
//! 4. idle: the pool shrinks and lends its spare blocks again;
//! 5. verification: every bounce buffer and every movable page checked; exit 0 or 1 with why.
//!
//! `swiotlb_policy=static|dynamic|lend` (e.g. `cargo run -- swiotlb_policy=static`) shows the
//! same workload under Linux's two policies. The virtio-blk disks of the full demo are not
//! wired in yet: the burst stands for their I/O, through the same DMA API and interrupt path.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod demo {
    extern crate alloc;

    use kernel::kprintln;
    use kernel::platform::dma::{dma, dma_device_from_dt};
    use kernel::platform::exit::ExitStatus;
    use kernel::platform::mm::{in_swiotlb_region, page_allocator};
    use kernel::platform::{workload, Kernel};

    kernel::entry!(demo_main);

    fn show(k: &Kernel, phase: &str) {
        kprintln!("\n==== demo: after {phase} ====");
        let picture = {
            let pa = page_allocator().lock();
            alloc::format!("{}", pa.ram_picture(|a| in_swiotlb_region(&k.memblock, a)))
        };
        kprintln!("RAM: [{picture}]");
        kprintln!("     (M movable, U unmovable, S lent to the page allocator as MIGRATE_SWIOTLB, b bounce slots, . reserved, | end of ZONE_DMA)");
        kprintln!("{}", dma().manager);
        kprintln!("DMA {}", dma().api.stats);
    }

    fn demo_main(k: &'static Kernel) -> ExitStatus {
        let dev = match k.dt.find_path("/virtio_mmio@a003e00").map_err(|e| alloc::format!("{e}")).and_then(|n| n.ok_or_else(|| "no virtio_mmio@a003e00".into())) {
            Ok(node) => match dma_device_from_dt(&k.dt, &k.memblock, &node, false) {
                Ok(dev) => &*alloc::boxed::Box::leak(alloc::boxed::Box::new(dev)),
                Err(e) => {
                    log::error!("demo: {e}");
                    return ExitStatus::Failure;
                }
            },
            Err(e) => {
                log::error!("demo: {e}");
                return ExitStatus::Failure;
            }
        };
        log::info!("demo: policy {:?}; bouncing for {dev:?}", k.params.swiotlb_policy);
        show(k, "boot");
        let report = match workload::pressure_burst_idle(dev, &mut |phase| show(k, phase)) {
            Ok(r) => r,
            Err(e) => {
                log::error!("demo: {e}");
                return ExitStatus::Failure;
            }
        };
        kprintln!("\n==== demo: verification ====\n{report}");
        if report.mapped == workload::BURST && report.data_ok && report.pressure_intact {
            log::info!("demo: every request served once, every byte intact");
            ExitStatus::Success
        } else {
            log::error!("demo: FAILED: lost requests or corrupt data");
            ExitStatus::Failure
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the kernel runs on aarch64-unknown-none: use `cargo run` (see README.md)");
    std::process::exit(2);
}
