//! Virtio 1.2 over the MMIO transport, with split virtqueues and the block device protocol.
//!
//! - [`transport`]: the [`Transport`] seam and the device initialisation sequence (§3.1.1).
//! - [`mmio`]: the virtio-mmio register block (version 2), §4.2.2.
//! - [`queue`]: the split virtqueue (§2.7), which validates everything the device writes.
//! - [`blk`]: the block device protocol (§5.2), submit now, complete from the interrupt handler.
//!
//! The device is not trusted: in a confidential VM it is the host. Every value read from the
//! used ring or the configuration space is checked, and a device caught breaking the protocol is
//! reported as [`Error::DeviceBroken`] and never driven again (Linux: `BAD_RING`, `vq->broken`).
//! Nothing here allocates: the driver runs in interrupt context.

pub mod blk;
pub mod mmio;
pub mod queue;
pub mod transport;

#[cfg(test)]
mod tests;

/// Simulated hardware for host tests (feature `sim`): DMA memory, a transport with the device
/// status state machine, the device side of a split virtqueue. The same file this crate's own
/// tests (`tests::sim`) and the fuzz crate use.
#[cfg(all(feature = "sim", not(test), not(target_os = "none")))]
#[path = "tests/sim.rs"]
pub mod sim;

use core::fmt;
use core::ptr::NonNull;

pub use queue::{Buffer, RingFeatures, Virtqueue, VirtqueueMemory};
pub use transport::{DeviceInit, Transport};

/// Device-independent feature bits (§6).
pub mod feature {
    /// Indirect descriptors (§2.7.5.3): a chain takes one ring descriptor pointing at a table.
    pub const INDIRECT_DESC: u64 = 1 << 28;
    /// `used_event` / `avail_event` notification suppression (§2.7.7.2, §2.7.10).
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    /// The device follows virtio 1.0 or later (not legacy). Required.
    pub const VERSION_1: u64 = 1 << 32;
    /// The device sees addresses through the platform's DMA translation (IOMMU, bounce buffers):
    /// the driver must hand it DMA addresses, never physical ones. Required when offered.
    pub const ACCESS_PLATFORM: u64 = 1 << 33;
}

/// Device status bits (§2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest knows how to drive the device.
    pub const DRIVER: u32 = 2;
    /// The driver is set up and ready to drive the device.
    pub const DRIVER_OK: u32 = 4;
    /// The driver has acknowledged the features it understands; negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    /// Something went wrong in the guest and it gave up on the device.
    pub const FAILED: u32 = 128;
}

/// Virtio device IDs (§5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceType(pub u32);

impl DeviceType {
    /// Network card.
    pub const NET: Self = Self(1);
    /// Block device.
    pub const BLOCK: Self = Self(2);
    /// Console.
    pub const CONSOLE: Self = Self(3);
    /// Entropy source.
    pub const RNG: Self = Self(4);
}

/// The DMA seam: memory the device and the driver share for the rings.
///
/// Kept as small as the driver needs: ring memory is allocated once, when a queue is set up, and
/// lives as long as the kernel (devices are never torn down). Data buffers do not go through
/// this trait: the caller maps them with its own DMA API and hands the driver DMA addresses.
///
/// # Safety
///
/// An implementation of [`VirtioDma::alloc_coherent`] that returns `Some((ptr, dma_addr))`
/// promises that:
/// - `ptr` is aligned to `align` and valid for reads and writes of `size` bytes, for the rest of
///   the program, and no other code uses those bytes (they are never freed or reused);
/// - the bytes are zeroed;
/// - `dma_addr` is the address at which the device reaches the same bytes, aligned to `align`;
/// - the memory is coherent: what the CPU writes is visible to the device after a memory
///   barrier, and the reverse, without cache maintenance or bouncing (in a confidential VM it is
///   memory shared with the host).
pub unsafe trait VirtioDma {
    /// Allocates `size` bytes aligned to `align` (a power of two), or `None` if out of memory.
    fn alloc_coherent(&self, size: usize, align: usize) -> Option<(NonNull<u8>, u64)>;
}

