//! Secondary CPUs (Linux `arch/arm64/kernel/smp.c`, `kernel/cpu.c`): every CPU `/cpus` lists
//! with `enable-method = "psci"` is started with PSCI CPU_ON, joins the kernel in
//! [`secondary_start_kernel`] and sits in [`cpu_idle_loop`]: it runs calls other CPUs send it
//! ([`smp_call_function_single`]), deferred work, and its own interrupts (its timer, SPIs routed
//! to it), and waits with WFI in between. Work queued while CPUs sit in WFI wakes one of them
//! with [`IPI_RESCHEDULE`] ([`wake_up_idle_cpu`]).
//!
//! Per-CPU data is a plain array indexed by the logical CPU index ([`cpu_id`], from TPIDR_EL1)
//! wherever it is needed (here, the tick, the exception depth): at most [`MAX_CPUS`] entries,
//! fixed at build time, no allocation, no init order. A per-CPU crate (e.g. `percpu`) would
//! put the data in a linker section and its offset in a register; with eight CPUs and a few
//! counters the arrays say the same more plainly, and nothing here needs a preemptible
//! "this CPU" (there is no scheduler: code never moves to another CPU).
//!
//! Logical indices: 0 is the boot CPU, the others follow `/cpus` in tree order (Linux
//! `smp_init_cpus`). `cpu_possible` = listed and started or tried; `cpu_online_mask` = came up.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use core::time::Duration;

use boot::exception::IrqContext;
use boot::smp::SecondaryBootData;
use drivers::irq::gic::IrqNumber;

use super::irq::IrqHandler;
use drivers::power::psci::{self, Conduit};

pub use crate::arch::cpu_id;
pub use boot::smp::MAX_CPUS;

use super::{irq, time};
use crate::dt::{CpuNode, DeviceTree, DtError};
use crate::sync::IrqSafeSpinLock;

const _: () = assert!(MAX_CPUS == drivers::irq::gic::MAX_CPUS && MAX_CPUS <= 32);

/// The SGI that wakes an idle CPU to run queued work (Linux `IPI_RESCHEDULE`).
pub const IPI_RESCHEDULE: IrqNumber = 0;
/// The SGI that wakes a CPU for a call (Linux `IPI_CALL_FUNC`).
pub const IPI_CALL_FUNC: IrqNumber = 1;
/// The IPIs, each with its handler.
const IPIS: [(IrqNumber, IrqHandler); 2] = [(IPI_RESCHEDULE, ipi_handler), (IPI_CALL_FUNC, ipi_handler)];

/// The IPIs the boot CPU registered (bit n: SGI n). A secondary enables these and no others,
/// and nobody sends the others: a registration that failed costs that IPI, not the CPUs.
static IPIS_REGISTERED: AtomicU32 = AtomicU32::new(0);

/// Linux `idle_cpus_mask` (the `nohz` idea reduced): bit n set while CPU n is about to WFI
/// or in it, published before its last check for work, IRQs masked.
static CPU_IDLE_MASK: AtomicU32 = AtomicU32::new(0);

/// How long the boot CPU waits for a secondary to say it is online (Linux waits 5 s in
/// `__cpu_up`). Under TCG with more vCPUs than host cores a CPU may take a while.
const CPU_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a CPU did not come up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmpError {
    /// `/cpus` says it is not started with PSCI.
    NoEnableMethod,
    /// More CPUs than the kernel has stacks for.
    TooMany,
    /// PSCI CPU_ON refused.
    Psci(smccc::psci::Error),
    /// It did not mark itself online in time.
    Timeout,
    /// It came up but could not set up its interrupts (it says why on the console).
    SetupFailed,
    /// The CPU is not online (a call to it).
    Offline(usize),
    /// The CPU has a call queued already.
    Busy(usize),
}

impl core::fmt::Display for SmpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SmpError::NoEnableMethod => write!(f, "enable-method is not psci"),
            SmpError::TooMany => write!(f, "more than {MAX_CPUS} CPUs"),
            SmpError::Psci(e) => write!(f, "PSCI CPU_ON failed: {e:?}"),
            SmpError::Timeout => write!(f, "not online after {CPU_UP_TIMEOUT:?}"),
            SmpError::SetupFailed => write!(f, "its interrupt set-up failed"),
            SmpError::Offline(c) => write!(f, "CPU {c} is not online"),
            SmpError::Busy(c) => write!(f, "CPU {c} has a call pending"),
        }
    }
}

