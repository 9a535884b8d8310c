// SPDX-License-Identifier: GPL-2.0

//! The 8254 programmable interval timer of `KVM_CREATE_PIT2`, as KVM emulates it
//! (arch/x86/kvm/i8254.c): three channels at ports 0x40-0x42 with the mode/command port 0x43
//! (modes 0-5, LSB/MSB/word access, counter latch and read-back), the speaker port 0x61's gate
//! and data bits for channel 2, and the state `KVM_GET/SET_PIT2` carry. Channel 0 drives IRQ 0
//! from a host timer: what the model asks of that timer comes back as a [`Timer`] command.
//! Pure logic, tested on the host; time is given by the caller in nanoseconds (the host's
//! monotonic clock, and for channel 0 the time its timer has run).

/// The PIT's input clock, in Hz (`KVM_PIT_FREQ`).
pub const FREQ: u64 = 1_193_182;
/// `KVM_PIT_FLAGS_HPET_LEGACY`: the HPET took over IRQ 0; channel 0 does not count.
pub const FLAGS_HPET_LEGACY: u32 = 1;
/// `KVM_PIT_FLAGS_SPEAKER_DATA_ON`: port 0x61 bit 1.
pub const FLAGS_SPEAKER_DATA_ON: u32 = 2;
/// KVM's `min_timer_period_us` default: periodic timers no faster than this.
pub const MIN_PERIOD_NS: i64 = 200_000;

/// Read/write states (`RW_STATE_*`; the others, and 1, are LSB only).
const RW_MSB: u8 = 2;
const RW_WORD0: u8 = 3;
const RW_WORD1: u8 = 4;

/// `struct kvm_pit_channel_state`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelState {
    /// Initial count (1-0x10000).
    pub count: u32,
    /// The count latched by a latch command.
    pub latched_count: u16,
    /// Which bytes of `latched_count` remain to be read (an `RW_STATE_*`; 0: none).
    pub count_latched: u8,
    /// A read-back latched `status`.
    pub status_latched: u8,
    /// The latched status byte.
    pub status: u8,
    /// The next byte a read gives.
    pub read_state: u8,
    /// The next byte a write takes.
    pub write_state: u8,
    /// The low byte of a word being written.
    pub write_latch: u8,
    /// Access mode of the last command (1 LSB, 2 MSB, 3 word).
    pub rw_mode: u8,
    /// Counting mode 0-5 (0xff: not programmed since reset).
    pub mode: u8,
    /// BCD counting (not emulated: binary, as KVM).
    pub bcd: u8,
    /// The gate input.
    pub gate: u8,
    /// When the count was loaded (host monotonic ns; channels 1 and 2).
    pub count_load_time: i64,
}

/// `struct kvm_pit_state2`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PitState2 {
    /// The three channels.
    pub channels: [ChannelState; 3],
    /// `FLAGS_*`.
    pub flags: u32,
    /// Zero.
    pub reserved: [u32; 9],
}
// SAFETY: `repr(C)` of integers; the layout has no implicit padding (tested against
// kvm-bindings' sizes and offsets): any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for PitState2 {}
// SAFETY: as above.
#[cfg(MODULE)]
unsafe impl kernel::transmute::AsBytes for PitState2 {}

/// `struct kvm_pit_state` (`KVM_GET/SET_PIT`): the channels alone.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PitState {
    /// The three channels.
    pub channels: [ChannelState; 3],
}
// SAFETY: `repr(C)` of integers without padding (tested against kvm-bindings).
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for PitState {}
// SAFETY: as above.
#[cfg(MODULE)]
unsafe impl kernel::transmute::AsBytes for PitState {}

/// `struct kvm_pit_config` (`KVM_CREATE_PIT2`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PitConfig {
    /// `KVM_PIT_SPEAKER_DUMMY`.
    pub flags: u32,
    /// Padding.
    pub pad: [u32; 15],
}
// SAFETY: `repr(C)` of `u32`s.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for PitConfig {}

/// `struct kvm_reinject_control`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReinjectControl {
    /// Reinject missed ticks (KVM's default).
    pub pit_reinject: u8,
    /// Padding.
    pub reserved: [u8; 31],
}
// SAFETY: `repr(C)` of bytes.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for ReinjectControl {}

