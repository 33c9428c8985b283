//! The virtio-blk driver and its virtqueue against a device that follows a byte script: honest
//! completions mixed with out-of-range or repeated used ids, lengths larger than the buffers,
//! used idx moving backwards or jumping ahead, config space changing under the driver, status
//! bytes never written. [`run`] is the body of the `virtio_blk` fuzz target (`fuzz/`, which
//! includes this file and `sim.rs` by path) and of the host tests below.
//!
//! What must hold whatever the script does:
//! - nothing panics, and no guard byte around any ring or buffer changes (the driver writes
//!   only its rings, the device only the buffers the driver published);
//! - every chain the driver publishes is exactly one submitted request's buffers, in order;
//! - a completion names a request in flight, never one already completed, with no more bytes
//!   than the request can hold; a request completes `Ok` only with a status byte the device
//!   wrote as OK;
//! - once the driver reports the device broken, it stays broken with the same reason and every
//!   later submission and poll fails with that error.
//!
//! [`run_with_resets`] (the `virtio_blk_reset` fuzz target) adds resets to the script, with
//! requests in flight: the driver gives up on the device (`VirtioBlk::abort`, as the kernel's
//! timeout does), initialises it again (`VirtioBlk::reinit`, `Virtqueue::reset`), and the device
//! may ignore resets for a while. Besides the rules above:
//! - after a reset that completed, the caller takes back every request in flight (the device
//!   touches none of them again); after one the device ignored, nothing is taken back and
//!   nothing new is accepted until a later reset completes;
//! - every request ends exactly once: completed by the device, or taken back;
//! - a successful `reinit` leaves a fresh queue (nothing in flight, every descriptor free, not
//!   broken), and no chain published afterwards reuses a descriptor of a request in flight.

extern crate std;

use std::vec::Vec;

use super::sim::{fill_bytes, read_byte, write_bytes, FakeTransport, RingDevice, SimChain, SimDesc, SimDma};
use crate::virtio::blk::{feature, req_status, DmaSegment, RequestDma, RequestHeader, RequestType, VirtioBlk, STATUS_UNWRITTEN};
use crate::virtio::{feature as common, BrokenReason, DeviceType, Error};

/// Queue capacity of the driver under test.
const Q: usize = 16;

/// The script: bytes read one at a time, zeros once it runs out.
struct Script<'a> {
    bytes: &'a [u8],
}

impl Script<'_> {
    fn u8(&mut self) -> u8 {
        let (&first, rest) = self.bytes.split_first().unwrap_or((&0, &[]));
        self.bytes = rest;
        first
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn done(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// A request the driver accepted: its buffers, as the device must see them.
#[derive(Clone, Debug)]
struct Request {
    /// Submission number, to check that each request ends once.
    id: u64,
    descs: Vec<SimDesc>,
    status: u64,
    /// Device-writable bytes of the chain.
    writable: u32,
}

/// What the test knows, to check the driver against.
struct Harness<'d> {
    dma: &'d SimDma,
    blk: VirtioBlk<&'d FakeTransport, Q>,
    ring: RingDevice,
    /// Submitted and not yet returned by `pop_completed`, indexed by token (a descriptor index,
    /// below the queue size: a small vector, not a hash map, whose hashing under the fuzzers'
    /// comparison tracing cost more than the lookups).
    in_flight: Vec<Option<Request>>,
    /// Requests in `in_flight`.
    in_flight_len: usize,
    /// Chains the device took off the available ring and has not completed.
    taken: Vec<SimChain>,
    /// The last used element the device wrote (to repeat it).
    last_used: Option<(u32, u32)>,
    /// The first broken reason the driver reported.
    broken: Option<BrokenReason>,
    completions: u64,
    /// Resets and re-initialisations are in the script ([`run_with_resets`]).
    resets: bool,
    /// Requests submitted, and whether each ended (completed or taken back), indexed by id.
    submitted: u64,
    ended: Vec<bool>,
    /// Requests that ended.
    ended_len: u64,
    /// The device ignored the last reset: it may still use every buffer in flight.
    device_holds: bool,
}

/// What a run ended with, for the tests to check.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The error `VirtioBlk::new` returned, if it failed.
    pub init_error: Option<Error>,
    /// Completions the driver returned.
    pub completions: u64,
    /// Why the driver declared the device broken, if it did.
    pub broken: Option<BrokenReason>,
}

