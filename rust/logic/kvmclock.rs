// SPDX-License-Identifier: GPL-2.0

//! kvmclock, KVM's paravirtual clock, as KVM gives it: the VM's clock that `KVM_GET_CLOCK` and
//! `KVM_SET_CLOCK` read and move, the time page each vCPU's guest registers with
//! `MSR_KVM_SYSTEM_TIME_NEW` (`struct pvclock_vcpu_time_info`), the wall-clock page of
//! `MSR_KVM_WALL_CLOCK_NEW`, and the arithmetic both sides of the page use
//! (`arch/x86/kvm/x86.c`, `arch/x86/include/asm/pvclock.h`).
//!
//! The guest computes `system_time + ((tsc - tsc_timestamp) scaled by mul and shift)`. rvmx
//! fills the page from one reference pair (a host TSC value and the host's boot-time
//! nanoseconds at that TSC) plus the VM's offset, so every vCPU reads the same clock whatever
//! its own TSC offset.

/// `KVM_CLOCK_TSC_STABLE`: the clock is computed from a stable host TSC (KVM's master clock).
pub const CLOCK_TSC_STABLE: u32 = 1 << 1;
/// `KVM_CLOCK_REALTIME`: `realtime` is valid (and used by `KVM_SET_CLOCK`).
pub const CLOCK_REALTIME: u32 = 1 << 2;
/// `KVM_CLOCK_HOST_TSC`: `host_tsc` is valid.
pub const CLOCK_HOST_TSC: u32 = 1 << 3;
/// The flags `KVM_SET_CLOCK` accepts, and the value of `KVM_CAP_ADJUST_CLOCK`.
pub const CLOCK_VALID_FLAGS: u32 = CLOCK_TSC_STABLE | CLOCK_REALTIME | CLOCK_HOST_TSC;

/// `struct kvm_clock_data` (`KVM_GET_CLOCK`, `KVM_SET_CLOCK`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockData {
    /// The VM's kvmclock, in nanoseconds.
    pub clock: u64,
    /// `KVM_CLOCK_*`: which fields are valid.
    pub flags: u32,
    /// Padding.
    pub pad0: u32,
    /// CLOCK_REALTIME in nanoseconds at the moment `clock` was read.
    pub realtime: u64,
    /// The host TSC at that moment.
    pub host_tsc: u64,
    /// Padding.
    pub pad: [u32; 4],
}
// SAFETY: `repr(C)` with integers only, the padding explicit fields (48 bytes, tested against
// kvm-bindings): no uninitialized bytes, and any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for ClockData {}
// SAFETY: as for `FromBytes`: every byte is a field's.
#[cfg(MODULE)]
unsafe impl kernel::transmute::AsBytes for ClockData {}

/// `PVCLOCK_TSC_STABLE_BIT`: every vCPU's page reads one clock; the guest need not keep its
/// own cross-CPU maximum.
pub const PVCLOCK_TSC_STABLE: u8 = 1 << 0;
/// `PVCLOCK_GUEST_STOPPED`: the guest was paused (set by the guest's side; kept on updates).
pub const PVCLOCK_GUEST_STOPPED: u8 = 1 << 1;

/// `struct pvclock_vcpu_time_info`, the page a vCPU's guest reads (32 bytes, packed).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeInfo {
    /// Odd while an update is in progress.
    pub version: u32,
    /// Padding.
    pub pad0: u32,
    /// The guest's TSC at `system_time`.
    pub tsc_timestamp: u64,
    /// kvmclock nanoseconds at `tsc_timestamp`.
    pub system_time: u64,
    /// Nanoseconds per TSC tick, as a fraction of 2^32 ...
    pub tsc_to_system_mul: u32,
    /// ... after shifting the TSC delta left by this (right if negative).
    pub tsc_shift: i8,
    /// `PVCLOCK_*`.
    pub flags: u8,
    /// Padding.
    pub pad: [u8; 2],
}
// SAFETY: `repr(C)` with integers only, naturally aligned with no gap (32 bytes, offsets
// tested): no uninitialized bytes, and any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::AsBytes for TimeInfo {}

