//! The PC's two cascaded 8259A interrupt controllers (master at 0x20, slave at 0xa0 on the
//! master's IRQ2), emulated in userspace: `rvmx run` injects the vector the master hands out
//! with `KVM_INTERRUPT`. What guests use: ICW1-ICW4 initialization, the mask register, EOI
//! (non-specific and specific), IRR/ISR reads, automatic EOI, fixed priority, edge triggering,
//! and level triggering per input through the edge/level control registers (ELCR, ports
//! 0x4d0/0x4d1, as KVM's i8259 has them).

use super::bus::{BusDevice, Effect};

/// Master command port (data at +1).
pub const MASTER: u16 = 0x20;
/// Slave command port (data at +1).
pub const SLAVE: u16 = 0xa0;
/// The master input the slave is cascaded on.
const CASCADE_IRQ: u8 = 2;
/// The master's ELCR (the slave's at +1).
pub const ELCR: u16 = 0x4d0;
/// ELCR bits that may be set: IRQ 0, 1, 2, 8 and 13 are always edge-triggered (KVM's
/// elcr_mask).
const ELCR_MASK: [u8; 2] = [0xf8, 0xde];
/// The ELCR firmware leaves: the ACPI SCI (IRQ 9) level-triggered, as `rvmx run`'s FADT has it
/// (Linux sets it so, and says so when it was not).
const ELCR_FIRMWARE: [u8; 2] = [0, 1 << (9 - 8)];

/// One 8259A.
#[derive(Clone, Debug, Default)]
struct Chip {
    /// Interrupt request register: inputs that saw an edge and wait.
    irr: u8,
    /// In-service register: delivered, not yet EOI'd.
    isr: u8,
    /// Interrupt mask register.
    imr: u8,
    /// Line levels, to detect edges.
    level: u8,
    /// Vector of input 0 (ICW2, low 3 bits clear).
    base: u8,
    /// Initialization step: 0 = done, else the ICW expected next (2, 3, 4).
    init_step: u8,
    /// ICW1 asked for an ICW4.
    expect_icw4: bool,
    /// ICW1 said single (no cascade, no ICW3).
    single: bool,
    /// ICW4 automatic EOI.
    auto_eoi: bool,
    /// OCW3: a command-port read returns the ISR (else the IRR).
    read_isr: bool,
    /// Level-triggered inputs (ELCR).
    elcr: u8,
}

impl Chip {
    /// Raises or lowers input `irq`: a rising edge requests it, or for a level-triggered
    /// input the level itself.
    fn set_line(&mut self, irq: u8, high: bool) {
        let bit = 1 << irq;
        if self.elcr & bit != 0 {
            if high { self.irr |= bit } else { self.irr &= !bit }
        } else if high && self.level & bit == 0 {
            self.irr |= bit;
        }
        if high { self.level |= bit } else { self.level &= !bit }
    }

    /// The highest-priority request that may interrupt: unmasked, and above every input in
    /// service (input 0 is highest).
    fn pending(&self) -> Option<u8> {
        let req = self.irr & !self.imr;
        (0..8).take_while(|i| self.isr & (1 << i) == 0).find(|i| req & (1 << i) != 0)
    }

    /// INTA: moves `irq` from IRR to ISR (unless automatic EOI) and returns its vector. A
    /// level-triggered request stays while its line is high.
    fn acknowledge(&mut self, irq: u8) -> u8 {
        if self.elcr & (1 << irq) == 0 {
            self.irr &= !(1 << irq);
        }
        if !self.auto_eoi {
            self.isr |= 1 << irq;
        }
        self.base | irq
    }

    fn write_command(&mut self, v: u8) {
        if v & 0x10 != 0 {
            // ICW1: start initialization; IMR and ISR cleared.
            *self = Chip {
                level: self.level, elcr: self.elcr, init_step: 2, expect_icw4: v & 1 != 0, single: v & 2 != 0,
                ..Chip::default()
            };
        } else if v & 0x08 != 0 {
            // OCW3: which register a read returns.
            if v & 0x02 != 0 {
                self.read_isr = v & 0x01 != 0;
            }
        } else {
            // OCW2: EOI.
            match v >> 5 {
                1 => self.isr &= self.isr.wrapping_sub(1), // non-specific: the highest in service
                3 => self.isr &= !(1 << (v & 7)),          // specific
                _ => {}                                     // rotation: not used by PC guests
            }
        }
    }

    fn write_data(&mut self, v: u8) {
        match self.init_step {
            2 => {
                self.base = v & 0xf8;
                self.init_step = if !self.single { 3 } else if self.expect_icw4 { 4 } else { 0 };
            }
            3 => self.init_step = if self.expect_icw4 { 4 } else { 0 },
            4 => {
                self.auto_eoi = v & 0x02 != 0;
                self.init_step = 0;
            }
            _ => self.imr = v,
        }
    }

    fn read_command(&self) -> u8 {
        if self.read_isr { self.isr } else { self.irr }
    }
}

/// The master/slave pair.
#[derive(Clone, Debug)]
pub struct Pic {
    chips: [Chip; 2],
}

impl Default for Pic {
    fn default() -> Self {
        let chip = |i: usize| Chip { elcr: ELCR_FIRMWARE[i], ..Chip::default() };
        Pic { chips: [chip(0), chip(1)] }
    }
}

