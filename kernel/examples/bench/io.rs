//! Block I/O benchmarks on the virtio-blk disks: bounce cost (direct versus bounced buffers on
//! disk 0, same boot), what the negotiated virtio features buy (`bench-features`, booted with
//! `blk_indirect=` / `blk_event_idx=`) and per-device pools (disk 0 with and without its in-flight hint while
//! disk 1, behind the restricted pool, and disk 2, bouncing through the default pool, compete).
//!
//! A stream keeps `qd` requests in flight on one disk until its time is up; several streams run
//! at once from one loop. Completions come from the disks' interrupt handlers; the loop sleeps
//! in WFI with IRQs masked after finding nothing done (a pending IRQ still wakes it).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use core::time::Duration;

use drivers::timer::arch_timer;
use kernel::block::Ticket;
use kernel::dma::device::BouncePolicy;
use kernel::ktest;
use kernel::mm::PhysAddr;
use kernel::platform::dma::{dma, set_inflight_hint, HintOutcome};
use kernel::platform::irq::{irq_time_ticks, set_irq_time_accounting};
use kernel::platform::virtio_blk::{self, BlkError, Disk};
use kernel::platform::{run_pending_work, Kernel};

use super::json::{array, numbers, Obj};
use super::measure::{memcpy_ns, memset_ns, non_aliasing_dst, now_ns};
use super::Options;

const SECTOR: u64 = 512;
/// Deepest queue a stream asks for: the whole queue (the disk takes that many with indirect
/// descriptors, 21 without; the rest of a deeper stream waits for room).
const MAX_QD: usize = virtio_blk::MAX_IN_FLIGHT;
pub(super) const BUF_ORDER: u8 = 4; // 64 KiB, the largest request measured

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Read,
    Write,
}

/// One stream of requests on one disk.
pub(super) struct Stream {
    pub(super) disk: &'static Disk,
    op: Op,
    random: bool,
    pub(super) size: usize,
    qd: usize,
    bufs: [PhysAddr; MAX_QD],
    tickets: [Option<Ticket>; MAX_QD],
    rng: u64,
    next_seq: u64,
    pub(super) ops: u64,
    first_error: Option<BlkError>,
}

impl Stream {
    pub(super) fn new(disk: &'static Disk, op: Op, random: bool, size: usize, qd: usize, bufs: &[PhysAddr]) -> Self {
        let mut b = [0; MAX_QD];
        b[..qd].copy_from_slice(&bufs[..qd]);
        Self {
            disk,
            op,
            random,
            size,
            qd,
            bufs: b,
            tickets: [None; MAX_QD],
            rng: 0x9e37_79b9_7f4a_7c15,
            next_seq: 0,
            ops: 0,
            first_error: None,
        }
    }

    /// The next request's byte offset: sequential, or uniformly random, aligned to the size.
    fn next_offset(&mut self) -> u64 {
        let blocks = (self.disk.size_bytes() / self.size as u64).max(1);
        let n = if self.random {
            // xorshift64*: cheap, the same sequence every boot.
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % blocks
        } else {
            let n = self.next_seq % blocks;
            self.next_seq += 1;
            n
        };
        n * self.size as u64
    }

    /// Queues requests into every free place, as one batch: published as they are queued,
    /// the device notified once when the plug ends (Linux `blk_start_plug`/`blk_finish_plug`).
    /// Queues a request in every free place; returns how many it queued.
    fn fill(&mut self) -> usize {
        let disk = self.disk;
        let plug = disk.plug();
        let mut queued_now = 0;
        for i in 0..self.qd {
            if self.tickets[i].is_some() || self.first_error.is_some() {
                continue;
            }
            let sector = self.next_offset() / SECTOR;
            // SAFETY: place `i`'s buffer is the stream's (allocated by `alloc_bufs`), used by
            // this one request until its ticket is collected (`tickets[i]`), read by nobody.
            let queued = unsafe {
                match self.op {
                    Op::Read => plug.queue_read(sector, self.bufs[i], self.size),
                    Op::Write => plug.queue_write(sector, self.bufs[i], self.size),
                }
            };
            match queued {
                Ok(t) => {
                    self.tickets[i] = Some(t);
                    queued_now += 1;
                }
                // The disk's table is full (a stream deeper than the disk takes): the rest wait
                // for the next pass, without hammering the lock meanwhile.
                Err(BlkError::Busy) => break,
                Err(e) => self.first_error = Some(e),
            }
        }
        plug.finish();
        queued_now
    }