/// Why a device was declared broken. Each names the rule the device broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokenReason {
    /// The used ring's `idx` moved backwards.
    UsedIdxBackwards {
        /// The `idx` read last time.
        seen: u16,
        /// The `idx` read now, behind it.
        now: u16,
    },
    /// The used ring's `idx` claims more completions than chains are in flight.
    UsedIdxAhead {
        /// How far the driver has consumed the used ring.
        last_used: u16,
        /// The `idx` read now.
        now: u16,
        /// How many chains the device holds.
        in_flight: u16,
    },
    /// A used element names a descriptor outside the queue.
    UsedIdOutOfRange {
        /// The used element's `id`, as the device wrote it.
        id: u32,
    },
    /// A used element names a descriptor that is not the head of a chain in flight.
    UsedIdNotInFlight {
        /// The used element's `id`.
        id: u16,
    },
    /// A used element names a chain that was already completed.
    UsedIdAlreadyCompleted {
        /// The used element's `id`: the head of the completed chain.
        id: u16,
    },
    /// A used element claims more bytes written than the chain has device-writable bytes.
    UsedLenTooLong {
        /// The used element's `id`: the head of the chain.
        id: u16,
        /// The used element's `len`: bytes the device claims it wrote.
        len: u32,
        /// The device-writable bytes the chain has.
        writable: u32,
    },
    /// The configuration space kept changing while the driver read it.
    ConfigUnstable,
    /// A block request completed without the device writing its status byte.
    StatusNotWritten {
        /// The head descriptor of the request's chain (its [`Token`](blk::Token)).
        id: u16,
    },
    /// A block request completed with a status byte that is not a defined value.
    BadStatus {
        /// The head descriptor of the request's chain (its [`Token`](blk::Token)).
        id: u16,
        /// The status byte read back.
        status: u8,
    },
    /// The device never completed a reset (status did not read back 0).
    ResetIgnored,
    /// A request was not completed within the driver's timeout; the driver reset the device.
    RequestTimedOut {
        /// The head descriptor of the request's chain (its [`Token`](blk::Token)).
        id: u16,
    },
    /// The device was reset but its initialisation failed afterwards (features, config, queue).
    ReinitFailed,
}

impl fmt::Display for BrokenReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::UsedIdxBackwards { seen, now } => {
                write!(f, "used idx moved backwards from {seen} to {now}")
            }
            Self::UsedIdxAhead { last_used, now, in_flight } => {
                write!(f, "used idx {now} is {} past last used {last_used}, only {in_flight} chains in flight", now.wrapping_sub(last_used))
            }
            Self::UsedIdOutOfRange { id } => write!(f, "used id {id} out of range"),
            Self::UsedIdNotInFlight { id } => write!(f, "used id {id} is not an in-flight head"),
            Self::UsedIdAlreadyCompleted { id } => write!(f, "used id {id} completed twice"),
            Self::UsedLenTooLong { id, len, writable } => {
                write!(f, "used id {id} claims {len} bytes written, chain has {writable} writable")
            }
            Self::ConfigUnstable => write!(f, "config generation never settled"),
            Self::StatusNotWritten { id } => write!(f, "request {id}: status byte not written"),
            Self::BadStatus { id, status } => write!(f, "request {id}: status {status:#x}"),
            Self::ResetIgnored => write!(f, "device ignored reset"),
            Self::RequestTimedOut { id } => {
                write!(f, "request {id} not completed in time; device reset")
            }
            Self::ReinitFailed => write!(f, "initialisation after a reset failed"),
        }
    }
}

