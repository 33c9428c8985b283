//! The virtio block device protocol, virtio 1.2 §5.2 (Linux: `drivers/block/virtio_blk.c`).
//!
//! Non-blocking, for an interrupt-driven kernel, in the shape of virtio-drivers'
//! `read_blocks_nb` / `complete_read_blocks`: the caller maps the request header, the data and
//! the status byte with its DMA API (bouncing them through the SWIOTLB if need be), submits the
//! DMA addresses and gets a [`Token`]. From the interrupt handler it pops [`Completion`]s, unmaps
//! (copying the status byte back), and hands each completion back with the status byte to learn
//! the request's outcome. The driver never touches the buffers themselves.
//!
//! A batch of requests takes one notification: [`VirtioBlk::add_request`] publishes a chain
//! without notifying, [`VirtioBlk::kick`] notifies once for everything published since the last
//! (if the device wants it: NO_NOTIFY, or RING_EVENT_IDX's `avail_event` checked against the
//! whole batch). That is Linux's `virtio_queue_rq` with `bd->last` false, then `commit_rqs`
//! (`virtio_commit_rqs`); the `*_nb` calls are one of each.

use super::queue::{Buffer, RingFeatures, Virtqueue};
use super::transport::{read_config, DeviceInit, InterruptStatus, Transport, RESET_POLLS};
use super::{feature as common, BrokenReason, DeviceType, Error, Result, VirtioDma};

/// Block device feature bits (§5.2.3).
pub mod feature {
    /// `size_max` holds the largest segment size.
    pub const SIZE_MAX: u64 = 1 << 1;
    /// `seg_max` holds the largest number of data segments in a request.
    pub const SEG_MAX: u64 = 1 << 2;
    /// The device is read-only.
    pub const RO: u64 = 1 << 5;
    /// `blk_size` holds the logical block size.
    pub const BLK_SIZE: u64 = 1 << 6;
    /// The device has a cache and takes flush requests.
    pub const FLUSH: u64 = 1 << 9;
}

/// The features this driver understands (VERSION_1 and ACCESS_PLATFORM are handled by
/// [`DeviceInit::begin`]). [`BlkOptions::declined`] turns some off.
pub const SUPPORTED_FEATURES: u64 = feature::SIZE_MAX
    | feature::SEG_MAX
    | feature::RO
    | feature::BLK_SIZE
    | feature::FLUSH
    | common::RING_EVENT_IDX
    | common::INDIRECT_DESC;

/// Data segments per request [`VirtioBlk::new`] sizes the indirect tables for.
pub const DEFAULT_MAX_SEGMENTS: u16 = 4;

/// How [`VirtioBlk::with_options`] sets the device up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkOptions {
    /// Features the device must offer beyond VERSION_1 (e.g. ACCESS_PLATFORM in a
    /// confidential VM).
    pub required: u64,
    /// Features of [`SUPPORTED_FEATURES`] not to negotiate even if offered (e.g. to measure
    /// what INDIRECT_DESC or RING_EVENT_IDX buy).
    pub declined: u64,
    /// The most data segments the caller puts in one request: each indirect table holds a
    /// request's header, this many segments (fewer if SEG_MAX says so) and its status. A
    /// longer request still works, as a direct chain.
    pub max_segments: u16,
}

/// Sectors are 512 bytes whatever `blk_size` says (§5.2.6).
pub const SECTOR_SIZE: u32 = 512;
/// Size of the request header (struct virtio_blk_req up to `data`).
pub const HEADER_SIZE: u32 = 16;
/// Size of the device ID string a GET_ID request returns.
pub const ID_BYTES: u32 = 20;
/// What the caller puts in the status byte before submitting: no defined status, so a status
/// the device never wrote is caught as [`BrokenReason::BadStatus`].
pub const STATUS_UNWRITTEN: u8 = 0xff;

/// Offsets in the device configuration (struct virtio_blk_config, §5.2.4).
mod config_offset {
    pub(super) const CAPACITY: usize = 0;
    pub(super) const SIZE_MAX: usize = 8;
    pub(super) const SEG_MAX: usize = 12;
    pub(super) const BLK_SIZE: usize = 20;
}

