//! The platform: brings the machine up from the device tree, then runs a kernel image's main.
//!
//! `boot` (arch code) calls `kernel_main(x0)`, which every test kernel defines with
//! [`entry!`](crate::entry) and which calls [`kernel_start`]. The demo writes its `kernel_main`
//! out, calling [`kernel_init`] and [`kernel_exit`] itself, so that `break kernel_main` in GDB
//! stops in the demo's own code. The steps, in order:
//! 1. find the DTB (x0, or the start of RAM) and check its header;
//! 2. start the console named by `/chosen/stdout-path` and install the exception hooks;
//! 3. build the boot memory map (`memblock`): RAM minus the kernel, the DTB and reserved-memory;
//! 4. give the heap its first arena from that map;
//! 5. build the final identity map from the device tree and switch to it;
//! 6. set up the GIC and the timer, unmask IRQs;
//! 7. bring up the secondary CPUs ([`smp`]), run main, and exit with its status.

#[macro_use]
pub mod console;
pub mod dma;
pub mod exit;
pub mod irq;
pub mod mm;
pub mod phys;
pub mod qemu_virt;
pub mod smp;
pub mod time;
pub mod virtio_blk;

use core::fmt;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use boot::exception::Hooks;
use boot::mmu::KernelPageTable;
use drivers::irq::gic::GicRegs;
use drivers::power::psci::Conduit;

use crate::dt::{self, BuildMemblockError, DeviceTree, DtError, PsciMethod};
use crate::mm::heap::KernelHeap;
use crate::mm::memblock::{Memblock, RegionFlags, RegionKind};
use crate::mm::{align_down, align_up, PhysAddr, PhysRange, PAGE_SIZE};
use exit::ExitStatus;

/// The kernel heap (see [`crate::mm::heap`]).
#[global_allocator]
pub static HEAP: KernelHeap = KernelHeap::new();

/// The heap's first arena, taken from the boot memory map, holds at least this much besides the
/// page allocator's metadata; later the heap grows from the page allocator.
pub const INITIAL_HEAP_SPARE: u64 = 4 * 1024 * 1024;

/// What the platform found at boot, for the rest of the kernel.
pub struct Kernel {
    /// The device tree.
    pub dt: DeviceTree<'static>,
    /// The boot memory map.
    pub memblock: Memblock<'static>,
    /// `/chosen/bootargs`.
    pub bootargs: &'static str,
    /// The parameters parsed from them.
    pub params: &'static crate::bootargs::KernelParams,
    /// The GIC version in use.
    pub gic_version: u32,
    /// The virtual timer's interrupt ID.
    pub timer_irq: u32,
    /// The kernel image's extent.
    pub image: (PhysAddr, PhysAddr),
}

static KERNEL: spin::Once<Kernel> = spin::Once::new();

/// The boot-time facts. Panics if called before [`kernel_start`] filled them in.
pub fn kernel() -> &'static Kernel {
    KERNEL.get().expect("platform::kernel() before boot finished")
}

/// The boot-time facts, or `None` while booting.
pub fn try_kernel() -> Option<&'static Kernel> {
    KERNEL.get()
}

/// Why boot failed.
#[derive(Debug)]
pub enum BootError {
    /// No valid DTB at the address the loader gave or at the start of RAM.
    NoDeviceTree(usize),
    /// The device tree is unusable.
    DeviceTree(DtError<'static>),
    /// The boot memory map is inconsistent.
    Memblock(BuildMemblockError<'static>),
    /// No memory for the initial heap.
    NoHeap,
    /// `/chosen/stdout-path` names no PL011.
    NoConsole,
    /// The page tables could not be built.
    Mmu(aarch64_paging::MapError),
    /// The interrupt controller could not be set up.
    Irq(irq::IrqError),
    /// The page allocator refused the memory map.
    PageAlloc(crate::mm::page_alloc::InitError),
    /// The DMA layer could not be set up.
    Dma(dma::DmaSetupError),
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::NoDeviceTree(a) => write!(f, "no valid device tree blob at {a:#x}"),
            BootError::DeviceTree(e) => write!(f, "device tree: {e}"),
            BootError::Memblock(e) => write!(f, "memory map: {e}"),
            BootError::NoHeap => write!(f, "no free RAM for the initial heap"),
            BootError::NoConsole => write!(f, "/chosen/stdout-path does not name an arm,pl011 UART"),
            BootError::Mmu(e) => write!(f, "page tables: {e}"),
            BootError::Irq(e) => write!(f, "interrupts: {e}"),
            BootError::PageAlloc(e) => write!(f, "page allocator: {e}"),
            BootError::Dma(e) => write!(f, "DMA: {e}"),
        }
    }
}

