//! The kernel command line (`/chosen/bootargs`): Linux's parameters where Linux has one
//! (`swiotlb=`, `dma_debug=`, `loglevel=`), ours for the SWIOTLB policy and its tuning.
//!
//! Unknown or malformed parameters never stop the boot: each produces a [`Warning`] (printed at
//! boot) and the default stays.
#![forbid(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// How the default SWIOTLB pool is managed (`swiotlb_policy=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwiotlbPolicy {
    /// Classic Linux: the whole pool reserved as bounce slots, nothing lent.
    Static,
    /// Linux 6.6 SWIOTLB_DYNAMIC: the boot pool, transient pools on a miss (any context), more
    /// pools from the page allocator (with compaction) in a worker, never shrinking.
    Dynamic,
    /// This design: the spare part lent as MIGRATE_SWIOTLB, reclaimed and lent again.
    Lend,
    /// The rival upstream asked about: a small pool grown with chunks `cma_alloc`ed from the CMA
    /// area, each given back to the area once idle.
    Cma,
}

/// Linux's `swiotlb=<slots>[,<areas>][,force|noforce]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SwiotlbArg {
    /// Pool size in 2 KiB slots.
    pub slots: Option<u64>,
    /// Number of areas (locks).
    pub areas: Option<u32>,
    /// `force`: bounce every mapping; `noforce`: never bounce (`Some(false)`).
    pub force: Option<bool>,
}

