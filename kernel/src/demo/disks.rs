//! The demo on two disks (the README's first command): real virtio-blk I/O through the SWIOTLB,
//! completed and refilled from the disks' interrupt handlers.
//!
//! - disk0 sits behind the root bus's DMA window (`dma-ranges`): buffers above it bounce, first
//!   through its per-device pool (it hinted its in-flight DMA at probe), then the default pool;
//! - disk1 sits behind a `restricted-dma-pool`: every byte bounces through that pool.
//!
//! Phases (the caller shows the RAM picture and the pools after each):
//! 1. memory pressure: movable pages fill MIGRATE_MOVABLE memory, then every lent
//!    MIGRATE_SWIOTLB pageblock; every other page of those in lent blocks is freed again and
//!    disk0's page cache (dirty movable pages) takes the holes, so each lent block holds
//!    pressure pages and cache pages and none is empty; then a quarter of the pressure in
//!    MOVABLE memory goes again, to leave room for migration targets;
//! 2. I/O burst: the page cache is written back (its pages pinned while in flight), half of it
//!    is written again (dirty), then streaming writes to both disks, their data ready before
//!    the burst, started and refilled by the interrupt handlers; disk0's bounces outgrow its
//!    pools, mappings fail in interrupt context, the requests are deferred, and the SWIOTLB
//!    worker grows the default pool by reclaiming lent pageblocks. No lent block is empty, so
//!    every one it takes has pages to move: pressure pages and dirty cache pages migrated, clean
//!    cache pages dropped, while the disks' requests are in flight;
//! 3. idle: the pool shrinks and lends its spare pageblocks again;
//! 4. verification: the dirty cache blocks are written back from wherever reclaim moved them,
//!    every pressure page's checksum is checked, both disks are read back whole through bounces,
//!    every written byte compared with what was written, and a CRC-32 of each disk printed for
//!    the host to compare with the image file (`disk<N> bytes=<size> crc32=<hex>`).
//!
//! What is written: disk0's first half (up to 8 MiB) through the page cache, the rest (up to
//! 8 MiB more) streamed; disk1's first 4 MiB streamed. Any attached raw images work (their
//! first megabytes are overwritten); qemu-run.sh makes fresh ones for `cargo run`.
#![allow(unsafe_code)] // the demo hands buffers it allocated to the disks and reads them back through the RAM capability

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::Ordering;
use core::time::Duration;

use super::pressure::MemoryPressure;
use crate::block::cache::{BlockCache, CacheIoError, BLOCK_SIZE};
use crate::block::Ticket;
use crate::dma::swiotlb::mem::LendStats;
use crate::mm::page_alloc::page_cache::CacheError;
use crate::mm::page_alloc::{MigrateType, ZoneType};
use crate::mm::phys::PhysMemory;
use crate::mm::PhysAddr;
use crate::platform::dma::dma;
use crate::platform::mm::{in_swiotlb_region, page_allocator};
use crate::platform::phys::ram;
use crate::platform::virtio_blk::{self, BlkError, Disk};
use crate::platform::{idle, kernel, time};

const MIB: u64 = 1 << 20;
/// Streaming request sizes: disk0 up to one full request, disk1 a quarter of a MiB.
const REQUEST: [u64; 2] = [MIB, MIB / 4];
/// Source buffers for the streams: blocks of 2 MiB (the largest the page allocator hands out),
/// in ZONE_NORMAL, above the DMA window, one piece of them per request.
const BUFFER_ORDER: u8 = 9;
const BUFFER_BYTES: u64 = 4096 << BUFFER_ORDER;
/// How long any one request may take (TCG is slow, the pool may have to grow first).
const TIMEOUT: Duration = Duration::from_secs(30);