/// `struct pvclock_wall_clock` (12 bytes): the wall-clock time at which kvmclock was 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WallClock {
    /// Odd while an update is in progress.
    pub version: u32,
    /// Seconds since 1970.
    pub sec: u32,
    /// And nanoseconds.
    pub nsec: u32,
}
// SAFETY: `repr(C)` with three `u32`s: no uninitialized bytes.
#[cfg(MODULE)]
unsafe impl kernel::transmute::AsBytes for WallClock {}

/// Nanoseconds per second.
pub const NSEC_PER_SEC: u64 = 1_000_000_000;

/// `KVM_FEATURE_*` bits of CPUID 0x40000001 EAX that rvmx implements: kvmclock through both
/// MSR pairs, its stable bit, and the hint that port 0x80 delays are unneeded.
pub mod feature {
    /// `KVM_FEATURE_CLOCKSOURCE`: MSRs 0x11 and 0x12.
    pub const CLOCKSOURCE: u32 = 1 << 0;
    /// `KVM_FEATURE_NOP_IO_DELAY`.
    pub const NOP_IO_DELAY: u32 = 1 << 1;
    /// `KVM_FEATURE_CLOCKSOURCE2`: MSRs 0x4b564d00 and 0x4b564d01.
    pub const CLOCKSOURCE2: u32 = 1 << 3;
    /// `KVM_FEATURE_STEAL_TIME`: `MSR_KVM_STEAL_TIME` (`super::super::steal_time`).
    pub const STEAL_TIME: u32 = 1 << 5;
    /// `KVM_FEATURE_PV_UNHALT`: `KVM_HC_KICK_CPU`.
    pub const PV_UNHALT: u32 = 1 << 7;
    /// `KVM_FEATURE_PV_SEND_IPI`: `KVM_HC_SEND_IPI`.
    pub const PV_SEND_IPI: u32 = 1 << 11;
    /// `KVM_FEATURE_PV_SCHED_YIELD`: `KVM_HC_SCHED_YIELD`.
    pub const PV_SCHED_YIELD: u32 = 1 << 13;
    /// `KVM_FEATURE_CLOCKSOURCE_STABLE_BIT`: the page's flags may carry PVCLOCK_TSC_STABLE.
    pub const CLOCKSOURCE_STABLE_BIT: u32 = 1 << 24;
    /// What `KVM_GET_SUPPORTED_CPUID` offers.
    pub const SUPPORTED: u32 = CLOCKSOURCE | NOP_IO_DELAY | CLOCKSOURCE2 | CLOCKSOURCE_STABLE_BIT;
}

/// CPUID 0x40000000: the highest KVM leaf and "KVMKVMKVM\0\0\0".
pub const SIGNATURE_LEAF: [u32; 4] = [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d];

/// The multiplier and shift that turn ticks at `base_hz` into ticks at `scaled_hz`, as KVM's
/// `kvm_get_time_scale` computes them; `None` for a zero rate.
pub fn time_scale(scaled_hz: u64, base_hz: u64) -> Option<(i8, u32)> {
    if base_hz == 0 || scaled_hz == 0 {
        return None; // KVM's loops would not end
    }
    let mut tps64 = base_hz;
    let mut scaled64 = scaled_hz;
    let mut shift: i8 = 0;
    while tps64 > scaled64.saturating_mul(2) || tps64 & 0xffff_ffff_0000_0000 != 0 {
        tps64 >>= 1;
        shift = shift.wrapping_sub(1); // at most 64 halvings
    }
    let mut tps32 = tps64 as u32; // below 2^32 now
    while u64::from(tps32) <= scaled64 || scaled64 & 0xffff_ffff_0000_0000 != 0 {
        if scaled64 & 0xffff_ffff_0000_0000 != 0 || tps32 & 0x8000_0000 != 0 {
            scaled64 >>= 1;
        } else {
            tps32 <<= 1;
        }
        shift = shift.wrapping_add(1); // at most 64 steps: each halves the gap
    }
    // div_frac: scaled64 < tps32 here, so the quotient fits 32 bits.
    Some((shift, (scaled64 << 32).checked_div(u64::from(tps32))? as u32))
}

/// `pvclock_scale_delta`: `delta` ticks scaled by `mul_frac / 2^32` after the shift.
pub fn scale_delta(delta: u64, mul_frac: u32, shift: i8) -> u64 {
    let d = if shift < 0 { delta.checked_shr(u32::from(shift.unsigned_abs())).unwrap_or(0) } else { delta.checked_shl(shift as u32).unwrap_or(0) };
    // A u64 times a u32: exact in 128 bits.
    (u128::from(d).wrapping_mul(u128::from(mul_frac)) >> 32) as u64
}

