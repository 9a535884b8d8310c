//! The ACPI PM1 registers of a legacy (not hardware-reduced) ACPI platform, as the FADT of
//! `boot/acpi.rs` describes them: the event block (status, enable) and the control block,
//! whose write of SLP_EN with `\_S5`'s SLP_TYP powers the machine off (Linux's `poweroff`).
//! SCI_EN reads as set: the platform is always in ACPI mode (the FADT has no SMI command
//! port). No event ever becomes pending, so the SCI is never raised.

use super::bus::{BusDevice, Effect};

/// PM1a event block: PM1_STS (16 bits), then PM1_EN (16 bits).
pub const EVENT: u16 = 0x600;
pub const EVENT_LEN: u8 = 4;
/// PM1a control block: PM1_CNT (16 bits).
pub const CONTROL: u16 = 0x604;
pub const CONTROL_LEN: u8 = 2;
/// The SLP_TYP value of S5 (soft off), which the DSDT's `\_S5` gives.
pub const SOFT_OFF: u8 = 5;

/// PM1_CNT bits.
const SCI_EN: u16 = 1 << 0;
const SLP_TYP_SHIFT: u16 = 10;
const SLP_TYP_MASK: u16 = 7 << SLP_TYP_SHIFT;
const SLP_EN: u16 = 1 << 13;

/// The registers.
#[derive(Default)]
pub struct AcpiPm {
    enable: u16,
    control: u16,
}

impl AcpiPm {
    /// The 16-bit register holding `port`'s byte, and that byte's shift; `None` for PM1_STS
    /// (nothing is ever pending: it reads 0, and its write-1-to-clear bits change nothing).
    fn register(&mut self, port: u64) -> Option<(&mut u16, u32)> {
        let shift = (port & 1) as u32 * 8;
        match port.checked_sub(EVENT.into())? {
            2 | 3 => Some((&mut self.enable, shift)),
            4 | 5 => Some((&mut self.control, shift)),
            _ => None,
        }
    }
}

impl BusDevice for AcpiPm {
    fn claims(&self, _offset: u64, len: usize, _write: bool) -> bool {
        matches!(len, 1 | 2 | 4)
    }

    fn read(&mut self, base: u64, offset: u64, data: &mut [u8], _now: u64) {
        for (i, b) in data.iter_mut().enumerate() {
            let port = base + offset + i as u64;
            *b = match self.register(port) {
                Some((r, shift)) => {
                    let v = if port >= u64::from(CONTROL) { *r | SCI_EN } else { *r };
                    (v >> shift) as u8
                }
                None => 0,
            };
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8], _now: u64) -> Option<Effect> {
        for (i, b) in data.iter().enumerate() {
            if let Some((r, shift)) = self.register(base + offset + i as u64) {
                *r = *r & !(0xff << shift) | u16::from(*b) << shift;
            }
        }
        let sleep = self.control & SLP_EN != 0;
        self.control &= !SLP_EN; // write-only: reads as 0
        let slp_typ = (self.control & SLP_TYP_MASK) >> SLP_TYP_SHIFT;
        (sleep && slp_typ == u16::from(SOFT_OFF)).then_some(Effect::PowerOff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write16(pm: &mut AcpiPm, port: u16, v: u16) -> Option<Effect> {
        pm.write(u64::from(EVENT), u64::from(port - EVENT), &v.to_le_bytes(), 0)
    }
    fn read16(pm: &mut AcpiPm, port: u16) -> u16 {
        let mut d = [0; 2];
        pm.read(u64::from(EVENT), u64::from(port - EVENT), &mut d, 0);
        u16::from_le_bytes(d)
    }

    #[test]
    fn always_in_acpi_mode_and_nothing_pending() {
        let mut pm = AcpiPm::default();
        assert_eq!(read16(&mut pm, CONTROL) & SCI_EN, SCI_EN);
        assert_eq!(write16(&mut pm, EVENT, 0xffff), None);
        assert_eq!(read16(&mut pm, EVENT), 0);
        write16(&mut pm, EVENT + 2, 0x0120);
        assert_eq!(read16(&mut pm, EVENT + 2), 0x0120);
    }

    #[test]
    fn s5_with_slp_en_powers_off() {
        let mut pm = AcpiPm::default();
        let typ = u16::from(SOFT_OFF) << SLP_TYP_SHIFT;
        assert_eq!(write16(&mut pm, CONTROL, typ), None, "SLP_TYP alone");
        assert_eq!(write16(&mut pm, CONTROL, 1 << SLP_TYP_SHIFT | SLP_EN), None, "S1 is not offered");
        assert_eq!(read16(&mut pm, CONTROL) & SLP_EN, 0, "SLP_EN reads as 0");
        assert_eq!(write16(&mut pm, CONTROL, typ | SLP_EN), Some(Effect::PowerOff));
        // Byte writes, the high byte (SLP_EN and SLP_TYP) last.
        let mut pm = AcpiPm::default();
        let v = (typ | SLP_EN).to_le_bytes();
        assert_eq!(pm.write(u64::from(EVENT), 4, &v[..1], 0), None);
        assert_eq!(pm.write(u64::from(EVENT), 5, &v[1..], 0), Some(Effect::PowerOff));
    }
}
