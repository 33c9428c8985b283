//! DMA-API debugging through the API a driver calls: each kind of misuse the SWIOTLB
//! issue lists is committed on purpose and must be reported and refused, without losing the
//! mapping: the correct call afterwards still works and every slot comes back. The tracker's own
//! unit tests are in `dma/debug.rs`.
//!
//! "Mapping error never checked" cannot be committed through this API: `map_single` returns a
//! `Result`, which Rust makes the caller look at, so the API marks the mapping checked (the
//! tracker's test commits it directly).

use crate::dma::sim_maps::SimApiMaps;
use std::boxed::Box;

use crate::dma::debug::{DmaDebug, DmaDebugError, MAX_ENTRIES};
use crate::dma::device::{BouncePolicy, DmaDevice};
use crate::dma::mapping::{DmaApi, DmaError};
use crate::dma::swiotlb::mem::SwiotlbMem;
use crate::dma::swiotlb::{DmaAttrs, DmaDirection, SwiotlbPool};
use crate::mm::phys::SimMemory;
use crate::mm::PhysAddr;

const RAM: PhysAddr = 0x4000_0000;
const POOL: PhysAddr = 0x4080_0000;
/// The device reaches the first 16 MiB: buffers above bounce.
const LIMIT: PhysAddr = 0x40ff_ffff;
const HIGH: PhysAddr = 0x4100_0000;
const TO: DmaDirection = DmaDirection::ToDevice;
const FROM: DmaDirection = DmaDirection::FromDevice;
const NOATTR: DmaAttrs = DmaAttrs { skip_cpu_sync: false, no_copy_in: false };

struct Setup {
    api: DmaApi<'static>,
    pool: &'static SwiotlbPool,
    debug: &'static DmaDebug,
    dev: DmaDevice,
}

fn setup() -> Setup {
    let mem: &'static SimMemory = Box::leak(Box::new(SimMemory::new(RAM, 32 << 20)));
    let swiotlb: &'static SwiotlbMem = Box::leak(Box::new(SwiotlbMem::static_for_test(POOL, 1024, 1, mem)));
    let pool = swiotlb.default_pool();
    let debug: &'static DmaDebug = Box::leak(Box::new(DmaDebug::new()));
    let api = DmaApi::new(swiotlb, Some(debug), None);
    let dev = DmaDevice::new(1, "disk0", Some(LIMIT), true, BouncePolicy::WhenNeeded);
    Setup { api, pool, debug, dev }
}

fn misuse(r: Result<(), DmaError>) -> DmaDebugError {
    match r {
        Err(DmaError::Misuse(e)) => e,
        other => panic!("misuse not reported: {other:?}"),
    }
}

impl Setup {
    /// Every slot free, nothing tracked: no state was lost.
    fn assert_nothing_lost(&self) {
        assert_eq!(self.pool.used_slots(), 0, "slots leaked");
        assert_eq!(self.debug.live(), 0, "tracker entries leaked");
    }
}

#[test]
fn unmap_of_an_unknown_address_is_refused() {
    let s = setup();
    let e = misuse(s.api.unmap_single(&s.dev, HIGH, 64, FROM, NOATTR));
    assert_eq!(e, DmaDebugError::UnmapUnknown { dev: 1, addr: HIGH });
    s.assert_nothing_lost();
}

/// A refused unmap (wrong size or direction) changes nothing: the bounce stays mapped and
/// tracked, the correct unmap that follows ends it and frees every slot, and a second one is a
/// double unmap.
fn refused_unmap_leaves_the_slots_mapped(s: &Setup, dma: PhysAddr, dir: DmaDirection) {
    assert!(s.api.is_swiotlb_buffer(&s.dev, dma), "refused: the bounce stays mapped");
    assert_eq!(s.debug.live(), 1, "refused: still tracked");
    s.api.unmap_single(&s.dev, dma, 4096, dir, NOATTR).expect("the correct unmap after a refused one");
    assert!(!s.api.is_swiotlb_buffer(&s.dev, dma));
    assert_eq!(misuse(s.api.unmap_single(&s.dev, dma, 4096, dir, NOATTR)), DmaDebugError::DoubleUnmap { dev: 1, addr: dma });
    s.assert_nothing_lost();
}

#[test]
fn unmap_with_another_size_is_refused() {
    let s = setup();
    let dma = s.api.sim_map_single(&s.dev, HIGH, 4096, FROM, NOATTR).unwrap();
    let e = misuse(s.api.unmap_single(&s.dev, dma, 100, FROM, NOATTR));
    assert_eq!(e, DmaDebugError::UnmapWrongSize { dev: 1, addr: dma, mapped: 4096, unmapped: 100 });
    refused_unmap_leaves_the_slots_mapped(&s, dma, FROM);
}