/// What channel 0's host timer must do after a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Nothing changed.
    Keep,
    /// Stop it.
    Stop,
    /// (Re)start it: first expiry in `first_ns`, then every `period_ns` if periodic.
    Start {
        /// Nanoseconds to the first expiry.
        first_ns: i64,
        /// The period, if periodic (at least [`MIN_PERIOD_NS`]).
        period_ns: Option<i64>,
    },
}

/// The time a counter reads: now, and how long channel 0's timer has run in its period.
#[derive(Clone, Copy, Debug, Default)]
pub struct Now {
    /// Host monotonic time, ns.
    pub ns: i64,
    /// Channel 0: the period elapsed so far (`period - remaining`; 0 without a timer).
    pub ch0_elapsed: i64,
}

/// The PIT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pit {
    /// Channels and flags as `KVM_GET_PIT2` reports them.
    pub state: PitState2,
    /// Whether an in-kernel IOAPIC exists (KVM arms channel 0's timer only then).
    ioapic: bool,
}

/// `ns * FREQ / 1e9`: PIT ticks in `ns` (negative times count as 0). In 64 bits (the kernel
/// has no 128-bit division): whole seconds and the rest apart, neither product overflows.
fn ticks(ns: i64) -> u64 {
    let ns = u64::try_from(ns).unwrap_or(0);
    let (secs, rest) = (ns / 1_000_000_000, ns % 1_000_000_000);
    secs.saturating_mul(FREQ).saturating_add(rest.saturating_mul(FREQ) / 1_000_000_000)
}

/// `count` PIT ticks in ns (`count` is at most 0x10000: the product fits).
fn ns_of(count: u32) -> i64 {
    let ns = u64::from(count).saturating_mul(1_000_000_000) / FREQ;
    i64::try_from(ns).unwrap_or(i64::MAX)
}

impl Pit {
    /// The PIT as `KVM_CREATE_PIT2` makes it (KVM's `kvm_pit_reset`): channels unprogrammed
    /// (mode 0xff), counts 0x10000, gates 1 but channel 2's. `ioapic`: the VM's IOAPIC is
    /// in the kernel.
    pub fn new(now: i64, ioapic: bool) -> Self {
        let mut p = Self { state: PitState2::default(), ioapic };
        for (i, c) in p.state.channels.iter_mut().enumerate() {
            c.mode = 0xff;
            c.gate = u8::from(i != 2);
        }
        for ch in 0..3 {
            let _ = p.load_count(ch, 0, now);
        }
        p
    }

    fn ch(&self, ch: usize) -> &ChannelState {
        let [a, b, c] = &self.state.channels;
        match ch {
            0 => a,
            1 => b,
            _ => c,
        }
    }

    fn ch_mut(&mut self, ch: usize) -> &mut ChannelState {
        let [a, b, c] = &mut self.state.channels;
        match ch {
            0 => a,
            1 => b,
            _ => c,
        }
    }

    fn elapsed(&self, ch: usize, now: Now) -> i64 {
        if ch == 0 { now.ch0_elapsed } else { now.ns.saturating_sub(self.ch(ch).count_load_time) }
    }

    /// The counter's value now (KVM's `pit_get_count`).
    fn count(&self, ch: usize, now: Now) -> u32 {
        let c = self.ch(ch);
        let d = ticks(self.elapsed(ch, now));
        let count = u64::from(c.count);
        match c.mode {
            0 | 1 | 4 | 5 => (count.wrapping_sub(d) & 0xffff) as u32,
            3 => count.wrapping_sub(d.wrapping_mul(2).checked_rem(count).unwrap_or(0)) as u32,
            _ => count.wrapping_sub(d.checked_rem(count).unwrap_or(0)) as u32,
        }
    }

    /// The channel's OUT pin now (KVM's `pit_get_out`).
    pub fn out(&self, ch: usize, now: Now) -> bool {
        let c = self.ch(ch);
        let d = ticks(self.elapsed(ch, now));
        let count = u64::from(c.count);
        match c.mode {
            1 => d < count,
            2 => d.checked_rem(count) == Some(0) && d != 0,
            3 => d.checked_rem(count).unwrap_or(0) < count.saturating_add(1) >> 1,
            4 | 5 => d == count,
            _ => d >= count,
        }
    }

