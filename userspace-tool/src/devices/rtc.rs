//! The CMOS real-time clock (MC146818) at ports 0x70 (index) and 0x71 (data): the time of day
//! from the host, in BCD and 24-hour mode, never mid-update. Enough for a guest's boot-time
//! clock read; no alarms or periodic interrupts.

use super::bus::{BusDevice, Effect};

/// Index port (bit 7 is the NMI mask, ignored).
pub const INDEX: u16 = 0x70;
/// Data port.
pub const DATA: u16 = 0x71;
/// Its ISA interrupt line, as wired on a PC (this clock never raises it).
pub const IRQ: u8 = 8;

#[derive(Default)]
pub struct Rtc {
    index: u8,
}

const fn bcd(v: u64) -> u8 {
    (((v / 10) << 4) | (v % 10)) as u8
}

impl Rtc {
    pub fn write_port(&mut self, port: u16, v: u8) {
        if port == INDEX {
            self.index = v & 0x7f;
        }
    }

    /// Register `index` at `unix` seconds since 1970 (UTC).
    pub fn read_port(&self, port: u16, unix: u64) -> u8 {
        if port == INDEX {
            return self.index;
        }
        let (days, secs) = (unix / 86400, unix % 86400);
        let (y, m, d) = civil_from_days(days);
        match self.index {
            0x00 => bcd(secs % 60),
            0x02 => bcd(secs / 60 % 60),
            0x04 => bcd(secs / 3600),
            0x06 => bcd((days + 4) % 7 + 1), // 1970-01-01 was a Thursday (5)
            0x07 => bcd(d),
            0x08 => bcd(m),
            0x09 => bcd(y % 100),
            0x32 => bcd(y / 100),
            0x0a => 0x26, // 32.768 kHz base, 1024 Hz rate, no update in progress
            0x0b => 0x02, // 24-hour, BCD, no interrupts
            0x0c => 0x00,
            0x0d => 0x80, // RAM and time valid
            _ => 0,
        }
    }
}

impl BusDevice for Rtc {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8], _now: u64) {
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        data[0] = self.read_port((base + offset) as u16, unix);
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8], _now: u64) -> Option<Effect> {
        self.write_port((base + offset) as u16, data[0]);
        None
    }
}

/// (year, month, day) of `days` since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + (m <= 2) as u64, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_of_day_in_bcd() {
        let mut rtc = Rtc::default();
        let t = 1_767_225_600 + 13 * 3600 + 45 * 60 + 7; // 2026-01-01 13:45:07 UTC, a Thursday
        let reg = |rtc: &mut Rtc, r: u8| {
            rtc.write_port(INDEX, r);
            rtc.read_port(DATA, t)
        };
        assert_eq!([0, 2, 4].map(|r| reg(&mut rtc, r)), [0x07, 0x45, 0x13]);
        assert_eq!([7, 8, 9, 0x32].map(|r| reg(&mut rtc, r)), [0x01, 0x01, 0x26, 0x20]);
        assert_eq!(reg(&mut rtc, 6), 5, "Thursday");
        assert_eq!(reg(&mut rtc, 0x0a) & 0x80, 0, "never mid-update");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }
}
