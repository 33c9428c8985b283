//! The health of a disk across resets: when it is live, being re-initialised, or dead (Linux:
//! the blk-mq timeout work resets the controller, `virtblk_freeze` / `virtblk_restore`
//! re-initialise it, and a device that keeps failing is removed, its requests ended with
//! `BLK_STS_IOERR`).
//!
//! A reset is started from any context (the timeout tick, the interrupt handler seeing the
//! device break the protocol): [`Recovery::begin`]. The re-initialisation runs in task context
//! (a work item) and reports each attempt: [`Recovery::reinit_succeeded`] or
//! [`Recovery::reinit_failed`]; after [`MAX_FAILED_REINITS`] failures in a row the disk is dead.
//! Fixed size, no allocation.
#![forbid(unsafe_code)]

/// Failed re-initialisations in a row after which a disk is declared dead.
pub const MAX_FAILED_REINITS: u32 = 3;

/// Where a disk stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskHealth {
    /// Taking requests.
    Live,
    /// Reset; requests wait until the device is initialised again.
    Resetting,
    /// Given up on: every request fails at once.
    Dead,
}

/// A disk's health and its reset history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovery {
    health: DiskHealth,
    /// Re-initialisations that failed since the last success.
    failed_in_a_row: u32,
    /// Resets started (for statistics).
    resets: u64,
}

impl Default for Recovery {
    fn default() -> Self {
        Self::new()
    }
}

impl Recovery {
    /// A live disk.
    pub const fn new() -> Self {
        Self { health: DiskHealth::Live, failed_in_a_row: 0, resets: 0 }
    }

    /// Where the disk stands.
    pub fn health(&self) -> DiskHealth {
        self.health
    }

    /// Resets started so far.
    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// Failed re-initialisations since the last success.
    pub fn failed_in_a_row(&self) -> u32 {
        self.failed_in_a_row
    }

    /// A reset starts (the device timed out or broke): true if the disk was live, so the caller
    /// schedules the re-initialisation; false if one is under way already or the disk is dead.
    pub fn begin(&mut self) -> bool {
        if self.health != DiskHealth::Live {
            return false;
        }
        self.health = DiskHealth::Resetting;
        self.resets += 1;
        true
    }

    /// The device was initialised again: live, and the count of failures starts over.
    pub fn reinit_succeeded(&mut self) {
        if self.health == DiskHealth::Resetting {
            self.health = DiskHealth::Live;
            self.failed_in_a_row = 0;
        }
    }

    /// A re-initialisation failed: the disk stays resetting (the caller tries again later)
    /// until [`MAX_FAILED_REINITS`] failures in a row make it dead. Returns the new health.
    pub fn reinit_failed(&mut self) -> DiskHealth {
        if self.health == DiskHealth::Resetting {
            self.failed_in_a_row += 1;
            if self.failed_in_a_row >= MAX_FAILED_REINITS {
                self.health = DiskHealth::Dead;
            }
        }
        self.health
    }
}

#[cfg(test)]
mod tests;