/// Parsed parameters, with defaults for everything not given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelParams {
    /// `loglevel=error|warn|info|debug|trace` (or 0..7 as Linux's numbers: 3 error .. 7 debug).
    pub loglevel: log::LevelFilter,
    /// `swiotlb=`.
    pub swiotlb: SwiotlbArg,
    /// `dma_debug=on|off`.
    pub dma_debug: bool,
    /// `swiotlb_policy=static|dynamic|lend`.
    pub swiotlb_policy: SwiotlbPolicy,
    /// `swiotlb_reserve=<slots>`: free slots kept for mappings made in interrupt context.
    pub swiotlb_reserve: u64,
    /// `swiotlb_low_wm=<percent>`: below this share of free slots, the worker reclaims lent blocks.
    pub swiotlb_low_wm: u32,
    /// `swiotlb_high_wm=<percent>`: usage under this share for a while lets the pool shrink.
    pub swiotlb_high_wm: u32,
    /// `swiotlb_shrink_delay_ms=<ms>`: how long usage must stay low before shrinking.
    pub swiotlb_shrink_delay_ms: u64,
    /// `swiotlb_batch=<pageblocks>`: pageblocks reclaimed or lent per worker run.
    pub swiotlb_batch: u32,
    /// `swiotlb_keep=<pageblocks>`: pageblocks that always stay bounce slots (never lent; spread
    /// over the pool's areas; under `cma` the boot pool's size).
    pub swiotlb_keep: u32,
    /// `swiotlb_clean_slots=on|off`: track which free slots hold zeros, scrub dirty ones on idle
    /// CPUs, and let a `DmaAttrs::no_copy_in` read that gets clean slots skip its copy-in (on);
    /// off: every bounced mapping copies in, as Linux.
    pub swiotlb_clean_slots: bool,
    /// `swiotlb_colour_kib=<KiB>`: prefer bounce slots whose pages do not share a colour with the
    /// original buffer's, pages this far apart sharing one (a power of two of at least 512; the
    /// default 1024 is QEMU's softmmu TLB reach); 0: place slots without regard to it (Linux).
    pub swiotlb_colour_kib: u64,
    /// `swiotlb_slot_cache=<runs>`: page runs each area of the SWIOTLB's pools keeps allocated
    /// after their unmap, for the next mapping of a page or less, which then takes one with no
    /// slot search (at most `SLOT_CACHE_MAX`); 0: every mapping searches (Linux).
    pub swiotlb_slot_cache: usize,
    /// `swiotlb_reclaim_scrub=on|off`: zero memory the pool takes from the page allocator to
    /// grow (a reclaimed lent block, a `dynamic` extra pool, a CMA chunk) before its slots serve
    /// (on), or hand its slots out dirty and leave the zeroing to idle CPUs (off): a mapping on
    /// dirty slots copies in and zeroes the rest of its slots, so no stale byte reaches a device
    /// either way.
    pub swiotlb_reclaim_scrub: bool,
    /// `swiotlb_transient=on|off`: under `dynamic`, a mapping that misses every pool gets a
    /// transient pool (on, as Linux 6.6) or fails and is deferred (off).
    pub swiotlb_transient: bool,
    /// `swiotlb_dyn_pool=<pageblocks>`: size the `dynamic` worker first tries for a new pool,
    /// halving on failure (0: the boot pool's size, Linux's `default_nslabs`).
    pub swiotlb_dyn_pool: u32,
    /// `swiotlb_cma_chunk=<pageblocks>`: size of each chunk the `cma` policy allocates.
    pub swiotlb_cma_chunk: u32,
    /// `blk_inflight_kib=<KiB>`: the in-flight DMA a DMA-limited virtio-blk disk tells the DMA
    /// layer about at probe (enough earns it a per-device pool); 0: no hint.
    pub blk_inflight_kib: u64,
    /// `blk_indirect=on|off`: virtio-blk negotiates VIRTIO_F_INDIRECT_DESC when offered (each
    /// request then takes one ring descriptor, so the whole queue can be in flight). Off by
    /// default: it gained nothing beyond the noise in the benchmark (docs/EVALUATION.md).
    pub blk_indirect: bool,
    /// `blk_event_idx=on|off`: virtio-blk negotiates VIRTIO_F_RING_EVENT_IDX when offered. Off by
    /// default: it saved no notification and no time in the benchmark (docs/EVALUATION.md).
    pub blk_event_idx: bool,
    /// `blk_retries=<n>`: how many times a virtio-blk request is resubmitted after the disk was
    /// reset under it (a timeout, a device caught breaking the protocol) before it fails with
    /// its reason (Linux: blk-mq requeues after `virtblk_restore`).
    pub blk_retries: u8,
    /// `demo=<mode>`: what the demo kernel runs (e.g. `read-verify`).
    pub demo: Option<String>,
    /// `cma=<size>` (Linux's, e.g. `cma=64M`): the size of the default CMA area, which overrides
    /// a `linux,cma-default` node; `Some(0)` disables it. The area is placed by the boot memory
    /// map, which reads it with [`early_cma`] before this parse runs.
    pub cma: Option<u64>,
    /// `irq_affinity=<irq>:<cpu>[,<irq>:<cpu>...]`: the CPU each listed SPI is routed to
    /// (Linux sets this per IRQ in `/proc/irq/<n>/smp_affinity`).
    pub irq_affinity: Vec<(u32, usize)>,
    /// `irq_spurious=<window>,<unhandled>`: a line with more than `unhandled` of `window`
    /// interrupts unhandled is disabled as stuck and its device polled (Linux `note_interrupt`;
    /// default 1000,990, Linux's 100000,99900; see `irq::spurious`). `noirqdebug` (Linux's):
    /// never.
    pub irq_spurious: crate::irq::spurious::SpuriousConfig,
    /// `ktest=<name>` (repeatable): an in-QEMU test kernel runs only the cases whose name
    /// contains one of these words, as libtest's filters do (`cargo test --test dma NAME` gets
    /// here through `qemu-run.sh`). Empty: every case.
    pub ktest_filters: Vec<String>,
    /// `ktest_skip=<name>` (repeatable): cases whose name contains one of these words are
    /// skipped (libtest's `--skip`).
    pub ktest_skips: Vec<String>,
}

impl Default for KernelParams {
    fn default() -> Self {
        Self {
            loglevel: log::LevelFilter::Info,
            swiotlb: SwiotlbArg::default(),
            dma_debug: false,
            swiotlb_policy: SwiotlbPolicy::Lend,
            swiotlb_reserve: 256,
            swiotlb_low_wm: 25,
            swiotlb_high_wm: 10,
            swiotlb_shrink_delay_ms: 200,
            swiotlb_batch: 2,
            swiotlb_keep: 2,
            swiotlb_clean_slots: true,
            swiotlb_colour_kib: 1024,
            swiotlb_slot_cache: 8,
            swiotlb_reclaim_scrub: false,
            swiotlb_transient: true,
            swiotlb_dyn_pool: 0,
            swiotlb_cma_chunk: 2,
            blk_inflight_kib: 4096,
            blk_indirect: false,
            blk_event_idx: false,
            blk_retries: 3,
            demo: None,
            cma: None,
            irq_affinity: Vec::new(),
            irq_spurious: crate::irq::spurious::SpuriousConfig::DEFAULT,
            ktest_filters: Vec::new(),
            ktest_skips: Vec::new(),
        }
    }
}

