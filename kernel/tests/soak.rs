//! A bounded soak of the virtio-blk driver and the SWIOTLB: a long, deterministic,
//! randomised mix of reads, writes and flushes on both disks, many requests in flight, while
//! memory pressure comes and goes so that the default pool grows by reclaiming lent pageblocks
//! and shrinks by lending them again. Every byte read is checked against an in-kernel model of
//! the disks; at the end both disks are read back whole and the model's CRC-32 of each disk is
//! printed (`disk<N> bytes=<size> crc32=<hex>`) for scripts/soak.sh to compare with the image
//! files on the host.
//!
//! Needs the disks scripts/soak.sh makes (it runs this kernel), fresh and zero-filled:
//! - disk0 (`virtio_mmio@a003e00`, behind the root DMA window): most buffers lie above the
//!   window, so they bounce (through disk0's per-device pool, then the default pool); every
//!   fourth buffer lies inside it (direct DMA);
//! - disk1 (`virtio_mmio@a003c00`): every byte bounces through its restricted pool.
//!
//! `demo=<seconds>[,<seed>]` sets how long requests are submitted (default 150 s) and the seed
//! of the PRNG (default [`DEFAULT_SEED`]); the same seed gives the same sequence of requests.
//!
//! The model keeps one generation number per sector: 0 is the zeros of a fresh image, every
//! write takes a new generation and fills its sectors with [`sector_pattern`] of it. Requests in
//! flight never overlap a write in flight on the same sectors (virtio does not order requests).
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::Ordering;
use core::time::Duration;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use kernel::block::Ticket;
use kernel::bootargs::SwiotlbPolicy;
use kernel::demo::pressure::MemoryPressure;
use kernel::dma::swiotlb::mem::LendStats;
use kernel::ktest::{self, buffer, err as e, TestCase, TestResult};
use kernel::mm::page_alloc::ZoneType;
use kernel::mm::phys::PhysMemory;
use kernel::mm::PhysAddr;
use kernel::platform::dma::dma;
use kernel::platform::exit::ExitStatus;
use kernel::platform::mm::page_allocator;
use kernel::platform::virtio_blk::{self, BlkError, Disk, DIRECT_MAX_IN_FLIGHT};
use kernel::platform::{idle, time, Kernel};
use kernel::{kassert, kassert_eq, kprintln};

use kernel::platform::phys::{ram, IdentityMappedRam};

kernel::entry!(main);

/// RAM, for this test kernel: it writes only memory it allocated (its buffers, the pages of its
/// memory pressure and page caches) or, standing in for a device, what a mapping handed that device.
fn mem() -> &'static IdentityMappedRam {
    // SAFETY: see the doc comment: every write of this file goes to such memory.
    unsafe { ram() }
}

// SAFETY: every buffer this test kernel maps or hands a disk is one it allocated, freed only
// after the unmap or after the request's outcome was collected; where a test touches one
// meanwhile, it stands in for the device or checks on purpose what the device or a bounce did.
kernel::test_kernel_owns_its_buffers!();
use owned::TestIo;

/// The PRNG's seed unless `demo=<seconds>,<seed>` names one.
const DEFAULT_SEED: u64 = 0x5eed_d15c_0b0c_e007;
/// How long requests are submitted unless `demo=<seconds>` says otherwise.
const DEFAULT_SECONDS: u64 = 150;
const SECTOR: usize = 512;
/// Every request buffer: 1 MiB (order 8), the most one request carries (`max_transfer`).
const BUFFER_ORDER: u8 = 8;
const BUFFER_BYTES: usize = 4096 << BUFFER_ORDER;
/// Request slots per disk: beyond the 21 a queue of 64 holds without indirect descriptors (the
/// default), so the disk refuses the excess as Busy and the soak exercises that; with
/// `SOAK_BOOTARGS=blk_indirect=on` the deeper queue indirect descriptors allow is soaked
/// instead. Not all 64, to keep the buffers' memory (1 MiB each) in bounds.
const SLOTS: usize = 32;
const _: () = assert!(SLOTS > DIRECT_MAX_IN_FLIGHT);
/// One pressure cycle: fill RAM with movable pages, I/O under pressure, release, a quiet spell
/// (the pool shrinks), then light I/O until the next cycle.
const CYCLE: Duration = Duration::from_secs(30);
const PRESSURE_HELD: Duration = Duration::from_secs(14);
const QUIET: Duration = Duration::from_secs(2);
/// How long the synchronous calls (final flush, read-back) give a request; the queued ones
/// get the driver's default deadline (30 s), and one without an outcome 5 s after that is
/// timed out by the soak itself.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Errors kept word for word (the rest are only counted).
const ERRORS_KEPT: usize = 8;

