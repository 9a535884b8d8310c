// SPDX-License-Identifier: GPL-2.0

//! The two cascaded 8259A interrupt controllers of a PC, as KVM emulates them
//! (arch/x86/kvm/i8259.c): edge and level inputs (the ELCR at ports 0x4d0/0x4d1), the
//! initialization words, OCW2's EOIs and rotations, OCW3's register select, poll mode and
//! special mask, auto-EOI, the slave on the master's pin 2, and the INTA cycle that gives the
//! CPU its vector. The state is `struct kvm_pic_state` itself (what `KVM_GET/SET_IRQCHIP`
//! carry). Pure logic, tested on the host; the module holds a VM's pair (irq/pic.rs).
//!
//! Effects that reach outside the pair are left for the caller to collect: the pins whose
//! in-service bit was cleared (KVM's ack notifiers: irqfd resampling, the PIT's reinjection)
//! and whether the output to the CPU rose (a vCPU taking ExtINT must be woken).

/// `struct kvm_pic_state`: one 8259.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PicState {
    /// Input levels last seen, for edge detection.
    pub last_irr: u8,
    /// Interrupt request register.
    pub irr: u8,
    /// Interrupt mask register (OCW1).
    pub imr: u8,
    /// In-service register.
    pub isr: u8,
    /// The pin with the highest priority is `priority_add` (rotation).
    pub priority_add: u8,
    /// Vector of pin 0 (ICW2, low 3 bits clear).
    pub irq_base: u8,
    /// OCW3: reads of the command port return ISR (1) or IRR (0).
    pub read_reg_select: u8,
    /// OCW3 poll command: the next read is a poll.
    pub poll: u8,
    /// OCW3 special mask mode.
    pub special_mask: u8,
    /// Which initialization word comes next (0: initialized).
    pub init_state: u8,
    /// ICW4 auto-EOI.
    pub auto_eoi: u8,
    /// OCW2 rotate in auto-EOI mode.
    pub rotate_on_auto_eoi: u8,
    /// ICW4 special fully nested mode.
    pub special_fully_nested_mode: u8,
    /// ICW1 announced an ICW4.
    pub init4: u8,
    /// Edge/level control (PIIX ELCR): 1 is level-triggered.
    pub elcr: u8,
    /// ELCR bits that can be set (pins 0-2 of the master and 8 and 13 are always edge).
    pub elcr_mask: u8,
}
// SAFETY: `repr(C)` of 16 `u8`s (tested against kvm-bindings): any bit pattern is valid.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for PicState {}
// SAFETY: as above, no padding.
#[cfg(MODULE)]
unsafe impl kernel::transmute::AsBytes for PicState {}

/// Pins of the pair (GSIs 0-15 under the default routing).
pub const PINS: usize = 16;
/// The master's pin the slave is wired to.
const CASCADE: u8 = 2;

/// ELCR masks at reset: KVM's `elcr_mask` values.
const ELCR_MASK: [u8; 2] = [0xf8, 0xde];

/// One of the pair's I/O ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// 0x20/0xa0 (`false`) or 0x21/0xa1 (`true`) of chip 0 (master) or 1 (slave).
    Chip(usize, bool),
    /// 0x4d0/0x4d1: the ELCR of chip 0 or 1.
    Elcr(usize),
}

impl Port {
    /// The port an access of `len` bytes at `port` goes to, if the pair takes it: KVM's
    /// devices span two ports each (0x20, 0xa0, 0x4d0), and an access must lie inside one.
    pub fn decode_access(port: u16, len: u32) -> Option<Self> {
        let base = port & !1;
        let end = u32::from(port).checked_add(len)?;
        if end > u32::from(base).saturating_add(2) {
            return None;
        }
        Self::decode(port)
    }