/// Runs `script` (any bytes); panics if the driver breaks a rule listed in the module docs.
pub fn run(script: &[u8]) -> Outcome {
    run_script(script, false)
}

/// [`run`] with resets and re-initialisations in the script (see the module docs).
pub fn run_with_resets(script: &[u8]) -> Outcome {
    run_script(script, true)
}

fn run_script(script: &[u8], resets: bool) -> Outcome {
    let mut s = Script { bytes: script };
    let dma = SimDma::default();
    let dev = hostile_transport(&mut s);
    let outcome = {
        let blk = match VirtioBlk::<&FakeTransport, Q>::new(&dev, &dma, 0) {
            Ok(blk) => blk,
            Err(e) => {
                // Every failure after the device type matched leaves FAILED set (§3.1.1).
                if !matches!(e, Error::WrongDeviceType { .. }) {
                    assert!(dev.failed(), "init failed with {e:?} without setting FAILED");
                }
                dma.check_guards();
                // SAFETY: nothing uses the allocations any more (the driver was never built).
                unsafe { dma.release() };
                return Outcome { init_error: Some(e), completions: 0, broken: None };
            }
        };
        let ring = RingDevice::new(blk.queue().memory());
        let mut h = Harness {
            dma: &dma,
            blk,
            ring,
            in_flight: Vec::new(),
            in_flight_len: 0,
            taken: Vec::new(),
            last_used: None,
            broken: None,
            completions: 0,
            resets,
            submitted: 0,
            ended: Vec::new(),
            ended_len: 0,
            device_holds: false,
        };
        let mut steps = 0u32;
        while !s.done() && steps < 4096 {
            h.step(&mut s);
            steps += 1;
            // Guards are never repaired, so the last check catches every overwrite; the periodic
            // ones only say sooner where it happened. Each walks every allocation, and a long
            // script makes thousands: at steps 64, 128, 256, ... (a check every 64 steps took
            // most of the fuzzers' time).
            if steps >= 64 && steps.is_power_of_two() {
                dma.check_guards();
            }
        }
        // Drain: whatever the device left, the driver neither panics nor invents completions.
        h.poll();
        dma.check_guards();
        assert_eq!(h.in_flight_len, h.in_flight.iter().flatten().count());
        assert_eq!(h.ended_len, h.ended.iter().filter(|&&e| e).count() as u64);
        assert_eq!(h.submitted, h.ended_len + h.in_flight_len as u64, "every request ended once or is still in flight");
        Outcome { init_error: None, completions: h.completions, broken: h.broken }
    };
    // SAFETY: the driver (and its rings) and the device model are dropped above.
    unsafe { dma.release() };
    outcome
}

/// A block device whose features, queue size and config come from the script.
fn hostile_transport(s: &mut Script<'_>) -> FakeTransport {
    let bits = s.u8();
    let mut features = 0;
    for (bit, f) in [
        (0, common::RING_EVENT_IDX),
        (1, feature::FLUSH),
        (2, feature::SIZE_MAX),
        (3, feature::SEG_MAX),
        (4, feature::RO),
        (5, feature::BLK_SIZE),
        (6, common::ACCESS_PLATFORM),
    ] {
        if bits & (1 << bit) != 0 {
            features |= f;
        }
    }
    if bits & 0x80 == 0 || s.u8() & 7 != 0 {
        features |= common::VERSION_1;
    }
    let mut dev = FakeTransport::new(DeviceType::BLOCK, features);
    let knobs = s.u8();
    dev.queue_max = u16::from(s.u8() % 40);
    dev.ignores_reset = knobs & 1 != 0 && knobs & 2 != 0;
    if knobs & 4 != 0 {
        dev.acceptable_features = !feature::FLUSH;
    }
    if knobs & 8 != 0 {
        // Requests then take one ring descriptor each, their buffers in the head's table.
        dev.device_features |= common::INDIRECT_DESC;
    }
    dev.set_config_u64(0, u64::from(s.u8()) * 8);
    dev.set_config_u32(8, u32::from(s.u8()) * 64);
    dev.set_config_u32(12, u32::from(s.u8() % 5));
    dev.set_config_u32(20, 512);
    dev.config_changes.set(u32::from(s.u8() % 24));
    dev
}

