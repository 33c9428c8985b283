//! The block protocol against a simulated disk, honest and hostile.

extern crate std;

use std::boxed::Box;
use std::vec::Vec;

use super::sim::{read_bytes, write_bytes, FakeTransport, RingDevice, SimChain, SimDma};
use crate::virtio::blk::{
    feature, req_status, BlkOptions, Completion, DmaSegment, RequestDma, RequestHeader, RequestType, Token, VirtioBlk, STATUS_UNWRITTEN,
};
use crate::virtio::queue::VirtqueueMemory;
use crate::virtio::status::{DRIVER_OK, FAILED};
use crate::virtio::{feature as common, BrokenReason, DeviceType, Error};

pub(super) const Q: usize = 16;
pub(super) const CAPACITY: u64 = 64;

pub(super) type Blk = VirtioBlk<&'static FakeTransport, Q>;

/// A disk behind the ring: executes chains like QEMU's virtio-blk would.
pub(super) struct SimDisk {
    pub(super) ring: RingDevice,
    pub(super) disk: Vec<u8>,
}

impl SimDisk {
    pub(super) fn new(mem: &VirtqueueMemory) -> Self {
        Self { ring: RingDevice::new(mem), disk: (0..CAPACITY * 512).map(|i| i as u8).collect() }
    }

    pub(super) fn take_all(&mut self) -> Vec<SimChain> {
        std::iter::from_fn(|| self.ring.pop_avail()).collect()
    }

    /// Performs the request and returns the status and the bytes written into the chain.
    fn execute(&mut self, chain: &SimChain) -> (u8, u32) {
        let header = read_bytes(chain.descs[0].addr, 16);
        let request_type = u32::from_le_bytes(header[0..4].try_into().unwrap());
        let mut offset = 512 * u64::from_le_bytes(header[8..16].try_into().unwrap()) as usize;
        let data = &chain.descs[1..chain.descs.len() - 1];
        let mut written = 1; // the status byte
        for segment in data {
            let len = segment.len as usize;
            match request_type {
                0 => write_bytes(segment.addr, &self.disk[offset..offset + len]),
                1 => self.disk[offset..offset + len].copy_from_slice(&read_bytes(segment.addr, len)),
                8 => write_bytes(segment.addr, b"sim-disk-0\0\0\0\0\0\0\0\0\0\0"),
                _ => return (req_status::UNSUPP, 1),
            }
            offset += len;
            if segment.writable {
                written += segment.len;
            }
        }
        (req_status::OK, written)
    }

    /// Executes `chain`, writes `status` (the real one if `None`) and returns it used.
    pub(super) fn complete(&mut self, chain: &SimChain, status: Option<u8>) {
        let (real, written) = self.execute(chain);
        write_bytes(chain.descs.last().unwrap().addr, &[status.unwrap_or(real)]);
        self.ring.push_used(chain.head.into(), written);
    }
}

/// A request's buffers, "mapped" (allocated in simulated DMA memory).
pub(super) struct Request {
    header: u64,
    pub(super) data: Vec<DmaSegment>,
    status: u64,
}

impl Request {
    pub(super) fn new(dma: &SimDma, request_type: RequestType, sector: u64, segments: &[(u32, u8)]) -> Self {
        let header = dma.buffer(16, 0);
        write_bytes(header, &RequestHeader { request_type, sector }.to_bytes());
        let data = segments.iter().map(|&(len, fill)| DmaSegment { dma_addr: dma.buffer(len as usize, fill), len }).collect();
        let status = dma.buffer(1, STATUS_UNWRITTEN);
        Self { header, data, status }
    }

    pub(super) fn dma(&self) -> RequestDma<'_> {
        RequestDma { header: self.header, data: &self.data, status: self.status }
    }

    pub(super) fn status_byte(&self) -> u8 {
        read_bytes(self.status, 1)[0]
    }
}

pub(super) fn device(features: u64) -> &'static FakeTransport {
    let dev = FakeTransport::new(DeviceType::BLOCK, common::VERSION_1 | features);
    dev.set_config_u64(0, CAPACITY);
    dev.set_config_u32(8, 4096); // size_max
    dev.set_config_u32(12, 2); // seg_max
    dev.set_config_u32(20, 512); // blk_size
    Box::leak(Box::new(dev))
}

pub(super) fn setup(features: u64) -> (SimDma, &'static FakeTransport, Blk, SimDisk) {
    let dma = SimDma::default();
    let dev = device(features);
    let blk = Blk::new(dev, &dma, 0).unwrap();
    let disk = SimDisk::new(blk.queue().memory());
    (dma, dev, blk, disk)
}

