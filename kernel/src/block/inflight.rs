//! The in-flight request table of an interrupt-driven block driver (Linux: the tag set of
//! `blk-mq`, one tag per request the device holds).
//!
//! A request takes a free slot when it is submitted (task context) and is found again by its
//! device tag (the virtqueue's head descriptor) when the device completes it (interrupt
//! context). A request accepted while the device or the DMA layer has no room for it waits in
//! its slot ([`InflightTable::reserve`]) and is started later, oldest first, from the interrupt
//! handler or task context, whichever finds room first: exactly once. Its outcome stays in the slot until the submitter collects it with the [`Ticket`] it
//! was given; the ticket's generation makes a stale ticket (collected already, slot reused)
//! harmless. Fixed size, no allocation: every operation is safe in an interrupt handler.
#![forbid(unsafe_code)]

/// What becomes of a request taken back from a reset device ([`InflightTable::take_back`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TakeBack<O> {
    /// It waits to be started again (resubmitted).
    Requeue,
    /// It ends with this outcome.
    End(O),
}

/// How many times a request is resubmitted after resets before it fails (Linux: the blk-mq
/// requeue; `blk_retries=`). Counts in the request itself, so a request that was in flight
/// during several resets is charged once for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryBudget {
    /// Resubmissions allowed per request.
    pub max_retries: u8,
}

impl RetryBudget {
    /// Charges one retry to a request that has had `retries` so far: true (and counted) if it
    /// may go again, false if it is out of retries.
    pub fn charge(&self, retries: &mut u8) -> bool {
        if *retries < self.max_retries {
            *retries += 1;
            true
        } else {
            false
        }
    }
}

/// Names one submitted request until its outcome is collected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    slot: u16,
    generation: u32,
}

impl Ticket {
    /// The slot the request occupies (for per-slot scratch memory).
    pub fn slot(&self) -> usize {
        usize::from(self.slot)
    }
}

#[derive(Clone, Copy, Debug)]
enum SlotState<R, O> {
    Free,
    /// Accepted, not yet handed to the device; `seq` orders the waiting requests.
    Waiting {
        seq: u64,
        request: R,
    },
    /// Taken by one submitter, which maps its buffers without holding the table's lock; nobody
    /// else starts it. It goes on to the device ([`InflightTable::start`]), back to waiting
    /// ([`InflightTable::unclaim`]) or ends ([`InflightTable::fail_claimed`]).
    Claimed {
        seq: u64,
        request: R,
    },
    /// Owned by the device; `tag` is how the device names it, `seq` its place in the order
    /// should it be requeued.
    InFlight {
        tag: u16,
        seq: u64,
        request: R,
    },
    /// The device returned it (its tag is free again); the interrupt handler is unmapping its
    /// buffers with the table's lock dropped (the copy back of a bounced read). Nobody else
    /// touches it: no timeout, no abort, no collector sees it done yet.
    Completing,
    /// Completed, outcome not yet collected.
    Done(O),
}

/// `N` request slots (of which the first [`limit`](Self::limit) are used); device tags are
/// below `TAGS`.
pub struct InflightTable<R, O, const N: usize, const TAGS: usize> {
    slots: [SlotState<R, O>; N],
    /// Slots in use: a device that holds fewer requests than `N` lowers it at probe.
    limit: usize,
    generation: [u32; N],
    by_tag: [Option<u16>; TAGS],
    in_flight: usize,
    waiting: usize,
    next_seq: u64,
}

