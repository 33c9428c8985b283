extern crate std;

use std::collections::HashMap;
use std::vec::Vec;

use super::*;
use crate::block::inflight::{InflightTable, RetryBudget, TakeBack, Ticket};

#[test]
fn dead_only_after_repeated_failed_reinits_in_a_row() {
    let mut r = Recovery::new();
    assert!(r.begin());
    assert!(!r.begin(), "one reset at a time");
    assert_eq!(r.reinit_failed(), DiskHealth::Resetting);
    assert_eq!(r.reinit_failed(), DiskHealth::Resetting);
    r.reinit_succeeded();
    assert_eq!((r.health(), r.failed_in_a_row()), (DiskHealth::Live, 0), "a success starts the count over");
    assert!(r.begin());
    for _ in 1..MAX_FAILED_REINITS {
        assert_eq!(r.reinit_failed(), DiskHealth::Resetting);
    }
    assert_eq!(r.reinit_failed(), DiskHealth::Dead);
    assert!(!r.begin(), "a dead disk is not reset again");
    r.reinit_succeeded();
    assert_eq!(r.health(), DiskHealth::Dead, "and does not come back by itself");
    assert_eq!(r.resets(), 2);
}

/// A request as the driver keeps it: which mapping it holds (if started) and its retries.
#[derive(Clone, Copy, Debug)]
struct Req {
    mapping: Option<u32>,
    retries: u8,
}

type Table = InflightTable<Req, Result<(), &'static str>, 8, 16>;

/// The driver's side of the accounting: mappings made and released, outcomes delivered.
#[derive(Default)]
struct Ledger {
    next_mapping: u32,
    /// Per mapping: how many times it was released.
    released: HashMap<u32, u32>,
    /// Per ticket slot and generation: how many times an outcome was delivered.
    delivered: Vec<(Ticket, Result<(), &'static str>)>,
}

impl Ledger {
    /// Starts every waiting request, oldest first, with a fresh mapping, under tags 0...
    fn start_all(&mut self, t: &mut Table, first_tag: &mut u16) {
        while let Some((slot, mut req)) = t.oldest_waiting() {
            t.claim(slot).unwrap();
            req.mapping = Some(self.next_mapping);
            self.released.insert(self.next_mapping, 0);
            self.next_mapping += 1;
            t.start(slot, *first_tag % 16, req).unwrap();
            *first_tag += 1;
        }
    }

    /// The device was reset: every request it held is taken back, its mapping released,
    /// and it retries while the budget lasts, else ends with the reason.
    fn reset(&mut self, t: &mut Table, budget: RetryBudget) -> (usize, usize) {
        t.take_back(|_, req| {
            let m = req.mapping.take().expect("a request in flight holds its mapping");
            *self.released.get_mut(&m).unwrap() += 1;
            if budget.charge(&mut req.retries) {
                TakeBack::Requeue
            } else {
                TakeBack::End(Err("timed out"))
            }
        })
    }