    /// Loads a new initial count (KVM's `pit_load_count`; 0 means 0x10000): channel 0 then
    /// arms its timer as the mode says.
    fn load_count(&mut self, ch: usize, val: u32, now: i64) -> Timer {
        let val = if val == 0 { 0x10000 } else { val };
        let c = self.ch_mut(ch);
        c.count = val;
        if ch != 0 {
            c.count_load_time = now;
            return Timer::Keep;
        }
        match c.mode {
            0 | 1 | 4 => self.timer(val, false),
            2 | 3 => self.timer(val, true),
            _ => Timer::Stop,
        }
    }

    /// KVM's `create_pit_timer`: nothing without an in-kernel IOAPIC or while the HPET has
    /// IRQ 0; a periodic timer no faster than [`MIN_PERIOD_NS`].
    fn timer(&self, val: u32, periodic: bool) -> Timer {
        if !self.ioapic || self.state.flags & FLAGS_HPET_LEGACY != 0 {
            return Timer::Keep;
        }
        let interval = ns_of(val);
        Timer::Start { first_ns: interval, period_ns: periodic.then_some(interval.max(MIN_PERIOD_NS)) }
    }

    fn latch_count(&mut self, ch: usize, now: Now) {
        if self.ch(ch).count_latched == 0 {
            let v = self.count(ch, now) as u16;
            let c = self.ch_mut(ch);
            c.latched_count = v;
            c.count_latched = c.rw_mode;
        }
    }

    fn latch_status(&mut self, ch: usize, now: Now) {
        if self.ch(ch).status_latched == 0 {
            let out = u8::from(self.out(ch, now));
            let c = self.ch_mut(ch);
            // As KVM, unmasked and cut to a byte (an unprogrammed channel's mode is 0xff).
            c.status = (u32::from(out) << 7 | u32::from(c.rw_mode) << 4 | u32::from(c.mode) << 1 | u32::from(c.bcd)) as u8;
            c.status_latched = 1;
        }
    }

    /// A guest's write of `val` to port `0x40 + port` (0-3; other bits ignored, as KVM's
    /// `addr & 3`): what channel 0's timer must do.
    pub fn write(&mut self, port: u16, val: u8, now: Now) -> Timer {
        let port = usize::from(port & 3);
        if port == 3 {
            let ch = usize::from(val >> 6);
            if ch == 3 {
                // Read-back command.
                for c in 0..3 {
                    if val & 2 << c != 0 {
                        if val & 0x20 == 0 {
                            self.latch_count(c, now);
                        }
                        if val & 0x10 == 0 {
                            self.latch_status(c, now);
                        }
                    }
                }
                return Timer::Keep;
            }
            let access = (val >> 4) & 3;
            if access == 0 {
                self.latch_count(ch, now);
            } else {
                let c = self.ch_mut(ch);
                c.rw_mode = access;
                c.read_state = access;
                c.write_state = access;
                c.mode = (val >> 1) & 7;
                if c.mode > 5 {
                    c.mode = c.mode.wrapping_sub(4);
                }
                c.bcd = val & 1;
            }
            return Timer::Keep;
        }
        let c = self.ch_mut(port);
        match c.write_state {
            RW_MSB => self.load_count(port, u32::from(val) << 8, now.ns),
            RW_WORD0 => {
                c.write_latch = val;
                c.write_state = RW_WORD1;
                Timer::Keep
            }
            RW_WORD1 => {
                let v = u32::from(c.write_latch) | u32::from(val) << 8;
                c.write_state = RW_WORD0;
                self.load_count(port, v, now.ns)
            }
            _ => self.load_count(port, u32::from(val), now.ns),
        }
    }

    /// A guest's read of port `0x40 + port` (KVM's `pit_ioport_read`; port 3 reads 0).
    pub fn read(&mut self, port: u16, now: Now) -> u8 {
        let port = usize::from(port & 3);
        if port == 3 {
            return 0;
        }
        let c = *self.ch(port);
        if c.status_latched != 0 {
            self.ch_mut(port).status_latched = 0;
            return c.status;
        }
        if c.count_latched != 0 {
            let v = c.latched_count;
            let s = self.ch_mut(port);
            return match c.count_latched {
                RW_MSB => {
                    s.count_latched = 0;
                    (v >> 8) as u8
                }
                RW_WORD0 => {
                    s.count_latched = RW_MSB;
                    v as u8
                }
                _ => {
                    s.count_latched = 0;
                    v as u8
                }
            };
        }
        let count = self.count(port, now);
        let s = self.ch_mut(port);
        match c.read_state {
            RW_MSB => (count >> 8) as u8,
            RW_WORD0 => {
                s.read_state = RW_WORD1;
                count as u8
            }
            RW_WORD1 => {
                s.read_state = RW_WORD0;
                (count >> 8) as u8
            }
            _ => count as u8,
        }
    }