impl From<DtError<'static>> for BootError {
    fn from(e: DtError<'static>) -> Self {
        BootError::DeviceTree(e)
    }
}
impl From<BuildMemblockError<'static>> for BootError {
    fn from(e: BuildMemblockError<'static>) -> Self {
        BootError::Memblock(e)
    }
}

/// Defines `kernel_main`, the Rust entry point `_start` calls, for a kernel image whose main is
/// `$main: fn(&'static Kernel) -> ExitStatus`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        /// The Rust entry point, called by `_start` (boot/src/asm/entry.S) with the loader's x0.
        #[no_mangle]
        pub extern "C" fn kernel_main(x0: usize) -> ! {
            $crate::platform::kernel_start(x0, $main)
        }
    };
}

static HOOKS: Hooks = Hooks { emergency_write: console::emergency_write, halt_failure: exit::halt_failure, irq: irq::handle_irq };

extern "C" {
    static __kernel_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __kernel_end: u8;
}

fn symbol(s: &u8) -> PhysAddr {
    s as *const u8 as PhysAddr
}

/// Brings the machine up and runs `main`; never returns.
pub fn kernel_start(x0: usize, main: fn(&'static Kernel) -> ExitStatus) -> ! {
    let kernel = kernel_init(x0);
    kernel_exit(main(kernel))
}

/// Brings the machine up (the steps above) and returns the kernel, for an image whose main is
/// its own entry point (the demo's `kernel_main`); on failure reports why and stops the machine.
pub fn kernel_init(x0: usize) -> &'static Kernel {
    match boot(x0) {
        Ok(kernel) => {
            log::info!("boot complete in {:?}; running main", time::uptime());
            kernel
        }
        Err(e) => {
            boot_failed(&e);
            exit::exit(ExitStatus::Failure)
        }
    }
}

/// Prints the DMA layer's counters and stops the machine with `status`.
pub fn kernel_exit(status: ExitStatus) -> ! {
    if let Some(dma) = dma::try_dma() {
        kprintln!("\nAt shutdown: DMA {}", dma.api.stats);
        kprintln!("{}", dma.manager);
    }
    exit::exit(status)
}

fn boot_failed(e: &BootError) {
    // The console may not exist yet: say it on the UART if we have one, and on semihosting.
    console::emergency_write("\n*** Boot failed: ");
    let mut line = heapless_line::Line::new();
    let _ = fmt::write(&mut line, format_args!("{e}"));
    console::emergency_write(line.as_str());
    console::emergency_write("\n");
    if exit::semihosting() {
        semihosting::eprintln!("*** Boot failed: {e}");
    }
}