    /// The port at I/O address `port`, if it is one of the pair's.
    pub fn decode(port: u16) -> Option<Self> {
        match port {
            0x20 | 0x21 => Some(Self::Chip(0, port & 1 != 0)),
            0xa0 | 0xa1 => Some(Self::Chip(1, port & 1 != 0)),
            0x4d0 | 0x4d1 => Some(Self::Elcr(usize::from(port & 1))),
            _ => None,
        }
    }
}

/// The pair, with the line levels each interrupt source holds on each pin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pic {
    /// Master (0) and slave (1).
    pub chips: [PicState; 2],
    /// The master's output to the CPU (INTR).
    pub output: bool,
    /// Per pin, one bit per interrupt source that holds the line high (KVM's `irq_states`).
    sources: [u32; PINS],
    /// Pins whose in-service bit was cleared since the last [`Pic::take_acked`].
    acked: u16,
    /// Pins whose acknowledgement drops interrupt source `.1` from their line at once (irqfd
    /// resamplers: KVM runs their ack notifier inside `pic_clear_isr`, before the PIC looks
    /// at its requests again). Set by the caller before each access.
    resampled: (u16, u32),
    /// The output rose since the last [`Pic::take_wakeup`].
    wakeup: bool,
    /// Pins unmasked in IMR since the last [`Pic::take_unmasked`] (KVM's mask notifiers).
    unmasked: u16,
}

impl Default for Pic {
    fn default() -> Self {
        Self::new()
    }
}

/// The highest priority among `mask` (0 is highest) as `s`'s rotation counts it; 8 if none.
fn priority(s: &PicState, mask: u8) -> u8 {
    if mask == 0 {
        return 8;
    }
    (0..8u8).find(|p| mask & 1 << (p.wrapping_add(s.priority_add) & 7) != 0).unwrap_or(8)
}

/// Sets pin `irq`'s level on one chip: returns 1 if a new request is raised, 0 if it was
/// already pending (coalesced), -1 if the pin is masked (KVM's `pic_set_irq1`).
fn set_irq1(s: &mut PicState, irq: u8, level: bool) -> i32 {
    let mask = 1u8 << (irq & 7);
    let mut ret = 1;
    if s.elcr & mask != 0 {
        if level {
            ret = i32::from(s.irr & mask == 0);
            s.irr |= mask;
            s.last_irr |= mask;
        } else {
            s.irr &= !mask;
            s.last_irr &= !mask;
        }
    } else if level {
        if s.last_irr & mask == 0 {
            ret = i32::from(s.irr & mask == 0);
            s.irr |= mask;
        }
        s.last_irr |= mask;
    } else {
        s.last_irr &= !mask;
    }
    if s.imr & mask != 0 { -1 } else { ret }
}

/// The pin chip `s` (the master if `master`) wants serviced, if any (KVM's `pic_get_irq`).
fn wanted(s: &PicState, master: bool) -> Option<u8> {
    let p = priority(s, s.irr & !s.imr);
    if p == 8 {
        return None;
    }
    let mut in_service = s.isr;
    // Special fully nested mode: the slave's own in-service request does not block it.
    if s.special_fully_nested_mode != 0 && master {
        in_service &= !(1 << CASCADE);
    }
    (p < priority(s, in_service)).then_some(p.wrapping_add(s.priority_add) & 7)
}

impl Pic {
    /// The pair as `KVM_CREATE_IRQCHIP` makes it.
    pub fn new() -> Self {
        let mut chips = [PicState::default(); 2];
        for (c, m) in chips.iter_mut().zip(ELCR_MASK) {
            c.elcr_mask = m;
        }
        Self { chips, output: false, sources: [0; PINS], acked: 0, resampled: (0, 0), wakeup: false, unmasked: 0 }
    }

    /// Chip `c` (0 master, 1 slave; only bit 0 counts).
    fn chip(&self, c: usize) -> &PicState {
        let [master, slave] = &self.chips;
        if c & 1 == 0 { master } else { slave }
    }

    fn chip_mut(&mut self, c: usize) -> &mut PicState {
        let [master, slave] = &mut self.chips;
        if c & 1 == 0 { master } else { slave }
    }