/// What the demo measured.
#[derive(Debug, Default)]
pub struct DiskDemoReport {
    /// Blocks written through disk0's page cache, and how many of their pages sat in lent
    /// MIGRATE_SWIOTLB pageblocks after the memory pressure.
    pub cache_blocks: usize,
    /// See `cache_blocks`.
    pub cache_pages_in_lent_blocks: usize,
    /// Memory-pressure pages held, and how many of them sat in lent pageblocks before the burst.
    pub pressure_pages: (usize, usize),
    /// After the burst: pressure pages and dirty cache pages still in lent pageblocks (the rest
    /// of those counted before were migrated out), and cache pages still cached at all (clean
    /// ones reclaim dropped are gone).
    pub after_burst_in_lent: (usize, usize),
    /// See `after_burst_in_lent`.
    pub cache_live_after_burst: usize,
    /// Lent MIGRATE_SWIOTLB pageblocks before the burst: holding pages (`S`), empty (`s`).
    pub lent_blocks: (usize, usize),
    /// Cache blocks written again (dirty) after the first writeback, before the streams.
    pub redirtied: usize,
    /// Cache blocks written back after the burst (the dirty ones, wherever reclaim moved them).
    pub written_back_after: usize,
    /// Bytes streamed to each disk, and in how many requests.
    pub streamed: [(u64, u64); 2],
    /// Mappings that failed in interrupt context during the burst (each deferred and retried).
    pub irq_map_failures: u64,
    /// Requests the interrupt handlers handed to task context, and started there.
    pub deferred: u64,
    /// Requests the interrupt handlers started (refills mapped in interrupt context).
    pub started_in_irq: u64,
    /// Usable bounce slots of the manager before the burst, at its peak, after idling.
    pub slots: (usize, usize, usize),
    /// How long after the burst began the pool first grew.
    pub grown_after: Option<Duration>,
    /// How long the streaming burst took.
    pub burst_took: Duration,
    /// Cache blocks written back, and the most writes in flight.
    pub written_back: (u64, usize),
    /// The manager's counters before the burst and after idling.
    pub before: LendStats,
    /// See `before`.
    pub after: LendStats,
    /// The memory-pressure pages were intact after the burst (reclaim migrated some of them).
    pub pressure_intact: bool,
    /// Per disk: bytes read back and the CRC-32 of the whole disk.
    pub verified: Vec<(usize, u64, u32)>,
    /// Written bytes that did not read back as written (first few).
    pub mismatches: Vec<String>,
}

impl DiskDemoReport {
    /// True if every request succeeded and every byte read back as written.
    pub fn ok(&self) -> bool {
        self.mismatches.is_empty() && self.pressure_intact && self.verified.len() == 2
    }
}

/// The 8-byte word at byte `offset` (a multiple of 8) of disk `disk` as the demo writes it.
fn word(disk: usize, offset: u64) -> u64 {
    (offset ^ ((disk as u64 + 1) << 56)).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}

fn pattern(disk: usize, offset: u64, out: &mut [u8]) {
    for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&word(disk, offset + 8 * i as u64).to_le_bytes());
    }
}

/// One request of a stream: its place on the disk, its data (written before the burst) and its
/// ticket while queued.
struct Piece {
    disk: usize,
    offset: u64,
    len: u64,
    addr: PhysAddr,
    ticket: Option<Ticket>,
    done: bool,
}

/// Lent MIGRATE_SWIOTLB pageblocks holding pages (`S` in the RAM picture) and empty ones (`s`).
fn lent_blocks() -> (usize, usize) {
    let memblock = &kernel().memblock;
    let picture = {
        let a = page_allocator().lock();
        format!("{}", a.ram_picture(|x| in_swiotlb_region(memblock, x)))
    };
    (picture.matches('S').count(), picture.matches('s').count())
}