impl KernelParams {
    /// Whether an in-QEMU test case named `name` runs, by libtest's rules: its name contains
    /// one of the `ktest=` words (or there are none) and none of the `ktest_skip=` words.
    /// `qemu-run.sh` makes these words from `cargo test --test SUITE NAME -- --skip OTHER`.
    pub fn ktest_selects(&self, name: &str) -> bool {
        let has = |words: &[String]| words.iter().any(|w| name.contains(w.as_str()));
        (self.ktest_filters.is_empty() || has(&self.ktest_filters)) && !has(&self.ktest_skips)
    }
}

/// A parameter that was ignored, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The word from the command line.
    pub word: String,
    /// Why it was ignored.
    pub why: &'static str,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bootargs: ignoring '{}': {}", self.word, self.why)
    }
}

/// Parses a command line. Never fails: bad words become warnings and keep the default.
pub fn parse(cmdline: &str) -> (KernelParams, Vec<Warning>) {
    let mut p = KernelParams::default();
    let mut warnings = Vec::new();
    for word in cmdline.split_ascii_whitespace() {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        let result: Result<(), &'static str> = match (key, value) {
            ("loglevel", Some(v)) => parse_loglevel(v).map(|l| p.loglevel = l),
            ("swiotlb", Some(v)) => parse_swiotlb(v).map(|s| p.swiotlb = s),
            ("dma_debug", Some(v)) => parse_on_off(v).map(|b| p.dma_debug = b),
            ("swiotlb_policy", Some(v)) => parse_policy(v).map(|policy| p.swiotlb_policy = policy),
            ("swiotlb_reserve", Some(v)) => parse_num(v, 0, 1 << 20).map(|n| p.swiotlb_reserve = n),
            ("swiotlb_low_wm", Some(v)) => parse_num(v, 0, 100).map(|n| p.swiotlb_low_wm = n as u32),
            ("swiotlb_high_wm", Some(v)) => parse_num(v, 0, 100).map(|n| p.swiotlb_high_wm = n as u32),
            ("swiotlb_shrink_delay_ms", Some(v)) => parse_num(v, 0, 3_600_000).map(|n| p.swiotlb_shrink_delay_ms = n),
            ("swiotlb_batch", Some(v)) => parse_num(v, 1, 1024).map(|n| p.swiotlb_batch = n as u32),
            ("swiotlb_keep", Some(v)) => parse_num(v, 0, 1024).map(|n| p.swiotlb_keep = n as u32),
            ("swiotlb_transient", Some(v)) => parse_on_off(v).map(|b| p.swiotlb_transient = b),
            ("swiotlb_clean_slots", Some(v)) => parse_on_off(v).map(|b| p.swiotlb_clean_slots = b),
            ("swiotlb_colour_kib", Some(v)) => parse_colour_kib(v).map(|n| p.swiotlb_colour_kib = n),
            ("swiotlb_slot_cache", Some(v)) => {
                parse_num(v, 0, crate::dma::swiotlb::SLOT_CACHE_MAX as u64).map(|n| p.swiotlb_slot_cache = n as usize)
            }
            ("swiotlb_reclaim_scrub", Some(v)) => parse_on_off(v).map(|b| p.swiotlb_reclaim_scrub = b),
            ("swiotlb_dyn_pool", Some(v)) => parse_num(v, 0, 1024).map(|n| p.swiotlb_dyn_pool = n as u32),
            ("swiotlb_cma_chunk", Some(v)) => parse_num(v, 1, 1024).map(|n| p.swiotlb_cma_chunk = n as u32),
            ("blk_inflight_kib", Some(v)) => parse_num(v, 0, 1 << 20).map(|n| p.blk_inflight_kib = n),
            ("blk_indirect", Some(v)) => parse_on_off(v).map(|b| p.blk_indirect = b),
            ("blk_event_idx", Some(v)) => parse_on_off(v).map(|b| p.blk_event_idx = b),
            ("blk_retries", Some(v)) => parse_num(v, 0, 16).map(|n| p.blk_retries = n as u8),
            ("cma", Some(v)) => parse_cma(v).map(|n| p.cma = Some(n)),
            ("irq_affinity", Some(v)) => parse_irq_affinity(v).map(|a| p.irq_affinity = a),
            ("irq_spurious", Some(v)) => parse_irq_spurious(v).map(|c| p.irq_spurious = c),
            ("noirqdebug", None) => {
                p.irq_spurious = crate::irq::spurious::SpuriousConfig::OFF;
                Ok(())
            }
            ("ktest", Some(v)) if !v.is_empty() => {
                p.ktest_filters.push(String::from(v));
                Ok(())
            }
            ("ktest_skip", Some(v)) if !v.is_empty() => {
                p.ktest_skips.push(String::from(v));
                Ok(())
            }
            ("demo", Some(v)) if !v.is_empty() => {
                p.demo = Some(String::from(v));
                Ok(())
            }
            (
                "loglevel"
                | "swiotlb"
                | "dma_debug"
                | "swiotlb_policy"
                | "swiotlb_reserve"
                | "swiotlb_low_wm"
                | "swiotlb_high_wm"
                | "swiotlb_shrink_delay_ms"
                | "swiotlb_batch"
                | "swiotlb_keep"
                | "swiotlb_transient"
                | "swiotlb_clean_slots"
                | "swiotlb_colour_kib"
                | "swiotlb_slot_cache"
                | "swiotlb_reclaim_scrub"
                | "swiotlb_dyn_pool"
                | "swiotlb_cma_chunk"
                | "blk_inflight_kib"
                | "blk_indirect"
                | "blk_event_idx"
                | "blk_retries"
                | "demo"
                | "cma"
                | "irq_affinity"
                | "irq_spurious"
                | "ktest"
                | "ktest_skip",
                _,
            ) => Err("needs a value (key=value)"),
            _ => Err("unknown parameter"),
        };
        if let Err(why) = result {
            warnings.push(Warning { word: String::from(word), why });
        }
    }
    if p.swiotlb_high_wm > p.swiotlb_low_wm && p.swiotlb_low_wm != 0 {
        // Shrinking above the grow mark would oscillate: keep the defaults.
        warnings.push(Warning {
            word: alloc::format!("swiotlb_high_wm={}", p.swiotlb_high_wm),
            why: "must not exceed swiotlb_low_wm (the pool would grow and shrink in turn); using the defaults",
        });
        let d = KernelParams::default();
        p.swiotlb_low_wm = d.swiotlb_low_wm;
        p.swiotlb_high_wm = d.swiotlb_high_wm;
    }
    (p, warnings)
}