/// A CPU's bring-up state: the boot CPU and the secondary agree on exactly one outcome, so a
/// CPU that comes up after the boot CPU gave up on it parks instead of joining.
const CPU_OFFLINE: u8 = 0;
const CPU_BOOTING: u8 = 1;
const CPU_ONLINE: u8 = 2;
const CPU_FAILED: u8 = 3;

static CPU_STATE: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(CPU_OFFLINE) }; MAX_CPUS];
/// MPIDR affinity of each logical CPU (`/cpus` `reg`).
static CPU_MPIDR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Which logical CPUs are started with PSCI.
static CPU_PSCI: AtomicU32 = AtomicU32::new(0);
/// Logical CPUs the kernel knows (Linux `nr_cpu_ids`), and how many `/cpus` lists.
static NR_CPU_IDS: AtomicUsize = AtomicUsize::new(1);
static NR_LISTED: AtomicUsize = AtomicUsize::new(1);
/// Linux `cpu_online_mask`: bit n set once CPU n runs the kernel.
static CPU_ONLINE_MASK: AtomicU32 = AtomicU32::new(1);

/// The call each CPU is asked to run (Linux `call_single_queue`, one entry deep), and how many
/// calls each has finished.
static CALL: [CallSlot; MAX_CPUS] = [const { IrqSafeSpinLock::new(None) }; MAX_CPUS];