/// Request status values (§5.2.6).
pub mod req_status {
    /// Success.
    pub const OK: u8 = 0;
    /// Device or driver error.
    pub const IOERR: u8 = 1;
    /// Request unsupported by the device.
    pub const UNSUPP: u8 = 2;
}

/// The request types this driver issues (§5.2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum RequestType {
    /// Read (VIRTIO_BLK_T_IN).
    In = 0,
    /// Write (VIRTIO_BLK_T_OUT).
    Out = 1,
    /// Flush the device's write cache (VIRTIO_BLK_T_FLUSH).
    Flush = 4,
    /// Read the device ID string (VIRTIO_BLK_T_GET_ID).
    GetId = 8,
}

/// The request header the device reads first: le32 type, le32 reserved, le64 sector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// What to do.
    pub request_type: RequestType,
    /// First sector (512 bytes) for reads and writes; 0 otherwise.
    pub sector: u64,
}

impl RequestHeader {
    /// The header's bytes, as they must be in the header buffer the caller maps.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE as usize] {
        let mut bytes = [0; HEADER_SIZE as usize];
        bytes[0..4].copy_from_slice(&(self.request_type as u32).to_le_bytes());
        bytes[8..16].copy_from_slice(&self.sector.to_le_bytes());
        bytes
    }
}

/// The device configuration the driver uses; optional fields are `None` unless negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkConfig {
    /// Size of the device in 512-byte sectors.
    pub capacity: u64,
    /// Largest data segment in bytes (SIZE_MAX).
    pub size_max: Option<u32>,
    /// Most data segments in one request (SEG_MAX).
    pub seg_max: Option<u32>,
    /// Logical block size in bytes (BLK_SIZE); informational, not enforced.
    pub blk_size: Option<u32>,
}

impl BlkConfig {
    /// Reads the config as one consistent snapshot (generation counter, §2.5.1).
    pub fn read<T: Transport + ?Sized>(transport: &T, features: u64) -> Result<Self> {
        let optional = |t: &T, bit: u64, offset: usize| -> Result<Option<u32>> {
            if features & bit == 0 {
                return Ok(None);
            }
            t.read_config_u32(offset).map(Some)
        };
        read_config(transport, |t| {
            Ok(Self {
                capacity: t.read_config_u64(config_offset::CAPACITY)?,
                size_max: optional(t, feature::SIZE_MAX, config_offset::SIZE_MAX)?,
                seg_max: optional(t, feature::SEG_MAX, config_offset::SEG_MAX)?,
                blk_size: optional(t, feature::BLK_SIZE, config_offset::BLK_SIZE)?,
            })
        })
    }
}

/// One mapped data segment of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaSegment {
    /// Where the device finds it.
    pub dma_addr: u64,
    /// Length in bytes.
    pub len: u32,
}

/// The DMA addresses of a request's parts, mapped by the caller until the request completes.
#[derive(Clone, Copy, Debug)]
pub struct RequestDma<'a> {
    /// The 16-byte header holding [`RequestHeader::to_bytes`] for this request.
    pub header: u64,
    /// The data: read into (IN, GET_ID) or written from (OUT); empty for FLUSH.
    pub data: &'a [DmaSegment],
    /// The status byte, pre-filled with [`STATUS_UNWRITTEN`].
    pub status: u64,
}

/// A submitted request: the head descriptor of its chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token(pub u16);

/// A request the device has finished with. Not `Clone`: it is handed back once, to
/// [`VirtioBlk::complete`], after the caller has unmapped the request's buffers.
#[derive(Debug, PartialEq, Eq)]
pub struct Completion {
    token: Token,
    written: u32,
}

impl Completion {
    /// The request that completed.
    pub fn token(&self) -> Token {
        self.token
    }

    /// Bytes the device says it wrote (data and status byte).
    pub fn written_len(&self) -> u32 {
        self.written
    }
}

/// A virtio block device with one request queue of at most `Q` entries.
pub struct VirtioBlk<T: Transport, const Q: usize> {
    transport: T,
    queue: Virtqueue<Q>,
    features: u64,
    config: BlkConfig,
    /// Notifications sent to the device (kicks), for statistics.
    notifications: u64,
    /// How the device was set up, to set it up the same way after a reset.
    options: BlkOptions,
}