/// `<window>,<unhandled>` with `0 < unhandled < window <= 10^7`.
fn parse_irq_spurious(v: &str) -> Result<crate::irq::spurious::SpuriousConfig, &'static str> {
    let (window, unhandled) = v.split_once(',').ok_or("expected <window>,<unhandled>")?;
    let window = parse_num(window, 2, 10_000_000)? as u32;
    let unhandled = parse_num(unhandled, 1, 10_000_000)? as u32;
    if unhandled >= window {
        return Err("unhandled must be below window");
    }
    Ok(crate::irq::spurious::SpuriousConfig { window, unhandled })
}

/// `swiotlb_colour_kib=`: 0, or a power of two no smaller than the SWIOTLB's smallest period.
fn parse_colour_kib(v: &str) -> Result<u64, &'static str> {
    let min = crate::dma::swiotlb::MIN_COLOUR_PERIOD / 1024;
    match parse_num(v, 0, 1 << 30)? {
        0 => Ok(0),
        n if n >= min && n.is_power_of_two() => Ok(n),
        _ => Err("expected 0 or a power of two of at least 512"),
    }
}

fn parse_num(v: &str, min: u64, max: u64) -> Result<u64, &'static str> {
    let n = if let Some(hex) = v.strip_prefix("0x") { u64::from_str_radix(hex, 16) } else { v.parse::<u64>() };
    let n = n.map_err(|_| "not a number")?;
    if n < min || n > max {
        return Err("out of range");
    }
    Ok(n)
}