/// Runs the phases; `phase` is called after each with its name.
pub fn run(phase: &mut dyn FnMut(&str)) -> Result<DiskDemoReport, String> {
    let disks = [virtio_blk::disk(0).map_err(|e| e.to_string())?, virtio_blk::disk(1).map_err(|e| e.to_string())?];
    if disks.iter().any(|d| d.readonly()) {
        return Err("the demo writes to its disks: attach them writable".to_string());
    }
    let pages = page_allocator();
    // SAFETY: the demo writes through it only the stream buffers it allocates below, and hands
    // it to `MemoryPressure` and the page cache, which write only the pages they allocate.
    let ram = unsafe { ram() };
    let m = dma().manager;
    let api = &dma().api;
    let mut report = DiskDemoReport::default();

    let size0 = disks[0].size_bytes() / MIB * MIB;
    let cache_bytes = (size0 / 2).min(8 * MIB);
    let stream_end = [size0.min(cache_bytes + 24 * MIB), (disks[1].size_bytes() / MIB * MIB).min(4 * MIB)];
    let stream_start = [cache_bytes, 0];
    if cache_bytes == 0 || stream_end[1] == 0 {
        return Err(format!(
            "disks too small: disk0 needs at least 2 MiB, disk1 1 MiB (have {} and {} bytes)",
            disks[0].size_bytes(),
            disks[1].size_bytes()
        ));
    }
    // The streams' data, taken and written before the pressure takes everything. Ready before
    // the burst, as an application's buffers would be: filling 1 MiB with the pattern under TCG
    // takes about as long as the throttled disk0 takes to write it, so filling each request's
    // buffer just before queueing it kept disk0's queue so shallow that its bounces never
    // outgrew the pools.
    let mut buffers: Vec<PhysAddr> = Vec::new();
    let mut pieces: Vec<Piece> = Vec::new();
    for i in 0..2 {
        let mut offset = stream_start[i];
        while offset < stream_end[i] {
            let buf = pages
                .lock()
                .alloc_pages(BUFFER_ORDER, ZoneType::Normal, MigrateType::Unmovable)
                .map_err(|e| format!("stream buffer: {e}"))?;
            buffers.push(buf);
            let mut at = 0;
            while at < BUFFER_BYTES && offset < stream_end[i] {
                let len = REQUEST[i].min(stream_end[i] - offset).min(BUFFER_BYTES - at);
                pieces.push(Piece { disk: i, offset, len, addr: buf + at, ticket: None, done: false });
                let mut block = vec![0u8; BLOCK_SIZE];
                for off in (0..len).step_by(BLOCK_SIZE) {
                    pattern(i, offset + off, &mut block);
                    ram.write(buf + at + off, &block);
                }
                at += len;
                offset += len;
            }
        }
    }
    // Queued alternating between the disks, oldest first per disk.
    pieces.sort_by_key(|p| (p.offset - stream_start[p.disk], p.disk));

    // 1. Memory pressure. Movable allocations borrow lent MIGRATE_SWIOTLB pageblocks only once
    //    MOVABLE memory is used up, and the worker rightly takes an empty lent block before an
    //    occupied one. So that the burst's growth has to migrate, every lent block must hold
    //    pages: `pressure` fills MOVABLE memory, `lent_pressure` every free page of the lent
    //    blocks; every other page of the latter is freed again and the page cache lands in the
    //    holes (nothing is free elsewhere), then a quarter of `pressure` goes again, spread over
    //    MOVABLE memory: room for migration targets (never taken in SWIOTLB blocks) and the heap.
    let (free, lent_free) = {
        let a = pages.lock();
        (a.nr_free_pages(ZoneType::Normal) + a.nr_free_pages(ZoneType::Dma), a.nr_free_swiotlb_pages(ZoneType::Dma))
    };
    let mut pressure = MemoryPressure::fill(pages, ram, ZoneType::Normal, free.saturating_sub(lent_free), 7);
    let lent_free = pages.lock().nr_free_swiotlb_pages(ZoneType::Dma);
    let mut lent_pressure = MemoryPressure::fill(pages, ram, ZoneType::Normal, lent_free, 11);
    lent_pressure.release_every(pages, 2);
    let cache_blocks = cache_bytes / BLOCK_SIZE as u64;
    // The cache writes through `ram` only the pages it allocates from `pages` and holds until
    // it frees or drops them.
    let mut cache = BlockCache::new(disks[0], pages, ram, TIMEOUT);
    let mut block = vec![0u8; BLOCK_SIZE];
    let mut released = false;
    for b in 0..cache_blocks {
        pattern(0, b * BLOCK_SIZE as u64, &mut block);
        match cache.write(b, &block) {
            Ok(()) => {}
            Err(CacheIoError::Cache(CacheError::Alloc(_))) if !released => {
                // Less room than counted: give back the quarter now rather than later.
                pressure.release_every(pages, 4);
                released = true;
                cache.write(b, &block).map_err(|e| format!("page cache: {e}"))?;
            }
            Err(e) => return Err(format!("page cache: {e}")),
        }
    }
    report.cache_blocks = cache.len();
    if !released {
        pressure.release_every(pages, 4); // room for migration targets
    }
    let memblock = &kernel().memblock;
    let in_lent = |a: PhysAddr| in_swiotlb_region(memblock, a);
    report.cache_pages_in_lent_blocks = cache.count_pages(in_lent).0;
    let pressure_in_lent = |p: &MemoryPressure| p.pages().filter(|&pg| pages.pin(pg).is_ok_and(|pin| in_lent(pin.addr()))).count();
    report.pressure_pages = (pressure.len() + lent_pressure.len(), pressure_in_lent(&pressure) + pressure_in_lent(&lent_pressure));
    report.lent_blocks = lent_blocks();
    log::info!(
        "demo: {} dirty page-cache blocks of disk0 ({} in lent SWIOTLB pageblocks), {} movable pages of memory pressure ({} in lent pageblocks); lent pageblocks: {} holding pages, {} empty",
        report.cache_blocks,
        report.cache_pages_in_lent_blocks,
        report.pressure_pages.0,
        report.pressure_pages.1,
        report.lent_blocks.0,
        report.lent_blocks.1,
    );
    phase("memory pressure");

    // 2. The I/O burst.
    report.before = m.stats();
    report.slots.0 = m.usable_slots();
    report.slots.1 = report.slots.0;
    let irq_failures = api.stats.irq_failures.load(Ordering::Relaxed);
    let counters = |d: &Disk| (d.stats.deferred_to_task.load(Ordering::Relaxed), d.stats.started_in_irq.load(Ordering::Relaxed));
    let before: Vec<_> = disks.iter().map(|d| counters(d)).collect();
    let t0 = time::uptime();
    // The page cache is written back first (its pages pinned while in flight); clean, the
    // pages in lent pageblocks can then be dropped instead of migrated when the pool grows.
    let written = cache.writeback().map_err(|e| format!("page-cache writeback: {e}"))?;
    report.written_back = (written as u64, cache.stats.max_in_flight);
    // Meanwhile the blocks are written again, every other one (same bytes: the disk must end up
    // as the pattern says): dirty pages reclaim has to migrate, not drop.
    for b in (0..cache_blocks).step_by(2) {
        pattern(0, b * BLOCK_SIZE as u64, &mut block);
        cache.write(b, &block).map_err(|e| format!("page cache: {e}"))?;
        report.redirtied += 1;
    }
    let mut first_error: Option<String> = None;
    loop {
        // Queue requests, oldest first, while the disks take them (a full table is Busy).
        let mut busy = [false; 2];
        for p in pieces.iter_mut().filter(|p| p.ticket.is_none() && !p.done) {
            if busy[p.disk] || first_error.is_some() {
                continue;
            }
            // SAFETY: the piece is part of a stream buffer the demo allocated and filled above,
            // not written again and freed only after every request completed.
            match unsafe { disks[p.disk].queue_write(p.offset / 512, p.addr, p.len as usize) } {
                Ok(t) => p.ticket = Some(t),
                Err(BlkError::Busy) => busy[p.disk] = true,
                Err(e) => first_error = Some(format!("disk{}: write at {:#x}: {e}", p.disk, p.offset)),
            }
        }
        // Collect completions (the handlers recorded them).
        for p in pieces.iter_mut() {
            if let Some(t) = p.ticket {
                if let Some(outcome) = disks[p.disk].poll(t) {
                    p.ticket = None;
                    p.done = true;
                    if let Err(e) = outcome {
                        first_error.get_or_insert(format!("disk{}: {e}", p.disk));
                    }
                }
            }
        }
        let usable = m.usable_slots();
        if usable > report.slots.0 && report.grown_after.is_none() {
            report.grown_after = Some(time::uptime() - t0);
        }
        report.slots.1 = report.slots.1.max(usable);
        let pending = pieces.iter().any(|p| p.ticket.is_some());
        let more = first_error.is_none() && pieces.iter().any(|p| !p.done);
        if !pending && !more {
            break;
        }
        idle(); // runs the SWIOTLB worker and the retry work; completion interrupts wake us
    }
    report.burst_took = time::uptime() - t0;
    for p in pieces.iter().filter(|p| p.done) {
        report.streamed[p.disk].0 += p.len;
        report.streamed[p.disk].1 += 1;
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    report.irq_map_failures = api.stats.irq_failures.load(Ordering::Relaxed) - irq_failures;
    for (d, (deferred, started)) in disks.iter().zip(before) {
        let (d_now, s_now) = counters(d);
        report.deferred += d_now - deferred;
        report.started_in_irq += s_now - started;
    }
    report.pressure_intact = pressure.verify(pages, ram).is_ok() && lent_pressure.verify(pages, ram).is_ok();
    let (cache_in_lent, cache_live) = cache.count_pages(in_lent);
    report.after_burst_in_lent = (pressure_in_lent(&pressure) + pressure_in_lent(&lent_pressure), cache_in_lent);
    report.cache_live_after_burst = cache_live;
    phase("I/O burst from interrupt handlers");

    // 3. Idle: the pool shrinks and lends again.
    let idle_from = time::uptime();
    while time::uptime() < idle_from + Duration::from_millis(dma().params.swiotlb_shrink_delay_ms * 6) {
        idle();
    }
    report.slots.2 = m.usable_slots();
    report.after = m.stats();
    phase("idle");

    // 4. Verification: the dirty cache blocks go to disk from wherever reclaim moved them (a
    //    migration that lost a byte would now reach the disk), the pressure goes, then both
    //    disks are read back whole.
    report.written_back_after = cache.writeback().map_err(|e| format!("page-cache writeback after the burst: {e}"))?;
    report.pressure_intact &= pressure.verify(pages, ram).is_ok() && lent_pressure.verify(pages, ram).is_ok();
    pressure.release(pages).map_err(|e| format!("{e:?}"))?;
    lent_pressure.release(pages).map_err(|e| format!("{e:?}"))?;
    for (i, d) in disks.iter().enumerate() {
        let (bytes, crc) = read_back(i, d, buffers[0], 0..stream_end[i], &mut report.mismatches)?;
        report.verified.push((i, bytes, crc));
    }
    for b in buffers {
        let _ = pages.lock().free_pages(b, BUFFER_ORDER);
    }
    Ok(report)
}

/// Reads disk `i` whole through `buf` (2 MiB, above the DMA window: every chunk bounces),
/// compares the bytes in `written` with the demo's pattern, and returns (bytes, CRC-32).
fn read_back(
    i: usize,
    d: &Disk,
    buf: PhysAddr,
    written: core::ops::Range<u64>,
    mismatches: &mut Vec<String>,
) -> Result<(u64, u32), String> {
    let size = d.size_bytes();
    let chunk = (256 * 1024u64).min(BUFFER_BYTES);
    let mut crc = crate::crc32::Crc32::new();
    let (mut seen, mut expect) = (vec![0u8; BLOCK_SIZE], vec![0u8; BLOCK_SIZE]);
    let mut offset = 0;
    while offset < size {
        let len = (size - offset).min(chunk);
        // SAFETY: `buf` is the demo's stream buffer (at least `chunk` bytes), its writes all
        // completed; nothing touches it until the read returns.
        unsafe { d.read(offset / 512, buf, len as usize, TIMEOUT) }.map_err(|e| format!("disk{i}: read back at {offset:#x}: {e}"))?;
        for off in (0..len).step_by(BLOCK_SIZE) {
            let n = (len - off).min(BLOCK_SIZE as u64) as usize;
            // SAFETY: only reads.
            unsafe { ram() }.read(buf + off, &mut seen[..n]);
            crc.update(&seen[..n]);
            let at = offset + off;
            if written.contains(&at) {
                pattern(i, at, &mut expect[..n]);
                if seen[..n] != expect[..n] && mismatches.len() < 8 {
                    mismatches.push(format!("disk{i} bytes {at:#x}..{:#x} differ from what was written", at + n as u64));
                }
            }
        }
        offset += len;
    }
    Ok((size, crc.finish()))
}

impl fmt::Display for DiskDemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = (&self.after, &self.before);
        writeln!(
            f,
            "page cache: {} blocks of disk0 ({} pages in lent SWIOTLB pageblocks), {} written back (up to {} in flight), {} written again before the streams, {} written back after the burst",
            self.cache_blocks, self.cache_pages_in_lent_blocks, self.written_back.0, self.written_back.1, self.redirtied, self.written_back_after
        )?;
        writeln!(
            f,
            "memory pressure: {} movable pages ({} in lent SWIOTLB pageblocks); before the burst {} lent pageblocks held pages, {} were empty",
            self.pressure_pages.0, self.pressure_pages.1, self.lent_blocks.0, self.lent_blocks.1
        )?;
        for (i, (bytes, requests)) in self.streamed.iter().enumerate() {
            writeln!(f, "disk{i}: streamed {} KiB in {requests} requests", bytes / 1024)?;
        }
        writeln!(
            f,
            "burst: {:?}; {} mappings failed in interrupt context, {} requests deferred to task context, {} started by the interrupt handlers",
            self.burst_took, self.irq_map_failures, self.deferred, self.started_in_irq
        )?;
        writeln!(
            f,
            "default pool + lent: usable slots {} -> peak {} -> idle {}; grew after {:?}; reclaimed {} pageblocks ({} pages migrated, {} dropped, {} pinned pages in the way); lent again {} pageblocks",
            self.slots.0,
            self.slots.1,
            self.slots.2,
            self.grown_after,
            a.pageblocks_reclaimed - b.pageblocks_reclaimed,
            a.pages_migrated - b.pages_migrated,
            a.pages_dropped - b.pages_dropped,
            a.pages_pinned_blocking - b.pages_pinned_blocking,
            a.pageblocks_lent_again - b.pageblocks_lent_again,
        )?;
        writeln!(
            f,
            "moved out of lent pageblocks during the burst: {} pressure pages and {} cache pages (of them {} clean ones dropped, the rest migrated)",
            self.pressure_pages.1.saturating_sub(self.after_burst_in_lent.0),
            self.cache_pages_in_lent_blocks.saturating_sub(self.after_burst_in_lent.1),
            self.cache_blocks.saturating_sub(self.cache_live_after_burst),
        )?;
        write!(
            f,
            "verification: movable pages {}; {}",
            if self.pressure_intact { "intact" } else { "CORRUPT" },
            if self.mismatches.is_empty() { "every written byte read back as written".to_string() } else { self.mismatches.join("; ") }
        )
    }
}