/// A CPU's call mailbox: the function it is asked to run, if any.
type CallSlot = IrqSafeSpinLock<Option<fn()>>;
static CALLS_DONE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Reads `/cpus` and numbers the CPUs (Linux `smp_init_cpus`), before the GIC is set up (a
/// GICv3 needs the count). Returns the number of logical CPUs.
pub fn smp_init_cpus(dt: &DeviceTree<'static>) -> Result<usize, DtError<'static>> {
    let mut listed: [Option<CpuNode<'static>>; MAX_CPUS * 2] = [None; MAX_CPUS * 2];
    let count = dt.cpus(&mut listed)?;
    let boot_mpidr = boot::smp::this_cpu_mpidr();
    CPU_MPIDR[0].store(boot_mpidr, Ordering::Relaxed);
    let mut psci_mask = 0u32;
    let mut n = 1;
    let mut boot_listed = false;
    for cpu in listed.iter().flatten() {
        if cpu.mpidr == boot_mpidr {
            boot_listed = true;
            continue;
        }
        if n == MAX_CPUS {
            log::warn!("smp: {} not used: the kernel runs on at most {MAX_CPUS} CPUs", cpu.name);
            continue;
        }
        CPU_MPIDR[n].store(cpu.mpidr, Ordering::Relaxed);
        if cpu.psci {
            psci_mask |= 1 << n;
        }
        n += 1;
    }
    if !boot_listed && count > 0 {
        log::warn!("smp: the boot CPU (MPIDR {boot_mpidr:#x}) is not in /cpus");
    }
    CPU_PSCI.store(psci_mask, Ordering::Relaxed);
    NR_CPU_IDS.store(n, Ordering::Relaxed);
    NR_LISTED.store(count.max(1), Ordering::Relaxed);
    CPU_STATE[0].store(CPU_ONLINE, Ordering::Relaxed);
    Ok(n)
}

/// Brings up every secondary CPU, one at a time (Linux `smp_init` / `bringup_nonboot_cpus`),
/// and logs which came up. A CPU that fails is reported; the others still boot. Boot CPU, after
/// its GIC and timer are up and IRQs unmasked.
pub fn smp_init(conduit: Conduit) {
    irq_setup_ipi();
    for cpu in 1..NR_CPU_IDS.load(Ordering::Relaxed) {
        if let Err(e) = __cpu_up(cpu, conduit) {
            log::warn!("smp: CPU{cpu} (MPIDR {:#x}) failed to come online: {e}", cpu_mpidr(cpu));
        }
    }
    let list: alloc::vec::Vec<_> = online_cpus().map(|c| alloc::format!("{c}")).collect();
    log::info!("smp: {} of {} CPUs online: {}", num_online_cpus(), NR_LISTED.load(Ordering::Relaxed), list.join(","));
}

/// Fault injection for the boot check `smp_failed_ipi_registration_keeps_the_cpus`
/// (`kernel/examples/ipi_fail.rs`; Linux `should_fail`): bit n set makes SGI n's registration
/// fail as if the line had a handler already. Set before the kernel starts, read once.
#[doc(hidden)]
pub static FAIL_IPI_REGISTRATION: AtomicU32 = AtomicU32::new(0);

/// Registers the IPIs on the boot CPU (Linux `set_smp_ipi_range`), recording which succeeded.
fn irq_setup_ipi() {
    let inject = FAIL_IPI_REGISTRATION.load(Ordering::Relaxed);
    for (ipi, handler) in IPIS {
        let registered = if inject & (1 << ipi) != 0 { Err(irq::IrqError::Busy(ipi)) } else { irq::request_irq(ipi, true, handler) };
        match registered {
            Ok(()) => {
                IPIS_REGISTERED.fetch_or(1 << ipi, Ordering::Release);
            }
            Err(e) => {
                log::warn!("smp: no handler for IPI {ipi} ({e}); other CPUs run without it (calls and work wait for their next interrupt)")
            }
        }
    }
    crate::work::SYSTEM_WQ.set_waker(wake_up_idle_cpu);
}

fn ipi_registered(ipi: IrqNumber) -> bool {
    IPIS_REGISTERED.load(Ordering::Acquire) & (1 << ipi) != 0
}

/// Enables, on the calling secondary, the IPIs the boot CPU registered (Linux
/// `ipi_setup`), and only those.
fn ipi_setup() -> Result<(), irq::IrqError> {
    for (ipi, _) in IPIS {
        if ipi_registered(ipi) {
            irq::enable_percpu_irq(ipi, true)?;
        }
    }
    Ok(())
}

/// Starts CPU `cpu` and waits until it is online (Linux `__cpu_up`).
fn __cpu_up(cpu: usize, conduit: Conduit) -> Result<(), SmpError> {
    if cpu >= MAX_CPUS {
        return Err(SmpError::TooMany);
    }
    if CPU_PSCI.load(Ordering::Relaxed) & (1 << cpu) == 0 {
        return Err(SmpError::NoEnableMethod);
    }
    // The hand-over stays valid for the kernel's life (the CPU reads it once; leaking 64 bytes
    // per CPU is simpler than proving when it has).
    let data: &'static SecondaryBootData =
        alloc::boxed::Box::leak(alloc::boxed::Box::new(SecondaryBootData::new(cpu, secondary_start_kernel)));
    data.clean_to_poc();
    CPU_STATE[cpu].store(CPU_BOOTING, Ordering::Release);
    let mpidr = CPU_MPIDR[cpu].load(Ordering::Relaxed);
    if let Err(e) = psci::cpu_on(conduit, mpidr, boot::smp::secondary_entry_address(), data as *const SecondaryBootData as u64) {
        CPU_STATE[cpu].store(CPU_FAILED, Ordering::Release);
        return Err(SmpError::Psci(e));
    }
    let deadline = time::uptime() + CPU_UP_TIMEOUT;
    while time::uptime() < deadline && CPU_STATE[cpu].load(Ordering::Acquire) == CPU_BOOTING {
        crate::arch::cpu_relax();
    }
    // Too late: if it still comes up, it sees FAILED and parks.
    let _ = CPU_STATE[cpu].compare_exchange(CPU_BOOTING, CPU_FAILED, Ordering::AcqRel, Ordering::Acquire);
    match CPU_STATE[cpu].load(Ordering::Acquire) {
        CPU_ONLINE => Ok(()),
        _ if time::uptime() >= deadline => Err(SmpError::Timeout),
        _ => Err(SmpError::SetupFailed),
    }
}

/// Where a secondary CPU enters Rust (from `secondary_entry`): MMU on with the kernel's page
/// table, on its own stack, IRQs masked (Linux `secondary_start_kernel`).
extern "C" fn secondary_start_kernel(cpu: usize) -> ! {
    // Its GIC interface and timer first: once online, other CPUs may route interrupts here.
    if let Err(e) = irq::init_cpu().and_then(|()| time::init_cpu()).and_then(|()| ipi_setup()) {
        log::error!("smp: CPU{cpu}: interrupt set-up failed: {e}");
        let _ = CPU_STATE[cpu].compare_exchange(CPU_BOOTING, CPU_FAILED, Ordering::AcqRel, Ordering::Acquire);
        park();
    }
    if CPU_STATE[cpu].compare_exchange(CPU_BOOTING, CPU_ONLINE, Ordering::AcqRel, Ordering::Acquire).is_err() {
        park(); // the boot CPU gave up on us
    }
    CPU_ONLINE_MASK.fetch_or(1 << cpu, Ordering::AcqRel);
    boot::smp::set_smp_active();
    boot::cpu::local_irq_enable();
    cpu_idle_loop(cpu)
}

fn park() -> ! {
    loop {
        boot::cpu::wait_for_interrupt();
    }
}

/// A secondary CPU's life after bring-up (Linux `cpu_startup_entry` / `do_idle`): run the call
/// another CPU sent, then deferred work, then wait for an interrupt. The checks for more to do
/// happen with IRQs masked before WFI, so an interrupt that queues something between the check
/// and WFI still wakes the CPU (WFI returns on a pending interrupt even when masked).
fn cpu_idle_loop(cpu: usize) -> ! {
    loop {
        run_pending_call(cpu);
        super::run_pending_work();
        // Scrub dirty free bounce slots while nothing else is asked of this CPU, one bounded
        // step at a time with IRQs enabled (Linux has no such step; see DESIGN.md "Clean slots").
        while !call_pending(cpu) && !crate::work::SYSTEM_WQ.has_pending() && super::dma::scrub_step() != 0 {}
        let irq = crate::arch::irq_save();
        idle_enter(cpu);
        if !call_pending(cpu) && !crate::work::SYSTEM_WQ.has_pending() {
            boot::cpu::wait_for_interrupt();
        }
        idle_exit(cpu);
        crate::arch::irq_restore(irq);
    }
}

/// Marks `cpu` idle before its last check for work (IRQs masked). Paired with
/// [`wake_up_idle_cpu`] as a store-buffer pattern: this CPU publishes "idle" then reads the
/// pending bits, the queuer publishes a pending bit then reads the idle mask, all SeqCst, so at
/// least one of them sees the other: the work is seen here, or this CPU gets the IPI.
pub(crate) fn idle_enter(cpu: usize) {
    CPU_IDLE_MASK.fetch_or(1 << cpu, Ordering::SeqCst);
}

/// Clears `cpu`'s idle bit once it is awake.
pub(crate) fn idle_exit(cpu: usize) {
    CPU_IDLE_MASK.fetch_and(!(1 << cpu), Ordering::SeqCst);
}

/// The CPUs marked idle now (bit n: CPU n).
pub fn cpu_idle_mask() -> u32 {
    CPU_IDLE_MASK.load(Ordering::SeqCst)
}

/// Wakes one idle CPU other than this one to run newly queued work (Linux `wake_up_idle_cpu`
/// with `IPI_RESCHEDULE`); the system work queue calls it when an item becomes pending. Safe
/// in any context: no allocation, no wait (one GIC lock hold to send the SGI). The CPU is
/// taken out of the idle mask here, so a burst of work wakes several CPUs, not one many times.
pub fn wake_up_idle_cpu() {
    if !ipi_registered(IPI_RESCHEDULE) {
        return; // the work waits for the CPUs' next interrupt, as before this IPI
    }
    let this = 1u32 << cpu_id();
    let mut idle = CPU_IDLE_MASK.load(Ordering::SeqCst) & !this;
    while idle != 0 {
        let cpu = idle.trailing_zeros() as usize;
        // Claim it: if it woke meanwhile (its bit gone), try the next.
        if CPU_IDLE_MASK.fetch_and(!(1 << cpu), Ordering::SeqCst) & (1 << cpu) != 0 {
            if let Err(e) = irq::send_sgi(IPI_RESCHEDULE, cpu) {
                log::warn!("smp: reschedule IPI to CPU{cpu} failed: {e}");
            }
            return;
        }
        idle &= !(1 << cpu);
    }
}

fn ipi_handler(_ctx: &IrqContext<'_>, _irq: IrqNumber) -> irq::IrqReturn {
    // Nothing to do in the handler: the idle loop runs the call or the work once it returns.
    irq::IrqReturn::Handled
}

fn call_pending(cpu: usize) -> bool {
    CALL[cpu].lock().is_some()
}

fn run_pending_call(cpu: usize) {
    let call = *CALL[cpu].lock();
    if let Some(f) = call {
        f();
        *CALL[cpu].lock() = None;
        CALLS_DONE[cpu].fetch_add(1, Ordering::Release);
    }
}

/// Runs `f` on CPU `cpu` in task context (from its idle loop), waking it with an IPI; waits for
/// it to finish if `wait` (Linux `smp_call_function_single`). On the calling CPU `f` runs now.
/// One call per CPU at a time: a CPU still busy with one refuses another ([`SmpError::Busy`]).
pub fn smp_call_function_single(cpu: usize, f: fn(), wait: bool) -> Result<(), SmpError> {
    if cpu == cpu_id() {
        f();
        return Ok(());
    }
    if !cpu_online(cpu) {
        return Err(SmpError::Offline(cpu));
    }
    let done = CALLS_DONE[cpu].load(Ordering::Acquire);
    {
        let mut slot = CALL[cpu].lock();
        if slot.is_some() {
            return Err(SmpError::Busy(cpu));
        }
        *slot = Some(f);
    }
    if !ipi_registered(IPI_CALL_FUNC) {
        // No IPI: the call runs when the CPU's next interrupt wakes it.
    } else if let Err(e) = irq::send_sgi(IPI_CALL_FUNC, cpu) {
        log::warn!("smp: IPI to CPU{cpu} failed: {e}");
    }
    while wait && CALLS_DONE[cpu].load(Ordering::Acquire) == done {
        crate::arch::cpu_relax();
    }
    Ok(())
}

/// True once CPU `cpu` has finished every call sent to it.
pub fn call_done(cpu: usize) -> bool {
    cpu < MAX_CPUS && !call_pending(cpu)
}

/// Number of logical CPUs the kernel knows (Linux `nr_cpu_ids`).
pub fn nr_cpu_ids() -> usize {
    NR_CPU_IDS.load(Ordering::Relaxed)
}

/// Number of CPUs `/cpus` lists.
pub fn nr_listed_cpus() -> usize {
    NR_LISTED.load(Ordering::Relaxed)
}

/// True if CPU `cpu` runs the kernel (Linux `cpu_online`).
pub fn cpu_online(cpu: usize) -> bool {
    cpu < MAX_CPUS && CPU_ONLINE_MASK.load(Ordering::Acquire) & (1 << cpu) != 0
}

/// How many CPUs run the kernel (Linux `num_online_cpus`).
pub fn num_online_cpus() -> usize {
    CPU_ONLINE_MASK.load(Ordering::Acquire).count_ones() as usize
}

/// The online CPUs, in index order (Linux `for_each_online_cpu`).
pub fn online_cpus() -> impl Iterator<Item = usize> {
    let mask = CPU_ONLINE_MASK.load(Ordering::Acquire);
    (0..MAX_CPUS).filter(move |c| mask & (1 << c) != 0)
}

/// The `n`th online CPU, counting modulo the online CPUs (`n mod num_online_cpus`).
pub fn nth_online_cpu(n: usize) -> usize {
    online_cpus().nth(n % num_online_cpus().max(1)).unwrap_or(0)
}

/// The MPIDR affinity of logical CPU `cpu`.
pub fn cpu_mpidr(cpu: usize) -> u64 {
    CPU_MPIDR.get(cpu).map_or(0, |m| m.load(Ordering::Relaxed))
}
