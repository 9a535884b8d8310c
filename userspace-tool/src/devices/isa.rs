//! The PC's port-I/O devices and the bus they sit on: COM1 (serial.rs) on IRQ4, the i8042's
//! reset line, the 8259 pair (pic.rs), the 8254 timer (pit.rs) on IRQ0, the CMOS clock (rtc.rs),
//! the debug-exit port, the ACPI PM1 registers (acpi_pm.rs) and a lone PCI host bridge
//! (pci_host.rs). They share one lock (the vCPUs' and the console's), with the wiring that
//! turns their interrupt lines into requests at the PIC. With the kernel's irqchip the 8259s and
//! the 8254 are the kernel's: theirs are left off the bus, and COM1's interrupt is taken by the
//! caller ([`Isa::take_serial_irq`]).

use std::io::Write;

use super::{
    acpi_pm::{self, AcpiPm},
    pci_host::{self, PciHost},
    bus::{Bus, BusDevice, Effect},
    clock::Clock,
    debug_exit::{self, DebugExit},
    i8042::{self, I8042},
    pic::{self, Pic},
    pit::{self, Pit},
    rtc::{self, Rtc},
    serial::{self, Com1},
};

/// The devices on the port bus, by name.
#[derive(Clone, Copy, Debug)]
enum Port {
    Com1,
    I8042,
    Pic,
    Pit,
    Rtc,
    DebugExit,
    AcpiPm,
    PciHost,
}

/// Where each device answers.
const PORTS: &[(u16, u64, Port)] = &[
    (pic::MASTER, 2, Port::Pic),
    (pit::BASE, 4, Port::Pit),
    (i8042::DATA, 1, Port::I8042),
    (pit::PORT_B, 1, Port::Pit),
    (i8042::COMMAND, 1, Port::I8042),
    (rtc::INDEX, 1, Port::Rtc),
    (rtc::DATA, 1, Port::Rtc),
    (pic::SLAVE, 2, Port::Pic),
    (pic::ELCR, 2, Port::Pic),
    (debug_exit::PORT, 1, Port::DebugExit),
    (acpi_pm::EVENT, (acpi_pm::EVENT_LEN + acpi_pm::CONTROL_LEN) as u64, Port::AcpiPm),
    (pci_host::ADDRESS, pci_host::LEN, Port::PciHost),
    (serial::BASE, serial::LEN, Port::Com1),
];

/// Port accesses nobody claims, counted for `--trace-exits`.
#[derive(Default)]
pub struct Unclaimed {
    pub reads: u64,
    pub writes: u64,
}

/// Every port device of the VM.
pub struct Isa<W: Write> {
    bus: Bus<Port>,
    com1: Com1<W>,
    i8042: I8042,
    pub pic: Pic,
    pub pit: Pit,
    rtc: Rtc,
    debug_exit: DebugExit,
    acpi_pm: AcpiPm,
    pci_host: PciHost,
    /// The timers' time base.
    pub clock: Clock,
    pub unclaimed: Unclaimed,
}

impl<W: Write> Isa<W> {
    /// The devices, COM1's output going to `console`; the 8259s and the 8254 on the bus if
    /// `legacy_irqchip` (not the kernel's).
    pub fn new(console: W, legacy_irqchip: bool) -> Self {
        let ports: Vec<_> = PORTS
            .iter()
            .filter(|(_, _, dev)| legacy_irqchip || !matches!(dev, Port::Pic | Port::Pit))
            .map(|&(port, len, dev)| (port.into(), len, dev))
            .collect();
        Isa {
            bus: Bus::new(&ports),
            com1: Com1::new(console),
            i8042: I8042::default(),
            pic: Pic::default(),
            pit: Pit::default(),
            rtc: Rtc::default(),
            debug_exit: DebugExit,
            acpi_pm: AcpiPm::default(),
            pci_host: PciHost::default(),
            clock: Clock::start(),
            unclaimed: Unclaimed::default(),
        }
    }

    fn device(&mut self, port: Port) -> &mut dyn BusDevice {
        match port {
            Port::Com1 => &mut self.com1,
            Port::I8042 => &mut self.i8042,
            Port::Pic => &mut self.pic,
            Port::Pit => &mut self.pit,
            Port::Rtc => &mut self.rtc,
            Port::DebugExit => &mut self.debug_exit,
            Port::AcpiPm => &mut self.acpi_pm,
            Port::PciHost => &mut self.pci_host,
        }
    }

    /// The device that answers an access of `len` bytes at `port`: its name, base and offset.
    fn claimant(&mut self, port: u16, len: usize, write: bool) -> Option<(Port, u64, u64)> {
        let (dev, base, offset) = self.bus.find(port.into())?;
        self.device(dev).claims(offset, len, write).then_some((dev, base, offset))
    }

