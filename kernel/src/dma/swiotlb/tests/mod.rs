//! Host tests of the SWIOTLB pool, after the swiotlb KUnit suite proposed upstream in 2024.
//!
//! Simulated RAM: original buffers live in the 4 MiB below the pool, the pool right after.

mod alignment;
mod bounce;
mod clean;
mod colour;
mod leak;
mod lookup;
mod misuse;
mod occupancy;
mod random;
mod slot_cache;
mod slot_search;

use super::*;
use crate::dma::sim_maps::SimPoolMaps;
use crate::mm::phys::{PhysMemory, SimMemory};
use crate::mm::PhysAddr;

/// Start of simulated RAM, where original buffers live.
const RAM_BASE: PhysAddr = 0x4000_0000;
/// Bytes for original buffers.
const ORIG_BYTES: u64 = 0x40_0000;
/// Start of the pool, right after the original buffers.
const POOL_START: PhysAddr = RAM_BASE + ORIG_BYTES;

/// A pool and the RAM around it.
struct Fixture {
    /// Leaked: the pool keeps a `'static` reference.
    mem: &'static SimMemory,
    pool: SwiotlbPool,
}

impl Fixture {
    fn new(nslots: usize, nareas: usize) -> Self {
        let mem: &'static SimMemory = Box::leak(Box::new(SimMemory::new(RAM_BASE, ORIG_BYTES as usize + nslots * IO_TLB_SIZE)));
        let pool = SwiotlbPool::new(POOL_START, nslots, nareas, mem).expect("valid geometry");
        Self { mem, pool }
    }

    fn read(&self, pa: PhysAddr, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.mem.read(pa, &mut buf);
        buf
    }

    /// Writes a pattern derived from `seed` at `pa` and returns it.
    fn write_pattern(&self, pa: PhysAddr, len: usize, seed: u8) -> Vec<u8> {
        let data = pattern(len, seed);
        self.mem.write(pa, &data);
        data
    }

    fn map(&self, orig: PhysAddr, size: usize, dir: DmaDirection, align: SlotAlignment) -> PhysAddr {
        self.pool.sim_map(orig, size, dir, align).expect("map")
    }

    fn unmap(&self, tlb: PhysAddr, size: usize, dir: DmaDirection) {
        self.pool.unmap(tlb, size, dir, DmaAttrs::default()).expect("unmap")
    }

    /// Maps a small buffer so the next search starts somewhere else; returns (tlb, size).
    fn spacer(&self, i: usize) -> (PhysAddr, usize) {
        let size = 1 + (i * 97) % IO_TLB_SIZE;
        (self.map(RAM_BASE + ORIG_BYTES - 0x1000, size, DmaDirection::ToDevice, SlotAlignment::default()), size)
    }

    /// Everything unmapped: all slots free and every free-run count back to its initial value.
    fn assert_pristine(&self) {
        self.pool.assert_consistent();
        assert_eq!(self.pool.free_slots(), self.pool.nslots() - self.pool.lent_slots());
        assert_eq!(self.pool.used_slots(), 0);
    }
}

/// Simulated RAM for pools whose memory a test never touches (geometry checks).
fn test_mem() -> &'static SimMemory {
    static MEM: std::sync::OnceLock<SimMemory> = std::sync::OnceLock::new();
    MEM.get_or_init(|| SimMemory::new(RAM_BASE, 0x1000))
}

/// `len` bytes that differ from their neighbours and from other seeds.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed).wrapping_add((i >> 8) as u8)).collect()
}

const DIRECTIONS: [DmaDirection; 3] = [DmaDirection::ToDevice, DmaDirection::FromDevice, DmaDirection::Bidirectional];
