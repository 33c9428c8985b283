//! The split virtqueue against an honest and against hostile devices.

extern crate std;

use std::vec::Vec;

use proptest::prelude::*;

use super::sim::{RingDevice, SimDesc, SimDma};
use crate::virtio::queue::{Buffer, RingFeatures, Virtqueue};
use crate::virtio::{BrokenReason, Error};

const MAX: usize = 64;

fn setup(size: u16) -> (SimDma, Virtqueue<MAX>, RingDevice) {
    setup_with(size, false)
}

fn setup_with(size: u16, event_idx: bool) -> (SimDma, Virtqueue<MAX>, RingDevice) {
    setup_features(size, RingFeatures { event_idx, indirect_len: 0 })
}

fn setup_features(size: u16, features: RingFeatures) -> (SimDma, Virtqueue<MAX>, RingDevice) {
    let dma = SimDma::default();
    let queue = Virtqueue::<MAX>::allocate(&dma, size, features).unwrap();
    let device = RingDevice::new(queue.memory());
    (dma, queue, device)
}

/// A request-like chain: one readable buffer, one writable buffer of `writable` bytes.
fn add_pair(queue: &mut Virtqueue<MAX>, dma: &SimDma, writable: u32) -> u16 {
    let out = dma.buffer(16, 0);
    let inb = dma.buffer(writable as usize, 0);
    queue.add(&[Buffer::readable(out, 16), Buffer::writable(inb, writable)]).unwrap()
}

#[test]
fn chain_reaches_device_and_comes_back() {
    let (dma, mut queue, mut device) = setup(8);
    let chain = [Buffer::readable(0x1000, 16), Buffer::readable(0x2000, 512), Buffer::writable(0x3000, 1)];
    let head = queue.add(&chain).unwrap();
    assert_eq!(queue.num_free(), 5);
    assert!(queue.kick_prepare().unwrap());

    let seen = device.pop_avail().unwrap();
    assert_eq!(seen.head, head);
    let expected: Vec<SimDesc> = chain.iter().map(|b| SimDesc { addr: b.dma_addr, len: b.len, writable: b.device_writable }).collect();
    assert_eq!(seen.descs, expected);
    assert_eq!(queue.pop_used().unwrap(), None);

    device.push_used(head.into(), 1);
    assert_eq!(queue.pop_used().unwrap(), Some((head, 1)));
    assert_eq!(queue.pop_used().unwrap(), None);
    assert_eq!((queue.num_free(), queue.in_flight()), (8, 0));
    dma.check_guards();
}

#[test]
fn many_in_flight_complete_out_of_order() {
    let (dma, mut queue, mut device) = setup(16);
    // Eight 2-descriptor chains fill the 16 descriptors.
    let heads: Vec<u16> = (0..8).map(|i| add_pair(&mut queue, &dma, 100 + i)).collect();
    assert_eq!(queue.add(&[Buffer::readable(0x1000, 1)]), Err(Error::QueueFull));

    let mut chains: Vec<_> = std::iter::from_fn(|| device.pop_avail()).collect();
    assert_eq!(chains.iter().map(|c| c.head).collect::<Vec<_>>(), heads);
    // Complete in a scrambled order, one at a time and in batches.
    chains.swap(0, 5);
    chains.reverse();
    for chain in &chains[..3] {
        device.push_used(chain.head.into(), chain.writable_len());
    }
    for chain in &chains[..3] {
        assert_eq!(queue.pop_used().unwrap(), Some((chain.head, chain.writable_len())));
    }
    // Reuse freed descriptors while others are still in flight.
    let again = add_pair(&mut queue, &dma, 7);
    chains.push(device.pop_avail().unwrap());
    assert_eq!(chains.last().unwrap().head, again);
    for chain in &chains[3..] {
        device.push_used(chain.head.into(), 0);
        assert_eq!(queue.pop_used().unwrap(), Some((chain.head, 0)));
    }
    assert_eq!((queue.num_free(), queue.in_flight()), (16, 0));
    dma.check_guards();
}

