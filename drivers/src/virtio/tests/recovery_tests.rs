//! Recovery (Linux `virtblk_freeze` / `virtblk_restore`): a device given up on is reset and
//! initialised again over the same ring memory, and takes requests again. Against the simulated
//! disk: one that stops answering, one that answers with garbage after the reset, one whose
//! reset never completes.

extern crate std;

use std::vec::Vec;

use super::blk_tests::{device, finish, setup, Blk, Request, SimDisk, CAPACITY, Q};
use super::sim::{read_bytes, SimDma};
use crate::virtio::blk::RequestType;
use crate::virtio::status::{DRIVER_OK, FAILED, FEATURES_OK};
use crate::virtio::{BrokenReason, Error};

/// Submits a read of one sector from each of `sectors`, returns the requests.
fn submit_reads(dma: &SimDma, blk: &mut Blk, sectors: &[u64]) -> Vec<Request> {
    sectors
        .iter()
        .map(|&sector| {
            let read = Request::new(dma, RequestType::In, sector, &[(512, 0)]);
            blk.read_blocks_nb(sector, &read.dma()).unwrap();
            read
        })
        .collect()
}

/// The device executes everything available; every request completes with OK and the
/// sector's bytes.
fn serve_and_check(dma: &SimDma, blk: &mut Blk, disk: &mut SimDisk, sectors: &[u64]) {
    let reads = submit_reads(dma, blk, sectors);
    let chains = disk.take_all();
    assert_eq!(chains.len(), sectors.len());
    for chain in &chains {
        disk.complete(chain, None);
    }
    for _ in &reads {
        let (token, outcome) = {
            let completion = blk.pop_completed().unwrap().expect("a completion");
            let token = completion.token();
            let index = chains.iter().position(|c| c.head == token.0).unwrap();
            (token, blk.complete(completion, reads[index].status_byte()))
        };
        assert_eq!(outcome, Ok(()), "request {token:?}");
    }
    for (read, &sector) in reads.iter().zip(sectors) {
        let want: Vec<u8> = (0..512).map(|i| (sector as usize * 512 + i) as u8).collect();
        assert_eq!(read_bytes(read.data[0].dma_addr, 512), want, "sector {sector}");
    }
}

#[test]
fn a_device_that_stops_answering_is_reset_reinitialised_and_serves_again() {
    let (dma, dev, mut blk, mut disk) = setup(0);
    let rings = dev.activated.get().unwrap();
    // Three reads reach the device, which never answers.
    let _lost = submit_reads(&dma, &mut blk, &[1, 2, 3]);
    assert_eq!(disk.take_all().len(), 3);
    let error = blk.abort(BrokenReason::RequestTimedOut { id: 0 });
    assert_eq!(error, Error::DeviceBroken(BrokenReason::RequestTimedOut { id: 0 }));
    assert_eq!(dev.status.get(), 0);

    assert_eq!(blk.reinit(), Ok(()));
    assert_eq!(blk.broken(), None);
    assert_eq!(dev.status.get() & (DRIVER_OK | FEATURES_OK | FAILED), DRIVER_OK | FEATURES_OK);
    assert_eq!(dev.activated.get(), Some(rings), "the same ring memory, handed over again");
    // A fresh queue: nothing in flight, every descriptor free, indices from 0.
    assert_eq!(blk.queue().in_flight(), 0);
    assert_eq!(blk.queue().num_free(), Q as u16);
    // The device starts from a reset ring too (QEMU's vring state is reset with the device).
    let mut disk = SimDisk::new(blk.queue().memory());
    assert_eq!(disk.ring.avail_idx(), 0, "the available ring was zeroed");
    serve_and_check(&dma, &mut blk, &mut disk, &[1, 2, 3, 60]);
    dma.check_guards();
}