    /// A write of `val` to port 0x61: speaker data (bit 1) and channel 2's gate (bit 0),
    /// which restarts counting on a rising edge in modes 1, 2, 3 and 5.
    pub fn write_speaker(&mut self, val: u32, now: i64) {
        if val & 2 != 0 {
            self.state.flags |= FLAGS_SPEAKER_DATA_ON;
        } else {
            self.state.flags &= !FLAGS_SPEAKER_DATA_ON;
        }
        let gate = (val & 1) as u8;
        let c = self.ch_mut(2);
        if matches!(c.mode, 1 | 2 | 3 | 5) && c.gate < gate {
            c.count_load_time = now;
        }
        c.gate = gate;
    }

    /// A read of port 0x61: speaker data, gate, channel 2's OUT (bit 5) and the refresh
    /// clock (bit 4, toggling every 2^14 ns as KVM approximates it).
    pub fn read_speaker(&self, now: Now) -> u32 {
        let refresh = ((now.ns as u64) >> 14) as u32 & 1;
        u32::from(self.state.flags & FLAGS_SPEAKER_DATA_ON != 0) << 1
            | u32::from(self.ch(2).gate)
            | u32::from(self.out(2, now)) << 5
            | refresh << 4
    }

    /// `KVM_SET_PIT2` (KVM's `kvm_vm_ioctl_set_pit2`): the state as given, each count loaded
    /// again; starting HPET legacy mode loads channel 0 without arming it.
    pub fn set_state(&mut self, s: &PitState2, now: i64) -> Timer {
        let start_legacy = self.state.flags & FLAGS_HPET_LEGACY == 0 && s.flags & FLAGS_HPET_LEGACY != 0;
        self.state.channels = s.channels;
        self.state.flags = s.flags;
        let mut timer = Timer::Keep;
        for ch in 0..3 {
            let count = self.ch(ch).count;
            if ch == 0 && start_legacy {
                let mode = self.ch(0).mode;
                self.ch_mut(0).mode = 0xff;
                timer = self.load_count(0, count, now);
                self.ch_mut(0).mode = mode;
            } else {
                let t = self.load_count(ch, count, now);
                if ch == 0 {
                    timer = t;
                }
            }
        }
        timer
    }

