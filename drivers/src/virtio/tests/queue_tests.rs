//! The split virtqueue against an honest and against hostile devices.

extern crate std;

use std::vec::Vec;

use proptest::prelude::*;

use super::sim::{RingDevice, SimDesc, SimDma};
use crate::virtio::queue::{Buffer, Virtqueue};
use crate::virtio::{BrokenReason, Error};

const MAX: usize = 64;

fn setup(size: u16) -> (SimDma, Virtqueue<MAX>, RingDevice) {
    setup_with(size, false)
}

fn setup_with(size: u16, event_idx: bool) -> (SimDma, Virtqueue<MAX>, RingDevice) {
    let dma = SimDma::default();
    let queue = Virtqueue::<MAX>::allocate(&dma, size, event_idx).unwrap();
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
    let chain =
        [Buffer::readable(0x1000, 16), Buffer::readable(0x2000, 512), Buffer::writable(0x3000, 1)];
    let head = queue.add(&chain).unwrap();
    assert_eq!(queue.num_free(), 5);
    assert!(queue.kick_prepare().unwrap());

    let seen = device.pop_avail().unwrap();
    assert_eq!(seen.head, head);
    let expected: Vec<SimDesc> = chain
        .iter()
        .map(|b| SimDesc { addr: b.dma_addr, len: b.len, writable: b.device_writable })
        .collect();
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
    fn random_sequences_match_model(ops in proptest::collection::vec(op(), 1..300)) {
        let (dma, mut queue, mut device) = setup(16);
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
                            descs_in_flight += chain.len();
                            lens.insert(head, chain.len());
                        }
                        Err(Error::BadChain) => prop_assert!(chain.is_empty()),
                        Err(Error::QueueFull) => prop_assert!(chain.len() > usize::from(16 - descs_in_flight as u16)),
                        Err(e) => prop_assert!(false, "unexpected {e:?}"),
                    }
                }
                Op::Complete { pick } => {
                    held.extend(std::iter::from_fn(|| device.pop_avail()));
                    if !held.is_empty() {
                        let chain = held.remove(pick % held.len());
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
