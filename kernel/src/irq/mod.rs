//! Generic interrupt bookkeeping, free of hardware so that it is unit-tested on the host (Linux
//! `kernel/irq/`). The GIC and the handler table live in `platform::irq`.
#![forbid(unsafe_code)]

pub mod spurious;