/// Linux `memparse()`: a decimal or `0x` number with an optional `K`, `M`, `G` or `T` suffix.
fn parse_size(v: &str) -> Result<u64, &'static str> {
    let (digits, shift) = match v.as_bytes().last() {
        Some(b'k' | b'K') => (&v[..v.len() - 1], 10),
        Some(b'm' | b'M') => (&v[..v.len() - 1], 20),
        Some(b'g' | b'G') => (&v[..v.len() - 1], 30),
        Some(b't' | b'T') => (&v[..v.len() - 1], 40),
        _ => (v, 0),
    };
    let n = parse_num(digits, 0, u64::MAX).map_err(|_| "expected a size such as 64M")?;
    n.checked_mul(1 << shift).ok_or("size too large")
}

/// Linux's `cma=nn[MG]`; the `@start-end` placement form is refused (the area goes in ZONE_DMA).
fn parse_cma(v: &str) -> Result<u64, &'static str> {
    if v.contains('@') {
        return Err("cma=<size>@<start>-<end> is not supported: give cma=<size> (placed in ZONE_DMA if it fits)");
    }
    parse_size(v)
}

/// The last `cma=` of a command line, parsed, for the boot memory map: it runs before the heap
/// exists (Linux: `early_param("cma", early_cma)`), so this allocates nothing. `None` if absent.
pub fn early_cma(cmdline: &str) -> Option<Result<u64, &'static str>> {
    cmdline.split_ascii_whitespace().rev().find_map(|w| w.strip_prefix("cma=")).map(parse_cma)
}

/// `<irq>:<cpu>[,<irq>:<cpu>...]`, SPIs only (32..1020), CPUs below 8 (`boot::smp::MAX_CPUS`).
fn parse_irq_affinity(v: &str) -> Result<Vec<(u32, usize)>, &'static str> {
    v.split(',')
        .map(|pair| {
            let (irq, cpu) = pair.split_once(':').ok_or("expected <irq>:<cpu>[,<irq>:<cpu>...]")?;
            Ok((parse_num(irq, 32, 1019)? as u32, parse_num(cpu, 0, 7)? as usize))
        })
        .collect()
}

fn parse_policy(v: &str) -> Result<SwiotlbPolicy, &'static str> {
    match v {
        "static" => Ok(SwiotlbPolicy::Static),
        "dynamic" => Ok(SwiotlbPolicy::Dynamic),
        "lend" => Ok(SwiotlbPolicy::Lend),
        "cma" => Ok(SwiotlbPolicy::Cma),
        _ => Err("expected static, dynamic, lend or cma"),
    }
}

fn parse_on_off(v: &str) -> Result<bool, &'static str> {
    match v {
        "on" | "1" | "yes" => Ok(true),
        "off" | "0" | "no" => Ok(false),
        _ => Err("expected on or off"),
    }
}

fn parse_loglevel(v: &str) -> Result<log::LevelFilter, &'static str> {
    use log::LevelFilter as L;
    match v {
        "off" => Ok(L::Off),
        "error" | "0" | "1" | "2" | "3" => Ok(L::Error),
        "warn" | "4" => Ok(L::Warn),
        "info" | "5" | "6" => Ok(L::Info),
        "debug" | "7" => Ok(L::Debug),
        "trace" | "8" => Ok(L::Trace),
        _ => Err("expected error, warn, info, debug, trace or 0..8"),
    }
}

/// Linux `setup_io_tlb_npages`: `<slots>[,<areas>][,force|noforce]`, each part optional.
fn parse_swiotlb(v: &str) -> Result<SwiotlbArg, &'static str> {
    let mut arg = SwiotlbArg::default();
    let mut parts = v.split(',').peekable();
    if let Some(first) = parts.peek().copied() {
        if first.starts_with(|c: char| c.is_ascii_digit()) {
            arg.slots = Some(parse_num(first, 1, 1 << 24)?);
            parts.next();
            if let Some(second) = parts.peek().copied() {
                if second.starts_with(|c: char| c.is_ascii_digit()) {
                    let areas = parse_num(second, 1, 1024)?;
                    if !areas.is_power_of_two() {
                        return Err("the area count must be a power of two");
                    }
                    arg.areas = Some(areas as u32);
                    parts.next();
                }
            }
        }
    }
    for part in parts {
        match part {
            "force" => arg.force = Some(true),
            "noforce" => arg.force = Some(false),
            "" => {}
            _ => return Err("expected <slots>[,<areas>][,force|noforce]"),
        }
    }
    Ok(arg)
}

#[cfg(test)]
mod tests;