    /// The pins acknowledged (in-service cleared) since the last call, bit `n` for pin `n`.
    pub fn take_acked(&mut self) -> u16 {
        core::mem::take(&mut self.acked)
    }

    /// Whether the output to the CPU rose since the last call.
    pub fn take_wakeup(&mut self) -> bool {
        core::mem::take(&mut self.wakeup)
    }

    /// The pins a guest's OCW1 unmasked since the last call, bit `n` for pin `n`.
    pub fn take_unmasked(&mut self) -> u16 {
        core::mem::take(&mut self.unmasked)
    }

    /// The pins (bit `n` for pin `n`) whose acknowledgement lowers interrupt source `source`'s
    /// level on them before anything else happens (see [`Pic::take_acked`] for the rest).
    pub fn set_resampled(&mut self, pins: u16, source: u32) {
        self.resampled = (pins, source);
    }

    fn clear_isr(&mut self, chip: usize, irq: u8) {
        if let Some(s) = self.chips.get_mut(chip) {
            s.isr &= !(1 << (irq & 7));
        }
        let pin = (irq & 7) | if chip == 0 { 0 } else { 8 };
        self.acked |= 1 << pin;
        if self.resampled.0 & 1 << pin != 0 {
            self.set_irq(u32::from(pin), self.resampled.1, false);
        }
    }

    fn set_output(&mut self, level: bool) {
        if !self.output && level {
            self.wakeup = true;
        }
        self.output = level;
    }

    /// Raises or lowers the master's output after any change (KVM's `pic_update_irq`).
    fn update(&mut self) {
        if wanted(self.chip(1), false).is_some() {
            set_irq1(self.chip_mut(0), CASCADE, true);
            set_irq1(self.chip_mut(0), CASCADE, false);
        }
        let level = wanted(self.chip(0), true).is_some();
        self.set_output(level);
    }

    /// Interrupt source `source` (below 32) sets pin `pin`'s line to `level`; the pin's level
    /// is the OR of its sources. Returns KVM's status: 1 delivered, 0 coalesced, -1 masked.
    pub fn set_irq(&mut self, pin: u32, source: u32, level: bool) -> i32 {
        let (Some(state), Some(bit)) = (self.sources.get_mut(pin as usize), 1u32.checked_shl(source)) else { return -1 };
        if level {
            *state |= bit;
        } else {
            *state &= !bit;
        }
        let line = *state != 0;
        let (chip, irq) = ((pin >> 3) as usize & 1, (pin & 7) as u8);
        let ret = set_irq1(self.chip_mut(chip), irq, line);
        self.update();
        ret
    }

    /// Whether pin `pin`'s line is held high by any source.
    pub fn line(&self, pin: u32) -> bool {
        self.sources.get(pin as usize).is_some_and(|s| *s != 0)
    }

    /// Whether pin `pin` is masked in its chip's IMR.
    pub fn masked(&self, pin: u32) -> bool {
        let chip = self.chip((pin >> 3) as usize);
        chip.imr & 1 << (pin & 7) != 0
    }

    fn intack(&mut self, chip: usize, irq: u8) {
        let s = self.chip_mut(chip);
        let bit = 1u8 << (irq & 7);
        s.isr |= bit;
        // A level-triggered request stays in IRR until its line drops.
        if s.elcr & bit == 0 {
            s.irr &= !bit;
        }
        if s.auto_eoi != 0 {
            if s.rotate_on_auto_eoi != 0 {
                s.priority_add = irq.wrapping_add(1) & 7;
            }
            self.clear_isr(chip, irq);
        }
    }