/// Errors of the virtio drivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The MMIO region does not start with the magic value "virt".
    BadMagic(u32),
    /// A legacy (version 1) virtio-mmio device; QEMU needs `-global virtio-mmio.force-legacy=false`.
    LegacyDevice,
    /// An MMIO transport version this driver does not know.
    UnknownVersion(u32),
    /// The MMIO slot has no device behind it (device ID 0).
    NoDevice,
    /// The device is not of the type the driver expected.
    WrongDeviceType {
        /// The type the driver drives.
        expected: DeviceType,
        /// The type the transport reports.
        found: DeviceType,
    },
    /// The device lacks a feature the driver requires (the missing bits).
    MissingFeatures(u64),
    /// The device cleared FEATURES_OK: it refuses the feature subset we chose.
    FeaturesNotAccepted,
    /// The queue does not exist on the device (QueueNumMax is 0).
    QueueUnavailable(u16),
    /// The queue is already live (QueueReady reads 1) before we set it up.
    QueueInUse(u16),
    /// The device's queue is smaller than ours.
    QueueTooSmall {
        /// The queue index.
        queue: u16,
        /// The device's QueueNumMax for it.
        max: u16,
    },
    /// A queue size that is zero, not a power of two, or larger than the queue's capacity.
    BadQueueSize(u16),
    /// The DMA seam could not provide ring memory.
    OutOfDmaMemory,
    /// Not enough free descriptors for the chain.
    QueueFull,
    /// A descriptor chain that is empty, puts a device-readable buffer after a device-writable
    /// one, or is longer than 4 GiB in total (§2.7.4.2).
    BadChain,
    /// A completion token that does not name a request popped from the used ring.
    BadToken,
    /// A device-specific config read outside the config space.
    ConfigOutOfRange {
        /// The offset into the config space; when probing, the MMIO region's size, which is too
        /// small to reach the config space.
        offset: usize,
    },
    /// A block request that is malformed: sector range, length, segment count or size.
    BadRequest,
    /// A write to a read-only block device.
    ReadOnly,
    /// The request needs a feature the device did not offer (e.g. flush).
    Unsupported,
    /// The device reported an I/O error (VIRTIO_BLK_S_IOERR).
    IoError,
    /// The device does not support the request (VIRTIO_BLK_S_UNSUPP).
    RequestUnsupported,
    /// The device broke the protocol; it is not driven again until it is reset and
    /// initialised again.
    DeviceBroken(BrokenReason),
    /// After a reset the device offered other features, or another capacity, than at probe:
    /// not the device the requests in flight were meant for.
    DeviceChanged,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic(m) => write!(f, "bad virtio-mmio magic {m:#x}"),
            Self::LegacyDevice => {
                write!(f, "legacy virtio-mmio device (QEMU: -global virtio-mmio.force-legacy=false)")
            }
            Self::UnknownVersion(v) => write!(f, "unknown virtio-mmio version {v}"),
            Self::NoDevice => write!(f, "no device in this virtio-mmio slot"),
            Self::WrongDeviceType { expected, found } => {
                write!(f, "expected virtio device {}, found {}", expected.0, found.0)
            }
            Self::MissingFeatures(bits) => write!(f, "device lacks required features {bits:#x}"),
            Self::FeaturesNotAccepted => write!(f, "device refused the negotiated features"),
            Self::QueueUnavailable(q) => write!(f, "queue {q} unavailable"),
            Self::QueueInUse(q) => write!(f, "queue {q} already in use"),
            Self::QueueTooSmall { queue, max } => write!(f, "queue {queue} holds only {max}"),
            Self::BadQueueSize(n) => write!(f, "bad queue size {n}"),
            Self::OutOfDmaMemory => write!(f, "out of DMA memory for rings"),
            Self::QueueFull => write!(f, "not enough free descriptors"),
            Self::BadChain => write!(f, "malformed descriptor chain"),
            Self::BadToken => write!(f, "completion token not popped from the used ring"),
            Self::ConfigOutOfRange { offset } => {
                write!(f, "config offset {offset:#x} out of range")
            }
            Self::BadRequest => write!(f, "malformed block request"),
            Self::ReadOnly => write!(f, "block device is read-only"),
            Self::Unsupported => write!(f, "feature not offered by the device"),
            Self::IoError => write!(f, "device I/O error"),
            Self::RequestUnsupported => write!(f, "device does not support the request"),
            Self::DeviceBroken(reason) => write!(f, "device broken: {reason}"),
            Self::DeviceChanged => {
                write!(f, "device came back from a reset with other features or capacity")
            }
        }
    }
}

/// Result of the virtio drivers.
pub type Result<T> = core::result::Result<T, Error>;