/// Pops one completion and finishes it with the status byte from `request`.
pub(super) fn finish(blk: &mut Blk, request: &Request) -> (Token, Result<(), Error>) {
    let completion: Completion = blk.pop_completed().unwrap().expect("a completion");
    let token = completion.token();
    (token, blk.complete(completion, request.status_byte()))
}

#[test]
fn init_negotiates_features_and_reads_config() {
    let topology = 1 << 10; // offered, not understood
    let (dma, dev, blk, _disk) = setup(feature::SIZE_MAX | feature::BLK_SIZE | feature::FLUSH | topology);
    assert_eq!(blk.features(), common::VERSION_1 | feature::SIZE_MAX | feature::BLK_SIZE | feature::FLUSH);
    assert_eq!(blk.capacity(), CAPACITY);
    assert_eq!(blk.config().size_max, Some(4096));
    assert_eq!(blk.config().seg_max, None, "SEG_MAX not offered: field not read");
    assert_eq!(blk.config().blk_size, Some(512));
    assert_eq!(blk.queue().size(), Q as u16);
    assert_ne!(dev.status.get() & DRIVER_OK, 0);
    dma.check_guards();
}

/// The kernel keeps the driver in a static IRQ-safe lock, which needs `Send`.
#[allow(dead_code)]
fn driver_is_send() {
    fn send<T: Send>() {}
    send::<crate::virtio::blk::VirtioBlk<crate::virtio::mmio::VirtioMmio, 256>>();
}

#[test]
fn capacity_is_read_as_64_bits() {
    let dma = SimDma::default();
    let dev = device(0);
    dev.set_config_u64(0, 0x1_0000_0040);
    assert_eq!(Blk::new(dev, &dma, 0).unwrap().capacity(), 0x1_0000_0040);
}

#[test]
fn queue_size_is_the_largest_power_of_two_both_allow() {
    let dma = SimDma::default();
    let mut dev = FakeTransport::new(DeviceType::BLOCK, common::VERSION_1);
    dev.queue_max = 12;
    let dev = Box::leak(Box::new(dev));
    let blk = Blk::new(&*dev, &dma, 0).unwrap();
    assert_eq!(blk.queue().size(), 8);
    assert_eq!(dev.activated.get().unwrap().1, 8);
}

#[test]
fn reads_and_writes_complete_out_of_order() {
    let (dma, dev, mut blk, mut disk) = setup(feature::SEG_MAX);
    // Three writes in flight, two segments each.
    let writes: Vec<Request> =
        (0..3u8).map(|i| Request::new(&dma, RequestType::Out, 8 * u64::from(i), &[(512, 0xa0 + i), (1024, 0xb0 + i)])).collect();
    let tokens: Vec<Token> = (0..3).map(|i| blk.write_blocks_nb(8 * i as u64, &writes[i].dma()).unwrap()).collect();
    assert_eq!(tokens.len(), 3);
    let chains = disk.take_all();
    for chain in chains.iter().rev() {
        disk.complete(chain, None);
    }
    for chain in chains.iter().rev() {
        let index = chains.iter().position(|c| c.head == chain.head).unwrap();
        let (token, result) = finish(&mut blk, &writes[index]);
        assert_eq!((token, result), (tokens[index], Ok(())));
    }

    let read = Request::new(&dma, RequestType::In, 8, &[(1024, 0), (512, 0)]);
    blk.read_blocks_nb(8, &read.dma()).unwrap();
    let chain = disk.take_all().pop().unwrap();
    disk.complete(&chain, None);
    dev.interrupt.set(1);
    assert!(blk.ack_interrupt().used_buffer());
    let completion = blk.pop_completed().unwrap().unwrap();
    assert_eq!(completion.written_len(), 1536 + 1);
    assert_eq!(blk.complete(completion, read.status_byte()), Ok(()));
    // Sector 8 holds the second write, its two segments back to back.
    let mut expected = std::vec![0xa1; 512];
    expected.extend([0xb1; 1024]);
    let mut got = read_bytes(read.data[0].dma_addr, 1024);
    got.extend(read_bytes(read.data[1].dma_addr, 512));
    assert_eq!(got, expected);
    assert_eq!(dev.notifications.get(), 4);
    assert_eq!(blk.notifications(), 4, "the driver counts its kicks");
    assert_eq!(blk.queue().num_free(), Q as u16);
    dma.check_guards();
}

