//! The devices `rvmx run` emulates in userspace, on the port I/O bus: the 8250 UART at 0x3f8
//! (rust-vmm's vm-superio, wired to stdout) on IRQ4, the i8042 controller's reset line
//! (vm-superio), the 8259 pair (pic.rs), the 8254 timer on IRQ0 (pit.rs), the CMOS clock
//! (rtc.rs), and a debug-exit port through which a test guest ends the VM with a status.

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

use vm_superio::{I8042Device, Serial, Trigger};

use super::{pic::Pic, pit::Pit, rtc::Rtc};

/// The UART's ISA interrupt line.
const COM1_IRQ: u8 = 4;

/// COM1's base port (8 registers).
pub const COM1: u16 = 0x3f8;
/// The i8042's data and command ports.
pub const I8042_DATA: u16 = 0x60;
pub const I8042_COMMAND: u16 = 0x64;
/// A byte written here ends the VM; `rvmx run` exits with it as its status.
pub const DEBUG_EXIT: u16 = 0xf4;

/// Why the guest asked the VM to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The i8042 pulsed the CPU reset line (a guest `reboot`).
    Reset,
    /// A byte written to [`DEBUG_EXIT`].
    DebugExit(u8),
}

/// A line a device raises: remembered until the VMM turns it into a request at the PIC.
#[derive(Clone, Default)]
pub struct Line(Arc<AtomicBool>);

impl Line {
    /// Whether the line was raised since the last call.
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

impl Trigger for Line {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.store(true, Ordering::Release);
        Ok(())
    }
}

/// The VM's time base: nanoseconds since it started.
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// Port accesses nobody claims, counted for `--trace-exits`.
#[derive(Default)]
pub struct Unclaimed {
    pub reads: u64,
    pub writes: u64,
}

/// Every port device of the VM.
pub struct PortBus<W: Write> {
    serial: Serial<Line, vm_superio::serial::NoEvents, W>,
    serial_irq: Line,
    i8042: I8042Device<Line>,
    reset: Line,
    pub pic: Pic,
    pub pit: Pit,
    rtc: Rtc,
    /// The timers' time base.
    pub clock: Clock,
    pub unclaimed: Unclaimed,
}

impl<W: Write> PortBus<W> {
    pub fn new(console: W) -> Self {
        let (reset, serial_irq) = (Line::default(), Line::default());
        Self {
            serial: Serial::new(serial_irq.clone(), console),
            serial_irq,
            i8042: I8042Device::new(reset.clone()),
            reset,
            pic: Pic::default(),
            pit: Pit::default(),
            rtc: Rtc::default(),
            clock: Clock(Instant::now()),
            unclaimed: Unclaimed::default(),
        }
    }

    /// Nanoseconds since the VM started.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Turns what the devices signalled into interrupt requests at the PIC.
    pub fn update_irqs(&mut self) {
        for _ in 0..self.pit.irq0_edges(self.now()) {
            self.pic.pulse(0);
        }
        if self.serial_irq.take() {
            self.pic.pulse(COM1_IRQ);
        }
    }

    /// Bytes typed for the guest: queued in the UART's receive FIFO as far as it has room
    /// (raising its interrupt if the guest enabled it); how many were taken.
    pub fn serial_input(&mut self, bytes: &[u8]) -> usize {
        self.serial.enqueue_raw_bytes(bytes).unwrap_or(0)
    }

    /// An IN of `data.len()` bytes from `port`. Unclaimed ports read as all ones (an empty bus).
    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        let now = self.now();
        match port {
            COM1..=0x3ff if data.len() == 1 => data[0] = self.serial.read((port - COM1) as u8),
            I8042_DATA | I8042_COMMAND if data.len() == 1 => data[0] = self.i8042.read((port - I8042_DATA) as u8),
            p if super::pic::owns(p) && data.len() == 1 => data[0] = self.pic.read(port),
            super::pit::BASE..=super::pit::CONTROL | super::pit::PORT_B if data.len() == 1 => data[0] = self.pit.read(port, now),
            super::rtc::INDEX | super::rtc::DATA if data.len() == 1 => {
                let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                data[0] = self.rtc.read(port, unix);
            }
            _ => self.unclaimed.reads += 1,
        }
    }

    /// An OUT of `data` to `port`; `Some` if the guest asked the VM to end.
    pub fn write(&mut self, port: u16, data: &[u8]) -> Option<Stop> {
        let now = self.now();
        match port {
            p if super::pic::owns(p) && data.len() == 1 => self.pic.write(port, data[0]),
            super::pit::BASE..=super::pit::CONTROL | super::pit::PORT_B if data.len() == 1 => self.pit.write(port, data[0], now),
            COM1..=0x3ff if data.len() == 1 => {
                // A console write error only loses output (vm-superio writes and flushes).
                let _ = self.serial.write((port - COM1) as u8, data[0]);
            }
            I8042_DATA | I8042_COMMAND if data.len() == 1 => {
                let _ = self.i8042.write((port - I8042_DATA) as u8, data[0]);
                if self.reset.take() {
                    return Some(Stop::Reset);
                }
            }
            super::rtc::INDEX | super::rtc::DATA if data.len() == 1 => self.rtc.write(port, data[0]),
            DEBUG_EXIT => return Some(Stop::DebugExit(data[0])),
            _ => self.unclaimed.writes += 1,
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_output_reaches_the_console() {
        let mut bus = PortBus::new(Vec::new());
        let mut lsr = [0];
        bus.read(COM1 + 5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "transmitter empty");
        for b in b"hi\n" {
            assert_eq!(bus.write(COM1, &[*b]), None);
        }
        assert_eq!(bus.serial.writer(), b"hi\n");
    }

    #[test]
    fn serial_input_reaches_the_guest_and_raises_irq4() {
        let mut bus = PortBus::new(Vec::new());
        bus.write(COM1 + 1, &[1]); // IER: received data available
        assert_eq!(bus.serial_input(b"ok"), 2);
        bus.update_irqs();
        assert!(bus.pic.has_interrupt(), "IRQ4 requested");
        let (mut lsr, mut rbr) = ([0], [0]);
        for want in b"ok" {
            bus.read(COM1 + 5, &mut lsr);
            assert_eq!(lsr[0] & 1, 1, "data ready");
            bus.read(COM1, &mut rbr);
            assert_eq!(rbr[0], *want);
        }
        bus.read(COM1 + 5, &mut lsr);
        assert_eq!(lsr[0] & 1, 0);
        assert_eq!(bus.serial_input(&[0; 100]), 64, "the FIFO holds 64 bytes");
    }

    #[test]
    fn reset_and_debug_exit_end_the_vm() {
        let mut bus = PortBus::new(Vec::new());
        assert_eq!(bus.write(I8042_COMMAND, &[0xfe]), Some(Stop::Reset));
        assert_eq!(bus.write(DEBUG_EXIT, &[42]), Some(Stop::DebugExit(42)));
        let mut d = [0; 2];
        bus.read(0x1234, &mut d);
        assert_eq!((d, bus.unclaimed.reads), ([0xff, 0xff], 1));
    }
}