fn boot(x0: usize) -> Result<&'static Kernel, BootError> {
    let blob = locate_dtb(x0)?;
    // QEMU edits the blob with libfdt, which leaves NOP tokens; remove them before parsing.
    let nops = dt::strip_nops(blob)?;
    let blob: &'static [u8] = blob;
    let dt = DeviceTree::new(blob)?;

    // Console first, so that every later error is printed.
    let uart = dt.stdout()?.filter(|d| d.is_compatible("arm,pl011")).ok_or(BootError::NoConsole)?;
    // SAFETY: the early map covers all non-RAM addresses of the low 512 GiB as Device memory, and
    // the device tree says a PL011 lives at this address.
    unsafe { console::init(uart.regs()[0].base() as usize) };
    boot::exception::set_hooks(&HOOKS);
    if !exit::probe_semihosting() {
        log::info!("semihosting: not available; results and the exit status go to the UART, then PSCI SYSTEM_OFF");
    }
    log::info!(
        "dmabounce kernel: entered at EL{}, DTB at {:#x} ({} bytes, {nops} NOPs removed)",
        entry_el(),
        blob.as_ptr() as usize,
        blob.len()
    );

    // SAFETY: the linker script defines these symbols; only their addresses are used.
    let image = unsafe { (symbol(&__kernel_start), symbol(&__kernel_end)) };
    let dtb_base = blob.as_ptr() as PhysAddr;
    let range = |a: PhysAddr, b: PhysAddr| PhysRange::from_bounds(a, b).ok_or(BootError::NoDeviceTree(a as usize));
    let mut memblock = dt::build_memblock(&dt, range(image.0, image.1)?, range(dtb_base, dtb_base + blob.len() as u64)?)?;

    // The heap's first arena must lie in the 1 GiB block the early map made Normal memory.
    let early_block = PhysRange::new(align_down(image.0, 1 << 30), 1 << 30);
    let heap_size = align_up(mm::metadata_bytes(memblock.total_ram()) + INITIAL_HEAP_SPARE, PAGE_SIZE).ok_or(BootError::NoHeap)?;
    let heap_base =
        memblock.alloc(heap_size, PAGE_SIZE, early_block, "heap", RegionFlags::of(RegionKind::Allocated)).map_err(|_| BootError::NoHeap)?;
    // SAFETY: memblock just reserved this range for the heap; it is RAM inside the early map's
    // Normal block, and nothing else will use it.
    unsafe { HEAP.add_arena(heap_base as usize, heap_size as usize) };

    activate_final_map(&dt, &memblock, image)?;

    // The page allocator takes every free page; from now on the heap grows from it.
    let dma_limit = dt.smallest_dma_limit()?.and_then(|last| last.checked_add(1));
    let pages = mm::init(&memblock, dma_limit).map_err(BootError::PageAlloc)?;
    HEAP.set_source(&mm::PageHeapSource);

    let bootargs = dt.bootargs()?.unwrap_or("");
    log::info!("bootargs: \"{bootargs}\"");
    let (params, warnings) = crate::bootargs::parse(bootargs);
    for w in &warnings {
        log::warn!("{w}");
    }
    console::set_level(params.loglevel);
    let nr_cpus = smp::smp_init_cpus(&dt)?;
    let mut params = params;
    if params.swiotlb.areas.is_none() {
        // Linux `swiotlb_adjust_nareas(num_possible_cpus())`: an area (lock) per CPU, rounded up
        // to a power of two (`swiotlb=<slots>,<areas>` overrides).
        params.swiotlb.areas = Some(nr_cpus.next_power_of_two() as u32);
    }
    let params: &'static crate::bootargs::KernelParams = alloc::boxed::Box::leak(alloc::boxed::Box::new(params));
    kprintln!("Boot memory map:");
    kprint!("{memblock}");
    let dma = dma::init(&memblock, dma_limit, pages, params).map_err(BootError::Dma)?;
    kprintln!("SWIOTLB (policy {:?}, dma_debug {}):", dma.manager.policy(), if params.dma_debug { "on" } else { "off" });
    kprintln!("{}", dma.manager);
    {
        let pa = pages.lock();
        let span = pa.span();
        kprintln!(
            "Zones: DMA {} pages, Normal {} pages (DMA limit {})",
            pa.managed_pages(crate::mm::page_alloc::ZoneType::Dma),
            pa.managed_pages(crate::mm::page_alloc::ZoneType::Normal),
            match dma_limit {
                Some(l) => alloc::format!("{l:#x}"),
                None => alloc::string::String::from("none: all RAM"),
            }
        );
        kprint!("{}", pa.pagetypeinfo());
        kprintln!("RAM {:#x}-{:#x}, one character per 2 MiB pageblock:", span.start, span.end);
        kprintln!("  [{}]", pa.ram_picture(|addr| mm::in_swiotlb_region(&memblock, addr)));
    }

    let conduit = match dt.psci_method()? {
        PsciMethod::Hvc => Conduit::Hvc,
        PsciMethod::Smc => Conduit::Smc,
    };
    exit::set_psci_conduit(conduit);
    let regs = match dt.gic()? {
        dt::Gic::V2 { distributor, cpu_interface } => {
            GicRegs::V2 { gicd: distributor.base() as usize, gicc: cpu_interface.base() as usize }
        }
        dt::Gic::V3 { distributor, redistributor } => {
            GicRegs::V3 { gicd: distributor.base() as usize, gicr: redistributor.base() as usize, gicr_size: redistributor.size() as usize }
        }
    };
    // SAFETY: the device tree names these GIC frames; the final map maps them as Device memory.
    let gic_version = unsafe { irq::init(regs, nr_cpus) }.map_err(BootError::Irq)?;
    let timer_irq = dt.arch_timer()?.virt.intid();
    time::init(timer_irq).map_err(BootError::Irq)?;
    boot::cpu::local_irq_enable();
    log::info!("GICv{gic_version} up; virtual timer on interrupt {timer_irq}");
    let kernel = KERNEL.call_once(|| Kernel { dt, memblock, bootargs, params, gic_version, timer_irq, image });
    smp::smp_init(conduit);
    Ok(kernel)
}