    /// Collects finished requests; returns how many.
    fn collect(&mut self) -> usize {
        let mut n = 0;
        for t in self.tickets.iter_mut() {
            if let Some(ticket) = *t {
                if let Some(outcome) = self.disk.poll(ticket) {
                    *t = None;
                    n += 1;
                    match outcome {
                        Ok(()) => self.ops += 1,
                        Err(e) => {
                            self.first_error.get_or_insert(e);
                        }
                    }
                }
            }
        }
        n
    }

    fn outstanding(&self) -> bool {
        self.tickets.iter().any(Option::is_some)
    }
}

/// Runs `streams` together for `budget`, then drains them. Returns the elapsed nanoseconds
/// (from the first request to the last completion).
fn run(streams: &mut [Stream], budget: Duration) -> Result<u64, String> {
    run_waiting(streams, budget, true)
}

/// Nanoseconds of a run: from the first request to the last completion, and the part of it the
/// CPU spent asleep in WFI waiting for a completion (so `elapsed_ns - idle_ns` is the CPU time
/// of the submissions, the interrupt handlers and the loop: the guest side of the I/O).
#[derive(Clone, Copy, Default)]
struct RunTime {
    elapsed_ns: u64,
    idle_ns: u64,
    /// Busy time the loop spent for scrubbing: its scrub steps (their search and locks as well as
    /// the zeros), and the whole of the passes that only scrubbed (submitted and collected
    /// nothing).
    scrub_ns: u64,
    /// The scrub steps after which the loop found a completion to collect: the most the
    /// scrubbing can have delayed the collection of requests (a completion that came during
    /// such a step waited for its end).
    scrub_before_collect_ns: u64,
    /// The requests' own path, apart from the loop that waits for them: the time of the fills
    /// that queued something and of the collections that found something (each less the
    /// interrupt handlers that ran meanwhile), and of the interrupt handlers
    /// (`platform::irq::irq_time_ticks`). Under `-icount`, exact instruction counts.
    submit_ns: u64,
    collect_ns: u64,
    irq_ns: u64,
}

impl core::ops::AddAssign for RunTime {
    /// Sums the runs' times (the slices of one placement's cell).
    fn add_assign(&mut self, t: RunTime) {
        self.elapsed_ns += t.elapsed_ns;
        self.idle_ns += t.idle_ns;
        self.scrub_ns += t.scrub_ns;
        self.scrub_before_collect_ns += t.scrub_before_collect_ns;
        self.submit_ns += t.submit_ns;
        self.collect_ns += t.collect_ns;
        self.irq_ns += t.irq_ns;
    }
}

impl RunTime {
    /// The busy-time fields of a cell that completed `ops` requests: time asleep, time busy,
    /// and busy time per request.
    fn add_busy(&self, o: &mut Obj, ops: u64) {
        let busy_ns = self.elapsed_ns - self.idle_ns;
        o.int("idle_ns", self.idle_ns)
            .int("scrub_ns", self.scrub_ns)
            .int("scrub_before_collect_ns", self.scrub_before_collect_ns)
            .int("busy_ns", busy_ns)
            .num("busy_ns_per_req", if ops > 0 { busy_ns as f64 / ops as f64 } else { f64::NAN })
            .int("submit_ns", self.submit_ns)
            .int("collect_ns", self.collect_ns)
            .int("irq_ns", self.irq_ns);
    }
}