    /// The INTA cycle: the vector the CPU takes now (spurious IRQ 7 of the master or the slave
    /// if nothing is wanted any more), as KVM's `kvm_pic_read_irq`.
    pub fn read_irq(&mut self) -> u8 {
        self.output = false;
        let vector = match wanted(self.chip(0), true) {
            Some(irq) => {
                self.intack(0, irq);
                if irq == CASCADE {
                    let irq2 = match wanted(self.chip(1), false) {
                        Some(irq2) => {
                            self.intack(1, irq2);
                            irq2
                        }
                        None => 7,
                    };
                    self.chip_mut(1).irq_base.wrapping_add(irq2)
                } else {
                    self.chip_mut(0).irq_base.wrapping_add(irq)
                }
            }
            None => self.chip_mut(0).irq_base.wrapping_add(7),
        };
        self.update();
        vector
    }

    /// ICW1 on chip `chip` (KVM's `kvm_pic_reset`): `extint_taken` tells whether some vCPU's
    /// APIC takes the PIC's interrupts, in which case edge requests pending are acknowledged.
    fn reset(&mut self, chip: usize, extint_taken: impl FnOnce() -> bool) {
        let s = self.chip_mut(chip);
        let edge_irr = s.irr & !s.elcr;
        s.last_irr = 0;
        s.irr &= s.elcr;
        s.imr = 0;
        s.priority_add = 0;
        s.special_mask = 0;
        s.read_reg_select = 0;
        if s.init4 == 0 {
            s.special_fully_nested_mode = 0;
            s.auto_eoi = 0;
        }
        s.init_state = 1;
        if extint_taken() {
            for irq in (0..8).filter(|i| edge_irr & 1 << i != 0) {
                self.clear_isr(chip, irq);
            }
        }
    }

    fn write_command(&mut self, chip: usize, val: u8, extint_taken: impl FnOnce() -> bool) {
        if val & 0x10 != 0 {
            // ICW1 (single mode and level-triggered mode are not emulated, as in KVM).
            self.chip_mut(chip).init4 = val & 1;
            self.reset(chip, extint_taken);
            return;
        }
        if val & 0x08 != 0 {
            // OCW3.
            let s = self.chip_mut(chip);
            if val & 0x04 != 0 {
                s.poll = 1;
            }
            if val & 0x02 != 0 {
                s.read_reg_select = val & 1;
            }
            if val & 0x40 != 0 {
                s.special_mask = (val >> 5) & 1;
            }
            return;
        }
        // OCW2.
        let cmd = val >> 5;
        match cmd {
            0 | 4 => self.chip_mut(chip).rotate_on_auto_eoi = cmd >> 2,
            1 | 5 => {
                let s = self.chip(chip);
                let p = priority(s, s.isr);
                if p != 8 {
                    let irq = p.wrapping_add(s.priority_add) & 7;
                    if cmd == 5 {
                        self.chip_mut(chip).priority_add = irq.wrapping_add(1) & 7;
                    }
                    self.clear_isr(chip, irq);
                    self.update();
                }
            }
            3 => {
                self.clear_isr(chip, val & 7);
                self.update();
            }
            6 => {
                self.chip_mut(chip).priority_add = val.wrapping_add(1) & 7;
                self.update();
            }
            7 => {
                let irq = val & 7;
                self.chip_mut(chip).priority_add = irq.wrapping_add(1) & 7;
                self.clear_isr(chip, irq);
                self.update();
            }
            _ => {}
        }
    }

    fn write_data(&mut self, chip: usize, val: u8) {
        let s = self.chip_mut(chip);
        match s.init_state {
            0 => {
                let cleared = u16::from(s.imr & !val);
                s.imr = val;
                self.unmasked |= if chip & 1 == 0 { cleared } else { cleared << 8 };
                self.update();
            }
            1 => {
                s.irq_base = val & 0xf8;
                s.init_state = 2;
            }
            2 => s.init_state = if s.init4 != 0 { 3 } else { 0 },
            3 => {
                s.special_fully_nested_mode = (val >> 4) & 1;
                s.auto_eoi = (val >> 1) & 1;
                s.init_state = 0;
            }
            _ => {}
        }
    }

