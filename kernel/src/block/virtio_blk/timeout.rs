//! Deadlines (Linux `blk_mq_timeout_work`): checked on the board's background tick and by
//! waiters. A late waiting request fails; a device holding a late request is reset
//! ([`Disk::begin_reset`]).
#![forbid(unsafe_code)]

use core::time::Duration;

use drivers::virtio::{BrokenReason, Transport};

use super::{BlkEnv, BlkError, Disk, DiskInner, Request, MAX_IN_FLIGHT};
use crate::block::{DiskHealth, Ticket};
use core::sync::atomic::Ordering;

impl<T: Transport, E: BlkEnv> Disk<'_, T, E> {
    /// Fails what is past its deadline (interrupt context from the tick, or task context).
    pub fn check_timeouts(&self) {
        let in_flight = {
            let mut inner = self.inner.lock();
            // A request published under a plug its holder never ended (a leaked `Plug`) still
            // reaches the device: the tick notifies for it (at worst one tick late).
            self.kick_published(&mut inner);
            inner.requests.in_flight()
        };
        // What the device finished is not late, interrupt or none: look first.
        if in_flight > 0 {
            self.poll_used();
        }
        let mut inner = self.inner.lock();
        if inner.recovery.health() == DiskHealth::Resetting && self.env.uptime() >= inner.next_reinit {
            self.env.schedule_recovery(); // a failed re-initialisation is tried again from here
        }
        if inner.requests.in_flight() + inner.requests.waiting() > 0 {
            self.expire(&mut inner, self.env.uptime(), None);
            drop(inner);
            self.deliver_callbacks();
        }
    }

    /// Fails waiting requests whose deadline passed (or the one `force` names); if the device
    /// holds a request past its deadline (or `force`), it is not doing its job: reset it and
    /// take back what it held (Linux `blk_mq_timeout_work`, whose driver then resets the
    /// controller; see [`begin_reset`](Self::begin_reset)).
    pub(super) fn expire(&self, inner: &mut DiskInner<T>, now: Duration, force: Option<Ticket>) {
        let due = |slot: usize, r: &Request| r.params.deadline <= now || force.is_some_and(|t| t.slot() == slot);
        let mut slots = [0usize; MAX_IN_FLIGHT];
        let mut n = 0;
        for (slot, r) in inner.requests.waiting_requests() {
            if due(slot, &r) {
                slots[n] = slot;
                n += 1;
            }
        }
        for &slot in &slots[..n] {
            inner.requests.fail_waiting(slot, Err(BlkError::Timeout));
            self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
        }
        if inner.recovery.health() != DiskHealth::Live {
            // Reset already: what the device still holds (a reset it ignored) is taken back by
            // the recovery work once a reset completes, or failed when the disk is declared dead.
            return;
        }
        let Some((slot, late)) = inner.requests.in_flight_requests().find(|(slot, r)| due(*slot, r)) else { return };
        let tag = late.mapped.map_or(0, |m| m.tag);
        let given_up = force.filter(|t| t.slot() == slot).map(|t| t.slot());
        self.begin_reset(inner, BrokenReason::RequestTimedOut { id: tag }, given_up);
    }
}