#[test]
fn indices_wrap_past_65535() {
    let (dma, mut queue, mut device) = setup(4);
    let (out, inb) = (dma.buffer(16, 0), dma.buffer(8, 0));
    for round in 0..70_000u32 {
        let a = queue.add(&[Buffer::readable(out, 16), Buffer::writable(inb, 8)]).unwrap();
        let b = queue.add(&[Buffer::writable(0x4000, 4)]).unwrap();
        let ca = device.pop_avail().unwrap();
        let cb = device.pop_avail().unwrap();
        assert_eq!((ca.head, cb.head), (a, b));
        device.push_used(b.into(), round % 5);
        device.push_used(a.into(), 8);
        assert_eq!(queue.pop_used().unwrap(), Some((b, round % 5)));
        assert_eq!(queue.pop_used().unwrap(), Some((a, 8)));
    }
    assert_eq!(device.avail_idx(), (140_000u32 % 65_536) as u16);
    assert_eq!(device.used_idx(), (140_000u32 % 65_536) as u16);
    assert_eq!(queue.num_free(), 4);
    dma.check_guards();
}

#[test]
fn malformed_chains_are_refused() {
    let (dma, mut queue, _device) = setup(4);
    assert_eq!(queue.add(&[]), Err(Error::BadChain));
    let writable_first = [Buffer::writable(0x1000, 1), Buffer::readable(0x2000, 1)];
    assert_eq!(queue.add(&writable_first), Err(Error::BadChain));
    assert_eq!(queue.add(&[Buffer::readable(0x1000, 1); 5]), Err(Error::BadChain));
    let over_4g = [Buffer::readable(0x1000, u32::MAX), Buffer::writable(0x2000, 1)];
    assert_eq!(queue.add(&over_4g), Err(Error::BadChain));
    assert_eq!((queue.num_free(), queue.in_flight()), (4, 0));
    dma.check_guards();
}

#[test]
fn notification_suppression() {
    let (_dma, mut queue, mut device) = setup(8);
    device.set_no_notify(true);
    queue.add(&[Buffer::readable(0x1000, 1)]).unwrap();
    assert!(!queue.kick_prepare().unwrap());
    device.set_no_notify(false);
    queue.add(&[Buffer::readable(0x1000, 1)]).unwrap();
    assert!(queue.kick_prepare().unwrap());
}

#[test]
fn event_idx_suppression() {
    let (dma, mut queue, mut device) = setup_with(8, true);
    // The device wants a notification once avail idx passes 2 (avail_event = 2).
    device.set_avail_event(2);
    queue.add(&[Buffer::readable(0x1000, 1)]).unwrap(); // idx 0 -> 1
    assert!(!queue.kick_prepare().unwrap());
    queue.add(&[Buffer::readable(0x1000, 1)]).unwrap(); // idx 1 -> 2
    assert!(!queue.kick_prepare().unwrap());
    queue.add(&[Buffer::readable(0x1000, 1)]).unwrap(); // idx 2 -> 3: crosses the event
    assert!(queue.kick_prepare().unwrap());
    // The driver asks for an interrupt at the next completion.
    let chain = device.pop_avail().unwrap();
    device.push_used(chain.head.into(), 0);
    queue.pop_used().unwrap().unwrap();
    assert_eq!(device.used_event(), 1);
    dma.check_guards();
}

#[test]
fn a_batch_of_chains_takes_one_kick() {
    let (dma, mut queue, mut device) = setup(8);
    let heads: Vec<u16> = (0..3).map(|_| add_pair(&mut queue, &dma, 1)).collect();
    // Published (the device may already take them), not yet notified.
    assert_eq!((queue.added_since_kick(), device.avail_idx()), (3, 3));
    assert!(queue.kick_prepare().unwrap(), "one notification for the batch");
    assert_eq!(queue.added_since_kick(), 0);
    let seen: Vec<u16> = std::iter::from_fn(|| device.pop_avail()).map(|c| c.head).collect();
    assert_eq!(seen, heads);
    dma.check_guards();
}