impl Pic {
    /// Sets the level of ISA line `irq` (0-15).
    pub fn set_irq(&mut self, irq: u8, high: bool) {
        if irq < 8 {
            self.chips[0].set_line(irq, high);
        } else {
            self.chips[1].set_line(irq - 8, high);
        }
        self.cascade();
    }

    /// A rising then falling edge on `irq` (a device that pulses its line).
    pub fn pulse(&mut self, irq: u8) {
        self.set_irq(irq, true);
        self.set_irq(irq, false);
    }

    /// The slave's output is the master's IRQ2 line.
    fn cascade(&mut self) {
        let out = self.chips[1].pending().is_some();
        self.chips[0].set_line(CASCADE_IRQ, out);
    }

    /// Whether the master asks the CPU for an interrupt.
    pub fn has_interrupt(&self) -> bool {
        self.chips[0].pending().is_some()
    }

    /// INTA: the vector to deliver, or `None` if the request went away.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let irq = self.chips[0].pending()?;
        if irq != CASCADE_IRQ {
            return Some(self.chips[0].acknowledge(irq));
        }
        self.chips[0].acknowledge(irq);
        let vector = self.chips[1].pending().map(|s| self.chips[1].acknowledge(s));
        self.cascade();
        // A request that vanished on the slave is its spurious IRQ7.
        Some(vector.unwrap_or(self.chips[1].base | 7))
    }

    /// IN from one of the six ports.
    pub fn read_port(&self, port: u16) -> u8 {
        if let Some(i) = port.checked_sub(ELCR) {
            return self.chips[usize::from(i & 1)].elcr;
        }
        let chip = &self.chips[(port >= SLAVE) as usize];
        if port & 1 == 0 { chip.read_command() } else { chip.imr }
    }

    /// OUT to one of the six ports.
    pub fn write_port(&mut self, port: u16, v: u8) {
        if let Some(i) = port.checked_sub(ELCR) {
            let i = usize::from(i & 1);
            self.chips[i].elcr = v & ELCR_MASK[i];
            return;
        }
        let chip = &mut self.chips[(port >= SLAVE) as usize];
        if port & 1 == 0 { chip.write_command(v) } else { chip.write_data(v) }
        self.cascade();
    }
}

impl BusDevice for Pic {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8], _now: u64) {
        data[0] = self.read_port((base + offset) as u16);
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8], _now: u64) -> Option<Effect> {
        self.write_port((base + offset) as u16, data[0]);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The initialization every PC OS does: vectors 0x20/0x28, cascade on IRQ2.
    fn initialized() -> Pic {
        let mut p = Pic::default();
        for (port, v) in [(0x20, 0x11), (0xa0, 0x11), (0x21, 0x20), (0xa1, 0x28), (0x21, 4), (0xa1, 2), (0x21, 1), (0xa1, 1), (0x21, 0), (0xa1, 0)] {
            p.write_port(port, v);
        }
        p
    }

    #[test]
    fn level_triggered_inputs_follow_the_elcr() {
        let mut p = initialized();
        assert_eq!((p.read_port(ELCR), p.read_port(ELCR + 1)), (0, 0x02), "the SCI is level-triggered");
        p.write_port(ELCR, 0xff);
        p.write_port(ELCR + 1, 0xff);
        assert_eq!((p.read_port(ELCR), p.read_port(ELCR + 1)), (0xf8, 0xde), "IRQ 0-2, 8, 13 stay edge");
        p.write_port(ELCR, 1 << 3);
        p.set_irq(3, true);
        assert_eq!(p.acknowledge(), Some(0x23));
        p.write_port(0x20, 0x20); // EOI
        assert!(p.has_interrupt(), "the line is still high: requested again");
        p.set_irq(3, false);
        assert!(!p.has_interrupt(), "lowered: the request goes");
    }

    #[test]
    fn master_interrupt_and_eoi() {
        let mut p = initialized();
        assert!(!p.has_interrupt());
        p.pulse(0);
        assert!(p.has_interrupt());
        assert_eq!(p.acknowledge(), Some(0x20));
        p.pulse(0);
        assert!(!p.has_interrupt(), "IRQ0 in service blocks another IRQ0");
        p.write_port(0x20, 0x0b); // OCW3: read ISR
        assert_eq!(p.read_port(0x20), 1);
        p.write_port(0x20, 0x20); // non-specific EOI
        assert_eq!(p.acknowledge(), Some(0x20));
    }

    #[test]
    fn priority_masking_and_slave() {
        let mut p = initialized();
        p.write_port(0x21, 0x01); // mask IRQ0
        p.pulse(0);
        p.pulse(4);
        assert_eq!(p.acknowledge(), Some(0x24));
        p.pulse(12);
        assert!(p.has_interrupt(), "IRQ2 (the slave) is above IRQ4 in service");
        assert_eq!(p.acknowledge(), Some(0x2c));
        p.write_port(0x21, 0x00);
        assert_eq!(p.acknowledge(), Some(0x20), "latched while masked, above everything in service");
    }

    #[test]
    fn level_held_high_is_one_edge() {
        let mut p = initialized();
        p.set_irq(4, true);
        assert_eq!(p.acknowledge(), Some(0x24));
        p.write_port(0x20, 0x20);
        p.set_irq(4, true);
        assert!(!p.has_interrupt(), "no new edge");
    }
}