fn main(k: &'static Kernel) -> ExitStatus {
    let (seconds, seed) = soak_params(k);
    kprintln!(
        "soak: {seconds} s of randomised I/O, seed {seed:#x}, swiotlb_policy={:?} dma_debug={}",
        k.params.swiotlb_policy,
        k.params.dma_debug
    );
    *CONFIG.lock() = Some((seconds, seed));
    ktest::run(
        "soak",
        &[
            TestCase { name: "randomised_mix_matches_the_model", run: randomised_mix },
            TestCase { name: "whole_disks_read_back_as_modelled", run: read_back_whole_disks },
            TestCase { name: "no_dma_api_misuse", run: no_misuse },
        ],
    )
}

/// (seconds, seed) from the command line, kept for the cases.
static CONFIG: spin::Mutex<Option<(u64, u64)>> = spin::Mutex::new(None);
/// The model and the counters, handed from the mix to the read-back.
static STATE: spin::Mutex<Option<Soak>> = spin::Mutex::new(None);

/// `demo=<seconds>[,<seed>]` (seed in decimal or 0x hex); defaults for what is absent or bad.
fn soak_params(k: &Kernel) -> (u64, u64) {
    let mut seconds = DEFAULT_SECONDS;
    let mut seed = DEFAULT_SEED;
    if let Some(v) = k.params.demo.as_deref() {
        let (secs, s) = match v.split_once(',') {
            Some((a, b)) => (a, Some(b)),
            None => (v, None),
        };
        match secs.trim_end_matches('s').parse::<u64>() {
            Ok(n) if n > 0 => seconds = n,
            _ => log::warn!("soak: demo={v}: expected <seconds>[,<seed>]; running {seconds} s"),
        }
        if let Some(s) = s {
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse::<u64>(),
            };
            match parsed {
                Ok(n) => seed = n,
                Err(_) => log::warn!("soak: demo={v}: bad seed; using {seed:#x}"),
            }
        }
    }
    (seconds, seed)
}

