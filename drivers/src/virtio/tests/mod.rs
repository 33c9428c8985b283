//! Host tests: the driver against simulated devices, honest and hostile.

mod blk_tests;
mod hostile;
mod mmio_tests;
mod queue_tests;
mod recovery_tests;
mod sim;
mod transport_tests;