#[test]
fn event_idx_checks_the_whole_batch_against_avail_event() {
    let (dma, mut queue, mut device) = setup_with(16, true);
    let batch = |queue: &mut Virtqueue<MAX>, n: usize| {
        for _ in 0..n {
            add_pair(queue, &dma, 1);
        }
        queue.kick_prepare().unwrap()
    };
    // The device asks for a notification at idx 0, the batch's first chain ([0, 3)).
    device.set_avail_event(0);
    assert!(batch(&mut queue, 3), "avail_event at the batch's start: notify");
    // It consumed one and asks at idx 4, the middle of the next batch ([3, 6)).
    device.set_avail_event(4);
    assert!(batch(&mut queue, 3), "avail_event inside the batch: notify");
    // At 9, beyond the next batch ([6, 8)): it is still busy with the ring, no notification.
    device.set_avail_event(9);
    assert!(!batch(&mut queue, 2), "avail_event ahead: suppressed");
    // Left behind at an idx an earlier batch passed (notified then): suppressed.
    let chains: Vec<_> = std::iter::from_fn(|| device.pop_avail()).collect();
    assert_eq!(chains.len(), 8);
    for chain in &chains {
        device.push_used(chain.head.into(), 1);
    }
    while queue.pop_used().unwrap().is_some() {}
    device.set_avail_event(4);
    assert!(!batch(&mut queue, 2), "avail_event behind the batch ([8, 10)): suppressed");
    // And one that names the batch's last chain ([10, 14), event 13).
    device.set_avail_event(13);
    assert!(batch(&mut queue, 4), "avail_event at the batch's last chain: notify");
    dma.check_guards();
}

/// Runs a hostile scenario and checks the queue breaks with `reason`, stays broken, and that
/// nothing was written outside the rings and buffers.
fn assert_breaks(dma: &SimDma, queue: &mut Virtqueue<MAX>, reason: BrokenReason) {
    assert_eq!(queue.pop_used(), Err(Error::DeviceBroken(reason)));
    assert_eq!(queue.broken(), Some(reason));
    // Latched: every later call fails the same way, and the queue state does not move.
    let (free, in_flight) = (queue.num_free(), queue.in_flight());
    assert_eq!(queue.pop_used(), Err(Error::DeviceBroken(reason)));
    assert_eq!(queue.add(&[Buffer::readable(0x1000, 1)]), Err(Error::DeviceBroken(reason)));
    assert_eq!(queue.kick_prepare(), Err(Error::DeviceBroken(reason)));
    assert_eq!((queue.num_free(), queue.in_flight()), (free, in_flight));
    dma.check_guards();
}

#[test]
fn hostile_used_id_out_of_range() {
    let (dma, mut queue, mut device) = setup(8);
    add_pair(&mut queue, &dma, 4);
    device.pop_avail().unwrap();
    device.push_used(8, 0);
    assert_breaks(&dma, &mut queue, BrokenReason::UsedIdOutOfRange { id: 8 });
}

#[test]
fn hostile_used_id_huge() {
    let (dma, mut queue, mut device) = setup(8);
    add_pair(&mut queue, &dma, 4);
    device.push_used(u32::MAX, 0);
    assert_breaks(&dma, &mut queue, BrokenReason::UsedIdOutOfRange { id: u32::MAX });
}

#[test]
fn hostile_used_id_never_made_available() {
    let (dma, mut queue, mut device) = setup(8);
    add_pair(&mut queue, &dma, 4); // descriptors 0 and 1
    device.push_used(5, 0);
    assert_breaks(&dma, &mut queue, BrokenReason::UsedIdNotInFlight { id: 5 });
}

#[test]
fn hostile_used_id_not_a_chain_head() {
    let (dma, mut queue, mut device) = setup(8);
    let head = add_pair(&mut queue, &dma, 4);
    let body = device.pop_avail().unwrap().head + 1;
    assert_eq!(head, 0);
    device.push_used(body.into(), 0);
    assert_breaks(&dma, &mut queue, BrokenReason::UsedIdNotInFlight { id: body });
}

#[test]
fn hostile_used_id_repeated() {
    let (dma, mut queue, mut device) = setup(8);
    let head = add_pair(&mut queue, &dma, 4);
    add_pair(&mut queue, &dma, 4);
    device.push_used(head.into(), 4);
    device.push_used(head.into(), 4);
    assert_eq!(queue.pop_used().unwrap(), Some((head, 4)));
    assert_breaks(&dma, &mut queue, BrokenReason::UsedIdAlreadyCompleted { id: head });
}

