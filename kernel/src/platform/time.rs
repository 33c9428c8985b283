//! Time: the generic timer's counter for timestamps and its virtual timer interrupt for a periodic
//! tick (timeouts are checked on the tick, in interrupt context).

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use boot::exception::IrqContext;
use drivers::irq::gic::IrqNumber;
use drivers::timer::arch_timer;

use super::irq::{self, IrqError};
use crate::sync::IrqSafeSpinLock;

static TICKS: AtomicU64 = AtomicU64::new(0);
static TICK_HOOKS: IrqSafeSpinLock<[Option<TickHook>; 4]> = IrqSafeSpinLock::new([None; 4]);

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
static PERIOD_TICKS: AtomicU64 = AtomicU64::new(0);
static NEXT_DEADLINE: AtomicU64 = AtomicU64::new(0);
/// The period the tick falls back to when [`stop_tick`] is called (0: none).
static BACKGROUND_TICKS: AtomicU64 = AtomicU64::new(0);

/// Time since boot.
pub fn uptime() -> Duration {
    arch_timer::uptime()
}

/// Timer interrupts taken since boot.
pub fn tick_count() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// Installs the timer interrupt handler on the virtual timer's PPI (from the device tree).
pub fn init(irq_number: IrqNumber) -> Result<(), IrqError> {
    arch_timer::disable();
    irq::request_irq(irq_number, false, timer_irq)
}

/// Starts a periodic tick every `period`.
pub fn start_tick(period: Duration) {
    let period = arch_timer::duration_to_ticks(period).max(1);
    PERIOD_TICKS.store(period, Ordering::Relaxed);
    let deadline = arch_timer::ticks() + period;
    NEXT_DEADLINE.store(deadline, Ordering::Relaxed);
    arch_timer::set_deadline(deadline);
}

/// True while the periodic tick runs.
pub fn tick_running() -> bool {
    PERIOD_TICKS.load(Ordering::Relaxed) != 0
}

/// Stops the tick started with [`start_tick`]; if a background tick was asked for, the tick
/// goes back to that period instead.
pub fn stop_tick() {
    let background = BACKGROUND_TICKS.load(Ordering::Relaxed);
    if background != 0 {
        start_tick(arch_timer::ticks_to_duration(background));
        return;
    }
    PERIOD_TICKS.store(0, Ordering::Relaxed);
    arch_timer::disable();
}

/// Keeps a slow tick running for as long as the kernel runs (request timeouts are checked on
/// it): started now unless a tick already runs, and returned to by [`stop_tick`].
pub fn set_background_tick(period: Duration) {
    let period_ticks = arch_timer::duration_to_ticks(period).max(1);
    BACKGROUND_TICKS.store(period_ticks, Ordering::Relaxed);
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

fn timer_irq(ctx: &IrqContext<'_>, _irq: IrqNumber) {
    TICKS.fetch_add(1, Ordering::Relaxed);
    let hooks = *TICK_HOOKS.lock();
    for hook in hooks.iter().flatten() {
        hook(ctx);
    }
    let period = PERIOD_TICKS.load(Ordering::Relaxed);
    if period == 0 {
        arch_timer::disable(); // one-shot use: drop the level-triggered line
        return;
    }
    // Re-arm from the previous deadline so the tick does not drift; skip missed periods.
    let now = arch_timer::ticks();
    let mut next = NEXT_DEADLINE.load(Ordering::Relaxed) + period;
    if next <= now {
        next = now + period;
    }
    NEXT_DEADLINE.store(next, Ordering::Relaxed);
    arch_timer::set_deadline(next);
}