#[test]
fn requests_added_as_a_batch_take_one_notification() {
    let (dma, dev, mut blk, mut disk) = setup(feature::FLUSH);
    let reads: Vec<Request> = (0..3).map(|i| Request::new(&dma, RequestType::In, 2 * i, &[(512, 0)])).collect();
    let tokens: Vec<Token> = reads
        .iter()
        .enumerate()
        .map(|(i, r)| blk.add_request(RequestHeader { request_type: RequestType::In, sector: 2 * i as u64 }, &r.dma()).unwrap())
        .collect();
    let flush = Request::new(&dma, RequestType::Flush, 0, &[]);
    blk.add_request(RequestHeader { request_type: RequestType::Flush, sector: 0 }, &flush.dma()).unwrap();
    assert_eq!((blk.unkicked(), dev.notifications.get()), (4, 0), "published, not notified");
    assert_eq!(blk.kick(), Ok(true));
    assert_eq!((blk.unkicked(), dev.notifications.get(), blk.notifications()), (0, 1, 1));
    assert_eq!(blk.kick(), Ok(false), "nothing new: no notification");
    assert_eq!(dev.notifications.get(), 1);
    // Refused requests publish nothing.
    let bad = Request::new(&dma, RequestType::In, CAPACITY, &[(512, 0)]);
    let header = RequestHeader { request_type: RequestType::In, sector: CAPACITY };
    assert_eq!(blk.add_request(header, &bad.dma()), Err(Error::BadRequest));
    assert_eq!(blk.unkicked(), 0);

    for chain in disk.take_all() {
        disk.complete(&chain, None);
    }
    for (i, read) in reads.iter().enumerate() {
        assert_eq!(finish(&mut blk, read), (tokens[i], Ok(())));
        assert_eq!(read_bytes(read.data[0].dma_addr, 512), disk.disk[1024 * i..1024 * i + 512]);
    }
    assert_eq!(finish(&mut blk, &flush).1, Ok(()));
    dma.check_guards();
}

#[test]
fn error_statuses_are_typed() {
    let (dma, _dev, mut blk, mut disk) = setup(0);
    for (status, expected) in [(req_status::IOERR, Error::IoError), (req_status::UNSUPP, Error::RequestUnsupported)] {
        let read = Request::new(&dma, RequestType::In, 1, &[(512, 0)]);
        blk.read_blocks_nb(1, &read.dma()).unwrap();
        let chain = disk.take_all().pop().unwrap();
        disk.complete(&chain, Some(status));
        assert_eq!(finish(&mut blk, &read).1, Err(expected));
    }
    assert_eq!(blk.queue().broken(), None, "I/O errors are not protocol violations");
    dma.check_guards();
}

#[test]
fn read_only_device_refuses_writes_before_the_queue() {
    let (dma, dev, mut blk, disk) = setup(feature::RO);
    assert!(blk.readonly());
    let write = Request::new(&dma, RequestType::Out, 0, &[(512, 1)]);
    assert_eq!(blk.write_blocks_nb(0, &write.dma()), Err(Error::ReadOnly));
    assert_eq!((blk.queue().num_free(), disk.ring.avail_idx(), dev.notifications.get()), (Q as u16, 0, 0));
    let read = Request::new(&dma, RequestType::In, 0, &[(512, 0)]);
    assert!(blk.read_blocks_nb(0, &read.dma()).is_ok());
}

#[test]
fn status_never_written_breaks_the_device() {
    let (dma, _dev, mut blk, mut disk) = setup(0);
    let read = Request::new(&dma, RequestType::In, 0, &[(512, 0)]);
    let token = blk.read_blocks_nb(0, &read.dma()).unwrap();
    let chain = disk.take_all().pop().unwrap();
    disk.ring.push_used(chain.head.into(), 513); // claims completion, wrote nothing
    let (_, result) = finish(&mut blk, &read);
    let reason = BrokenReason::BadStatus { id: token.0, status: STATUS_UNWRITTEN };
    assert_eq!(result, Err(Error::DeviceBroken(reason)));
    let again = Request::new(&dma, RequestType::In, 0, &[(512, 0)]);
    assert_eq!(blk.read_blocks_nb(0, &again.dma()), Err(Error::DeviceBroken(reason)));
    assert_eq!(blk.pop_completed(), Err(Error::DeviceBroken(reason)));
    dma.check_guards();
}