    /// `KVM_GET_PIT2`.
    pub fn get_state(&self) -> PitState2 {
        PitState2 { reserved: [0; 9], ..self.state }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_kvm_bindings() {
        use core::mem::{offset_of, size_of};
        use kvm_bindings as kb;
        assert_eq!(size_of::<ChannelState>(), size_of::<kb::kvm_pit_channel_state>());
        assert_eq!(offset_of!(ChannelState, count_load_time), offset_of!(kb::kvm_pit_channel_state, count_load_time));
        assert_eq!(offset_of!(ChannelState, gate), offset_of!(kb::kvm_pit_channel_state, gate));
        assert_eq!(size_of::<PitState2>(), size_of::<kb::kvm_pit_state2>());
        assert_eq!(offset_of!(PitState2, flags), offset_of!(kb::kvm_pit_state2, flags));
        assert_eq!(size_of::<PitState>(), size_of::<kb::kvm_pit_state>());
        assert_eq!(size_of::<PitConfig>(), size_of::<kb::kvm_pit_config>());
        assert_eq!(size_of::<ReinjectControl>(), size_of::<kb::kvm_reinject_control>());
    }

    fn at(ns: i64) -> Now {
        Now { ns, ch0_elapsed: 0 }
    }

    #[test]
    fn reset_state_is_kvms() {
        let p = Pit::new(5, true);
        for (i, c) in p.state.channels.iter().enumerate() {
            assert_eq!((c.mode, c.count, c.gate), (0xff, 0x10000, u8::from(i != 2)));
        }
        assert_eq!(p.state.channels[1].count_load_time, 5);
    }

    #[test]
    fn linux_programs_a_periodic_tick() {
        let mut p = Pit::new(0, true);
        // Channel 0, LSB then MSB, mode 2: 1193 ticks (about 1 ms).
        assert_eq!(p.write(3, 0x34, at(0)), Timer::Keep);
        assert_eq!(p.write(0, 0xa9, at(0)), Timer::Keep);
        let t = p.write(0, 0x04, at(0));
        assert_eq!(t, Timer::Start { first_ns: 999_847, period_ns: Some(999_847) });
        // One-shot (mode 0) with a tiny count: no minimum.
        p.write(3, 0x30, at(0));
        p.write(0, 2, at(0));
        assert_eq!(p.write(0, 0, at(0)), Timer::Start { first_ns: 1676, period_ns: None });
        // Periodic with a tiny count: at least 200 us.
        p.write(3, 0x36, at(0));
        p.write(0, 2, at(0));
        assert!(matches!(p.write(0, 0, at(0)), Timer::Start { period_ns: Some(MIN_PERIOD_NS), .. }));
        // Without the in-kernel IOAPIC the timer stays off.
        let mut q = Pit::new(0, false);
        q.write(3, 0x34, at(0));
        q.write(0, 1, at(0));
        assert_eq!(q.write(0, 1, at(0)), Timer::Keep);
    }

    #[test]
    fn counts_read_back_and_latch() {
        let mut p = Pit::new(0, true);
        // Channel 2, word access, mode 0, count 1000 loaded at t=0.
        p.write(3, 0xb0, at(0));
        p.write(2, 0xe8, at(0));
        p.write(2, 0x03, at(0));
        // 100 ticks later.
        let t = ns_of(100) + 1;
        assert_eq!(u16::from(p.read(2, at(t))) | u16::from(p.read(2, at(t))) << 8, 900);
        // Latch, then time moves on: the latched value is read.
        p.write(3, 0x80, at(t));
        let later = at(t + ns_of(50));
        assert_eq!(u16::from(p.read(2, later)) | u16::from(p.read(2, later)) << 8, 900);
        // Read-back of status: OUT low (mode 0 before terminal count), word access, mode 0.
        p.write(3, 0xe8, later); // status only (bit 5 set: no count), channel 2
        assert_eq!(p.read(2, later), 0b0011_0000);
        assert_eq!(p.read(3, later), 0);
        // An unprogrammed channel's status, as KVM computes it (mode 0xff).
        p.write(3, 0xe2, later);
        assert_eq!(p.read(0, later), 0xfe);
    }

    #[test]
    fn modes_above_5_alias() {
        let mut p = Pit::new(0, true);
        p.write(3, 0x3c, at(0)); // mode 6
        assert_eq!(p.state.channels[0].mode, 2);
        p.write(3, 0x3e, at(0)); // mode 7
        assert_eq!(p.state.channels[0].mode, 3);
    }

    #[test]
    fn speaker_port_gates_channel_2() {
        let mut p = Pit::new(0, true);
        p.write(3, 0xb6, at(0)); // channel 2, mode 3
        p.write(2, 0x00, at(0));
        p.write(2, 0x10, at(0));
        p.write_speaker(3, 1000);
        assert_eq!(p.state.channels[2].count_load_time, 1000, "rising gate restarts mode 3");
        assert_eq!(p.read_speaker(at(1000)) & 0x3, 3);
        assert_ne!(p.state.flags & FLAGS_SPEAKER_DATA_ON, 0);
        p.write_speaker(0, 2000);
        assert_eq!(p.read_speaker(at(2000)) & 0x3, 0);
    }

    #[test]
    fn set_state_reloads_and_hpet_legacy_stops_channel_0() {
        let mut p = Pit::new(0, true);
        let mut s = p.get_state();
        s.channels[0].mode = 2;
        s.channels[0].count = 11932;
        assert!(matches!(p.set_state(&s, 0), Timer::Start { period_ns: Some(_), .. }));
        s.flags = FLAGS_HPET_LEGACY;
        assert_eq!(p.set_state(&s, 0), Timer::Stop, "legacy start: loaded with the timer off");
        assert_eq!(p.state.channels[0].mode, 2, "the mode kept for later");
    }
}