/// The exception level `_start` was entered at (it records it for the boot log).
fn entry_el() -> u64 {
    extern "C" {
        static boot_entry_el: u64;
    }
    // SAFETY: `_start` writes `boot_entry_el` once before any Rust code runs; it is read-only after.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(boot_entry_el)) }
}

fn locate_dtb(x0: usize) -> Result<&'static mut [u8], BootError> {
    let addr = if x0 != 0 { x0 } else { qemu_virt::DTB_FALLBACK_ADDR };
    // SAFETY: the early map makes the 1 GiB blocks of the kernel and of x0 Normal memory, and the
    // fallback address is in the kernel's block (start of RAM below the kernel). The header is 40
    // bytes, read only to learn the blob's size.
    let header = unsafe { core::slice::from_raw_parts(addr as *const u8, 40) };
    let size = crate::dt::blob_size(header).map_err(|_| BootError::NoDeviceTree(addr))?;
    if size > qemu_virt::DTB_MAX_SIZE {
        return Err(BootError::NoDeviceTree(addr));
    }
    // SAFETY: as above; the header says the blob is `size` bytes, at most DTB_MAX_SIZE, within the
    // same mapped block (QEMU places it below the kernel). The loader handed it to us: nothing
    // else reads or writes it, and this is the only reference made to it.
    Ok(unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, size) })
}

fn activate_final_map(dt: &DeviceTree<'static>, memblock: &Memblock<'static>, image: (PhysAddr, PhysAddr)) -> Result<(), BootError> {
    let mut table = KernelPageTable::new();
    // SAFETY: linker symbols; only their addresses are used.
    let (text_end, rodata_end) = unsafe { (symbol(&__text_end), symbol(&__rodata_end)) };
    for ram in memblock.mapped_ranges() {
        let (start, end) = (ram.base(), ram.end());
        // RAM around the image is data; the image is split text / rodata / data.
        let mut map_part = |s: PhysAddr, e: PhysAddr, f: fn(&mut KernelPageTable, u64, u64) -> Result<(), aarch64_paging::MapError>| {
            let (s, e) = (s.max(start), e.min(end));
            if s < e {
                f(&mut table, s, e).map_err(BootError::Mmu)
            } else {
                Ok(())
            }
        };
        map_part(start, image.0, KernelPageTable::map_data)?;
        map_part(image.0, text_end, KernelPageTable::map_code)?;
        map_part(text_end, rodata_end, KernelPageTable::map_rodata)?;
        // Data, except the guard page below each CPU's stack (left unmapped: an overflow
        // faults).
        let mut from = rodata_end;
        for guard in boot::smp::stack_guard_pages() {
            map_part(from, guard as PhysAddr, KernelPageTable::map_data)?;
            from = guard as PhysAddr + boot::smp::STACK_GUARD as PhysAddr;
        }
        map_part(from, end, KernelPageTable::map_data)?;
    }
    for dev in dt.devices() {
        let dev = dev?;
        if !dev.enabled() {
            continue;
        }
        for reg in dev.regs() {
            if memblock.is_ram(reg.base()) {
                continue;
            }
            let start = align_down(reg.base(), PAGE_SIZE);
            let end = align_up(reg.end(), PAGE_SIZE).unwrap_or(u64::MAX);
            table.map_device(start, end).map_err(BootError::Mmu)?;
        }
    }
    // SAFETY: the map covers all RAM the kernel uses (the image, stacks, heap, DTB: all RAM not
    // marked no-map; only the stack guard pages, which nothing may touch, are left out) and
    // every device the device tree lists, identity-mapped.
    unsafe { table.activate() };
    log::info!("MMU: final identity map active (text RX, rodata RO, data RW/XN, MMIO device)");
    Ok(())
}

/// Runs deferred work and the DMA layer's maintenance: task context's scheduling point.
pub fn run_pending_work() {
    dma::maintenance();
    crate::work::SYSTEM_WQ.run_pending();
}

