//! The PC's 8254 interval timer (ports 0x40-0x43) and the speaker gate at port 0x61, emulated
//! in userspace against the host's clock. Counter 0 drives IRQ0 (modes 0, 2 and 3); counter 2
//! is gated by port 0x61 and its output read back there, as timer calibration loops use it.
//! Time is a number of nanoseconds the caller passes in, so the model is tested without sleeping.

use super::bus::{BusDevice, Effect};

/// Counter 0's port; counters 1 and 2 follow, the control word is at +3.
pub const BASE: u16 = 0x40;
/// The control word port.
pub const CONTROL: u16 = 0x43;
/// NMI status and control: speaker gate (bit 0), speaker data (1), OUT2 (5).
pub const PORT_B: u16 = 0x61;
/// The 8254's input clock.
pub const HZ: u64 = 1_193_182;

/// One counter.
#[derive(Clone, Debug, Default)]
struct Counter {
    /// The count written (0 means 65536).
    reload: u32,
    /// Mode 0-5 (6 and 7 alias 2 and 3).
    mode: u8,
    /// Access: 1 low byte, 2 high byte, 3 low then high.
    access: u8,
    /// The low byte of a low-then-high write, waiting for the high one.
    write_low: Option<u8>,
    /// Reading the high byte next (low-then-high reads).
    read_high: bool,
    /// A latched count, read before the live one.
    latched: Option<u16>,
    /// When counting started (ns), if it has.
    start: Option<u64>,
    /// Periods of counter 0 already turned into IRQ0 edges.
    fired: u64,
}

impl Counter {
    /// Input clock ticks since counting started.
    fn ticks(&self, now: u64) -> u64 {
        self.start.map_or(0, |s| (now.saturating_sub(s) as u128 * HZ as u128 / 1_000_000_000) as u64)
    }

    fn periodic(&self) -> bool {
        matches!(self.mode & 3, 2 | 3) // modes 2, 3 and their aliases 6, 7
    }

    /// The current count.
    fn count(&self, now: u64) -> u16 {
        let t = self.ticks(now);
        let r = self.reload as u64;
        let c = if self.periodic() { r - t % r } else { r.saturating_sub(t) };
        c as u16 // 65536 reads as 0
    }

    /// OUT: high after the terminal count in mode 0; a square wave in mode 3; high but for
    /// the last tick of each period in mode 2.
    fn out(&self, now: u64) -> bool {
        let (t, r) = (self.ticks(now), self.reload as u64);
        match self.mode {
            0 | 1 | 4 | 5 => self.start.is_some() && t >= r,
            3 | 7 => t % r < r.div_ceil(2),
            _ => t % r != r - 1,
        }
    }

    /// Whole periods (mode 2/3) or terminal counts (mode 0) reached by `now`.
    fn periods(&self, now: u64) -> u64 {
        if self.start.is_none() {
            return 0;
        }
        let t = self.ticks(now);
        let r = self.reload as u64;
        if self.periodic() { t / r } else { (t >= r) as u64 }
    }

    /// When the next period (or the terminal count) ends, in ns.
    fn next_deadline(&self) -> Option<u64> {
        let start = self.start?;
        if !self.periodic() && self.fired > 0 {
            return None;
        }
        let ticks = (self.fired + 1) * self.reload as u64;
        Some(start + (ticks as u128 * 1_000_000_000 / HZ as u128) as u64 + 1)
    }

    fn write(&mut self, v: u8, now: u64) {
        let reload = match (self.access, self.write_low) {
            (1, _) => v as u32,
            (2, _) => (v as u32) << 8,
            (_, None) => {
                self.write_low = Some(v);
                return;
            }
            (_, Some(low)) => {
                self.write_low = None;
                (v as u32) << 8 | low as u32
            }
        };
        self.reload = if reload == 0 { 0x10000 } else { reload };
        self.start = Some(now);
        self.fired = 0;
    }

    fn read(&mut self, now: u64) -> u8 {
        let v = self.latched.unwrap_or_else(|| self.count(now));
        let byte = match self.access {
            1 => v as u8,
            2 => (v >> 8) as u8,
            _ if self.read_high => (v >> 8) as u8,
            _ => v as u8,
        };
        if self.access == 3 {
            self.read_high = !self.read_high;
        }
        if self.access != 3 || !self.read_high {
            self.latched = None;
        }
        byte
    }
}

/// The three counters and port 0x61.
#[derive(Clone, Debug, Default)]
pub struct Pit {
    counters: [Counter; 3],
    /// Port 0x61 bits 0 (counter 2's gate) and 1 (speaker data).
    port_b: u8,
    /// Bit 4 of port 0x61 toggles on each read (the DRAM refresh BIOSes wait on).
    refresh: bool,
}

