// SPDX-License-Identifier: GPL-2.0

//! KVM's TSC synchronization (`kvm_synchronize_tsc` in `arch/x86/kvm/x86.c`): each vCPU's TSC is
//! the host's plus an offset, and a VM keeps its vCPUs' TSCs in step. A vCPU starts with the
//! offset of the VM's current "generation" (the first vCPU's TSC starts at 0), and so does one
//! whose TSC userspace sets to 0 or, once userspace has set a TSC, to a value within one
//! second of where the last TSC written is now (the legacy API wrote each vCPU's TSC in turn,
//! racing with time). Any other value starts a new generation. rvmx does not scale TSCs, so
//! every vCPU's rate is the host's and KVM's rate comparisons always hold. Whether all vCPUs
//! are in one generation decides KVM's master clock (`cpu/kvmclock.rs`).

/// A VM's TSC generation and the last write, KVM's `kvm->arch.*tsc*` fields.
#[derive(Clone, Copy, Debug, Default)]
pub struct TscSync {
    /// A generation exists (KVM's `last_tsc_khz` matching the vCPU's rate).
    started: bool,
    /// Userspace has set a vCPU's TSC (KVM's `user_set_tsc`).
    user_set: bool,
    /// Host time (ns) and guest TSC value of the last write.
    last_ns: u64,
    last_write: u64,
    /// The offset the last write gave (what `KVM_VCPU_TSC_OFFSET` is matched against).
    last_offset: u64,
    /// The current generation's offset.
    cur_offset: u64,
    /// The current generation's number, and how many vCPUs joined it after the one that
    /// started it (KVM's `cur_tsc_generation`, `nr_vcpus_matched_tsc`).
    generation: u64,
    matched: u32,
    /// vCPUs created (KVM's `online_vcpus`), and whether the last write joined the generation.
    online: u32,
    last_matched: bool,
}

/// The host at one moment: its TSC, its boot-based time, its TSC rate, and whether the kernel
/// marked its TSC unstable (then a generation's TSC is carried forward by elapsed time
/// rather than by sharing an offset, as KVM does).
#[derive(Clone, Copy, Debug)]
pub struct HostTime {
    /// The host's TSC.
    pub tsc: u64,
    /// KVM's base clock (boot-based, raw), in nanoseconds, at that TSC.
    pub ns: u64,
    /// The host's TSC rate.
    pub tsc_khz: u32,
    /// The kernel no longer trusts the TSC (`check_tsc_unstable`).
    pub tsc_unstable: bool,
}

impl HostTime {
    /// TSC cycles in `ns` nanoseconds at the host's rate (wrapping, as KVM's u64 arithmetic).
    fn cycles(&self, ns: u64) -> u64 {
        // In two parts, without a 128-bit division (none in the kernel): whole milliseconds
        // times kHz, then the rest (below 10^6 * 2^32: no overflow).
        let khz = self.tsc_khz as u64;
        (ns / 1_000_000).wrapping_mul(khz).wrapping_add((ns % 1_000_000).wrapping_mul(khz) / 1_000_000)
    }
}

impl TscSync {
    /// A vCPU's creation (`user` is `None`) or userspace's write of IA32_TSC (`Some(value)`):
    /// the vCPU's new TSC offset. `vcpu_generation` is the generation the vCPU is in.
    pub fn synchronize(&mut self, user: Option<u64>, now: HostTime, vcpu_generation: &mut u64) -> u64 {
        let mut data = user.unwrap_or(0);
        let mut offset = data.wrapping_sub(now.tsc);
        let elapsed = now.ns.wrapping_sub(self.last_ns);
        let synchronizing = if data == 0 {
            // A new vCPU, or userspace writing 0: always joins the generation.
            true
        } else if self.user_set {
            let expected = self.last_write.wrapping_add(now.cycles(elapsed));
            let hz = (now.tsc_khz as u64).wrapping_mul(1000);
            data < expected.wrapping_add(hz) && data.wrapping_add(hz) > expected
        } else {
            false
        };
        let matched = synchronizing && self.started;
        if matched {
            if now.tsc_unstable {
                data = data.wrapping_add(now.cycles(elapsed));
                offset = data.wrapping_sub(now.tsc);
            } else {
                offset = self.cur_offset;
            }
        }
        self.record(offset, data, now.ns, matched, user.is_some(), vcpu_generation);
        offset
    }

    /// `KVM_VCPU_TSC_OFFSET`: userspace gives the offset itself.
    pub fn set_offset(&mut self, offset: u64, now: HostTime, vcpu_generation: &mut u64) {
        let matched = self.started && self.last_offset == offset;
        self.record(offset, now.tsc.wrapping_add(offset), now.ns, matched, true, vcpu_generation);
    }