#[test]
fn completion_with_nothing_written_breaks_the_device() {
    let (dma, _dev, mut blk, mut disk) = setup(0);
    let read = Request::new(&dma, RequestType::In, 0, &[(512, 0)]);
    let token = blk.read_blocks_nb(0, &read.dma()).unwrap();
    let chain = disk.take_all().pop().unwrap();
    write_bytes(read.status, &[req_status::OK]);
    disk.ring.push_used(chain.head.into(), 0);
    let reason = BrokenReason::StatusNotWritten { id: token.0 };
    assert_eq!(finish(&mut blk, &read).1, Err(Error::DeviceBroken(reason)));
    assert_eq!(blk.queue().broken(), Some(reason));
}

#[test]
fn hostile_length_surfaces_through_the_block_layer() {
    let (dma, _dev, mut blk, mut disk) = setup(0);
    let read = Request::new(&dma, RequestType::In, 0, &[(512, 0)]);
    let token = blk.read_blocks_nb(0, &read.dma()).unwrap();
    disk.take_all();
    disk.ring.push_used(token.0.into(), 4096);
    let reason = BrokenReason::UsedLenTooLong { id: token.0, len: 4096, writable: 513 };
    assert_eq!(blk.pop_completed(), Err(Error::DeviceBroken(reason)));
    dma.check_guards();
}

#[test]
fn malformed_requests_are_refused_before_the_queue() {
    let (dma, dev, mut blk, disk) = setup(feature::SIZE_MAX | feature::SEG_MAX);
    let cases: [(u64, &[(u32, u8)]); 6] = [
        (CAPACITY, &[(512, 0)]),              // past the end
        (CAPACITY - 1, &[(1024, 0)]),         // runs past the end
        (u64::MAX, &[(512, 0)]),              // sector overflow
        (0, &[(100, 0)]),                     // not whole sectors
        (0, &[(512, 0), (512, 0), (512, 0)]), // more than seg_max (2)
        (0, &[(8192, 0)]),                    // segment over size_max (4096)
    ];
    for (sector, segments) in cases {
        let request = Request::new(&dma, RequestType::In, sector, segments);
        assert_eq!(blk.read_blocks_nb(sector, &request.dma()), Err(Error::BadRequest), "{sector} {segments:?}");
    }
    let last = Request::new(&dma, RequestType::In, CAPACITY - 2, &[(1024, 0)]);
    assert!(blk.read_blocks_nb(CAPACITY - 2, &last.dma()).is_ok(), "ends exactly at capacity");
    let (free, notified) = (blk.queue().num_free(), dev.notifications.get());
    let empty = RequestDma { header: 0x1000, data: &[], status: 0x2000 };
    assert_eq!(blk.read_blocks_nb(0, &empty), Err(Error::BadRequest));
    assert_eq!(blk.flush_nb(&empty), Err(Error::Unsupported));
    let short_id = Request::new(&dma, RequestType::GetId, 0, &[(16, 0)]);
    assert_eq!(blk.get_id_nb(&short_id.dma()), Err(Error::BadRequest));
    assert_eq!((blk.queue().num_free(), disk.ring.avail_idx(), dev.notifications.get()), (free, 1, notified));
}

#[test]
fn flush_and_get_id() {
    let (dma, _dev, mut blk, mut disk) = setup(feature::FLUSH);
    let flush = Request::new(&dma, RequestType::Flush, 0, &[]);
    blk.flush_nb(&flush.dma()).unwrap();
    let id = Request::new(&dma, RequestType::GetId, 0, &[(20, 0)]);
    blk.get_id_nb(&id.dma()).unwrap();
    for chain in disk.take_all() {
        disk.complete(&chain, None);
    }
    assert_eq!(finish(&mut blk, &flush).1, Ok(()));
    assert_eq!(finish(&mut blk, &id).1, Ok(()));
    assert_eq!(&read_bytes(id.data[0].dma_addr, 10), b"sim-disk-0");
    dma.check_guards();
}

#[test]
fn config_changing_under_the_driver_fails_init() {
    let dma = SimDma::default();
    let dev = device(feature::SIZE_MAX);
    dev.config_changes.set(u32::MAX);
    let result = Blk::new(dev, &dma, 0).map(|_| ());
    assert_eq!(result, Err(Error::DeviceBroken(BrokenReason::ConfigUnstable)));
    assert_ne!(dev.status.get() & FAILED, 0);
    assert_eq!(dev.status.get() & DRIVER_OK, 0);
}