/// How long a polling [`run_waiting`] waits after a pass that found nothing done.
const POLL_BACKOFF_NS: u64 = 5_000;

/// [`run`], sleeping in WFI between completions or (`wfi` false) polling: a completion
/// interrupt routed to another CPU does not wake this one, so with the disks' interrupts
/// elsewhere the loop would sleep until its next tick.
pub(super) fn run_waiting(streams: &mut [Stream], budget: Duration, wfi: bool) -> Result<u64, String> {
    run_timed(streams, budget, wfi, false).map(|t| t.elapsed_ns)
}

/// [`run_waiting`], also counting the time asleep in WFI. The interrupt handlers run after the
/// WFI, once IRQs are unmasked, so their time counts as busy. With `scrub`, each pass runs one
/// bounded scrub step after it submitted what it could and before it looks for completions, as
/// `platform::idle()` does before its WFI (a CPU waiting for I/O zeroes free bounce slots while
/// the device works on the requests just submitted, not between a completion and the next
/// submission); it sleeps only once a step finds nothing to zero, and a completion makes it
/// scrub again. The steps count as busy time.
fn run_timed(streams: &mut [Stream], budget: Duration, wfi: bool, scrub: bool) -> Result<RunTime, String> {
    let t0 = now_ns();
    let irq_ticks_before = irq_time_ticks();
    let (mut submit_ns, mut collect_ns) = (0, 0);
    let mut idle_ns = 0;
    let mut scrub_ns = 0;
    let mut scrub_before_collect_ns = 0;
    // No dirty free slot was left at the last step; a completion frees (dirty) slots again.
    let mut scrubbed_all = !scrub;
    let deadline = t0 + budget.as_nanos() as u64;
    let hard_deadline = deadline + 10_000_000_000;
    loop {
        let now = now_ns();
        let submitted = if now < deadline {
            let (n, ns) = apart_from_irqs(|| streams.iter_mut().map(Stream::fill).sum());
            if n > 0 {
                submit_ns += ns;
            }
            n
        } else {
            0
        };
        if !streams.iter().any(Stream::outstanding) {
            break;
        }
        if now > hard_deadline {
            return Err(String::from("requests did not complete within 10 s of the end"));
        }
        // The deferred-request retry, the SWIOTLB worker.
        run_pending_work();
        // The device has the requests just submitted: one scrub step. IRQs are masked for it, so
        // that a completion's handler (for a bounced read, the copy back) is never timed as
        // scrubbing; a completion that comes meanwhile is handled when the step ends, before the
        // collection below, which comes after the step in either case.
        let mut step_ns = None;
        if !scrubbed_all {
            let daif = boot::cpu::local_irq_save();
            let t = now_ns();
            scrubbed_all = kernel::platform::dma::scrub_step() == 0;
            step_ns = Some(now_ns() - t);
            boot::cpu::local_irq_restore(daif);
        }
        let daif = boot::cpu::local_irq_save();
        let (done, ns) = apart_from_irqs(|| streams.iter_mut().map(Stream::collect).sum::<usize>());
        if done != 0 {
            collect_ns += ns;
        }
        let idle = done == 0 && !kernel::work::SYSTEM_WQ.has_pending();
        if let Some(step) = step_ns {
            // A pass that submitted and collected nothing ran for the scrubbing: all of it is
            // scrub time (up to here, before any sleep); otherwise the step alone is.
            scrub_ns += if submitted == 0 && done == 0 { now_ns() - now } else { step };
            if done != 0 {
                scrub_before_collect_ns += step;
            }
        }
        if done != 0 {
            scrubbed_all = !scrub;
        }
        if wfi && idle && scrubbed_all {
            // Wakes on the pending completion IRQ even though IRQs are masked; the periodic
            // tick is the safety net.
            let asleep = now_ns();
            boot::cpu::wait_for_interrupt();
            idle_ns += now_ns() - asleep;
        }
        boot::cpu::local_irq_restore(daif);
        if !wfi && idle && scrubbed_all {
            // Polling: back off a little, off the disks' locks, that the completion handlers
            // on other CPUs take.
            let until = now_ns() + POLL_BACKOFF_NS;
            while now_ns() < until {
                core::hint::spin_loop();
            }
        }
    }
    let elapsed = now_ns() - t0;
    for s in streams.iter() {
        if let Some(e) = &s.first_error {
            return Err(format!("disk{}: {e}", s.disk.index));
        }
    }
    let irq_ns = ticks_ns(irq_time_ticks() - irq_ticks_before);
    Ok(RunTime { elapsed_ns: elapsed, idle_ns, scrub_ns, scrub_before_collect_ns, submit_ns, collect_ns, irq_ns })
}