impl TimeInfo {
    /// What a reader of this page computes at guest TSC `tsc` (`__pvclock_read_cycles`).
    pub fn read(&self, tsc: u64) -> u64 {
        self.system_time.wrapping_add(scale_delta(tsc.wrapping_sub(self.tsc_timestamp), self.tsc_to_system_mul, self.tsc_shift))
    }

    /// Likewise, also for a TSC below `tsc_timestamp` (the host reads with a TSC taken before
    /// a reference another thread took later): counted back, never wrapped to the far future.
    pub fn read_signed(&self, tsc: u64) -> u64 {
        match tsc.checked_sub(self.tsc_timestamp) {
            Some(_) => self.read(tsc),
            None => self.system_time.wrapping_sub(scale_delta(self.tsc_timestamp.wrapping_sub(tsc), self.tsc_to_system_mul, self.tsc_shift)),
        }
    }
}

/// One reading of the host's time: the TSC, KVM's base clock (boot time at the raw clock's
/// rate, `get_kvmclock_base_ns`) and the real time, in nanoseconds, taken at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Now {
    /// The host TSC.
    pub tsc: u64,
    /// KVM's base clock.
    pub base_ns: u64,
    /// CLOCK_REALTIME.
    pub real_ns: u64,
}

/// The point a VM's kvmclock is computed from: a host TSC and the base clock at that TSC, and
/// whether the host's clocksource is that TSC (then the point stays valid, KVM's "master
/// clock"; else it is taken anew at each use).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reference {
    /// The host TSC.
    pub tsc: u64,
    /// The base clock at that TSC, in nanoseconds.
    pub base_ns: u64,
    /// The host's clocksource is that (constant-rate) TSC.
    pub stable: bool,
}

impl Reference {
    /// The reference a reading gives.
    pub const fn at(now: &Now, stable: bool) -> Self {
        Reference { tsc: now.tsc, base_ns: now.base_ns, stable }
    }
}

/// A VM's clock: the reference and the offset `KVM_SET_CLOCK` sets (kvmclock minus the base
/// clock, wrapping like KVM's `kvmclock_offset`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    /// The point the clock is computed from.
    pub reference: Reference,
    /// kvmclock minus the base clock, in nanoseconds (wrapping).
    pub offset: u64,
    /// The TSC's rate in kHz (the host's: rvmx has no TSC scaling).
    pub tsc_khz: u32,
}

impl Clock {
    /// A clock that reads 0 at `now` (KVM starts each VM's kvmclock at its creation).
    pub fn new(now: &Now, stable: bool, tsc_khz: u32) -> Self {
        Clock { reference: Reference::at(now, stable), offset: 0u64.wrapping_sub(now.base_ns), tsc_khz }
    }

    /// The kvmclock at `now`: extrapolated from the reference with the TSC when it is stable,
    /// else the base clock plus the offset.
    pub fn read(&self, now: &Now) -> u64 {
        match self.time_info(0) {
            Some(t) if self.reference.stable => t.read_signed(now.tsc),
            _ => now.base_ns.wrapping_add(self.offset),
        }
    }

    /// The page of a vCPU whose TSC is the host's plus `tsc_offset` (version left 0), or `None`
    /// without a known TSC rate.
    pub fn time_info(&self, tsc_offset: u64) -> Option<TimeInfo> {
        let (tsc_shift, tsc_to_system_mul) = time_scale(NSEC_PER_SEC, u64::from(self.tsc_khz).wrapping_mul(1000))?;
        Some(TimeInfo {
            tsc_timestamp: self.reference.tsc.wrapping_add(tsc_offset),
            system_time: self.reference.base_ns.wrapping_add(self.offset),
            tsc_to_system_mul,
            tsc_shift,
            flags: if self.reference.stable { PVCLOCK_TSC_STABLE } else { 0 },
            ..TimeInfo::default()
        })
    }

    /// Moves the reference to `now` (same clock), e.g. when the host's clocksource stops
    /// being the TSC.
    pub fn rebase(&mut self, now: &Now, stable: bool) {
        let clock = self.read(now);
        self.reference = Reference::at(now, stable);
        self.offset = clock.wrapping_sub(now.base_ns);
    }