impl Pit {
    /// IN from 0x40-0x43 or 0x61.
    pub fn read_port(&mut self, port: u16, now: u64) -> u8 {
        match port {
            BASE..=0x42 => self.counters[(port - BASE) as usize].read(now),
            PORT_B => {
                self.refresh = !self.refresh;
                let out2 = self.port_b & 1 != 0 && self.counters[2].out(now);
                self.port_b & 3 | (self.refresh as u8) << 4 | (out2 as u8) << 5
            }
            _ => 0xff,
        }
    }

    /// OUT to 0x40-0x43 or 0x61.
    pub fn write_port(&mut self, port: u16, v: u8, now: u64) {
        match port {
            BASE..=0x42 => self.counters[(port - BASE) as usize].write(v, now),
            CONTROL if v >> 6 == 3 => {
                // Read-back: latch the counts of the counters selected in bits 1-3 (bit 5 clear).
                let counts = v & 0x20 == 0;
                for i in (0..3).filter(|i| counts && v & (2 << i) != 0) {
                    let c = &mut self.counters[i];
                    c.latched.get_or_insert(c.count(now));
                }
            }
            CONTROL => {
                let c = &mut self.counters[(v >> 6) as usize];
                if (v >> 4) & 3 == 0 {
                    c.latched.get_or_insert(c.count(now)); // counter latch command
                } else {
                    *c = Counter { access: (v >> 4) & 3, mode: (v >> 1) & 7, ..Counter::default() };
                }
            }
            PORT_B => {
                // Raising counter 2's gate restarts its count (modes 0 and 2/3 alike).
                if v & 1 != 0 && self.port_b & 1 == 0 && self.counters[2].start.is_some() {
                    self.counters[2].start = Some(now);
                }
                self.port_b = v & 3;
            }
            _ => {}
        }
    }

    /// IRQ0 edges counter 0 produced up to `now` and not reported yet (at most a few: a guest
    /// that did not run for a while gets a short burst, not thousands).
    pub fn irq0_edges(&mut self, now: u64) -> u64 {
        let c = &mut self.counters[0];
        let periods = c.periods(now);
        let new = periods.saturating_sub(c.fired);
        c.fired = periods;
        new.min(4)
    }

    /// When counter 0 next raises IRQ0 (ns), if it will.
    pub fn next_irq0(&self) -> Option<u64> {
        self.counters[0].next_deadline()
    }
}

impl BusDevice for Pit {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8], now: u64) {
        data[0] = self.read_port((base + offset) as u16, now);
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8], now: u64) -> Option<Effect> {
        self.write_port((base + offset) as u16, data[0], now);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Counter 0, mode 2, low-then-high access, `count`.
    fn periodic(count: u16) -> Pit {
        let mut p = Pit::default();
        p.write_port(CONTROL, 0x34, 0);
        p.write_port(BASE, count as u8, 0);
        p.write_port(BASE, (count >> 8) as u8, 0);
        p
    }

    #[test]
    fn rate_generator_raises_irq0_each_period() {
        let mut p = periodic(11932); // 100 Hz
        assert_eq!(p.irq0_edges(5 * MS), 0);
        assert_eq!(p.irq0_edges(11 * MS), 1);
        assert_eq!(p.irq0_edges(31 * MS), 2);
        assert_eq!(p.irq0_edges(10_000 * MS), 4, "a burst is capped");
        let next = p.next_irq0().unwrap();
        assert!(next > 10_000 * MS && next <= 10_010 * MS + 1);
    }

    #[test]
    fn counts_down_and_latches() {
        let mut p = periodic(0); // 65536
        let read = |p: &mut Pit, now| u16::from_le_bytes([p.read_port(BASE, now), p.read_port(BASE, now)]);
        assert_eq!(read(&mut p, 0), 0, "65536 reads as 0 at the start");
        let c = read(&mut p, MS);
        assert_eq!(c, (65536 - HZ / 1000) as u16);
        p.write_port(CONTROL, 0x00, 2 * MS); // latch counter 0
        let latched = read(&mut p, 50 * MS);
        assert_eq!(latched, (65536 - 2 * HZ / 1000) as u16, "the latched value, not the live one");
    }

    #[test]
    fn one_shot_and_counter_two_through_port_b() {
        let mut p = Pit::default();
        p.write_port(CONTROL, 0x30, 0); // counter 0, mode 0
        p.write_port(BASE, 0xff, 0);
        p.write_port(BASE, 0xff, 0);
        assert_eq!(p.irq0_edges(100 * MS), 1);
        assert_eq!(p.irq0_edges(200 * MS), 0, "once");
        assert_eq!(p.next_irq0(), None);
        p.write_port(PORT_B, 1, 0); // gate 2 on
        p.write_port(CONTROL, 0xb0, 0); // counter 2, mode 0, low/high
        p.write_port(0x42, 100, 0);
        p.write_port(0x42, 0, 0);
        assert_eq!(p.read_port(PORT_B, 0) & 0x20, 0, "OUT2 low while counting");
        assert_ne!(p.read_port(PORT_B, MS) & 0x20, 0, "OUT2 high after 100 ticks");
    }
}
