// SPDX-License-Identifier: GPL-2.0

//! KVM's hypercalls (VMCALL with the number in RAX, `Documentation/virt/kvm/x86/hypercalls.rst`)
//! as KVM answers them for a VM without an in-kernel irqchip: the yields and the kick succeed
//! and do nothing that matters without an in-kernel APIC, PV IPIs have no APIC map to go to,
//! and everything else is `-KVM_ENOSYS` (KVM's `____kvm_emulate_hypercall`); with
//! `KVM_CAP_ENFORCE_PV_FEATURE_CPUID`, a hypercall whose feature the guest's CPUID lacks is
//! `-KVM_ENOSYS` too. Pure.

/// Hypercall numbers (`<uapi/linux/kvm_para.h>`).
pub mod nr {
    /// Poll the virtual APIC: a no-op that returns 0.
    pub const VAPIC_POLL_IRQ: u64 = 1;
    /// Wake a vCPU halted in a PV spinlock.
    pub const KICK_CPU: u64 = 5;
    /// Pair the host's wall clock with the TSC.
    pub const CLOCK_PAIRING: u64 = 9;
    /// Send IPIs to a bitmap of APIC IDs.
    pub const SEND_IPI: u64 = 10;
    /// Yield to the vCPU holding a lock.
    pub const SCHED_YIELD: u64 = 11;
}

/// The answers `-KVM_E*` (`<linux/kvm_para.h>`), negative as RAX holds them.
pub mod err {
    /// `-KVM_EPERM`: not permitted (a hypercall from CPL > 0).
    pub const EPERM: i64 = -1;
    /// `-KVM_EINVAL`.
    pub const EINVAL: i64 = -22;
    /// `-KVM_EOPNOTSUPP`.
    pub const EOPNOTSUPP: i64 = -95;
    /// `-KVM_ENOSYS`: no such hypercall.
    pub const ENOSYS: i64 = -1000;
}

/// The ICR bits `KVM_HC_SEND_IPI` refuses: a destination mode or a shorthand.
const ICR_DEST_OR_SHORTHAND: u64 = 0x800 | 0xc_0000;

/// The guest's registers at a VMCALL.
#[derive(Clone, Copy, Debug, Default)]
pub struct Call {
    /// RAX: the hypercall number.
    pub nr: u64,
    /// RBX, RCX, RDX, RSI: its arguments.
    pub args: [u64; 4],
}

/// RAX after hypercall `c` from privilege level `cpl`; `long` for a 64-bit caller, whose
/// registers are not truncated to 32 bits. `enforced`: the PV features of the guest's CPUID
/// when `KVM_CAP_ENFORCE_PV_FEATURE_CPUID` is on, where a hypercall needs its feature.
pub fn answer(c: Call, cpl: u32, long: bool, enforced: Option<u32>) -> u64 {
    use super::kvmclock::feature;
    let w = |v: u64| if long { v } else { v & 0xffff_ffff };
    let a3 = w(c.args[3]);
    let needs = match w(c.nr) {
        nr::KICK_CPU => feature::PV_UNHALT,
        nr::SEND_IPI => feature::PV_SEND_IPI,
        nr::SCHED_YIELD => feature::PV_SCHED_YIELD,
        _ => 0,
    };
    let ret: i64 = if cpl != 0 {
        err::EPERM
    } else if enforced.is_some_and(|f| f & needs != needs) {
        err::ENOSYS
    } else {
        match w(c.nr) {
            nr::VAPIC_POLL_IRQ | nr::KICK_CPU | nr::SCHED_YIELD => 0,
            // Only the wall-clock type exists; rvmx has no kvmclock to pair it with (KVM
            // answers it when the host's clocksource is the TSC: docs/compat.md).
            nr::CLOCK_PAIRING => err::EOPNOTSUPP,
            nr::SEND_IPI if a3 & ICR_DEST_OR_SHORTHAND != 0 => err::EINVAL,
            // No APIC map without an in-kernel APIC (KVM's kvm_pv_send_ipi: -EOPNOTSUPP).
            nr::SEND_IPI => err::EOPNOTSUPP,
            _ => err::ENOSYS,
        }
    };
    w(ret as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(nr: u64, a3: u64) -> Call {
        Call { nr, args: [0, 0, 0, a3] }
    }

    #[test]
    fn answers_as_kvm_without_an_irqchip() {
        assert_eq!(answer(call(nr::VAPIC_POLL_IRQ, 0), 0, true, None), 0);
        assert_eq!(answer(call(nr::KICK_CPU, 0), 0, true, None), 0);
        assert_eq!(answer(call(nr::SCHED_YIELD, 0), 0, true, None), 0);
        assert_eq!(answer(call(nr::SEND_IPI, 0), 0, true, None), (-95i64) as u64);
        assert_eq!(answer(call(nr::SEND_IPI, 0x800), 0, true, None), (-22i64) as u64);
        assert_eq!(answer(call(nr::CLOCK_PAIRING, 0), 0, true, None), (-95i64) as u64);
        assert_eq!(answer(call(12, 0), 0, true, None), (-1000i64) as u64, "MAP_GPA_RANGE without its exit");
        assert_eq!(answer(call(0, 0), 0, true, None), (-1000i64) as u64);
    }

    #[test]
    fn privilege_and_width() {
        assert_eq!(answer(call(nr::VAPIC_POLL_IRQ, 0), 3, true, None), u64::MAX, "-KVM_EPERM at CPL 3");
        assert_eq!(answer(call(0, 0), 0, false, None), 0xffff_fc18, "-1000 in 32 bits");
        assert_eq!(answer(call(1 << 32 | nr::VAPIC_POLL_IRQ, 0), 0, false, None), 0, "EAX only outside 64-bit mode");
        assert_eq!(answer(call(1 << 32 | nr::VAPIC_POLL_IRQ, 0), 0, true, None), (-1000i64) as u64);
        // Enforced PV features: the kick, PV IPIs and the yield need theirs.
        let none = Some(0);
        for n in [nr::KICK_CPU, nr::SEND_IPI, nr::SCHED_YIELD] {
            assert_eq!(answer(call(n, 0), 0, true, none), (-1000i64) as u64);
        }
        assert_eq!(answer(call(nr::KICK_CPU, 0), 0, true, Some(crate::kvmclock::feature::PV_UNHALT)), 0);
        assert_eq!(answer(call(nr::VAPIC_POLL_IRQ, 0), 0, true, none), 0, "needs no feature");
        assert_eq!(answer(call(nr::KICK_CPU, 0), 3, true, none), u64::MAX, "CPL first");
    }
}