impl<T: Transport, const Q: usize> VirtioBlk<T, Q> {
    /// Initialises the device (§3.1.1) with its request queue (queue 0) allocated from `dma`.
    /// `required` names features the device must offer beyond VERSION_1 (e.g. ACCESS_PLATFORM
    /// in a confidential VM). Every supported feature the device offers is negotiated.
    pub fn new(transport: T, dma: &impl VirtioDma, required: u64) -> Result<Self> {
        let options = BlkOptions { required, declined: 0, max_segments: DEFAULT_MAX_SEGMENTS };
        Self::with_options(transport, dma, options)
    }

    /// [`new`](Self::new) with features declined and the indirect tables sized by `options`.
    pub fn with_options(transport: T, dma: &impl VirtioDma, options: BlkOptions) -> Result<Self> {
        let supported = SUPPORTED_FEATURES & !options.declined;
        let mut init = DeviceInit::begin(&transport, DeviceType::BLOCK, supported, options.required)?;
        let features = init.features();
        // 7. Device-specific setup: config, then the request queue.
        let config = BlkConfig::read(&transport, features)?;
        let max = init.max_queue_size(0).min(u16::try_from(Q).unwrap_or(u16::MAX));
        if max == 0 {
            return Err(Error::QueueUnavailable(0));
        }
        let size = 1u16 << (15 - max.leading_zeros()); // largest power of two <= max
                                                       // An indirect table holds the longest request: header, data segments, status.
        let segments = match config.seg_max {
            Some(seg_max) if seg_max != 0 => u32::from(options.max_segments).min(seg_max) as u16,
            _ => options.max_segments,
        };
        let ring = RingFeatures {
            event_idx: features & common::RING_EVENT_IDX != 0,
            indirect_len: if features & common::INDIRECT_DESC != 0 { segments.saturating_add(2) } else { 0 },
        };
        let queue = Virtqueue::allocate(dma, size, ring)?;
        init.setup_queue(0, &queue)?;
        // 8. DRIVER_OK.
        init.driver_ok();
        Ok(Self { transport, queue, features, config, notifications: 0, options })
    }

    /// True if requests take one ring descriptor each (INDIRECT_DESC negotiated and the
    /// queue has its indirect tables).
    pub fn indirect(&self) -> bool {
        self.queue.indirect_len() > 0
    }

    /// Notifications (kicks) sent to the device since initialisation.
    pub fn notifications(&self) -> u64 {
        self.notifications
    }

    /// The negotiated features.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The configuration read at initialisation.
    pub fn config(&self) -> &BlkConfig {
        &self.config
    }