impl<R: Copy, O: Clone, const N: usize, const TAGS: usize> Default for InflightTable<R, O, N, TAGS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R: Copy, O: Clone, const N: usize, const TAGS: usize> InflightTable<R, O, N, TAGS> {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            slots: [const { SlotState::Free }; N],
            limit: N,
            generation: [0; N],
            by_tag: [None; TAGS],
            in_flight: 0,
            waiting: 0,
            next_seq: 0,
        }
    }

    /// An empty table that hands out only the first `limit` slots (1..=N; clamped).
    pub fn with_limit(limit: usize) -> Self {
        // Not `Self { limit, ..Self::new() }`: that builds the table twice on the stack, and a
        // driver's table is kilobytes (the probe's stack is 64 KiB).
        let mut table = Self::new();
        table.limit = limit.clamp(1, N);
        table
    }

    /// How many requests the table takes at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A free slot for the next request, without taking it (the driver needs the slot to place
    /// the request's scratch data before the device gives it a tag).
    pub fn free_slot(&self) -> Option<usize> {
        self.slots[..self.limit].iter().position(|s| matches!(s, SlotState::Free))
    }

    /// Records that the device holds `request` in slot `slot` under `tag`; the slot is free, or
    /// holds a waiting request (which this starts). `None` if the slot is in flight or done, or
    /// the tag is out of range or already in use (a driver bug, reported not hidden).
    pub fn start(&mut self, slot: usize, tag: u16, request: R) -> Option<Ticket> {
        let tag_entry = self.by_tag.get_mut(usize::from(tag))?;
        let (was_waiting, seq) = match *self.slots.get(slot)? {
            SlotState::Free => (false, self.next_seq),
            SlotState::Claimed { seq, .. } => (false, seq),
            SlotState::Waiting { seq, .. } => (true, seq),
            _ => return None,
        };
        if tag_entry.is_some() {
            return None;
        }
        *tag_entry = Some(slot as u16);
        if seq == self.next_seq {
            self.next_seq += 1;
        }
        self.slots[slot] = SlotState::InFlight { tag, seq, request };
        self.in_flight += 1;
        if was_waiting {
            self.waiting -= 1;
        }
        Some(Ticket { slot: slot as u16, generation: self.generation[slot] })
    }

    /// Accepts `request` into a free slot to be started later. `None` if the table is full.
    pub fn reserve(&mut self, request: R) -> Option<Ticket> {
        let slot = self.free_slot()?;
        self.slots[slot] = SlotState::Waiting { seq: self.next_seq, request };
        self.next_seq += 1;
        self.waiting += 1;
        Some(Ticket { slot: slot as u16, generation: self.generation[slot] })
    }

    /// The oldest waiting request and its slot.
    pub fn oldest_waiting(&self) -> Option<(usize, R)> {
        if self.waiting == 0 {
            return None; // the usual case: no walk
        }
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                SlotState::Waiting { seq, request } => Some((*seq, i, *request)),
                _ => None,
            })
            .min_by_key(|(seq, ..)| *seq)
            .map(|(_, i, r)| (i, r))
    }

    /// Takes the waiting request in `slot` for its submitter to map outside the lock (see
    /// `Claimed`); `None` if the slot is not waiting.
    pub fn claim(&mut self, slot: usize) -> Option<R> {
        let SlotState::Waiting { seq, request } = *self.slots.get(slot)? else { return None };
        self.slots[slot] = SlotState::Claimed { seq, request };
        self.waiting -= 1;
        Some(request)
    }

    /// Puts a claimed request back among the waiting ones, in its old place in the order.
    pub fn unclaim(&mut self, slot: usize) -> bool {
        let Some(&SlotState::Claimed { seq, request }) = self.slots.get(slot) else { return false };
        self.slots[slot] = SlotState::Waiting { seq, request };
        self.waiting += 1;
        true
    }

    /// Ends a claimed request without starting it.
    pub fn fail_claimed(&mut self, slot: usize, outcome: O) -> bool {
        if !matches!(self.slots.get(slot), Some(SlotState::Claimed { .. })) {
            return false;
        }
        self.slots[slot] = SlotState::Done(outcome);
        true
    }

    /// Frees a claimed request's slot as if it had never been accepted (its ticket goes stale).
    pub fn release_claimed(&mut self, slot: usize) -> bool {
        if !matches!(self.slots.get(slot), Some(SlotState::Claimed { .. })) {
            return false;
        }
        self.slots[slot] = SlotState::Free;
        self.generation[slot] = self.generation[slot].wrapping_add(1);
        true
    }

    /// Ends a waiting request without starting it (it could never be: a bad request).
    pub fn fail_waiting(&mut self, slot: usize, outcome: O) -> bool {
        if !matches!(self.slots.get(slot), Some(SlotState::Waiting { .. })) {
            return false;
        }
        self.slots[slot] = SlotState::Done(outcome);
        self.waiting -= 1;
        true
    }

    /// Requests accepted but not yet started.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Requests accepted and not yet started: waiting, or claimed by a submitter mapping them
    /// now (on another CPU, a claim is a passing state the caller must not mistake for a start).
    pub fn not_started(&self) -> usize {
        self.waiting + self.slots.iter().filter(|s| matches!(s, SlotState::Claimed { .. })).count()
    }

    /// The request the device completed under `tag`, and its slot; `None` if no request has that
    /// tag (the caller reports a device completing something it was never given).
    pub fn lookup(&self, tag: u16) -> Option<(usize, R)> {
        let slot = usize::from((*self.by_tag.get(usize::from(tag))?)?);
        match self.slots[slot] {
            SlotState::InFlight { request, .. } => Some((slot, request)),
            _ => None,
        }
    }

    /// Ends the device's ownership of the request in `slot` with `outcome`, frees its tag.
    /// Returns false (and changes nothing) if the slot holds no request in flight.
    pub fn finish(&mut self, slot: usize, outcome: O) -> bool {
        let Some(SlotState::InFlight { tag, .. }) = self.slots.get(slot) else { return false };
        self.by_tag[usize::from(*tag)] = None;
        self.slots[slot] = SlotState::Done(outcome);
        self.in_flight -= 1;
        true
    }

    /// Takes the request in `slot` from the device (its tag is freed) for the completion
    /// handler to unmap without the table's lock; end it with
    /// [`end_completion`](Self::end_completion). `None` if the slot holds no request in flight.
    pub fn begin_completion(&mut self, slot: usize) -> Option<R> {
        let Some(&SlotState::InFlight { tag, request, .. }) = self.slots.get(slot) else { return None };
        self.by_tag[usize::from(tag)] = None;
        self.slots[slot] = SlotState::Completing;
        self.in_flight -= 1;
        Some(request)
    }

    /// Takes back every request the device held, after the device was reset (it touches none
    /// of their buffers any more) (Linux: `blk_mq_requeue_request` on each request the reset
    /// took from the device). `decide` gets each one's slot and request, releases what the
    /// request held (its mappings: exactly once, here), and says whether it goes back to
    /// waiting, in its old place in the order and with the request as `decide` left it
    /// (Linux inserts requeued requests at the head), or ends with an outcome. Every tag is
    /// free afterwards. Returns (requeued, ended). Requests waiting, claimed or completing are
    /// not the device's and are left alone.
    pub fn take_back(&mut self, mut decide: impl FnMut(usize, &mut R) -> TakeBack<O>) -> (usize, usize) {
        let (mut requeued, mut ended) = (0, 0);
        for slot in 0..N {
            let SlotState::InFlight { tag, seq, mut request } = self.slots[slot] else { continue };
            self.by_tag[usize::from(tag)] = None;
            self.in_flight -= 1;
            self.slots[slot] = match decide(slot, &mut request) {
                TakeBack::Requeue => {
                    requeued += 1;
                    self.waiting += 1;
                    SlotState::Waiting { seq, request }
                }
                TakeBack::End(outcome) => {
                    ended += 1;
                    SlotState::Done(outcome)
                }
            };
        }
        (requeued, ended)
    }

    /// Records the outcome of a request taken by [`begin_completion`](Self::begin_completion).
    /// Returns false (and changes nothing) if the slot is not completing.
    pub fn end_completion(&mut self, slot: usize, outcome: O) -> bool {
        if !matches!(self.slots.get(slot), Some(SlotState::Completing)) {
            return false;
        }
        self.slots[slot] = SlotState::Done(outcome);
        true
    }

    /// The outcome of `ticket`'s request if it completed, freeing its slot; `None` while it is in
    /// flight or if the ticket is stale.
    pub fn collect(&mut self, ticket: Ticket) -> Option<O> {
        let slot = ticket.slot();
        if self.generation.get(slot) != Some(&ticket.generation) {
            return None;
        }
        let SlotState::Done(outcome) = &self.slots[slot] else { return None };
        let outcome = outcome.clone();
        self.slots[slot] = SlotState::Free;
        self.generation[slot] = self.generation[slot].wrapping_add(1);
        Some(outcome)
    }

    /// True if `ticket` names a request still owned by the device, waiting for it, being
    /// mapped by its submitter, or being completed.
    pub fn is_pending(&self, ticket: Ticket) -> bool {
        self.generation.get(ticket.slot()) == Some(&ticket.generation)
            && matches!(
                self.slots[ticket.slot()],
                SlotState::InFlight { .. } | SlotState::Waiting { .. } | SlotState::Claimed { .. } | SlotState::Completing
            )
    }

    /// True if `ticket` names a request still owned by the device.
    pub fn is_in_flight(&self, ticket: Ticket) -> bool {
        self.generation.get(ticket.slot()) == Some(&ticket.generation) && matches!(self.slots[ticket.slot()], SlotState::InFlight { .. })
    }

    /// Requests the device holds.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The requests the device holds, with their slots (for a timeout scan or an abort).
    pub fn in_flight_requests(&self) -> impl Iterator<Item = (usize, R)> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| match s {
            SlotState::InFlight { request, .. } => Some((i, *request)),
            _ => None,
        })
    }

    /// The requests accepted but not yet started, with their slots.
    pub fn waiting_requests(&self) -> impl Iterator<Item = (usize, R)> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| match s {
            SlotState::Waiting { request, .. } => Some((i, *request)),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests;