#[test]
fn hostile_used_len_too_long() {
    let (dma, mut queue, mut device) = setup(8);
    let head = add_pair(&mut queue, &dma, 512);
    device.push_used(head.into(), 513);
    let reason = BrokenReason::UsedLenTooLong { id: head, len: 513, writable: 512 };
    assert_breaks(&dma, &mut queue, reason);
}

#[test]
fn hostile_used_len_on_read_only_chain() {
    let (dma, mut queue, mut device) = setup(8);
    let head = queue.add(&[Buffer::readable(dma.buffer(64, 0), 64)]).unwrap();
    device.push_used(head.into(), 1);
    let reason = BrokenReason::UsedLenTooLong { id: head, len: 1, writable: 0 };
    assert_breaks(&dma, &mut queue, reason);
}

#[test]
fn hostile_used_idx_backwards() {
    let (dma, mut queue, mut device) = setup(8);
    let a = add_pair(&mut queue, &dma, 4);
    add_pair(&mut queue, &dma, 4);
    device.push_used(a.into(), 4);
    assert_eq!(queue.pop_used().unwrap(), Some((a, 4)));
    device.set_used_idx(0);
    assert_breaks(&dma, &mut queue, BrokenReason::UsedIdxBackwards { seen: 1, now: 0 });
}

#[test]
fn hostile_used_idx_backwards_before_consumed() {
    let (dma, mut queue, mut device) = setup(8);
    let a = add_pair(&mut queue, &dma, 4);
    let b = add_pair(&mut queue, &dma, 4);
    device.push_used(a.into(), 4);
    device.push_used(b.into(), 4);
    assert_eq!(queue.pop_used().unwrap(), Some((a, 4)));
    // The driver saw idx 2; the device takes back one completion it already published.
    device.set_used_idx(1);
    assert_breaks(&dma, &mut queue, BrokenReason::UsedIdxBackwards { seen: 2, now: 1 });
}

#[test]
fn hostile_used_idx_jumps_past_queue_size() {
    let (dma, mut queue, mut device) = setup(8);
    add_pair(&mut queue, &dma, 4);
    device.set_used_idx(9);
    let reason = BrokenReason::UsedIdxAhead { last_used: 0, now: 9, in_flight: 1 };
    assert_breaks(&dma, &mut queue, reason);
}

#[test]
fn hostile_used_idx_ahead_of_in_flight() {
    let (dma, mut queue, mut device) = setup(8);
    let a = add_pair(&mut queue, &dma, 4);
    device.push_used(a.into(), 4);
    device.push_used(a.into(), 4); // claims two completions, one chain was in flight
    let reason = BrokenReason::UsedIdxAhead { last_used: 0, now: 2, in_flight: 1 };
    assert_breaks(&dma, &mut queue, reason);
}

/// A queue with indirect tables of `len` entries.
fn setup_indirect(size: u16, len: u16) -> (SimDma, Virtqueue<MAX>, RingDevice) {
    setup_features(size, RingFeatures { event_idx: false, indirect_len: len })
}

/// A request-like chain of `n` buffers (header, data, status): readable first.
fn request_chain(dma: &SimDma, n: usize, fill: u8) -> Vec<Buffer> {
    (0..n)
        .map(|i| {
            let len = 16 + 16 * i as u32;
            let addr = dma.buffer(len as usize, fill);
            if i == 0 {
                Buffer::readable(addr, len)
            } else {
                Buffer::writable(addr, len)
            }
        })
        .collect()
}

fn sim_descs(chain: &[Buffer]) -> Vec<SimDesc> {
    chain.iter().map(|b| SimDesc { addr: b.dma_addr, len: b.len, writable: b.device_writable }).collect()
}

/// Where head `head`'s indirect table must be.
fn table_of(queue: &Virtqueue<MAX>, head: u16) -> u64 {
    let (region, len) = queue.memory().indirect().expect("indirect tables");
    region.dma_addr + 16 * u64::from(len) * u64::from(head)
}