/// What `f` returns, and the nanoseconds it took less those of the interrupt handlers that ran
/// meanwhile (which [`run_timed`] counts apart).
fn apart_from_irqs<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let (t0, irq0) = (arch_timer::ticks(), irq_time_ticks());
    let r = f();
    let ticks = (arch_timer::ticks() - t0).saturating_sub(irq_time_ticks() - irq0);
    (r, ticks_ns(ticks))
}

/// One placement's slices of a [`bounce_cost`] cell, summed: their run times, the disk's counters
/// (interrupts, kicks, completions, bounced and direct data buffers), the pools' read and scrub
/// counters ([`read_copy_counters`]), the bounce copies (count, bytes, timer ticks); and each
/// slice's latency.
#[derive(Default)]
struct Sums {
    time: RunTime,
    disk: [u64; 5],
    reads: [u64; 3],
    copies: [u64; 3],
    slice_lat_ns: Vec<f64>,
}

/// Adds `after - before` to `sum`, counter by counter.
fn add_deltas<const N: usize>(sum: &mut [u64; N], before: &[u64; N], after: &[u64; N]) {
    for ((s, b), a) in sum.iter_mut().zip(before).zip(after) {
        *s += a - b;
    }
}

/// The default SWIOTLB's pools' counts of bounced reads that skipped their copy-in (clean slots)
/// and that copied in, and of slots scrubbed, summed.
fn read_copy_counters() -> [u64; 3] {
    dma().manager.pools().map(|p| p.stats()).fold([0u64; 3], |[skipped, copied, scrubbed], s| {
        [skipped + s.reads_copy_in_skipped, copied + s.reads_copied_in, scrubbed + s.slots_scrubbed]
    })
}

pub(super) fn alloc_bufs(n: usize, beyond_window: bool) -> Result<Vec<PhysAddr>, String> {
    (0..n).map(|_| ktest::buffer(BUF_ORDER, beyond_window)).collect()
}

pub(super) fn stream_json(s: &Stream, elapsed_ns: u64) -> Obj {
    let secs = elapsed_ns as f64 / 1e9;
    let mut o = Obj::new();
    o.int("disk", s.disk.index as u64)
        .str("op", if s.op == Op::Read { "read" } else { "write" })
        .str("pattern", if s.random { "rand" } else { "seq" })
        .int("size", s.size as u64)
        .int("qd", s.qd as u64)
        .int("ops", s.ops)
        .int("elapsed_ns", elapsed_ns)
        .num("iops", s.ops as f64 / secs)
        .num("mib_s", (s.ops * s.size as u64) as f64 / secs / (1024.0 * 1024.0))
        .num("lat_ns", if s.ops > 0 { elapsed_ns as f64 * s.qd as f64 / s.ops as f64 } else { f64::NAN });
    o
}