    /// A guest's write of `len` bytes of `data` to `port` (one of [`Port::decode`]'s). KVM
    /// takes and ignores writes wider than a byte. `extint_taken` is asked only by an ICW1
    /// (whether some vCPU takes the PIC's interrupts: then pending edges are acknowledged).
    pub fn write(&mut self, port: Port, len: u32, data: u8, extint_taken: impl FnOnce() -> bool) {
        if len != 1 {
            return;
        }
        match port {
            Port::Chip(chip, false) => self.write_command(chip & 1, data, extint_taken),
            Port::Chip(chip, true) => self.write_data(chip & 1, data),
            Port::Elcr(chip) => {
                let s = &mut *self.chip_mut(chip);
                s.elcr = data & s.elcr_mask;
            }
        }
    }

    /// A poll (OCW3 poll command, then a read): acknowledges the request wanted, as KVM's
    /// `pic_poll_read`.
    fn poll_read(&mut self, chip: usize) -> u8 {
        match wanted(self.chip(chip), chip == 0) {
            Some(irq) => {
                if chip == 1 {
                    self.chip_mut(0).isr &= !(1 << CASCADE);
                    self.chip_mut(0).irr &= !(1 << CASCADE);
                }
                self.chip_mut(chip).irr &= !(1 << irq);
                self.clear_isr(chip, irq);
                if chip == 1 || irq != CASCADE {
                    self.update();
                }
                irq | 0x80
            }
            None => {
                self.update();
                0x07
            }
        }
    }

    /// A guest's read of `len` bytes from `port`: the byte (KVM answers 0 to wider reads).
    pub fn read(&mut self, port: Port, len: u32) -> u8 {
        if len != 1 {
            return 0;
        }
        match port {
            Port::Chip(chip, odd) => {
                let chip = chip & 1;
                if self.chip_mut(chip).poll != 0 {
                    let v = self.poll_read(chip);
                    self.chip_mut(chip).poll = 0;
                    return v;
                }
                let s = self.chip(chip);
                match (odd, s.read_reg_select != 0) {
                    (true, _) => s.imr,
                    (false, true) => s.isr,
                    (false, false) => s.irr,
                }
            }
            Port::Elcr(chip) => self.chip(chip).elcr,
        }
    }