    /// `KVM_GET_CLOCK` at `now`. With a stable reference and KVM's master clock on (`master`:
    /// from a vCPU's first entry, or from a `KVM_SET_CLOCK` while all vCPUs' TSCs are in step),
    /// `KVM_CLOCK_TSC_STABLE`, and the
    /// real time and TSC of `now` if the host's clocksource is still the TSC (`tsc_based`:
    /// KVM leaves its master clock only at the next entry); otherwise only the clock.
    pub fn get(&self, now: &Now, master: bool, tsc_based: bool) -> ClockData {
        let clock = self.read(now);
        match (self.reference.stable && master, tsc_based) {
            (false, _) => ClockData { clock, ..ClockData::default() },
            (true, false) => ClockData { clock, flags: CLOCK_TSC_STABLE, host_tsc: now.tsc, ..ClockData::default() },
            (true, true) => ClockData { clock, flags: CLOCK_VALID_FLAGS, realtime: now.real_ns, host_tsc: now.tsc, ..ClockData::default() },
        }
    }

    /// `KVM_SET_CLOCK` at `now`: the reference moves to `now` and the offset makes the clock
    /// read `data.clock` there (moved forward by the real time elapsed since `data.realtime`
    /// with `KVM_CLOCK_REALTIME`, never back). `Err` for unknown flags (`EINVAL`).
    pub fn set(&mut self, data: &ClockData, now: &Now, stable: bool) -> Result<(), ()> {
        if data.flags & !CLOCK_VALID_FLAGS != 0 {
            return Err(());
        }
        let mut clock = data.clock;
        if data.flags & CLOCK_REALTIME != 0 && now.real_ns > data.realtime {
            clock = clock.wrapping_add(now.real_ns.wrapping_sub(data.realtime));
        }
        self.reference = Reference::at(now, stable);
        self.offset = clock.wrapping_sub(now.base_ns);
        Ok(())
    }

    /// The wall-clock page's time: the real time at which the kvmclock read 0 (KVM's
    /// `kvm_get_wall_clock_epoch`), with `version`.
    pub fn wall_clock(&self, now: &Now, version: u32) -> WallClock {
        let epoch = now.real_ns.wrapping_sub(self.read(now));
        // sec wraps in 2106, as KVM's.
        WallClock { version, sec: (epoch / NSEC_PER_SEC) as u32, nsec: (epoch % NSEC_PER_SEC) as u32 }
    }
}

/// A vCPU's side of kvmclock: its `MSR_KVM_SYSTEM_TIME(_NEW)` and what must be written to
/// guest memory before the guest runs again (outside the window, where it may fault).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuClock {
    /// The MSR as last written: the time page's address and the enable bit.
    pub system_time: u64,
    /// The time page must be written anew (MSR write, TSC change, first run).
    pub update: bool,
    /// The VM's wall-clock page must be written (its MSR was written on this vCPU).
    pub wall_clock: bool,
    /// The VM clock's generation the time page was last written for.
    pub generation: u64,
    /// The host CPU the page was last written on (`u32::MAX`: none).
    pub cpu: u32,
    /// The VM's TSC generation this vCPU is in (`super::tsc_sync`).
    pub tsc_generation: u64,
}

impl Default for VcpuClock {
    fn default() -> Self {
        Self { system_time: 0, update: false, wall_clock: false, generation: 0, cpu: u32::MAX, tsc_generation: 0 }
    }
}

impl VcpuClock {
    /// The guest wrote `MSR_KVM_SYSTEM_TIME(_NEW)` (or userspace restored it).
    pub fn set_system_time(&mut self, v: u64) {
        self.system_time = v;
        self.update = true;
    }

    /// The guest enabled its time page (bit 0 of the MSR).
    pub const fn enabled(&self) -> bool {
        self.system_time & 1 != 0
    }

    /// Guest memory must be written before the next entry (a WRMSR then leaves the window).
    pub const fn has_work(&self) -> bool {
        self.wall_clock || (self.update && self.enabled())
    }

    /// Whether the time page must be written now, for VM clock generation `generation`, on
    /// host CPU `cpu`; `stable`: the VM's reference is the stable TSC (else a page is only
    /// good on the CPU whose TSC and time it was computed from, as KVM rewrites it when a vCPU
    /// moves to another CPU).
    pub const fn page_due(&self, generation: u64, stable: bool, cpu: u32) -> bool {
        self.enabled() && (self.update || self.generation != generation || (!stable && self.cpu != cpu))
    }
}

