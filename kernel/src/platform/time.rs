//! Time: the generic timer's counter for timestamps and its virtual timer interrupt for a periodic
//! tick (timeouts are checked on the tick, in interrupt context).
//!
//! The virtual timer is per CPU (its interrupt is a PPI), and so is the tick: [`start_tick`],
//! [`stop_tick`], [`set_background_tick`] and [`tick_count`] act on the calling CPU (Linux: one
//! `tick_cpu_device` per CPU). Secondary CPUs enable their timer's PPI as they come up
//! ([`init_cpu`]) but run no tick until asked. Tick hooks run on every CPU's tick.

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use boot::exception::IrqContext;
use boot::smp::MAX_CPUS;
use drivers::irq::gic::IrqNumber;
use drivers::timer::arch_timer;

use super::irq::{self, IrqError};
use crate::arch::cpu_id;
use crate::sync::IrqSafeSpinLock;

/// One tick state per CPU, each entry written only by its CPU (atomics so that it can be a
/// plain `static`).
struct PerCpuTick {
    /// Timer interrupts taken.
    ticks: AtomicU64,
    /// The tick's period in counter ticks (0: no tick).
    period: AtomicU64,
    /// The deadline the timer is armed for.
    next_deadline: AtomicU64,
    /// The period the tick falls back to when [`stop_tick`] is called (0: none).
    background: AtomicU64,
}

static TICK: [PerCpuTick; MAX_CPUS] = [const {
    PerCpuTick { ticks: AtomicU64::new(0), period: AtomicU64::new(0), next_deadline: AtomicU64::new(0), background: AtomicU64::new(0) }
}; MAX_CPUS];
static TICK_HOOKS: IrqSafeSpinLock<[Option<TickHook>; 4]> = IrqSafeSpinLock::new([None; 4]);
static TIMER_IRQ: AtomicU64 = AtomicU64::new(0);

fn this_cpu() -> &'static PerCpuTick {
    &TICK[cpu_id()]
}

/// A function called on every timer interrupt, in interrupt context (timeouts, tests).
pub type TickHook = fn(&IrqContext<'_>);

/// Adds a tick hook; false if all four places are taken.
pub fn add_tick_hook(hook: TickHook) -> bool {
    let mut hooks = TICK_HOOKS.lock();
    match hooks.iter_mut().find(|h| h.is_none()) {
        Some(slot) => {
            *slot = Some(hook);
            true
        }
        None => false,
    }
}

/// Removes a tick hook added with [`add_tick_hook`].
pub fn remove_tick_hook(hook: TickHook) {
    for slot in TICK_HOOKS.lock().iter_mut() {
        if slot.is_some_and(|h| core::ptr::fn_addr_eq(h, hook)) {
            *slot = None;
        }
    }
}

/// Time since boot.
pub fn uptime() -> Duration {
    arch_timer::uptime()
}

/// Timer interrupts this CPU has taken since boot.
pub fn tick_count() -> u64 {
    this_cpu().ticks.load(Ordering::Relaxed)
}

/// Timer interrupts CPU `cpu` has taken since boot.
pub fn tick_count_on(cpu: usize) -> u64 {
    TICK.get(cpu).map_or(0, |t| t.ticks.load(Ordering::Relaxed))
}

/// Installs the timer interrupt handler on the virtual timer's PPI (from the device tree) and
/// enables it on the boot CPU.
pub fn init(irq_number: IrqNumber) -> Result<(), IrqError> {
    arch_timer::disable();
    TIMER_IRQ.store(irq_number.into(), Ordering::Relaxed);
    irq::request_irq(irq_number, false, timer_irq)
}

/// Enables the timer's PPI on the calling (secondary) CPU, its timer stopped.
pub fn init_cpu() -> Result<(), IrqError> {
    arch_timer::disable();
    irq::enable_percpu_irq(TIMER_IRQ.load(Ordering::Relaxed) as IrqNumber, false)
}

/// Starts a periodic tick every `period` on this CPU.
pub fn start_tick(period: Duration) {
    let tick = this_cpu();
    let period = arch_timer::duration_to_ticks(period).max(1);
    tick.period.store(period, Ordering::Relaxed);
    let deadline = arch_timer::ticks() + period;
    tick.next_deadline.store(deadline, Ordering::Relaxed);
    arch_timer::set_deadline(deadline);
}

/// True while this CPU's periodic tick runs.
pub fn tick_running() -> bool {
    this_cpu().period.load(Ordering::Relaxed) != 0
}

/// Stops this CPU's tick started with [`start_tick`]; if a background tick was asked for, the
/// tick goes back to that period instead.
pub fn stop_tick() {
    let tick = this_cpu();
    let background = tick.background.load(Ordering::Relaxed);
    if background != 0 {
        start_tick(arch_timer::ticks_to_duration(background));
        return;
    }
    tick.period.store(0, Ordering::Relaxed);
    arch_timer::disable();
}

/// Keeps a slow tick running on this CPU for as long as the kernel runs (request timeouts are
/// checked on it): started now unless a tick already runs, and returned to by [`stop_tick`].
pub fn set_background_tick(period: Duration) {
    let period_ticks = arch_timer::duration_to_ticks(period).max(1);
    this_cpu().background.store(period_ticks, Ordering::Relaxed);
    if !tick_running() {
        start_tick(period);
    }
}

/// Busy-waits for `d` (for tests and short device delays).
pub fn delay(d: Duration) {
    let end = arch_timer::ticks() + arch_timer::duration_to_ticks(d);
    while arch_timer::ticks() < end {
        core::hint::spin_loop();
    }
}

fn timer_irq(ctx: &IrqContext<'_>, _irq: IrqNumber) -> irq::IrqReturn {
    let tick = this_cpu();
    tick.ticks.fetch_add(1, Ordering::Relaxed);
    let hooks = *TICK_HOOKS.lock();
    for hook in hooks.iter().flatten() {
        hook(ctx);
    }
    let period = tick.period.load(Ordering::Relaxed);
    if period == 0 {
        arch_timer::disable(); // one-shot use: drop the level-triggered line
        return irq::IrqReturn::Handled;
    }
    // Re-arm from the previous deadline so the tick does not drift; skip missed periods.
    let now = arch_timer::ticks();
    let mut next = tick.next_deadline.load(Ordering::Relaxed) + period;
    if next <= now {
        next = now + period;
    }
    tick.next_deadline.store(next, Ordering::Relaxed);
    arch_timer::set_deadline(next);
    irq::IrqReturn::Handled
}