/// xorshift64*: deterministic and cheap.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn mix(mut z: u64) -> u64 {
    // splitmix64's finaliser
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Sector `sector` of disk `disk` as written by generation `generation` (0: a fresh image's
/// zeros).
fn sector_pattern(disk: usize, sector: u64, generation: u32, out: &mut [u8; SECTOR]) {
    if generation == 0 {
        out.fill(0);
        return;
    }
    let base = mix((disk as u64) << 62 ^ sector << 24 ^ u64::from(generation));
    for (k, chunk) in out.chunks_exact_mut(8).enumerate() {
        // One multiply a word: TCG spends the soak's time here and in the checks.
        chunk.copy_from_slice(&(base ^ k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Read,
    Write,
    Flush,
}

/// A request in flight in one slot.
#[derive(Clone, Copy)]
struct Request {
    op: Op,
    sector: u64,
    sectors: u64,
    /// For a write: the generation its sectors take once it completed.
    generation: u32,
    ticket: Ticket,
    submitted: Duration,
}

/// A request slot of one disk: its buffer and what is in flight in it.
struct Slot {
    buf: PhysAddr,
    request: Option<Request>,
}

/// One disk's side of the soak.
struct DiskState {
    disk: &'static Disk,
    /// The model: the generation of every sector.
    generations: Vec<u32>,
    next_generation: u32,
    slots: Vec<Slot>,
}

impl DiskState {
    fn overlaps_in_flight(&self, sector: u64, sectors: u64, op: Op) -> bool {
        self.slots.iter().filter_map(|s| s.request).any(|r| {
            let data = r.op != Op::Flush;
            // Reads may overlap reads; a write overlaps nothing in flight.
            data && (op == Op::Write || r.op == Op::Write) && r.sector < sector + sectors && sector < r.sector + r.sectors
        })
    }
}

#[derive(Default)]
struct Counters {
    requests: [u64; 3],
    bytes: u64,
    errors: u64,
    messages: Vec<String>,
    cycles: u64,
    fills: u64,
    /// Times the default pool's usable slots were seen to go up, and down (under `lend` by
    /// reclaim and lending again; under `static` carving disk0's device pool also takes slots).
    grew: u64,
    shrank: u64,
    peak_slots: usize,
    pressure_pages: u64,
    hint_toggles: u64,
    max_in_flight: usize,
    /// Disk resets forced with requests in flight (one per cycle; see `force_reset`).
    resets: u64,
}

impl Counters {
    fn error(&mut self, why: String) {
        self.errors += 1;
        if self.messages.len() < ERRORS_KEPT {
            kprintln!("  soak error: {why}");
            self.messages.push(why);
        }
    }
}

struct Soak {
    disks: [DiskState; 2],
    counters: Counters,
    before: LendStats,
}

fn lend_delta(before: &LendStats) -> (u64, u64, u64) {
    let now = dma().manager.stats();
    (
        now.pageblocks_reclaimed - before.pageblocks_reclaimed,
        now.pageblocks_lent_again - before.pageblocks_lent_again,
        now.pages_migrated - before.pages_migrated,
    )
}

fn setup() -> Result<Soak, String> {
    let n = virtio_blk::probe_all();
    kassert!(n >= 2, "found {n} disks; run with scripts/soak.sh (two --disk)");
    let mut disks = Vec::new();
    for i in 0..2 {
        let disk = virtio_blk::disk(i).map_err(e)?;
        kassert!(!disk.readonly(), "disk{i} must be writable");
        let mut slots = Vec::new();
        for s in 0..SLOTS {
            // disk0: every fourth buffer inside the DMA window (direct), the rest above (bounced).
            let beyond = !(i == 0 && s % 4 == 3);
            slots.push(Slot { buf: buffer(BUFFER_ORDER, beyond)?, request: None });
        }
        let sectors = disk.config.capacity as usize;
        kprintln!("  disk{i} on {}: {} sectors, max transfer {} bytes, {:?}", disk.name, sectors, disk.max_transfer(), disk.dma_dev);
        disks.push(DiskState { disk, generations: vec![0; sectors], next_generation: 1, slots });
    }
    let [d0, d1]: [DiskState; 2] = disks.try_into().map_err(|_| String::from("two disks"))?;
    Ok(Soak { disks: [d0, d1], counters: Counters::default(), before: dma().manager.stats() })
}

/// How large the requests of a phase are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sizes {
    /// 1..=8 sectors: after the quiet spell, so that the shrunk pool stays small.
    Light,
    /// 40% 1..=8 sectors, 30% up to 64 KiB, 30% up to a whole request.
    Mixed,
    /// 90% up to a whole request: disk0 under memory pressure, so that its bounces outgrow
    /// the pools.
    Heavy,
}

/// Tries to start one random request on `d` (index `i`); false if it found no room.
fn submit_one(i: usize, d: &mut DiskState, rng: &mut Rng, sizes: Sizes, c: &mut Counters) -> bool {
    let Some(slot) = d.slots.iter().position(|s| s.request.is_none()) else { return false };
    let capacity = d.disk.config.capacity;
    let max = (d.disk.max_transfer().min(BUFFER_BYTES) / SECTOR) as u64;
    // Reads are cheap to submit (no pattern to write): under Heavy they fill disk0's queue.
    let (reads, writes) = if sizes == Sizes::Heavy { (70, 25) } else { (45, 47) };
    let roll = rng.range(0, 99);
    let op = match roll {
        x if x < reads => Op::Read,
        x if x < reads + writes => Op::Write,
        _ => Op::Flush,
    };
    let (mut sector, mut sectors) = (0, 0);
    if op != Op::Flush {
        let mut found = false;
        for _ in 0..4 {
            let small = match sizes {
                Sizes::Light => 10,
                Sizes::Mixed => 4,
                Sizes::Heavy => 1,
            };
            sectors = match rng.range(0, 9) {
                x if x < small => rng.range(1, 8),
                x if x < small + 3 && sizes == Sizes::Mixed => rng.range(9, 128.min(max)),
                4..=6 => rng.range(9, 128.min(max)),
                _ => rng.range(129.min(max), max),
            };
            sector = rng.range(0, capacity - sectors);
            if !d.overlaps_in_flight(sector, sectors, op) {
                found = true;
                break;
            }
        }
        if !found {
            return false;
        }
    }
    let buf = d.slots[slot].buf;
    let mut generation = 0;
    let ticket = match op {
        Op::Read => {
            mem().fill(buf, 0xee, sectors as usize * SECTOR); // a read that writes nothing shows
            d.disk.test_queue_read(sector, buf, sectors as usize * SECTOR)
        }
        Op::Write => {
            generation = d.next_generation;
            d.next_generation += 1;
            let mut pattern = [0u8; SECTOR];
            for k in 0..sectors {
                sector_pattern(i, sector + k, generation, &mut pattern);
                mem().write(buf + k * SECTOR as u64, &pattern);
            }
            d.disk.test_queue_write(sector, buf, sectors as usize * SECTOR)
        }
        Op::Flush => d.disk.queue_flush(),
    };
    match ticket {
        Ok(ticket) => {
            d.slots[slot].request = Some(Request { op, sector, sectors, generation, ticket, submitted: time::uptime() });
            true
        }
        Err(BlkError::Busy) => false,
        Err(x) => {
            c.error(format!("disk{i}: {op:?} of {sectors} sectors at {sector}: refused: {x}"));
            false
        }
    }
}

/// Collects the outcomes the interrupt handlers recorded; checks reads against the model and
/// commits writes to it. Returns how many requests are still in flight.
fn collect(i: usize, d: &mut DiskState, c: &mut Counters) -> usize {
    let mut in_flight = 0;
    let now = time::uptime();
    for s in 0..d.slots.len() {
        let Some(r) = d.slots[s].request else { continue };
        let outcome = match d.disk.poll(r.ticket) {
            Some(outcome) => outcome,
            None if now > r.submitted + REQUEST_TIMEOUT + Duration::from_secs(5) => {
                // The driver's own deadline should have failed it by now: time it out here
                // (never abandoned, never a hang), and count it.
                c.error(format!("disk{i}: {:?} at {} has no outcome after {:?}", r.op, r.sector, now - r.submitted));
                virtio_blk::wait_for(d.disk, r.ticket, now)
            }
            None => {
                in_flight += 1;
                continue;
            }
        };
        d.slots[s].request = None;
        c.requests[r.op as usize] += 1;
        if let Err(x) = outcome {
            c.error(format!("disk{i}: {:?} of {} sectors at {} failed: {x}", r.op, r.sectors, r.sector));
            if r.op == Op::Write {
                // What reached the disk is unknown: the model can no longer say.
                for g in &mut d.generations[r.sector as usize..(r.sector + r.sectors) as usize] {
                    *g = u32::MAX;
                }
            }
            continue;
        }
        c.bytes += r.sectors * SECTOR as u64;
        match r.op {
            Op::Write => d.generations[r.sector as usize..(r.sector + r.sectors) as usize].fill(r.generation),
            Op::Read => {
                let (mut got, mut want) = ([0u8; SECTOR], [0u8; SECTOR]);
                for k in 0..r.sectors {
                    let sector = r.sector + k;
                    let generation = d.generations[sector as usize];
                    if generation == u32::MAX {
                        continue;
                    }
                    mem().read(d.slots[s].buf + k * SECTOR as u64, &mut got);
                    sector_pattern(i, sector, generation, &mut want);
                    if got != want {
                        let at = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
                        c.error(format!(
                            "disk{i}: sector {sector} (generation {generation}) read back wrong from byte {at}: {:#04x} != {:#04x}",
                            got[at], want[at]
                        ));
                    }
                }
            }
            Op::Flush => {}
        }
    }
    in_flight
}

/// The soak's main loop; see the module comment.
fn randomised_mix() -> TestResult {
    let (seconds, seed) = CONFIG.lock().unwrap_or((DEFAULT_SECONDS, DEFAULT_SEED));
    let mut soak = setup()?;
    let mut rng = Rng(seed | 1);
    let pages = page_allocator();
    let m = dma().manager;
    let t0 = time::uptime();
    let end = t0 + Duration::from_secs(seconds);
    let mut pressure: Option<MemoryPressure> = None;
    let mut cycle_start = t0;
    let mut next_report = t0 + Duration::from_secs(10);
    let Soak { disks, counters: c, before } = &mut soak;
    // The first cycle without disk0's per-device pool (the default pool must grow); the quiet
    // spell of each cycle gives it back or takes it again.
    if virtio_blk::hint_inflight(disks[0].disk, 0).is_some_and(|o| o == kernel::platform::dma::HintOutcome::Returned) {
        c.hint_toggles += 1;
    }
    let mut toggled_in: Option<u64> = None;
    let mut last_slots = m.usable_slots();
    let first_slots = last_slots;
    let reset_buf = buffer(0, true)?;
    let mut reset_cycle: Option<u64> = None;
    loop {
        let now = time::uptime();
        let submitting = now < end && c.errors == 0;
        let in_cycle = now - cycle_start;
        // The pressure cycle. Start: fill RAM (the lent pageblocks too) with checksummed
        // movable pages, then free a quarter of them as room for migration targets.
        if submitting && pressure.is_none() && in_cycle < PRESSURE_HELD {
            let free = {
                let a = pages.lock();
                a.nr_free_pages(ZoneType::Normal) + a.nr_free_pages(ZoneType::Dma)
            };
            let headroom = 1024 + free / 32;
            let mut p = MemoryPressure::fill(pages, mem(), ZoneType::Normal, free.saturating_sub(headroom), seed ^ c.cycles);
            p.release_every(pages, 4);
            c.pressure_pages += p.len() as u64;
            c.fills += 1;
            pressure = Some(p);
        }
        if let Some(p) = pressure.take_if(|_| !submitting || in_cycle >= PRESSURE_HELD) {
            // Every page the reclaims migrated must have kept its bytes.
            if let Err(x) = p.verify(pages, mem()) {
                c.error(format!("memory pressure pages after cycle {}: {x:?}", c.cycles));
            }
            if let Err(x) = p.release(pages) {
                c.error(format!("freeing the memory pressure pages: {x:?}"));
            }
        }
        let quiet = in_cycle >= PRESSURE_HELD && in_cycle < PRESSURE_HELD + QUIET;
        if submitting && !quiet {
            for _ in 0..8 {
                let i = (rng.next() % 2) as usize;
                let sizes = match (in_cycle >= PRESSURE_HELD, i) {
                    (true, _) => Sizes::Light,
                    (false, 0) => Sizes::Heavy,
                    (false, _) => Sizes::Mixed,
                };
                submit_one(i, &mut disks[i], &mut rng, sizes, c);
            }
        }
        // Once a cycle, a disk reset in the mix: disk0 reset with the soak's requests in flight,
        // which are taken back and requeued (and must still match the model).
        if submitting
            && reset_cycle != Some(c.cycles)
            && in_cycle >= RESET_AT
            && disks[0].disk.in_flight() > 0
            && force_reset(disks[0].disk, reset_buf)
        {
            reset_cycle = Some(c.cycles);
            c.resets += 1;
        }
        let in_flight: usize = (0..2).map(|i| collect(i, &mut disks[i], c)).sum();
        let slots = m.usable_slots();
        c.grew += u64::from(slots > last_slots);
        c.shrank += u64::from(slots < last_slots);
        c.peak_slots = c.peak_slots.max(slots);
        last_slots = slots;
        c.max_in_flight = c.max_in_flight.max(in_flight);
        if quiet && in_flight == 0 && toggled_in != Some(c.cycles) {
            // Disk 0 idle: give back or take again its per-device pool (carve / return cycles).
            let d = disks[0].disk;
            let bytes =
                if d.dma_dev.device_pool().is_some() { 0 } else { kernel::platform::kernel().params.blk_inflight_kib as usize * 1024 };
            // (Refused under `dynamic`: nothing changes, nothing is counted.)
            if virtio_blk::hint_inflight(d, bytes).is_some_and(|o| o != kernel::platform::dma::HintOutcome::Unchanged) {
                c.hint_toggles += 1;
            }
            toggled_in = Some(c.cycles);
        }
        if in_cycle >= CYCLE {
            c.cycles += 1;
            cycle_start = now;
        }
        if now >= next_report {
            let (reclaimed, lent, migrated) = lend_delta(before);
            kprintln!(
                "  soak t={:>4}s: {} requests, {} MiB, {in_flight} in flight, {} usable slots, {} used; pageblocks reclaimed {reclaimed} ({migrated} pages migrated), lent again {lent}; errors {}",
                (now - t0).as_secs(),
                c.requests.iter().sum::<u64>(),
                c.bytes >> 20,
                m.usable_slots(),
                m.used_slots(),
                c.errors
            );
            next_report = now + Duration::from_secs(10);
        }
        if !submitting && in_flight == 0 {
            break;
        }
        idle(); // the completion interrupts, the SWIOTLB worker and the virtio-blk retry work
    }
    // Let the pool shrink once more with the disks idle, then flush both.
    let idle_from = time::uptime();
    while time::uptime() < idle_from + Duration::from_millis(dma().params.swiotlb_shrink_delay_ms * 4) {
        idle();
    }
    for d in disks.iter() {
        if let Err(x) = d.disk.flush(REQUEST_TIMEOUT) {
            c.error(format!("final flush of disk{}: {x}", d.disk.index));
        }
    }
    let (reclaimed, lent, migrated) = lend_delta(before);
    kprintln!(
        "  {} reads, {} writes, {} flushes; up to {} in flight; {} memory-pressure fills ({} movable pages); default pool usable slots {first_slots} -> peak {}, grew {} times, shrank {} times; pageblocks reclaimed {reclaimed} ({migrated} pages migrated), lent again {lent}; disk0 pool hints toggled {} times",
        c.requests[0], c.requests[1], c.requests[2], c.max_in_flight, c.fills, c.pressure_pages, c.peak_slots, c.grew, c.shrank, c.hint_toggles
    );
    kprintln!("  disk0 reset {} times with requests in flight ({} resets in all)", c.resets, disks[0].disk.resets());
    let (grew, shrank) = (c.grew, c.shrank);
    let forced_resets = c.resets;
    let errors = c.errors;
    let first = c.messages.first().cloned();
    let policy = m.policy();
    *STATE.lock() = Some(soak);
    kassert!(errors == 0, "{errors} errors, the first: {}", first.unwrap_or_default());
    if seconds >= RESET_AT.as_secs() + 5 {
        kassert!(forced_resets > 0, "no disk reset happened with requests in flight");
    }
    if policy == SwiotlbPolicy::Lend {
        // Carving disk0's device pool also reclaims pageblocks, but only a pool that grew can
        // lend pageblocks again (it starts with only `swiotlb_keep` of them as slots).
        kassert!(grew > 0 && reclaimed > 0, "the default pool never grew by reclaim");
        kassert!(shrank > 0 && lent > 0, "the default pool never lent pageblocks again");
        kassert!(migrated > 0, "reclaim never migrated a page out of a lent pageblock");
    }
    if policy == SwiotlbPolicy::Cma {
        kassert!(grew > 0 && migrated > 0, "the pool never grew by cma_alloc with pages migrated out of the CMA area");
        kassert!(lent > 0, "no chunk was given back to the CMA area");
    }
    Ok(())
}

/// When in each cycle disk0 is reset (under memory pressure, requests in flight).
const RESET_AT: Duration = Duration::from_secs(5);

/// Makes disk0 reset with the soak's requests in flight: a one-page read outside the model, whose
/// waiter gives up at once, so that the device holding it is reset (`blk_mq_timeout_work`) and
/// every request it held is taken back and requeued. True if a reset happened (the read may have
/// been done already, or still waiting: then nothing is reset and the caller tries again).
fn force_reset(disk: &'static Disk, buf: PhysAddr) -> bool {
    let before = disk.resets();
    if let Ok(ticket) = disk.test_queue_read(0, buf, 4096) {
        if virtio_blk::wait_for(disk, ticket, time::uptime()) == Err(BlkError::Timeout) {
            GIVEN_UP.fetch_add(1, Ordering::Relaxed);
        }
    }
    disk.resets() > before
}

/// The reads `force_reset` gave up on: disk0's only timeouts.
static GIVEN_UP: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Reads both disks whole (through bounces), compares every sector with the model, and prints
/// the model's CRC-32 of each disk for the host.
fn read_back_whole_disks() -> TestResult {
    let mut state = STATE.lock();
    let soak = state.as_mut().ok_or("the mix did not run")?;
    let buf = buffer(BUFFER_ORDER, true)?;
    let mut mismatches = 0u64;
    let mut crc_differs = Vec::new();
    for (i, d) in soak.disks.iter().enumerate() {
        let capacity = d.disk.config.capacity;
        let chunk = (d.disk.max_transfer().min(BUFFER_BYTES) / SECTOR) as u64;
        let (mut model_crc, mut disk_crc) = (kernel::crc32::Crc32::new(), kernel::crc32::Crc32::new());
        let (mut got, mut want) = ([0u8; SECTOR], [0u8; SECTOR]);
        let mut sector = 0;
        while sector < capacity {
            let n = chunk.min(capacity - sector);
            d.disk
                .test_read(sector, buf, n as usize * SECTOR, REQUEST_TIMEOUT)
                .map_err(|x| format!("disk{i}: read back at sector {sector}: {x}"))?;
            for k in 0..n {
                let s = sector + k;
                mem().read(buf + k * SECTOR as u64, &mut got);
                sector_pattern(i, s, d.generations[s as usize], &mut want);
                model_crc.update(&want);
                disk_crc.update(&got);
                if got != want {
                    mismatches += 1;
                    soak.counters
                        .error(format!("disk{i}: sector {s} (generation {}) differs from the model at the end", d.generations[s as usize]));
                }
            }
            sector += n;
        }
        soak.counters.bytes += capacity * SECTOR as u64;
        // What the host compares with the image file: the model's view, not what was read.
        kprintln!("disk{i} bytes={} crc32={:08x}", capacity * SECTOR as u64, model_crc.finish());
        if disk_crc.finish() != model_crc.finish() {
            crc_differs.push(format!("disk{i}: read back crc32={:08x}, the model's {:08x}", disk_crc.finish(), model_crc.finish()));
        }
    }
    ktest::free_buffer(buf, BUFFER_ORDER);
    let c = &soak.counters;
    let (reclaimed, lent, _) = lend_delta(&soak.before);
    kprintln!(
        "soak: {} requests, {} bytes, {reclaimed} reclaims, {lent} shrinks, {} errors",
        c.requests.iter().sum::<u64>(),
        c.bytes,
        c.errors
    );
    kassert!(mismatches == 0, "{mismatches} sectors differ from the model; {}", crc_differs.join("; "));
    Ok(())
}

fn no_misuse() -> TestResult {
    let stats = &dma().api.stats;
    kprintln!("  DMA {stats}");
    for d in virtio_blk::disks() {
        kprintln!("  disk{}: {:?}", d.index, d.stats);
        // disk0's only timeouts are the reads the soak gave up on to force its resets.
        let given_up = if d.index == 0 { GIVEN_UP.load(Ordering::Relaxed) } else { 0 };
        kassert_eq!(d.stats.timeouts.load(Ordering::Relaxed), given_up, "disk{} timeouts", d.index);
        kassert!(d.broken().is_none(), "disk{} broken: {:?}", d.index, d.broken());
    }
    kassert_eq!(stats.misuse.load(Ordering::Relaxed), 0);
    Ok(())
}