#[test]
fn indirect_chain_takes_one_descriptor_and_its_heads_table() {
    let (dma, mut queue, mut device) = setup_indirect(8, 6);
    assert_eq!(queue.indirect_len(), 6);
    let chain = request_chain(&dma, 4, 0);
    let head = queue.add(&chain).unwrap();
    assert_eq!((queue.num_free(), queue.in_flight()), (7, 1));
    assert!(queue.kick_prepare().unwrap());

    let seen = device.pop_avail().unwrap();
    assert_eq!(seen.head, head);
    // The ring descriptor: the head's table, 4 entries long, INDIRECT alone (no NEXT, no WRITE).
    assert_eq!(seen.indirect, Some((table_of(&queue, head), 4 * 16, 4)));
    assert_eq!(seen.descs, sim_descs(&chain));
    // Entries 0.. linked by NEXT in order, WRITE on the device-writable ones, the last ends.
    assert_eq!(seen.links, [(1, 1), (1 | 2, 2), (1 | 2, 3), (2, 0)]);

    device.push_used(head.into(), 16 + 32 + 48);
    assert_eq!(queue.pop_used().unwrap(), Some((head, 96)));
    assert_eq!((queue.num_free(), queue.in_flight()), (8, 0));
    dma.check_guards();
}

#[test]
fn short_and_long_chains_stay_direct_with_indirect_on() {
    let (dma, mut queue, mut device) = setup_indirect(8, 3);
    // One buffer: nothing to gain from a table.
    let one = request_chain(&dma, 1, 0);
    queue.add(&one).unwrap();
    let seen = device.pop_avail().unwrap();
    assert_eq!((seen.indirect, seen.descs), (None, sim_descs(&one)));
    assert_eq!(queue.num_free(), 7);
    // Longer than a table: a direct chain of ring descriptors.
    let four = request_chain(&dma, 4, 0);
    queue.add(&four).unwrap();
    let seen = device.pop_avail().unwrap();
    assert_eq!((seen.indirect, seen.descs), (None, sim_descs(&four)));
    assert_eq!(queue.num_free(), 3);
    // And one that fits goes indirect with 3 descriptors left.
    let three = request_chain(&dma, 3, 0);
    queue.add(&three).unwrap();
    assert!(device.pop_avail().unwrap().indirect.is_some());
    assert_eq!(queue.num_free(), 2);
    dma.check_guards();
}

#[test]
fn indirect_tables_are_capped_at_the_queue_size() {
    let (_dma, queue, _device) = setup_indirect(4, 100);
    assert_eq!(queue.indirect_len(), 4, "no chain may be longer than the queue (2.7.5.3.1)");
    let (_dma, queue, _device) = setup_indirect(4, 1);
    assert_eq!(queue.indirect_len(), 0, "a one-entry table buys nothing");
    assert!(queue.memory().indirect().is_none());
}

#[test]
fn full_queue_of_indirect_chains_then_tables_reused() {
    let (dma, mut queue, mut device) = setup_indirect(16, 6);
    // Sixteen 6-buffer requests in a 16-entry queue: direct, only two would fit.
    let chains: Vec<Vec<Buffer>> = (0..16).map(|i| request_chain(&dma, 6, i)).collect();
    let heads: Vec<u16> = chains.iter().map(|c| queue.add(c).unwrap()).collect();
    assert_eq!((queue.num_free(), queue.in_flight()), (0, 16));
    assert_eq!(queue.add(&request_chain(&dma, 2, 0)), Err(Error::QueueFull));
    let mut sorted = heads.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 16, "every request has its own head, so its own table");

    let seen: Vec<_> = std::iter::from_fn(|| device.pop_avail()).collect();
    for (chain, (seen, head)) in chains.iter().zip(seen.iter().zip(&heads)) {
        assert_eq!((seen.head, &seen.descs), (*head, &sim_descs(chain)));
        assert_eq!(seen.indirect.map(|i| i.0), Some(table_of(&queue, *head)));
    }
    // Complete out of order; each completion frees exactly one descriptor.
    for (n, i) in [5usize, 0, 15, 7].into_iter().enumerate() {
        device.push_used(heads[i].into(), 1);
        assert_eq!(queue.pop_used().unwrap(), Some((heads[i], 1)));
        assert_eq!(queue.num_free(), n as u16 + 1);
    }
    // New chains reuse the freed heads and their tables, overwritten with the new buffers
    // (shorter than before: the device sees only the new length).
    let again: Vec<Vec<Buffer>> = (0..4).map(|i| request_chain(&dma, 3, 0x80 + i)).collect();
    for chain in &again {
        let head = queue.add(chain).unwrap();
        assert!([5usize, 0, 15, 7].iter().any(|&i| heads[i] == head), "head {head} was not freed");
        let seen = device.pop_avail().unwrap();
        assert_eq!((seen.head, seen.descs), (head, sim_descs(chain)));
        assert_eq!(seen.indirect, Some((table_of(&queue, head), 3 * 16, 4)));
        device.push_used(head.into(), 0);
    }
    assert_eq!(queue.num_free(), 0);
    while queue.pop_used().unwrap().is_some() {}
    for (i, head) in heads.iter().enumerate() {
        if ![5usize, 0, 15, 7].contains(&i) {
            device.push_used((*head).into(), 0);
        }
    }
    while queue.pop_used().unwrap().is_some() {}
    assert_eq!((queue.num_free(), queue.in_flight()), (16, 0));
    dma.check_guards();
}