/// The idle loop's body: runs deferred work, then waits for an interrupt if the periodic tick
/// will bring one, else for a millisecond (nothing else would wake the CPU).
///
/// The check for more work and the WFI happen with IRQs masked (Linux `do_idle` checks
/// `need_resched` with interrupts off before `cpu_idle_poll`/WFI): an interrupt that schedules
/// work after the check stays pending, and WFI returns at once on a pending interrupt even when
/// masked; it is taken when the mask is restored. Checked with IRQs on, that interrupt could
/// come between the check and WFI, and the CPU would sleep with work queued until the next tick.
pub fn idle() {
    idle_with_window(|| {});
}

/// [`idle`], running `in_window` between the check for work and WFI, where an interrupt that
/// schedules work must not be lost (the in-QEMU test of [`idle`] fires one there).
#[doc(hidden)]
pub fn idle_with_window(in_window: fn()) {
    run_pending_work();
    // One bounded step (64 KiB of zeros, IRQs enabled): a CPU waiting for I/O comes back here
    // after each interrupt, so the scrub never delays it by more than one step.
    dma::scrub_step();
    let irq = crate::arch::irq_save();
    let cpu = smp::cpu_id();
    smp::idle_enter(cpu); // before the check: work queued after it sends this CPU the IPI
    let pending = crate::work::SYSTEM_WQ.has_pending();
    let tick = time::tick_running();
    if !pending && tick {
        in_window();
        boot::cpu::wait_for_interrupt();
    }
    smp::idle_exit(cpu);
    crate::arch::irq_restore(irq);
    if !pending && !tick {
        time::delay(core::time::Duration::from_millis(1));
    }
}

static CURRENT_TEST: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static CURRENT_TEST_LEN: AtomicUsize = AtomicUsize::new(0);

/// Records the running in-QEMU test case, so a panic can name it.
pub fn set_current_test(name: &'static str) {
    CURRENT_TEST_LEN.store(name.len(), Ordering::Relaxed);
    CURRENT_TEST.store(name.as_ptr() as *mut u8, Ordering::Relaxed);
}

fn current_test() -> &'static str {
    let ptr = CURRENT_TEST.load(Ordering::Relaxed);
    let len = CURRENT_TEST_LEN.load(Ordering::Relaxed);
    if ptr.is_null() {
        return "";
    }
    // SAFETY: `set_current_test` stores the pointer and length of a `&'static str`.
    unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(ptr, len)) }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let test = current_test();
    // Heap exhaustion comes here (Rust's default allocation-error handler panics with "memory
    // allocation of N bytes failed"): say what the heap had, from what it recorded.
    let mut message = heapless_line::Line::new();
    let _ = fmt::write(&mut message, format_args!("{}", info.message()));
    if let Some(f) = message.as_str().starts_with("memory allocation of").then(|| HEAP.last_failure()).flatten() {
        let mut oom = heapless_line::Line::new();
        let _ = fmt::write(
            &mut oom,
            format_args!(
                "\n*** Out of memory: the kernel heap could not allocate {} bytes (align {}): {} arenas, {} of {} bytes in use; it could not grow (no free pages, or no free arena slot)\n",
                f.size, f.align, f.heap.arenas, f.heap.used, f.heap.size
            ),
        );
        console::emergency_write(oom.as_str());
    }
    let mut line = heapless_line::Line::new();
    if test.is_empty() {
        let _ = fmt::write(&mut line, format_args!("\n*** Kernel panic: {info}\n"));
    } else {
        let _ = fmt::write(&mut line, format_args!("\n*** Kernel panic in test {test}: {info}\ntest {test} ... FAILED (panic)\n"));
    }
    console::emergency_write(line.as_str());
    exit::halt_failure()
}

mod heapless_line {
    //! A fixed buffer for formatting reports without the heap (which may be the problem).
    pub(super) struct Line {
        buf: [u8; 512],
        len: usize,
    }
    impl Line {
        pub(super) const fn new() -> Self {
            Self { buf: [0; 512], len: 0 }
        }
        pub(super) fn as_str(&self) -> &str {
            // Only whole `&str`s are copied in, cut at a char boundary.
            core::str::from_utf8(&self.buf[..self.len]).unwrap_or("<report not UTF-8>")
        }
    }
    impl core::fmt::Write for Line {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let room = self.buf.len() - self.len;
            let mut n = s.len().min(room);
            while !s.is_char_boundary(n) {
                n -= 1;
            }
            self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
            self.len += n;
            Ok(())
        }
    }
}
