//! Host tests: the driver against simulated devices, honest and hostile.

mod blk_tests;
// Shared by path with the fuzz crate (fuzz/src/lib.rs), which needs their items `pub`.
#[allow(unreachable_pub)]
mod hostile;
mod mmio_tests;
mod queue_tests;
mod recovery_tests;
#[allow(unreachable_pub)]
mod sim;
mod transport_tests;
