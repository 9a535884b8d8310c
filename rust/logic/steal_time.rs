// SPDX-License-Identifier: GPL-2.0

//! KVM's steal time (`MSR_KVM_STEAL_TIME`, `KVM_FEATURE_STEAL_TIME`): a 64-byte
//! `struct kvm_steal_time` in guest memory where the host adds the time the vCPU's thread
//! waited for a CPU (the scheduler's `run_delay`), under a version protocol like kvmclock's
//! (`record_steal_time` in `arch/x86/kvm/x86.c`).

/// `MSR_KVM_STEAL_TIME`'s enable bit.
pub const ENABLED: u64 = 1 << 0;
/// Bits 5:1, reserved (the structure is 64-byte aligned): a write with them is refused.
pub const RESERVED: u64 = 0x3e;
/// The structure's guest-physical address in the MSR.
pub const ADDRESS: u64 = !0x3f;

/// Byte offsets in `struct kvm_steal_time` (`arch/x86/include/uapi/asm/kvm_para.h`: u64 steal,
/// u32 version, u32 flags, u8 preempted, padding to 64 bytes; not in kvm-bindings).
pub mod offset {
    /// `steal`: nanoseconds stolen (u64).
    pub const STEAL: u64 = 0;
    /// `version`: odd while the host updates the structure (u32).
    pub const VERSION: u64 = 8;
    /// `preempted`: set while the vCPU is preempted (u8); rvmx leaves it 0 (KVM clears it at
    /// each update and sets it only on preemption).
    pub const PREEMPTED: u64 = 16;
}

/// A vCPU's steal-time state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StealTime {
    /// The MSR as written.
    pub msr: u64,
    /// The thread's `run_delay` at the last update.
    pub last_run_delay: u64,
    /// The structure must be updated before the next entry (MSR write, a new `KVM_RUN`).
    pub update: bool,
}

impl StealTime {
    /// A write of the MSR (already checked with [`write_allowed`]): an update is due only
    /// while it is enabled.
    pub fn set_msr(&mut self, v: u64) {
        self.msr = v;
        self.update = v & ENABLED != 0;
    }

    /// The structure's address, when enabled.
    pub const fn gpa(&self) -> Option<u64> {
        if self.msr & ENABLED != 0 { Some(self.msr & ADDRESS) } else { None }
    }

    /// Whether the structure must be written before entering, with the thread's `run_delay`
    /// now: asked for, or the thread waited for a CPU since the last update.
    pub const fn due(&self, run_delay: u64) -> bool {
        self.msr & ENABLED != 0 && (self.update || run_delay != self.last_run_delay)
    }
}

/// Whether the MSR takes `v` (KVM: reserved bits 5:1 clear).
pub const fn write_allowed(v: u64) -> bool {
    v & RESERVED == 0
}

/// The versions to write around an update, from the one in guest memory: odd while updating,
/// then even (an odd leftover, "first time write, random junk", is stepped over first).
pub const fn versions(current: u32) -> (u32, u32) {
    let v = if current & 1 != 0 { current.wrapping_add(1) } else { current };
    (v.wrapping_add(1), v.wrapping_add(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msr_and_versions() {
        assert!(write_allowed(0x1000 | ENABLED) && !write_allowed(0x1000 | 2) && write_allowed(0x40));
        let mut s = StealTime::default();
        assert_eq!(s.gpa(), None);
        assert!(!s.due(5), "disabled: never");
        s.set_msr(0x2040 | ENABLED);
        assert_eq!(s.gpa(), Some(0x2040));
        assert!(s.due(0));
        s.update = false;
        assert!(!s.due(0) && s.due(1), "run_delay moved");
        assert_eq!(versions(0), (1, 2));
        assert_eq!(versions(7), (9, 10), "odd junk stepped over");
        assert_eq!(versions(u32::MAX), (1, 2));
    }
}