#[test]
fn garbage_after_the_reset_breaks_the_queue_again_and_another_reinit_recovers() {
    let (dma, dev, mut blk, mut disk) = setup(0);
    let _lost = submit_reads(&dma, &mut blk, &[5]);
    disk.take_all();
    blk.abort(BrokenReason::RequestTimedOut { id: 0 });
    assert_eq!(blk.reinit(), Ok(()));
    // After the reset the device claims completions it was never given.
    let mut disk = SimDisk::new(blk.queue().memory());
    disk.ring.push_used(7, 1);
    disk.ring.push_used(3, 1);
    assert!(matches!(blk.pop_completed(), Err(Error::DeviceBroken(BrokenReason::UsedIdxAhead { .. }))));
    let read = Request::new(&dma, RequestType::In, 0, &[(512, 0)]);
    assert!(matches!(blk.read_blocks_nb(0, &read.dma()), Err(Error::DeviceBroken(_))), "latched");
    // The driver gives up on it again: reset, initialise, and this time it behaves.
    blk.abort(BrokenReason::RequestTimedOut { id: 0 });
    assert_eq!(blk.reinit(), Ok(()));
    assert_eq!(dev.status.get() & FAILED, 0);
    let mut disk = SimDisk::new(blk.queue().memory());
    serve_and_check(&dma, &mut blk, &mut disk, &[0, CAPACITY - 1]);
    // A status byte that is garbage breaks it as well; once more, and it recovers.
    let read = Request::new(&dma, RequestType::In, 9, &[(512, 0)]);
    blk.read_blocks_nb(9, &read.dma()).unwrap();
    let chain = disk.take_all().pop().unwrap();
    disk.complete(&chain, Some(0x77));
    assert!(matches!(finish(&mut blk, &read).1, Err(Error::DeviceBroken(BrokenReason::BadStatus { .. }))));
    assert_eq!(blk.reinit(), Ok(()));
    let mut disk = SimDisk::new(blk.queue().memory());
    serve_and_check(&dma, &mut blk, &mut disk, &[9]);
    dma.check_guards();
}

#[test]
fn a_reset_that_never_completes_fails_every_reinit_and_nothing_reaches_the_device() {
    let (dma, dev, mut blk, mut disk) = setup(0);
    let _lost = submit_reads(&dma, &mut blk, &[1]);
    disk.take_all();
    dev.ignores_reset_now.set(true);
    let error = blk.abort(BrokenReason::RequestTimedOut { id: 0 });
    assert_eq!(error, Error::DeviceBroken(BrokenReason::ResetIgnored));
    let avail_before = disk.ring.avail_idx();
    for _ in 0..3 {
        // ResetIgnored: the caller must not take the buffers back.
        assert_eq!(blk.reinit(), Err(Error::DeviceBroken(BrokenReason::ResetIgnored)));
        assert!(blk.broken().is_some());
        assert_ne!(dev.status.get(), 0, "the status never read back 0");
    }
    let read = Request::new(&dma, RequestType::In, 0, &[(512, 0)]);
    assert!(matches!(blk.read_blocks_nb(0, &read.dma()), Err(Error::DeviceBroken(_))));
    assert_eq!(disk.ring.avail_idx(), avail_before, "nothing new was made available");
    // The device starts answering resets again: the next reinit works.
    dev.ignores_reset_now.set(false);
    assert_eq!(blk.reinit(), Ok(()));
    let mut disk = SimDisk::new(blk.queue().memory());
    serve_and_check(&dma, &mut blk, &mut disk, &[1]);
    dma.check_guards();
}

#[test]
fn a_device_that_comes_back_as_another_is_refused() {
    let dma = SimDma::default();
    let dev = device(0);
    let mut blk = Blk::new(dev, &dma, 0).unwrap();
    blk.abort(BrokenReason::RequestTimedOut { id: 0 });
    dev.set_config_u64(0, CAPACITY * 2);
    assert_eq!(blk.reinit(), Err(Error::DeviceChanged));
    assert_ne!(dev.status.get() & FAILED, 0, "FAILED set");
    assert_eq!(dev.status.get() & DRIVER_OK, 0);
    assert!(blk.broken().is_some(), "still latched broken");
    assert_eq!(blk.capacity(), CAPACITY);
    dma.check_guards();
}