/// Bounce cost: every pattern x op x size x queue depth, direct and bounced alternated in the
/// same boot, with the memcpy (and memset) of each size measured in between. With `slices=<N>`
/// each cell's time is split into N slices, the placements alternated ABBA (direct then bounced
/// in the even slices, bounced then direct in the odd ones), so that a drift of the host's I/O
/// speed hits both alike; each placement's cell sums its slices (one stream, the counters taken
/// around each slice) and lists each slice's latency. Per cell also the interrupts and kicks per
/// request and the CPU's busy time (the run minus its time asleep in WFI). The loop waits as the
/// kernel's idle does (`platform::idle()`: a bounded scrub step of free bounce slots before it
/// sleeps), and the pool is scrubbed before each slice, as idle time between bursts would have
/// done; the scrub steps count as busy time.
pub(crate) fn bounce_cost(k: &'static Kernel, opts: &Options, out: &mut Obj) -> Result<(), String> {
    let disk = virtio_blk::disk(0).map_err(ktest::err)?;
    let direct = alloc_bufs(MAX_QD, false)?;
    let bounced = alloc_bufs(MAX_QD, true)?;
    let budget = Duration::from_millis(opts.cell_ms);
    let force = k.params.swiotlb.force == Some(true);
    // The throttle bench.sh gave disk 0 (QEMU `throttling.bps-total`, bytes/s; 0: none): the
    // kernel cannot see it, so the command line says it and the results carry it.
    out.str("device_policy", &format!("{:?}", disk.dma_dev.policy()))
        .bool("force", force)
        .int("disk_bytes", disk.size_bytes())
        .int("throttle_bps", opts.throttle_bps)
        .int("warmup_ms", opts.warmup_ms);
    // Interrupts, kicks, completions, bounced and direct data buffers.
    let disk_counters = || {
        let s = &disk.stats;
        [&s.irqs, &s.kicks, &s.completed_in_irq, &s.data_bounced, &s.data_direct].map(|c| c.load(Ordering::Relaxed))
    };
    // Bounce copies, their bytes and timer ticks.
    let copy_timing = || {
        let (n, bytes, ticks) = kernel::dma::swiotlb::copy_timing();
        [n, bytes, ticks]
    };
    let mut cells = Vec::new();
    let mut memcpy = Vec::new();
    let sizes: &[usize] = &[4096, 64 * 1024];
    // Each bounce copy reads the timer twice: what the copies cost in place (cell field
    // `bounce_copy_ns`), beside the memcpy references measured on their own. Not under
    // `untimed` (`-icount` runs: the timer reads would count as the bounce's instructions).
    kernel::dma::swiotlb::set_copy_timing(opts.time_copies);
    // The completion handlers' time, for the requests' own path (`RunTime::irq_ns`).
    set_irq_time_accounting(true);
    let qds: &[usize] = if opts.qd1_only { &[1] } else { &[1, 16] };
    let ref_src = ktest::buffer(6, false)?;
    for &size in sizes {
        // The copy a bounce makes: from a slot inside the window to a buffer beyond it (at a
        // place whose pages do not alias the buffer's in QEMU's TLB; see measure.rs).
        let ns = memcpy_ns(bounced[0], non_aliasing_dst(ref_src, 256 << 10, bounced[0], size), size);
        let aliasing = memcpy_ns(bounced[0], direct[0], size);
        let memset = memset_ns(bounced[0], size);
        let mut m = Obj::new();
        m.int("size", size as u64).num("ns", ns).num("aliasing_ns", aliasing).num("memset_ns", memset);
        memcpy.push(m.finish());
    }
    ktest::free_buffer(ref_src, 6);
    let slices = opts.slices;
    let slice_budget = budget / slices;
    for random in [false, true] {
        for op in [Op::Read, Op::Write] {
            for &size in sizes {
                for &qd in qds {
                    // One stream per placement for all its slices: the offsets and the random
                    // sequence go on, the ops add up.
                    let mut streams = [&direct, &bounced].map(|bufs| Stream::new(disk, op, random, size, qd, bufs));
                    let mut sums = [Sums::default(), Sums::default()];
                    for slice in 0..slices {
                        // ABBA: direct first in the even slices, bounced first in the odd ones.
                        for p in if slice % 2 == 0 { [0, 1] } else { [1, 0] } {
                            let bufs = if p == 0 { &direct } else { &bounced };
                            if slice == 0 && opts.warmup_ms > 0 {
                                run(&mut [Stream::new(disk, op, random, size, qd, bufs)], Duration::from_millis(opts.warmup_ms))?;
                            }
                            let disk_before = disk_counters();
                            while kernel::platform::dma::scrub_step() != 0 {}
                            let copies_before = copy_timing();
                            let reads_before = read_copy_counters();
                            let ops_before = streams[p].ops;
                            let t = run_timed(core::slice::from_mut(&mut streams[p]), slice_budget, true, true)?;
                            let disk_after = disk_counters();
                            let reads_after = read_copy_counters();
                            let copies_after = copy_timing();
                            let sum = &mut sums[p];
                            sum.time += t;
                            add_deltas(&mut sum.disk, &disk_before, &disk_after);
                            add_deltas(&mut sum.reads, &reads_before, &reads_after);
                            add_deltas(&mut sum.copies, &copies_before, &copies_after);
                            let ops = streams[p].ops - ops_before;
                            sum.slice_lat_ns.push(if ops > 0 { t.elapsed_ns as f64 * qd as f64 / ops as f64 } else { f64::NAN });
                        }
                    }
                    for (p, placement) in ["direct", "bounced"].into_iter().enumerate() {
                        let (s, sum) = (&streams[p], &sums[p]);
                        let [irqs, kicks, completed, data_bounced, data_direct] = sum.disk;
                        let per = |n: u64| if completed > 0 { n as f64 / completed as f64 } else { f64::NAN };
                        let mut o = stream_json(s, sum.time.elapsed_ns);
                        o.str("placement", placement)
                            .int("slices", slices)
                            .int("data_bounced", data_bounced)
                            .int("data_direct", data_direct)
                            .int("irqs", irqs)
                            .int("kicks", kicks)
                            .int("completed", completed)
                            .num("irqs_per_req", per(irqs))
                            .num("kicks_per_req", per(kicks))
                            // Bounced read data buffers (mapped `no_copy_in`; not the header or
                            // the status byte) that found clean slots and skipped their copy-in,
                            // and that copied in.
                            .int("reads_copy_in_skipped", sum.reads[0])
                            .int("reads_copied_in", sum.reads[1])
                            .int("slots_scrubbed", sum.reads[2])
                            // Every bounce copy of the cell (data, and the header's and status
                            // byte's), timed where it ran.
                            .int("bounce_copies", sum.copies[0])
                            .int("bounce_copy_bytes", sum.copies[1])
                            .int("bounce_copy_ns", ticks_ns(sum.copies[2]))
                            .raw("slice_lat_ns", numbers(sum.slice_lat_ns.iter().copied()));
                        sum.time.add_busy(&mut o, s.ops);
                        cells.push(o.finish());
                    }
                }
            }
        }
    }
    kernel::dma::swiotlb::set_copy_timing(false);
    set_irq_time_accounting(false);
    out.raw("memcpy", array(memcpy)).raw("cells", array(cells));
    Ok(())
}

