//! Arm PrimeCell UART (PL011), Technical Reference Manual r1p5 (DDI 0183), section 3.
//!
//! Only what a console needs: polled transmit. QEMU's PL011 needs no baud-rate setup.

use core::fmt;

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

register_bitfields! {
    u32,

    /// Flag Register (UARTFR), TRM 3.3.3.
    FR [
        /// Transmit FIFO full.
        TXFF OFFSET(5) NUMBITS(1) [],
        /// Receive FIFO empty.
        RXFE OFFSET(4) NUMBITS(1) [],
        /// UART busy transmitting data.
        BUSY OFFSET(3) NUMBITS(1) []
    ],

    /// Line Control Register (UARTLCR_H), TRM 3.3.7.
    LCR_H [
        /// Word length.
        WLEN OFFSET(5) NUMBITS(2) [
            FiveBit = 0b00,
            SixBit = 0b01,
            SevenBit = 0b10,
            EightBit = 0b11
        ],
        /// Enable FIFOs.
        FEN OFFSET(4) NUMBITS(1) []
    ],

    /// Control Register (UARTCR), TRM 3.3.8.
    CR [
        /// Receive enable.
        RXE OFFSET(9) NUMBITS(1) [],
        /// Transmit enable.
        TXE OFFSET(8) NUMBITS(1) [],
        /// UART enable.
        UARTEN OFFSET(0) NUMBITS(1) []
    ]
}

register_structs! {
    /// The PL011 register block.
    pub Pl011Registers {
        (0x00 => dr: ReadWrite<u32>),
        (0x04 => _reserved0),
        (0x18 => fr: ReadOnly<u32, FR::Register>),
        (0x1c => _reserved1),
        (0x2c => lcr_h: ReadWrite<u32, LCR_H::Register>),
        (0x30 => cr: ReadWrite<u32, CR::Register>),
        (0x34 => _reserved2),
        (0x44 => icr: WriteOnly<u32>),
        (0x48 => @END),
    }
}

/// A PL011 UART.
pub struct Pl011 {
    regs: &'static Pl011Registers,
}

// SAFETY: a `Pl011` is only a pointer to MMIO registers; moving it to another context (the
// console lock's holder) is fine, and every access is a volatile register access.
unsafe impl Send for Pl011 {}

impl Pl011 {
    /// # Safety
    ///
    /// `base` must be the address of a PL011's registers, mapped as device memory for the rest of
    /// the kernel's life, and no other `Pl011` may drive it concurrently in a way that matters
    /// (the console path serialises writers with a lock; the emergency path accepts interleaving).
    pub unsafe fn new(base: usize) -> Self {
        // SAFETY: the caller promises `base` points at a live PL011 register block.
        Self { regs: unsafe { &*(base as *const Pl011Registers) } }
    }

    /// Enables the UART for 8-bit words with FIFOs, transmit and receive.
    pub fn init(&self) {
        self.regs.cr.set(0);
        self.regs.icr.set(0x7ff); // clear all interrupts
        self.regs.lcr_h.write(LCR_H::WLEN::EightBit + LCR_H::FEN::SET);
        self.regs.cr.write(CR::UARTEN::SET + CR::TXE::SET + CR::RXE::SET);
    }

    /// Writes one byte, waiting while the transmit FIFO is full.
    pub fn write_byte(&self, byte: u8) {
        while self.regs.fr.is_set(FR::TXFF) {
            core::hint::spin_loop();
        }
        self.regs.dr.set(byte as u32);
    }

    /// Writes a string, turning `\n` into `\r\n`.
    pub fn write_str(&self, s: &str) {
        for b in s.bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
    }

    /// Waits until everything written has left the UART.
    pub fn flush(&self) {
        while self.regs.fr.is_set(FR::BUSY) {
            core::hint::spin_loop();
        }
    }
}

impl fmt::Write for Pl011 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        Pl011::write_str(self, s);
        Ok(())
    }
}