    /// Turns what the devices signalled into interrupt requests at the PIC.
    pub fn update_irqs(&mut self) {
        for _ in 0..self.pit.irq0_edges(self.clock.now()) {
            self.pic.pulse(0);
        }
        if self.com1.take_irq() {
            self.pic.pulse(serial::IRQ);
        }
    }

    /// Whether COM1 raised its interrupt since the last call (for the kernel's irqchip).
    pub fn take_serial_irq(&mut self) -> bool {
        self.com1.take_irq()
    }

    /// Bytes typed for the guest, to COM1 (see [`Com1::input`]); how many it took.
    pub fn serial_input(&mut self, bytes: &[u8]) -> usize {
        self.com1.input(bytes)
    }

    /// An IN of `data.len()` bytes from `port`. Unclaimed ports read as all ones (an empty bus).
    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        let now = self.clock.now();
        match self.claimant(port, data.len(), false) {
            Some((dev, base, offset)) => self.device(dev).read(base, offset, data, now),
            None => self.unclaimed.reads += 1,
        }
    }

    /// An OUT of `data` to `port`; what it asks of the machine (a reset, a debug exit).
    pub fn write(&mut self, port: u16, data: &[u8]) -> Option<Effect> {
        let now = self.clock.now();
        match self.claimant(port, data.len(), true) {
            Some((dev, base, offset)) => self.device(dev).write(base, offset, data, now),
            None => {
                self.unclaimed.writes += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COM1: u16 = serial::BASE;

    #[test]
    fn serial_output_reaches_the_console() {
        let mut isa = Isa::new(Vec::new(), true);
        let mut lsr = [0];
        isa.read(COM1 + 5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "transmitter empty");
        for b in b"hi\n" {
            assert_eq!(isa.write(COM1, &[*b]), None);
        }
        assert_eq!(isa.com1.output(), b"hi\n");
    }

    #[test]
    fn serial_input_reaches_the_guest_and_raises_irq4() {
        let mut isa = Isa::new(Vec::new(), true);
        isa.write(COM1 + 1, &[1]); // IER: received data available
        assert_eq!(isa.serial_input(b"ok"), 2);
        isa.update_irqs();
        assert!(isa.pic.has_interrupt(), "IRQ4 requested");
        let (mut lsr, mut rbr) = ([0], [0]);
        for want in b"ok" {
            isa.read(COM1 + 5, &mut lsr);
            assert_eq!(lsr[0] & 1, 1, "data ready");
            isa.read(COM1, &mut rbr);
            assert_eq!(rbr[0], *want);
        }
        isa.read(COM1 + 5, &mut lsr);
        assert_eq!(lsr[0] & 1, 0);
        assert_eq!(isa.serial_input(&[0; 100]), 64, "the FIFO holds 64 bytes");
    }

    #[test]
    fn reset_and_debug_exit_end_the_vm() {
        let mut isa = Isa::new(Vec::new(), true);
        assert_eq!(isa.write(i8042::COMMAND, &[0xfe]), Some(Effect::Reset));
        assert_eq!(isa.write(debug_exit::PORT, &[42, 0]), Some(Effect::DebugExit(42)), "any width");
        let mut d = [0; 2];
        isa.read(0x1234, &mut d);
        assert_eq!((d, isa.unclaimed.reads), ([0xff, 0xff], 1));
        isa.read(debug_exit::PORT, &mut d[..1]);
        assert_eq!((d, isa.unclaimed.reads), ([0xff, 0xff], 2), "write-only");
    }

    #[test]
    fn the_kernels_irqchip_leaves_the_8259s_and_the_8254_off_the_bus() {
        let mut isa = Isa::new(Vec::new(), false);
        let mut b = [0];
        for port in [pic::MASTER, pic::SLAVE + 1, pit::BASE, pit::PORT_B] {
            isa.read(port, &mut b);
            assert_eq!(isa.write(port, &[0x11]), None);
        }
        assert_eq!((isa.unclaimed.reads, isa.unclaimed.writes), (4, 4));
        isa.write(COM1 + 1, &[1]);
        isa.serial_input(b"x");
        assert!(isa.take_serial_irq() && !isa.take_serial_irq(), "COM1's edge, once");
    }

    #[test]
    fn byte_registers_ignore_wider_accesses() {
        let mut isa = Isa::new(Vec::new(), true);
        isa.write(rtc::INDEX, &[0x0b]);
        let mut w = [0; 2];
        for port in [COM1 + 5, i8042::COMMAND, pic::MASTER + 1, pit::PORT_B, rtc::DATA] {
            isa.read(port, &mut w);
            assert_eq!(w, [0xff, 0xff], "port {port:#x}");
            assert_eq!(isa.write(port, &[0, 0]), None);
        }
        assert_eq!((isa.unclaimed.reads, isa.unclaimed.writes), (5, 5));
        isa.read(rtc::DATA, &mut w[..1]);
        assert_eq!(w[0], 0x02, "the RTC index survived the wide write");
    }
}