/// Generic-timer ticks in nanoseconds.
fn ticks_ns(ticks: u64) -> u64 {
    drivers::timer::arch_timer::ticks_to_duration(ticks).as_nanos() as u64
}

/// What clean slots save (`swiotlb_clean_slots`, `docs/DESIGN.md` "Clean slots"): bounced reads
/// on disk 0, sequential and random, 4 and 64 KiB, queue depth 1 and 16, with clean-slot
/// tracking on and off (off: Linux's copy-in for every bounced read) alternated cell by cell in
/// the same boot. On, the loop waits as an idle CPU does (a scrub step before it sleeps), and
/// the pool is scrubbed whole before the cell, as the idle time between bursts would have done;
/// off, nothing is scrubbed. Per cell: throughput, the CPU's busy time per request (its scrub
/// steps included), the reads that skipped their copy-in and those copied in, the slots zeroed.
pub(crate) fn clean_slots(opts: &Options, out: &mut Obj) -> Result<(), String> {
    let disk = virtio_blk::disk(0).map_err(ktest::err)?;
    let bounced = alloc_bufs(MAX_QD, true)?;
    let budget = Duration::from_millis(opts.cell_ms);
    let m = dma().manager;
    let was_on = m.default_pool().clean_slots();
    let counters = read_copy_counters;
    let qds: &[usize] = if opts.qd1_only { &[1] } else { &[1, 16] };
    let mut cells = Vec::new();
    for random in [false, true] {
        for size in [4096usize, 64 * 1024] {
            for &qd in qds {
                for clean in [true, false] {
                    m.set_clean_slots(clean);
                    while clean && kernel::platform::dma::scrub_step() != 0 {}
                    let before = counters();
                    let mut s = [Stream::new(disk, Op::Read, random, size, qd, &bounced)];
                    let t = run_timed(&mut s, budget, true, clean)?;
                    let after = counters();
                    let mut o = stream_json(&s[0], t.elapsed_ns);
                    o.bool("clean_slots", clean)
                        .int("reads_copy_in_skipped", after[0] - before[0])
                        .int("reads_copied_in", after[1] - before[1])
                        .int("slots_scrubbed", after[2] - before[2]);
                    t.add_busy(&mut o, s[0].ops);
                    cells.push(o.finish());
                }
            }
        }
    }
    m.set_clean_slots(was_on);
    out.raw("cells", array(cells));
    Ok(())
}

