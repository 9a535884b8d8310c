//! COM1: the 8250 UART at 0x3f8 (rust-vmm's vm-superio) on IRQ4. What the guest writes goes to
//! the user's console; what the user types is queued in its receive FIFO.

use std::io::Write;

use vm_superio::{serial::NoEvents, Serial};

use super::{
    bus::{BusDevice, Effect},
    line::Line,
};

/// COM1's base port and its eight registers.
pub const BASE: u16 = 0x3f8;
pub const LEN: u64 = 8;
/// The UART's ISA interrupt line.
pub const IRQ: u8 = 4;

/// The UART and its interrupt line.
pub struct Com1<W: Write> {
    uart: Serial<Line, NoEvents, W>,
    irq: Line,
}

impl<W: Write> Com1<W> {
    /// A UART whose output goes to `console`.
    pub fn new(console: W) -> Self {
        let irq = Line::default();
        Com1 { uart: Serial::new(irq.clone(), console), irq }
    }

    /// Whether the UART raised its interrupt since the last call.
    pub fn take_irq(&self) -> bool {
        self.irq.take()
    }

    /// Bytes typed for the guest: queued in the receive FIFO as far as it has room (raising
    /// the interrupt if the guest enabled it); how many were taken.
    pub fn input(&mut self, bytes: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(bytes).unwrap_or(0)
    }

    /// What the guest wrote so far.
    #[cfg(test)]
    pub fn output(&self) -> &W {
        self.uart.writer()
    }
}

impl<W: Write> BusDevice for Com1<W> {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8], _now: u64) {
        data[0] = self.uart.read(offset as u8);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8], _now: u64) -> Option<Effect> {
        // A console write error only loses output (vm-superio writes and flushes).
        let _ = self.uart.write(offset as u8, data[0]);
        None
    }
}