#[test]
fn abort_resets_the_device_and_latches_the_queue_broken() {
    let (dma, dev, mut blk, mut disk) = setup(0);
    let read = Request::new(&dma, RequestType::In, 0, &[(512, 0)]);
    let token = blk.read_blocks_nb(0, &read.dma()).unwrap();
    // The device took the chain and never completes it: the driver gives up on it.
    assert_eq!(disk.take_all().len(), 1);
    let error = blk.abort(BrokenReason::RequestTimedOut { id: token.0 });
    assert_eq!(error, Error::DeviceBroken(BrokenReason::RequestTimedOut { id: token.0 }));
    assert_eq!(dev.status.get(), 0, "the device was reset");
    assert_eq!(dev.status_log.borrow().last(), Some(&0));
    assert_eq!(blk.broken(), Some(BrokenReason::RequestTimedOut { id: token.0 }));
    // Nothing more is handed to it, and a late completion is not believed.
    let again = Request::new(&dma, RequestType::In, 0, &[(512, 0)]);
    assert!(matches!(blk.read_blocks_nb(0, &again.dma()), Err(Error::DeviceBroken(_))));
    assert!(matches!(blk.pop_completed(), Err(Error::DeviceBroken(_))));
    dma.check_guards();
}

#[test]
fn indirect_and_event_idx_are_negotiated_unless_declined() {
    let offered = common::RING_EVENT_IDX | common::INDIRECT_DESC;
    let (dma, _dev, blk, _disk) = setup(offered);
    assert_eq!(blk.features(), common::VERSION_1 | offered);
    assert!(blk.indirect());
    // No SEG_MAX: tables sized for the default 4 segments, header and status.
    assert_eq!(blk.queue().indirect_len(), 6);
    dma.check_guards();

    for declined in [common::INDIRECT_DESC, common::RING_EVENT_IDX, offered] {
        let dma = SimDma::default();
        let dev = device(offered | feature::SEG_MAX);
        let options = BlkOptions { required: 0, declined, max_segments: 4 };
        let blk = Blk::with_options(dev, &dma, options).unwrap();
        assert_eq!(blk.features() & offered, offered & !declined);
        assert_eq!(dev.driver_features.get() & declined, 0, "declined bits not written");
        // SEG_MAX 2 caps the tables at 2 segments + 2.
        assert_eq!(blk.queue().indirect_len(), if declined & common::INDIRECT_DESC != 0 { 0 } else { 4 });
        assert_eq!(blk.indirect(), declined & common::INDIRECT_DESC == 0);
    }
}

#[test]
fn full_queue_of_indirect_requests() {
    let (dma, dev, mut blk, mut disk) = setup(feature::SEG_MAX | common::INDIRECT_DESC);
    // Q requests of header + 2 segments + status: 4 descriptors each direct, 1 indirect.
    let reads: Vec<Request> = (0..Q as u64).map(|i| Request::new(&dma, RequestType::In, 2 * i, &[(512, 0), (512, 0)])).collect();
    let tokens: Vec<Token> = reads.iter().enumerate().map(|(i, r)| blk.read_blocks_nb(2 * i as u64, &r.dma()).unwrap()).collect();
    assert_eq!((blk.queue().num_free(), blk.queue().in_flight()), (0, Q as u16));
    let one_more = Request::new(&dma, RequestType::In, 0, &[(512, 0)]);
    assert_eq!(blk.read_blocks_nb(0, &one_more.dma()), Err(Error::QueueFull));
    let chains = disk.take_all();
    assert_eq!(chains.len(), Q);
    assert!(chains.iter().all(|c| c.indirect.is_some() && c.descs.len() == 4));
    for chain in chains.iter().rev() {
        disk.complete(chain, None);
    }
    dev.interrupt.set(1);
    assert!(blk.ack_interrupt().used_buffer());
    for chain in chains.iter().rev() {
        let i = tokens.iter().position(|t| t.0 == chain.head).unwrap();
        assert_eq!(finish(&mut blk, &reads[i]), (tokens[i], Ok(())));
        let mut got = read_bytes(reads[i].data[0].dma_addr, 512);
        got.extend(read_bytes(reads[i].data[1].dma_addr, 512));
        assert_eq!(got, disk.disk[1024 * i..1024 * (i + 1)], "request {i}'s data");
    }
    assert_eq!((blk.queue().num_free(), blk.queue().in_flight()), (Q as u16, 0));
    dma.check_guards();
}