#[test]
fn unmap_with_another_direction_is_refused() {
    let s = setup();
    let dma = s.api.sim_map_single(&s.dev, HIGH, 4096, FROM, NOATTR).unwrap();
    let e = misuse(s.api.unmap_single(&s.dev, dma, 4096, TO, NOATTR));
    assert_eq!(e, DmaDebugError::UnmapWrongDirection { dev: 1, addr: dma, mapped: FROM, unmapped: TO });
    refused_unmap_leaves_the_slots_mapped(&s, dma, FROM);
}

#[test]
fn double_unmap_is_refused() {
    let s = setup();
    let dma = s.api.sim_map_single(&s.dev, HIGH, 512, TO, NOATTR).unwrap();
    s.api.unmap_single(&s.dev, dma, 512, TO, NOATTR).unwrap();
    // The slots may be someone else's by now: a second unmap must not free them.
    let other = s.api.sim_map_single(&s.dev, HIGH + 0x1000, 512, TO, NOATTR).unwrap();
    assert_eq!(misuse(s.api.unmap_single(&s.dev, dma, 512, TO, NOATTR)), DmaDebugError::DoubleUnmap { dev: 1, addr: dma });
    assert!(s.api.is_swiotlb_buffer(&s.dev, other));
    s.api.unmap_single(&s.dev, other, 512, TO, NOATTR).unwrap();
    s.assert_nothing_lost();
}

#[test]
fn sync_outside_the_mapping_unknown_or_in_the_wrong_direction_is_refused() {
    let s = setup();
    let dma = s.api.sim_map_single(&s.dev, HIGH, 4096, FROM, NOATTR).unwrap();
    let out = misuse(s.api.sync_single_for_cpu(&s.dev, dma + 4000, 200, FROM));
    assert!(matches!(out, DmaDebugError::SyncOutOfRange { size: 200, mapped_size: 4096, .. }), "{out:?}");
    let unknown = misuse(s.api.sync_single_for_cpu(&s.dev, dma + 8192, 16, FROM));
    assert_eq!(unknown, DmaDebugError::SyncUnknown { dev: 1, addr: dma + 8192 });
    let other_device = DmaDevice::new(2, "disk1", Some(LIMIT), true, BouncePolicy::WhenNeeded);
    let foreign = misuse(s.api.sync_single_for_cpu(&other_device, dma, 16, FROM));
    assert_eq!(foreign, DmaDebugError::SyncUnknown { dev: 2, addr: dma }, "another device's mapping");
    let wrong = misuse(s.api.sync_single_for_device(&s.dev, dma, 16, TO));
    assert_eq!(wrong, DmaDebugError::SyncWrongDirection { dev: 1, addr: dma, mapped: FROM, synced: TO });
    s.api.sync_single_for_cpu(&s.dev, dma, 4096, FROM).expect("a correct sync still works");
    s.api.unmap_single(&s.dev, dma, 4096, FROM, NOATTR).unwrap();
    assert_eq!(s.api.stats.misuse.load(core::sync::atomic::Ordering::Relaxed), 4);
    s.assert_nothing_lost();
}

#[test]
fn mappings_live_when_the_device_goes_away_are_reported() {
    let s = setup();
    let a = s.api.sim_map_single(&s.dev, HIGH, 64, TO, NOATTR).unwrap();
    let b = s.api.sim_map_single(&s.dev, RAM + 0x1000, 64, TO, NOATTR).unwrap(); // direct
    assert_eq!(s.debug.device_removed(1), Err(DmaDebugError::LeakedAtRemove { dev: 1, count: 2 }));
    s.api.unmap_single(&s.dev, a, 64, TO, NOATTR).unwrap();
    s.api.unmap_single(&s.dev, b, 64, TO, NOATTR).unwrap();
    s.debug.device_removed(1).expect("nothing left");
    s.assert_nothing_lost();
}

#[test]
fn a_full_tracker_does_not_turn_correct_unmaps_into_misuse() {
    let s = setup();
    // Fill the tracker with direct mappings (no slots used).
    let direct: Vec<_> =
        (0..MAX_ENTRIES as u64).map(|i| s.api.sim_map_single(&s.dev, RAM + 0x10_0000 + i * 64, 64, TO, NOATTR).unwrap()).collect();
    // One more mapping, a bounce: it works, but the tracker has no room for it.
    let dma = s.api.sim_map_single(&s.dev, HIGH, 4096, FROM, NOATTR).expect("the mapping itself works");
    assert_eq!(s.debug.errors().1, Some(DmaDebugError::TableFull));
    s.api.unmap_single(&s.dev, dma, 4096, FROM, NOATTR).expect("an untracked mapping's unmap is no misuse");
    assert_eq!(s.pool.used_slots(), 0, "its slots came back");
    for (i, d) in direct.into_iter().enumerate() {
        s.api.unmap_single(&s.dev, d, 64, TO, NOATTR).unwrap_or_else(|e| panic!("direct mapping {i}: {e}"));
    }
}