    /// A vCPU was created (KVM's `kvm_arch_vcpu_postcreate`): its TSC offset.
    pub fn add_vcpu(&mut self, now: HostTime, vcpu_generation: &mut u64) -> u64 {
        self.online = self.online.saturating_add(1);
        self.synchronize(None, now, vcpu_generation)
    }

    /// Whether all vCPUs are in one generation (KVM's `vcpus_matched`, a condition of its
    /// master clock).
    pub fn vcpus_matched(&self) -> bool {
        self.matched.checked_add(1) == Some(self.online)
    }

    /// After a write: whether the master clock (`master`: on now) must be reconsidered at the
    /// next entry, as KVM's `kvm_track_tsc_matching` asks for it.
    pub fn master_update_needed(&self, master: bool) -> bool {
        (master && !self.last_matched) || master != self.vcpus_matched()
    }

    /// KVM's `__kvm_synchronize_tsc`: the last write, and a new generation unless it matched.
    fn record(&mut self, offset: u64, tsc: u64, ns: u64, matched: bool, user: bool, vcpu_generation: &mut u64) {
        self.user_set |= user;
        self.started = true;
        self.last_ns = ns;
        self.last_write = tsc;
        self.last_offset = offset;
        self.last_matched = matched;
        if !matched {
            self.cur_offset = offset;
            self.generation = self.generation.wrapping_add(1);
            self.matched = 0;
        } else if *vcpu_generation != self.generation {
            self.matched = self.matched.saturating_add(1);
        }
        *vcpu_generation = self.generation;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KHZ: u32 = 2_000_000; // 2 GHz: 2 cycles per ns.

    fn at(ns: u64) -> HostTime {
        HostTime { tsc: 1_000_000 + ns * 2, ns, tsc_khz: KHZ, tsc_unstable: false }
    }

    #[test]
    fn vcpus_share_the_first_ones_zero() {
        let mut s = TscSync::default();
        let (mut g0, mut g1) = (0, 0);
        assert!(!s.vcpus_matched());
        let first = s.add_vcpu(at(100), &mut g0);
        assert_eq!(at(100).tsc.wrapping_add(first), 0, "the first vCPU's TSC starts at 0");
        assert!(s.vcpus_matched());
        assert!(s.master_update_needed(false), "the master clock goes on at the next entry");
        // Seconds later, a new vCPU still joins the generation (its TSC is not 0).
        assert_eq!(s.add_vcpu(at(5_000_000_000), &mut g1), first);
        assert!(s.vcpus_matched());
        assert!(!s.master_update_needed(true));
        // Userspace moves one vCPU's TSC far away: they no longer match...
        s.synchronize(Some(1 << 40), at(5_000_000_100), &mut g1);
        assert!(!s.vcpus_matched());
        assert!(s.master_update_needed(true), "the master clock goes off");
        // ...until the other one joins it.
        s.synchronize(Some(1 << 40), at(5_000_000_200), &mut g0);
        assert!(s.vcpus_matched());
    }

    #[test]
    fn userspace_values() {
        let mut s = TscSync::default();
        let g = &mut 0;
        let first = s.add_vcpu(at(0), g);
        // The first value userspace sets is taken as it is, even close to the generation's.
        let v = s.synchronize(Some(1000), at(10), g);
        assert_eq!(at(10).tsc.wrapping_add(v), 1000);
        assert_ne!(v, first);
        // Then a value within a second of where that write's TSC is now joins it...
        let near = s.synchronize(Some(1000 + 2 * 500_000_000), at(10 + 400_000_000), g);
        assert_eq!(near, v);
        // ...one further away starts a new generation.
        let far = s.synchronize(Some(50_000_000_000), at(20 + 400_000_000), g);
        assert_eq!(at(20 + 400_000_000).tsc.wrapping_add(far), 50_000_000_000);
        // Writing 0 joins the current generation.
        assert_eq!(s.synchronize(Some(0), at(30 + 400_000_000), g), far);
    }

    #[test]
    fn unstable_tsc_carries_time_forward() {
        let mut s = TscSync::default();
        s.add_vcpu(at(0), &mut 0);
        let now = HostTime { tsc_unstable: true, ..at(1_000) };
        let off = s.add_vcpu(now, &mut 0);
        // The new vCPU's TSC is where the first one's is 1000 ns later: 2000 cycles.
        assert_eq!(now.tsc.wrapping_add(off), 2_000);
    }

    #[test]
    fn offsets_from_userspace() {
        let mut s = TscSync::default();
        let g = &mut 0;
        s.add_vcpu(at(0), g);
        s.set_offset(12345, at(10), g);
        // A vCPU created afterwards joins the offset userspace gave.
        assert_eq!(s.add_vcpu(at(20), &mut 0), 12345);
        assert!(s.vcpus_matched());
    }
}