impl Harness<'_> {
    fn step(&mut self, s: &mut Script<'_>) {
        let ops = if self.resets { 18 } else { 15 };
        match s.u8() % ops {
            0 => self.submit(s, RequestType::In),
            1 => self.submit(s, RequestType::Out),
            2 => self.submit(s, RequestType::Flush),
            3 => self.submit(s, RequestType::GetId),
            4 => self.take_available(),
            5 => self.device_complete(s, true),
            6 => self.device_complete(s, false),
            7 => {
                // A used element naming any id at all, published.
                let id = if s.u8() & 1 == 0 { u32::from(s.u8() % 20) } else { s.u32() };
                let len = s.u32() % 4096;
                self.push_used(id, len);
            }
            8 => {
                // The same used element again: a repeated id.
                if let Some((id, len)) = self.last_used {
                    self.push_used(id, len);
                }
            }
            9 => {
                // The used idx moves anywhere: backwards, or far ahead (beyond the queue size).
                let delta = s.u16();
                self.ring.set_used_idx(self.ring.used_idx().wrapping_add(delta));
            }
            10 => {
                // An element written without publishing it, then idx moved past it.
                let (id, len) = (u32::from(s.u8() % 20), s.u32() % 4096);
                self.ring.write_used_elem(self.ring.used_idx(), id, len);
                self.ring.set_used_idx(self.ring.used_idx().wrapping_add(u16::from(s.u8() % 3)));
            }
            11 => {
                self.ring.set_no_notify(s.u8() & 1 != 0);
                self.ring.set_avail_event(s.u16());
            }
            12 => {
                self.blk.transport().interrupt.set(u32::from(s.u8() & 3));
                let _ = self.blk.ack_interrupt();
            }
            13 => self.poll(),
            15 => self.abort(s),
            16 => self.reinit(),
            17 => self.blk.transport().ignores_reset_now.set(s.u8() & 1 != 0),
            _ => {
                // Honest round trips, to run the ring indices round many times.
                for _ in 0..=s.u8() % 32 {
                    self.submit(&mut Script { bytes: &[1, 0, 1] }, RequestType::In);
                    self.device_complete(&mut Script { bytes: &[] }, true);
                    self.poll();
                }
            }
        }
    }

    /// Submits a request of `kind` with buffers shaped by the script (some malformed on purpose).
    fn submit(&mut self, s: &mut Script<'_>, kind: RequestType) {
        let header = self.dma.buffer(16, 0);
        let sector = u64::from(s.u8());
        write_bytes(header, &RequestHeader { request_type: kind, sector }.to_bytes());
        let nsegs = match kind {
            RequestType::Flush => usize::from(s.u8().is_multiple_of(8)),
            _ => 1 + usize::from(s.u8() % 3),
        };
        let mut segments = [DmaSegment { dma_addr: 0, len: 0 }; 3];
        for segment in &mut segments[..nsegs] {
            let len = match (kind, s.u8() % 8) {
                (RequestType::GetId, 0) => 512,
                (RequestType::GetId, _) => 20,
                (_, 0) => u32::from(s.u8()),
                (_, n) => 512 * u32::from(n % 3 + 1),
            };
            *segment = DmaSegment { dma_addr: self.dma.buffer(len.max(1) as usize, 0x5a), len };
        }
        let data = &segments[..nsegs];
        let status = self.dma.buffer(1, STATUS_UNWRITTEN);
        let dma = RequestDma { header, data, status };
        let result = match kind {
            RequestType::In => self.blk.read_blocks_nb(sector, &dma),
            RequestType::Out => self.blk.write_blocks_nb(sector, &dma),
            RequestType::Flush => self.blk.flush_nb(&dma),
            RequestType::GetId => self.blk.get_id_nb(&dma),
        };
        match result {
            Ok(token) => {
                self.assert_not_broken("a submission succeeded");
                let device_writes = matches!(kind, RequestType::In | RequestType::GetId);
                let mut descs = Vec::with_capacity(nsegs + 2);
                descs.push(SimDesc { addr: header, len: 16, writable: false });
                descs.extend(data.iter().map(|d| SimDesc { addr: d.dma_addr, len: d.len, writable: device_writes }));
                descs.push(SimDesc { addr: status, len: 1, writable: true });
                let writable = descs.iter().filter(|d| d.writable).map(|d| d.len).sum();
                let id = self.submitted;
                self.submitted += 1;
                self.ended.push(false);
                let slot = usize::from(token.0);
                if slot >= self.in_flight.len() {
                    self.in_flight.resize_with(slot + 1, || None);
                }
                let old = self.in_flight[slot].replace(Request { id, descs, status, writable });
                assert!(old.is_none(), "token {} handed out while still in flight", token.0);
                self.in_flight_len += 1;
                // The device reads the descriptors as soon as they are published (a device
                // reading them late could see them reused after a spurious completion).
                self.take_available();
            }
            Err(Error::DeviceBroken(reason)) => self.saw_broken(reason),
            Err(_) => self.assert_consistent(),
        }
    }

    /// The device takes every chain the driver made available; each must be a request in
    /// flight, with exactly its own buffers.
    fn take_available(&mut self) {
        while let Some(chain) = self.ring.pop_avail() {
            let request = self
                .in_flight
                .get(usize::from(chain.head))
                .and_then(Option::as_ref)
                .unwrap_or_else(|| panic!("driver published chain {} that is not a request in flight", chain.head));
            assert_eq!(chain.descs, request.descs, "chain {} is not its request's buffers", chain.head);
            self.taken.push(chain);
        }
    }

    /// Completes a taken chain: `honest` writes every writable byte and status OK; otherwise the
    /// status (or none) and the used length come from the script.
    fn device_complete(&mut self, s: &mut Script<'_>, honest: bool) {
        self.take_available();
        if self.taken.is_empty() {
            return;
        }
        let chain = self.taken.remove(usize::from(s.u8()) % self.taken.len());
        let writable = chain.writable_len();
        let (status, len) = if honest {
            (Some(req_status::OK), writable)
        } else {
            let status = match s.u8() % 6 {
                0 => None,
                1 => Some(req_status::IOERR),
                2 => Some(req_status::UNSUPP),
                3 => Some(s.u8()),
                _ => Some(req_status::OK),
            };
            let len = match s.u8() % 5 {
                0 => 0,
                1 => writable + 1 + s.u32() % 8192,
                2 => s.u32(),
                _ => writable,
            };
            (status, len)
        };
        // Writable data gets a pattern, within each descriptor's length only.
        let (last, data) = chain.descs.split_last().expect("chains are never empty");
        for d in data.iter().filter(|d| d.writable) {
            fill_bytes(d.addr, 0xd7, d.len as usize);
        }
        if let Some(status) = status {
            write_bytes(last.addr, &[status]);
        }
        self.push_used(u32::from(chain.head), len);
    }

    fn push_used(&mut self, id: u32, len: u32) {
        self.ring.push_used(id, len);
        self.last_used = Some((id, len));
    }

    /// The interrupt handler's loop: pop every completion and finish it.
    fn poll(&mut self) {
        for _ in 0..=2 * Q {
            match self.blk.pop_completed() {
                Ok(None) => {
                    self.assert_not_broken("pop_completed returned None");
                    return;
                }
                Ok(Some(completion)) => {
                    self.assert_not_broken("pop_completed returned a completion");
                    let token = completion.token().0;
                    let written = completion.written_len();
                    let request = self
                        .in_flight
                        .get_mut(usize::from(token))
                        .and_then(Option::take)
                        .unwrap_or_else(|| panic!("completion of {token}, which is not in flight (or completed twice)"));
                    self.in_flight_len -= 1;
                    assert!(written <= request.writable, "{written} bytes for {token}: more than its buffers");
                    self.end(request.id, "ended twice");
                    self.completions += 1;
                    let status = read_byte(request.status);
                    match self.blk.complete(completion, status) {
                        Ok(()) => assert!(
                            status == req_status::OK && written > 0,
                            "request {token} completed Ok with status {status:#x}, {written} bytes"
                        ),
                        Err(Error::IoError) => assert_eq!(status, req_status::IOERR),
                        Err(Error::RequestUnsupported) => assert_eq!(status, req_status::UNSUPP),
                        Err(Error::DeviceBroken(reason)) => {
                            assert!(written == 0 || status > req_status::UNSUPP, "broken on a good status");
                            self.saw_broken(reason);
                        }
                        Err(e) => panic!("complete: unexpected {e:?}"),
                    }
                }
                Err(Error::DeviceBroken(reason)) => {
                    self.saw_broken(reason);
                    return;
                }
                Err(e) => panic!("pop_completed: unexpected {e:?}"),
            }
        }
        panic!("pop_completed returned more than {} completions in a row", 2 * Q);
    }

    /// The driver gives up on the device (the kernel's timeout: `abort`, which resets it).
    fn abort(&mut self, s: &mut Script<'_>) {
        let reason = BrokenReason::RequestTimedOut { id: u16::from(s.u8()) % Q as u16 };
        let error = self.blk.abort(reason);
        let latched = self.blk.queue().broken().expect("abort latches the queue broken");
        if error == Error::DeviceBroken(BrokenReason::ResetIgnored) {
            assert_ne!(self.blk.transport().status.get(), 0, "ResetIgnored, yet the status reads 0");
            self.device_holds = true;
        } else {
            assert_eq!(error, Error::DeviceBroken(latched));
            assert_eq!(self.blk.transport().status.get(), 0, "the reset completed: status 0");
            self.take_back();
        }
        self.broken = Some(latched);
    }

    /// The recovery work: initialise the device again over the same rings.
    fn reinit(&mut self) {
        match self.blk.reinit() {
            Ok(()) => {
                let q = self.blk.queue();
                assert_eq!((q.broken(), q.in_flight(), q.num_free()), (None, 0, q.size()), "a fresh queue");
                // Its reset completed, so whatever was in flight is the caller's again.
                self.take_back();
                self.ring = RingDevice::new(self.blk.queue().memory());
                assert_eq!(self.ring.avail_idx(), 0, "the available ring was zeroed");
                self.broken = None;
                self.last_used = None;
            }
            Err(Error::DeviceBroken(BrokenReason::ResetIgnored)) => {
                assert!(self.blk.queue().broken().is_some(), "latched after a failed reinit");
                self.device_holds = true;
                self.broken = self.blk.queue().broken();
            }
            Err(_) => {
                // After a completed reset (the device's status has FAILED set): the buffers
                // are the caller's, the queue stays broken until a later reinit.
                assert!(self.blk.queue().broken().is_some(), "latched after a failed reinit");
                self.take_back();
                self.broken = self.blk.queue().broken();
            }
        }
    }

    /// After a completed reset: every request in flight ends here, once (the kernel's
    /// `take_back`); the device has forgotten the chains it held.
    fn take_back(&mut self) {
        for slot in 0..self.in_flight.len() {
            if let Some(request) = self.in_flight[slot].take() {
                self.end(request.id, "ended twice (taken back)");
            }
        }
        self.in_flight_len = 0;
        self.taken.clear();
        self.device_holds = false;
    }

    /// Records that request `id` ended; panics with `what` if it had already.
    fn end(&mut self, id: u64, what: &str) {
        let ended = &mut self.ended[usize::try_from(id).unwrap()];
        assert!(!*ended, "request {id} {what}");
        *ended = true;
        self.ended_len += 1;
    }

    fn saw_broken(&mut self, reason: BrokenReason) {
        let first = *self.broken.get_or_insert(reason);
        assert_eq!(first, reason, "broken reason changed");
        assert_eq!(self.blk.queue().broken(), Some(first), "queue not latched broken");
    }

    fn assert_not_broken(&self, what: &str) {
        assert!(self.broken.is_none(), "{what} after the device was declared broken");
    }

    fn assert_consistent(&self) {
        if let Some(first) = self.broken {
            assert_eq!(self.blk.queue().broken(), Some(first));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1,500 scripts of 16 to 415 bytes from a xorshift stream seeded with `x`: deterministic
    /// stand-ins for what the fuzz targets feed the harness.
    fn random_scripts(mut x: u64) -> impl Iterator<Item = Vec<u8>> {
        (0..1500).map(move |_| {
            let len = 16 + (x % 400) as usize;
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect()
        })
    }

    /// A deterministic xorshift stream of scripts: the fuzz target's body as a unit test.
    #[test]
    fn random_scripts_hold_the_invariants() {
        random_scripts(0x9e37_79b9_7f4a_7c15).for_each(|script| {
            run(&script);
        });
    }

    /// Features: EVENT_IDX|FLUSH; queue 8; capacity 64 sectors; no config changes (the last
    /// byte). Requests below read or write one 1024-byte segment: 1025 writable bytes for a read.
    const HONEST_SETUP: [u8; 7] = [0b11, 0, 8, 8, 0, 0, 0];
    /// The same with INDIRECT_DESC offered (knobs bit 3).
    const INDIRECT_SETUP: [u8; 7] = [0b11, 8, 8, 8, 0, 0, 0];

    fn script(ops: &[u8]) -> Vec<u8> {
        let mut v = HONEST_SETUP.to_vec();
        v.extend_from_slice(ops);
        v
    }

    fn indirect_script(ops: &[u8]) -> Vec<u8> {
        let mut v = INDIRECT_SETUP.to_vec();
        v.extend_from_slice(ops);
        v
    }

    #[test]
    fn honest_device_completes_a_full_queue_of_indirect_requests() {
        // 8 reads of one 512-byte segment into a queue of 8: direct (3 descriptors each) only
        // 2 fit; indirect all 8. Then complete them all honestly and poll.
        let mut ops = Vec::new();
        for _ in 0..8 {
            ops.extend([0, 1, 0, 1]);
        }
        for _ in 0..8 {
            ops.extend([5, 0]);
        }
        ops.push(13);
        assert_eq!(run(&script(&ops)).completions, 2, "direct: the queue holds two requests");
        assert_eq!(run(&indirect_script(&ops)), Outcome { init_error: None, completions: 8, broken: None });
    }

    #[test]
    fn hostile_used_elements_break_the_device_with_indirect() {
        let broken = |ops: &[u8]| run(&indirect_script(ops)).broken;
        // Used id 1: the second buffer's descriptor were the chain direct, here a free one.
        assert_eq!(broken(&[0, 1, 0, 1, 7, 0, 1, 0, 0, 0, 0, 13]), Some(BrokenReason::UsedIdNotInFlight { id: 1 }));
        // Out of range.
        assert_eq!(broken(&[0, 1, 0, 1, 7, 0, 17, 0, 0, 0, 0, 13]), Some(BrokenReason::UsedIdOutOfRange { id: 17 }));
        // Submit two, complete the first honestly, poll, repeat its element, poll.
        assert_eq!(broken(&[0, 1, 0, 1, 0, 2, 0, 1, 5, 0, 13, 8, 13]), Some(BrokenReason::UsedIdAlreadyCompleted { id: 0 }));
        // Length larger than the buffers: checked against the driver's record, not the table.
        assert!(matches!(
            broken(&[0, 1, 0, 1, 6, 0, 4, 1, 0, 0, 0, 0, 13]),
            Some(BrokenReason::UsedLenTooLong { id: 0, len: 1026, writable: 1025 })
        ));
        // Used idx far ahead.
        assert!(matches!(broken(&[0, 1, 0, 1, 9, 0x2c, 0x01, 13]), Some(BrokenReason::UsedIdxAhead { now: 300, in_flight: 1, .. })));
    }

    #[test]
    fn honest_device_completes_everything() {
        // read sector 1 (one 512-byte segment), complete honestly, poll; a write, the same.
        let outcome = run(&script(&[0, 1, 0, 1, 5, 0, 13, 1, 2, 0, 1, 5, 0, 13]));
        assert_eq!(outcome, Outcome { init_error: None, completions: 2, broken: None });
    }

    #[test]
    fn hostile_used_elements_break_the_device() {
        let broken = |ops: &[u8]| run(&script(ops)).broken;
        // submit, then used id 17 (out of range for a queue of 8), poll; then more submissions.
        assert_eq!(broken(&[0, 1, 0, 1, 7, 0, 17, 0, 0, 0, 0, 13, 0, 1, 0, 1, 13]), Some(BrokenReason::UsedIdOutOfRange { id: 17 }));
        // submit two, complete the first honestly, poll, repeat its element, poll.
        assert_eq!(broken(&[0, 1, 0, 1, 0, 2, 0, 1, 5, 0, 13, 8, 13]), Some(BrokenReason::UsedIdAlreadyCompleted { id: 0 }));
        // used idx jumps 300 ahead (past the queue size); 40000 ahead reads as backwards in
        // 16-bit serial arithmetic, broken either way.
        assert!(matches!(broken(&[0, 1, 0, 1, 9, 0x2c, 0x01, 13]), Some(BrokenReason::UsedIdxAhead { now: 300, in_flight: 1, .. })));
        assert!(matches!(broken(&[0, 1, 0, 1, 9, 0x40, 0x9c, 13]), Some(BrokenReason::UsedIdxBackwards { seen: 0, now: 40000 })));
        // used idx moves backwards.
        assert!(matches!(broken(&[0, 1, 0, 1, 5, 0, 13, 9, 0xff, 0xff, 13]), Some(BrokenReason::UsedIdxBackwards { seen: 1, now: 0 })));
        // status never written, length 0.
        assert_eq!(broken(&[0, 1, 0, 1, 6, 0, 0, 0, 13]), Some(BrokenReason::StatusNotWritten { id: 0 }));
        // status never written, full length: the 0xff fill is caught.
        assert_eq!(broken(&[0, 1, 0, 1, 6, 0, 0, 4, 13]), Some(BrokenReason::BadStatus { id: 0, status: STATUS_UNWRITTEN }));
        // length larger than the buffers.
        assert!(matches!(
            broken(&[0, 1, 0, 1, 6, 0, 4, 1, 0, 0, 0, 0, 13]),
            Some(BrokenReason::UsedLenTooLong { id: 0, len: 1026, writable: 1025 })
        ));
    }

    /// The fuzz target `virtio_blk_reset`'s body on a deterministic stream of scripts.
    #[test]
    fn random_scripts_with_resets_hold_the_invariants() {
        random_scripts(0x2545_f491_4f6c_dd1d).for_each(|script| {
            run_with_resets(&script);
        });
    }

    #[test]
    fn requests_in_flight_are_taken_back_by_a_reset_and_the_disk_serves_again() {
        // Two reads in flight, abort (the reset completes), reinit, a read completed honestly.
        let ops = [0, 1, 0, 1, 0, 2, 0, 1, 15, 0, 16, 0, 3, 0, 1, 5, 0, 13];
        assert_eq!(run_with_resets(&script(&ops)), Outcome { init_error: None, completions: 1, broken: None });
        // The device ignores resets for a while: abort and a reinit leave the reads with it
        // (submissions refused); once it answers, the next reinit takes them back.
        let ops = [0, 1, 0, 1, 17, 1, 15, 0, 16, 0, 2, 0, 1, 17, 0, 16, 0, 3, 0, 1, 5, 0, 13];
        assert_eq!(run_with_resets(&script(&ops)), Outcome { init_error: None, completions: 1, broken: None });
        // A reinit whose reset is ignored latches ResetIgnored; then an abort whose reset
        // completes must say so (it returned the latched ResetIgnored: the reads were never
        // taken back, the caller told the device still held them).
        let ops = [0, 1, 0, 1, 17, 1, 16, 17, 0, 15, 0, 16, 0, 3, 0, 1, 5, 0, 13];
        assert_eq!(run_with_resets(&script(&ops)), Outcome { init_error: None, completions: 1, broken: None });
        // An abort latches its reason until the reinit.
        assert_eq!(run_with_resets(&script(&[0, 1, 0, 1, 15, 0])).broken, Some(BrokenReason::RequestTimedOut { id: 0 }));
    }

    #[test]
    fn config_changing_under_the_driver_fails_init_cleanly() {
        let mut s = HONEST_SETUP.to_vec();
        s[6] = 23; // the config changes on each of the first 23 reads
        let outcome = run(&s);
        assert_eq!(outcome.init_error, Some(Error::DeviceBroken(BrokenReason::ConfigUnstable)));
        // A few changes: the driver retries and reads a stable snapshot.
        s[6] = 3;
        assert_eq!(run(&s).init_error, None);
    }
}
