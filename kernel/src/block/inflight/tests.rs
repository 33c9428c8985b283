use super::*;

type Table = InflightTable<u32, Result<(), u8>, 4, 8>;

#[test]
fn a_request_completes_once_and_is_collected_once() {
    let mut t = Table::new();
    let slot = t.free_slot().unwrap();
    let ticket = t.start(slot, 5, 42).unwrap();
    assert_eq!(t.in_flight(), 1);
    assert!(t.is_in_flight(ticket));
    assert_eq!(t.collect(ticket), None, "not done yet");
    assert_eq!(t.lookup(5), Some((slot, 42)));
    assert!(t.finish(slot, Ok(())));
    assert!(!t.finish(slot, Err(1)), "no double completion");
    assert_eq!(t.lookup(5), None, "tag freed");
    assert_eq!(t.in_flight(), 0);
    assert_eq!(t.collect(ticket), Some(Ok(())));
    assert_eq!(t.collect(ticket), None, "collected once");
}

#[test]
fn a_completing_request_is_pending_untouchable_then_done_once() {
    let mut t = Table::new();
    let ticket = t.start(0, 3, 7).unwrap();
    assert_eq!(t.begin_completion(0), Some(7));
    assert_eq!(t.begin_completion(0), None, "taken once");
    assert!(t.is_pending(ticket) && !t.is_in_flight(ticket));
    assert_eq!((t.in_flight(), t.lookup(3)), (0, None), "tag free for the next request");
    assert_eq!(t.in_flight_requests().count(), 0, "a timeout scan does not see it");
    assert!(!t.finish(0, Err(1)), "not in flight any more");
    assert_eq!(t.collect(ticket), None, "not done until the handler says so");
    assert!(t.start(1, 3, 8).is_some(), "the tag is reused meanwhile");
    assert!(t.end_completion(0, Ok(())));
    assert!(!t.end_completion(0, Err(2)), "ended once");
    assert_eq!(t.collect(ticket), Some(Ok(())));
}

#[test]
fn a_limit_below_the_capacity_is_the_tables_size() {
    let mut t = Table::with_limit(2);
    assert_eq!(t.limit(), 2);
    let a = t.reserve(1).unwrap();
    let b = t.reserve(2).unwrap();
    assert_eq!((a.slot(), b.slot()), (0, 1));
    assert_eq!(t.reserve(3), None, "full at the limit, not at the capacity");
    assert_eq!(t.free_slot(), None);
    assert!(t.fail_waiting(0, Ok(())));
    assert_eq!(t.collect(a), Some(Ok(())));
    assert_eq!(t.reserve(4).map(|t| t.slot()), Some(0));
    assert_eq!((Table::with_limit(0).limit(), Table::with_limit(99).limit(), Table::new().limit()), (1, 4, 4));
}

#[test]
fn a_stale_ticket_does_not_collect_the_slots_next_request() {
    let mut t = Table::new();
    let old = t.start(0, 1, 1).unwrap();
    t.finish(0, Ok(()));
    assert_eq!(t.collect(old), Some(Ok(())));
    let new = t.start(0, 1, 2).unwrap();
    t.finish(0, Err(7));
    assert_eq!(t.collect(old), None);
    assert_eq!(t.collect(new), Some(Err(7)));
}

#[test]
fn the_table_fills_and_refuses_bad_tags() {
    let mut t = Table::new();
    for i in 0..4 {
        let slot = t.free_slot().unwrap();
        assert!(t.start(slot, i, u32::from(i)).is_some());
    }
    assert_eq!(t.free_slot(), None);
    let mut t = Table::new();
    assert!(t.start(0, 8, 0).is_none(), "tag out of range");
    t.start(0, 3, 0).unwrap();
    assert!(t.start(1, 3, 0).is_none(), "tag in use");
    assert!(t.start(0, 4, 0).is_none(), "slot in use");
    assert_eq!(t.lookup(4), None);
}

#[test]
fn waiting_requests_start_oldest_first_once() {
    let mut t = Table::new();
    let a = t.reserve(10).unwrap();
    let b = t.reserve(20).unwrap();
    assert_eq!(t.waiting(), 2);
    assert!(t.is_pending(a) && !t.is_in_flight(a));
    let (slot, req) = t.oldest_waiting().unwrap();
    assert_eq!((slot, req), (a.slot(), 10));
    let started = t.start(slot, 3, 11).unwrap();
    assert_eq!(started, a, "the ticket survives the start");
    assert_eq!(t.oldest_waiting(), Some((b.slot(), 20)));
    assert!(t.start(slot, 4, 11).is_none(), "started once");
    assert!(t.fail_waiting(b.slot(), Err(2)));
    assert_eq!((t.waiting(), t.in_flight()), (0, 1));
    assert_eq!(t.collect(b), Some(Err(2)));
    assert!(t.finish(a.slot(), Ok(())));
    assert_eq!(t.collect(a), Some(Ok(())));
}

#[test]
fn a_claimed_request_is_started_by_its_claimer_only() {
    let mut t = Table::new();
    let a = t.reserve(10).unwrap();
    let b = t.reserve(20).unwrap();
    assert_eq!(t.claim(a.slot()), Some(10));
    assert_eq!(t.claim(a.slot()), None, "claimed once");
    assert_eq!(t.waiting(), 1);
    assert_eq!(t.not_started(), 2, "a claimed request is not started yet");
    assert_eq!(t.oldest_waiting(), Some((b.slot(), 20)), "others skip a claimed request");
    assert!(t.is_pending(a) && !t.is_in_flight(a));
    assert!(!t.fail_waiting(a.slot(), Err(1)), "not waiting any more");
    // Back to waiting, in its old place ahead of b.
    assert!(t.unclaim(a.slot()));
    assert_eq!(t.oldest_waiting(), Some((a.slot(), 10)));
    assert_eq!(t.waiting(), 2);
    t.claim(a.slot()).unwrap();
    assert!(t.start(a.slot(), 3, 11).is_some());
    assert_eq!(t.waiting(), 1);
    assert!(t.finish(a.slot(), Ok(())));
    assert_eq!(t.collect(a), Some(Ok(())));
    // Failed or released while claimed.
    t.claim(b.slot()).unwrap();
    assert!(t.fail_claimed(b.slot(), Err(5)));
    assert_eq!(t.collect(b), Some(Err(5)));
    let c = t.reserve(30).unwrap();
    t.claim(c.slot()).unwrap();
    assert!(t.release_claimed(c.slot()));
    assert!(!t.is_pending(c) && t.collect(c).is_none(), "a released ticket is stale");
    assert_eq!(t.free_slot(), Some(0));
    assert_eq!((t.waiting(), t.in_flight()), (0, 0));
}

#[test]
fn in_flight_and_waiting_requests_are_listed_apart() {
    let mut t = Table::new();
    let a = t.reserve(10).unwrap();
    let b = t.start(t.free_slot().unwrap(), 2, 20).unwrap();
    let c = t.reserve(30).unwrap();
    let listed = |it: &mut dyn Iterator<Item = (usize, u32)>| it.collect::<alloc::vec::Vec<_>>();
    assert_eq!(listed(&mut t.in_flight_requests()), [(b.slot(), 20)]);
    assert_eq!(listed(&mut t.waiting_requests()), [(a.slot(), 10), (c.slot(), 30)]);
    t.finish(b.slot(), Ok(()));
    assert!(t.in_flight_requests().next().is_none(), "a done request is not in flight");
}
