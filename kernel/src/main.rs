//! The demo kernel: `cargo run` boots it under QEMU (through qemu-run.sh).
//!
//! With two virtio-blk disks (qemu-run.sh makes them for `cargo run`) it runs the disk demo of
//! [`kernel::demo::disks`] and shows after each phase the RAM picture (one character
//! per 2 MiB pageblock), the SWIOTLB pools and the counters:
//! 1. boot: memory map, zones, pools, how much of the SWIOTLB is lent (printed by the platform);
//! 2. memory pressure: the page cache and movable pages fill RAM, lent MIGRATE_SWIOTLB blocks
//!    included;
//! 3. an I/O burst from the disks' interrupt handlers: the pool grows back by reclaiming lent
//!    blocks;
//! 4. idle: the pool shrinks and lends its spare blocks again;
//! 5. verification: both disks read back and checked, one `disk<N> bytes=<size> crc32=<hex>` line
//!    each (qemu-run.sh compares it with the image file); exit 0, or 1 with why.
//!
//! Without disks it runs the same phases with [`kernel::demo::workload`], the timer
//! interrupt standing in for the disks. `swiotlb_policy=static|dynamic|lend` (e.g.
//! `cargo run -- swiotlb_policy=static`) shows the demo under Linux's two policies.
//!
//! `demo=read-verify` (e.g. `./qemu-run.sh --disk my.img -- ` ... or `cargo run -- demo=read-verify`
//! with `--disk` given to qemu-run.sh) reads every attached virtio-blk disk through the bouncing
//! path and prints one `disk<N> bytes=<size> crc32=<hex>` line per disk.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod demo {
    extern crate alloc;

    use kernel::demo::workload;
    use kernel::kprintln;
    use kernel::platform::dma::{dma, dma_device_from_dt};
    use kernel::platform::exit::ExitStatus;
    use kernel::platform::mm::{in_swiotlb_region, page_allocator};
    use kernel::platform::Kernel;

    fn show(k: &Kernel, phase: &str) {
        kprintln!("\n==== demo: after {phase} ====");
        let picture = {
            let pa = page_allocator().lock();
            alloc::format!("{}", pa.ram_picture(|a| in_swiotlb_region(&k.memblock, a)))
        };
        kprintln!("RAM: [{picture}]");
        kprintln!("     ({})", kernel::mm::page_alloc::PageAllocator::RAM_PICTURE_LEGEND);
        kprintln!("{}", dma().manager);
        kprintln!("DMA {}", dma().api.stats);
    }

    /// `demo=read-verify`: read every sector of every disk through the bouncing path and print
    /// `disk<N> bytes=<size> crc32=<8 hex digits>` (zlib's CRC-32, for the host to compare).
    fn read_verify() -> ExitStatus {
        use kernel::mm::page_alloc::{MigrateType, ZoneType};
        use kernel::platform::virtio_blk;
        let order = 6; // a 256 KiB buffer, in ZONE_NORMAL: beyond the DMA window, so it bounces
        let buf = match page_allocator().lock().alloc_pages(order, ZoneType::Normal, MigrateType::Unmovable) {
            Ok(b) => b,
            Err(e) => {
                log::error!("read-verify: no buffer: {e}");
                return ExitStatus::Failure;
            }
        };
        if virtio_blk::probe_all() == 0 {
            log::error!("read-verify: no virtio-blk disk (attach one with --disk FILE)");
            return ExitStatus::Failure;
        }
        for disk in virtio_blk::disks() {
            // SAFETY: `buf` (256 KiB) was allocated above for this and nothing else touches it.
            match unsafe { virtio_blk::read_verify(disk, buf, 256 * 1024, core::time::Duration::from_secs(30)) } {
                Ok((bytes, crc)) => kprintln!("disk{} bytes={bytes} crc32={crc:08x}", disk.index),
                Err(e) => {
                    log::error!("read-verify: disk{}: {e:?}", disk.index);
                    return ExitStatus::Failure;
                }
            }
        }
        ExitStatus::Success
    }

    fn disk_demo(k: &'static Kernel) -> ExitStatus {
        use kernel::demo::disks;
        log::info!(
            "demo: policy {:?}; disk0 behind the DMA window, disk1 behind the restricted pool",
            kernel::platform::dma::dma().manager.policy()
        );
        show(k, "boot");
        let report = match disks::run(&mut |phase| show(k, phase)) {
            Ok(r) => r,
            Err(e) => {
                log::error!("demo: FAILED: {e}");
                return ExitStatus::Failure;
            }
        };
        kprintln!("\n==== demo: verification ====\n{report}");
        for (i, bytes, crc) in &report.verified {
            kprintln!("disk{i} bytes={bytes} crc32={crc:08x}");
        }
        if report.ok() {
            log::info!("demo: no I/O failed, every byte intact");
            ExitStatus::Success
        } else {
            log::error!("demo: FAILED: lost or corrupt data");
            ExitStatus::Failure
        }
    }

    /// The demo's entry point: `_start` (boot/src/asm/entry.S) calls it with the loader's x0.
    /// Written out rather than made by `kernel::entry!`, so that `break kernel_main` in GDB stops
    /// in the demo itself and `next` walks it line by line (its first line boots the machine).
    #[no_mangle]
    pub(crate) extern "C" fn kernel_main(x0: usize) -> ! {
        let k = kernel::platform::kernel_init(x0);
        let status = 'demo: {
            match k.params.demo.as_deref() {
                None => {}
                Some("read-verify") => break 'demo read_verify(),
                Some(other) => log::warn!("demo={other}: unknown mode (known: read-verify); running the default demo"),
            }
            let dev = match k
                .dt
                .find_path("/virtio_mmio@a003e00")
                .map_err(|e| alloc::format!("{e}"))
                .and_then(|n| n.ok_or_else(|| "no virtio_mmio@a003e00".into()))
            {
                Ok(node) => match dma_device_from_dt(&k.dt, &k.memblock, &node, false) {
                    Ok(dev) => &*alloc::boxed::Box::leak(alloc::boxed::Box::new(dev)),
                    Err(e) => {
                        log::error!("demo: {e}");
                        break 'demo ExitStatus::Failure;
                    }
                },
                Err(e) => {
                    log::error!("demo: {e}");
                    break 'demo ExitStatus::Failure;
                }
            };
            if kernel::platform::virtio_blk::probe_all() >= 2 {
                break 'demo disk_demo(k);
            }
            log::info!("demo: no two virtio-blk disks: the timer interrupt stands in for them");
            log::info!("demo: policy {:?}; bouncing for {dev:?}", kernel::platform::dma::dma().manager.policy());
            show(k, "boot");
            let report = match workload::pressure_burst_idle(dev, &mut |phase| show(k, phase)) {
                Ok(r) => r,
                Err(e) => {
                    log::error!("demo: {e}");
                    break 'demo ExitStatus::Failure;
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
        };
        kernel::platform::kernel_exit(status)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the kernel runs on aarch64-unknown-none: use `cargo run` (see README.md)");
    std::process::exit(2);
}