    /// Size in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.config.capacity
    }

    /// True if the device refuses writes.
    pub fn readonly(&self) -> bool {
        self.features & feature::RO != 0
    }

    /// The request queue, for inspection.
    pub fn queue(&self) -> &Virtqueue<Q> {
        &self.queue
    }

    /// The transport, for inspection.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Submits a read of `sector..` into `dma.data`; the header holds `RequestType::In`.
    /// Publishes and notifies: [`add_request`](Self::add_request) then [`kick`](Self::kick).
    pub fn read_blocks_nb(&mut self, sector: u64, dma: &RequestDma<'_>) -> Result<Token> {
        self.submit(RequestHeader { request_type: RequestType::In, sector }, dma)
    }

    /// Submits a write of `dma.data` to `sector..`; the header holds `RequestType::Out`.
    /// Refused on a read-only device before the queue is touched.
    pub fn write_blocks_nb(&mut self, sector: u64, dma: &RequestDma<'_>) -> Result<Token> {
        self.submit(RequestHeader { request_type: RequestType::Out, sector }, dma)
    }

    /// Submits a cache flush (`dma.data` must be empty); needs the FLUSH feature.
    pub fn flush_nb(&mut self, dma: &RequestDma<'_>) -> Result<Token> {
        self.submit(RequestHeader { request_type: RequestType::Flush, sector: 0 }, dma)
    }

    /// Submits a GET_ID request; `dma.data` is one 20-byte segment.
    pub fn get_id_nb(&mut self, dma: &RequestDma<'_>) -> Result<Token> {
        self.submit(RequestHeader { request_type: RequestType::GetId, sector: 0 }, dma)
    }

    /// Checks the request `header` describes (the header buffer at `dma.header` must hold
    /// [`RequestHeader::to_bytes`] of it) and makes its chain available to the device
    /// **without notifying it** (Linux `virtio_queue_rq` with `bd->last` false). The device
    /// may not see it until [`kick`](Self::kick): publish a batch, then kick once.
    pub fn add_request(&mut self, header: RequestHeader, dma: &RequestDma<'_>) -> Result<Token> {
        let device_writes_data = match header.request_type {
            RequestType::In => {
                self.check_data(header.sector, dma.data)?;
                true
            }
            RequestType::Out => {
                if self.readonly() {
                    return Err(Error::ReadOnly);
                }
                self.check_data(header.sector, dma.data)?;
                false
            }
            RequestType::Flush => {
                if self.features & feature::FLUSH == 0 {
                    return Err(Error::Unsupported);
                }
                if !dma.data.is_empty() {
                    return Err(Error::BadRequest);
                }
                false
            }
            RequestType::GetId => {
                if !matches!(dma.data, [segment] if segment.len == ID_BYTES) {
                    return Err(Error::BadRequest);
                }
                true
            }
        };
        self.add(dma, device_writes_data)
    }

    /// Notifies the device of the requests added since the last kick, if there are any and
    /// it wants a notification (virtio 1.2 §2.7.13.4; NO_NOTIFY or, under RING_EVENT_IDX,
    /// `avail_event` checked against the whole batch, §2.7.10). Linux `virtqueue_kick`:
    /// `virtqueue_kick_prepare` then `virtqueue_notify`; blk-mq's `commit_rqs`. True if the
    /// device was notified (counted in [`notifications`](Self::notifications)). One MMIO write
    /// at most: safe in an interrupt handler.
    pub fn kick(&mut self) -> Result<bool> {
        if self.queue.added_since_kick() == 0 {
            return Ok(false); // nothing new: a notification would only cost the device a look
        }
        if !self.queue.kick_prepare()? {
            return Ok(false);
        }
        self.transport.notify(0);
        self.notifications += 1;
        Ok(true)
    }

    /// Requests added since the last [`kick`](Self::kick): published, but the device may not
    /// know of them yet.
    pub fn unkicked(&self) -> u16 {
        self.queue.added_since_kick()
    }

    /// Gives up on the device: latches the queue broken with `reason` and resets the device, so
    /// that when this returns the device no longer touches the rings or any buffer it was given
    /// (§2.1.2: after reset the device must not use buffers; QEMU finishes or drops in-flight
    /// requests inside the reset). The caller then owns every buffer of every chain in flight:
    /// it unmaps them and fails their requests. Safe in an interrupt handler (bounded polling).
    pub fn abort(&mut self, reason: BrokenReason) -> Error {
        let error = self.queue.mark_broken(reason);
        self.transport.set_status(0);
        if !(0..RESET_POLLS).any(|_| self.transport.status() == 0) {
            // Nothing more can be done from here: the caller must not reuse the buffers.
            return Error::DeviceBroken(BrokenReason::ResetIgnored);
        }
        if error == Error::DeviceBroken(BrokenReason::ResetIgnored) {
            // An earlier reset was ignored and latched so; this one completed. Left latched,
            // ResetIgnored would tell the caller the device still holds its buffers (found by
            // the `virtio_blk_reset` fuzz target's harness).
            return self.queue.relatch_broken(reason);
        }
        error
    }

    /// Initialises the device again after a reset, over the same ring memory (nothing is
    /// allocated): reset (§4.2.3.1, waiting for the status to read 0), the feature
    /// negotiation of §3.1.1 again, a fresh request queue ([`Virtqueue::reset`]: indices 0,
    /// every descriptor free), DRIVER_OK (Linux `virtblk_restore` after `virtblk_freeze`,
    /// `init_vq` again). The chains that were in flight are forgotten: the caller takes their
    /// buffers back from its own records and resubmits or fails the requests.
    ///
    /// `Err(DeviceBroken(ResetIgnored))` means the reset itself did not complete: the device
    /// may still use every buffer it was given. Any other error comes after a completed reset
    /// (the device touches no buffer; its status has FAILED set) and leaves the queue broken.
    /// A device that comes back with other features or another capacity is refused
    /// ([`Error::DeviceChanged`]). Task context: the reset polls the status up to
    /// [`RESET_POLLS`] times.
    pub fn reinit(&mut self) -> Result<()> {
        let supported = SUPPORTED_FEATURES & !self.options.declined;
        let result = DeviceInit::begin(&self.transport, DeviceType::BLOCK, supported, self.options.required).and_then(|mut init| {
            if init.features() != self.features {
                return Err(Error::DeviceChanged); // dropping `init` sets FAILED
            }
            let config = BlkConfig::read(&self.transport, self.features)?;
            if config.capacity != self.config.capacity {
                return Err(Error::DeviceChanged);
            }
            // The device is reset (`begin` waited for it): the rings are ours again.
            self.queue.reset();
            init.setup_queue(0, &self.queue)?;
            init.driver_ok();
            self.config = config;
            Ok(())
        });
        if let Err(e) = result {
            // Until a later reinit succeeds, nothing is handed to the device.
            self.queue.mark_broken(match e {
                Error::DeviceBroken(reason) => reason,
                _ => BrokenReason::ReinitFailed,
            });
        }
        result
    }

    /// True once the queue was latched broken (by a lying device or by [`abort`](Self::abort)).
    pub fn broken(&self) -> Option<BrokenReason> {
        self.queue.broken()
    }

    /// Reads and acknowledges the device's interrupt (call first in the interrupt handler).
    pub fn ack_interrupt(&self) -> InterruptStatus {
        self.transport.ack_interrupt()
    }

    /// The next request the device finished, or `None` (from the interrupt handler).
    pub fn pop_completed(&mut self) -> Result<Option<Completion>> {
        Ok(self.queue.pop_used()?.map(|(head, written)| Completion { token: Token(head), written }))
    }

    /// The outcome of a completed request, from its status byte as unmapped by the caller.
    /// A status the device did not write (length 0, or a value outside OK/IOERR/UNSUPP such as
    /// the [`STATUS_UNWRITTEN`] fill) breaks the device.
    pub fn complete(&mut self, completion: Completion, status: u8) -> Result<()> {
        let id = completion.token.0;
        if completion.written == 0 {
            return Err(self.queue.mark_broken(BrokenReason::StatusNotWritten { id }));
        }
        match status {
            req_status::OK => Ok(()),
            req_status::IOERR => Err(Error::IoError),
            req_status::UNSUPP => Err(Error::RequestUnsupported),
            status => Err(self.queue.mark_broken(BrokenReason::BadStatus { id, status })),
        }
    }

    /// Checks a read or write against §5.2.6.1 and the device's limits.
    fn check_data(&self, sector: u64, data: &[DmaSegment]) -> Result<()> {
        let mut total: u64 = 0;
        for segment in data {
            let too_big = self.config.size_max.is_some_and(|max| max != 0 && segment.len > max);
            if segment.len == 0 || too_big {
                return Err(Error::BadRequest);
            }
            total += u64::from(segment.len);
        }
        let too_many = self.config.seg_max.is_some_and(|max| max != 0 && data.len() as u64 > u64::from(max));
        // The data must be whole sectors, at least one (§5.2.6.1).
        if total == 0 || !total.is_multiple_of(u64::from(SECTOR_SIZE)) || too_many {
            return Err(Error::BadRequest);
        }
        let end = sector.checked_add(total / u64::from(SECTOR_SIZE));
        if end.is_none_or(|end| end > self.config.capacity) {
            return Err(Error::BadRequest);
        }
        Ok(())
    }

    /// [`add_request`](Self::add_request), then [`kick`](Self::kick): one request, one
    /// notification (if the device wants it).
    fn submit(&mut self, header: RequestHeader, dma: &RequestDma<'_>) -> Result<Token> {
        let token = self.add_request(header, dma)?;
        self.kick()?;
        Ok(token)
    }

    /// Header (device-readable), data, status (device-writable) as one chain, published
    /// without a notification.
    fn add(&mut self, dma: &RequestDma<'_>, device_writes_data: bool) -> Result<Token> {
        let header = core::iter::once(Buffer::readable(dma.header, HEADER_SIZE));
        let data = dma.data.iter().map(move |segment| Buffer {
            dma_addr: segment.dma_addr,
            len: segment.len,
            device_writable: device_writes_data,
        });
        let status = core::iter::once(Buffer::writable(dma.status, 1));
        let head = self.queue.add_chain(header.chain(data).chain(status))?;
        Ok(Token(head))
    }
}