/// What the negotiated features buy: random reads and writes of 4 and 64 KiB on disk 0 at
/// queue depths 1, 16, 32 and 64, buffers inside the DMA window (no data bounce, so the driver
/// and the device, not the copies, are measured). The boot's `blk_indirect=` and
/// `blk_event_idx=` say which features were negotiated; per cell the interrupts and
/// notifications (kicks) per request are counted.
pub(crate) fn virtio_features(_k: &'static Kernel, opts: &Options, out: &mut Obj) -> Result<(), String> {
    let disk = virtio_blk::disk(0).map_err(ktest::err)?;
    let bufs = alloc_bufs(MAX_QD, false)?;
    let budget = Duration::from_millis(opts.cell_ms);
    out.bool("indirect", disk.indirect())
        .bool("event_idx", disk.event_idx())
        .int("max_in_flight", disk.max_in_flight() as u64)
        .int("features", disk.features);
    let counters = || {
        let s = &disk.stats;
        [&s.irqs, &s.kicks, &s.completed_in_irq, &s.busy].map(|c| c.load(Ordering::Relaxed))
    };
    let mut cells = Vec::new();
    for op in [Op::Read, Op::Write] {
        for size in [4096, 64 * 1024] {
            for qd in [1, 16, 32, 64] {
                let before = counters();
                let mut s = [Stream::new(disk, op, true, size, qd, &bufs)];
                let elapsed = run(&mut s, budget)?;
                let after = counters();
                let [irqs, kicks, completed, busy] = [0, 1, 2, 3].map(|i| after[i] - before[i]);
                let per = |n: u64| if completed > 0 { n as f64 / completed as f64 } else { f64::NAN };
                let mut o = stream_json(&s[0], elapsed);
                o.int("irqs", irqs)
                    .int("kicks", kicks)
                    .int("completed", completed)
                    .int("busy", busy)
                    .num("irqs_per_req", per(irqs))
                    .num("kicks_per_req", per(kicks));
                cells.push(o.finish());
            }
        }
    }
    out.raw("cells", array(cells));
    Ok(())
}

/// Times one of the default pool's area locks was found taken.
fn pool_contention() -> u64 {
    dma().manager.default_pool().stats().area_lock_contention
}