#[test]
fn device_scribbling_on_a_table_changes_nothing_the_driver_frees() {
    let (dma, mut queue, mut device) = setup_indirect(8, 4);
    let chain = request_chain(&dma, 3, 0);
    let head = queue.add(&chain).unwrap();
    let other = queue.add(&request_chain(&dma, 3, 1)).unwrap();
    let seen = device.pop_avail().unwrap();
    // The device rewrites the table: NEXT loops, a huge writable length, another head's index.
    let (table, ..) = seen.indirect.unwrap();
    for entry in 0..4u64 {
        let mut raw = [0u8; 16];
        raw[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        raw[12..14].copy_from_slice(&(1u16 | 2 | 4).to_le_bytes());
        raw[14..16].copy_from_slice(&other.to_le_bytes());
        super::sim::write_bytes(table + 16 * entry, &raw);
    }
    // Its used length is still checked against the driver's own record of the chain.
    let writable = 32 + 48;
    device.push_used(head.into(), writable + 1);
    let reason = BrokenReason::UsedLenTooLong { id: head, len: writable + 1, writable };
    assert_eq!(queue.pop_used(), Err(Error::DeviceBroken(reason)));

    // On a fresh queue the same scribbling and an honest length: one descriptor comes back.
    let (dma, mut queue, mut device) = setup_indirect(8, 4);
    let head = queue.add(&request_chain(&dma, 3, 0)).unwrap();
    queue.add(&request_chain(&dma, 3, 1)).unwrap();
    let (table, ..) = device.pop_avail().unwrap().indirect.unwrap();
    super::sim::write_bytes(table, &[0xff; 48]);
    device.push_used(head.into(), 80);
    assert_eq!(queue.pop_used().unwrap(), Some((head, 80)));
    assert_eq!((queue.num_free(), queue.in_flight()), (7, 1));
    // The freed head is reused, its table rewritten whole for the new chain.
    let chain = request_chain(&dma, 4, 2);
    assert_eq!(queue.add(&chain).unwrap(), head);
    device.pop_avail().unwrap();
    let seen = device.pop_avail().unwrap();
    assert_eq!((seen.head, seen.descs), (head, sim_descs(&chain)));
    dma.check_guards();
}

#[test]
fn hostile_used_id_not_a_head_with_indirect() {
    let (dma, mut queue, mut device) = setup_indirect(8, 4);
    let head = queue.add(&request_chain(&dma, 3, 0)).unwrap();
    assert_eq!(head, 0);
    device.pop_avail().unwrap();
    // Descriptor 1 would be the chain's second buffer if it were direct; here it is free.
    device.push_used(1, 0);
    assert_breaks(&dma, &mut queue, BrokenReason::UsedIdNotInFlight { id: 1 });
}

#[test]
fn hostile_used_id_repeated_with_indirect() {
    let (dma, mut queue, mut device) = setup_indirect(8, 4);
    let head = queue.add(&request_chain(&dma, 3, 0)).unwrap();
    queue.add(&request_chain(&dma, 3, 1)).unwrap();
    device.push_used(head.into(), 0);
    device.push_used(head.into(), 0);
    assert_eq!(queue.pop_used().unwrap(), Some((head, 0)));
    assert_breaks(&dma, &mut queue, BrokenReason::UsedIdAlreadyCompleted { id: head });
}

#[test]
fn hostile_used_id_out_of_range_and_idx_ahead_with_indirect() {
    let (dma, mut queue, mut device) = setup_indirect(8, 4);
    queue.add(&request_chain(&dma, 3, 0)).unwrap();
    device.push_used(8, 0);
    assert_breaks(&dma, &mut queue, BrokenReason::UsedIdOutOfRange { id: 8 });
    let (dma, mut queue, mut device) = setup_indirect(8, 4);
    let head = queue.add(&request_chain(&dma, 3, 0)).unwrap();
    device.push_used(head.into(), 0);
    device.push_used(head.into(), 0);
    let reason = BrokenReason::UsedIdxAhead { last_used: 0, now: 2, in_flight: 1 };
    assert_breaks(&dma, &mut queue, reason);
}

/// One step of the randomised test.
#[derive(Clone, Debug)]
enum Op {
    /// Add a chain of `readable` then `writable` buffers.
    Add { readable: usize, writable: usize },
    /// The device takes everything available and completes the `pick`-th chain it holds.
    Complete { pick: usize },
    /// The driver pops one completion.
    Pop,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, 0..3usize).prop_map(|(readable, writable)| Op::Add { readable, writable }),
        any::<usize>().prop_map(|pick| Op::Complete { pick }),
        Just(Op::Pop),
    ]
}