    /// `KVM_SET_IRQCHIP` of chip `chip`: the state as given (KVM copies it whole), then the
    /// output recomputed.
    pub fn set_state(&mut self, chip: usize, state: &PicState) {
        *self.chip_mut(chip) = *state;
        self.update();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_kvm_bindings() {
        use core::mem::{offset_of, size_of};
        use kvm_bindings as kb;
        assert_eq!(size_of::<PicState>(), size_of::<kb::kvm_pic_state>());
        assert_eq!(offset_of!(PicState, elcr_mask), offset_of!(kb::kvm_pic_state, elcr_mask));
        assert_eq!(offset_of!(PicState, init4), offset_of!(kb::kvm_pic_state, init4));
    }

    /// Linux's init sequence: ICW1-4 on both chips, vectors 0x30 and 0x38, all unmasked.
    fn initialized() -> Pic {
        let mut p = Pic::new();
        for (chip, base, icw3) in [(0, 0x30, 0x04), (1, 0x38, 0x02)] {
            p.write(Port::Chip(chip, false), 1, 0x11, || true);
            p.write(Port::Chip(chip, true), 1, base, || true);
            p.write(Port::Chip(chip, true), 1, icw3, || true);
            p.write(Port::Chip(chip, true), 1, 0x01, || true);
            p.write(Port::Chip(chip, true), 1, 0x00, || true);
        }
        p
    }

    #[test]
    fn ports_decode() {
        assert_eq!(Port::decode(0x21), Some(Port::Chip(0, true)));
        assert_eq!(Port::decode(0xa0), Some(Port::Chip(1, false)));
        assert_eq!(Port::decode(0x4d1), Some(Port::Elcr(1)));
        assert_eq!(Port::decode(0x22), None);
        assert_eq!(Port::decode_access(0x20, 2), Some(Port::Chip(0, false)));
        assert_eq!(Port::decode_access(0x21, 2), None, "runs past the master's two ports");
        assert_eq!(Port::decode_access(0x4d0, 4), None);
        assert_eq!(Port::decode_access(0xa1, 1), Some(Port::Chip(1, true)));
    }

    #[test]
    fn an_edge_is_delivered_once_and_acknowledged_by_eoi() {
        let mut p = initialized();
        assert!(!p.output);
        assert_eq!(p.set_irq(0, 0, true), 1);
        assert!(p.output && p.take_wakeup());
        assert_eq!(p.set_irq(0, 0, true), 1, "held high: no new edge, and KVM says 1");
        p.set_irq(0, 0, false);
        assert_eq!(p.set_irq(0, 0, true), 0, "a second edge before INTA is coalesced");
        assert_eq!(p.read_irq(), 0x30);
        assert!(!p.output);
        assert_eq!(p.chips[0].isr, 1);
        p.set_irq(0, 0, false);
        assert_eq!(p.set_irq(0, 0, true), 1);
        assert!(!p.output, "IRQ 0 in service blocks itself");
        p.write(Port::Chip(0, false), 1, 0x20, || true); // non-specific EOI
        assert_eq!(p.take_acked(), 1);
        assert!(p.output);
        assert_eq!(p.read_irq(), 0x30);
    }

    #[test]
    fn the_slave_cascades_through_pin_2() {
        let mut p = initialized();
        assert_eq!(p.set_irq(12, 0, true), 1);
        assert!(p.output);
        assert_eq!(p.read_irq(), 0x3c);
        assert_eq!((p.chips[0].isr, p.chips[1].isr), (1 << 2, 1 << 4));
        p.write(Port::Chip(1, false), 1, 0x20, || true);
        p.write(Port::Chip(0, false), 1, 0x20, || true);
        assert_eq!(p.take_acked(), 1 << 12 | 1 << 2);
        assert_eq!((p.chips[0].isr, p.chips[1].isr), (0, 0));
    }

    #[test]
    fn masks_priorities_and_spurious_interrupts() {
        let mut p = initialized();
        let _ = p.take_unmasked();
        p.write(Port::Chip(0, true), 1, 0x01, || true);
        assert_eq!(p.take_unmasked(), 0);
        assert_eq!(p.set_irq(0, 0, true), -1, "masked");
        assert!(!p.output);
        assert_eq!(p.read(Port::Chip(0, true), 1), 0x01);
        p.set_irq(3, 0, true);
        p.set_irq(1, 0, true);
        assert_eq!(p.read_irq(), 0x31, "lower pin first");
        // Nothing wanted: the spurious vector of the master.
        let mut q = initialized();
        assert_eq!(q.read_irq(), 0x37);
        // Reads of IRR and ISR through OCW3.
        assert_eq!(p.read(Port::Chip(0, false), 1), 0x09, "IRR: pins 0 and 3");
        p.write(Port::Chip(0, false), 1, 0x0b, || true);
        assert_eq!(p.read(Port::Chip(0, false), 1), 0x02, "ISR: pin 1");
        assert_eq!(p.read(Port::Chip(0, false), 2), 0, "wider reads are 0");
        p.write(Port::Chip(1, true), 1, 0xff, || true);
        p.write(Port::Chip(1, true), 1, 0xfa, || true);
        assert_eq!(p.take_unmasked(), 0x500, "slave pins 8 and 10 unmasked");
    }

    #[test]
    fn level_triggered_pins_stay_requested_while_high() {
        let mut p = initialized();
        p.write(Port::Elcr(1), 1, 0xff, || true);
        assert_eq!(p.read(Port::Elcr(1), 1), 0xde, "ELCR mask");
        assert_eq!(p.set_irq(9, 0, true), 1);
        assert_eq!(p.read_irq(), 0x39);
        assert_eq!(p.chips[1].irr & 2, 2, "level stays in IRR");
        // Two sources on one line: it drops only when both do.
        p.set_irq(9, 1, true);
        p.set_irq(9, 0, false);
        assert!(p.line(9));
        p.set_irq(9, 1, false);
        assert!(!p.line(9));
        assert_eq!(p.chips[1].irr & 2, 0);
        assert_eq!(p.set_irq(40, 0, true), -1, "no such pin");
        assert_eq!(p.set_irq(1, 40, true), -1, "no such source");
    }

    #[test]
    fn a_resampled_level_pin_is_lowered_before_the_pic_looks_again() {
        // IRQ 11 (slave pin 3), level-triggered, held by source 1 (a resampling irqfd).
        for resampled in [false, true] {
            let mut p = initialized();
            p.write(Port::Elcr(1), 1, 1 << 3, || true);
            p.write(Port::Chip(1, true), 1, 0, || true);
            p.set_resampled(if resampled { 1 << 11 } else { 0 }, 1);
            p.set_irq(11, 1, true);
            assert_eq!(p.read_irq(), 0x3b);
            p.write(Port::Chip(1, false), 1, 0x20, || true); // slave EOI
            p.write(Port::Chip(0, false), 1, 0x20, || true); // master EOI
            assert_eq!(p.take_acked(), 1 << 11 | 1 << 2);
            if resampled {
                // KVM's order: the line dropped at the slave's EOI, so nothing is wanted.
                assert!(!p.output, "no spurious IRQ 15");
                assert!(!p.line(11));
            } else {
                assert!(p.output, "the level line is still high: wanted again");
                assert_eq!(p.read_irq(), 0x3b);
            }
        }
    }

    #[test]
    fn auto_eoi_rotation_and_poll() {
        let mut p = Pic::new();
        p.write(Port::Chip(0, false), 1, 0x11, || true);
        p.write(Port::Chip(0, true), 1, 0x08, || true);
        p.write(Port::Chip(0, true), 1, 0x04, || true);
        p.write(Port::Chip(0, true), 1, 0x03, || true); // auto-EOI
        p.write(Port::Chip(0, true), 1, 0x00, || true);
        p.write(Port::Chip(0, false), 1, 0x80, || true); // rotate in auto-EOI mode
        p.set_irq(5, 0, true);
        assert_eq!(p.read_irq(), 0x0d);
        assert_eq!(p.chips[0].isr, 0, "auto-EOI");
        assert_eq!(p.chips[0].priority_add, 6);
        assert_eq!(p.take_acked(), 1 << 5);
        // Poll: OCW3 with P, then a read acknowledges the request.
        p.set_irq(6, 0, true);
        p.write(Port::Chip(0, false), 1, 0x0c, || true);
        assert_eq!(p.read(Port::Chip(0, false), 1), 0x86);
        assert_eq!(p.chips[0].poll, 0);
        p.write(Port::Chip(0, false), 1, 0x0c, || true);
        assert_eq!(p.read(Port::Chip(0, false), 1), 0x07, "nothing wanted");
    }

    #[test]
    fn icw1_resets_and_drops_edge_requests() {
        let mut p = initialized();
        p.set_irq(4, 0, true);
        p.write(Port::Chip(0, false), 1, 0x11, || true);
        assert_eq!((p.chips[0].irr & 0x10, p.chips[0].init_state), (0, 1));
        assert_eq!(p.take_acked(), 1 << 4, "the edge acknowledged where a CPU takes ExtINT");
        p.write(Port::Chip(0, true), 1, 0x20, || true);
        assert_eq!(p.chips[0].irq_base, 0x20);
        p.write(Port::Chip(0, true), 1, 0x04, || true);
        assert_eq!(p.chips[0].init_state, 3);
        p.write(Port::Chip(0, true), 1, 0x01, || true);
        assert_eq!(p.chips[0].init_state, 0);
    }
}
