//! Access to physical memory by address.
//!
//! The kernel runs identity-mapped, so on the target physical memory is read and written through
//! raw pointers (the one named place for that is `platform`'s implementation of [`PhysMemory`]).
//! Generic code (page migration, bounce copies, scrubbing) goes through this trait, so host unit
//! tests can run it against [`SimMemory`], a plain buffer standing in for RAM.

use super::PhysAddr;

/// Byte access to physical memory. Every method panics if asked to touch memory outside what the
/// implementation covers: callers only pass ranges they own.
///
/// A value is a capability: one that covers real RAM (`platform::phys::ram`, unsafe to obtain)
/// can write any byte of it, so whoever holds one writes only what it owns (pages it allocated,
/// a mapping's original buffer under the DMA contract, its own slots) and hands it only to code
/// bound by the same rule. Code given it at construction (page migration, bounce copies) uses it
/// safely. [`SimMemory`] covers only its own buffer and is safe to build.
pub trait PhysMemory: Sync {
    /// Copies `buf.len()` bytes from physical address `pa` into `buf`.
    fn read(&self, pa: PhysAddr, buf: &mut [u8]);
    /// Copies `data` to physical address `pa`.
    fn write(&self, pa: PhysAddr, data: &[u8]);
    /// Copies `len` bytes from `src` to `dst` (the ranges do not overlap).
    fn copy(&self, dst: PhysAddr, src: PhysAddr, len: usize);
    /// Sets `len` bytes at `pa` to `byte` (scrubbing).
    fn fill(&self, pa: PhysAddr, byte: u8, len: usize);
}

#[cfg(not(target_os = "none"))]
pub use sim::SimMemory;

#[cfg(not(target_os = "none"))]
mod sim {
    use super::{PhysAddr, PhysMemory};
    use std::sync::Mutex;

    /// RAM for host tests: `size` bytes that answer to physical addresses `base..base+size`.
    pub struct SimMemory {
        base: PhysAddr,
        bytes: Mutex<Vec<u8>>,
    }

    impl SimMemory {
        /// Simulated RAM at `base`, `size` bytes, filled with a recognisable pattern (0xA5).
        pub fn new(base: PhysAddr, size: usize) -> Self {
            Self { base, bytes: Mutex::new(vec![0xA5; size]) }
        }

        fn offset(&self, pa: PhysAddr, len: usize) -> usize {
            let off = pa.checked_sub(self.base).expect("address below simulated RAM") as usize;
            let size = self.bytes.lock().unwrap().len();
            assert!(off.checked_add(len).is_some_and(|end| end <= size), "access beyond simulated RAM");
            off
        }
    }

    impl PhysMemory for SimMemory {
        fn read(&self, pa: PhysAddr, buf: &mut [u8]) {
            let off = self.offset(pa, buf.len());
            buf.copy_from_slice(&self.bytes.lock().unwrap()[off..off + buf.len()]);
        }
        fn write(&self, pa: PhysAddr, data: &[u8]) {
            let off = self.offset(pa, data.len());
            self.bytes.lock().unwrap()[off..off + data.len()].copy_from_slice(data);
        }
        fn copy(&self, dst: PhysAddr, src: PhysAddr, len: usize) {
            let (d, s) = (self.offset(dst, len), self.offset(src, len));
            self.bytes.lock().unwrap().copy_within(s..s + len, d);
        }
        fn fill(&self, pa: PhysAddr, byte: u8, len: usize) {
            let off = self.offset(pa, len);
            self.bytes.lock().unwrap()[off..off + len].fill(byte);
        }
    }
}