proptest! {
    // No regression files: failures print their minimal case, which belongs in a named test.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// Random add / complete / pop sequences against a model: every pop returns exactly what
    /// the device completed, in order, and descriptors are never lost or double-freed.
    #[test]
    fn random_sequences_match_model(
        ops in proptest::collection::vec(op(), 1..300),
        indirect_len in prop_oneof![Just(0u16), Just(3u16)],
    ) {
        let (dma, mut queue, mut device) = setup_indirect(16, indirect_len);
        // Ring descriptors a chain of `n` buffers takes.
        let ring_descs = |n: usize| if n > 1 && n <= usize::from(indirect_len) { 1 } else { n };
        let mut held = Vec::new(); // chains the device took and has not completed
        let mut completed = std::collections::VecDeque::new(); // (head, len) published, not popped
        let mut descs_in_flight = 0usize;
        let mut lens = std::collections::HashMap::new(); // head -> chain length
        for op in ops {
            match op {
                Op::Add { readable, writable } => {
                    let chain: Vec<Buffer> = (0..readable)
                        .map(|i| Buffer::readable(0x1000 + i as u64, 8))
                        .chain((0..writable).map(|i| Buffer::writable(0x2000 + i as u64, 16)))
                        .collect();
                    match queue.add(&chain) {
                        Ok(head) => {
                            descs_in_flight += ring_descs(chain.len());
                            lens.insert(head, ring_descs(chain.len()));
                        }
                        Err(Error::BadChain) => prop_assert!(chain.is_empty()),
                        Err(Error::QueueFull) => prop_assert!(ring_descs(chain.len()) > 16 - descs_in_flight),
                        Err(e) => prop_assert!(false, "unexpected {e:?}"),
                    }
                }
                Op::Complete { pick } => {
                    held.extend(std::iter::from_fn(|| device.pop_avail()));
                    if !held.is_empty() {
                        let chain = held.remove(pick % held.len());
                        prop_assert_eq!(chain.indirect.is_some(), ring_descs(chain.descs.len()) == 1 && chain.descs.len() > 1);
                        let len = (pick as u32) % (chain.writable_len() + 1);
                        device.push_used(chain.head.into(), len);
                        completed.push_back((chain.head, len));
                    }
                }
                Op::Pop => {
                    let popped = queue.pop_used().unwrap();
                    prop_assert_eq!(popped, completed.pop_front());
                    if let Some((head, _)) = popped {
                        descs_in_flight -= lens.remove(&head).unwrap();
                    }
                }
            }
            prop_assert_eq!(usize::from(queue.num_free()) + descs_in_flight, 16);
        }
        dma.check_guards();
    }
}