    fn collect(&mut self, t: &mut Table, tickets: &[Ticket]) {
        for &ticket in tickets {
            if let Some(outcome) = t.collect(ticket) {
                self.delivered.push((ticket, outcome));
            }
        }
    }
}

#[test]
fn requests_retry_up_to_the_budget_and_each_ends_once_with_every_mapping_released_once() {
    let budget = RetryBudget { max_retries: 2 };
    let mut t = Table::new();
    let mut ledger = Ledger::default();
    let mut tag = 0;
    // Four requests reach the device; two more wait behind them.
    let mut tickets: Vec<Ticket> = (0..4).map(|_| t.reserve(Req { mapping: None, retries: 0 }).unwrap()).collect();
    ledger.start_all(&mut t, &mut tag);
    tickets.extend((0..2).map(|_| t.reserve(Req { mapping: None, retries: 0 }).unwrap()));
    assert_eq!((t.in_flight(), t.waiting()), (4, 2));

    // First reset: the four go back to waiting, ahead of the two (their old order).
    assert_eq!(ledger.reset(&mut t, budget), (4, 0));
    assert_eq!((t.in_flight(), t.waiting()), (0, 6));
    assert_eq!(t.oldest_waiting().map(|(s, _)| s), Some(tickets[0].slot()), "requeued in their old place");
    assert!((0..16).all(|tag| t.lookup(tag).is_none()), "every tag free");
    ledger.start_all(&mut t, &mut tag);
    assert_eq!(t.in_flight(), 6);

    // Second reset: the first four retry a second time, the two others a first time.
    assert_eq!(ledger.reset(&mut t, budget), (6, 0));
    ledger.start_all(&mut t, &mut tag);
    // The device completes one request of the first four normally.
    let (slot, req) = t.lookup((tag - 6) % 16).unwrap();
    *ledger.released.get_mut(&req.mapping.unwrap()).unwrap() += 1;
    assert!(t.finish(slot, Ok(())));
    // Third reset: the other three of the first four are out of retries and fail with the
    // reason; the two others retry their second time.
    assert_eq!(ledger.reset(&mut t, budget), (2, 3));
    ledger.collect(&mut t, &tickets);
    ledger.start_all(&mut t, &mut tag);
    // Fourth reset: the last two are out too.
    assert_eq!(ledger.reset(&mut t, budget), (0, 2));
    ledger.collect(&mut t, &tickets);
    ledger.collect(&mut t, &tickets); // collecting again delivers nothing

    assert_eq!(ledger.delivered.len(), 6, "each request ended once: {:?}", ledger.delivered);
    for &ticket in &tickets {
        assert_eq!(ledger.delivered.iter().filter(|(t, _)| *t == ticket).count(), 1, "{ticket:?} once");
    }
    assert_eq!(ledger.delivered.iter().filter(|(_, o)| o.is_ok()).count(), 1);
    assert!(ledger.delivered.iter().filter(|(_, o)| o.is_err()).all(|(_, o)| *o == Err("timed out")));
    assert!(ledger.released.values().all(|&n| n == 1), "every mapping released exactly once: {:?}", ledger.released);
    assert_eq!(ledger.released.len(), 4 + 6 + 6 + 2);
    assert_eq!((t.in_flight(), t.waiting()), (0, 0));
    assert!(t.free_slot().is_some());
}

#[test]
fn take_back_leaves_what_the_device_does_not_hold() {
    let mut t = Table::new();
    let waiting = t.reserve(Req { mapping: None, retries: 0 }).unwrap();
    let claimed = t.reserve(Req { mapping: None, retries: 0 }).unwrap();
    t.claim(claimed.slot()).unwrap();
    let completing = t.start(t.free_slot().unwrap(), 3, Req { mapping: Some(9), retries: 0 }).unwrap();
    t.begin_completion(completing.slot()).unwrap();
    let mut seen = 0;
    assert_eq!(
        t.take_back(|_, _| {
            seen += 1;
            TakeBack::Requeue
        }),
        (0, 0)
    );
    assert_eq!(seen, 0);
    assert!(t.is_pending(waiting) && t.is_pending(claimed) && t.is_pending(completing));
    assert!(t.end_completion(completing.slot(), Ok(())), "the completion still ends normally");
}

#[test]
fn no_retries_ends_every_request_at_the_first_reset() {
    let budget = RetryBudget { max_retries: 0 };
    let mut t = Table::new();
    let mut ledger = Ledger::default();
    let tickets: Vec<Ticket> = (0..3).map(|_| t.reserve(Req { mapping: None, retries: 0 }).unwrap()).collect();
    ledger.start_all(&mut t, &mut 0);
    assert_eq!(ledger.reset(&mut t, budget), (0, 3));
    ledger.collect(&mut t, &tickets);
    assert_eq!(ledger.delivered.len(), 3);
    assert!(ledger.released.values().all(|&n| n == 1));
}
