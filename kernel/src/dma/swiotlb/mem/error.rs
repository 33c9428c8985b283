//! The errors of the pool manager.
#![forbid(unsafe_code)]

use core::fmt;

use super::super::SwiotlbError;
use crate::bootargs::SwiotlbPolicy;
use crate::mm::page_alloc::{AllocError, RangeError};

/// Why a manager operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LendError {
    /// The pool geometry does not fit pageblock management.
    Geometry {
        /// What is wrong.
        reason: &'static str,
    },
    /// The slot pool refused.
    Pool(SwiotlbError),
    /// The page allocator refused to take or give back pageblocks.
    PageAlloc(RangeError),
    /// The page allocator had no contiguous pageblocks for a new pool.
    Alloc(AllocError),
    /// Not enough lent or wholly free pageblocks to carve a device pool.
    NotEnoughPageblocks {
        /// Pageblocks asked for.
        wanted: usize,
        /// Pageblocks that could be taken.
        available: usize,
    },
    /// The device pool still has live mappings.
    LiveMappings {
        /// Slots still used.
        used_slots: usize,
    },
    /// The policy does not allow this operation.
    PolicyForbids {
        /// The policy in force.
        policy: SwiotlbPolicy,
        /// What it forbids.
        what: &'static str,
    },
    /// The pool is shared with an untrusted device by design and must never be lent.
    NeverLend,
    /// The device pool was not carved from this manager.
    NotCarvedHere,
    /// The worker or another carve/return is running.
    Busy,
}

impl From<SwiotlbError> for LendError {
    fn from(e: SwiotlbError) -> Self {
        Self::Pool(e)
    }
}

impl From<RangeError> for LendError {
    fn from(e: RangeError) -> Self {
        Self::PageAlloc(e)
    }
}

impl fmt::Display for LendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Geometry { reason } => write!(f, "swiotlb manager: {reason}"),
            Self::Pool(e) => write!(f, "{e}"),
            Self::PageAlloc(e) => write!(f, "swiotlb manager: page allocator: {e}"),
            Self::Alloc(e) => write!(f, "swiotlb manager: no pageblocks for a pool: {e}"),
            Self::NotEnoughPageblocks { wanted, available } => {
                write!(f, "swiotlb: {wanted} pageblocks wanted, {available} can be taken")
            }
            Self::LiveMappings { used_slots } => write!(f, "swiotlb device pool has {used_slots} used slots"),
            Self::PolicyForbids { policy, what } => write!(f, "swiotlb policy {policy:?} does not allow {what}"),
            Self::NeverLend => write!(f, "swiotlb pool is shared with devices and is never lent"),
            Self::NotCarvedHere => write!(f, "device pool was not carved from this swiotlb pool"),
            Self::Busy => write!(f, "swiotlb manager busy (worker or carve running)"),
        }
    }
}