/// The guest-physical address of the time page `MSR_KVM_SYSTEM_TIME(_NEW)` value `v` enables,
/// if it does (bit 0) and the page does not cross a page boundary (KVM's cache of it cannot
/// map such a page, so the clock stays off).
pub fn time_page(v: u64) -> Option<u64> {
    let gpa = v & !1;
    let fits = (gpa & 0xfff).saturating_add(core::mem::size_of::<TimeInfo>() as u64) <= 0x1000;
    (v & 1 != 0 && fits).then_some(gpa)
}

/// The odd version an update of a time page writes first, from the version the guest's page
/// holds (KVM: `(version + 1) | 1`); the update ends with this plus one.
pub const fn time_update_version(current: u32) -> u32 {
    current.wrapping_add(1) | 1
}

/// The version a wall-clock update writes, from the page's (KVM: odd junk rounded up, plus
/// one); the update ends with this plus one.
pub const fn wall_update_version(current: u32) -> u32 {
    let v = if current & 1 != 0 { current.wrapping_add(1) } else { current };
    v.wrapping_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_the_abi() {
        use kvm_bindings as kb;
        assert_eq!(size_of::<ClockData>(), size_of::<kb::kvm_clock_data>());
        assert_eq!(offset_of!(ClockData, flags), offset_of!(kb::kvm_clock_data, flags));
        assert_eq!(offset_of!(ClockData, realtime), offset_of!(kb::kvm_clock_data, realtime));
        assert_eq!(offset_of!(ClockData, host_tsc), offset_of!(kb::kvm_clock_data, host_tsc));
        assert_eq!((kb::KVM_CLOCK_TSC_STABLE, kb::KVM_CLOCK_REALTIME, kb::KVM_CLOCK_HOST_TSC), (CLOCK_TSC_STABLE, CLOCK_REALTIME, CLOCK_HOST_TSC));
        // pvclock.h: packed, 32 and 12 bytes.
        assert_eq!((size_of::<TimeInfo>(), offset_of!(TimeInfo, tsc_timestamp), offset_of!(TimeInfo, system_time)), (32, 8, 16));
        assert_eq!((offset_of!(TimeInfo, tsc_to_system_mul), offset_of!(TimeInfo, tsc_shift), offset_of!(TimeInfo, flags)), (24, 28, 29));
        assert_eq!(size_of::<WallClock>(), 12);
        let sig: Vec<u8> = SIGNATURE_LEAF[1..].iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(&sig, b"KVMKVMKVM\0\0\0");
    }

    /// KVM's scale converts 1 s of ticks into 1 s of nanoseconds within a tick's rounding.
    #[test]
    fn time_scale_converts_rates() {
        for khz in [1u64, 1000, 999_999, 2_100_000, 3_400_123, 5_000_000, 4_000_000_000] {
            let (shift, mul) = time_scale(NSEC_PER_SEC, khz * 1000).unwrap();
            let ns = scale_delta(khz * 1000, mul, shift);
            let err = ns.abs_diff(NSEC_PER_SEC);
            assert!(err <= 1 + NSEC_PER_SEC / (khz * 1000).min(NSEC_PER_SEC), "{khz} kHz: {ns} ns ({shift}, {mul:#x})");
        }
        // A value KVM computes for 2 GHz: 2^32 / 2 with shift 0.
        assert_eq!(time_scale(NSEC_PER_SEC, 2_000_000_000), Some((0, 0x8000_0000)));
        assert_eq!(time_scale(NSEC_PER_SEC, 0), None);
        assert_eq!(time_scale(NSEC_PER_SEC, u64::MAX).map(|(s, _)| s < 0), Some(true));
    }

    #[test]
    fn get_and_set_round_trip() {
        let tsc_khz = 1_000_000; // 1 tick per ns
        let at = |tsc: u64, base_ns: u64, real_ns: u64| Now { tsc, base_ns, real_ns };
        let mut c = Clock::new(&at(1_000_000, 5_000, 0), true, tsc_khz);
        assert_eq!(c.read(&at(1_000_000, 0, 0)), 0, "0 at creation");
        assert_eq!(c.get(&at(1_000_700, 0, 77), false, true), ClockData { clock: 700, ..Default::default() });
        let d = c.get(&at(1_000_700, 0, 77), true, false);
        assert_eq!((d.clock, d.flags, d.realtime, d.host_tsc), (700, CLOCK_TSC_STABLE, 0, 1_000_700), "host left the TSC");
        let d = c.get(&at(1_000_700, 0, 77), true, true);
        assert_eq!((d.clock, d.flags, d.realtime, d.host_tsc), (700, CLOCK_VALID_FLAGS, 77, 1_000_700));
        // A TSC read before the reference counts back.
        assert_eq!(c.read(&at(999_990, 0, 0)), 0u64.wrapping_sub(10));
        // Set to 1 s; REALTIME moves it by the real time elapsed, never back.
        let n2 = at(2_000_000, 9_000, 50);
        c.set(&ClockData { clock: NSEC_PER_SEC, ..Default::default() }, &n2, true).unwrap();
        assert_eq!(c.read(&n2), NSEC_PER_SEC);
        c.set(&ClockData { clock: 100, flags: CLOCK_REALTIME, realtime: 40, ..Default::default() }, &n2, true).unwrap();
        assert_eq!(c.read(&n2), 110);
        c.set(&ClockData { clock: 100, flags: CLOCK_REALTIME, realtime: 60, ..Default::default() }, &n2, true).unwrap();
        assert_eq!(c.read(&n2), 100, "never back");
        assert_eq!(c.set(&ClockData { flags: 1, ..Default::default() }, &n2, true), Err(()));
        assert_eq!(c.set(&ClockData { flags: 1 << 4, ..Default::default() }, &n2, true), Err(()));
        // A clock set below the base clock wraps, as KVM's offset does, and reads back.
        c.set(&ClockData { clock: 3, ..Default::default() }, &n2, true).unwrap();
        assert_eq!(c.read(&at(2_000_004, 0, 0)), 7);
        // Rebased (the host left the TSC): the same clock, now from the base clock.
        let n3 = at(2_000_104, 9_100, 0);
        c.rebase(&n3, false);
        assert_eq!((c.read(&n3), c.read(&at(0, 9_150, 0))), (107, 157));
        assert_eq!(c.time_info(0).map(|t| t.flags), Some(0));
        // Without a stable reference: the base clock plus the offset; only the clock reported.
        let mut u = Clock::new(&at(0, 0, 0), false, tsc_khz);
        u.set(&ClockData { clock: 1_000, ..Default::default() }, &at(123, 400, 0), false).unwrap();
        assert_eq!(u.get(&at(123, 500, 456), true, true), ClockData { clock: 1_100, ..Default::default() });
        // The wall clock: real time minus kvmclock.
        assert_eq!(u.wall_clock(&at(0, 500, 5 * NSEC_PER_SEC + 7), 2), WallClock { version: 2, sec: 4, nsec: 999_998_907 });
    }

    /// Two vCPUs with different TSC offsets read the same kvmclock at the same host TSC.
    #[test]
    fn pages_agree_across_tsc_offsets() {
        let c = Clock { reference: Reference { tsc: 10_000, base_ns: 3, stable: true }, offset: 20, tsc_khz: 2_500_000 };
        let (a, b) = (c.time_info(0).unwrap(), c.time_info(0u64.wrapping_sub(9_000)).unwrap());
        for host in [10_000u64, 12_345, 1 << 40] {
            assert_eq!(a.read(host), b.read(host.wrapping_sub(9_000)));
            assert_eq!(a.read(host), c.read(&Now { tsc: host, ..Default::default() }));
        }
        assert_eq!(a.flags, PVCLOCK_TSC_STABLE);
        assert_eq!(Clock { tsc_khz: 0, ..c }.time_info(0), None);
    }

    #[test]
    fn msr_rules() {
        assert_eq!(time_page(0x5001), Some(0x5000));
        assert_eq!(time_page(0x5000), None, "enable bit clear");
        assert_eq!(time_page(0x5fe1), Some(0x5fe0), "last 32 bytes of the page");
        assert_eq!(time_page(0x5fe9), None, "crosses into the next page");
        assert_eq!((time_update_version(0), time_update_version(2), time_update_version(7)), (1, 3, 9));
        assert_eq!((wall_update_version(0), wall_update_version(3), wall_update_version(u32::MAX)), (1, 5, 1));
    }
}