/// Per-device pools: 64 KiB bounced reads on disk 0 (QD 8), disk 1 (restricted pool, QD 4) and
/// disk 2 (default pool, QD 8) at once, alternating disk 0 without and with its in-flight hint.
pub(crate) fn device_pools(_k: &'static Kernel, opts: &Options, out: &mut Obj) -> Result<(), String> {
    let disks: Vec<&'static Disk> = virtio_blk::disks().collect();
    if disks.len() < 3 {
        return Err(format!("the pools benchmark needs three disks, found {}", disks.len()));
    }
    if !matches!(disks[1].dma_dev.policy(), BouncePolicy::Restricted(_)) {
        return Err(String::from("disk1 is not behind the restricted pool"));
    }
    let bufs: Vec<Vec<PhysAddr>> = (0..3).map(|_| alloc_bufs(8, true)).collect::<Result<_, _>>()?;
    let budget = Duration::from_millis(opts.cell_ms * 2);
    let hint_bytes = 2usize << 20;
    let mut runs = Vec::new();
    for round in 0..opts.pool_rounds {
        for hinted in [false, true] {
            let mut hint = String::from("none");
            if hinted {
                hint = format!("{:?}", set_inflight_hint(disks[0].dma_dev, hint_bytes).map_err(|e| format!("hint: {e:?}"))?);
            }
            let c0 = (pool_contention(), dma().manager.stats().misses, dma().api.stats.map_failures.load(Ordering::Relaxed));
            let disk_before: Vec<(u64, u64, u64, u64)> = disks[..3]
                .iter()
                .map(|d| {
                    (
                        d.stats.busy.load(Ordering::Relaxed),
                        d.stats.deferred_to_task.load(Ordering::Relaxed),
                        d.stats.started_in_irq.load(Ordering::Relaxed),
                        d.lock_contention(),
                    )
                })
                .collect();
            let qds = [8, 4, 8];
            let mut streams: Vec<Stream> = (0..3).map(|i| Stream::new(disks[i], Op::Read, false, 64 * 1024, qds[i], &bufs[i])).collect();
            let elapsed = run(&mut streams, budget)?;
            let per_disk: Vec<String> = streams
                .iter()
                .zip(&disk_before)
                .map(|(s, b)| {
                    let d = s.disk;
                    let mut o = stream_json(s, elapsed);
                    o.int("busy", d.stats.busy.load(Ordering::Relaxed) - b.0)
                        .int("deferred_to_task", d.stats.deferred_to_task.load(Ordering::Relaxed) - b.1)
                        .int("started_in_irq", d.stats.started_in_irq.load(Ordering::Relaxed) - b.2)
                        .int("disk_lock_contended", d.lock_contention() - b.3)
                        .bool("own_pool", d.dma_dev.device_pool().is_some());
                    o.finish()
                })
                .collect();
            let mut r = Obj::new();
            r.int("round", round as u64)
                .bool("hint", hinted)
                .str("hint_outcome", &hint)
                .int("default_pool_lock_contended", pool_contention() - c0.0)
                .int("pool_misses", dma().manager.stats().misses - c0.1)
                .int("map_failures", dma().api.stats.map_failures.load(Ordering::Relaxed) - c0.2)
                .num(
                    "total_mib_s",
                    streams.iter().map(|s| (s.ops * s.size as u64) as f64).sum::<f64>() / (elapsed as f64 / 1e9) / (1024.0 * 1024.0),
                )
                .raw("disks", array(per_disk));
            runs.push(r.finish());
            if hinted {
                match set_inflight_hint(disks[0].dma_dev, 0) {
                    Ok(HintOutcome::Returned) => {}
                    other => return Err(format!("returning disk0's pool: {other:?}")),
                }
            }
        }
    }
    out.int("hint_bytes", hint_bytes as u64).raw("runs", array(runs));
    Ok(())
}
